//! Executor: runs one task body at a time.
//!
//! Receives [`Execute`] from the Poller and [`Abort`] from the shutdown
//! path; sends [`Completed`] to the Scheduler. Each executor lives on its
//! own arbiter (thread), so CPU-heavy bodies run in parallel and a body that
//! blocks its thread stalls only its own executor. The body runs as a
//! spawned task, so a panic becomes a failed attempt instead of a dead
//! executor, and `MAX_RUN_TIME` can stop it.

use actix::prelude::*;
use tokio::task::AbortHandle;

use super::scheduler::Completed;
use crate::entity::task;
use crate::events::Event;
use crate::queue::Queue;
use crate::worker::{self, Execution};

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
    running: Option<AbortHandle>,
}

impl Executor {
    pub(crate) fn new(queue: Queue, scheduler: Recipient<Completed>) -> Self {
        Self {
            queue,
            scheduler,
            running: None,
        }
    }
}

impl Actor for Executor {
    type Context = Context<Self>;
}

impl Handler<Execute> for Executor {
    // An actor future, not `wait`: the mailbox stays open for `Abort` while
    // the body runs, and the handler clears `running` when it ends.
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Execute(task): Execute, _ctx: &mut Context<Self>) -> Self::Result {
        tracing::info!(task.id, "Running {task}");
        self.queue
            .events()
            .emit(Event::Started { task: task.clone() });
        let handle = worker::spawn_execution(&self.queue, &task);
        self.running = handle.as_ref().map(|h| h.abort_handle());
        let limit = self.queue.config().max_run_time();
        let scheduler = self.scheduler.clone();
        let work = async move {
            let execution = match handle {
                Some(handle) => worker::finish_execution(handle, limit).await,
                None => Execution::Released,
            };
            if let Err(err) = scheduler.send(Completed { task, execution }).await {
                tracing::error!("the scheduler is gone; an outcome was not recorded: {err}");
            }
        };
        Box::pin(work.into_actor(self).map(|(), act, _| act.running = None))
    }
}

impl Handler<Abort> for Executor {
    type Result = ();

    fn handle(&mut self, _: Abort, _ctx: &mut Context<Self>) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}
