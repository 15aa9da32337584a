//! Rate limits: at most `max_starts` task starts of a queue in any
//! `period_ms` window, across every runner.
//!
//! - `background_task_rate_limit`, this crate's own table: one row per
//!   rate-limited queue. A claim of the queue locks it (`FOR UPDATE`), so
//!   claims of the queue by any number of runners take turns.
//! - `background_task_start`, this crate's own table: the ledger the limit
//!   is counted from, one row per claim of a rate-limited queue (`starts`
//!   tasks at `started_at`); rows older than the queue's period are
//!   deleted by the claims that follow.
//!
//! Neither touches a table Django owns.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000014_add_rate_limits"
    }
}

pub const RATE_LIMITS: &str = "background_task_rate_limit";
pub const STARTS: &str = "background_task_start";
const STARTS_INDEX: &str = "background_task_start_queue_idx";

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
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(RATE_LIMITS))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("queue"))
                            .string_len(190)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("max_starts"))
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("period_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(STARTS))
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
                        ColumnDef::new(Alias::new("started_at"))
                            .custom(datetime(manager))
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("starts")).integer().not_null())
                    .to_owned(),
            )
            .await?;
        if !manager.has_index(STARTS, STARTS_INDEX).await? {
            manager
                .create_index(
                    Index::create()
                        .name(STARTS_INDEX)
                        .table(Alias::new(STARTS))
                        .col(Alias::new("queue"))
                        .col(Alias::new("started_at"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [STARTS, RATE_LIMITS] {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
