//! Adds `result` to the history: what a task returned, as JSON.
//!
//! Nullable and without a default, so Django's inserts (which name only
//! its own columns) leave it empty, and Django's admin, which selects its
//! own columns, never sees it.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000006_add_task_result"
    }
}

const HISTORY: &str = "background_task_completedtask";
const RESULT: &str = "result";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column(HISTORY, RESULT).await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(HISTORY))
                    .add_column(ColumnDef::new(Alias::new(RESULT)).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column(HISTORY, RESULT).await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(HISTORY))
                    .drop_column(Alias::new(RESULT))
                    .to_owned(),
            )
            .await
    }
}
