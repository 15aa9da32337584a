//! Scheduler: applies outcomes to the database and takes back expired locks.
//!
//! Receives [`Completed`] from the Executors. Success writes the history row,
//! the next repetition and deletes the task; failure reschedules with the
//! seed's backoff or fails permanently; a released task is unlocked. Every
//! `MAX_RUN_TIME` (at most every minute) it unlocks rows whose lock is older
//! than `MAX_RUN_TIME`: their runner died; and it reports due tasks whose
//! name has no handler here (they wait for a runner that knows them).

use std::time::Duration;

use actix::prelude::*;

use crate::admin;
use crate::entity::task;
use crate::queue::Queue;
use crate::worker::{self, Execution};

/// Longest pause between two sweeps for expired locks.
const MAX_RESCUE_INTERVAL: Duration = Duration::from_secs(60);

/// Executor → Scheduler: this execution ended. Resolves once the outcome is
/// written (or the write failed and was logged).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Completed {
    pub task: task::Model,
    pub execution: Execution,
}

pub(crate) struct Scheduler {
    queue: Queue,
    /// Due task names without a handler here, as last reported.
    unhandled: Vec<(String, i64)>,
}

impl Scheduler {
    pub(crate) fn new(queue: Queue) -> Self {
        Self {
            queue,
            unhandled: Vec::new(),
        }
    }

    /// One sweep: take back expired locks, and report due tasks that no
    /// handler here can run (once per change, so it does not flood the log).
    fn rescue(&mut self, ctx: &mut Context<Self>) {
        let queue = self.queue.clone();
        let sweep = async move {
            worker::unlock_expired(&queue).await?;
            let now = queue.config().clock().now();
            admin::unhandled_due(queue.db(), queue.registry(), now).await
        };
        ctx.spawn(sweep.into_actor(self).map(|swept, act, _| match swept {
            Ok(unhandled) if unhandled != act.unhandled => {
                if !unhandled.is_empty() {
                    tracing::info!(
                        ?unhandled,
                        "due tasks with no handler in this runner wait for a runner that has one"
                    );
                }
                act.unhandled = unhandled;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!("could not look for expired locks. Database unreachable: {err}");
            }
        }));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.rescue(ctx);
        let every = self.queue.config().max_run_time().min(MAX_RESCUE_INTERVAL);
        ctx.run_interval(every, Self::rescue);
    }
}

impl Handler<Completed> for Scheduler {
    // The write touches no actor state: a plain future, so outcomes from
    // several executors are written concurrently.
    type Result = ResponseFuture<()>;

    fn handle(
        &mut self,
        Completed { task, execution }: Completed,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let queue = self.queue.clone();
        Box::pin(async move {
            let id = task.id;
            if let Err(err) = worker::apply(&queue, task, execution).await {
                tracing::warn!(
                    task.id = id,
                    "could not record the outcome of a task; it stays locked until its lock \
                     expires and is then run again. Database unreachable: {err}"
                );
            }
        })
    }
}
