//! Rows written the way a runner (or Django) would have written them, for
//! tests that need a history in a given shape.

use background_tasks::completed_task;
use chrono::{TimeDelta, Utc};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::EntityTrait;

use crate::fixture::TestDb;

/// A history row; every field has a plain default (`Default`), and the
/// test sets what it looks at.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub name: String,
    pub params: String,
    /// Default: derived from the name and params (not a real SHA-1).
    pub hash: Option<String>,
    pub queue: Option<String>,
    /// `Some`: failed with this error; `None`: succeeded.
    pub error: Option<String>,
    /// How long ago it finished.
    pub age: TimeDelta,
    pub repeat: i64,
    /// Default 1.
    pub attempts: Option<i32>,
    /// `(content type id, object id)`.
    pub creator: Option<(i32, u32)>,
}

impl History {
    /// A row of task `name` with params `[[], {}]`.
    pub fn of(name: &str) -> Self {
        Self {
            name: name.into(),
            params: "[[], {}]".into(),
            ..Default::default()
        }
    }

    /// Inserts it and returns its id.
    pub async fn insert(self, t: &TestDb) -> i32 {
        let at = Utc::now() - self.age;
        let hash = self.hash.unwrap_or_else(|| {
            format!("{}-{}", self.name, self.params)
                .chars()
                .take(40)
                .collect()
        });
        completed_task::Entity::insert(completed_task::ActiveModel {
            id: NotSet,
            task_name: Set(self.name),
            task_params: Set(self.params),
            task_hash: Set(hash),
            verbose_name: Set(None),
            priority: Set(0),
            run_at: Set(at),
            repeat: Set(self.repeat),
            repeat_until: Set(None),
            queue: Set(self.queue),
            attempts: Set(self.attempts.unwrap_or(1)),
            failed_at: Set(self.error.as_ref().map(|_| at)),
            last_error: Set(self.error.unwrap_or_default()),
            locked_by: Set(Some("host:1:00000000".into())),
            locked_at: Set(Some(at)),
            creator_content_type_id: Set(self.creator.map(|c| c.0)),
            creator_object_id: Set(self.creator.map(|c| c.1)),
            result: Set(None),
            cancelled_at: Set(None),
            task_id: Set(None),
        })
        .exec(&t.db)
        .await
        .unwrap()
        .last_insert_id
    }
}
