//! `background_task`: tasks waiting to run, or running (locked by a runner).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One row of `background_task`: a pending or running task.
///
/// The 17 columns of django-background-tasks 1.2.8's `Task` model, with its
/// types and lengths (see the migration `m20261127_000001_create_seed_tables`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task")]
pub struct Model {
    /// Row id.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Registered name of the task (at most 190 characters).
    pub task_name: String,
    /// `[args, kwargs]` as Python's `json.dumps(..., sort_keys=True)` writes it.
    #[sea_orm(column_type = "Text")]
    pub task_params: String,
    /// Hex SHA-1 of `task_name + task_params`; not unique.
    pub task_hash: String,
    /// Human label (at most 255 characters).
    pub verbose_name: Option<String>,
    /// Higher runs first (unless the ordering is set to "ASC").
    pub priority: i32,
    /// Earliest time the task may run.
    pub run_at: DateTimeUtc,
    /// Repeat period in seconds; 0 means never.
    pub repeat: i64,
    /// End of the repeat chain; `None` means forever.
    pub repeat_until: Option<DateTimeUtc>,
    /// Named queue; `None` is the default queue.
    pub queue: Option<String>,
    /// How many times the task was run (failures and the final success).
    pub attempts: i32,
    /// Set when the task failed permanently.
    pub failed_at: Option<DateTimeUtc>,
    /// Full text of the last error; empty when none.
    #[sea_orm(column_type = "Text")]
    pub last_error: String,
    /// Identity of the runner that holds the task (at most 64 characters).
    pub locked_by: Option<String>,
    /// When that runner took or last renewed the lock.
    pub locked_at: Option<DateTimeUtc>,
    /// Creator, generic foreign key: content type part (Django's `django_content_type.id`).
    pub creator_content_type_id: Option<i32>,
    /// Creator, generic foreign key: object id part. Django's
    /// `PositiveIntegerField`: `integer unsigned` on MySQL (0 to
    /// 4294967295), a non-negative `integer` on PostgreSQL and SQLite.
    pub creator_object_id: Option<u32>,
    /// Set for a unique task (opt-in): the key no two live rows may share,
    /// enforced by a unique index. This crate's column (migration 7):
    /// nullable, and Django's inserts leave it empty, so they are never
    /// refused.
    pub unique_key: Option<String>,
    /// Policies set for this enqueue only, overriding the task's definition
    /// (max attempts, time limit, backoff, history), as JSON; `None` for
    /// none. This crate's column (migration 8), nullable.
    #[sea_orm(column_type = "Text", nullable)]
    pub policy: Option<String>,
    /// Set when an operator cancelled the task while it ran: its runner
    /// signals the body and stops it after the grace period. This crate's
    /// column (migration 8), nullable.
    pub cancel_requested_at: Option<DateTimeUtc>,
    /// This crate's: the W3C `traceparent` of the code that enqueued the
    /// task, when it ran in an OpenTelemetry trace; each execution's span
    /// links to it (feature `otel`).
    pub trace_context: Option<String>,
    /// This crate's: the task's key (a tenant, an API account), from its
    /// task's [`crate::Task::key`] or the enqueue's `key`; in a queue with a
    /// key policy, claims share out by key and count the per-key limits
    /// (migration 15). Nullable; Django's inserts leave it empty.
    pub limit_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// True when the task has recorded an error (the seed's `has_error`).
    pub fn has_error(&self) -> bool {
        !self.last_error.is_empty()
    }

    /// True when the task has a repeat period (the seed's `is_repeating_task`).
    pub fn is_repeating(&self) -> bool {
        self.repeat > 0
    }
}

/// `verbose_name`, or `task_name` when there is none, as the seed's `__str__`.
impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.verbose_name.as_deref().unwrap_or(&self.task_name))
    }
}
