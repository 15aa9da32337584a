//! `background_task_step`: tasks that wait for other tasks (this crate's
//! own table, migration 13). See [`crate::workflow`].

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A task that runs only after its dependencies finished. While it waits,
/// its `background_task` row is held (its `run_at` is the far future, so
/// no runner, Django's included, takes it); the outcome that settles its
/// last dependency releases it, exactly once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_step")]
pub struct Model {
    /// The task's id (`background_task.id`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub task_id: i32,
    /// Dependencies that have not finished yet.
    pub pending: i32,
    /// When the task runs once released: its own schedule, or at once if
    /// that is past.
    pub run_at: DateTimeUtc,
    /// Run even when a dependency failed or was cancelled (its dependents
    /// are otherwise cancelled).
    pub run_anyway: bool,
    /// The workflow the step belongs to, when it was enqueued by one.
    pub workflow: Option<String>,
    /// The step's name in its workflow.
    pub name: Option<String>,
    /// When it was settled: its last dependency finished and it became
    /// due, or a dependency's failure cancelled it. Never settled twice.
    pub released_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
