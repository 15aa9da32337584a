//! Dependencies between tasks (workflows).
//!
//! - `background_task_step`, this crate's own table: one row per task that
//!   waits for others. `pending` counts its dependencies that have not
//!   finished; `run_at` is when it runs once they have (its own schedule);
//!   `run_anyway` lets it run after a dependency failed; `workflow` and
//!   `name` group the steps of one workflow. The row is the lock that
//!   makes releasing a step happen exactly once: every outcome that
//!   settles one of its dependencies updates it.
//! - `background_task_dependency`, this crate's own table: one row per edge
//!   (`task_id` waits for `depends_on`). When the dependency finishes, its
//!   outcome (`state`) and stored result are copied onto the edge, where the
//!   step reads them when it runs.
//! - `background_task_completedtask.task_id` (nullable): the id the task
//!   had, written by this crate's runners, so that a dependency on a task
//!   that already finished can be checked against how it ended. Django
//!   inserts `NULL`, as it does not know the column.
//!
//! A waiting step is a `background_task` row whose `run_at` is the far
//! future ([`HELD_UNTIL`]): neither this crate's claim nor Django's
//! `process_tasks` takes a row that is not due, so a Django runner sharing
//! the tables never runs a step early.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000013_add_dependencies"
    }
}

pub const STEPS: &str = "background_task_step";
pub const DEPENDENCIES: &str = "background_task_dependency";
const HISTORY: &str = "background_task_completedtask";
const HISTORY_TASK_ID: &str = "task_id";
pub const HISTORY_TASK_ID_INDEX: &str = "background_task_completedtask_task_id_idx";
const DEPENDENCY_INDEX: &str = "background_task_dependency_depends_on_idx";

/// The `run_at` of a step that waits for its dependencies, as text
/// (`YYYY-MM-DD HH:MM:SS`, UTC).
pub const HELD_UNTIL: &str = "9999-01-01 00:00:00";

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
                    .table(Alias::new(STEPS))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("task_id"))
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Alias::new("pending")).integer().not_null())
                    .col(
                        ColumnDef::new(Alias::new("run_at"))
                            .custom(datetime.clone())
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("run_anyway"))
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(Alias::new("workflow"))
                            .string_len(190)
                            .null(),
                    )
                    .col(ColumnDef::new(Alias::new("name")).string_len(190).null())
                    .col(
                        ColumnDef::new(Alias::new("released_at"))
                            .custom(datetime)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(DEPENDENCIES))
                    .if_not_exists()
                    .col(ColumnDef::new(Alias::new("task_id")).integer().not_null())
                    .col(
                        ColumnDef::new(Alias::new("depends_on"))
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("state")).string_len(16).null())
                    .col(ColumnDef::new(Alias::new("result")).text().null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("task_id"))
                            .col(Alias::new("depends_on")),
                    )
                    .to_owned(),
            )
            .await?;
        if !manager.has_index(DEPENDENCIES, DEPENDENCY_INDEX).await? {
            manager
                .create_index(
                    Index::create()
                        .name(DEPENDENCY_INDEX)
                        .table(Alias::new(DEPENDENCIES))
                        .col(Alias::new("depends_on"))
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_column(HISTORY, HISTORY_TASK_ID).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(HISTORY))
                        .add_column(ColumnDef::new(Alias::new(HISTORY_TASK_ID)).integer().null())
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_index(HISTORY, HISTORY_TASK_ID_INDEX).await? {
            manager
                .create_index(
                    Index::create()
                        .name(HISTORY_TASK_ID_INDEX)
                        .table(Alias::new(HISTORY))
                        .col(Alias::new(HISTORY_TASK_ID))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_index(HISTORY, HISTORY_TASK_ID_INDEX).await? {
            manager
                .drop_index(
                    Index::drop()
                        .name(HISTORY_TASK_ID_INDEX)
                        .table(Alias::new(HISTORY))
                        .to_owned(),
                )
                .await?;
        }
        if manager.has_column(HISTORY, HISTORY_TASK_ID).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(HISTORY))
                        .drop_column(Alias::new(HISTORY_TASK_ID))
                        .to_owned(),
                )
                .await?;
        }
        for table in [DEPENDENCIES, STEPS] {
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
