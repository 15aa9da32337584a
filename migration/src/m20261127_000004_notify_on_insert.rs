//! PostgreSQL only: a statement-level trigger that sends
//! `NOTIFY background_tasks` after every INSERT into `background_task`, so
//! idle runners in other processes (which `LISTEN` on that channel) wake at
//! once instead of at their next poll.
//!
//! One notification per statement, not per row, and PostgreSQL folds
//! identical notifications of one transaction into one: a bulk enqueue of
//! 10,000 rows sends one. The trigger also fires for rows Django inserts,
//! so a Django app enqueueing into a shared database wakes Rust runners
//! too. SQLite and MySQL have no such channel; their runners watch for
//! changes instead (see the runner's documentation). On those backends
//! this migration does nothing.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000004_notify_on_insert"
    }
}

/// The channel runners listen on.
pub const CHANNEL: &str = "background_tasks";

/// Name of the trigger on `background_task`, and of its function.
pub const TRIGGER: &str = "background_task_notify";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE OR REPLACE FUNCTION background_task_notify() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$"
        ))
        .await?;
        db.execute_unprepared(
            "CREATE TRIGGER background_task_notify AFTER INSERT ON background_task \
             FOR EACH STATEMENT EXECUTE FUNCTION background_task_notify()",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("DROP TRIGGER IF EXISTS background_task_notify ON background_task")
            .await?;
        db.execute_unprepared("DROP FUNCTION IF EXISTS background_task_notify()")
            .await?;
        Ok(())
    }
}
