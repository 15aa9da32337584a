//! `bgtasks migrate`: create, upgrade, roll back, or show the schema.

use clap::Subcommand;
use migration::{Migrator, MigratorTrait};

use super::{Context, Failure, output};
use crate::db;
use crate::error::Error;

#[derive(Debug, Clone, Copy, Subcommand)]
pub(super) enum Direction {
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

/// Runs `direction` (with Django's indexes put back, for `up`) and reports
/// the schema's state afterwards.
pub(super) async fn run(
    ctx: &Context,
    direction: Direction,
    django_indexes: bool,
) -> Result<(), Failure> {
    let url = ctx.url();
    if django_indexes && !matches!(direction, Direction::Up) {
        return Err(Error::invalid(
            "--django-indexes",
            "it goes with `bgtasks migrate` or `bgtasks migrate up`, which create indexes",
        )
        .into());
    }
    let mut created = None;
    let conn = match direction {
        Direction::Up if django_indexes => {
            let conn = db::connect(url).await?;
            created = Some(db::migrate_with_django_indexes(&conn).await?);
            conn
        }
        Direction::Up => db::open(url).await?,
        Direction::Down { all } => {
            let conn = db::connect(url).await?;
            let steps = if all { None } else { Some(1) };
            Migrator::down(&conn, steps).await.map_err(Error::Migrate)?;
            conn
        }
        Direction::Status => db::connect(url).await?,
    };
    let pending = db::pending_migrations(&conn).await?;
    let migrations: Vec<(String, bool)> = Migrator::migrations()
        .iter()
        .map(|m| (m.name().to_owned(), !pending.contains(&m.name().to_owned())))
        .collect();
    conn.close().await.ok();
    if ctx.json {
        let rows: Vec<_> = migrations
            .iter()
            .map(|(name, applied)| serde_json::json!({"name": name, "applied": applied}))
            .collect();
        match created {
            Some(created) => output::json(&serde_json::json!({
                "migrations": rows,
                "django_indexes_created": created,
            })),
            None => output::json(&rows),
        }
        return Ok(());
    }
    for (name, applied) in &migrations {
        println!("{}  {name}", if *applied { "applied" } else { "pending" });
    }
    match pending.len() {
        0 => println!("the schema is up to date"),
        n => println!("{n} migration(s) pending: `bgtasks migrate` applies them"),
    }
    match created.as_deref() {
        Some([]) => println!("Django's indexes: all present"),
        Some(names) => println!("Django's indexes: created {}", names.join(", ")),
        None => {}
    }
    Ok(())
}
