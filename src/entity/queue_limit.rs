//! `background_task_queue_limit`: global per-queue concurrency limits (this
//! crate's own table). See [`crate::admin::set_queue_limit`].

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// At most `max_running` tasks of `queue` run at once, across all runners.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_queue_limit")]
pub struct Model {
    /// The queue's name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub queue: String,
    /// Most tasks of the queue running at once, on all runners together.
    pub max_running: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
