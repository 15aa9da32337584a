//! `background_task.trace_context`: the W3C `traceparent` of the code that
//! enqueued the task (null when it ran outside a trace), so that each
//! execution's span links to it, in whatever process runs it and at every
//! attempt. A nullable column Django's model does not know: its ORM names
//! the columns it reads and writes, so it leaves this one alone.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000011_add_trace_context"
    }
}

const TASKS: &str = "background_task";
const COLUMN: &str = "trace_context";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column(TASKS, COLUMN).await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(TASKS))
                    .add_column(ColumnDef::new(Alias::new(COLUMN)).string_len(255).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column(TASKS, COLUMN).await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(TASKS))
                    .drop_column(Alias::new(COLUMN))
                    .to_owned(),
            )
            .await
    }
}
