//! Scheduler: applies outcomes to the database, keeps this runner's leases
//! alive, and takes back the tasks of runners that died.
//!
//! Receives [`Completed`] from the Executors. Success writes the history row,
//! the next repetition and deletes the task; failure reschedules with the
//! seed's backoff or fails permanently; a released task is unlocked.
//!
//! Outcomes are written in batches, by group commit: one write is in flight
//! at a time, and what finishes meanwhile goes into the next transaction.
//! A batch is written as soon as it holds half the runner's slots (or,
//! when no executor waits for it, [`AHEAD_BATCH_GOAL`] outcomes), else
//! after a linger of 2 ms, so a busy runner writes hundreds of outcomes per
//! commit; a one-at-a-time runner without prefetch writes each at once,
//! and with it (the default) a batch while it runs the next tasks. When the
//! database is away, the write is retried with backoff until it comes back,
//! so no outcome is dropped (the executors wait meanwhile); a shutdown
//! flushes what is pending.
//!
//! It enqueues the due occurrences of cron schedules (see [`crate::cron`]:
//! each once, whichever runner gets there first): it knows the earliest
//! next occurrence, checks its clock against it every second, and reads
//! the schedules again at each heartbeat.
//!
//! Every second it looks for cancel requests of the tasks this runner runs
//! (one indexed read by id while any runs) and signals their bodies.
//!
//! Every heartbeat (a third of the lease) it renews the locks this runner
//! holds and its registry row, unlocks tasks whose runner stopped renewing
//! (their lease ran out: it died or hung); every few beats it reports due
//! tasks whose name has no handler here (they wait for a runner that knows
//! them), and settles the steps whose dependency left the queue without
//! an outcome (deleted, or run by Django's `process_tasks`).
//!
//! With a retention setting it prunes the history: a second after start,
//! then every retention interval (60 s by default), at most
//! [`PRUNE_BATCHES_PER_ROUND`] batches of [`PRUNE_BATCH`] rows a round, so
//! a long-neglected history is worked off in short rounds (one a second
//! while more is left) between the runner's own writes instead of in one
//! long statement. A failed round is logged and tried again at the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::admin::{self, Pruned};
use crate::entity::task;
use crate::error::Result;
use crate::queue::Queue;
use crate::worker::{self, Execution};

/// How often the runner looks for cancel requests of the tasks it runs
/// (at most; more often when the heartbeat is shorter).
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the runner checks whether a cron schedule may be due (a clock
/// read; the database is read only when one is).
const CRON_TICK: Duration = Duration::from_secs(1);

/// Due tasks without a handler here are counted, and vanished dependencies
/// looked for, every this many heartbeats.
const UNHANDLED_REPORT_EVERY: u32 = 6;

/// First pause before writing an outcome again after a database error.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between two tries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Outcomes handed over ahead of their write are written once this many
/// are pending, or after [`super::BATCH_LINGER`]: a quarter of the room
/// for them ([`crate::config::MAX_UNWRITTEN_OUTCOMES`]), so the executors
/// keep going while a batch is written.
const AHEAD_BATCH_GOAL: usize = crate::config::MAX_UNWRITTEN_OUTCOMES / 4;
/// Most outcomes written in one transaction.
const MAX_BATCH: usize = 1_000;

/// Rows one pruning batch selects and deletes (two short statements).
const PRUNE_BATCH: usize = 1_000;
/// Batches one pruning round deletes at most, so a round stays short.
const PRUNE_BATCHES_PER_ROUND: usize = 10;
/// The first pruning round runs this long after start (or after the
/// retention interval, when that is shorter): after the start's own
/// writes, and soon enough that a short-lived runner prunes too.
const PRUNE_FIRST_ROUND: Duration = Duration::from_secs(1);
/// Pause before the next round while rows are left to prune.
const PRUNE_CATCH_UP: Duration = Duration::from_secs(1);

/// Executor → Scheduler: this execution ended. Resolves once the outcome is
/// written, or given up at shutdown (logged). An outcome that carries a
/// permit (a prefetching runner's, while fewer than
/// [`crate::config::MAX_UNWRITTEN_OUTCOMES`] wait for the database) was
/// sent without waiting, so the executor's slot took the next task
/// meanwhile; the permit is dropped, making room, once it is written.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Completed {
    pub task: task::Model,
    pub execution: Execution,
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Shutdown → Scheduler: resolves once every outcome received is written
/// (or given up, see [`Scheduler::abandon`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Flush;

pub(crate) struct Scheduler {
    queue: Queue,
    /// Set at shutdown when the database stays away: stop retrying writes.
    abandon: Arc<AtomicBool>,
    /// Due task names without a handler here, as last reported.
    unhandled: Vec<(String, i64)>,
    /// Heartbeats so far.
    beats: u32,
    /// Outcomes waiting for the write in flight to end.
    pending: Vec<(Completed, oneshot::Sender<()>)>,
    /// Of those, outcomes whose executor waits for the write (no permit).
    pending_waited_for: usize,
    /// A batch is being written: how many outcomes it holds (0: none).
    writing: usize,
    /// Waiting for every outcome to be written (shutdown).
    flushed: Vec<oneshot::Sender<()>>,
    /// A flush is due after [`super::BATCH_LINGER`].
    lingering: bool,
    /// A look for cancel requests is in flight.
    checking_cancels: bool,
    /// A look for due cron schedules is in flight.
    firing: bool,
    /// The earliest next occurrence of the schedules, as last read.
    cron_next: Option<chrono::DateTime<chrono::Utc>>,
    /// When to read the schedules again anyway (created or resumed by
    /// others meanwhile): every [`Scheduler::cron_refresh_interval`].
    cron_refresh: std::time::Instant,
}

impl Scheduler {
    pub(crate) fn new(queue: Queue, abandon: Arc<AtomicBool>) -> Self {
        Self {
            queue,
            abandon,
            unhandled: Vec::new(),
            beats: 0,
            pending: Vec::new(),
            pending_waited_for: 0,
            writing: 0,
            flushed: Vec::new(),
            lingering: false,
            checking_cancels: false,
            firing: false,
            cron_next: None,
            cron_refresh: std::time::Instant::now(),
        }
    }

    /// Writes what is pending now when it is a good batch
    /// ([`super::batch_goal`]), else after [`super::BATCH_LINGER`], so
    /// outcomes finishing a few milliseconds apart share a transaction
    /// instead of each paying a commit.
    fn flush_soon(&mut self, ctx: &mut Context<Self>) {
        // Outcomes nobody waits for (handed over ahead of their write)
        // gather a larger batch first: a one-at-a-time runner would
        // otherwise commit after nearly every task.
        let goal = if self.pending_waited_for > 0 {
            super::batch_goal(&self.queue)
        } else {
            super::batch_goal(&self.queue).max(AHEAD_BATCH_GOAL)
        };
        if self.pending.len() >= goal {
            self.flush(ctx);
        } else if !self.lingering {
            self.lingering = true;
            ctx.run_later(super::BATCH_LINGER, |act, ctx| {
                act.lingering = false;
                act.flush(ctx);
            });
        }
    }

    /// Writes what is pending, unless a write is in flight (its end
    /// calls this again).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.writing > 0 || self.pending.is_empty() {
            self.notify_if_flushed();
            return;
        }
        let take = self.pending.len().min(MAX_BATCH);
        self.writing = take;
        tracing::trace!(outcomes = take, "writing outcomes");
        let (batch, written): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..take)
            .map(
                |(
                    Completed {
                        task,
                        execution,
                        permit,
                    },
                    done,
                )| ((task, execution), (done, permit)),
            )
            .unzip();
        let waited_for = written
            .iter()
            .filter(|(_, permit)| permit.is_none())
            .count();
        self.pending_waited_for -= waited_for;
        let queue = self.queue.clone();
        let abandon = Arc::clone(&self.abandon);
        let write = async move {
            write_until_done(&queue, &abandon, &batch).await;
            for (done, permit) in written {
                done.send(()).ok();
                drop(permit);
            }
        };
        ctx.spawn(write.into_actor(self).map(|(), act, ctx| {
            act.writing = 0;
            act.flush_soon(ctx);
            act.notify_if_flushed();
        }));
    }

    /// Outcomes received and not yet written.
    fn unwritten(&self) -> usize {
        self.pending.len() + self.writing
    }

    fn notify_if_flushed(&mut self) {
        if self.unwritten() == 0 {
            for waiter in self.flushed.drain(..) {
                waiter.send(()).ok();
            }
        }
    }

    /// One heartbeat: renew our leases, take back expired ones, report due
    /// tasks nobody here can run (once per change, to keep the log quiet).
    fn beat(&mut self, ctx: &mut Context<Self>) {
        let queue = self.queue.clone();
        // Counting due tasks per name reads every due row, and looking for
        // vanished dependencies every pending edge: do it at start and then
        // every few beats only, so an idle runner stays cheap.
        let report = self.beats.is_multiple_of(UNHANDLED_REPORT_EVERY);
        self.beats = self.beats.wrapping_add(1);
        let sweep = async move {
            worker::heartbeat(&queue).await?;
            worker::unlock_expired(&queue).await?;
            if !report {
                return Ok(None);
            }
            worker::settle_vanished(&queue).await?;
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
                    "{}",
                    crate::store::failure("Heartbeat failed; trying again at the next one", &err)
                );
            }
        }));
    }

    /// Signals the bodies of running tasks an operator cancelled (one look
    /// at a time; nothing to do while nothing runs).
    fn check_cancels(&mut self, ctx: &mut Context<Self>) {
        if self.checking_cancels {
            return;
        }
        self.checking_cancels = true;
        let queue = self.queue.clone();
        let check = async move { worker::check_cancelled(&queue).await };
        ctx.spawn(check.into_actor(self).map(|checked, act, _| {
            act.checking_cancels = false;
            if let Err(err) = checked {
                tracing::warn!("could not look for cancelled tasks; trying again: {err}");
            }
        }));
    }

    /// How often the schedules are read again in case others created or
    /// resumed one: every heartbeat, and at most half of
    /// [`crate::cron::LATE_AFTER`] apart, so that a runner sees a new
    /// schedule while its first occurrences are late but not yet missed
    /// (whatever the lease).
    fn cron_refresh_interval(&self) -> Duration {
        self.queue
            .config()
            .heartbeat_interval()
            .min(crate::cron::LATE_AFTER / 2)
    }

    /// Enqueues the due occurrences of cron schedules (one look at a time).
    fn fire_schedules(&mut self, ctx: &mut Context<Self>) {
        let now = self.queue.config().clock().now();
        let due = self.cron_next.is_some_and(|next| next <= now)
            || std::time::Instant::now() >= self.cron_refresh;
        if self.firing || !due {
            return;
        }
        self.firing = true;
        let queue = self.queue.clone();
        let fire = async move {
            // One cheap read when nothing is due (the usual case).
            let next = crate::cron::next_due(queue.db()).await?;
            if next.is_none_or(|next| next > now) {
                return Ok(next);
            }
            let fired = crate::cron::enqueue_due(queue.db(), now).await?;
            if !fired.enqueued.is_empty() {
                queue.wake_handle().notify_one();
            }
            for task in fired.enqueued {
                queue.metrics().cron_fired(&task.task_name);
                queue.events().emit(crate::Event::Created { task });
            }
            crate::cron::next_due(queue.db()).await
        };
        ctx.spawn(fire.into_actor(self).map(|next: Result<_>, act, _| {
            act.firing = false;
            if let Err(err) = &next {
                act.queue.metrics().database_error("cron", err);
            }
            match next {
                Ok(next) => {
                    act.cron_next = next;
                    act.cron_refresh = std::time::Instant::now() + act.cron_refresh_interval();
                }
                Err(err) => {
                    tracing::warn!(
                        "could not fire the cron schedules; trying again in a second: {err}"
                    );
                }
            }
        }));
    }

    /// One pruning round, then the next one scheduled: at the retention
    /// interval, or soon when rows were left. Rounds never overlap.
    fn prune(&mut self, ctx: &mut Context<Self>) {
        let queue = self.queue.clone();
        let round = async move { prune_round(&queue).await };
        ctx.spawn(round.into_actor(self).map(|pruned, act, ctx| {
            let interval = act.queue.config().retention_interval();
            let next = match pruned {
                Ok(pruned) if pruned.more => PRUNE_CATCH_UP.min(interval),
                Ok(_) => interval,
                Err(err) => {
                    tracing::warn!(
                        "could not prune the history; trying again in {} s: {err}",
                        interval.as_secs_f64()
                    );
                    interval
                }
            };
            ctx.run_later(next, Self::prune);
        }));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.beat(ctx);
        self.fire_schedules(ctx);
        ctx.run_interval(self.queue.config().heartbeat_interval(), Self::beat);
        let config = self.queue.config();
        ctx.run_interval(
            CANCEL_CHECK_INTERVAL.min(config.heartbeat_interval()),
            Self::check_cancels,
        );
        ctx.run_interval(CRON_TICK, Self::fire_schedules);
        if config.retention().is_some() {
            ctx.run_later(
                PRUNE_FIRST_ROUND.min(config.retention_interval()),
                Self::prune,
            );
        }
    }
}

impl Handler<Completed> for Scheduler {
    // Resolves when the outcome is written: the executor's slot stays
    // taken until then.
    type Result = ResponseFuture<()>;

    fn handle(&mut self, completed: Completed, ctx: &mut Context<Self>) -> Self::Result {
        let (done, written) = oneshot::channel();
        if completed.permit.is_none() {
            self.pending_waited_for += 1;
        }
        self.pending.push((completed, done));
        self.flush_soon(ctx);
        Box::pin(async move {
            written.await.ok();
        })
    }
}

impl Handler<Flush> for Scheduler {
    // Waits for writes driven by other messages: a plain future on a
    // oneshot completed when nothing is left to write.
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (done, flushed) = oneshot::channel();
        self.flushed.push(done);
        self.flush(ctx);
        Box::pin(async move {
            flushed.await.ok();
        })
    }
}

/// Deletes history rows by the queue's retention setting, at most
/// [`PRUNE_BATCHES_PER_ROUND`] batches, and logs what went.
async fn prune_round(queue: &Queue) -> Result<Pruned> {
    let Some(retention) = queue.config().retention() else {
        return Ok(Pruned::default());
    };
    let now = queue.config().clock().now();
    let pruned = admin::prune_some(
        queue.db(),
        retention,
        now,
        PRUNE_BATCH,
        PRUNE_BATCHES_PER_ROUND,
    )
    .await?;
    if pruned.total() > 0 {
        tracing::info!(
            succeeded = pruned.completed,
            failed = pruned.failed,
            beyond_keep_last = pruned.beyond_keep_last,
            more = pruned.more,
            "pruned {} history rows by the retention setting",
            pruned.total()
        );
    }
    Ok(pruned)
}

/// An outcome write the database refuses for its values (a constraint or
/// a value it cannot store, a row it cannot decode), which no retry fixes.
fn refused(err: &crate::Error) -> bool {
    use crate::store::DbErrorKind;
    matches!(
        crate::store::classify(err),
        DbErrorKind::Constraint | DbErrorKind::Decode
    )
}

/// Sets aside `task`, whose outcome the database refused: failed in place
/// with the refusal as its last error, so it is neither lost nor run again
/// and again. If even that write fails, the task is handed back to run
/// again after its lease.
async fn set_aside(queue: &Queue, task: &task::Model, err: &crate::Error) {
    let reason = format!(
        "Set aside by the runner: the database refused to record this task's outcome: {err}. \
         Correct what it refuses, then run the task again."
    );
    let now = queue.config().clock().now();
    match crate::store::claim::set_aside_refused(
        queue.db(),
        queue.runner_id(),
        task.id,
        &reason,
        now,
    )
    .await
    {
        Ok(_) => tracing::error!(task.id, "task {task} set aside: {reason}"),
        Err(again) => tracing::error!(
            task.id,
            "the database refused the outcome of {task} ({err}) and setting it aside failed \
             ({again}); the task runs again once its lease expires"
        ),
    }
    worker::abandon(queue, task.id);
}

/// Writes one batch of outcomes, retrying with backoff while the database
/// is away, until it is written or the shutdown gives up on it. Outcomes
/// the database refuses for their values are set aside one by one.
async fn write_until_done(queue: &Queue, abandon: &AtomicBool, batch: &[(task::Model, Execution)]) {
    let mut pause = RETRY_FIRST;
    let mut tries = 0u32;
    loop {
        match worker::apply_batch(queue, batch).await {
            Ok(()) => {
                if tries > 0 {
                    tracing::info!(
                        outcomes = batch.len(),
                        tries,
                        "outcomes recorded after the database came back"
                    );
                }
                return;
            }
            Err(err) if abandon.load(Ordering::SeqCst) => {
                for (task, _) in batch {
                    worker::abandon(queue, task.id);
                    tracing::error!(
                        task.id,
                        "shutting down with the database still unreachable: the outcome of {task} \
                         is not recorded; the task runs again once its lease expires: {err}"
                    );
                }
                return;
            }
            Err(err) if refused(&err) => {
                // The database refuses a value of this batch: no retry can
                // write it. Each outcome alone, so the others are written,
                // and the one refused is set aside.
                if let [(task, _)] = batch {
                    set_aside(queue, task, &err).await;
                } else {
                    for one in batch {
                        Box::pin(write_until_done(queue, abandon, std::slice::from_ref(one))).await;
                    }
                }
                return;
            }
            Err(err) => {
                if tries == 0 {
                    tracing::warn!(
                        outcomes = batch.len(),
                        "{}; retrying until it is back",
                        crate::store::failure(
                            "Could not record the outcomes of finished tasks",
                            &err
                        )
                    );
                }
                tries += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}
