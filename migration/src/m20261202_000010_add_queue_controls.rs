//! Fleet controls: paused queues and runner drains.
//!
//! - `background_task_queue_pause`, this crate's own table: one row per
//!   paused queue (`''` is the default, unnamed queue). Runners read it at
//!   each heartbeat and claim nothing of a paused queue; enqueues go on.
//! - `background_task_runner.drain_requested_at`: set by an operator (the
//!   dashboard, `bgtasks drain`) or by the runner itself on SIGQUIT; the
//!   runner reads it at its heartbeat, stops claiming, finishes what it
//!   runs and exits.
//!
//! Neither touches a table Django owns.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000010_add_queue_controls"
    }
}

pub const QUEUE_PAUSES: &str = "background_task_queue_pause";
const RUNNERS: &str = "background_task_runner";
const DRAIN: &str = "drain_requested_at";

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
        let datetime = datetime(manager);
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(QUEUE_PAUSES))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("queue"))
                            .string_len(190)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("paused_at"))
                            .custom(datetime.clone())
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        if !manager.has_column(RUNNERS, DRAIN).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(RUNNERS))
                        .add_column(ColumnDef::new(Alias::new(DRAIN)).custom(datetime).null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column(RUNNERS, DRAIN).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(RUNNERS))
                        .drop_column(Alias::new(DRAIN))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new(QUEUE_PAUSES))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
