//! Creates `background_task_runner`, the registry of runners: which runner
//! identity (the value it writes into `locked_by`) runs on which host and
//! process, since when, when it was last seen alive, and how many tasks it
//! holds. Runners insert their row at start, refresh it with every
//! heartbeat, and delete it at a clean shutdown; a row whose `last_seen` is
//! older than the lease belongs to a runner that died.
//!
//! Django knows nothing of this table, and nothing of Django's depends on it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000003_create_runner_table"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let datetime = match manager.get_database_backend() {
            DbBackend::Postgres => "timestamp with time zone",
            DbBackend::MySql => "datetime(6)",
            _ => "datetime",
        };
        let table = Alias::new("background_task_runner");
        manager
            .create_table(
                Table::create()
                    .table(table.clone())
                    .col(
                        ColumnDef::new(Alias::new("runner_id"))
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("host"))
                            .string_len(255)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("pid")).integer().not_null())
                    .col(ColumnDef::new(Alias::new("queue")).string_len(190).null())
                    .col(ColumnDef::new(Alias::new("executors")).integer().not_null())
                    .col(ColumnDef::new(Alias::new("running")).integer().not_null())
                    .col(
                        ColumnDef::new(Alias::new("started_at"))
                            .custom(Alias::new(datetime))
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("last_seen"))
                            .custom(Alias::new(datetime))
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("background_task_runner_last_seen")
                    .table(table)
                    .col(Alias::new("last_seen"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("background_task_runner"))
                    .to_owned(),
            )
            .await
    }
}
