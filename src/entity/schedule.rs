//! `background_task_schedule`: cron schedules (this crate's own table;
//! Django does not use it). See [`crate::cron`].

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One cron schedule: which task to enqueue, with what, and when.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_schedule")]
pub struct Model {
    /// Row id.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// The schedule's own name, unique (at most 190 characters).
    #[sea_orm(unique)]
    pub name: String,
    /// Name of the task each occurrence enqueues.
    pub task_name: String,
    /// The enqueued task's `task_params` (`[args, kwargs]`).
    #[sea_orm(column_type = "Text")]
    pub task_params: String,
    /// The cron expression: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. `Europe/Paris`.
    pub timezone: String,
    /// Queue of the enqueued tasks; `None`: the default queue.
    pub queue: Option<String>,
    /// Priority of the enqueued tasks.
    pub priority: i32,
    /// Verbose name of the enqueued tasks.
    pub verbose_name: Option<String>,
    /// What to do with occurrences missed while no runner was alive:
    /// `skip` or `run_once`.
    pub missed: String,
    /// A paused schedule enqueues nothing.
    pub paused: bool,
    /// The next occurrence not yet enqueued.
    pub next_fire_at: DateTimeUtc,
    /// The last occurrence enqueued (or skipped as missed).
    pub last_fired_at: Option<DateTimeUtc>,
    /// When the schedule was created.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
