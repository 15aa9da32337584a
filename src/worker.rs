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

use crate::entity::task;
use crate::error::Result;
use crate::events::Event;
use crate::queue::Queue;
use crate::store::claim::{self, ClaimFilter};
use crate::store::outcome::{self, Applied, Ending};
use crate::store::runners;
use crate::task::{KeepHistory, TaskContext, TaskDefaults, TaskError};

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
    /// The execution was stopped by a shutdown, or this runner has no
    /// handler for the task: hand the task back without counting an attempt.
    Released,
}

impl Execution {
    /// How the outcome is written, under the policies of the task's
    /// definition (`defaults`; the runner's settings where it has none).
    fn ending(&self, task: &task::Model, defaults: &TaskDefaults) -> Ending<'_> {
        match self {
            Execution::Succeeded { result } => Ending::Succeeded {
                result: result.as_deref(),
                keep: defaults.keep_history == KeepHistory::Always,
            },
            Execution::Failed { error, permanent } => {
                let attempts = u32::try_from(task.attempts.saturating_add(1)).unwrap_or(1);
                Ending::Failed {
                    error,
                    permanent: *permanent,
                    repeat_after_failure: defaults.repeat_after_failure,
                    max_attempts: defaults.max_attempts,
                    retry_in: defaults.backoff.as_ref().map(|backoff| {
                        TimeDelta::from_std(backoff.delay(attempts)).unwrap_or(TimeDelta::MAX)
                    }),
                    keep: defaults.keep_history != KeepHistory::Never,
                }
            }
            Execution::Snoozed { delay } => Ending::Snoozed { delay: *delay },
            Execution::Released => Ending::Released,
        }
    }
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

/// Starts the body of `task` on the current runtime. The returned handle
/// catches a panic as an error and can be aborted.
pub(crate) fn spawn_execution(
    queue: &Queue,
    task: &task::Model,
) -> Option<JoinHandle<Result<Option<String>, TaskError>>> {
    let handler = queue.registry().handler(&task.task_name)?;
    let ctx = TaskContext::for_row(task.id, task.task_name.clone(), task.attempts);
    // One span per execution, so whatever the body logs carries the task.
    let span = tracing::info_span!(
        "task",
        id = task.id,
        name = %task.task_name,
        attempt = task.attempts + 1,
        queue = task.queue.as_deref().unwrap_or_default(),
    );
    Some(tokio::task::spawn(
        handler.run(&task.task_params, ctx).instrument(span),
    ))
}

/// How long one execution of `task` may run: its definition's
/// `max_run_time`, else the runner's `MAX_RUN_TIME`.
pub(crate) fn run_time_limit(queue: &Queue, task: &task::Model) -> Duration {
    queue
        .registry()
        .with_defaults(&task.task_name, |defaults| defaults.max_run_time)
        .flatten()
        .unwrap_or_else(|| queue.config().max_run_time())
}

/// A claimed task is about to run: logs it, emits `Started` and counts it.
pub(crate) fn started(queue: &Queue, task: &task::Model) {
    tracing::info!(task.id, "Running {task}");
    queue.metrics().started(task, queue.config().clock().now());
    queue.events().emit(Event::Started { task: task.clone() });
}

/// Waits for an execution for at most `limit` (`MAX_RUN_TIME`), stopping it
/// when it runs longer.
pub(crate) async fn finish_execution(
    queue: &Queue,
    task: &task::Model,
    mut handle: JoinHandle<Result<Option<String>, TaskError>>,
    limit: Duration,
) -> Execution {
    let began = std::time::Instant::now();
    let finished = tokio::time::timeout(limit, &mut handle).await;
    queue.metrics().executed(task, began.elapsed());
    match finished {
        Ok(Ok(Ok(result))) => Execution::Succeeded { result },
        Ok(Ok(Err(err))) => match err.snoozed_for() {
            Some(delay) => Execution::Snoozed { delay },
            None => Execution::Failed {
                error: err.full_text(),
                permanent: err.is_permanent(),
            },
        },
        Ok(Err(join)) if join.is_panic() => Execution::Failed {
            error: format!("the task panicked: {}", panic_message(join.into_panic())),
            permanent: false,
        },
        Ok(Err(_cancelled)) => Execution::Released,
        Err(_elapsed) => {
            handle.abort();
            Execution::Failed {
                error: format!(
                    "the task ran longer than MAX_RUN_TIME ({} s) and was stopped",
                    limit.as_secs_f64()
                ),
                permanent: false,
            }
        }
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

/// Claims up to `limit` due tasks for the queue's runner identity.
pub(crate) async fn claim(queue: &Queue, limit: usize) -> Result<Vec<task::Model>> {
    let names = queue.registry().names();
    let config = queue.config();
    let filter = ClaimFilter {
        names: &names,
        queue: config.queue(),
        ordering: config.priority_ordering(),
    };
    let now = config.clock().now();
    let tasks = claim::claim(queue.db(), queue.runner_id(), now, limit, &filter).await?;
    queue.track_running(tasks.iter().map(|t| t.id));
    Ok(tasks)
}

/// Takes back tasks of runners that stopped renewing their locks (see
/// [`claim::unlock_expired`]).
pub(crate) async fn unlock_expired(queue: &Queue) -> Result<u64> {
    let config = queue.config();
    let now = config.clock().now();
    let lease = TimeDelta::from_std(config.lease()).unwrap_or(TimeDelta::MAX);
    let max_run_time = TimeDelta::from_std(config.max_run_time()).unwrap_or(TimeDelta::MAX);
    let unlocked = claim::unlock_expired(queue.db(), now - lease, now - max_run_time).await?;
    if unlocked > 0 {
        tracing::warn!(
            unlocked,
            "took back tasks whose runner stopped renewing its locks (it died or hung); \
             they will run again"
        );
    }
    Ok(unlocked)
}

/// Renews the locks of the tasks this runner is running, and its registry
/// row. Registers the runner again if its row was removed.
pub(crate) async fn heartbeat(queue: &Queue) -> Result<()> {
    let now = queue.config().clock().now();
    let running = queue.running_ids();
    if runners::heartbeat(queue.db(), queue.runner_id(), &running, now)
        .await?
        .is_none()
    {
        register(queue).await?;
    }
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
    };
    runners::register(queue.db(), row).await
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
    let now = queue.config().clock().now();
    let endings: Vec<(&task::Model, Ending<'_>)> = batch
        .iter()
        .map(|(task, execution)| {
            let ending = queue
                .registry()
                .with_defaults(&task.task_name, |defaults| execution.ending(task, defaults))
                .unwrap_or_else(|| execution.ending(task, &TaskDefaults::default()));
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
    .await?;
    for ((task, _), applied) in batch.iter().zip(applied) {
        queue.untrack_running(task.id);
        announce(queue, task, applied, now);
    }
    Ok(())
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
        Applied::Snoozed { task: snoozed } => {
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
    let execution = match spawn_execution(queue, &task) {
        Some(handle) => {
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
        None => Execution::Released,
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
            tracing::warn!("Failed to retrieve tasks. Database unreachable: {err}");
            return false;
        }
    };
    if let Err(err) = run_claimed(queue, task).await {
        tracing::warn!("Failed to record the outcome of a task. Database unreachable: {err}");
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
