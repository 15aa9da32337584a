//! What the seed's Django admin offers, and what its users asked it for, as
//! functions an operator's tool (the CLI, the dashboard, your own code) can
//! call: free-text search over task names and params, bulk priority +1 /
//! -1, bulk delete, run now, retry a failed task, cancel a waiting one,
//! whether the process holding a lock is alive, and which due tasks no
//! runner here can run. Editing a single task is a plain SeaORM update of
//! its entity. Read-only views are in [`crate::inspect`].

use sea_orm::ConnectionTrait;

use crate::entity::{completed_task, task};
use crate::error::Result;
use crate::store::admin as sql;

/// Waiting and running tasks whose name or params contain `text` (the
/// seed's admin search), highest priority and oldest first, at most `limit`.
pub async fn search_tasks<C: ConnectionTrait>(
    conn: &C,
    text: &str,
    limit: u64,
) -> Result<Vec<task::Model>> {
    sql::search_tasks(conn, text, limit).await
}

/// History rows whose name or params contain `text`, newest first.
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

/// Deletes the tasks `ids`, however many; returns rows deleted.
pub async fn delete_tasks<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    sql::delete_tasks(conn, ids).await
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

/// The last error written into the history row of a cancelled task.
pub const CANCELLED_ERROR: &str = "Cancelled by an operator before it ran.";

/// Cancels the waiting tasks `ids`: each moves to the history as failed at
/// `now`, with [`CANCELLED_ERROR`] as its last error, so the cancellation
/// stays on record and can be retried. A running task is left to finish
/// (its body cannot be interrupted safely from another process). Returns
/// the history rows written.
pub async fn cancel<C>(
    conn: &C,
    ids: &[i32],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<completed_task::Model>>
where
    C: sea_orm::TransactionTrait + ConnectionTrait,
    C::Transaction: ConnectionTrait,
{
    sql::cancel_waiting(conn, ids, CANCELLED_ERROR, now).await
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
    let lease = chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::MAX);
    Ok(crate::store::runners::list(conn)
        .await?
        .into_iter()
        .map(|runner| RunnerStatus {
            alive: runner.last_seen > now - lease,
            runner,
        })
        .collect())
}
