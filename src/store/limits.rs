//! Global per-queue limits: concurrency (`background_task_queue_limit`)
//! and rate (`background_task_rate_limit`, counted from the ledger
//! `background_task_start`), and the room a claim has under them.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
};

use super::Sql;
use crate::entity::{queue_limit, rate_limit};
use crate::error::Result;

/// What a claim of one queue may take under its limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Room {
    /// How many more of its tasks may start now; `None` when the queue has
    /// no limit.
    pub room: Option<usize>,
    /// The queue has a rate limit: the claim records its starts
    /// ([`record_starts`]).
    pub rate_limited: bool,
}

/// How many more tasks of `queue` may start at `now` under its global
/// concurrency limit and its rate limit. Run inside the claim's
/// transaction: on PostgreSQL and MySQL it locks the queue's limit rows
/// until the claim commits, so concurrent claims of the queue take turns,
/// and each counts the tasks the previous one claimed and the starts it
/// recorded (SQLite's `BEGIN IMMEDIATE` already lets one writer in at a
/// time).
pub(crate) async fn room<C: ConnectionTrait>(
    txn: &C,
    queue: &str,
    now: DateTime<Utc>,
) -> Result<Room, DbErr> {
    let concurrency = concurrency_room(txn, queue).await?;
    let rate = rate_room(txn, queue, now).await?;
    let room = match (concurrency, rate) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(Room {
        room,
        rate_limited: rate.is_some(),
    })
}

async fn concurrency_room<C: ConnectionTrait>(
    txn: &C,
    queue: &str,
) -> Result<Option<usize>, DbErr> {
    let backend = txn.get_database_backend();
    let mut limit = Sql::new(backend);
    limit
        .push("SELECT max_running FROM background_task_queue_limit WHERE queue = ")
        .bind(queue);
    limit.for_update();
    let Some(row) = txn.query_one_raw(limit.build()).await? else {
        return Ok(None);
    };
    let max_running = row.try_get_by_index::<i32>(0)?;
    let running = running(txn, queue).await?;
    Ok(Some(
        usize::try_from(i64::from(max_running).saturating_sub(running).max(0)).unwrap_or(0),
    ))
}

/// Starts left in the window `(now - period, now]` of `queue`'s rate
/// limit, counted from the ledger; `None` without a rate limit. A claim
/// at `now` that takes at most this many keeps every window of the period
/// at `max_starts` or fewer: the last claim in any window counted every
/// start of the window before it.
async fn rate_room<C: ConnectionTrait>(
    txn: &C,
    queue: &str,
    now: DateTime<Utc>,
) -> Result<Option<usize>, DbErr> {
    let backend = txn.get_database_backend();
    let mut limit = Sql::new(backend);
    limit
        .push("SELECT max_starts, period_ms FROM background_task_rate_limit WHERE queue = ")
        .bind(queue);
    limit.for_update();
    let Some(row) = txn.query_one_raw(limit.build()).await? else {
        return Ok(None);
    };
    let max_starts = row.try_get_by_index::<i32>(0)?;
    let period_ms = row.try_get_by_index::<i64>(1)?;
    let since = window_start(now, period_ms);
    let mut forget = Sql::new(backend);
    forget
        .push("DELETE FROM background_task_start WHERE queue = ")
        .bind(queue)
        .push(" AND started_at <= ")
        .bind(since);
    txn.execute_raw(forget.build()).await?;
    let started = starts_since(txn, queue, since).await?;
    Ok(Some(
        usize::try_from(i64::from(max_starts).saturating_sub(started).max(0)).unwrap_or(0),
    ))
}

/// Starts of `queue` recorded after `since`.
async fn starts_since<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    since: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let backend = conn.get_database_backend();
    // SUM of an integer column is a bigint on PostgreSQL, an integer on
    // SQLite and a DECIMAL on MySQL, which is cast back.
    let sum = match backend {
        DbBackend::MySql => "SELECT CAST(COALESCE(SUM(starts), 0) AS SIGNED)",
        _ => "SELECT COALESCE(SUM(starts), 0)",
    };
    let mut started = Sql::new(backend);
    started
        .push(sum)
        .push(" FROM background_task_start WHERE queue = ")
        .bind(queue)
        .push(" AND started_at > ")
        .bind(since);
    match conn.query_one_raw(started.build()).await? {
        Some(row) => row.try_get_by_index::<i64>(0),
        None => Ok(0),
    }
}

/// The start of the window that ends at `now`.
pub(super) fn window_start(now: DateTime<Utc>, period_ms: i64) -> DateTime<Utc> {
    now.checked_sub_signed(chrono::TimeDelta::milliseconds(period_ms))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Writes `starts` starts of `queue` at `now` into the ledger.
pub(crate) async fn record_starts<C: ConnectionTrait>(
    txn: &C,
    queue: &str,
    starts: usize,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let mut insert = Sql::new(txn.get_database_backend());
    insert
        .push("INSERT INTO background_task_start (queue, started_at, starts) VALUES (")
        .bind(queue)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(i32::try_from(starts).unwrap_or(i32::MAX))
        .push(")");
    txn.execute_raw(insert.build()).await?;
    Ok(())
}

/// Sets (or replaces) the global limit of `queue`.
pub(crate) async fn set<C: ConnectionTrait>(conn: &C, queue: &str, max_running: i32) -> Result<()> {
    let row = queue_limit::ActiveModel {
        queue: sea_orm::ActiveValue::Set(queue.to_owned()),
        max_running: sea_orm::ActiveValue::Set(max_running),
    };
    let insert = queue_limit::Entity::insert(row).on_conflict(
        OnConflict::column(queue_limit::Column::Queue)
            .update_column(queue_limit::Column::MaxRunning)
            .to_owned(),
    );
    super::execute(conn, insert).await?;
    Ok(())
}

/// Removes the global limit of `queue`; false when it had none.
pub(crate) async fn remove<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    let deleted = queue_limit::Entity::delete_many()
        .filter(queue_limit::Column::Queue.eq(queue))
        .exec(conn)
        .await?;
    Ok(deleted.rows_affected > 0)
}

/// Every global limit, by queue name.
pub(crate) async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<queue_limit::Model>> {
    let select = queue_limit::Entity::find().order_by_asc(queue_limit::Column::Queue);
    super::rows::select_all(conn, select).await
}

/// Tasks of `queue` a runner holds now, across runners: a concurrency
/// limit's current use (through the `locked_by` index).
pub(crate) async fn running<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<i64, DbErr> {
    let mut count = Sql::new(conn.get_database_backend());
    count
        .push("SELECT COUNT(*) FROM background_task WHERE locked_by IS NOT NULL AND queue = ")
        .bind(queue.to_owned());
    let row = conn.query_one_raw(count.build()).await?;
    Ok(match row {
        Some(row) => row.try_get_by_index::<i64>(0)?,
        None => 0,
    })
}

/// Sets (or replaces) the rate limit of `queue`.
pub(crate) async fn set_rate<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    max_starts: i32,
    period_ms: i64,
) -> Result<()> {
    let row = rate_limit::ActiveModel {
        queue: sea_orm::ActiveValue::Set(queue.to_owned()),
        max_starts: sea_orm::ActiveValue::Set(max_starts),
        period_ms: sea_orm::ActiveValue::Set(period_ms),
    };
    let insert = rate_limit::Entity::insert(row).on_conflict(
        OnConflict::column(rate_limit::Column::Queue)
            .update_columns([rate_limit::Column::MaxStarts, rate_limit::Column::PeriodMs])
            .to_owned(),
    );
    super::execute(conn, insert).await?;
    Ok(())
}

/// Removes the rate limit of `queue` and its ledger; false when it had
/// none.
pub(crate) async fn remove_rate<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    let deleted = rate_limit::Entity::delete_many()
        .filter(rate_limit::Column::Queue.eq(queue))
        .exec(conn)
        .await?;
    let mut forget = Sql::new(conn.get_database_backend());
    forget
        .push("DELETE FROM background_task_start WHERE queue = ")
        .bind(queue);
    conn.execute_raw(forget.build()).await?;
    Ok(deleted.rows_affected > 0)
}

/// Every rate limit, by queue name, with the starts of its current window
/// (the window that ends at `now`).
pub(crate) async fn list_rates<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
) -> Result<Vec<(rate_limit::Model, i64)>> {
    let select = rate_limit::Entity::find().order_by_asc(rate_limit::Column::Queue);
    let limits = super::rows::select_all(conn, select).await?;
    let mut listed = Vec::with_capacity(limits.len());
    for limit in limits {
        let used = starts_since(conn, &limit.queue, window_start(now, limit.period_ms)).await?;
        listed.push((limit, used));
    }
    Ok(listed)
}

/// Queues with a rate limit.
pub(crate) async fn rate_limited<C: ConnectionTrait>(conn: &C) -> Result<Vec<String>> {
    let select = rate_limit::Entity::find().order_by_asc(rate_limit::Column::Queue);
    Ok(super::rows::select_all(conn, select)
        .await?
        .into_iter()
        .map(|limit| limit.queue)
        .collect())
}
