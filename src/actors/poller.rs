//! Poller: claims due tasks and hands them to idle Executors.
//!
//! Wakes every `sleep` seconds, at once when a slot becomes free, and when
//! new work may be there ([`Wake`]: an enqueue in this process, or the
//! backend's watcher). Each executor has `tasks_per_thread` slots; the
//! Poller claims as many tasks as there are free slots, in one statement,
//! plus a few ahead of them (the prefetch): claimed tasks wait in its
//! ready queue, in claim order, and start the moment a slot frees, so a
//! runner running one task at a time never waits for a database round trip
//! between two tasks. It claims ahead only the work it expects to start
//! within [`PREFETCH_HORIZON`] at the pace tasks have run so far (none
//! while tasks are slow, so they stay free for other runners), up to the
//! configured prefetch; with a prefetch of 0 it claims one task per free
//! slot, the seed's rhythm. A runner with a single executor (the default
//! one-at-a-time runner) hands it up to [`AHEAD_OF_SLOTS`] of those ready
//! tasks beyond its slots, so it goes from one task to the next on its own
//! thread, without waiting for a message to the Poller and back. Receives
//! [`Wake`], [`StopClaiming`] and [`AbortRunning`]; sends `Execute`,
//! `StopStarting` and `Abort` to executors.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::executor::{Abort, Execute, Executor, Ran, StopStarting};
use crate::entity::task;
use crate::queue::Queue;
use crate::runner::Pace;
use crate::store::claim;
use crate::worker;

/// First pause before claiming again after a database error.
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between claims while the database is away.
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(5);
/// How much work (at the measured pace) the Poller keeps claimed ahead of
/// its free slots.
pub(crate) const PREFETCH_HORIZON: Duration = Duration::from_millis(50);
/// Most ready tasks handed to a runner's only executor beyond its free
/// slots: they wait there, in order, and start as soon as a slot frees.
pub(crate) const AHEAD_OF_SLOTS: usize = 16;
/// Weight of the newest execution in the running average of execution
/// times that sizes the prefetch.
const PACE_WEIGHT: f64 = 0.2;

/// Anyone → Poller: look for due tasks now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;

/// Shutdown → Poller: claim nothing more. Resolves when every running task
/// has ended and its outcome is written.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopClaiming;

/// Handle → Poller: how soon to look for work after a task finished (the
/// seed's fast and slow modes, SIGUSR1 / SIGUSR2).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetPace(pub Pace);

/// Shutdown → Poller: the grace period is over; stop every running body.
/// Their tasks are handed back unfinished.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AbortRunning;

pub(crate) struct Poller {
    queue: Queue,
    /// Free slots: each executor appears once per task it can still take.
    idle: Vec<Addr<Executor>>,
    busy: HashMap<i32, Addr<Executor>>,
    /// Every executor (to stop them starting tasks at shutdown).
    executors: Vec<Addr<Executor>>,
    /// The runner's only executor, when it has one and claims ahead: ready
    /// tasks may wait there instead of here ([`AHEAD_OF_SLOTS`]).
    only: Option<Addr<Executor>>,
    /// Tasks handed to `only` beyond its slots, not yet answered.
    ahead: usize,
    /// Claimed tasks waiting for a free slot, in claim order (locked by
    /// this runner and tracked as running, so their leases are renewed).
    ready: VecDeque<task::Model>,
    /// Running average of execution times (start to free slot, as the
    /// executor measures them), in seconds; `None` before the first one.
    pace_of_work: Option<f64>,
    claiming: bool,
    /// A poll was asked for while a claim was running: claim again after it,
    /// so a wake-up that raced with a claim is not lost.
    poll_again: bool,
    stopping: bool,
    pace: Pace,
    /// Claims that failed in a row (database away): sets the backoff.
    failures: u32,
    /// A claim is due after [`super::BATCH_LINGER`].
    lingering: bool,
    /// Hand-backs of claimed tasks in flight.
    releasing: usize,
    drained: Vec<oneshot::Sender<()>>,
}

impl Poller {
    pub(crate) fn new(queue: Queue, executors: Vec<Addr<Executor>>) -> Self {
        // Interleaved, so consecutive tasks go to different threads.
        let slots = queue
            .config()
            .concurrency()
            .div_ceil(executors.len().max(1));
        let idle = (0..slots)
            .flat_map(|_| executors.iter().cloned())
            .take(queue.config().concurrency())
            .collect();
        let only = match executors.as_slice() {
            [only] if queue.config().prefetch() > 0 => Some(only.clone()),
            _ => None,
        };
        Self {
            queue,
            idle,
            busy: HashMap::new(),
            executors,
            only,
            ahead: 0,
            ready: VecDeque::new(),
            pace_of_work: None,
            claiming: false,
            poll_again: false,
            stopping: false,
            pace: Pace::Fast,
            failures: 0,
            lingering: false,
            releasing: 0,
            drained: Vec::new(),
        }
    }

    /// How many tasks to keep claimed ahead of the free slots now: the work
    /// expected to start within [`PREFETCH_HORIZON`] at the measured pace,
    /// up to the configured prefetch (none before a first task has run).
    fn prefetch_target(&self) -> usize {
        let cap = self.queue.config().prefetch();
        let Some(seconds) = self.pace_of_work else {
            return 0;
        };
        let slots = self.queue.config().concurrency() as f64;
        let ahead = PREFETCH_HORIZON.as_secs_f64() * slots / seconds.max(1e-6);
        (ahead.floor() as usize).min(cap)
    }

    /// How many tasks a claim now should take: the free slots not covered
    /// by ready tasks, and the prefetch room. The tasks kept ahead are
    /// topped up once half of them have started (or a free slot finds
    /// none), so a busy runner claims in batches, not a task or two after
    /// each one that ends.
    fn wanted(&self) -> usize {
        // Tasks waiting at the executor count as ready.
        let ready = self.ready.len() + self.ahead;
        let unserved = self.idle.len().saturating_sub(ready);
        let spare = ready.saturating_sub(self.idle.len());
        let target = self.prefetch_target();
        let ahead = if unserved == 0 && spare * 2 > target {
            0
        } else {
            target.saturating_sub(spare)
        };
        unserved + ahead
    }

    /// Claims as many due tasks as there are free slots (and prefetch room).
    fn poll(&mut self, ctx: &mut Context<Self>) {
        self.start_ready(ctx);
        // A busy runner with only a few free slots waits a moment for more,
        // so it claims in batches instead of one task per commit. An idle
        // runner claims at once, and so does one that keeps tasks ahead
        // (its claims are batches already).
        let few = !self.idle.is_empty() && self.idle.len() < super::batch_goal(&self.queue);
        let prefetching = self.prefetch_target() > 0;
        if few && !prefetching && !self.busy.is_empty() && !self.stopping {
            if !self.lingering {
                self.lingering = true;
                ctx.run_later(super::BATCH_LINGER, |act, ctx| {
                    act.lingering = false;
                    act.claim(ctx);
                });
            }
            return;
        }
        self.claim(ctx);
    }

    /// Starts ready tasks on free slots, in claim order, then hands the
    /// only executor what may wait there.
    fn start_ready(&mut self, ctx: &mut Context<Self>) {
        while !self.stopping {
            let executor = match self.idle.pop() {
                Some(executor) => executor,
                None => match &self.only {
                    Some(only) if self.ahead < AHEAD_OF_SLOTS && !self.ready.is_empty() => {
                        self.ahead += 1;
                        only.clone()
                    }
                    _ => break,
                },
            };
            let Some(task) = self.ready.pop_front() else {
                self.free(executor);
                break;
            };
            self.dispatch(task, executor, ctx);
        }
    }

    /// One task handed to `executor` has ended: its place is free (a wait
    /// beyond the slots first, then a slot).
    fn free(&mut self, executor: Addr<Executor>) {
        if self.ahead > 0 {
            self.ahead -= 1;
        } else {
            self.idle.push(executor);
        }
    }

    /// Claims as many due tasks as are wanted ([`Poller::wanted`]), now.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.claiming {
            self.poll_again = true;
            return;
        }
        let limit = self.wanted();
        // A draining runner claims nothing more; what it holds runs on.
        if self.stopping || limit == 0 || self.queue.controls().draining() {
            return;
        }
        self.claiming = true;
        self.poll_again = false;
        let queue = self.queue.clone();
        let claim = async move { worker::claim(&queue, limit).await };
        ctx.spawn(claim.into_actor(self).map(move |claimed, act, ctx| {
            act.claiming = false;
            match claimed {
                Ok(tasks) if act.stopping => {
                    let mut back: Vec<task::Model> = act.ready.drain(..).collect();
                    back.extend(tasks);
                    act.hand_back(back, ctx);
                }
                Ok(tasks) => {
                    tracing::trace!(claimed = tasks.len(), limit, "claimed");
                    if act.failures > 0 {
                        tracing::info!(
                            failures = act.failures,
                            "the database is back; claiming again"
                        );
                        act.failures = 0;
                    }
                    // Each dispatch polls again when its executor is free, so
                    // a backlog drains without waiting for the interval.
                    // What does not fit a free slot waits ready, in order.
                    act.ready.extend(tasks);
                    act.start_ready(ctx);
                }
                Err(err) => {
                    // Retry soon, then less and less often, up to every 5 s,
                    // so the runner resumes within seconds of the database
                    // coming back without hammering it while it is away.
                    let backoff = CLAIM_RETRY_FIRST
                        .saturating_mul(1 << act.failures.min(6))
                        .min(CLAIM_RETRY_MAX);
                    act.failures = act.failures.saturating_add(1);
                    tracing::warn!(
                        retry_in_ms = backoff.as_millis() as u64,
                        error.kind = crate::store::classify(&err).as_str(),
                        "{}",
                        crate::store::failure("Failed to retrieve tasks", &err)
                    );
                    ctx.run_later(backoff, Self::poll);
                }
            }
            if act.stopping && !act.claiming && !act.ready.is_empty() {
                let back: Vec<task::Model> = act.ready.drain(..).collect();
                act.hand_back(back, ctx);
            }
            if act.poll_again {
                act.poll(ctx);
            }
            act.notify_if_drained();
        }));
    }

    fn dispatch(&mut self, task: task::Model, executor: Addr<Executor>, ctx: &mut Context<Self>) {
        let id = task.id;
        self.busy.insert(id, executor.clone());
        ctx.spawn(
            executor
                .send(Execute(task))
                .into_actor(self)
                .map(move |sent, act, ctx| {
                    match sent {
                        Ok(Ran::Done(took)) => {
                            let took = took.as_secs_f64();
                            act.pace_of_work = Some(match act.pace_of_work {
                                None => took,
                                Some(pace) => pace + PACE_WEIGHT * (took - pace),
                            });
                        }
                        Ok(Ran::NotStarted(task)) => act.hand_back(vec![*task], ctx),
                        Err(err) => {
                            tracing::error!(
                                task.id = id,
                                "an executor stopped while running a task: {err}"
                            );
                        }
                    }
                    if let Some(executor) = act.busy.remove(&id) {
                        act.free(executor);
                    }
                    match act.pace.pause() {
                        None => act.poll(ctx),
                        Some(pause) => {
                            ctx.run_later(pause, Self::poll);
                        }
                    }
                    act.notify_if_drained();
                }),
        );
    }

    /// Unlocks tasks claimed while stopping.
    fn hand_back(&mut self, tasks: Vec<task::Model>, ctx: &mut Context<Self>) {
        if tasks.is_empty() {
            return;
        }
        let ids: Vec<i32> = tasks.iter().map(|t| t.id).collect();
        let queue = self.queue.clone();
        self.releasing += 1;
        let release = async move {
            let released = crate::store::retry_conflicts("release", || {
                claim::release(queue.db(), queue.runner_id(), &ids)
            })
            .await;
            for id in ids {
                worker::abandon(&queue, id);
            }
            released
        };
        ctx.spawn(release.into_actor(self).map(|released, act, _| {
            if let Err(err) = released {
                tracing::warn!(
                    "could not hand back claimed tasks; they unlock when their lock expires: {err}"
                );
            }
            act.releasing -= 1;
            act.notify_if_drained();
        }));
    }

    fn notify_if_drained(&mut self) {
        if self.stopping
            && !self.claiming
            && self.releasing == 0
            && self.busy.is_empty()
            && self.ready.is_empty()
        {
            for waiter in self.drained.drain(..) {
                waiter.send(()).ok();
            }
        }
    }
}

impl Actor for Poller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.queue.config().sleep(), Self::poll);
        // Enqueues in this process wake the poller through the queue.
        let wake = self.queue.wake_handle();
        let me = ctx.address();
        ctx.spawn(
            async move {
                loop {
                    wake.notified().await;
                    me.do_send(Wake);
                }
            }
            .into_actor(self),
        );
        // Enqueues in other processes: the backend's watch.
        ctx.spawn(super::watch::watch(self.queue.clone(), ctx.address()).into_actor(self));
        // The first claim knows which queues have a global limit.
        let queue = self.queue.clone();
        let limits = async move {
            if let Err(err) = worker::read_controls(&queue).await {
                tracing::warn!(
                    "could not read the queues' global limits; retrying at the next heartbeat: {err}"
                );
            }
        };
        ctx.wait(limits.into_actor(self).map(|(), act, ctx| act.poll(ctx)));
    }
}

impl Handler<Wake> for Poller {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}

impl Handler<StopClaiming> for Poller {
    // Waits for a state change driven by other messages, so the reply is a
    // plain future on a oneshot the poller completes when drained.
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopClaiming, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        // Tasks claimed ahead and not started go back at once (those
        // waiting at an executor through its answer).
        for executor in &self.executors {
            executor.do_send(StopStarting);
        }
        if !self.claiming {
            let ready: Vec<task::Model> = self.ready.drain(..).collect();
            self.hand_back(ready, ctx);
        }
        let (done, drained) = oneshot::channel();
        self.drained.push(done);
        self.notify_if_drained();
        Box::pin(async move {
            drained.await.ok();
        })
    }
}

impl Handler<SetPace> for Poller {
    type Result = ();

    fn handle(&mut self, SetPace(pace): SetPace, _ctx: &mut Context<Self>) {
        tracing::info!(?pace, "polling pace changed");
        self.pace = pace;
    }
}

impl Handler<AbortRunning> for Poller {
    type Result = ();

    fn handle(&mut self, _: AbortRunning, _ctx: &mut Context<Self>) {
        for executor in self.busy.values() {
            executor.do_send(Abort);
        }
    }
}
