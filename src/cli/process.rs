//! `bgtasks process`: the seed's `process_tasks`.

use std::time::Duration;

use clap::Args;

use super::{Context, Failure};
use crate::config::{self, Config, ConfigBuilder, PriorityOrdering, parse};
use crate::db;
use crate::queue::Queue;
use crate::runner::{Pace, Runner};

/// The flags of `bgtasks process`. Settings that also have an environment
/// variable start from [`Config::from_env`]'s reading of it (the same
/// code), and a flag given on the command line wins over its variable.
#[derive(Debug, Args)]
pub(super) struct ProcessArgs {
    /// Stop after this many seconds; 0 or less runs until stopped.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(super) duration: i64,
    /// Seconds to wait between polls when there is nothing to do.
    #[arg(long, default_value = "5", value_parser = parse::seconds)]
    pub(super) sleep: Duration,
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
    #[arg(long, default_value = "30", value_parser = parse::seconds)]
    pub(super) grace: Duration,
    /// Seconds a runner's locks last without renewal: other runners take
    /// the tasks of a runner silent for that long. Use one value for every
    /// runner on a database. [env: BACKGROUND_TASK_LEASE] [default: 30]
    #[arg(long, value_parser = parse::seconds)]
    pub(super) lease: Option<Duration>,
    /// Seconds the body of a running task an operator cancelled has to stop
    /// on its own before it is stopped. [env: BACKGROUND_TASK_CANCEL_GRACE]
    /// [default: 10]
    #[arg(long, value_parser = parse::seconds)]
    pub(super) cancel_grace: Option<Duration>,
    /// A direct PostgreSQL URL to LISTEN on for new tasks when DATABASE_URL
    /// names a transaction pooler (pooler=transaction), which cannot carry
    /// a LISTEN. Without it such a runner checks for new tasks every 100 ms
    /// through the pooler. [env: BACKGROUND_TASK_LISTEN_URL]
    #[arg(long, value_name = "URL")]
    pub(super) listen_url: Option<String>,
    /// At most N tasks of QUEUE at once in this runner (QUEUE=N; repeat the
    /// flag for several queues). For a limit across all runners, see
    /// `bgtasks limit`.
    #[arg(long, value_name = "QUEUE=N", value_parser = queue_limit)]
    pub(super) queue_limit: Vec<(String, usize)>,
    /// Serve this runner's Prometheus metrics at http://HOST:PORT/metrics
    /// (counters of its tasks, slots, claims and outcome writes, and the
    /// database's gauges). The port must be free: the runner does not
    /// start otherwise. [default: not served]
    #[arg(
        long,
        env = "BACKGROUND_TASK_METRICS_ADDR",
        value_name = "HOST:PORT",
        value_parser = metrics_addr
    )]
    pub(super) metrics_addr: Option<String>,
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
    /// seconds (default: keep them). [env: BACKGROUND_TASK_KEEP_COMPLETED]
    #[arg(long, value_name = "DURATION", value_parser = parse::keep_age)]
    pub(super) keep_completed: Option<Duration>,
    /// Delete failed history rows older than this: 30d, 12h, 90m, 30s or
    /// seconds (default: keep them). [env: BACKGROUND_TASK_KEEP_FAILED]
    #[arg(long, value_name = "DURATION", value_parser = parse::keep_age)]
    pub(super) keep_failed: Option<Duration>,
    /// Keep at most this many history rows, the newest (default: no
    /// limit). [env: BACKGROUND_TASK_KEEP_LAST]
    #[arg(long, value_name = "N", value_parser = parse::keep_last)]
    pub(super) keep_last: Option<u64>,
}

/// The seed's settings; each also read from its environment variable.
#[derive(Debug, Args)]
pub(super) struct Settings {
    /// Attempts before a failing task fails permanently. [env:
    /// MAX_ATTEMPTS] [default: 25]
    #[arg(long, value_parser = parse::whole_number::<u32>)]
    pub(super) max_attempts: Option<u32>,
    /// Seconds one execution may take. [env: MAX_RUN_TIME] [default: 3600]
    #[arg(long, value_parser = parse::seconds)]
    pub(super) max_run_time: Option<Duration>,
    /// Run several tasks at once (true/false). [env:
    /// BACKGROUND_TASK_RUN_ASYNC] [default: false]
    #[arg(long, value_parser = parse::boolean)]
    pub(super) run_async: Option<bool>,
    /// Executor threads in async mode. [env: BACKGROUND_TASK_ASYNC_THREADS]
    /// [default: the CPU count]
    #[arg(long, value_parser = parse::whole_number::<usize>)]
    pub(super) async_threads: Option<usize>,
    /// Task bodies each executor thread runs at once in async mode. [env:
    /// BACKGROUND_TASK_TASKS_PER_THREAD] [default: 1]
    #[arg(long, value_parser = parse::whole_number::<usize>)]
    pub(super) tasks_per_thread: Option<usize>,
    /// Most tasks claimed ahead of the free slots, kept ready so the
    /// runner never waits for the database between two tasks (claimed ahead
    /// only while tasks take under 50 ms each). 0: the seed's rhythm, one
    /// claim per free slot and each outcome written before the next claim.
    /// [env: BACKGROUND_TASK_PREFETCH] [default: 64]
    #[arg(long, value_parser = parse::whole_number::<usize>)]
    pub(super) prefetch: Option<usize>,
    /// "DESC" (highest priority first) or exactly "ASC" (lowest first).
    /// [env: BACKGROUND_TASK_PRIORITY_ORDERING] [default: DESC]
    #[arg(long, value_parser = parse::ordering)]
    pub(super) priority_ordering: Option<PriorityOrdering>,
}

impl ProcessArgs {
    /// The runner's config: the environment, as [`Config::from_env`] reads
    /// it, then the flags given on the command line. Checked once.
    pub(super) fn config(&self) -> crate::Result<Config> {
        self.config_over(config::builder_from_env()?)
    }

    /// The flags given, over `builder`.
    pub(super) fn config_over(&self, builder: ConfigBuilder) -> crate::Result<Config> {
        let s = &self.settings;
        let mut builder = builder.sleep(self.sleep);
        if let Some(attempts) = s.max_attempts {
            builder = builder.max_attempts(attempts);
        }
        if let Some(limit) = s.max_run_time {
            builder = builder.max_run_time(limit);
        }
        if let Some(on) = s.run_async {
            builder = builder.run_async(on);
        }
        if let Some(tasks) = s.prefetch {
            builder = builder.prefetch(tasks);
        }
        if let Some(threads) = s.async_threads {
            builder = builder.async_threads(threads);
        }
        if let Some(tasks) = s.tasks_per_thread {
            builder = builder.tasks_per_thread(tasks);
        }
        if let Some(ordering) = s.priority_ordering {
            builder = builder.priority_ordering(ordering);
        }
        if let Some(threads) = self.threads {
            builder = builder.async_threads(threads).run_async(threads > 1);
        }
        if let Some(lease) = self.lease {
            builder = builder.lease(lease);
        }
        if let Some(grace) = self.cancel_grace {
            builder = builder.cancel_grace(grace);
        }
        if let Some(url) = &self.listen_url {
            builder = builder.listen_url(url);
        }
        if let Some(queue) = &self.queue {
            builder = builder.queue(queue);
        }
        for (queue, max_running) in &self.queue_limit {
            builder = builder.queue_limit(queue, *max_running);
        }
        let r = &self.retention;
        if let Some(age) = r.keep_completed {
            builder = builder.retention_field(|retention| retention.completed = Some(age));
        }
        if let Some(age) = r.keep_failed {
            builder = builder.retention_field(|retention| retention.failed = Some(age));
        }
        if let Some(rows) = r.keep_last {
            builder = builder.retention_field(|retention| retention.keep_last = Some(rows));
        }
        builder.build()
    }
}

pub(super) async fn run(ctx: &Context, args: ProcessArgs) -> Result<(), Failure> {
    let config = args.config()?;
    // Before the database is opened (and created or migrated): a runner
    // that cannot run its tasks changes nothing.
    ctx.registry.check()?;
    let queue = Queue::with_parts(db::open(ctx.url()).await?, ctx.registry.clone(), config);
    // Before the runner starts: a port that is taken claims no task.
    let exporter = match &args.metrics_addr {
        Some(addr) => Some(exporter(&queue, addr)?),
        None => None,
    };
    let drain_grace = queue.config().max_run_time().max(args.grace);
    let runner = Runner::start(queue)?;
    let duration = u64::try_from(args.duration)
        .ok()
        .filter(|d| *d > 0)
        .map(Duration::from_secs);
    let stop = tokio::select! {
        stop = stop_signal(duration, |pace| runner.set_pace(pace)) => stop,
        () = runner.drain_requested() => {
            tracing::info!("asked to drain: finishing the tasks held, then exiting");
            Stop::Drain
        }
    };
    match stop {
        Stop::Graceful => runner.shutdown(args.grace).await,
        Stop::Drain => {
            runner.drain().await;
            runner.shutdown(drain_grace).await;
        }
    }
    if let Some(exporter) = exporter {
        exporter.stop().await;
    }
    Ok(())
}

#[cfg(feature = "web")]
fn exporter(queue: &Queue, addr: &str) -> crate::Result<crate::web::Exporter> {
    crate::web::Exporter::start(queue.clone(), addr)
}

/// Without the `web` feature there is nothing to serve metrics with.
#[cfg(not(feature = "web"))]
struct NoExporter;

#[cfg(not(feature = "web"))]
impl NoExporter {
    async fn stop(self) {}
}

#[cfg(not(feature = "web"))]
fn exporter(_queue: &Queue, _addr: &str) -> crate::Result<NoExporter> {
    Err(crate::Error::invalid(
        "--metrics-addr",
        "this bgtasks was built without the `web` feature, which serves metrics; rebuild with \
         it, or leave --metrics-addr and BACKGROUND_TASK_METRICS_ADDR unset",
    ))
}

/// How `bgtasks process` stops.
enum Stop {
    /// SIGINT, SIGTERM, SIGTSTP or the end of `--duration`: running tasks
    /// get `--grace` to finish.
    Graceful,
    /// SIGQUIT, or an operator's drain request: claim nothing more, finish
    /// every task held (each within `MAX_RUN_TIME`), exit.
    Drain,
}

/// Resolves at SIGINT, SIGTERM or SIGTSTP, or when `duration` has passed
/// (a graceful stop), or at SIGQUIT (a drain); calls `on_pace` for SIGUSR1
/// (fast) and SIGUSR2 (slow).
#[cfg(unix)]
async fn stop_signal(duration: Option<Duration>, on_pace: impl Fn(Pace)) -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::from_raw(libc::SIGTSTP)),
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    );
    let (Ok(mut int), Ok(mut term), Ok(mut tstp), Ok(mut quit), Ok(mut usr1), Ok(mut usr2)) =
        signals
    else {
        tracing::warn!("cannot listen for signals; stopping only at the end of --duration");
        until(duration).await;
        return Stop::Graceful;
    };
    let deadline = until(duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = int.recv() => { tracing::info!("SIGINT: stopping gracefully"); return Stop::Graceful; }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping gracefully"); return Stop::Graceful; }
            _ = tstp.recv() => { tracing::info!("SIGTSTP: stopping gracefully"); return Stop::Graceful; }
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: draining (no more claims; finishing the tasks held)");
                return Stop::Drain;
            }
            _ = usr1.recv() => on_pace(Pace::Fast),
            _ = usr2.recv() => on_pace(Pace::Slow),
            () = &mut deadline => { tracing::info!("--duration has passed: stopping"); return Stop::Graceful; }
        }
    }
}

#[cfg(not(unix))]
async fn stop_signal(duration: Option<Duration>, _on_pace: impl Fn(Pace)) -> Stop {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl+C: stopping gracefully"),
        () = until(duration) => tracing::info!("--duration has passed: stopping"),
    }
    Stop::Graceful
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

/// `HOST:PORT` of `--metrics-addr`: checked for its shape here (a clear
/// error before anything starts); whether it can be bound is checked at
/// start.
fn metrics_addr(text: &str) -> Result<String, String> {
    let text = text.trim();
    let shape = "HOST:PORT, such as 127.0.0.1:9464 or [::1]:9464 (port 0: any free port)";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} is not {shape}"));
    };
    if host.is_empty() {
        return Err(format!("{text:?} has no host; give {shape}"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{port:?} in {text:?} is not a port (0 to 65535); give {shape}"
        ));
    }
    Ok(text.to_owned())
}
