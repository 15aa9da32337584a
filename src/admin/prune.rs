//! Pruning the history by a [`Retention`], in bounded batches.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use crate::config::Retention;
use crate::error::Result;
use crate::store::retention::{self as retention_sql, Doomed};

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
