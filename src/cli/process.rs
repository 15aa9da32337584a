//! `bgtasks process`: the seed's `process_tasks`.

use std::time::Duration;

use clap::Args;

use super::{Context, Failure, parse_bool, seconds};
use crate::config::{Config, PriorityOrdering, Retention};
use crate::db;
use crate::queue::Queue;
use crate::runner::{Pace, Runner};

#[derive(Debug, Args)]
pub(super) struct ProcessArgs {
    /// Stop after this many seconds; 0 or less runs until stopped.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(super) duration: i64,
    /// Seconds to wait between polls when there is nothing to do.
    #[arg(long, default_value_t = 5.0)]
    pub(super) sleep: f64,
    /// Only run tasks of this named queue (default: every queue).
    #[arg(long)]
    pub(super) queue: Option<String>,
    /// Send what tasks print to stdout to the log at info level, and stderr
    /// at error level.
    #[arg(long)]
    pub(super) log_std: bool,
    /// Run this many tasks at once (sets BACKGROUND_TASK_RUN_ASYNC when > 1).
    #[arg(long)]
    pub(super) threads: Option<usize>,
    /// Seconds running tasks get to finish at shutdown before they are
    /// stopped and handed back.
    #[arg(long, default_value_t = 30.0)]
    pub(super) grace: f64,
    /// Seconds a runner's locks last without renewal: other runners take
    /// the tasks of a runner silent for that long. Use one value for every
    /// runner on a database.
    #[arg(long, env = "BACKGROUND_TASK_LEASE", default_value_t = 30.0)]
    pub(super) lease: f64,
    /// Seconds the body of a running task an operator cancelled has to stop
    /// on its own before it is stopped.
    #[arg(long, env = "BACKGROUND_TASK_CANCEL_GRACE", default_value_t = 10.0)]
    pub(super) cancel_grace: f64,
    /// At most N tasks of QUEUE at once in this runner (QUEUE=N; repeat the
    /// flag for several queues). For a limit across all runners, see
    /// `bgtasks limit`.
    #[arg(long, value_name = "QUEUE=N", value_parser = queue_limit)]
    pub(super) queue_limit: Vec<(String, usize)>,
    #[command(flatten)]
    pub(super) settings: Settings,
    #[command(flatten)]
    pub(super) retention: RetentionArgs,
}

/// How long the runner keeps the history; by default forever, as the seed.
/// The runner prunes a second after start and then every minute, in short
/// batches.
#[derive(Debug, Args)]
pub(super) struct RetentionArgs {
    /// Delete succeeded history rows older than this: 7d, 12h, 90m, 30s or
    /// seconds (default: keep them).
    #[arg(
        long,
        env = "BACKGROUND_TASK_KEEP_COMPLETED",
        value_name = "DURATION",
        value_parser = keep_age
    )]
    pub(super) keep_completed: Option<Duration>,
    /// Delete failed history rows older than this: 30d, 12h, 90m, 30s or
    /// seconds (default: keep them).
    #[arg(
        long,
        env = "BACKGROUND_TASK_KEEP_FAILED",
        value_name = "DURATION",
        value_parser = keep_age
    )]
    pub(super) keep_failed: Option<Duration>,
    /// Keep at most this many history rows, the newest (default: no limit).
    #[arg(
        long,
        env = "BACKGROUND_TASK_KEEP_LAST",
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub(super) keep_last: Option<u64>,
}

impl RetentionArgs {
    /// The retention these flags ask for (empty when none is given).
    pub(super) fn retention(&self) -> Retention {
        Retention {
            completed: self.keep_completed,
            failed: self.keep_failed,
            keep_last: self.keep_last,
        }
    }
}

/// A retention age: a duration ([`super::prune::duration`]) above zero.
/// Zero is refused here, where the message can name the flag: "keep for
/// 0 s" is more often a mistaken "off" than a wish to keep no history.
fn keep_age(text: &str) -> Result<Duration, String> {
    let age = super::prune::duration(text)?;
    if age.is_zero() {
        return Err(
            "0 would delete history rows as soon as they are written; leave it unset to keep \
             them forever, or give the shortest age to keep (1s, 7d)"
                .into(),
        );
    }
    Ok(age)
}

/// The seed's settings, read from the environment.
#[derive(Debug, Args)]
pub(super) struct Settings {
    /// Attempts before a failing task fails permanently.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = crate::DEFAULT_MAX_ATTEMPTS)]
    pub(super) max_attempts: u32,
    /// Seconds one execution may take.
    #[arg(long, env = "MAX_RUN_TIME", default_value_t = 3600.0)]
    pub(super) max_run_time: f64,
    /// Run several tasks at once (true/false).
    #[arg(long, env = "BACKGROUND_TASK_RUN_ASYNC", default_value = "false", value_parser = parse_bool)]
    pub(super) run_async: bool,
    /// Executor threads in async mode (default: the CPU count).
    #[arg(long, env = "BACKGROUND_TASK_ASYNC_THREADS")]
    pub(super) async_threads: Option<usize>,
    /// Task bodies each executor thread runs at once in async mode.
    #[arg(long, env = "BACKGROUND_TASK_TASKS_PER_THREAD", default_value_t = 1)]
    pub(super) tasks_per_thread: usize,
    /// Most tasks claimed ahead of the free slots, kept ready so the
    /// runner never waits for the database between two tasks (claimed ahead
    /// only while tasks take under 50 ms each). 0: the seed's rhythm, one
    /// claim per free slot and each outcome written before the next claim.
    #[arg(long, env = "BACKGROUND_TASK_PREFETCH", default_value_t = crate::config::DEFAULT_PREFETCH)]
    pub(super) prefetch: usize,
    /// "DESC" (highest priority first) or exactly "ASC" (lowest first).
    #[arg(
        long,
        env = "BACKGROUND_TASK_PRIORITY_ORDERING",
        default_value = "DESC"
    )]
    pub(super) priority_ordering: String,
}

impl Settings {
    pub(super) fn config(
        &self,
        threads: Option<usize>,
    ) -> crate::Result<crate::config::ConfigBuilder> {
        let mut builder = Config::builder()
            .max_attempts(self.max_attempts)
            .max_run_time(seconds("MAX_RUN_TIME", self.max_run_time)?)
            .run_async(self.run_async)
            .tasks_per_thread(self.tasks_per_thread)
            .prefetch(self.prefetch)
            .priority_ordering(PriorityOrdering::from_setting(&self.priority_ordering));
        if let Some(threads) = self.async_threads {
            builder = builder.async_threads(threads);
        }
        if let Some(threads) = threads {
            builder = builder.async_threads(threads).run_async(threads > 1);
        }
        Ok(builder)
    }
}

pub(super) async fn run(ctx: &Context, args: ProcessArgs) -> Result<(), Failure> {
    let url = ctx.url();
    let mut builder = args
        .settings
        .config(args.threads)?
        .sleep(seconds("--sleep", args.sleep)?)
        .lease(seconds("--lease", args.lease)?);
    if let Some(queue) = &args.queue {
        builder = builder.queue(queue);
    }
    builder = builder.cancel_grace(seconds("--cancel-grace", args.cancel_grace)?);
    for (queue, max_running) in &args.queue_limit {
        builder = builder.queue_limit(queue, *max_running);
    }
    let retention = args.retention.retention();
    if !retention.is_empty() {
        builder = builder.retention(retention);
    }
    let config = builder.build()?;
    let grace = seconds("--grace", args.grace)?;
    let queue = Queue::with_parts(db::open(url).await?, ctx.registry.clone(), config);
    let runner = Runner::start(queue);
    let duration = u64::try_from(args.duration)
        .ok()
        .filter(|d| *d > 0)
        .map(Duration::from_secs);
    stop_signal(duration, |pace| runner.set_pace(pace)).await;
    runner.shutdown(grace).await;
    Ok(())
}

/// Resolves at SIGINT, SIGTERM or SIGTSTP, or when `duration` has passed;
/// calls `on_pace` for SIGUSR1 (fast) and SIGUSR2 (slow).
#[cfg(unix)]
async fn stop_signal(duration: Option<Duration>, on_pace: impl Fn(Pace)) {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::from_raw(libc::SIGTSTP)),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    );
    let (Ok(mut int), Ok(mut term), Ok(mut tstp), Ok(mut usr1), Ok(mut usr2)) = signals else {
        tracing::warn!("cannot listen for signals; stopping only at the end of --duration");
        until(duration).await;
        return;
    };
    let deadline = until(duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = int.recv() => { tracing::info!("SIGINT: stopping gracefully"); return; }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping gracefully"); return; }
            _ = tstp.recv() => { tracing::info!("SIGTSTP: stopping gracefully"); return; }
            _ = usr1.recv() => on_pace(Pace::Fast),
            _ = usr2.recv() => on_pace(Pace::Slow),
            () = &mut deadline => { tracing::info!("--duration has passed: stopping"); return; }
        }
    }
}

#[cfg(not(unix))]
async fn stop_signal(duration: Option<Duration>, _on_pace: impl Fn(Pace)) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl+C: stopping gracefully"),
        () = until(duration) => tracing::info!("--duration has passed: stopping"),
    }
}

async fn until(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// `QUEUE=N` of `--queue-limit`.
fn queue_limit(text: &str) -> Result<(String, usize), String> {
    let (queue, max) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not QUEUE=N, such as mail=2"))?;
    let max = max
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("{max:?} in {text:?} is not a number of tasks, such as mail=2"))?;
    Ok((queue.trim().to_owned(), max))
}
