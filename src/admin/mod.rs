//! What the seed's Django admin offers, and what its users asked it for, as
//! functions an operator's tool (the CLI, the dashboard, your own code) can
//! call: free-text search over task names and params, bulk priority +1 /
//! -1, bulk delete, run now, retry a failed task, cancel a task (waiting or
//! running), global per-queue concurrency limits ([`set_queue_limit`]),
//! whether the process holding a lock is alive, which due tasks no
//! runner here can run, and pruning the history by a [`Retention`](crate::Retention)
//! ([`prune`], in bounded batches). Editing a single task is a plain
//! SeaORM update of its entity. Read-only views are in [`crate::inspect`];
//! health checks in [`crate::doctor`].

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use crate::entity::{completed_task, task};
use crate::error::Result;
use crate::store::admin as sql;

mod limits;
mod prune;

pub use limits::*;
pub use prune::*;

/// Waiting and running tasks whose name or params contain `text` (the
/// seed's admin search), highest priority and oldest first, at most `limit`.
/// The match ignores case on every backend (ASCII letters only on
/// SQLite); `%` and `_` are literal.
pub async fn search_tasks<C: ConnectionTrait>(
    conn: &C,
    text: &str,
    limit: u64,
) -> Result<Vec<task::Model>> {
    sql::search_tasks(conn, text, limit).await
}

/// History rows whose name or params contain `text` (as
/// [`search_tasks`] matches), newest first.
pub async fn search_completed<C: ConnectionTrait>(
    conn: &C,
    text: &str,
    limit: u64,
) -> Result<Vec<completed_task::Model>> {
    sql::search_completed(conn, text, limit).await
}

/// The admin action "priority += 1" on tasks `ids`; returns rows changed.
pub async fn increase_priority<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    sql::shift_priority(conn, ids, 1).await
}

/// The admin action "priority -= 1" on tasks `ids`; returns rows changed.
pub async fn decrease_priority<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    sql::shift_priority(conn, ids, -1).await
}

/// Deletes the waiting tasks `ids`, however many; returns rows deleted.
/// A running task is never deleted: its runner holds the row and would
/// write its outcome for a task that no longer exists. It is skipped;
/// cancel it instead ([`cancel`]). Callers that refuse a selection with
/// running tasks check [`running_among`] first.
pub async fn delete_tasks<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    sql::delete_tasks(conn, ids).await
}

/// Which of the tasks `ids` are running (held by a runner), sorted.
pub async fn running_among<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<Vec<i32>> {
    sql::running_among(conn, ids).await
}

/// Deletes the history rows `ids`, however many; returns rows deleted.
pub async fn delete_completed<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    sql::delete_completed(conn, ids).await
}

/// Makes the waiting tasks `ids` due at `now` ("run now"); running tasks
/// are left alone. Returns rows changed.
pub async fn run_now<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    sql::run_now(conn, ids, now).await
}

/// Puts the set-aside tasks `ids` (task ids; see
/// [`State::SetAside`](crate::inspect::State::SetAside)) back in the
/// queue, due at `now`, once whatever made the runner set them aside is
/// corrected. Other ids are skipped. Returns the ids put back.
pub async fn put_back_set_aside<C>(
    conn: &C,
    ids: &[i32],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<i32>>
where
    C: sea_orm::TransactionTrait + ConnectionTrait,
    C::Transaction: ConnectionTrait,
{
    sql::put_back(conn, ids, now).await
}

/// Puts the failed history rows `ids` back in the queue, due at `now`:
/// attempts start again from 0, the last error is kept, and the history
/// row is removed (in one transaction, so two operators retrying at once
/// enqueue it once). Ids that are not failed history rows are skipped.
/// Returns the new tasks.
pub async fn retry_failed<C>(
    conn: &C,
    ids: &[i32],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<task::Model>>
where
    C: sea_orm::TransactionTrait + ConnectionTrait,
    C::Transaction: ConnectionTrait,
{
    sql::retry_failed(conn, ids, now).await
}

/// The last error written into the history row of a task cancelled
/// before it ran.
pub const CANCELLED_ERROR: &str = "Cancelled by an operator before it ran.";

/// The start of the last error of a task cancelled while it ran; what
/// follows says how it stopped.
pub const CANCELLED_RUNNING_ERROR: &str = "Cancelled by an operator while it ran";

/// What [`cancel`] did.
#[derive(Clone, Debug, Default)]
pub struct Cancellation {
    /// History rows of the waiting tasks cancelled at once (failed, with
    /// [`CANCELLED_ERROR`] and `cancelled_at`).
    pub cancelled: Vec<completed_task::Model>,
    /// Running tasks asked to stop: their runner signals the body
    /// ([`crate::TaskContext::cancelled`]) within about a second, stops it
    /// after its cancel grace period, and writes a history row with
    /// `cancelled_at`.
    pub stopping: Vec<i32>,
}

impl Cancellation {
    /// How many tasks were cancelled or asked to stop.
    pub fn len(&self) -> usize {
        self.cancelled.len() + self.stopping.len()
    }

    /// True when no task matched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cancels the tasks `ids`. A waiting task moves to the history at once, as
/// failed at `now` with [`CANCELLED_ERROR`] and `cancelled_at` set, so the
/// cancellation stays on record and can be retried. A running task is
/// asked to stop (see [`Cancellation::stopping`]). Ids of finished or
/// unknown tasks are skipped.
pub async fn cancel<C>(
    conn: &C,
    ids: &[i32],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Cancellation>
where
    C: sea_orm::TransactionTrait + ConnectionTrait,
    C::Transaction: ConnectionTrait,
{
    let (cancelled, stopping) = sql::cancel(conn, ids, CANCELLED_ERROR, now).await?;
    Ok(Cancellation {
        cancelled,
        stopping,
    })
}

/// Due tasks per name that no handler in `registry` can run: they wait for
/// a runner that knows them (for example a Django `process_tasks`).
pub async fn unhandled_due<C: ConnectionTrait>(
    conn: &C,
    registry: &crate::Registry,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, i64)>> {
    let mut due = sql::due_by_name(conn, now).await?;
    due.retain(|(name, _)| !registry.contains(name));
    Ok(due)
}

/// The seed's `locked_by_pid_running`: `None` when the task is not locked;
/// otherwise whether the process named in `locked_by` is alive, checked
/// with signal 0 (which delivers nothing: unlike the seed on Windows, this
/// never kills the worker).
///
/// `locked_by` is this crate's `host:pid:random`, or the bare PID a Django
/// `process_tasks` writes. A lock taken on another host cannot be checked
/// from here and reads as `None`; so does any lock on a platform without
/// POSIX signals.
pub fn locked_by_pid_running(locked_by: Option<&str>) -> Option<bool> {
    let locked_by = locked_by.filter(|s| !s.is_empty())?;
    let pid = match locked_by.split(':').collect::<Vec<_>>().as_slice() {
        [pid] => pid.trim().parse::<i32>().ok(),
        [host, pid, _random] => {
            let here = gethostname::gethostname();
            if here.to_string_lossy() != *host {
                return None;
            }
            pid.parse::<i32>().ok()
        }
        _ => None,
    };
    // Not a process id at all: nothing can be running under that name.
    let Some(pid) = pid.filter(|pid| *pid > 0) else {
        return Some(false);
    };
    process_alive(pid)
}

#[cfg(unix)]
fn process_alive(pid: i32) -> Option<bool> {
    // SAFETY: kill with signal 0 only checks that the process exists and
    // may be signalled; it has no other effect.
    let result = unsafe { libc::kill(pid, 0) };
    if result == 0 {
        return Some(true);
    }
    // EPERM: it exists but belongs to another user.
    Some(std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

#[cfg(not(unix))]
fn process_alive(_pid: i32) -> Option<bool> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_liveness_without_killing_anything() {
        assert_eq!(locked_by_pid_running(None), None);
        assert_eq!(locked_by_pid_running(Some("")), None);
        let me = std::process::id().to_string();
        assert_eq!(
            locked_by_pid_running(Some(&me)),
            Some(true),
            "Django's bare pid"
        );
        let ours = crate::worker::runner_identity();
        assert_eq!(locked_by_pid_running(Some(&ours)), Some(true), "{ours}");
        assert_eq!(locked_by_pid_running(Some("2147483646")), Some(false));
        assert_eq!(
            locked_by_pid_running(Some("elsewhere-host:1:00000000")),
            None
        );
        assert_eq!(locked_by_pid_running(Some("mylock")), Some(false));
    }
}

/// A registered runner and whether it is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerStatus {
    /// Its registry row: identity, host, pid, queue, executors, tasks held
    /// at the last heartbeat, start and last heartbeat.
    pub runner: crate::entity::runner::Model,
    /// Whether its last heartbeat is younger than `lease`.
    pub alive: bool,
}

/// Every registered runner (most recently started first), alive when seen
/// within `lease` of `now`.
pub async fn runners<C: ConnectionTrait>(
    conn: &C,
    lease: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RunnerStatus>> {
    // A lease reaching back before any time (a huge setting) counts every
    // runner as alive rather than overflowing.
    let since = chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_sub_signed(lease));
    Ok(crate::store::runners::list(conn)
        .await?
        .into_iter()
        .map(|runner| RunnerStatus {
            alive: since.is_none_or(|since| runner.last_seen > since),
            runner,
        })
        .collect())
}

/// How far back [`runner_throughput`] looks.
pub const THROUGHPUT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The shortest time [`runner_throughput`] divides by: a runner started a
/// few seconds ago is not credited with a rate it has not kept up.
const SHORTEST_THROUGHPUT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// What a runner finished lately.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RunnerThroughput {
    /// Tasks it finished (succeeded, or failed for good) in the window.
    pub finished: i64,
    /// The window, in seconds: [`THROUGHPUT_WINDOW`], or the runner's age
    /// when it started within it (at least one minute).
    pub window_seconds: i64,
    /// `finished` per minute over the window.
    pub per_minute: f64,
}

/// The throughput of each of `runners` (in their order): the tasks it
/// finished in the [`THROUGHPUT_WINDOW`] before `now`, per minute. Tasks it
/// holds but has not finished do not count; see the registry row's
/// `running` for those.
pub async fn runner_throughput<C: ConnectionTrait>(
    conn: &C,
    runners: &[RunnerStatus],
    now: DateTime<Utc>,
) -> Result<Vec<RunnerThroughput>> {
    let since = now - THROUGHPUT_WINDOW;
    let finished: std::collections::HashMap<String, i64> =
        crate::store::runners::finished_since(conn, since)
            .await?
            .into_iter()
            .collect();
    Ok(runners
        .iter()
        .map(|status| {
            let runner = &status.runner;
            let window =
                (now - runner.started_at).clamp(SHORTEST_THROUGHPUT_WINDOW, THROUGHPUT_WINDOW);
            let finished = finished.get(&runner.runner_id).copied().unwrap_or(0);
            RunnerThroughput {
                finished,
                window_seconds: window.num_seconds(),
                per_minute: finished as f64 * 60.0 / window.num_seconds() as f64,
            }
        })
        .collect())
}
