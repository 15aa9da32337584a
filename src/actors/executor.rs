//! Executor: runs the task bodies the Poller hands it, up to its slots
//! (`tasks_per_thread`) at once, on its own thread.
//!
//! Receives [`Execute`] from the Poller, and [`StopStarting`] and
//! [`Abort`] from the shutdown path; sends [`Completed`] to the Scheduler.
//! Each executor lives on its own arbiter (thread), so CPU-heavy bodies run
//! in parallel and a body that blocks its thread stalls only its own
//! executor. The body runs as a spawned task, so a panic becomes a failed
//! attempt instead of a dead executor, and `MAX_RUN_TIME` can stop it.
//!
//! A task handed over while every slot is taken waits here, in order, and
//! starts the moment a slot frees, without a message to the Poller and
//! back: a one-at-a-time runner goes from one fast task to the next on its
//! own thread. The Poller sends such tasks only to a runner's only
//! executor (so no task waits behind a slow one while another executor is
//! free), and only tasks it claimed ahead anyway (see the prefetch).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::AbortHandle;

use super::scheduler::Completed;
use crate::entity::task;
use crate::queue::Queue;
use crate::worker;

/// Poller → Executor: run this claimed task (at once, or when a slot
/// frees). Resolves once its slot is free again: its outcome is written,
/// or handed to the Scheduler ahead of the write (see [`Outcomes`]).
#[derive(Message)]
#[rtype(result = "Ran")]
pub(crate) struct Execute(pub task::Model);

/// How an [`Execute`] ended.
pub(crate) enum Ran {
    /// The body ran (or the task ended without it); how long from its start
    /// until its slot was free.
    Done(Duration),
    /// The runner is stopping and the task never started: the Poller hands
    /// it back.
    NotStarted(Box<task::Model>),
}

/// Shutdown → Executor: start nothing more; tasks waiting for a slot are
/// answered [`Ran::NotStarted`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopStarting;

/// Shutdown → Executor: stop the running bodies now; their tasks are handed
/// back unfinished.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abort;

/// Room for outcomes that wait for the database while their slots go on
/// to the next tasks (a prefetching runner's, up to
/// [`crate::config::MAX_UNWRITTEN_OUTCOMES`]): an executor that takes a
/// permit hands its outcome over without waiting for the Scheduler's
/// answer; the Scheduler drops the permit once the outcome is written.
/// Without a permit (no prefetch, or the room is full) the executor waits
/// for the write.
#[derive(Clone)]
pub(crate) struct Outcomes(Option<Arc<Semaphore>>);

impl Outcomes {
    pub(crate) fn new(queue: &Queue) -> Self {
        let config = queue.config();
        if config.prefetch() == 0 {
            return Self(None);
        }
        let room = crate::config::MAX_UNWRITTEN_OUTCOMES.max(config.concurrency());
        Self(Some(Arc::new(Semaphore::new(room))))
    }
}

pub(crate) struct Executor {
    queue: Queue,
    /// The runtime the runner was started on, where the database is read
    /// (see [`worker::spawn_execution`]).
    home: tokio::runtime::Handle,
    scheduler: Recipient<Completed>,
    outcomes: Outcomes,
    slots: usize,
    running: HashMap<i32, AbortHandle>,
    /// Tasks handed over while every slot was taken, in order.
    waiting: VecDeque<(task::Model, oneshot::Sender<Ran>)>,
    stopping: bool,
}

impl Executor {
    pub(crate) fn new(
        queue: Queue,
        home: tokio::runtime::Handle,
        scheduler: Recipient<Completed>,
        outcomes: Outcomes,
        slots: usize,
    ) -> Self {
        Self {
            queue,
            home,
            scheduler,
            outcomes,
            slots: slots.max(1),
            running: HashMap::new(),
            waiting: VecDeque::new(),
            stopping: false,
        }
    }

    /// Starts `task`'s body; `done` is answered when its slot is free.
    fn start(&mut self, task: task::Model, done: oneshot::Sender<Ran>, ctx: &mut Context<Self>) {
        let began = Instant::now();
        worker::started(&self.queue, &task);
        let id = task.id;
        let spawned = worker::spawn_execution(&self.queue, &task, &self.home);
        if let worker::Spawned::Running(handle) = &spawned {
            self.running.insert(id, handle.abort_handle());
        }
        let limit = worker::run_time_limit(&self.queue, &task);
        let scheduler = self.scheduler.clone();
        let outcomes = self.outcomes.clone();
        let queue = self.queue.clone();
        let work = async move {
            let execution = match spawned {
                worker::Spawned::Running(handle) => {
                    worker::finish_execution(&queue, &task, handle, limit).await
                }
                worker::Spawned::Ended(execution) => execution,
            };
            let permit = outcomes
                .0
                .and_then(|room| Arc::clone(&room).try_acquire_owned().ok());
            let ahead = permit.is_some();
            let completed = Completed {
                task,
                execution,
                permit,
            };
            // Ahead of the write: hand it over and go on. Else wait for it.
            let handed = if !scheduler.connected() {
                Err("it stopped".to_owned())
            } else if ahead {
                scheduler.do_send(completed);
                Ok(())
            } else {
                scheduler
                    .send(completed)
                    .await
                    .map_err(|err| err.to_string())
            };
            if let Err(err) = handed {
                tracing::error!("the scheduler is gone; an outcome was not recorded: {err}");
            }
        };
        ctx.spawn(work.into_actor(self).map(move |(), act, ctx| {
            act.running.remove(&id);
            done.send(Ran::Done(began.elapsed())).ok();
            act.start_waiting(ctx);
        }));
    }

    /// Starts waiting tasks on free slots, in order.
    fn start_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < self.slots && !self.stopping {
            let Some((task, done)) = self.waiting.pop_front() else {
                break;
            };
            self.start(task, done, ctx);
        }
    }
}

impl Actor for Executor {
    type Context = Context<Self>;
}

impl Handler<Execute> for Executor {
    // A plain future on a oneshot: the mailbox stays open for more tasks
    // and for `Abort` while bodies run; each answers when its slot frees.
    type Result = ResponseFuture<Ran>;

    fn handle(&mut self, Execute(task): Execute, ctx: &mut Context<Self>) -> Self::Result {
        let (done, ran) = oneshot::channel();
        if self.stopping {
            done.send(Ran::NotStarted(Box::new(task))).ok();
        } else {
            self.waiting.push_back((task, done));
            self.start_waiting(ctx);
        }
        Box::pin(async move {
            // The sender is dropped only when the actor stops (the runner's
            // shutdown): nothing is left to report then.
            ran.await.unwrap_or(Ran::Done(Duration::ZERO))
        })
    }
}

impl Handler<StopStarting> for Executor {
    type Result = ();

    fn handle(&mut self, _: StopStarting, _ctx: &mut Context<Self>) {
        self.stopping = true;
        for (task, done) in self.waiting.drain(..) {
            done.send(Ran::NotStarted(Box::new(task))).ok();
        }
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
