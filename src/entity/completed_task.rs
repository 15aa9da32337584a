//! `background_task_completedtask`: the history of finished tasks, both
//! succeeded (`failed_at` is `None`) and permanently failed.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One row of `background_task_completedtask`.
///
/// The same 17 columns as [`super::task::Model`], copied from the task when it
/// finished, except `run_at`, which holds the **completion time** (as in
/// django-background-tasks).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_completedtask")]
pub struct Model {
    /// Row id (not the id the task had while pending).
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Registered name of the task.
    pub task_name: String,
    /// `[args, kwargs]` as Python's `json.dumps(..., sort_keys=True)` writes it.
    #[sea_orm(column_type = "Text")]
    pub task_params: String,
    /// Hex SHA-1 of `task_name + task_params`.
    pub task_hash: String,
    /// Human label.
    pub verbose_name: Option<String>,
    /// Priority the task had.
    pub priority: i32,
    /// Completion time (success or permanent failure).
    pub run_at: DateTimeUtc,
    /// Repeat period in seconds; 0 means never.
    pub repeat: i64,
    /// End of the repeat chain.
    pub repeat_until: Option<DateTimeUtc>,
    /// Named queue; `None` is the default queue.
    pub queue: Option<String>,
    /// How many times the task was run.
    pub attempts: i32,
    /// When it failed permanently; `None` for a success.
    pub failed_at: Option<DateTimeUtc>,
    /// Full text of the last error, kept on a success after retries.
    #[sea_orm(column_type = "Text")]
    pub last_error: String,
    /// Runner that ran it last.
    pub locked_by: Option<String>,
    /// When that runner locked it (about the start time).
    pub locked_at: Option<DateTimeUtc>,
    /// Creator, content type part.
    pub creator_content_type_id: Option<i32>,
    /// Creator, generic foreign key: object id part. Django's
    /// `PositiveIntegerField`: `integer unsigned` on MySQL (0 to
    /// 4294967295), a non-negative `integer` on PostgreSQL and SQLite.
    pub creator_object_id: Option<u32>,
    /// What the task returned, as JSON; `None` when it returned nothing (or
    /// failed, or ran under Django). This crate's column, added by its
    /// migration 6: nullable, so Django's inserts leave it empty.
    #[sea_orm(column_type = "Text", nullable)]
    pub result: Option<String>,
    /// Set when the task was cancelled by an operator (before or while it
    /// ran); such a row also has `failed_at`, so Django's admin lists it as
    /// failed. This crate's column (migration 8), nullable.
    pub cancelled_at: Option<DateTimeUtc>,
    /// The id the task had in `background_task`, so that a task enqueued
    /// to run after it can tell how it ended. This crate's column
    /// (migration 13), nullable: `None` in rows Django wrote.
    pub task_id: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// True when the task recorded an error (the seed's `has_error`).
    pub fn has_error(&self) -> bool {
        !self.last_error.is_empty()
    }

    /// True when the task failed permanently.
    pub fn failed(&self) -> bool {
        self.failed_at.is_some()
    }
}

/// `"<verbose_name or task_name> - <run_at>"`, as the seed's `__str__`
/// (Python prints the time as `2026-11-27 08:00:00.123456+00:00`).
impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.verbose_name.as_deref().unwrap_or(&self.task_name);
        let time = if self.run_at.timestamp_subsec_micros() == 0 {
            self.run_at.format("%Y-%m-%d %H:%M:%S+00:00")
        } else {
            self.run_at.format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        };
        write!(f, "{name} - {time}")
    }
}
