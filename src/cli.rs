//! The `bgtasks` command line, as a library entry point: the bundled binary
//! calls [`main`] with its built-in tasks, and an application's own binary
//! calls it with its registry to get the same commands for its own tasks.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let registry = background_tasks::Registry::new();
//!     // registry.register(MyTask); ...
//!     background_tasks::cli::main(registry)
//! }
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait};

use crate::db;
use crate::error::Result;
use crate::registry::Registry;

/// Exit code of a run that failed because of the environment (database
/// unreachable, bad settings): sysexits' EX_UNAVAILABLE / EX_CONFIG family.
const EXIT_FAILURE: u8 = 1;

/// A database-backed task queue: run and operate it.
#[derive(Debug, Parser)]
#[command(name = "bgtasks", version, about)]
struct Cli {
    /// Database URL (sqlite://FILE, postgres://..., mysql://...). Default:
    /// background_tasks.sqlite3 in the working directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the queue's tables (up), roll them back (down), or
    /// list which migrations ran (status).
    Migrate {
        #[command(subcommand)]
        direction: Option<Direction>,
    },
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

/// Parses the command line, runs the command on a new actix system, and
/// returns the process exit code. `registry` holds the tasks this binary
/// can run.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let system = actix_rt::System::new();
    match system.block_on(run(cli, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("bgtasks: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn run(cli: Cli, _registry: Registry) -> Result<()> {
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::Migrate { direction } => migrate(url, direction.unwrap_or(Direction::Up)).await,
    }
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
            Migrator::down(&conn, steps)
                .await
                .map_err(crate::Error::Migrate)?;
        }
        Direction::Status => {
            let conn = db::connect(url).await?;
            for migration in Migrator::get_migration_with_status(&conn)
                .await
                .map_err(crate::Error::Migrate)?
            {
                println!("{:?}\t{}", migration.status(), migration.name());
            }
        }
    }
    Ok(())
}

/// Logs to stderr through tracing; `RUST_LOG` filters (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .ok();
}
