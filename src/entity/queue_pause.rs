//! `background_task_queue_pause`: paused queues (this crate's own table).
//! See [`crate::admin::pause_queue`].

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// `queue` is paused: no runner claims its tasks until it is resumed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_queue_pause")]
pub struct Model {
    /// The queue's name; `""` is the default (unnamed) queue.
    #[sea_orm(primary_key, auto_increment = false)]
    pub queue: String,
    /// When it was paused.
    pub paused_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
