//! `background_task_rate_limit`: per-queue rate limits (this crate's own
//! table, migration 14). See [`crate::admin::set_rate_limit`].

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// At most `max_starts` tasks of `queue` start in any `period_ms` window,
/// across all runners.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_rate_limit")]
pub struct Model {
    /// The queue's name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub queue: String,
    /// Most starts in one window.
    pub max_starts: i32,
    /// The window, in milliseconds.
    pub period_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
