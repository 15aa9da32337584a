//! What issue 8's task features store: per-enqueue policy overrides and
//! cancellation requests on `background_task`, a cancelled mark on the
//! history, cron schedules, and global per-queue concurrency limits.
//!
//! Every added column is nullable, so Django's inserts (which never name
//! them) keep working; the two new tables are this crate's own.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000008_add_task_features"
    }
}

const TASKS: &str = "background_task";
const COMPLETED: &str = "background_task_completedtask";
/// Cron schedules.
pub const SCHEDULES: &str = "background_task_schedule";
/// Global per-queue concurrency limits.
pub const QUEUE_LIMITS: &str = "background_task_queue_limit";

fn datetime(manager: &SchemaManager) -> Alias {
    Alias::new(match manager.get_database_backend() {
        DbBackend::Postgres => "timestamp with time zone",
        DbBackend::MySql => "datetime(6)",
        _ => "datetime",
    })
}

async fn add_column(
    manager: &SchemaManager<'_>,
    table: &str,
    column: ColumnDef,
) -> Result<(), DbErr> {
    let name = column.get_column_name();
    if manager.has_column(table, &name).await? {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(Alias::new(table))
                .add_column(column)
                .to_owned(),
        )
        .await
}

async fn drop_column(manager: &SchemaManager<'_>, table: &str, column: &str) -> Result<(), DbErr> {
    if !manager.has_column(table, column).await? {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(Alias::new(table))
                .drop_column(Alias::new(column))
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let datetime = datetime(manager);
        // Per-enqueue overrides of the task's policies, as JSON.
        add_column(
            manager,
            TASKS,
            ColumnDef::new(Alias::new("policy"))
                .text()
                .null()
                .to_owned(),
        )
        .await?;
        // Set by a cancel of a running task; its runner stops the body.
        add_column(
            manager,
            TASKS,
            ColumnDef::new(Alias::new("cancel_requested_at"))
                .custom(datetime.clone())
                .null()
                .to_owned(),
        )
        .await?;
        // Set on the history row of a cancelled task.
        add_column(
            manager,
            COMPLETED,
            ColumnDef::new(Alias::new("cancelled_at"))
                .custom(datetime.clone())
                .null()
                .to_owned(),
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(SCHEDULES))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("name"))
                            .string_len(190)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("task_name"))
                            .string_len(190)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("task_params")).text().not_null())
                    .col(
                        ColumnDef::new(Alias::new("cron"))
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("timezone"))
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("queue")).string_len(190).null())
                    .col(ColumnDef::new(Alias::new("priority")).integer().not_null())
                    .col(
                        ColumnDef::new(Alias::new("verbose_name"))
                            .string_len(255)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("missed"))
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("paused")).boolean().not_null())
                    .col(
                        ColumnDef::new(Alias::new("next_fire_at"))
                            .custom(datetime.clone())
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("last_fired_at"))
                            .custom(datetime.clone())
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("created_at"))
                            .custom(datetime)
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("background_task_schedule_next_fire_at")
                    .table(Alias::new(SCHEDULES))
                    .col(Alias::new("next_fire_at"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(QUEUE_LIMITS))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("queue"))
                            .string_len(190)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("max_running"))
                            .integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new(QUEUE_LIMITS))
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new(SCHEDULES))
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        drop_column(manager, COMPLETED, "cancelled_at").await?;
        drop_column(manager, TASKS, "cancel_requested_at").await?;
        drop_column(manager, TASKS, "policy").await
    }
}
