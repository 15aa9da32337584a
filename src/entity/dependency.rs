//! `background_task_dependency`: which task waits for which (this crate's
//! own table, migration 13). See [`crate::workflow`].

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// `task_id` waits for `depends_on`. When `depends_on` finishes, how it
/// ended and what it returned are copied here, where the waiting task
/// reads them ([`crate::TaskContext::dependencies`]).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "background_task_dependency")]
pub struct Model {
    /// The waiting task.
    #[sea_orm(primary_key, auto_increment = false)]
    pub task_id: i32,
    /// The task it waits for.
    #[sea_orm(primary_key, auto_increment = false)]
    pub depends_on: i32,
    /// `None` while `depends_on` has not finished; then `succeeded`,
    /// `failed` or `cancelled`.
    pub state: Option<String>,
    /// What `depends_on` returned, as JSON, when it succeeded with a result.
    #[sea_orm(column_type = "Text", nullable)]
    pub result: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
