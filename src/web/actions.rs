//! The dashboard's actions over a selection, shared by the HTML form and
//! the JSON API: each is one call of [`crate::admin`].

use std::str::FromStr;

use serde::Serialize;

use super::WebError;
use crate::admin;
use crate::error::{Error, Result};
use crate::queue::Queue;

/// An action of the dashboard and the JSON API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Waiting tasks become due now.
    RunNow,
    /// Waiting tasks: priority + 1 (the seed admin's action).
    PriorityUp,
    /// Waiting tasks: priority - 1.
    PriorityDown,
    /// Waiting tasks move to the history as cancelled; running ones are
    /// asked to stop.
    Cancel,
    /// Waiting tasks are deleted, without a trace. A selection holding a
    /// running task is refused (409): cancel it instead.
    Delete,
    /// Failed history rows go back in the queue.
    Retry,
    /// History rows are deleted.
    DeleteCompleted,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 7] = [
        Action::RunNow,
        Action::PriorityUp,
        Action::PriorityDown,
        Action::Cancel,
        Action::Delete,
        Action::Retry,
        Action::DeleteCompleted,
    ];

    /// Its name in forms and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::RunNow => "run_now",
            Action::PriorityUp => "priority_up",
            Action::PriorityDown => "priority_down",
            Action::Cancel => "cancel",
            Action::Delete => "delete",
            Action::Retry => "retry",
            Action::DeleteCompleted => "delete_completed",
        }
    }

    /// A button's label.
    pub fn label(self) -> &'static str {
        match self {
            Action::RunNow => "Run now",
            Action::PriorityUp => "Priority +1",
            Action::PriorityDown => "Priority −1",
            Action::Cancel => "Cancel",
            Action::Delete | Action::DeleteCompleted => "Delete",
            Action::Retry => "Retry",
        }
    }

    /// Whether it destroys something (the page asks before sending it).
    pub fn destructive(self) -> bool {
        matches!(
            self,
            Action::Cancel | Action::Delete | Action::DeleteCompleted
        )
    }

    /// Past tense, for the notice after it ran.
    pub(crate) fn done(self) -> &'static str {
        match self {
            Action::RunNow => "made due now",
            Action::PriorityUp => "raised in priority",
            Action::PriorityDown => "lowered in priority",
            Action::Cancel => "cancelled (running ones are asked to stop)",
            Action::Delete | Action::DeleteCompleted => "deleted",
            Action::Retry => "put back in the queue",
        }
    }
}

impl FromStr for Action {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                Error::invalid(
                    "action",
                    format!("{text:?} is not an action; use one of {}", known.join(", ")),
                )
            })
    }
}

/// What an action changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Outcome {
    pub(crate) action: Action,
    /// Rows changed.
    pub(crate) changed: u64,
    /// Ids of the rows the action created (retry: the new tasks; cancel:
    /// the history rows of waiting tasks, then the ids of running tasks
    /// asked to stop), else the ids it was given.
    pub(crate) ids: Vec<i32>,
}

/// Most ids one action takes.
pub(crate) const MAX_IDS: usize = 10_000;

/// Runs `action` on `ids`, then wakes a runner of this process when tasks
/// became due. A delete that selects a running task is refused with a 409
/// and deletes nothing.
pub(crate) async fn apply(queue: &Queue, action: Action, ids: &[i32]) -> Result<Outcome, WebError> {
    if ids.is_empty() {
        return Err(Error::invalid("ids", "nothing is selected: tick the tasks to act on").into());
    }
    if ids.len() > MAX_IDS {
        return Err(Error::invalid(
            "ids",
            format!(
                "{} ids at once is too many; send at most {MAX_IDS}",
                ids.len()
            ),
        )
        .into());
    }
    let db = queue.db();
    if action == Action::Delete {
        let running = admin::running_among(db, ids).await?;
        if !running.is_empty() {
            let running: Vec<String> = running.iter().map(i32::to_string).collect();
            return Err(WebError::new(
                actix_web::http::StatusCode::CONFLICT,
                format!(
                    "task(s) {} are running: deleting one would pull it from under its runner. \
                     Cancel it instead (the cancel action), or wait for it to finish; nothing \
                     was deleted",
                    running.join(", ")
                ),
            ));
        }
    }
    let now = queue.config().clock().now();
    let (changed, new_ids) = match action {
        Action::RunNow => (admin::run_now(db, ids, now).await?, ids.to_vec()),
        Action::PriorityUp => (admin::increase_priority(db, ids).await?, ids.to_vec()),
        Action::PriorityDown => (admin::decrease_priority(db, ids).await?, ids.to_vec()),
        Action::Delete => (admin::delete_tasks(db, ids).await?, ids.to_vec()),
        Action::DeleteCompleted => (admin::delete_completed(db, ids).await?, ids.to_vec()),
        Action::Cancel => {
            let done = admin::cancel(db, ids, now).await?;
            let mut touched: Vec<i32> = done.cancelled.iter().map(|row| row.id).collect();
            touched.extend(&done.stopping);
            (done.len() as u64, touched)
        }
        Action::Retry => {
            let rows = admin::retry_failed(db, ids, now).await?;
            (rows.len() as u64, rows.iter().map(|row| row.id).collect())
        }
    };
    if matches!(action, Action::RunNow | Action::Retry) && changed > 0 {
        queue.wake_handle().notify_one();
    }
    tracing::info!(
        action = action.as_str(),
        changed,
        "dashboard action on {} ids",
        ids.len()
    );
    Ok(Outcome {
        action,
        changed,
        ids: new_ids,
    })
}
