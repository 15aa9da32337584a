//! What the seed's Django admin offers, and what its users asked it for, as
//! functions an operator's tool (the CLI, the dashboard, your own code) can
//! call: free-text search over task names and params, bulk priority +1 /
//! -1, bulk delete, run now, retry a failed task, cancel a task (waiting or
//! running), global per-queue concurrency limits ([`set_queue_limit`]),
//! whether the process holding a lock is alive, which due tasks no
//! runner here can run, and pruning the history by a [`Retention`]
//! ([`prune`], in bounded batches). Editing a single task is a plain
//! SeaORM update of its entity. Read-only views are in [`crate::inspect`];
//! health checks in [`crate::doctor`].

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use crate::config::Retention;
use crate::entity::{completed_task, task};
use crate::error::Result;
use crate::store::admin as sql;
use crate::store::retention::{self as retention_sql, Doomed};

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

/// Sets the global concurrency limit of `queue`: at most `max_running` of
/// its tasks run at once across every runner sharing the database,
/// enforced in each runner's claim. Runners learn of a new or changed
/// limit at their next heartbeat (a third of the lease: 10 s by default).
pub async fn set_queue_limit<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    max_running: u32,
) -> Result<()> {
    crate::config::validate_queue_name(queue)?;
    let max_running = i32::try_from(max_running).map_err(|_| {
        crate::Error::invalid(
            "max_running",
            format!("{max_running} is more than {} tasks", i32::MAX),
        )
    })?;
    crate::store::limits::set(conn, queue, max_running).await
}

/// Removes the global concurrency limit of `queue`; false when it had none.
pub async fn remove_queue_limit<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    crate::store::limits::remove(conn, queue).await
}

/// Every global concurrency limit.
pub async fn queue_limits<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<crate::entity::queue_limit::Model>> {
    crate::store::limits::list(conn).await
}

/// Longest period a rate limit may have: 30 days.
pub const MAX_RATE_PERIOD: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Sets the rate limit of `queue`: at most `max_starts` of its tasks start
/// in any window of `period`, across every runner sharing the database
/// (a retry is a start). Enforced in each runner's claim, which locks the
/// limit's row and counts the starts recorded in the window; runners
/// learn of a new limit at their next heartbeat, as of a concurrency
/// limit, and both can be set on one queue. Refused: a limit of 0 starts
/// (pause the queue instead), a period of 0 or over [`MAX_RATE_PERIOD`],
/// a period under a millisecond.
pub async fn set_rate_limit<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    max_starts: u32,
    period: std::time::Duration,
) -> Result<()> {
    crate::config::validate_queue_name(queue)?;
    if max_starts == 0 {
        return Err(crate::Error::invalid(
            "max_starts",
            "a rate limit of 0 starts would stop the queue for good; give at least 1 (to stop a \
             queue for a while, pause it)",
        ));
    }
    let max_starts = i32::try_from(max_starts).map_err(|_| {
        crate::Error::invalid(
            "max_starts",
            format!("{max_starts} is more than {} starts", i32::MAX),
        )
    })?;
    if period < std::time::Duration::from_millis(1) || period > MAX_RATE_PERIOD {
        return Err(crate::Error::invalid(
            "period",
            format!(
                "{period:?}; a rate limit's period is 1 ms to {} days",
                MAX_RATE_PERIOD.as_secs() / 86_400
            ),
        ));
    }
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    crate::store::limits::set_rate(conn, queue, max_starts, period_ms).await
}

/// Removes the rate limit of `queue`; false when it had none.
pub async fn remove_rate_limit<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    crate::store::limits::remove_rate(conn, queue).await
}

/// Every rate limit, with the starts of its current window (the one that
/// ends at `now`): its current use.
pub async fn rate_limits<C: ConnectionTrait>(
    conn: &C,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RateLimitUse>> {
    Ok(crate::store::limits::list_rates(conn, now)
        .await?
        .into_iter()
        .map(|(limit, used)| RateLimitUse {
            queue: limit.queue,
            max_starts: limit.max_starts,
            period: std::time::Duration::from_millis(u64::try_from(limit.period_ms).unwrap_or(0)),
            started_in_window: used,
        })
        .collect())
}

/// A rate limit and its current use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RateLimitUse {
    /// The queue.
    pub queue: String,
    /// Most starts in one window.
    pub max_starts: i32,
    /// The window.
    pub period: std::time::Duration,
    /// Starts in the window that ends now.
    pub started_in_window: i64,
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

/// Most rows one batch of a pruning selects and deletes.
pub const MAX_PRUNE_BATCH: usize = 10_000;

/// History rows deleted by a pruning (or, from [`prune_preview`], that it
/// would delete), per reason. A row is counted once, under the first
/// reason that selects it, in the order of the fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Succeeded rows older than [`Retention::completed`].
    pub completed: u64,
    /// Failed rows older than [`Retention::failed`].
    pub failed: u64,
    /// Rows beyond the newest [`Retention::keep_last`], whatever their age.
    pub beyond_keep_last: u64,
    /// Whether rows the policy selects may be left: a bounded pruning
    /// ([`prune_some`]) reached its bound. Always false from [`prune`].
    pub more: bool,
}

impl Pruned {
    /// Rows deleted for every reason together.
    pub fn total(&self) -> u64 {
        self.completed + self.failed + self.beyond_keep_last
    }
}

/// Deletes the history rows that `retention` selects at `now`, in batches
/// of at most `batch` rows (1 to [`MAX_PRUNE_BATCH`]), until none is left.
///
/// Each batch is a short statement of its own (select ids through an
/// index, delete them), so runners and enqueues go on in between, and an
/// interrupted pruning keeps what it deleted. Succeeded rows by age go
/// first, then failed rows by age, then the rows beyond the newest
/// `keep_last`. To bound the work of one call, use [`prune_some`]; to
/// show progress, drive a [`Pruning`].
///
/// ```no_run
/// # async fn demo(db: sea_orm::DatabaseConnection) -> background_tasks::Result<()> {
/// use std::time::Duration;
/// use background_tasks::{Retention, admin};
///
/// let week = Duration::from_secs(7 * 86_400);
/// let retention = Retention { completed: Some(week), ..Retention::default() };
/// let pruned = admin::prune(&db, &retention, chrono::Utc::now(), 1_000).await?;
/// println!("deleted {} history rows", pruned.total());
/// # Ok(()) }
/// ```
pub async fn prune<C: ConnectionTrait>(
    conn: &C,
    retention: &Retention,
    now: DateTime<Utc>,
    batch: usize,
) -> Result<Pruned> {
    prune_some(conn, retention, now, batch, usize::MAX).await
}

/// Like [`prune`], deleting at most `max_batches` batches: what a runner
/// does in one round, so it never holds the database for long.
/// [`Pruned::more`] says whether rows the policy selects are left.
pub async fn prune_some<C: ConnectionTrait>(
    conn: &C,
    retention: &Retention,
    now: DateTime<Utc>,
    batch: usize,
    max_batches: usize,
) -> Result<Pruned> {
    let mut pruning = Pruning::new(retention, now, batch)?;
    for _ in 0..max_batches {
        if !pruning.step(conn).await? {
            break;
        }
    }
    Ok(pruning.pruned())
}

/// Counts what [`prune`] would delete at `now`, deleting nothing. Each
/// count stops at `cap` (so a huge history is not counted whole): a count
/// equal to `cap` means at least that many.
pub async fn prune_preview<C: ConnectionTrait>(
    conn: &C,
    retention: &Retention,
    now: DateTime<Utc>,
    cap: u64,
) -> Result<Pruned> {
    let mut counted = Pruned::default();
    let by_age = age_rules(retention, now);
    for doomed in &by_age {
        let count = retention_sql::count(conn, *doomed, &[], cap).await?;
        match doomed {
            Doomed::Failed(_) => counted.failed = count,
            _ => counted.completed = count,
        }
    }
    if let Some(keep) = retention.keep_last {
        // Among the rows the age rules leave, as the pruning itself sees
        // them once it reaches its last phase.
        let doomed = match keep {
            0 => Some(Doomed::OlderThan(None)),
            keep => newest_kept(conn, keep, &by_age)
                .await?
                .map(|kept| Doomed::OlderThan(Some(kept))),
        };
        if let Some(doomed) = doomed {
            counted.beyond_keep_last = retention_sql::count(conn, doomed, &by_age, cap).await?;
        }
    }
    Ok(counted)
}

/// A pruning in progress, one batch per [`Pruning::step`]: for callers
/// that show progress or decide themselves when to stop. [`prune`] and
/// [`prune_some`] drive one.
#[derive(Clone, Debug)]
pub struct Pruning {
    retention: Retention,
    now: DateTime<Utc>,
    batch: u64,
    phase: Phase,
    pruned: Pruned,
}

/// Where a pruning is: the phases run in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Completed,
    Failed,
    /// Rows beyond the newest `keep_last`; the rows to delete are found
    /// once, at the start of the phase (see [`Pruning::step`]).
    KeepLast(Option<Doomed>),
    Done,
}

impl Phase {
    fn next(self) -> Phase {
        match self {
            Phase::Completed => Phase::Failed,
            Phase::Failed => Phase::KeepLast(None),
            Phase::KeepLast(_) | Phase::Done => Phase::Done,
        }
    }
}

impl Pruning {
    /// A pruning of the rows `retention` selects at `now`, `batch` rows
    /// (1 to [`MAX_PRUNE_BATCH`]) per step. Deletes nothing yet.
    pub fn new(retention: &Retention, now: DateTime<Utc>, batch: usize) -> Result<Self> {
        if !(1..=MAX_PRUNE_BATCH).contains(&batch) {
            return Err(crate::Error::invalid(
                "batch",
                format!("{batch} rows; use 1 to {MAX_PRUNE_BATCH} rows per batch"),
            ));
        }
        Ok(Self {
            retention: retention.clone(),
            now,
            batch: batch as u64,
            phase: Phase::Completed,
            pruned: Pruned::default(),
        })
    }

    /// Deletes the next batch: selects up to `batch` ids, then deletes
    /// them, two short statements. Returns whether rows may be left, that
    /// is, whether to call it again.
    pub async fn step<C: ConnectionTrait>(&mut self, conn: &C) -> Result<bool> {
        self.skip_unset_phases();
        let doomed = match self.phase {
            Phase::Completed => self.age_rule(self.retention.completed, Doomed::Completed),
            Phase::Failed => self.age_rule(self.retention.failed, Doomed::Failed),
            Phase::KeepLast(Some(doomed)) => Some(doomed),
            // The newest rows to keep are found once, at the start of the
            // phase: rows written meanwhile are newer still, so the
            // boundary stays right (it keeps them too) until the end.
            Phase::KeepLast(None) => match self.retention.keep_last {
                None => None,
                Some(0) => Some(Doomed::OlderThan(None)),
                Some(keep) => newest_kept(conn, keep, &[])
                    .await?
                    .map(|kept| Doomed::OlderThan(Some(kept))),
            },
            Phase::Done => None,
        };
        let Some(doomed) = doomed else {
            // Nothing is old enough for this phase's rule.
            self.next_phase();
            return Ok(self.record_more());
        };
        let ids = retention_sql::select_ids(conn, doomed, self.batch).await?;
        let deleted = retention_sql::delete(conn, doomed, &ids).await?;
        match doomed {
            Doomed::Completed(_) => self.pruned.completed += deleted,
            Doomed::Failed(_) => self.pruned.failed += deleted,
            Doomed::OlderThan(_) => {
                self.pruned.beyond_keep_last += deleted;
                self.phase = Phase::KeepLast(Some(doomed));
            }
        }
        // A full batch may have left more of the same; a short one was the
        // last of its phase.
        if (ids.len() as u64) < self.batch {
            self.next_phase();
        }
        Ok(self.record_more())
    }

    /// The rule of an age phase, `None` when it is unset or nothing can be
    /// that old.
    fn age_rule(
        &self,
        age: Option<std::time::Duration>,
        rule: fn(DateTime<Utc>) -> Doomed,
    ) -> Option<Doomed> {
        age.and_then(|age| cutoff(self.now, age)).map(rule)
    }

    fn next_phase(&mut self) {
        self.phase = self.phase.next();
        self.skip_unset_phases();
    }

    /// Moves past phases whose rule the retention leaves unset, so that
    /// [`Pruned::more`] is false as soon as nothing is left to try.
    fn skip_unset_phases(&mut self) {
        loop {
            let unset = match self.phase {
                Phase::Completed => self.retention.completed.is_none(),
                Phase::Failed => self.retention.failed.is_none(),
                Phase::KeepLast(None) => self.retention.keep_last.is_none(),
                Phase::KeepLast(Some(_)) | Phase::Done => false,
            };
            if !unset {
                return;
            }
            self.phase = self.phase.next();
        }
    }

    fn record_more(&mut self) -> bool {
        self.pruned.more = self.phase != Phase::Done;
        self.pruned.more
    }

    /// What it deleted so far.
    pub fn pruned(&self) -> Pruned {
        self.pruned
    }

    /// Whether every row the policy selected is deleted.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
}

/// The age rules of `retention` at `now`: succeeded rows, then failed rows.
fn age_rules(retention: &Retention, now: DateTime<Utc>) -> Vec<Doomed> {
    let completed = retention
        .completed
        .and_then(|age| cutoff(now, age))
        .map(Doomed::Completed);
    let failed = retention
        .failed
        .and_then(|age| cutoff(now, age))
        .map(Doomed::Failed);
    completed.into_iter().chain(failed).collect()
}

/// The boundary of the newest `keep` rows ([`retention_sql::newest_kept`]).
/// No table holds `i64::MAX` rows, and a larger `keep` (an OFFSET no
/// driver binds: PostgreSQL's panicked) keeps them all the same.
async fn newest_kept<C: ConnectionTrait>(
    conn: &C,
    keep: u64,
    spared: &[Doomed],
) -> Result<Option<(DateTime<Utc>, i32)>> {
    let keep = keep.min(i64::MAX.unsigned_abs());
    retention_sql::newest_kept(conn, keep, spared).await
}

/// `now - age`; `None` when that is before the year 1, the earliest time
/// every database holds (nothing is that old).
fn cutoff(now: DateTime<Utc>, age: std::time::Duration) -> Option<DateTime<Utc>> {
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .filter(|cutoff| crate::inspect::is_storable(*cutoff))
}
