//! The `bgtasks` command line, as a library entry point: the bundled binary
//! calls [`main`] with the built-in tasks, and an application's own binary
//! calls it with its registry to get the same commands for its own tasks.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let registry = background_tasks::Registry::new();
//!     // registry.register(MyTask); ...
//!     background_tasks::cli::main(registry)
//! }
//! ```
//!
//! Settings come from flags and from the environment under the seed's
//! names: `MAX_ATTEMPTS`, `MAX_RUN_TIME`, `BACKGROUND_TASK_RUN_ASYNC`,
//! `BACKGROUND_TASK_ASYNC_THREADS`, `BACKGROUND_TASK_PRIORITY_ORDERING`, and
//! `DATABASE_URL` (default: `background_tasks.sqlite3` in the working
//! directory).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;

use crate::builtin;
use crate::config::{Config, PriorityOrdering};
use crate::db;
use crate::entity::{completed_task, task};
use crate::error::{Error, Result};
use crate::queue::{Queue, TaskSpec};
use crate::registry::Registry;
use crate::runner::{Pace, Runner};
use crate::task::Task;

/// A database-backed task queue: run and operate it.
#[derive(Debug, Parser)]
#[command(name = "bgtasks", version, about)]
struct Cli {
    /// Database URL (sqlite://FILE, postgres://..., mysql://...). Default:
    /// background_tasks.sqlite3 in the working directory, created on first use.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run due tasks until stopped (the seed's `process_tasks`). SIGINT,
    /// SIGTERM and SIGTSTP stop it gracefully; SIGUSR1 / SIGUSR2 switch to
    /// fast / slow polling after each task.
    Process(ProcessArgs),
    /// Enqueue a mixed workload of the built-in tasks (successes, a retry,
    /// permanent failures, a repeat) and run it, for a first look.
    Demo(DemoArgs),
    /// Create or upgrade the queue's tables (up), roll them back (down), or
    /// list which migrations ran (status).
    Migrate {
        #[command(subcommand)]
        direction: Option<Direction>,
    },
    /// Serve the web dashboard, its JSON API and Prometheus metrics (at
    /// /metrics) on their own. It runs no tasks.
    #[cfg(feature = "web")]
    Dashboard(DashboardArgs),
}

#[cfg(feature = "web")]
#[derive(Debug, Args)]
struct DashboardArgs {
    /// Address to listen on. Anything but a loopback address needs a password.
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Show everything, change nothing: turn every action off.
    #[arg(long)]
    read_only: bool,
    /// HTTP Basic password (any user name) that every request must carry.
    #[arg(long, env = "BGTASKS_DASHBOARD_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Seconds after its last heartbeat a runner counts as gone.
    #[arg(long, env = "BACKGROUND_TASK_LEASE", default_value_t = 30.0)]
    lease: f64,
}

#[derive(Debug, Args)]
struct ProcessArgs {
    /// Stop after this many seconds; 0 or less runs until stopped.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    duration: i64,
    /// Seconds to wait between polls when there is nothing to do.
    #[arg(long, default_value_t = 5.0)]
    sleep: f64,
    /// Only run tasks of this named queue (default: every queue).
    #[arg(long)]
    queue: Option<String>,
    /// Send what tasks print to stdout to the log at info level, and stderr
    /// at error level.
    #[arg(long)]
    log_std: bool,
    /// Run this many tasks at once (sets BACKGROUND_TASK_RUN_ASYNC when > 1).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds running tasks get to finish at shutdown before they are
    /// stopped and handed back.
    #[arg(long, default_value_t = 30.0)]
    grace: f64,
    /// Seconds a runner's locks last without renewal: other runners take
    /// the tasks of a runner silent for that long. Use one value for every
    /// runner on a database.
    #[arg(long, env = "BACKGROUND_TASK_LEASE", default_value_t = 30.0)]
    lease: f64,
    #[command(flatten)]
    settings: Settings,
}

/// The seed's settings, read from the environment.
#[derive(Debug, Args)]
struct Settings {
    /// Attempts before a failing task fails permanently.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = crate::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// Seconds one execution may take.
    #[arg(long, env = "MAX_RUN_TIME", default_value_t = 3600.0)]
    max_run_time: f64,
    /// Run several tasks at once (true/false).
    #[arg(long, env = "BACKGROUND_TASK_RUN_ASYNC", default_value = "false", value_parser = parse_bool)]
    run_async: bool,
    /// Executor threads in async mode (default: the CPU count).
    #[arg(long, env = "BACKGROUND_TASK_ASYNC_THREADS")]
    async_threads: Option<usize>,
    /// Task bodies each executor thread runs at once in async mode.
    #[arg(long, env = "BACKGROUND_TASK_TASKS_PER_THREAD", default_value_t = 1)]
    tasks_per_thread: usize,
    /// "DESC" (highest priority first) or exactly "ASC" (lowest first).
    #[arg(
        long,
        env = "BACKGROUND_TASK_PRIORITY_ORDERING",
        default_value = "DESC"
    )]
    priority_ordering: String,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// How many no-op tasks to enqueue besides the others.
    #[arg(long, default_value_t = 200)]
    tasks: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Direction {
    /// Apply every pending migration (the default).
    Up,
    /// Roll back the last migration (or all of them with --all).
    Down {
        /// Roll back every migration: drops the queue's tables.
        #[arg(long)]
        all: bool,
    },
    /// Show applied and pending migrations.
    Status,
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean; use true or false")),
    }
}

fn seconds(option: &'static str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Error::invalid(option, format!("{value} is not a number of seconds >= 0")))
}

impl Settings {
    fn config(&self, threads: Option<usize>) -> Result<crate::config::ConfigBuilder> {
        let mut builder = Config::builder()
            .max_attempts(self.max_attempts)
            .max_run_time(seconds("MAX_RUN_TIME", self.max_run_time)?)
            .run_async(self.run_async)
            .tasks_per_thread(self.tasks_per_thread)
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

/// Parses the command line, runs the command on a new actix system, and
/// returns the exit code: 0 on success, 1 when the command failed (the
/// message says why), 2 for a command line that does not parse.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    let log_std = matches!(&cli.command, Command::Process(args) if args.log_std);
    init_logging(log_std);
    let system = actix_rt::System::new();
    match system.block_on(run(cli, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("bgtasks: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, registry: Registry) -> Result<()> {
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::Process(args) => process(url, registry, args).await,
        Command::Demo(args) => demo(url, args).await,
        Command::Migrate { direction } => migrate(url, direction.unwrap_or(Direction::Up)).await,
        #[cfg(feature = "web")]
        Command::Dashboard(args) => dashboard(url, registry, args).await,
    }
}

#[cfg(feature = "web")]
async fn dashboard(url: Option<&str>, registry: Registry, args: DashboardArgs) -> Result<()> {
    let bind = args.bind.parse().map_err(|_| {
        Error::invalid(
            "--bind",
            format!(
                "{:?} is not an address; use IP:PORT, such as 127.0.0.1:8000",
                args.bind
            ),
        )
    })?;
    let config = Config::builder()
        .lease(seconds("--lease", args.lease)?)
        .build()?;
    let queue = Queue::with_parts(db::open(url).await?, registry, config);
    crate::web::serve(
        queue,
        crate::web::Standalone {
            bind,
            read_only: args.read_only,
            password: args.password,
        },
    )
    .await
}

async fn process(url: Option<&str>, registry: Registry, args: ProcessArgs) -> Result<()> {
    let mut builder = args
        .settings
        .config(args.threads)?
        .sleep(seconds("--sleep", args.sleep)?)
        .lease(seconds("--lease", args.lease)?);
    if let Some(queue) = &args.queue {
        builder = builder.queue(queue);
    }
    let config = builder.build()?;
    let grace = seconds("--grace", args.grace)?;
    let queue = Queue::with_parts(db::open(url).await?, registry, config);
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

/// Enqueues the built-in tasks and runs them with a pool until they are
/// done, then prints what happened.
async fn demo(url: Option<&str>, args: DemoArgs) -> Result<()> {
    let registry = Registry::new();
    builtin::register(&registry);
    let config = Config::builder()
        .run_async(true)
        .max_attempts(2)
        .sleep(Duration::from_millis(200))
        .build()?;
    let queue = Queue::with_parts(db::open(url).await?, registry, config);
    let now = queue.config().clock().now();
    let mut specs: Vec<TaskSpec> = (0..args.tasks)
        .map(|_| TaskSpec::new::<builtin::Noop>(&()).queue("demo"))
        .collect();
    specs.extend(
        (0..8).map(|i| TaskSpec::new::<builtin::Sleep>(&(0.1 * f64::from(i))).queue("demo")),
    );
    specs.push(
        TaskSpec::new::<builtin::Fail>(&())
            .queue("demo")
            .verbose_name("retried once, then failed"),
    );
    specs.push(
        TaskSpec::new::<builtin::Reject>(&())
            .queue("demo")
            .verbose_name("fails at once"),
    );
    specs.push(
        TaskSpec::call(
            builtin::Echo::name(),
            &json!(["hello"]),
            &json!({"from": "demo"}),
            queue.registry(),
        )
        .queue("demo")
        .repeat(2)
        .repeat_until(now + chrono::TimeDelta::seconds(5)),
    );
    let total = queue.enqueue_many(specs).await?;
    println!("enqueued {total} demo tasks on queue \"demo\"; running them");
    let started = Instant::now();
    let runner = Runner::start(queue.clone());
    let deadline = started + Duration::from_secs(args.duration);
    loop {
        let left = task::Entity::find()
            .filter(task::Column::Queue.eq("demo"))
            .count(queue.db())
            .await?;
        if left == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    runner.shutdown(Duration::from_secs(10)).await;
    let history = completed_task::Entity::find()
        .filter(completed_task::Column::Queue.eq("demo"))
        .filter(completed_task::Column::RunAt.gte(now))
        .all(queue.db())
        .await?;
    let succeeded = history.iter().filter(|c| c.failed_at.is_none()).count();
    let failed: Vec<_> = history.iter().filter(|c| c.failed_at.is_some()).collect();
    println!(
        "done in {:.1} s: {succeeded} succeeded, {} failed permanently",
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    for row in failed {
        println!(
            "  failed: {row} after {} attempt(s): {}",
            row.attempts, row.last_error
        );
    }
    Ok(())
}

async fn migrate(url: Option<&str>, direction: Direction) -> Result<()> {
    match direction {
        Direction::Up => {
            let conn = db::open(url).await?;
            conn.close().await.ok();
        }
        Direction::Down { all } => {
            let conn = db::connect(url).await?;
            let steps = if all { None } else { Some(1) };
            Migrator::down(&conn, steps).await.map_err(Error::Migrate)?;
        }
        Direction::Status => {
            let conn = db::connect(url).await?;
            for migration in Migrator::get_migration_with_status(&conn)
                .await
                .map_err(Error::Migrate)?
            {
                println!("{:?}\t{}", migration.status(), migration.name());
            }
        }
    }
    Ok(())
}

/// Logs to stderr through tracing; `RUST_LOG` filters (default `info`).
/// With `log_std`, what the process writes to stdout and stderr goes to the
/// log instead (info and error), as the seed's `--log-std` does.
fn init_logging(log_std: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    #[cfg(unix)]
    if log_std && let Some(log_file) = std_redirect::start() {
        builder
            .with_writer(std::sync::Mutex::new(log_file))
            .try_init()
            .ok();
        return;
    }
    #[cfg(not(unix))]
    let _ = log_std;
    builder.with_writer(std::io::stderr).try_init().ok();
}

#[cfg(unix)]
mod std_redirect {
    //! `--log-std`: file descriptors 1 and 2 become pipes read by two
    //! threads that log each line; the log itself goes to a duplicate of the
    //! original stderr, so it does not loop back into the pipe.

    use std::fs::File;
    use std::io::{BufRead, BufReader};
    use std::os::fd::FromRawFd;

    /// Returns the log's destination (the original stderr), or `None` when
    /// the descriptors could not be redirected (logged, and stdout/stderr
    /// stay as they are).
    pub(super) fn start() -> Option<File> {
        // SAFETY: dup/pipe/dup2 on the process's own descriptors; each new
        // descriptor is owned by exactly one File created here.
        unsafe {
            let original = libc::dup(2);
            if original < 0 {
                return None;
            }
            for (fd, error_level) in [(1, false), (2, true)] {
                let mut ends = [0; 2];
                if libc::pipe(ends.as_mut_ptr()) != 0 || libc::dup2(ends[1], fd) < 0 {
                    return Some(File::from_raw_fd(original));
                }
                libc::close(ends[1]);
                let reader = File::from_raw_fd(ends[0]);
                std::thread::Builder::new()
                    .name(format!("log-std-{fd}"))
                    .spawn(move || {
                        for line in BufReader::new(reader).lines().map_while(Result::ok) {
                            if error_level {
                                tracing::error!(target: "stderr", "{line}");
                            } else {
                                tracing::info!(target: "stdout", "{line}");
                            }
                        }
                    })
                    .ok()?;
            }
            Some(File::from_raw_fd(original))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_read_like_settings() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("1"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn settings_use_the_seeds_names_and_defaults() {
        let cli = Cli::try_parse_from(["bgtasks", "process"]).unwrap();
        let Command::Process(args) = cli.command else {
            panic!()
        };
        let config = args.settings.config(args.threads).unwrap().build().unwrap();
        assert_eq!(config.max_attempts(), 25);
        assert_eq!(config.max_run_time(), Duration::from_secs(3600));
        assert!(!config.run_async());
        assert_eq!(config.priority_ordering(), PriorityOrdering::Desc);
        assert_eq!(args.sleep, 5.0);
        assert_eq!(args.duration, 0);
        assert_eq!(args.lease, 30.0);

        let cli =
            Cli::try_parse_from(["bgtasks", "process", "--threads", "3", "--queue", "q"]).unwrap();
        let Command::Process(args) = cli.command else {
            panic!()
        };
        let config = args.settings.config(args.threads).unwrap().build().unwrap();
        assert!(config.run_async());
        assert_eq!(config.concurrency(), 3);
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let cli = Cli::try_parse_from(["bgtasks", "process", "--max-run-time=-1"]).unwrap();
        let Command::Process(args) = cli.command else {
            panic!()
        };
        let err = args.settings.config(None).unwrap_err().to_string();
        assert!(err.contains("MAX_RUN_TIME"), "{err}");
        assert!(Cli::try_parse_from(["bgtasks", "process", "--max-attempts", "x"]).is_err());
    }
}
