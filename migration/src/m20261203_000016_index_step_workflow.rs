//! An index over `background_task_step (workflow, task_id)`: the steps of
//! one workflow, in enqueue order, and the list of workflows by name, read
//! without walking the whole table (the dashboard's Workflows page,
//! `bgtasks workflow`, `/api/workflows`). A step row stays while its
//! history row does, so the table grows with the history it mirrors.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000016_index_step_workflow"
    }
}

const STEPS: &str = "background_task_step";
pub const STEP_WORKFLOW_INDEX: &str = "background_task_step_workflow_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_index(STEPS, STEP_WORKFLOW_INDEX).await? {
            manager
                .create_index(
                    Index::create()
                        .name(STEP_WORKFLOW_INDEX)
                        .table(Alias::new(STEPS))
                        .col(Alias::new("workflow"))
                        .col(Alias::new("task_id"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_index(STEPS, STEP_WORKFLOW_INDEX).await? {
            manager
                .drop_index(
                    Index::drop()
                        .name(STEP_WORKFLOW_INDEX)
                        .table(Alias::new(STEPS))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
