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
//! A binary whose tasks need app state that takes an `await` to make (a
//! database pool) builds it in its own async `main` and calls [`run`]:
//!
//! ```no_run
//! # struct Pool;
//! # async fn connect() -> Pool { Pool }
//! #[actix_rt::main] // or #[actix_web::main]: `process` needs an actix System
//! async fn main() -> std::process::ExitCode {
//!     let registry = background_tasks::Registry::new();
//!     registry.data(connect().await);
//!     // registry.register(MyTask); ...
//!     background_tasks::cli::run(registry, std::env::args_os()).await
//! }
//! ```
//!
//! Commands: `process` (run tasks), `enqueue`, `list`, `show`, `stats`,
//! `retry`, `cancel`, `delete`, `cron` (schedules), `limit` (global queue
//! limits), `workflow` and `batch` (list, show, create from JSON), `prune`, `doctor`, `demo`, `migrate` and `dashboard`; `bgtasks help COMMAND` explains each. Every command prints a
//! table for people, or JSON with `--json`.
//!
//! Exit codes: 0 done; 1 the command failed (the database is unreachable, a
//! statement failed); 2 bad input (the command line, JSON arguments, an
//! unknown task name or queue, a time that does not parse), nothing
//! changed (but `enqueue --from FILE` without `--atomic` writes the good
//! lines and reports the bad ones); 3 nothing matched (the ids or filters
//! select no task), nothing changed; 4 `doctor` found a problem; 5 the
//! database is not migrated (run `bgtasks migrate`), nothing changed.
//!
//! Settings come from flags and from the environment under the seed's
//! names: `DATABASE_URL` (default: `background_tasks.sqlite3` in the
//! working directory), `BACKGROUND_TASK_DB_TIME_ZONE` (the zone of a Django
//! project with `USE_TZ = False`; default UTC), and for `process` every
//! variable [`crate::Config::from_env`] reads (`MAX_ATTEMPTS`,
//! `MAX_RUN_TIME`, `BACKGROUND_TASK_RUN_ASYNC`, ...), read by that same
//! code; a flag wins over its variable. A bad value is bad input (exit 2)
//! and the message names the variable or flag.
//!
//! `process` refuses to start (exit 2, before opening the database) when a
//! registered task requires app state the registry has none of
//! ([`crate::Registry::check`]).

mod controls;
#[cfg(feature = "web")]
mod dashboard;
mod demo;
mod doctor;
mod enqueue;
mod limits;
mod logging;
mod migrate;
mod operate;
mod output;
mod process;
mod prune;
mod schedules;
mod workflows;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sea_orm::DatabaseConnection;

use crate::db;
use crate::error::Error;
use crate::registry::Registry;

/// A database-backed task queue: run and operate it.
#[derive(Debug, Parser)]
#[command(name = "bgtasks", version, about)]
struct Cli {
    /// Database URL (sqlite://FILE, postgres://..., mysql://...). Default:
    /// background_tasks.sqlite3 in the working directory, created on first use.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,

    /// Print JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// Time zone of the naive timestamps in the database (IANA name, such
    /// as America/New_York). Default UTC. Set it to the TIME_ZONE of a
    /// Django project with USE_TZ = False that shares a SQLite or
    /// MySQL/MariaDB database; PostgreSQL stores instants and ignores it.
    /// [env: BACKGROUND_TASK_DB_TIME_ZONE]
    #[arg(long, global = true)]
    db_time_zone: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run due tasks until stopped (the seed's `process_tasks`). SIGINT,
    /// SIGTERM and SIGTSTP stop it gracefully; SIGQUIT drains it (no more
    /// claims, the tasks held finish, then it exits); SIGUSR1 / SIGUSR2
    /// switch to fast / slow polling after each task.
    Process(process::ProcessArgs),
    /// Store a task to run later, with every enqueue option; or many, one
    /// per line of a JSON-lines file (--from FILE, '-' for stdin).
    Enqueue(enqueue::EnqueueArgs),
    /// List tasks by state, queue, name, text and time.
    List(operate::ListArgs),
    /// Everything about one task: fields, params, last error, repeat chain.
    Show(operate::ShowArgs),
    /// Tasks per queue and state, the oldest due task, throughput, runners.
    Stats(operate::StatsArgs),
    /// Put failed tasks back in the queue (by history id, or by filter).
    Retry(operate::RetryArgs),
    /// Cancel tasks: waiting ones move to the history as cancelled; running
    /// ones are asked to stop.
    Cancel(operate::CancelArgs),
    /// Cron schedules: add, list, pause, resume, remove.
    Cron {
        #[command(subcommand)]
        command: schedules::CronCommand,
    },
    /// Pause queues for every runner: from their next heartbeat no runner
    /// claims their tasks (tasks still enqueue; those running finish).
    Pause(controls::PauseArgs),
    /// Resume paused queues: runners claim their tasks again from their
    /// next heartbeat.
    Resume(controls::ResumeArgs),
    /// List the paused queues.
    Paused,
    /// Ask a runner to drain: at its next heartbeat it stops claiming,
    /// finishes the tasks it holds and exits (as SIGQUIT does).
    Drain(controls::DrainArgs),
    /// Limits every runner keeps: a queue's concurrency (set, remove), its
    /// rate (rate, remove-rate), its key policy (key, remove-key); list.
    Limit {
        #[command(subcommand)]
        command: limits::LimitCommand,
    },
    /// Delete waiting tasks (or history rows) for good. Running tasks are
    /// refused: cancel them instead.
    /// Workflows: list, show one, create one from a JSON file.
    Workflow {
        #[command(subcommand)]
        command: workflows::WorkflowCommand,
    },
    /// Batches: show one's progress, create one from a JSON file.
    Batch {
        #[command(subcommand)]
        command: workflows::BatchCommand,
    },
    Delete(operate::DeleteArgs),
    /// Delete old history rows by a retention policy, in bounded batches.
    Prune(prune::PruneArgs),
    /// Check the schema, indexes, settings, clocks, stuck and stale tasks.
    Doctor(doctor::DoctorArgs),
    /// Enqueue a mixed workload of the built-in tasks (successes, a retry,
    /// permanent failures, a repeat) and run it, for a first look.
    Demo(demo::DemoArgs),
    /// Create or upgrade the queue's tables (up), roll them back (down), or
    /// list which migrations ran (status).
    Migrate {
        #[command(subcommand)]
        direction: Option<migrate::Direction>,
        /// After migrating, create every index of Django's migrations that
        /// is missing: run it before a Django app attaches to tables bgtasks
        /// created (without Django, only the indexes the queue reads
        /// through are kept).
        #[arg(long)]
        django_indexes: bool,
    },
    /// Serve the web dashboard, its JSON API and Prometheus metrics (at
    /// /metrics) on their own. It runs no tasks.
    #[cfg(feature = "web")]
    Dashboard(dashboard::DashboardArgs),
}

/// What a command needs besides its own arguments.
pub(crate) struct Context {
    url: Option<String>,
    json: bool,
    registry: Registry,
    /// The connections [`Context::migrated_db`] opened, closed by
    /// [`Context::close`] when the command is done.
    opened: std::sync::Mutex<Vec<DatabaseConnection>>,
}

impl Context {
    fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Closes the connections the command opened, and waits for them.
    /// SQLite's connection threads hold the span of the statement they ran
    /// last (the `enqueue` span) a moment after they answer; the span is
    /// exported when the last holder lets it go, and that must happen
    /// before the exporter shuts down. A closed pool's threads have.
    async fn close(&self) {
        let opened = std::mem::take(&mut *self.opened.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in opened {
            let _ = conn.close().await;
        }
    }

    /// A connection to a database whose schema is up to date, for the
    /// commands that read and change tasks. Unlike `process`, they never
    /// create or migrate a database: a missing SQLite file or a pending
    /// migration is [`Failure::NotMigrated`], and nothing is written.
    /// They run their statements one after another on one connection
    /// ([`db::connect_for_command`]): one connection set-up per command.
    async fn migrated_db(&self) -> Result<DatabaseConnection, Failure> {
        if let Some(file) = db::sqlite_file(self.url())
            && !file.exists()
        {
            return Err(Failure::NotMigrated(format!(
                "there is no database at {}: run `bgtasks migrate` to create it (or start \
                 `bgtasks process`, which creates it)",
                file.display()
            )));
        }
        let conn = db::connect_for_command(self.url()).await?;
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        let pending = db::pending_migrations(&conn).await?;
        if !pending.is_empty() {
            return Err(Failure::NotMigrated(format!(
                "the database is not migrated ({} of this version's migrations have not run: \
                 {}); run `bgtasks migrate` first",
                pending.len(),
                pending.join(", ")
            )));
        }
        Ok(conn)
    }
}

/// Why a command stopped, and the exit code that says so.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command failed (exit 1).
    Failed(Error),
    /// Bad input: nothing was changed (exit 2).
    BadInput(String),
    /// The ids or filters selected no task: nothing was changed (exit 3).
    NothingMatched(String),
    /// `doctor` found problems (exit 4); they are already printed.
    Problems(String),
    /// The database is missing or not migrated (exit 5).
    NotMigrated(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::BadInput(_) => 2,
            Failure::NothingMatched(_) => 3,
            Failure::Problems(_) => 4,
            Failure::NotMigrated(_) => 5,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Failed(err) => write!(f, "{err}"),
            Failure::BadInput(message)
            | Failure::NothingMatched(message)
            | Failure::Problems(message)
            | Failure::NotMigrated(message) => f.write_str(message),
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidOption { .. }
            | Error::Params(_)
            | Error::InvalidDatabaseUrl { .. }
            | Error::MissingState { .. } => Failure::BadInput(err.to_string()),
            err if err.is_refused_value() => Failure::BadInput(format!(
                "the database cannot store a value given (too long, out of range, or with a \
                 character it refuses): {err}"
            )),
            err => Failure::Failed(err),
        }
    }
}

impl From<sea_orm::DbErr> for Failure {
    fn from(err: sea_orm::DbErr) -> Self {
        Failure::Failed(Error::Database(err))
    }
}

/// Parses the command line, runs the command on a new actix system, and
/// returns its exit code (see the module docs); a command line that does
/// not parse exits with 2 and clap's message.
pub fn main(registry: Registry) -> ExitCode {
    actix_rt::System::new().block_on(run(registry, std::env::args_os()))
}

/// [`main`] inside an actix `System` the caller already runs (an
/// `#[actix_rt::main]` or `#[actix_web::main]` function), with the command
/// line `args` (the program name first, as [`std::env::args_os`] gives
/// it): for a binary that builds its tasks' app state with `await` first.
/// Returns the exit code; `--help` and `--version` print and return 0.
pub async fn run<I, T>(registry: Registry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            // clap's own text: the usage for --help, the problem otherwise.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let log_std = matches!(&cli.command, Command::Process(args) if args.log_std);
    let logs = logging::init(log_std);
    let outcome = dispatch(cli, registry).await;
    if let Err(failure @ Failure::Failed(_)) = &outcome {
        tracing::error!("{failure}");
    }
    // The log's lines are written by a thread of its own: flush them before
    // the last word, so it stays last.
    logs.finish();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("bgtasks: {failure}");
            ExitCode::from(failure.code())
        }
    }
}

async fn dispatch(cli: Cli, registry: Registry) -> Result<(), Failure> {
    // The flag wins; the variable is read by the code `Config::from_env`
    // uses, so both say the same about a bad zone.
    match cli.db_time_zone.as_deref().filter(|zone| !zone.is_empty()) {
        Some(zone) => db::set_time_zone(zone)?,
        None => crate::config::time_zone_from_env()?,
    }
    let ctx = Context {
        url: cli.database_url,
        json: cli.json,
        registry,
        opened: std::sync::Mutex::default(),
    };
    let outcome = run_command(&ctx, cli.command).await;
    // Outside the command's span.
    ctx.close().await;
    outcome
}

async fn run_command(ctx: &Context, command: Command) -> Result<(), Failure> {
    match command {
        Command::Process(args) => process::run(ctx, args).await,
        Command::Enqueue(args) => {
            // The span the tasks it writes link to (feature `otel`).
            let span = tracing::info_span!(
                "enqueue",
                task = args.name.as_deref().unwrap_or("(from a file)"),
                otel.kind = "producer"
            );
            tracing::Instrument::instrument(enqueue::run(ctx, args), span).await
        }
        Command::List(args) => operate::list(ctx, args).await,
        Command::Show(args) => operate::show(ctx, args).await,
        Command::Stats(args) => operate::stats(ctx, args).await,
        Command::Retry(args) => operate::retry(ctx, args).await,
        Command::Cancel(args) => operate::cancel(ctx, args).await,
        Command::Cron { command } => schedules::cron(ctx, command).await,
        Command::Limit { command } => limits::limit(ctx, command).await,
        Command::Workflow { command } => workflows::workflow(ctx, command).await,
        Command::Batch { command } => workflows::batch(ctx, command).await,
        Command::Pause(args) => controls::pause(ctx, args).await,
        Command::Resume(args) => controls::resume(ctx, args).await,
        Command::Paused => controls::paused(ctx).await,
        Command::Drain(args) => controls::drain(ctx, args).await,
        Command::Delete(args) => operate::delete(ctx, args).await,
        Command::Prune(args) => prune::run(ctx, args).await,
        Command::Doctor(args) => doctor::run(ctx, args).await,
        Command::Demo(args) => demo::run(ctx, args).await,
        Command::Migrate {
            direction,
            django_indexes,
        } => {
            let direction = direction.unwrap_or(migrate::Direction::Up);
            migrate::run(ctx, direction, django_indexes).await
        }
        #[cfg(feature = "web")]
        Command::Dashboard(args) => dashboard::run(ctx, args).await,
    }
}

/// A setting in seconds: a number from 0 to [`crate::MAX_DURATION`].
fn seconds(option: &'static str, value: f64) -> crate::Result<Duration> {
    let duration = Duration::try_from_secs_f64(value)
        .map_err(|_| Error::invalid(option, format!("{value} is not a number of seconds >= 0")))?;
    crate::config::check_duration(option, duration)?;
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PriorityOrdering;

    fn process_args(args: &[&str]) -> process::ProcessArgs {
        let cli = Cli::try_parse_from(["bgtasks", "process"].iter().chain(args)).unwrap();
        let Command::Process(args) = cli.command else {
            panic!("not process")
        };
        args
    }

    #[test]
    fn settings_use_the_seeds_names_and_defaults() {
        let args = process_args(&[]);
        let config = args.config_over(crate::Config::builder()).unwrap();
        assert_eq!(config.max_attempts(), 25);
        assert_eq!(config.max_run_time(), Duration::from_secs(3600));
        assert!(!config.run_async());
        assert_eq!(config.priority_ordering(), PriorityOrdering::Desc);
        assert_eq!(config.sleep(), Duration::from_secs(5));
        assert_eq!(config.lease(), Duration::from_secs(30));
        assert_eq!(config.cancel_grace(), Duration::from_secs(10));
        assert_eq!(args.grace, Duration::from_secs(30));
        assert_eq!(args.duration, 0);

        let args = process_args(&["--threads", "3", "--queue", "q"]);
        let config = args.config_over(crate::Config::builder()).unwrap();
        assert!(config.run_async());
        assert_eq!(config.concurrency(), 3);
    }

    #[test]
    fn flags_win_over_the_environment_field_by_field() {
        let env = crate::Config::builder()
            .max_attempts(7)
            .lease(Duration::from_secs(60))
            .retention(crate::Retention {
                completed: Some(Duration::from_secs(60)),
                keep_last: Some(5),
                ..Default::default()
            });
        let args = process_args(&["--max-attempts", "2", "--keep-last", "9"]);
        let config = args.config_over(env).unwrap();
        assert_eq!(config.max_attempts(), 2, "the flag");
        assert_eq!(config.lease(), Duration::from_secs(60), "the environment");
        let retention = config.retention().unwrap();
        assert_eq!(retention.completed, Some(Duration::from_secs(60)));
        assert_eq!(retention.keep_last, Some(9));
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        for (flag, value) in [
            ("--max-run-time", "-1"),
            ("--max-attempts", "x"),
            ("--run-async", "maybe"),
            ("--keep-last", "0"),
            ("--lease", "soon"),
        ] {
            let err = Cli::try_parse_from(["bgtasks", "process", &format!("{flag}={value}")])
                .unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(flag), "{err}");
        }
        let args = process_args(&["--max-run-time", "0"]);
        let err = args.config_over(crate::Config::builder()).unwrap_err();
        assert!(err.to_string().contains("MAX_RUN_TIME"), "{err}");
    }
}
