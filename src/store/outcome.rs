//! What finished executions write, as django-background-tasks writes it,
//! with two changes: every write is fenced by the runner identity (a runner
//! that no longer holds the task, because its lock expired and another
//! runner took it, writes nothing and is told so), and the outcomes of many
//! executions are written together, in one transaction with one statement
//! per kind of write.
//!
//! - success: the history row (fields copied, `run_at` = completion time,
//!   attempts + 1, lock fields kept), the next repetition, and the deletion
//!   of the task row;
//! - retryable failure: attempts + 1, `last_error`, `run_at = now +
//!   attempts^4 + 5 s`, unlocked;
//! - permanent failure (attempts reached `MAX_ATTEMPTS`, or an invalid-task
//!   error): the history row with `failed_at`, and the deletion; the repeat
//!   chain ends;
//! - released (shutdown, or no handler here): unlocked, no attempt counted.
//!
//! A batch is: one fenced `DELETE` of the rows that leave the queue, one
//! multi-row `INSERT` of their history rows, one of the repetitions, one
//! fenced `UPDATE` per retry (each has its own values) and one fenced
//! `UPDATE` for the released rows.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
};

use super::Sql;
use super::steps::{Ended, Finished, Settlement};
use crate::entity::{completed_task, task};
use crate::error::Result;

/// Ids per fenced `DELETE` or `SELECT ... FOR UPDATE`.
const IDS_PER_STATEMENT: usize = 1_000;
/// Rows per multi-row `INSERT` (17 values a row).
const ROWS_PER_INSERT: usize = 500;
/// How many times a MySQL batch is retried after a deadlock.
const MYSQL_RETRIES: usize = 5;

/// How one execution ended, as the Scheduler reports it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ending<'a> {
    /// The body returned `Ok`, with its result as JSON; `keep`: a history
    /// row is stored.
    Succeeded { result: Option<&'a str>, keep: bool },
    /// The body failed; `permanent` for an invalid-task error (no retry);
    /// `repeat_after_failure` when a permanent failure still schedules the
    /// next repetition.
    /// `max_attempts` and `retry_in` override the runner's `MAX_ATTEMPTS`
    /// and the seed's backoff for this task; `keep`: a permanent failure
    /// stores a history row.
    Failed {
        error: &'a str,
        permanent: bool,
        repeat_after_failure: bool,
        max_attempts: Option<u32>,
        retry_in: Option<TimeDelta>,
        keep: bool,
    },
    /// Run again after `delay`; the attempt does not count.
    Snoozed { delay: std::time::Duration },
    /// An operator cancelled the task while it ran: it leaves the queue
    /// with a history row marked cancelled, and its repeat chain ends.
    Cancelled { error: &'a str },
    /// Hand the task back unfinished.
    Released,
}

/// What was written for one execution.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per outcome and consumed right away"
)]
pub(crate) enum Applied {
    /// Success: the history row, and when the next repetition runs.
    Succeeded {
        completed: completed_task::Model,
        repeats_at: Option<DateTime<Utc>>,
    },
    /// Retryable failure: the task row as rescheduled.
    Retried { task: task::Model },
    /// Snoozed: the task row as rescheduled, attempts unchanged.
    Snoozed { task: task::Model },
    /// Permanent failure: the history row.
    Failed { completed: completed_task::Model },
    /// Cancelled while it ran: the history row, with `cancelled_at`.
    Cancelled { completed: completed_task::Model },
    /// Handed back unfinished.
    Released,
    /// The runner no longer holds the task: nothing was written.
    LeaseLost,
}

/// The seed's backoff after the `attempts`-th failure: `attempts^4 + 5`
/// seconds (6 s, 21 s, 86 s, 261 s, ...).
pub(crate) fn backoff(attempts: i32) -> TimeDelta {
    let attempts = i64::from(attempts.max(0));
    let seconds = attempts.saturating_pow(4).saturating_add(5);
    TimeDelta::try_seconds(seconds).unwrap_or(TimeDelta::MAX)
}

/// Next run of a repeating task: `run_at + k * repeat` for the smallest
/// `k >= 1` that is not in the past, so missed periods are skipped and the
/// phase of the original schedule is kept.
///
/// `None` when that lies past the year 9999, which no database column
/// stores (a period of centuries, written by hand or by another program):
/// the chain then ends, as at `repeat_until`.
pub(crate) fn next_repetition(
    run_at: DateTime<Utc>,
    repeat: i64,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let period = TimeDelta::try_seconds(repeat)?;
    let mut next = run_at.checked_add_signed(period)?;
    if next < now {
        let behind = (now - next).num_microseconds().unwrap_or(i64::MAX);
        let period_us = period.num_microseconds().unwrap_or(i64::MAX).max(1);
        // Whole periods still missing, rounded up.
        let k = behind / period_us + i64::from(behind % period_us != 0);
        next = next.checked_add_signed(TimeDelta::microseconds(period_us.saturating_mul(k)))?;
    }
    (next.year() <= 9999).then_some(next)
}

/// What `ending` does to `task`, decided before anything is written.
enum Plan {
    /// Leaves the queue with a history row (`failed_at` and error when the
    /// task failed permanently).
    Leave {
        attempts: i32,
        failure: Option<String>,
        result: Option<String>,
        /// Whether a repeating task schedules its next occurrence.
        repeat: bool,
        /// Whether the history row is stored.
        keep: bool,
        /// An operator cancelled it: the history row says so.
        cancelled: bool,
    },
    /// Back to waiting at `run_at` (a retry, or a snooze that keeps the
    /// attempts and the last error).
    Retry {
        attempts: i32,
        error: String,
        run_at: DateTime<Utc>,
        snoozed: bool,
    },
    Release,
}

/// An error text every backend stores: PostgreSQL's `text` refuses NUL
/// characters (a body's error may carry one from its input), and an
/// outcome the database refuses would be retried forever; each becomes
/// U+FFFD.
fn storable(error: &str) -> String {
    if error.contains('\0') {
        error.replace('\0', "\u{fffd}")
    } else {
        error.to_owned()
    }
}

fn plan(task: &task::Model, ending: Ending<'_>, max_attempts: u32, now: DateTime<Utc>) -> Plan {
    let attempts = task.attempts.saturating_add(1);
    match ending {
        Ending::Succeeded { result, keep } => Plan::Leave {
            attempts,
            failure: None,
            result: result.map(str::to_owned),
            repeat: true,
            keep,
            cancelled: false,
        },
        Ending::Failed {
            error,
            permanent,
            repeat_after_failure,
            max_attempts: task_max_attempts,
            retry_in,
            keep,
        } => {
            let max_attempts = task_max_attempts.unwrap_or(max_attempts);
            let exhausted = i64::from(attempts) >= i64::from(max_attempts);
            if permanent || exhausted {
                Plan::Leave {
                    attempts,
                    failure: Some(storable(error)),
                    result: None,
                    repeat: repeat_after_failure,
                    keep,
                    cancelled: false,
                }
            } else {
                Plan::Retry {
                    attempts,
                    error: storable(error),
                    run_at: now + retry_in.unwrap_or_else(|| backoff(attempts)),
                    snoozed: false,
                }
            }
        }
        Ending::Snoozed { delay } => Plan::Retry {
            attempts: task.attempts,
            error: task.last_error.clone(),
            run_at: now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX),
            snoozed: true,
        },
        Ending::Cancelled { error } => Plan::Leave {
            attempts,
            failure: Some(error.to_owned()),
            result: None,
            repeat: false,
            keep: true,
            cancelled: true,
        },
        Ending::Released => Plan::Release,
    }
}

/// Writes the outcomes of `endings` (tasks as claimed by `runner`),
/// completed at `now`, in one transaction; returns what was written for
/// each, in order, and what it did to the tasks waiting for them. On
/// MySQL a deadlock retries the whole batch.
pub(crate) async fn record(
    db: &DatabaseConnection,
    runner: &str,
    endings: &[(&task::Model, Ending<'_>)],
    max_attempts: u32,
    now: DateTime<Utc>,
) -> Result<(Vec<Applied>, Settlement)> {
    let mut attempt = 0;
    let mut fence = Fence::Delete;
    loop {
        match record_once(db, runner, endings, max_attempts, now, fence).await {
            Err(crate::Error::Database(DbErr::Custom(why))) if why == NOT_ALL_HELD => {
                // Rolled back: some rows are no longer this runner's. Again,
                // finding out which first.
                fence = Fence::LockFirst;
            }
            Err(err)
                if attempt < MYSQL_RETRIES
                    && matches!(&err, crate::Error::Database(db_err) if super::is_lock_conflict(db_err)) =>
            {
                attempt += 1;
                tracing::debug!(
                    attempt,
                    "writing outcomes hit a lock conflict; retrying: {err}"
                );
            }
            written => return written,
        }
    }
}

async fn record_once(
    db: &DatabaseConnection,
    runner: &str,
    endings: &[(&task::Model, Ending<'_>)],
    max_attempts: u32,
    now: DateTime<Utc>,
    fence: Fence,
) -> Result<(Vec<Applied>, Settlement)> {
    let plans: Vec<Plan> = endings
        .iter()
        .map(|(task, ending)| plan(task, *ending, max_attempts, now))
        .collect();
    let txn = super::begin_runner_write(db).await?;
    let leaving: Vec<i32> = endings
        .iter()
        .zip(&plans)
        .filter(|(_, plan)| matches!(plan, Plan::Leave { .. }))
        .map(|((task, _), _)| task.id)
        .collect();
    let held = delete_held(&txn, runner, &leaving, fence).await?;

    let mut history = Vec::new();
    let mut repetitions = Vec::new();
    for ((task, _), plan) in endings.iter().zip(&plans) {
        let Plan::Leave {
            attempts,
            failure,
            result,
            repeat,
            keep,
            cancelled,
        } = plan
        else {
            continue;
        };
        if !held.contains(&task.id) {
            continue;
        }
        let mut row = history_row(task, *attempts, failure.as_deref(), now);
        row.result = Set(result.clone());
        if *cancelled {
            row.cancelled_at = Set(Some(now));
        }
        history.push((row, *keep));
        if *repeat && let Some(next) = repeats(task, now) {
            repetitions.push(repetition_row(task, next));
        }
    }
    let completed = insert_history(&txn, history).await?;
    // Tasks that wait for these: released, or cancelled, in this
    // transaction (see `super::steps`).
    let finished: Vec<Finished> = endings
        .iter()
        .zip(&plans)
        .filter_map(|((task, _), plan)| match plan {
            Plan::Leave {
                failure,
                result,
                cancelled,
                keep,
                ..
            } if held.contains(&task.id) => Some(Finished {
                id: task.id,
                ended: if *cancelled {
                    Ended::Cancelled
                } else if failure.is_some() {
                    Ended::Failed
                } else {
                    Ended::Succeeded
                },
                result: result.clone(),
                forget: crate::policy::Overrides::of(task).step && !*keep,
            }),
            _ => None,
        })
        .collect();
    let settlement = if finished.is_empty() {
        Settlement::default()
    } else {
        super::steps::settle(&txn, finished, now).await?
    };
    for chunk in repetitions.chunks(ROWS_PER_INSERT) {
        super::execute(&txn, task::Entity::insert_many(chunk.to_vec())).await?;
    }

    let mut retried = HashSet::new();
    for ((task, _), plan) in endings.iter().zip(&plans) {
        if let Plan::Retry {
            attempts,
            error,
            run_at,
            ..
        } = plan
            && reschedule_if_held(&txn, runner, task.id, *attempts, error, *run_at).await?
        {
            retried.insert(task.id);
        }
    }
    let released: Vec<i32> = endings
        .iter()
        .zip(&plans)
        .filter(|(_, plan)| matches!(plan, Plan::Release))
        .map(|((task, _), _)| task.id)
        .collect();
    super::claim::release(&txn, runner, &released).await?;
    txn.commit().await?;

    let mut completed = completed.into_iter();
    let applied = endings
        .iter()
        .zip(plans)
        .map(|((task, _), plan)| match plan {
            Plan::Leave { .. } if !held.contains(&task.id) => Applied::LeaseLost,
            Plan::Leave {
                failure, cancelled, ..
            } => {
                let row = completed
                    .next()
                    .expect("one history row per task that left");
                match failure {
                    Some(_) if cancelled => Applied::Cancelled { completed: row },
                    None => Applied::Succeeded {
                        repeats_at: repeats(task, now),
                        completed: row,
                    },
                    Some(_) => Applied::Failed { completed: row },
                }
            }
            Plan::Retry { .. } if !retried.contains(&task.id) => Applied::LeaseLost,
            Plan::Retry {
                attempts,
                error,
                run_at,
                snoozed,
            } => {
                let mut rescheduled = (*task).clone();
                rescheduled.attempts = attempts;
                rescheduled.last_error = error;
                rescheduled.run_at = run_at;
                rescheduled.locked_by = None;
                rescheduled.locked_at = None;
                if snoozed {
                    Applied::Snoozed { task: rescheduled }
                } else {
                    Applied::Retried { task: rescheduled }
                }
            }
            Plan::Release => Applied::Released,
        })
        .collect();
    Ok((applied, settlement))
}

/// The next repetition a success creates: when the task repeats, its
/// `repeat_until` (if any) is still ahead, and the next occurrence is a
/// time a database stores.
fn repeats(task: &task::Model, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if task.repeat <= 0 || task.repeat_until.is_some_and(|until| until <= now) {
        return None;
    }
    next_repetition(task.run_at, task.repeat, now)
}

/// How MySQL/MariaDB, which has no `DELETE ... RETURNING`, learns which
/// rows of a batch the runner still held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// Delete the batch's rows the runner holds: when the count is the
    /// batch's, every row was held (the usual case, one statement); when
    /// not, the transaction fails with [`NOT_ALL_HELD`] and is rolled back.
    Delete,
    /// Lock the held rows first (`SELECT ... FOR UPDATE`), then delete
    /// them: two statements, but the ids of the rows held.
    LockFirst,
}

/// The error of a [`Fence::Delete`] that deleted fewer rows than it was
/// given: [`record`] writes the batch again with [`Fence::LockFirst`].
const NOT_ALL_HELD: &str = "an outcome batch holds rows this runner no longer holds";

/// Deletes the rows of `ids` that `runner` still holds (the fence) and
/// returns their ids. PostgreSQL and SQLite say which with `RETURNING`;
/// MySQL as `fence` says.
async fn delete_held<C: ConnectionTrait>(
    conn: &C,
    runner: &str,
    ids: &[i32],
    fence: Fence,
) -> Result<HashSet<i32>> {
    let backend = conn.get_database_backend();
    let mut held = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut sql = Sql::new(backend);
        if backend == DbBackend::MySql {
            if fence == Fence::Delete {
                // The multi-table form, the one that takes an index hint.
                sql.push("DELETE background_task FROM ")
                    .tasks_by_id()
                    .push(" WHERE locked_by = ")
                    .bind(runner)
                    .push(" AND id")
                    .is_in(chunk.iter().copied());
                let deleted = conn.execute_raw(sql.build()).await?.rows_affected();
                if deleted != chunk.len() as u64 {
                    return Err(DbErr::Custom(NOT_ALL_HELD.into()).into());
                }
                held.extend(chunk.iter().copied());
                continue;
            }
            sql.push("SELECT id FROM ")
                .tasks_by_id()
                .push(" WHERE locked_by = ");
        } else {
            sql.push("DELETE FROM background_task WHERE locked_by = ");
        }
        sql.bind(runner)
            .push(" AND id")
            .is_in(chunk.iter().copied());
        if backend == DbBackend::MySql {
            sql.push(" FOR UPDATE");
        } else {
            sql.push(" RETURNING id");
        }
        let found: Vec<i32> = conn
            .query_all_raw(sql.build())
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<i32>(0))
            .collect::<std::result::Result<_, _>>()?;
        if backend == DbBackend::MySql && !found.is_empty() {
            let mut delete = Sql::new(backend);
            // The multi-table form, the one that takes an index hint.
            delete
                .push("DELETE background_task FROM ")
                .tasks_by_id()
                .push(" WHERE id")
                .is_in(found.iter().copied());
            conn.execute_raw(delete.build()).await?;
        }
        held.extend(found);
    }
    Ok(held)
}

/// Inserts the history rows marked kept, one statement per chunk, and
/// returns every row in order with its id (in row order: see
/// [`super::insert_many_ids`]); a row not kept has id 0.
async fn insert_history<C: ConnectionTrait>(
    conn: &C,
    rows: Vec<(completed_task::ActiveModel, bool)>,
) -> Result<Vec<completed_task::Model>> {
    let kept: Vec<completed_task::ActiveModel> = rows
        .iter()
        .filter(|(_, keep)| *keep)
        .map(|(row, _)| row.clone())
        .collect();
    let mut ids = Vec::with_capacity(kept.len());
    for chunk in kept.chunks(ROWS_PER_INSERT) {
        ids.extend(super::insert_many_ids(conn, chunk.to_vec()).await?);
    }
    let mut ids = ids.into_iter();
    Ok(rows
        .into_iter()
        .map(|(mut row, keep)| {
            row.id = Set(if keep {
                ids.next().unwrap_or_default()
            } else {
                0
            });
            completed_model(row)
        })
        .collect())
}

fn completed_model(row: completed_task::ActiveModel) -> completed_task::Model {
    use sea_orm::TryIntoModel;
    row.try_into_model()
        .expect("every field of a history row is set before it is inserted")
}

/// Reschedules a failed task while `runner` still holds it.
async fn reschedule_if_held<C: ConnectionTrait>(
    conn: &C,
    runner: &str,
    id: i32,
    attempts: i32,
    error: &str,
    run_at: DateTime<Utc>,
) -> Result<bool> {
    let update = task::Entity::update_many()
        .set(task::ActiveModel {
            attempts: Set(attempts),
            last_error: Set(error.to_owned()),
            run_at: Set(run_at),
            locked_by: Set(None),
            locked_at: Set(None),
            ..Default::default()
        })
        .filter(task::Column::Id.eq(id))
        .filter(task::Column::LockedBy.eq(runner));
    Ok(super::execute(conn, update).await?.rows_affected() == 1)
}

/// The seed's `create_completed_task`: every field copied, `run_at` set to
/// the completion time.
pub(crate) fn history_row(
    task: &task::Model,
    attempts: i32,
    failure: Option<&str>,
    now: DateTime<Utc>,
) -> completed_task::ActiveModel {
    completed_task::ActiveModel {
        id: NotSet,
        task_name: Set(task.task_name.clone()),
        task_params: Set(task.task_params.clone()),
        task_hash: Set(task.task_hash.clone()),
        verbose_name: Set(task.verbose_name.clone()),
        priority: Set(task.priority),
        run_at: Set(now),
        repeat: Set(task.repeat),
        repeat_until: Set(task.repeat_until),
        queue: Set(task.queue.clone()),
        attempts: Set(attempts),
        failed_at: Set(failure.map(|_| now)),
        last_error: Set(failure.map_or_else(|| task.last_error.clone(), str::to_owned)),
        locked_by: Set(task.locked_by.clone()),
        locked_at: Set(task.locked_at),
        creator_content_type_id: Set(task.creator_content_type_id),
        creator_object_id: Set(task.creator_object_id),
        result: Set(None),
        cancelled_at: Set(None),
        task_id: Set(Some(task.id)),
    }
}

/// The next occurrence of a repeating task: a fresh row, unlocked, with
/// no attempts and no error.
fn repetition_row(task: &task::Model, next: DateTime<Utc>) -> task::ActiveModel {
    task::ActiveModel {
        id: NotSet,
        task_name: Set(task.task_name.clone()),
        task_params: Set(task.task_params.clone()),
        task_hash: Set(task.task_hash.clone()),
        verbose_name: Set(task.verbose_name.clone()),
        priority: Set(task.priority),
        run_at: Set(next),
        repeat: Set(task.repeat),
        repeat_until: Set(task.repeat_until),
        queue: Set(task.queue.clone()),
        attempts: Set(0),
        failed_at: Set(None),
        last_error: Set(String::new()),
        locked_by: Set(None),
        locked_at: Set(None),
        creator_content_type_id: Set(task.creator_content_type_id),
        creator_object_id: Set(task.creator_object_id),
        // The next occurrence keeps a unique task's key: this row, which
        // held it, is deleted earlier in the same transaction.
        unique_key: Set(task.unique_key.clone()),
        // The chain keeps the overrides it was enqueued with.
        policy: Set(task.policy.clone()),
        cancel_requested_at: Set(None),
        // Every occurrence links to the trace that enqueued the chain.
        trace_context: Set(task.trace_context.clone()),
        // Every occurrence counts under the chain's key.
        limit_key: Set(task.limit_key.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_attempts_to_the_fourth_plus_five() {
        let secs = |a| backoff(a).num_seconds();
        assert_eq!(secs(1), 6);
        assert_eq!(secs(2), 21);
        assert_eq!(secs(3), 86);
        assert_eq!(secs(4), 261);
        assert_eq!(secs(5), 630);
        assert_eq!(secs(10), 10_005);
        assert_eq!(secs(24), 331_781);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    // RepetitionTestCase.test_repeat: on time, the next run is one period later.
    #[test]
    fn an_hourly_task_run_on_time_repeats_an_hour_later() {
        let old = at("2030-01-01T10:00:00Z");
        let now = at("2030-01-01T10:00:01Z");
        assert_eq!(
            next_repetition(old, 3600, now),
            Some(at("2030-01-01T11:00:00Z"))
        );
    }

    #[test]
    fn a_period_past_the_year_9999_ends_the_chain() {
        let now = at("2030-01-01T10:00:00Z");
        assert_eq!(next_repetition(now, i64::MAX, now), None);
        assert_eq!(next_repetition(now, 400 * 365 * 86_400 * 24, now), None);
        assert_eq!(next_repetition(now, 8_000 * 365 * 86_400, now), None);
        assert!(next_repetition(now, 7_000 * 365 * 86_400, now).is_some());
    }

    // RepetitionTestCase.test_repetition_in_future: a week late, missed
    // periods are skipped and the phase is kept.
    #[test]
    fn a_week_late_hourly_task_skips_to_the_next_hour_in_phase() {
        let old = at("2030-01-01T10:00:00Z");
        let now = old + TimeDelta::weeks(1) + TimeDelta::seconds(5);
        assert_eq!(
            next_repetition(old, 3600, now),
            Some(old + TimeDelta::weeks(1) + TimeDelta::hours(1))
        );
        let exactly = old + TimeDelta::weeks(1);
        assert_eq!(
            next_repetition(old, 3600, exactly),
            Some(exactly),
            "a run_at equal to now is not in the past"
        );
    }
}
