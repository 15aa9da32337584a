//! Adds the index the runner's claim query walks.
//!
//! The claim asks for "the first N unlocked, not failed, due tasks in
//! priority order, oldest first": `WHERE locked_by IS NULL AND failed_at IS
//! NULL AND run_at <= now ORDER BY priority DESC, run_at, id LIMIT N`. Django's
//! single-column indexes cannot answer that without sorting every due row, so
//! a claim would get slower as the backlog grows. With this index the
//! database reads the rows already in claim order and stops after N of them.
//!
//! - PostgreSQL and SQLite: a partial index over exactly the claimable rows,
//!   so locked (running) and failed rows never cost a claim anything, and the
//!   index stays small: rows leave it when they are locked.
//! - MySQL/MariaDB have no partial indexes: the two `IS NULL` columns lead,
//!   so the claim is one range of the index in the same order.
//!
//! `id` is the final tie-break, which makes the order total (the seed has
//! none) and lets concurrent runners skip each other's locked rows in a
//! stable order. With the seed's `BACKGROUND_TASK_PRIORITY_ORDERING = "ASC"`
//! the index still selects the claimable rows, and the database sorts the
//! due ones.
//!
//! Django never sees this index in its migration state; its inserts and its
//! admin work unchanged.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000002_add_claim_index"
    }
}

/// Name of the claim index on `background_task`.
pub const CLAIM_INDEX: &str = "background_task_claim_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = match manager.get_database_backend() {
            DbBackend::MySql => format!(
                "CREATE INDEX {CLAIM_INDEX} ON background_task \
                 (locked_by, failed_at, priority DESC, run_at, id)"
            ),
            _ => format!(
                "CREATE INDEX {CLAIM_INDEX} ON background_task \
                 (priority DESC, run_at, id) WHERE locked_by IS NULL AND failed_at IS NULL"
            ),
        };
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(CLAIM_INDEX)
                    .table(Alias::new("background_task"))
                    .to_owned(),
            )
            .await
    }
}
