//! What a finished execution writes, as django-background-tasks writes it,
//! with one change: every write is fenced by the runner identity. A runner
//! that no longer holds the task (its lock expired and another runner took
//! it) writes nothing and is told so.
//!
//! - success: the history row (fields copied, `run_at` = completion time,
//!   attempts + 1, lock fields kept), the next repetition, and the deletion
//!   of the task row, in one transaction;
//! - retryable failure: attempts + 1, `last_error`, `run_at = now +
//!   attempts^4 + 5 s`, unlocked;
//! - permanent failure (attempts reached `MAX_ATTEMPTS`, or an invalid-task
//!   error): the history row with `failed_at`, and the deletion; the repeat
//!   chain ends.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
};

use crate::entity::{completed_task, task};
use crate::error::Result;

/// What was written for one execution.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per outcome and consumed right away"
)]
pub(crate) enum Applied {
    /// Success: the history row, and the next repetition if one was created.
    Succeeded {
        completed: completed_task::Model,
        repetition: Option<task::Model>,
    },
    /// Retryable failure: the task row as rescheduled.
    Retried { task: task::Model },
    /// Permanent failure: the history row.
    Failed { completed: completed_task::Model },
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
pub(crate) fn next_repetition(
    run_at: DateTime<Utc>,
    repeat: i64,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let period = TimeDelta::try_seconds(repeat).unwrap_or(TimeDelta::MAX);
    let mut next = run_at + period;
    if next < now {
        let behind = (now - next).num_microseconds().unwrap_or(i64::MAX);
        let period_us = period.num_microseconds().unwrap_or(i64::MAX).max(1);
        // Whole periods still missing, rounded up.
        let k = behind / period_us + i64::from(behind % period_us != 0);
        next += TimeDelta::microseconds(period_us.saturating_mul(k));
    }
    next
}

/// Writes a success of `task` (as claimed) by `runner`, completed at `now`.
pub(crate) async fn succeed(
    db: &DatabaseConnection,
    runner: &str,
    task: &task::Model,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let txn = super::begin_write(db).await?;
    if !delete_if_held(&txn, runner, task.id).await? {
        txn.rollback().await?;
        return Ok(Applied::LeaseLost);
    }
    let completed = insert_history(
        &txn,
        task,
        task.attempts + 1,
        None,
        task.last_error.clone(),
        now,
    )
    .await?;
    let repeats = task.repeat > 0 && task.repeat_until.is_none_or(|until| until > now);
    let repetition = if repeats {
        let row = task::ActiveModel {
            id: NotSet,
            task_name: Set(task.task_name.clone()),
            task_params: Set(task.task_params.clone()),
            task_hash: Set(task.task_hash.clone()),
            verbose_name: Set(task.verbose_name.clone()),
            priority: Set(task.priority),
            run_at: Set(next_repetition(task.run_at, task.repeat, now)),
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
        };
        Some(task::Entity::insert(row).exec_with_returning(&txn).await?)
    } else {
        None
    };
    txn.commit().await?;
    Ok(Applied::Succeeded {
        completed,
        repetition,
    })
}

/// Writes a failure of `task` by `runner` at `now`: a retry, or a permanent
/// failure when `permanent` or when the attempts reach `max_attempts`.
pub(crate) async fn fail(
    db: &DatabaseConnection,
    runner: &str,
    task: &task::Model,
    error: &str,
    permanent: bool,
    max_attempts: u32,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let attempts = task.attempts.saturating_add(1);
    let exhausted = i64::from(attempts) >= i64::from(max_attempts);
    if permanent || exhausted {
        let txn = super::begin_write(db).await?;
        if !delete_if_held(&txn, runner, task.id).await? {
            txn.rollback().await?;
            return Ok(Applied::LeaseLost);
        }
        let completed =
            insert_history(&txn, task, attempts, Some(now), error.to_owned(), now).await?;
        txn.commit().await?;
        return Ok(Applied::Failed { completed });
    }
    let run_at = now + backoff(attempts);
    let result = task::Entity::update_many()
        .set(task::ActiveModel {
            attempts: Set(attempts),
            last_error: Set(error.to_owned()),
            run_at: Set(run_at),
            locked_by: Set(None),
            locked_at: Set(None),
            ..Default::default()
        })
        .filter(task::Column::Id.eq(task.id))
        .filter(task::Column::LockedBy.eq(runner))
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        return Ok(Applied::LeaseLost);
    }
    let mut rescheduled = task.clone();
    rescheduled.attempts = attempts;
    rescheduled.last_error = error.to_owned();
    rescheduled.run_at = run_at;
    rescheduled.locked_by = None;
    rescheduled.locked_at = None;
    Ok(Applied::Retried { task: rescheduled })
}

/// Deletes the task row only while `runner` holds it: the fence.
async fn delete_if_held<C: sea_orm::ConnectionTrait>(
    conn: &C,
    runner: &str,
    id: i32,
) -> Result<bool> {
    let result = task::Entity::delete_many()
        .filter(task::Column::Id.eq(id))
        .filter(task::Column::LockedBy.eq(runner))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The seed's `create_completed_task`: every field copied, `run_at` set to
/// the completion time.
async fn insert_history<C: sea_orm::ConnectionTrait>(
    conn: &C,
    task: &task::Model,
    attempts: i32,
    failed_at: Option<DateTime<Utc>>,
    last_error: String,
    now: DateTime<Utc>,
) -> Result<completed_task::Model> {
    let row = completed_task::ActiveModel {
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
        failed_at: Set(failed_at),
        last_error: Set(last_error),
        locked_by: Set(task.locked_by.clone()),
        locked_at: Set(task.locked_at),
        creator_content_type_id: Set(task.creator_content_type_id),
        creator_object_id: Set(task.creator_object_id),
    };
    Ok(completed_task::Entity::insert(row)
        .exec_with_returning(conn)
        .await?)
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
        assert_eq!(next_repetition(old, 3600, now), at("2030-01-01T11:00:00Z"));
    }

    // RepetitionTestCase.test_repetition_in_future: a week late, missed
    // periods are skipped and the phase is kept.
    #[test]
    fn a_week_late_hourly_task_skips_to_the_next_hour_in_phase() {
        let old = at("2030-01-01T10:00:00Z");
        let now = old + TimeDelta::weeks(1) + TimeDelta::seconds(5);
        assert_eq!(
            next_repetition(old, 3600, now),
            old + TimeDelta::weeks(1) + TimeDelta::hours(1)
        );
        let exactly = old + TimeDelta::weeks(1);
        assert_eq!(
            next_repetition(old, 3600, exactly),
            exactly,
            "a run_at equal to now is not in the past"
        );
    }
}
