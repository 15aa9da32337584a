//! Scheduler: applies outcomes to the database, keeps this runner's leases
//! alive, and takes back the tasks of runners that died.
//!
//! Receives [`Completed`] from the Executors. Success writes the history row,
//! the next repetition and deletes the task; failure reschedules with the
//! seed's backoff or fails permanently; a released task is unlocked. When
//! the database is away, the write is retried with backoff until it comes
//! back, so no outcome is dropped (the executor waits meanwhile).
//!
//! Every heartbeat (a third of the lease) it renews the locks this runner
//! holds and its registry row, unlocks tasks whose runner stopped renewing
//! (their lease ran out: it died or hung); every few beats it reports due
//! tasks whose name has no handler here (they wait for a runner that knows
//! them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::admin;
use crate::entity::task;
use crate::queue::Queue;
use crate::worker::{self, Execution};

/// Due tasks without a handler here are counted every this many heartbeats.
const UNHANDLED_REPORT_EVERY: u32 = 6;

/// First pause before writing an outcome again after a database error.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between two tries.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Executor → Scheduler: this execution ended. Resolves once the outcome is
/// written, or given up at shutdown (logged).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Completed {
    pub task: task::Model,
    pub execution: Execution,
}

pub(crate) struct Scheduler {
    queue: Queue,
    /// Set at shutdown when the database stays away: stop retrying writes.
    abandon: Arc<AtomicBool>,
    /// Due task names without a handler here, as last reported.
    unhandled: Vec<(String, i64)>,
    /// Heartbeats so far.
    beats: u32,
}

impl Scheduler {
    pub(crate) fn new(queue: Queue, abandon: Arc<AtomicBool>) -> Self {
        Self {
            queue,
            abandon,
            unhandled: Vec::new(),
            beats: 0,
        }
    }

    /// One heartbeat: renew our leases, take back expired ones, report due
    /// tasks nobody here can run (once per change, to keep the log quiet).
    fn beat(&mut self, ctx: &mut Context<Self>) {
        let queue = self.queue.clone();
        // Counting due tasks per name reads every due row: do it at start
        // and then every few beats only, so an idle runner stays cheap.
        let report = self.beats.is_multiple_of(UNHANDLED_REPORT_EVERY);
        self.beats = self.beats.wrapping_add(1);
        let sweep = async move {
            worker::heartbeat(&queue).await?;
            worker::unlock_expired(&queue).await?;
            if !report {
                return Ok(None);
            }
            let now = queue.config().clock().now();
            admin::unhandled_due(queue.db(), queue.registry(), now)
                .await
                .map(Some)
        };
        ctx.spawn(sweep.into_actor(self).map(|swept, act, _| match swept {
            Ok(Some(unhandled)) if unhandled != act.unhandled => {
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
                tracing::warn!(
                    "heartbeat failed; retrying at the next one. Database unreachable: {err}"
                );
            }
        }));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.beat(ctx);
        ctx.run_interval(self.queue.config().heartbeat_interval(), Self::beat);
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
        let abandon = Arc::clone(&self.abandon);
        Box::pin(async move {
            let id = task.id;
            let mut pause = RETRY_FIRST;
            let mut tries = 0u32;
            loop {
                match worker::apply(&queue, task.clone(), execution.clone()).await {
                    Ok(()) => {
                        if tries > 0 {
                            tracing::info!(
                                task.id = id,
                                tries,
                                "outcome recorded after the database came back"
                            );
                        }
                        return;
                    }
                    Err(err) if abandon.load(Ordering::SeqCst) => {
                        worker::abandon(&queue, id);
                        tracing::error!(
                            task.id = id,
                            "shutting down with the database still unreachable: the outcome of {task} \
                             is not recorded; the task runs again once its lease expires: {err}"
                        );
                        return;
                    }
                    Err(err) => {
                        if tries == 0 {
                            tracing::warn!(
                                task.id = id,
                                "could not record the outcome of {task}; retrying until the database \
                                 is back. Database unreachable: {err}"
                            );
                        }
                        tries += 1;
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
            }
        })
    }
}
