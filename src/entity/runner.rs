//! `background_task_runner`: the registry of runners (this crate's own
//! table; Django does not use it).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One runner, as it last reported itself.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_runner")]
pub struct Model {
    /// The identity it writes into `locked_by`: `host:pid:random`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub runner_id: String,
    /// Host name.
    pub host: String,
    /// Operating-system process id.
    pub pid: i32,
    /// The named queue it runs; `None`: every queue.
    pub queue: Option<String>,
    /// How many tasks it runs at once.
    pub executors: i32,
    /// How many tasks it held at its last heartbeat.
    pub running: i32,
    /// When it started.
    pub started_at: DateTimeUtc,
    /// Its last heartbeat.
    pub last_seen: DateTimeUtc,
    /// When an operator (or a SIGQUIT) asked it to drain: stop claiming,
    /// finish what it runs, and exit. `None`: it runs on.
    pub drain_requested_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
