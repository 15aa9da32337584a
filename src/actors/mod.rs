//! The runner's actors, wired here and nowhere else. Private: users hold a
//! [`crate::RunnerHandle`], never an actor address.
//!
//! ```text
//!   enqueue ──Wake──▶ Poller ──Execute──▶ Executor × N ──Completed──▶ Scheduler ──▶ database
//!                       ▲    claim (1 statement)   (one arbiter each)        history, retry, repeat,
//!                       └──── reply: executor free ◀──────────────────────── expired locks,
//!                                                                          cron schedules,
//!                                                                          cancel requests
//! ```

mod executor;
mod poller;
mod scheduler;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::queue::Queue;
use crate::worker;
use executor::{Executor, Outcomes};
use poller::{AbortRunning, Poller, SetPace, StopClaiming};

use crate::runner::Pace;
use scheduler::{Flush, Scheduler};

/// How long a busy runner waits to fill a batch: the Poller for more free
/// slots before it claims, the Scheduler for more outcomes before it writes.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// A batch worth its commit without lingering: half the runner's slots (so
/// a one-at-a-time runner never lingers).
fn batch_goal(queue: &Queue) -> usize {
    queue.config().concurrency().div_ceil(2)
}

/// How long a shutdown waits, after the grace period, for outcomes that
/// cannot be written (the database is away) before giving them up.
const OUTCOME_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The running actors of one runner.
pub(crate) struct Running {
    queue: Queue,
    poller: Addr<Poller>,
    scheduler: Addr<Scheduler>,
    arbiters: Vec<Arbiter>,
    abandon: Arc<AtomicBool>,
}

/// Starts a Scheduler and a Poller on the current arbiter, and the
/// Executors each on a new arbiter. Must run inside an actix `System`.
pub(crate) fn start(queue: Queue) -> Running {
    let abandon = Arc::new(AtomicBool::new(false));
    let scheduler = Scheduler::new(queue.clone(), Arc::clone(&abandon)).start();
    let count = queue.config().executors();
    let slots = queue.config().concurrency().div_ceil(count.max(1));
    let outcomes = Outcomes::new(&queue);
    let home = tokio::runtime::Handle::current();
    let mut arbiters = Vec::with_capacity(count);
    let mut executors = Vec::with_capacity(count);
    for _ in 0..count {
        let arbiter = Arbiter::new();
        let recipient = scheduler.clone().recipient();
        let queue = queue.clone();
        let outcomes = outcomes.clone();
        let home = home.clone();
        executors.push(Executor::start_in_arbiter(&arbiter.handle(), move |_| {
            Executor::new(queue, home, recipient, outcomes, slots)
        }));
        arbiters.push(arbiter);
    }
    let poller = Poller::new(queue.clone(), executors).start();
    queue.metrics().set_slots(queue.config().concurrency());
    Running {
        queue,
        poller,
        scheduler,
        arbiters,
        abandon,
    }
}

impl Running {
    /// Changes how soon the poller looks for work after a task finished.
    pub(crate) fn set_pace(&self, pace: Pace) {
        self.poller.do_send(SetPace(pace));
    }

    /// Stops claiming, lets running tasks finish for up to `grace`, then
    /// stops the rest (handing their tasks back), and stops every actor.
    pub(crate) async fn shutdown(self, grace: Duration) {
        let drained = self.poller.send(StopClaiming);
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                "tasks still running after the {} s grace period are stopped and handed back",
                grace.as_secs_f64()
            );
            self.poller.do_send(AbortRunning);
            let flushed = self.poller.send(StopClaiming);
            if tokio::time::timeout(OUTCOME_FLUSH_TIMEOUT, flushed)
                .await
                .is_err()
            {
                // Outcomes still waiting for the database: give them up
                // (logged each); their tasks run again after their lease.
                self.abandon.store(true, Ordering::SeqCst);
                self.poller.send(StopClaiming).await.ok();
            }
        }
        // Outcomes a prefetching runner computed ahead of the database.
        if tokio::time::timeout(OUTCOME_FLUSH_TIMEOUT, self.scheduler.send(Flush))
            .await
            .is_err()
        {
            self.abandon.store(true, Ordering::SeqCst);
            self.scheduler.send(Flush).await.ok();
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        stop(&self.poller);
        stop(&self.scheduler);
        self.queue.metrics().set_slots(0);
        if let Err(err) = worker::deregister(&self.queue).await {
            tracing::warn!("could not remove this runner from the registry: {err}");
        }
    }
}

/// Any actor → stop (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

fn stop<A>(addr: &Addr<A>)
where
    A: Actor<Context = Context<A>> + Handler<Stop>,
{
    addr.do_send(Stop);
}

impl Handler<Stop> for Poller {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Stop> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
