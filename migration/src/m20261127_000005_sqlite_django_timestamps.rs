//! SQLite only: one text format for timestamps, Django's.
//!
//! SQLite stores timestamps as text and compares them as text. Django
//! writes naive UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]`; earlier versions of
//! this crate, and any plain SeaORM write, write RFC 3339,
//! `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`. The two do not sort together (`T`
//! sorts after the space), so on the same UTC day a row in one format
//! looks in the future, or its lock unexpired, to a query in the other.
//! The crate now binds every timestamp in Django's format; this migration
//!
//! - rewrites the timestamps already stored in RFC 3339 into Django's
//!   format, and
//! - adds triggers that do the same for any row written later in RFC 3339
//!   (a plain SeaORM statement of the application, an older runner still
//!   running). Their `WHEN` clause makes them free for rows already in
//!   Django's format, which is every row this crate or Django writes.
//!
//! PostgreSQL and MySQL store typed timestamps; there this does nothing.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000005_sqlite_django_timestamps"
    }
}

/// The timestamp columns of the two shared tables.
const COLUMNS: [&str; 4] = ["run_at", "repeat_until", "failed_at", "locked_at"];
const TABLES: [&str; 2] = ["background_task", "background_task_completedtask"];

/// `column` in RFC 3339 (`...T...+00:00` or `...Z`), in Django's format:
/// the `T` a space, no offset, at most six fractional digits.
fn normalized(column: &str) -> String {
    format!("substr(rtrim(replace(replace({column}, 'T', ' '), '+00:00', ''), 'Z'), 1, 26)")
}

fn is_rfc3339(column: &str) -> String {
    format!("{column} LIKE '____-__-__T%'")
}

/// `SET` list normalizing every timestamp column of a row, from `source`
/// (`NEW.` in a trigger, empty for the table itself).
fn assignments(source: &str) -> String {
    COLUMNS
        .iter()
        .map(|column| {
            let value = format!("{source}{column}");
            format!(
                "{column} = CASE WHEN {} THEN {} ELSE {column} END",
                is_rfc3339(&value),
                normalized(&value)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn any_rfc3339(source: &str) -> String {
    COLUMNS
        .iter()
        .map(|column| is_rfc3339(&format!("{source}{column}")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!(
                "UPDATE {table} SET {} WHERE {}",
                assignments(""),
                any_rfc3339("")
            ))
            .await?;
            for event in ["INSERT", "UPDATE"] {
                // SQLite's recursive_triggers is off by default, so the
                // trigger's own UPDATE does not fire it again.
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER IF NOT EXISTS {table}_django_times_{event} \
                     AFTER {event} ON {table} WHEN {} \
                     BEGIN UPDATE {table} SET {} WHERE id = NEW.id; END",
                    any_rfc3339("NEW."),
                    assignments("NEW."),
                    event = event.to_lowercase()
                ))
                .await?;
            }
        }
        for column in ["started_at", "last_seen"] {
            db.execute_unprepared(&format!(
                "UPDATE background_task_runner SET {column} = {} WHERE {}",
                normalized(column),
                is_rfc3339(column)
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        // Django's format stays: it is what both sides read.
        let db = manager.get_connection();
        for table in TABLES {
            for event in ["insert", "update"] {
                db.execute_unprepared(&format!(
                    "DROP TRIGGER IF EXISTS {table}_django_times_{event}"
                ))
                .await?;
            }
        }
        Ok(())
    }
}
