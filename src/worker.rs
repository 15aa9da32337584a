//! What a runner does with one task, as plain async functions: the actors
//! call these, and so does [`Queue::run_next_task`], which runs one task
//! inline like the seed's `run_next_task`.
//!
//! Logging follows the seed's levels: a success logs at info only, a failed
//! execution logs an error, a database problem logs a warning and the
//! runner keeps going.

use std::any::Any;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::admin::CANCELLED_RUNNING_ERROR;
use crate::entity::task;
use crate::error::Result;
use crate::events::Event;
use crate::policy::Effective;
use crate::queue::Queue;
use crate::store::claim::{self, ClaimFilter, Queues};
use crate::store::outcome::{self, Applied, Ending};
use crate::store::runners;
use crate::task::{KeepHistory, TaskContext, TaskError};

/// How one execution of a task body ended.
#[derive(Clone, Debug)]
pub(crate) enum Execution {
    /// The body returned `Ok`, with its result as JSON (`None` for `()`).
    Succeeded { result: Option<String> },
    /// The body returned an error, panicked, or ran past `MAX_RUN_TIME`.
    Failed {
        /// Full text for `last_error`.
        error: String,
        /// An invalid-task error: no retry.
        permanent: bool,
    },
    /// The body asked to run again after `delay`, without counting an
    /// attempt ([`TaskError::snooze`]).
    Snoozed { delay: Duration },
    /// An operator cancelled the task while it ran; `error` says how the
    /// body stopped.
    Cancelled { error: String },
    /// The execution was stopped by a shutdown, or this runner has no
    /// handler for the task: hand the task back without counting an attempt.
    Released,
}

impl Execution {
    /// How the outcome is written, under the policies of this execution
    /// (the enqueue's overrides, the task's definition, else the runner's
    /// settings).
    fn ending(&self, task: &task::Model, policy: &Effective) -> Ending<'_> {
        match self {
            Execution::Succeeded { result } => Ending::Succeeded {
                result: result.as_deref(),
                keep: policy.keep_history == KeepHistory::Always,
            },
            Execution::Failed { error, permanent } => {
                let attempts = u32::try_from(task.attempts.saturating_add(1)).unwrap_or(1);
                Ending::Failed {
                    error,
                    permanent: *permanent,
                    repeat_after_failure: policy.repeat_after_failure,
                    max_attempts: policy.max_attempts,
                    retry_in: policy.backoff.as_ref().map(|backoff| {
                        TimeDelta::from_std(backoff.delay(attempts)).unwrap_or(TimeDelta::MAX)
                    }),
                    keep: policy.keep_history != KeepHistory::Never,
                }
            }
            Execution::Snoozed { delay } => Ending::Snoozed { delay: *delay },
            Execution::Cancelled { error } => Ending::Cancelled { error },
            Execution::Released => Ending::Released,
        }
    }
}

/// The policies `task` runs under: its enqueue's overrides over its
/// definition's.
pub(crate) fn policy(queue: &Queue, task: &task::Model) -> Effective {
    queue
        .registry()
        .with_defaults(&task.task_name, |defaults| {
            Effective::of(task, Some(defaults))
        })
        .unwrap_or_else(|| Effective::of(task, None))
}

/// A runner identity unique across hosts and restarts, within the 64
/// characters of `locked_by`: `host:pid:random`. (The seed stores the bare
/// PID, which two hosts can share.)
pub(crate) fn runner_identity() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host: String = host
        .chars()
        .filter(|c| !c.is_control() && *c != ':')
        .take(40)
        .collect();
    // RandomState is seeded from the OS's randomness once per process.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}:{}:{:08x}", host, std::process::id(), random as u32)
}

/// How the start of an execution went.
pub(crate) enum Spawned {
    /// The body runs; the handle catches a panic as an error and can be
    /// aborted.
    Running(JoinHandle<Result<Option<String>, TaskError>>),
    /// The execution ended before the body started: no handler here, or
    /// the task was cancelled before it started again.
    Ended(Execution),
}

/// Starts the body of `task` on the current runtime. What the body needs
/// from the database (a step's dependencies) is read on `home`, the
/// runtime the runner was started on: a pool connection opened on an
/// executor's runtime would break when that runtime ends with the runner,
/// and the pool is the application's, which lives on.
pub(crate) fn spawn_execution(
    queue: &Queue,
    task: &task::Model,
    home: &tokio::runtime::Handle,
) -> Spawned {
    if task.cancel_requested_at.is_some() {
        queue.metrics().not_run();
        // Cancelled while it ran, then handed back (its runner stopped):
        // it does not start again.
        return Spawned::Ended(Execution::Cancelled {
            error: format!(
                "{CANCELLED_RUNNING_ERROR}; its runner stopped before it ended, and it was not \
                 started again"
            ),
        });
    }
    let Some(handler) = queue.registry().handler(&task.task_name) else {
        queue.metrics().not_run();
        return Spawned::Ended(Execution::Released);
    };
    let ctx = TaskContext::for_row(
        task.id,
        task.task_name.clone(),
        task.attempts,
        Some(queue.cancel_signal(task.id)),
    );
    // One span per execution, so whatever the body logs carries the task;
    // with OpenTelemetry, linked to the trace that enqueued it.
    let span = tracing::info_span!(
        "task",
        id = task.id,
        name = %task.task_name,
        attempt = task.attempts + 1,
        queue = task.queue.as_deref().unwrap_or_default(),
        otel.kind = "consumer",
    );
    #[cfg(feature = "otel")]
    crate::telemetry::link(&span, task.trace_context.as_deref());
    let body = if crate::policy::Overrides::of(task).step {
        // A step reads how its dependencies ended before its body starts.
        let (db, id, params) = (queue.db().clone(), task.id, task.task_params.clone());
        let read = home.spawn(async move { crate::store::steps::edges_of(&db, id).await });
        Box::pin(async move {
            let edges = read
                .await
                .map_err(|err| err.to_string())
                .and_then(|read| read.map_err(|err| err.to_string()))
                .map_err(|err| {
                    TaskError::retryable(format!(
                        "reading the outcomes of the tasks this one runs after failed: {err}"
                    ))
                })?;
            handler.run(&params, ctx.with_dependencies(edges)).await
        })
    } else {
        handler.run(&task.task_params, ctx)
    };
    Spawned::Running(tokio::task::spawn(body.instrument(span)))
}

/// How long one execution of `task` may run: its enqueue's or its
/// definition's `max_run_time`, else the runner's `MAX_RUN_TIME`.
pub(crate) fn run_time_limit(queue: &Queue, task: &task::Model) -> Duration {
    policy(queue, task)
        .max_run_time
        .unwrap_or_else(|| queue.config().max_run_time())
}

/// A claimed task is about to run: logs it, emits `Started` and counts it.
pub(crate) fn started(queue: &Queue, task: &task::Model) {
    tracing::info!(task.id, "Running {task}");
    queue.metrics().started(task, queue.config().clock().now());
    queue.events().emit(Event::Started { task: task.clone() });
}

type Body = JoinHandle<Result<Option<String>, TaskError>>;

/// Waits for an execution for at most `limit` (`MAX_RUN_TIME`), stopping it
/// when it runs longer. When an operator cancels the task meanwhile, the
/// body has the runner's cancel grace period to return; then it is stopped.
pub(crate) async fn finish_execution(
    queue: &Queue,
    task: &task::Model,
    mut handle: Body,
    limit: Duration,
) -> Execution {
    let began = std::time::Instant::now();
    let cancel = queue.cancel_signal(task.id);
    let finished = tokio::select! {
        finished = tokio::time::timeout(limit, &mut handle) => Some(finished),
        () = cancel.cancelled() => None,
    };
    let execution = match finished {
        Some(Ok(joined)) => ended(joined),
        Some(Err(_elapsed)) => {
            handle.abort();
            Execution::Failed {
                error: format!(
                    "the task ran longer than MAX_RUN_TIME ({} s) and was stopped",
                    limit.as_secs_f64()
                ),
                permanent: false,
            }
        }
        None => stop_cancelled(queue, task, handle).await,
    };
    queue.metrics().executed(task, began.elapsed());
    execution
}

/// The body of a cancelled task: waits the grace period for it to return,
/// then stops it.
async fn stop_cancelled(queue: &Queue, task: &task::Model, mut handle: Body) -> Execution {
    let grace = queue.config().cancel_grace();
    tracing::warn!(
        task.id,
        "{task} was cancelled by an operator; its body has {} s to stop",
        grace.as_secs_f64()
    );
    match tokio::time::timeout(grace, &mut handle).await {
        // It finished its work anyway: a success is a success.
        Ok(Ok(Ok(result))) => Execution::Succeeded { result },
        Ok(Ok(Err(err))) => Execution::Cancelled {
            error: format!(
                "{CANCELLED_RUNNING_ERROR}; the task stopped on its own: {}",
                err.full_text()
            ),
        },
        Ok(Err(join)) if join.is_panic() => Execution::Cancelled {
            error: format!(
                "{CANCELLED_RUNNING_ERROR}; the task panicked while stopping: {}",
                panic_message(join.into_panic())
            ),
        },
        // Aborted by a shutdown meanwhile: handed back, and not started again.
        Ok(Err(_aborted)) => Execution::Released,
        Err(_elapsed) => {
            handle.abort();
            Execution::Cancelled {
                error: format!(
                    "{CANCELLED_RUNNING_ERROR}; it was stopped after the {} s grace period",
                    grace.as_secs_f64()
                ),
            }
        }
    }
}

/// How a body that returned (or panicked, or was aborted) ended.
fn ended(
    joined: std::result::Result<Result<Option<String>, TaskError>, tokio::task::JoinError>,
) -> Execution {
    match joined {
        Ok(Ok(result)) => Execution::Succeeded { result },
        Ok(Err(err)) => match err.snoozed_for() {
            Some(delay) => Execution::Snoozed { delay },
            None => Execution::Failed {
                error: err.full_text(),
                permanent: err.is_permanent(),
            },
        },
        Err(join) if join.is_panic() => Execution::Failed {
            error: format!("the task panicked: {}", panic_message(join.into_panic())),
            permanent: false,
        },
        Err(_cancelled) => Execution::Released,
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(
            || "(a non-text panic payload)".to_owned(),
            |text| (*text).to_owned(),
        ),
    }
}

/// Claims up to `limit` due tasks for the queue's runner identity. Queues
/// under a concurrency limit (this runner's own, or a global one) are
/// claimed first, one by one, each up to what its limits leave; then the
/// other queues with the remaining slots. Claimed tasks are tracked as
/// running here at once, so a later claim's failure loses none of them.
pub(crate) async fn claim(queue: &Queue, limit: usize) -> Result<Vec<task::Model>> {
    let began = std::time::Instant::now();
    let claimed = claim_unpaused(queue, limit).await;
    match &claimed {
        Ok(tasks) => queue.metrics().claimed(tasks.len(), began.elapsed()),
        Err(err) => queue.metrics().database_error("claim", err),
    }
    claimed
}

async fn claim_unpaused(queue: &Queue, limit: usize) -> Result<Vec<task::Model>> {
    let names = queue.registry().names();
    let config = queue.config();
    let ordering = config.priority_ordering();
    let now = config.clock().now();
    let controls = queue.controls();
    let paused = controls.paused();
    if config
        .queue()
        .is_some_and(|only| controls.is_paused(Some(only)))
    {
        return Ok(Vec::new());
    }
    // Queues under a limit (this runner's, or a global one) are claimed one
    // by one, each up to its room, before the others.
    let global = controls.globally_limited();
    let mut limited: Vec<&str> = config
        .queue_limits()
        .keys()
        .map(String::as_str)
        .chain(global.iter().map(String::as_str))
        .filter(|limited| config.queue().is_none_or(|only| only == *limited))
        .filter(|limited| !paused.iter().any(|queue| queue == limited))
        .collect();
    limited.sort_unstable();
    limited.dedup();
    let mut tasks = Vec::new();
    for name in &limited {
        let free = limit - tasks.len();
        let room = config
            .queue_limits()
            .get(*name)
            .map_or(free, |max| max.saturating_sub(queue.running_in(name)))
            .min(free);
        if room == 0 {
            continue;
        }
        let filter = ClaimFilter {
            names: &names,
            queues: Queues::Only(name),
            ordering,
        };
        let is_global = global.iter().any(|queue| queue == name);
        match claim_round(queue, now, room, &filter, is_global, &mut tasks).await {
            Ok(()) => {}
            // Run what was claimed; the next poll tries again.
            Err(err) if !tasks.is_empty() => {
                tracing::warn!(
                    "could not claim tasks of queue {name}: {}: {err}",
                    crate::store::classify(&err).describe()
                );
                return Ok(tasks);
            }
            Err(err) => return Err(err),
        }
    }
    let free = limit - tasks.len();
    // Limited queues were claimed above; paused ones are left alone (the
    // default queue is paused as the name "").
    let excluded: Vec<String> = limited
        .iter()
        .map(|name| (*name).to_owned())
        .chain(paused.iter().filter(|name| !name.is_empty()).cloned())
        .collect();
    let default_paused = paused.iter().any(String::is_empty);
    let queues = match config.queue() {
        Some(_) if !limited.is_empty() => return Ok(tasks),
        Some(only) => Queues::Only(only),
        None if excluded.is_empty() && !default_paused => Queues::All,
        None => Queues::AllBut {
            named: &excluded,
            default: default_paused,
        },
    };
    let filter = ClaimFilter {
        names: &names,
        queues,
        ordering,
    };
    match claim_round(queue, now, free, &filter, false, &mut tasks).await {
        Ok(()) => {}
        Err(err) if !tasks.is_empty() => {
            tracing::warn!(
                "could not claim tasks: {}: {err}",
                crate::store::classify(&err).describe()
            );
        }
        Err(err) => return Err(err),
    }
    Ok(tasks)
}

/// Claims of one filter before a claim gives up on rows it set aside: a
/// claim that had to set rows aside claims their room again, so bad rows
/// cost the tasks behind them nothing, within this many claims.
const SET_ASIDE_ROUNDS: usize = 4;

/// Claims up to `room` tasks of `filter` into `tasks` (tracked as running
/// at once). Rows the claim could not decode were set aside by it: each is
/// logged, and the claim is repeated for their room.
async fn claim_round(
    queue: &Queue,
    now: chrono::DateTime<chrono::Utc>,
    room: usize,
    filter: &ClaimFilter<'_>,
    is_global: bool,
    tasks: &mut Vec<task::Model>,
) -> Result<()> {
    let mut left = room;
    for _ in 0..SET_ASIDE_ROUNDS {
        let claimed =
            claim::claim(queue.db(), queue.runner_id(), now, left, filter, is_global).await?;
        queue.track_running(&claimed.tasks);
        // Set-aside rows took no slot: their room is claimed again.
        left = left.saturating_sub(claimed.tasks.len());
        tasks.extend(claimed.tasks);
        for unreadable in &claimed.set_aside {
            tracing::error!(
                task.id = unreadable.id.as_deref().unwrap_or("?"),
                "task set aside (failed, not retried): {unreadable}"
            );
        }
        if claimed.set_aside.is_empty() || left == 0 {
            break;
        }
    }
    Ok(())
}

/// Takes back tasks of runners that stopped renewing their locks (see
/// [`claim::unlock_expired`]).
pub(crate) async fn unlock_expired(queue: &Queue) -> Result<u64> {
    let config = queue.config();
    let now = config.clock().now();
    let lease = TimeDelta::from_std(config.lease()).unwrap_or(TimeDelta::MAX);
    let max_run_time = TimeDelta::from_std(config.max_run_time()).unwrap_or(TimeDelta::MAX);
    let since = |age: TimeDelta| {
        now.checked_sub_signed(age)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    let unlocked = crate::store::retry_conflicts("lock expiry", || {
        claim::unlock_expired(queue.db(), since(lease), since(max_run_time))
    })
    .await?;
    if unlocked > 0 {
        tracing::warn!(
            unlocked,
            "took back tasks whose runner stopped renewing its locks (it died or hung); \
             they will run again"
        );
    }
    Ok(unlocked)
}

/// Settles the dependents of tasks that left the queue without an outcome
/// (deleted, or run by Django's `process_tasks`): see
/// [`crate::store::steps::settle_vanished`]. Returns how many dependents
/// it cancelled or released.
pub(crate) async fn settle_vanished(queue: &Queue) -> Result<usize> {
    let now = queue.config().clock().now();
    let settlement = crate::store::retry_conflicts("settling vanished dependencies", || {
        crate::store::steps::settle_vanished(queue.db(), now)
    })
    .await?;
    let settled = settlement.cancelled.len() + settlement.released.len();
    if settled > 0 {
        tracing::warn!(
            cancelled = settlement.cancelled.len(),
            released = settlement.released.len(),
            "tasks that steps waited for left the queue without an outcome (deleted, or run by \
             a runner that does not settle dependencies): their steps were cancelled, or \
             released when they run anyway"
        );
    }
    announce_settlement(queue, settlement);
    Ok(settled)
}

/// Renews the locks of the tasks this runner is running, and its registry
/// row. Registers the runner again if its row was removed. Reads the
/// controls: the queues under a global concurrency limit, the paused
/// queues, and whether this runner was asked to drain.
pub(crate) async fn heartbeat(queue: &Queue) -> Result<()> {
    let beat = async {
        let now = queue.config().clock().now();
        let running = queue.running_ids();
        // A lost lock race (MySQL deadlock or lock wait timeout, seen with
        // several runners) is tried again at once, so that it costs no lease
        // renewal; only a failure that persists skips this beat.
        let renewed = crate::store::retry_conflicts("heartbeat", || {
            runners::heartbeat(queue.db(), queue.runner_id(), &running, now)
        })
        .await?;
        match renewed {
            None => register(queue).await?,
            Some(beat) if beat.drain_requested => {
                if queue.controls().request_drain() {
                    tracing::warn!(
                        runner = queue.runner_id(),
                        "asked to drain: claiming no more tasks; finishing the ones held"
                    );
                }
            }
            Some(_) => {}
        }
        read_controls(queue).await
    };
    let beat = beat.await;
    if let Err(err) = &beat {
        queue.metrics().database_error("heartbeat", err);
    }
    beat
}

/// Reads which queues have a global concurrency or rate limit and which
/// are paused; wakes the runner when a queue was resumed.
pub(crate) async fn read_controls(queue: &Queue) -> Result<()> {
    // Queues with a global concurrency limit, a rate limit or a key
    // policy: each is claimed on its own, its limits checked in the claim.
    let mut limited: Vec<String> = crate::store::limits::list(queue.db())
        .await?
        .into_iter()
        .map(|limit| limit.queue)
        .collect();
    limited.extend(crate::store::limits::rate_limited(queue.db()).await?);
    limited.extend(crate::store::keys::keyed_queues(queue.db()).await?);
    limited.sort_unstable();
    limited.dedup();
    let controls = queue.controls();
    controls.set_globally_limited(limited);
    let paused = crate::store::controls::paused(queue.db()).await?;
    let paused: Vec<String> = paused.into_iter().map(|row| row.queue).collect();
    let before = controls.paused();
    if controls.set_paused(paused.clone()) {
        tracing::info!(paused = ?paused, "a queue was resumed: claiming its tasks again");
        queue.wake_handle().notify_one();
    } else if paused.iter().any(|queue| !before.contains(queue)) {
        tracing::info!(paused = ?paused, "a queue was paused: claiming none of its tasks");
    }
    Ok(())
}

/// Signals the bodies of the running tasks an operator cancelled.
pub(crate) async fn check_cancelled(queue: &Queue) -> Result<()> {
    let running = queue.running_ids();
    if running.is_empty() {
        return Ok(());
    }
    let requested =
        crate::store::admin::cancel_requested(queue.db(), queue.runner_id(), &running).await?;
    queue.signal_cancelled(&requested);
    Ok(())
}

/// Writes this runner's registry row.
pub(crate) async fn register(queue: &Queue) -> Result<()> {
    let now = queue.config().clock().now();
    let executors = i32::try_from(queue.config().concurrency()).unwrap_or(i32::MAX);
    let row = crate::entity::runner::Model {
        runner_id: queue.runner_id().to_owned(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        queue: queue.config().queue().map(str::to_owned),
        executors,
        running: 0,
        started_at: now,
        last_seen: now,
        drain_requested_at: None,
    };
    crate::store::retry_conflicts("runner registration", || {
        runners::register(queue.db(), row.clone())
    })
    .await
}

/// Removes this runner's registry row (clean shutdown), and forgets
/// runners not seen for a day.
pub(crate) async fn deregister(queue: &Queue) -> Result<()> {
    runners::deregister(queue.db(), queue.runner_id()).await?;
    let day_ago = queue.config().clock().now() - TimeDelta::days(1);
    runners::forget_dead(queue.db(), day_ago).await?;
    Ok(())
}

/// Writes the outcome of an execution of `task` and emits its events; the
/// task then no longer counts as running here (its lock is not renewed).
pub(crate) async fn apply(queue: &Queue, task: task::Model, execution: Execution) -> Result<()> {
    apply_batch(queue, &[(task, execution)]).await
}

/// Writes the outcomes of several executions in one transaction, then
/// emits their events in order.
pub(crate) async fn apply_batch(queue: &Queue, batch: &[(task::Model, Execution)]) -> Result<()> {
    let began = std::time::Instant::now();
    let now = queue.config().clock().now();
    let endings: Vec<(&task::Model, Ending<'_>)> = batch
        .iter()
        .map(|(task, execution)| {
            let ending = execution.ending(task, &policy(queue, task));
            (task, ending)
        })
        .collect();
    let applied = outcome::record(
        queue.db(),
        queue.runner_id(),
        &endings,
        queue.config().max_attempts(),
        now,
    )
    .await;
    let (applied, settlement) = match applied {
        Ok(recorded) => recorded,
        Err(err) => {
            queue.metrics().database_error("outcome", &err);
            return Err(err);
        }
    };
    queue
        .metrics()
        .outcomes_written(batch.len(), began.elapsed());
    for ((task, _), applied) in batch.iter().zip(applied) {
        queue.untrack_running(task.id);
        announce(queue, task, applied, now);
    }
    announce_settlement(queue, settlement);
    Ok(())
}

/// Logs and emits what an outcome batch did to the tasks waiting for its
/// tasks, and wakes this process's runner for the released ones.
fn announce_settlement(queue: &Queue, settlement: crate::store::steps::Settlement) {
    let events = queue.events();
    for completed in settlement.cancelled {
        let task_id = completed.task_id.unwrap_or_default();
        tracing::info!(
            task.id = task_id,
            "Cancelled {completed}: {}",
            completed.last_error
        );
        events.emit(Event::Cancelled { task_id, completed });
    }
    for (batch, callback_id, callback_runs) in settlement.batches {
        tracing::info!(
            task.id = callback_id,
            "Batch {batch} finished: its callback {}",
            if callback_runs {
                "runs"
            } else {
                "is cancelled"
            }
        );
        events.emit(Event::BatchFinished {
            batch,
            callback_id,
            callback_runs,
        });
    }
    if settlement.released.is_empty() {
        return;
    }
    for task_id in settlement.released {
        tracing::debug!(
            task.id = task_id,
            "Released task {task_id}: what it runs after succeeded"
        );
        events.emit(Event::Released { task_id });
    }
    queue.wake_handle().notify_one();
}

/// Gives up recording the outcome of `task` (the database stayed away at
/// shutdown): its lock is no longer renewed, so it expires and the task
/// runs again.
pub(crate) fn abandon(queue: &Queue, task_id: i32) {
    queue.untrack_running(task_id);
}

/// Logs what was written for `task` and emits its events.
fn announce(queue: &Queue, task: &task::Model, applied: Applied, now: DateTime<Utc>) {
    let events = queue.events();
    match applied {
        Applied::Succeeded {
            completed,
            repeats_at,
        } => {
            queue.metrics().succeeded(task);
            tracing::info!(task.id, "Ran task and deleting {task}");
            if let Some(next) = repeats_at {
                tracing::debug!(task.id, "{task} repeats at {next}");
            }
            events.emit(Event::Successful {
                task_id: task.id,
                completed,
            });
        }
        Applied::Retried { task: rescheduled } => {
            queue.metrics().retried(task);
            let error = rescheduled.last_error.clone();
            tracing::error!(
                task.id,
                attempts = rescheduled.attempts,
                "Rescheduling {task} for {} s later at {}: {error}",
                (rescheduled.run_at - now).num_seconds(),
                rescheduled.run_at
            );
            events.emit(Event::Error {
                task: task.clone(),
                error,
            });
            events.emit(Event::Rescheduled { task: rescheduled });
        }
        Applied::Failed { completed } => {
            queue.metrics().failed(task);
            tracing::error!(
                task.id,
                attempts = completed.attempts,
                "Marking task {task} as failed: {}",
                completed.last_error
            );
            events.emit(Event::Error {
                task: task.clone(),
                error: completed.last_error.clone(),
            });
            events.emit(Event::Failed {
                task_id: task.id,
                completed,
            });
        }
        Applied::Cancelled { completed } => {
            queue.metrics().cancelled(task);
            tracing::warn!(task.id, "Cancelled {task}: {}", completed.last_error);
            events.emit(Event::Cancelled {
                task_id: task.id,
                completed,
            });
        }
        Applied::Snoozed { task: snoozed } => {
            queue.metrics().snoozed(task);
            tracing::info!(task.id, "Snoozed {task} until {}", snoozed.run_at);
            events.emit(Event::Snoozed { task: snoozed });
        }
        Applied::Released => {
            tracing::info!(task.id, "handed back {task} unfinished");
            return;
        }
        Applied::LeaseLost => {
            tracing::warn!(
                task.id,
                "{task} finished, but this runner no longer holds its lock (it expired and the \
                 task was handed to another runner); its outcome is not recorded"
            );
        }
    }
    events.emit(Event::Finished { task_id: task.id });
}

/// Runs `task` (already claimed) to the end: events, body, outcome.
pub(crate) async fn run_claimed(queue: &Queue, task: task::Model) -> Result<()> {
    started(queue, &task);
    let home = tokio::runtime::Handle::current();
    let execution = match spawn_execution(queue, &task, &home) {
        Spawned::Running(handle) => {
            // Renew the lock while the body runs, so no other runner takes
            // the task for abandoned.
            let beat = async {
                loop {
                    tokio::time::sleep(queue.config().heartbeat_interval()).await;
                    if let Err(err) = heartbeat(queue).await {
                        tracing::warn!("could not renew the task's lock: {err}");
                    }
                }
            };
            tokio::select! {
                execution = finish_execution(queue, &task, handle, run_time_limit(queue, &task)) => execution,
                never = beat => never,
            }
        }
        Spawned::Ended(execution) => execution,
    };
    apply(queue, task, execution).await
}

/// The seed's `run_next_task`: takes back expired locks, claims the next
/// due task, runs it inline and records the outcome. True when a task was
/// claimed and run; false when none was due, or the database failed (logged
/// as a warning).
pub(crate) async fn run_next_task(queue: &Queue) -> bool {
    let claimed = async {
        unlock_expired(queue).await?;
        claim(queue, 1).await
    };
    let task = match claimed.await {
        Ok(mut tasks) => match tasks.pop() {
            Some(task) => task,
            None => return false,
        },
        Err(err) => {
            tracing::warn!(
                "{}",
                crate::store::failure("Failed to retrieve tasks", &err)
            );
            return false;
        }
    };
    if let Err(err) = run_claimed(queue, task).await {
        tracing::warn!(
            "{}",
            crate::store::failure("Failed to record the outcome of a task", &err)
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_identity_fits_locked_by_and_is_unique() {
        let a = runner_identity();
        let b = runner_identity();
        assert!(a.len() <= 64, "{a}");
        assert_ne!(a, b);
        assert!(a.contains(&format!(":{}:", std::process::id())), "{a}");
    }

    #[test]
    fn panic_messages_are_kept() {
        assert_eq!(panic_message(Box::new("boom")), "boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_message(Box::new(3)), "(a non-text panic payload)");
    }
}
