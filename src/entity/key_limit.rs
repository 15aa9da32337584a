//! `background_task_key_limit`: queues claimed key by key, with their
//! per-key limits (this crate's own table, migration 15). See
//! [`crate::admin::set_key_limit`].

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// The key policy of `queue`: its claims take a fair share of each key's
/// due tasks in turn, at most `max_running` running per key, and at most
/// `max_starts` starts per key in any `period_ms` window, across all
/// runners. Either limit may be empty; with neither, the policy is
/// fairness alone.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_key_limit")]
pub struct Model {
    /// The queue's name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub queue: String,
    /// Most running tasks of one key.
    pub max_running: Option<i32>,
    /// Most starts of one key in one window.
    pub max_starts: Option<i32>,
    /// The window, in milliseconds.
    pub period_ms: Option<i64>,
    /// The key the last claim served last: the next claim starts after it.
    pub next_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
