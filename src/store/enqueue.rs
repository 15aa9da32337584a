//! The statements behind enqueueing.
//!
//! All of them go through SeaORM's query builder, which writes the right
//! dialect for SQLite, PostgreSQL and MySQL, and run through this crate's
//! [`portable`](super::portable) step (timestamps in Django's text on
//! SQLite); they take any connection or transaction, so the caller decides
//! what commits together.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use sea_orm::sea_query::OnConflict;
use sea_orm::{DbBackend, QueryTrait};

use super::{execute, insert_returning};

use crate::entity::task;
use crate::error::Result;

/// Rows per INSERT statement in bulk enqueue on SQLite: 17 values a row
/// stays well under its 32,766 bound values.
pub(crate) const INSERT_CHUNK: usize = 1_000;

/// Rows per INSERT statement in bulk enqueue on `backend`. On the network
/// backends every statement is a round trip (and, over TLS, a wait for the
/// server's delayed acknowledgement: sqlx 0.9 does not set `TCP_NODELAY`),
/// so they take more: 10,000 on PostgreSQL (one array parameter per
/// column, see [`super::pg_array`]), 3,000 on MySQL (57,000 bound values, under its
/// 65,535); [`INSERT_CHUNK`] on SQLite.
pub(crate) fn insert_chunk(backend: DbBackend) -> usize {
    match backend {
        DbBackend::Postgres => 10_000,
        DbBackend::MySql => 3_000,
        _ => INSERT_CHUNK,
    }
}

/// The seed's `unlocked(now)`: not locked, or locked longer ago than
/// `MAX_RUN_TIME` (strictly).
pub(crate) fn unlocked(now: DateTime<Utc>, max_run_time: TimeDelta) -> Condition {
    Condition::any()
        .add(task::Column::LockedBy.is_null())
        .add(task::Column::LockedAt.lt(now - max_run_time))
}

/// `remove_existing_tasks`: deletes waiting rows with this hash in every
/// queue. Rows that were ever locked (`locked_at` set, even if expired) are
/// kept, as in the seed; a failed-and-retried row has `locked_at` cleared and
/// is removed.
pub(crate) async fn delete_waiting_with_hash<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
) -> Result<u64> {
    let delete = task::Entity::delete_many()
        .filter(task::Column::TaskHash.eq(hash))
        .filter(task::Column::LockedAt.is_null())
        .filter(super::steps::not_held());
    Ok(execute(conn, delete).await?.rows_affected())
}

/// Bulk `remove_existing_tasks` over several hashes, in one statement.
pub(crate) async fn delete_waiting_with_hashes<C: ConnectionTrait>(
    conn: &C,
    hashes: &[String],
) -> Result<u64> {
    let delete = task::Entity::delete_many()
        .filter(task::Column::TaskHash.is_in(hashes.iter().map(String::as_str)))
        .filter(task::Column::LockedAt.is_null())
        .filter(super::steps::not_held());
    Ok(execute(conn, delete).await?.rows_affected())
}

/// Filter of RESCHEDULE_EXISTING and CHECK_EXISTING: unlocked rows with the
/// hash, in `queue` when one is given (no queue given: any queue).
fn existing(
    hash: &str,
    queue: Option<&str>,
    now: DateTime<Utc>,
    max_run_time: TimeDelta,
) -> Condition {
    let mut condition = Condition::all()
        .add(task::Column::TaskHash.eq(hash))
        .add(unlocked(now, max_run_time))
        .add(super::steps::not_held());
    if let Some(queue) = queue {
        condition = condition.add(task::Column::Queue.eq(queue));
    }
    condition
}

/// RESCHEDULE_EXISTING: moves existing rows to the new run_at and priority
/// (nothing else changes) and returns how many moved.
pub(crate) async fn reschedule_existing<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
    queue: Option<&str>,
    run_at: DateTime<Utc>,
    priority: i32,
    now: DateTime<Utc>,
    max_run_time: TimeDelta,
) -> Result<u64> {
    let update = task::Entity::update_many()
        .col_expr(task::Column::RunAt, Expr::value(run_at))
        .col_expr(task::Column::Priority, Expr::value(priority))
        .filter(existing(hash, queue, now, max_run_time));
    Ok(execute(conn, update).await?.rows_affected())
}

/// CHECK_EXISTING: the id of one existing row, if any.
pub(crate) async fn find_existing<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
    queue: Option<&str>,
    now: DateTime<Utc>,
    max_run_time: TimeDelta,
) -> Result<Option<i32>> {
    let select = task::Entity::find().filter(existing(hash, queue, now, max_run_time));
    first_id(conn, select).await
}

/// The id of the first row `select` finds. Only the id is read, so a row
/// with an undecodable column elsewhere still answers.
async fn first_id<C: ConnectionTrait>(
    conn: &C,
    select: sea_orm::Select<task::Entity>,
) -> Result<Option<i32>> {
    let select = select.select_only().column(task::Column::Id).limit(1);
    let statement = super::portable(select.build(conn.get_database_backend()));
    Ok(conn
        .query_one_raw(statement)
        .await?
        .map(|row| row.try_get::<i32>("", "id"))
        .transpose()?)
}

/// Inserts one row and returns it as stored.
pub(crate) async fn insert<C: ConnectionTrait>(conn: &C, row: task::Model) -> Result<task::Model> {
    check_fits(conn.get_database_backend(), &row)?;
    insert_returning(conn, new_row(row)).await
}

/// Refuses values the backend's column cannot hold, before the statement
/// runs: an object id past 2147483647 fits Django's `PositiveIntegerField`
/// on MySQL (`integer unsigned`) but not on PostgreSQL or SQLite.
pub(crate) fn check_fits(backend: DbBackend, row: &task::Model) -> Result<()> {
    if let Some(object_id) = row.creator_object_id
        && backend != DbBackend::MySql
        && i32::try_from(object_id).is_err()
    {
        return Err(crate::error::Error::invalid(
            "creator",
            format!(
                "object id {object_id} is past 2147483647, the largest `creator_object_id` \
                 (Django's PositiveIntegerField) holds on PostgreSQL and SQLite"
            ),
        ));
    }
    Ok(())
}

/// Inserts a unique task's row: the row as stored, or `None` when a live
/// row already holds its key. The unique index decides, not a look-up
/// first, so concurrent inserts from any number of connections leave one
/// row. PostgreSQL and SQLite skip the conflicting row (`ON CONFLICT DO
/// NOTHING`, which keeps the caller's transaction usable); MySQL refuses
/// it with a duplicate-key error, which leaves its transaction usable.
pub(crate) async fn insert_unique<C: ConnectionTrait>(
    conn: &C,
    row: task::Model,
) -> Result<Option<task::Model>> {
    let backend = conn.get_database_backend();
    check_fits(backend, &row)?;
    if backend == DbBackend::MySql {
        return match insert_returning(conn, new_row(row)).await {
            Ok(task) => Ok(Some(task)),
            Err(crate::error::Error::Database(err)) if super::is_duplicate_key(&err) => Ok(None),
            Err(err) => Err(err),
        };
    }
    let mut insert = task::Entity::insert(new_row(row)).on_conflict(skip_taken_keys());
    QueryTrait::query(&mut insert).returning_all();
    let statement = super::portable(insert.build(backend));
    super::rows::one::<task::Entity, C>(conn, statement).await
}

/// The id of the live row holding unique `key`, if any.
pub(crate) async fn id_with_unique_key<C: ConnectionTrait>(
    conn: &C,
    key: &str,
) -> Result<Option<i32>> {
    first_id(
        conn,
        task::Entity::find().filter(task::Column::UniqueKey.eq(key)),
    )
    .await
}

/// `ON CONFLICT (unique_key) DO NOTHING`.
fn skip_taken_keys() -> OnConflict {
    OnConflict::column(task::Column::UniqueKey)
        .do_nothing()
        .to_owned()
}

/// Inserts rows with one statement per [`insert_chunk`] rows; returns the count.
pub(crate) async fn insert_many<C: ConnectionTrait>(
    conn: &C,
    rows: Vec<task::Model>,
) -> Result<u64> {
    let backend = conn.get_database_backend();
    for row in &rows {
        check_fits(backend, row)?;
    }
    let unique = rows.iter().any(|row| row.unique_key.is_some());
    if unique && backend == DbBackend::MySql {
        // MySQL has no per-row "skip the duplicate" for a multi-row insert
        // that keeps other errors errors: unique rows go one by one.
        let mut inserted = 0;
        for row in rows {
            if row.unique_key.is_none() {
                insert(conn, row).await?;
                inserted += 1;
            } else if insert_unique(conn, row).await?.is_some() {
                inserted += 1;
            }
        }
        return Ok(inserted);
    }
    let mut inserted = 0;
    if backend == DbBackend::Postgres {
        // One array per column (see `super::pg_array`): one statement text
        // whatever the chunk's size, no value bound per row.
        let tail = if unique {
            " ON CONFLICT (unique_key) DO NOTHING"
        } else {
            ""
        };
        let rows: Vec<task::ActiveModel> = rows.into_iter().map(new_row).collect();
        for chunk in rows.chunks(insert_chunk(backend)) {
            let insert = super::pg_array::insert(chunk, tail)?;
            inserted += conn.execute_raw(insert.build()).await?.rows_affected();
        }
        return Ok(inserted);
    }
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<task::ActiveModel> = rows
            .by_ref()
            .take(insert_chunk(backend))
            .map(new_row)
            .collect();
        let mut insert = task::Entity::insert_many(chunk);
        if unique {
            // Rows whose key a live row (or an earlier row of this batch)
            // holds are skipped; the count says how many went in.
            insert = insert.on_conflict(skip_taken_keys());
        }
        inserted += execute(conn, insert).await?.rows_affected();
    }
    Ok(inserted)
}

/// Every column but the id, which the database assigns.
fn new_row(row: task::Model) -> task::ActiveModel {
    task::ActiveModel {
        id: NotSet,
        task_name: Set(row.task_name),
        task_params: Set(row.task_params),
        task_hash: Set(row.task_hash),
        verbose_name: Set(row.verbose_name),
        priority: Set(row.priority),
        run_at: Set(row.run_at),
        repeat: Set(row.repeat),
        repeat_until: Set(row.repeat_until),
        queue: Set(row.queue),
        attempts: Set(row.attempts),
        failed_at: Set(row.failed_at),
        last_error: Set(row.last_error),
        locked_by: Set(row.locked_by),
        locked_at: Set(row.locked_at),
        creator_content_type_id: Set(row.creator_content_type_id),
        creator_object_id: Set(row.creator_object_id),
        unique_key: Set(row.unique_key),
        policy: Set(row.policy),
        cancel_requested_at: Set(None),
        trace_context: Set(row.trace_context),
        limit_key: Set(row.limit_key),
    }
}
