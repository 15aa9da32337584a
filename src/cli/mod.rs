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
//! Commands: `process` (run tasks), `enqueue`, `list`, `show`, `stats`,
//! `retry`, `cancel`, `delete`, `cron` (schedules), `limit` (global queue
//! limits), `prune`, `doctor`, `demo`, `migrate` and `dashboard`; `bgtasks help COMMAND` explains each. Every command prints a
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
//! names: `MAX_ATTEMPTS`, `MAX_RUN_TIME`, `BACKGROUND_TASK_RUN_ASYNC`,
//! `BACKGROUND_TASK_ASYNC_THREADS`, `BACKGROUND_TASK_PRIORITY_ORDERING`,
//! `DATABASE_URL` (default: `background_tasks.sqlite3` in the working
//! directory), and `BACKGROUND_TASK_DB_TIME_ZONE` (the zone of a Django
//! project with `USE_TZ = False`; default UTC).

#[cfg(feature = "web")]
mod dashboard;
mod demo;
mod doctor;
mod enqueue;
mod logging;
mod migrate;
mod operate;
mod output;
mod process;
mod prune;
mod schedules;

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
    #[arg(long, env = "BACKGROUND_TASK_DB_TIME_ZONE", global = true)]
    db_time_zone: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run due tasks until stopped (the seed's `process_tasks`). SIGINT,
    /// SIGTERM and SIGTSTP stop it gracefully; SIGUSR1 / SIGUSR2 switch to
    /// fast / slow polling after each task.
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
    /// Global per-queue concurrency limits: set, remove, list.
    Limit {
        #[command(subcommand)]
        command: schedules::LimitCommand,
    },
    /// Delete tasks (or history rows) for good.
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
}

impl Context {
    fn url(&self) -> Option<&str> {
        self.url.as_deref()
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
            Error::InvalidOption { .. } | Error::Params(_) | Error::InvalidDatabaseUrl { .. } => {
                Failure::BadInput(err.to_string())
            }
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
    let cli = Cli::parse();
    let log_std = matches!(&cli.command, Command::Process(args) if args.log_std);
    logging::init(log_std);
    let system = actix_rt::System::new();
    match system.block_on(run(cli, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if matches!(failure, Failure::Failed(_)) {
                tracing::error!("{failure}");
            }
            eprintln!("bgtasks: {failure}");
            ExitCode::from(failure.code())
        }
    }
}

async fn run(cli: Cli, registry: Registry) -> Result<(), Failure> {
    if let Some(zone) = cli.db_time_zone.as_deref().filter(|zone| !zone.is_empty()) {
        db::set_time_zone(zone)?;
    }
    let ctx = Context {
        url: cli.database_url,
        json: cli.json,
        registry,
    };
    match cli.command {
        Command::Process(args) => process::run(&ctx, args).await,
        Command::Enqueue(args) => enqueue::run(&ctx, args).await,
        Command::List(args) => operate::list(&ctx, args).await,
        Command::Show(args) => operate::show(&ctx, args).await,
        Command::Stats(args) => operate::stats(&ctx, args).await,
        Command::Retry(args) => operate::retry(&ctx, args).await,
        Command::Cancel(args) => operate::cancel(&ctx, args).await,
        Command::Cron { command } => schedules::cron(&ctx, command).await,
        Command::Limit { command } => schedules::limit(&ctx, command).await,
        Command::Delete(args) => operate::delete(&ctx, args).await,
        Command::Prune(args) => prune::run(&ctx, args).await,
        Command::Doctor(args) => doctor::run(&ctx, args).await,
        Command::Demo(args) => demo::run(&ctx, args).await,
        Command::Migrate { direction } => {
            migrate::run(&ctx, direction.unwrap_or(migrate::Direction::Up)).await
        }
        #[cfg(feature = "web")]
        Command::Dashboard(args) => dashboard::run(&ctx, args).await,
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean; use true or false")),
    }
}

fn seconds(option: &'static str, value: f64) -> crate::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Error::invalid(option, format!("{value} is not a number of seconds >= 0")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PriorityOrdering;

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
