//! The seed's managers as query extensions: start from
//! `task::Entity::find()` or `completed_task::Entity::find()`, chain the
//! filters, and finish with SeaORM's `.all(db)`, `.count(db)`, ...
//!
//! ```no_run
//! use background_tasks::{CompletedTaskQuery, Creator, completed_task};
//! use sea_orm::{EntityTrait, PaginatorTrait};
//! # async fn demo(db: sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
//! let user = Creator::new(4, 17);
//! let failed_last_hour = completed_task::Entity::find()
//!     .created_by(user)
//!     .failed(Some(chrono::TimeDelta::hours(1)))
//!     .count(&db)
//!     .await?;
//! # Ok(()) }
//! ```

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use sea_orm::{ColumnTrait, QueryFilter, Select};

use crate::entity::{completed_task, task};
use crate::queue::Creator;

/// `within` before now, as naive UTC to the microsecond. These filters do
/// not know their backend, and a naive value compares right on all three:
/// on SQLite it is bound as Django's `YYYY-MM-DD HH:MM:SS.ffffff` text (the
/// format of the stored values, see `store`), and PostgreSQL's connection
/// runs in UTC, so it casts it to the same instant.
fn since(within: TimeDelta) -> NaiveDateTime {
    let at = Utc::now() - within;
    DateTime::from_timestamp_micros(at.timestamp_micros())
        .unwrap_or(at)
        .naive_utc()
}

/// Filters of waiting and running tasks (the seed's `TaskManager`).
pub trait TaskQuery: Sized {
    /// Tasks created by `creator`.
    fn created_by(self, creator: Creator) -> Self;
}

impl TaskQuery for Select<task::Entity> {
    fn created_by(self, creator: Creator) -> Self {
        self.filter(task::Column::CreatorContentTypeId.eq(creator.content_type_id))
            .filter(task::Column::CreatorObjectId.eq(creator.object_id))
    }
}

/// Filters of the history (the seed's `CompletedTaskQuerySet`).
pub trait CompletedTaskQuery: Sized {
    /// Tasks created by `creator`.
    fn created_by(self, creator: Creator) -> Self;
    /// Permanently failed tasks; with `within`, only those that failed in
    /// that last stretch of time.
    fn failed(self, within: Option<TimeDelta>) -> Self;
    /// Succeeded tasks; with `within`, only those completed in that last
    /// stretch of time (a history row's `run_at` is its completion time).
    fn succeeded(self, within: Option<TimeDelta>) -> Self;
}

impl CompletedTaskQuery for Select<completed_task::Entity> {
    fn created_by(self, creator: Creator) -> Self {
        self.filter(completed_task::Column::CreatorContentTypeId.eq(creator.content_type_id))
            .filter(completed_task::Column::CreatorObjectId.eq(creator.object_id))
    }

    fn failed(self, within: Option<TimeDelta>) -> Self {
        let query = self.filter(completed_task::Column::FailedAt.is_not_null());
        match within {
            Some(within) => query.filter(completed_task::Column::FailedAt.gt(since(within))),
            None => query,
        }
    }

    fn succeeded(self, within: Option<TimeDelta>) -> Self {
        let query = self.filter(completed_task::Column::FailedAt.is_null());
        match within {
            Some(within) => query.filter(completed_task::Column::RunAt.gt(since(within))),
            None => query,
        }
    }
}
