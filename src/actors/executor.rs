//! Executor: runs the task bodies the Poller hands it, up to
//! `tasks_per_thread` at once, on its own thread.
//!
//! Receives [`Execute`] from the Poller and [`Abort`] from the shutdown
//! path; sends [`Completed`] to the Scheduler. Each executor lives on its
//! own arbiter (thread), so CPU-heavy bodies run in parallel and a body that
//! blocks its thread stalls only its own executor. The body runs as a
//! spawned task, so a panic becomes a failed attempt instead of a dead
//! executor, and `MAX_RUN_TIME` can stop it.

use std::collections::HashMap;

use actix::prelude::*;
use tokio::task::AbortHandle;

use super::scheduler::Completed;
use crate::entity::task;
use crate::queue::Queue;
use crate::worker;

/// Poller → Executor: run this claimed task. Resolves once its outcome is
/// written, so the Poller knows the executor is free.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Execute(pub task::Model);

/// Shutdown → Executor: stop the running body now; the task is handed back
/// unfinished.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abort;

pub(crate) struct Executor {
    queue: Queue,
    scheduler: Recipient<Completed>,
    running: HashMap<i32, AbortHandle>,
}

impl Executor {
    pub(crate) fn new(queue: Queue, scheduler: Recipient<Completed>) -> Self {
        Self {
            queue,
            scheduler,
            running: HashMap::new(),
        }
    }
}

impl Actor for Executor {
    type Context = Context<Self>;
}

impl Handler<Execute> for Executor {
    // An actor future, not `wait`: the mailbox stays open for more tasks
    // and for `Abort` while bodies run; each clears its entry when it ends.
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Execute(task): Execute, _ctx: &mut Context<Self>) -> Self::Result {
        worker::started(&self.queue, &task);
        let id = task.id;
        let spawned = worker::spawn_execution(&self.queue, &task);
        if let worker::Spawned::Running(handle) = &spawned {
            self.running.insert(id, handle.abort_handle());
        }
        let limit = worker::run_time_limit(&self.queue, &task);
        let scheduler = self.scheduler.clone();
        let queue = self.queue.clone();
        let work = async move {
            let execution = match spawned {
                worker::Spawned::Running(handle) => {
                    worker::finish_execution(&queue, &task, handle, limit).await
                }
                worker::Spawned::Ended(execution) => execution,
            };
            if let Err(err) = scheduler.send(Completed { task, execution }).await {
                tracing::error!("the scheduler is gone; an outcome was not recorded: {err}");
            }
        };
        Box::pin(work.into_actor(self).map(move |(), act, _| {
            act.running.remove(&id);
        }))
    }
}

impl Handler<Abort> for Executor {
    type Result = ();

    fn handle(&mut self, _: Abort, _ctx: &mut Context<Self>) {
        for (_, running) in self.running.drain() {
            running.abort();
        }
    }
}
