//! Lifecycle events: the seed's seven signals as callbacks.
//!
//! Subscribers are called synchronously, in subscription order, on the
//! thread that emits the event, so they must be quick (send to a channel or
//! an actor for real work). Order per task, as in django-background-tasks:
//! - success: `Created`, `Started`, `Successful`, `Finished`;
//! - retry: `Started`, `Error`, `Rescheduled`, `Finished`;
//! - permanent failure: `Started`, `Error`, `Failed`, `Finished`;
//! - snooze: `Started`, `Snoozed`, `Finished`;
//! - cancelled while running: `Started`, `Cancelled`, `Finished`.
//!
//! `Created` fires once per row inserted by an enqueue call; not for
//! repetitions, not when RESCHEDULE_EXISTING or CHECK_EXISTING inserted
//! nothing, and not for bulk enqueue. When the enqueue ran inside the
//! caller's transaction, it fires before that transaction commits (as the
//! seed's `post_save`-time signal does inside `atomic()`).

use std::sync::{Arc, PoisonError, RwLock};

use crate::entity::{completed_task, task};

/// One lifecycle event.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A task row was inserted by an enqueue call (`task_created`).
    Created {
        /// The stored row.
        task: task::Model,
    },
    /// A task body is about to run (`task_started`).
    Started {
        /// The row as claimed.
        task: task::Model,
    },
    /// A task body succeeded and its history row is written (`task_successful`).
    Successful {
        /// Id the task had.
        task_id: i32,
        /// The history row.
        completed: completed_task::Model,
    },
    /// A task body failed, before it is retried or failed (`task_error`).
    Error {
        /// The row as claimed.
        task: task::Model,
        /// The full error text.
        error: String,
    },
    /// A failed task will be retried later (`task_rescheduled`).
    Rescheduled {
        /// The row with its new run_at and attempts.
        task: task::Model,
    },
    /// A task body asked to run again later without counting an attempt
    /// ([`crate::TaskError::snooze`]); no seed counterpart.
    Snoozed {
        /// The row with its new run_at.
        task: task::Model,
    },
    /// A task failed permanently and its history row is written (`task_failed`).
    Failed {
        /// Id the task had.
        task_id: i32,
        /// The history row, with `failed_at` set.
        completed: completed_task::Model,
    },
    /// An operator cancelled a running task, and its history row, with
    /// `cancelled_at`, is written; no seed counterpart. (A waiting task
    /// cancelled by [`crate::admin::cancel`] fires nothing: it never ran.)
    Cancelled {
        /// Id the task had.
        task_id: i32,
        /// The history row, with `failed_at` and `cancelled_at` set.
        completed: completed_task::Model,
    },
    /// Every task a waiting task runs after has finished (or it runs
    /// anyway), and it is now due ([`crate::workflow`]); no seed
    /// counterpart. A task cancelled because one of them failed fires
    /// [`Event::Cancelled`].
    Released {
        /// Id of the released task.
        task_id: i32,
    },
    /// A batch's tasks have all finished and its callback is released, or
    /// (a batch whose callback runs only on success) one failed and its
    /// callback is cancelled ([`crate::Batch`]); no seed counterpart.
    BatchFinished {
        /// The batch's name.
        batch: String,
        /// Id of its callback task.
        callback_id: i32,
        /// Whether the callback runs.
        callback_runs: bool,
    },
    /// A task body finished, whatever the outcome (`task_finished`).
    Finished {
        /// Id of the task.
        task_id: i32,
    },
}

type Subscriber = Arc<dyn Fn(&Event) + Send + Sync>;

/// Subscribers of lifecycle events. Cheap to clone; clones share subscribers.
#[derive(Clone, Default)]
pub struct Events {
    subscribers: Arc<RwLock<Vec<Subscriber>>>,
}

impl Events {
    /// Calls `subscriber` for every event from now on.
    pub fn subscribe(&self, subscriber: impl Fn(&Event) + Send + Sync + 'static) {
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(subscriber));
    }

    pub(crate) fn emit(&self, event: Event) {
        // Clone the list so a subscriber may subscribe without deadlocking.
        let subscribers = self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for subscriber in subscribers {
            subscriber(&event);
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.subscribers.read().map_or(0, |s| s.len());
        f.debug_struct("Events")
            .field("subscribers", &count)
            .finish()
    }
}
