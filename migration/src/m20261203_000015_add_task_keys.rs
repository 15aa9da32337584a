//! Task keys: per-key concurrency, per-key rate limits and fair claims.
//!
//! - `background_task.limit_key`, this crate's column: the key a task was
//!   enqueued with (a tenant, an API account), set by its task's key
//!   function or the enqueue; nullable, and Django's inserts leave it
//!   empty.
//! - `background_task_key_idx`: the claim of a queue with a key policy
//!   walks it, one key at a time (and the tasks without a key as one
//!   more). On PostgreSQL and SQLite a partial index over the claimable
//!   rows of named queues (key policies are set on named queues), so it
//!   costs the default queue's tasks nothing; MySQL/MariaDB have no
//!   partial indexes: `queue, limit_key` lead, then the claim index's
//!   columns.
//! - `background_task_key_limit`, this crate's own table: one row per queue
//!   whose claims go key by key (the key policy), with the per-key limits
//!   (`max_running`, `max_starts` per `period_ms`; either may be empty)
//!   and the key the last claim stopped at (`next_key`), where the next
//!   one starts. A claim of the queue locks the row, so claims of the queue
//!   by any number of runners take turns.
//! - `background_task_key_start`, this crate's own table: the ledger the
//!   per-key rate limits count, one row per key per claim.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000015_add_task_keys"
    }
}

const TASKS: &str = "background_task";
/// The task's key column on `background_task`.
pub const KEY_COLUMN: &str = "limit_key";
/// The index a keyed claim walks.
pub const KEY_INDEX: &str = "background_task_key_idx";
/// One row per queue claimed key by key.
pub const KEY_LIMITS: &str = "background_task_key_limit";
/// The per-key start ledger.
pub const KEY_STARTS: &str = "background_task_key_start";
const KEY_STARTS_INDEX: &str = "background_task_key_start_idx";

fn datetime(manager: &SchemaManager) -> Alias {
    Alias::new(match manager.get_database_backend() {
        DbBackend::Postgres => "timestamp with time zone",
        DbBackend::MySql => "datetime(6)",
        _ => "datetime",
    })
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column(TASKS, KEY_COLUMN).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(TASKS))
                        .add_column(
                            ColumnDef::new(Alias::new(KEY_COLUMN))
                                .string_len(190)
                                .null(),
                        )
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_index(TASKS, KEY_INDEX).await? {
            let sql = match manager.get_database_backend() {
                DbBackend::MySql => format!(
                    "CREATE INDEX {KEY_INDEX} ON {TASKS} \
                     (queue, {KEY_COLUMN}, locked_by, failed_at, priority DESC, run_at, id)"
                ),
                _ => format!(
                    "CREATE INDEX {KEY_INDEX} ON {TASKS} \
                     (queue, {KEY_COLUMN}, priority DESC, run_at, id) \
                     WHERE locked_by IS NULL AND failed_at IS NULL AND queue IS NOT NULL"
                ),
            };
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(KEY_LIMITS))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("queue"))
                            .string_len(190)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Alias::new("max_running")).integer().null())
                    .col(ColumnDef::new(Alias::new("max_starts")).integer().null())
                    .col(ColumnDef::new(Alias::new("period_ms")).big_integer().null())
                    .col(
                        ColumnDef::new(Alias::new("next_key"))
                            .string_len(190)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(KEY_STARTS))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("queue"))
                            .string_len(190)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new(KEY_COLUMN))
                            .string_len(190)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("started_at"))
                            .custom(datetime(manager))
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("starts")).integer().not_null())
                    .to_owned(),
            )
            .await?;
        if !manager.has_index(KEY_STARTS, KEY_STARTS_INDEX).await? {
            manager
                .create_index(
                    Index::create()
                        .name(KEY_STARTS_INDEX)
                        .table(Alias::new(KEY_STARTS))
                        .col(Alias::new("queue"))
                        .col(Alias::new(KEY_COLUMN))
                        .col(Alias::new("started_at"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [KEY_STARTS, KEY_LIMITS] {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        if manager.has_index(TASKS, KEY_INDEX).await? {
            manager
                .drop_index(
                    Index::drop()
                        .name(KEY_INDEX)
                        .table(Alias::new(TASKS))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(TASKS))
                    .drop_column(Alias::new(KEY_COLUMN))
                    .to_owned(),
            )
            .await
    }
}
