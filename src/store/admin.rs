//! Statements behind the operator's views and bulk actions (the seed's
//! admin and the dashboard): search, priority +1/-1, delete, run now,
//! retry a failed task, cancel a task (waiting or running), due counts per
//! task name.
//! Id lists are cut into chunks so no statement exceeds a backend's bound
//! parameters (the seed's admin failed with "too many SQL variables").

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, TransactionSession, TransactionTrait,
};

use crate::entity::{completed_task, task};
use crate::error::Result;
use crate::store::{Sql, begin_write};

/// Ids per statement in bulk actions.
const IDS_PER_STATEMENT: usize = 1_000;

/// `task_name` or `task_params` contains `text`, case-insensitively (see
/// [`case_insensitive_like`](super::inspect::case_insensitive_like)).
fn search_condition(backend: DbBackend, text: &str) -> Condition {
    let pattern = super::inspect::contains_pattern(text);
    // sea-query's placeholder in custom SQL: `$1` on PostgreSQL, `?` elsewhere.
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let contains = |column: &str| {
        let (before, after) = super::inspect::case_insensitive_like(backend, column);
        Expr::cust_with_values(format!("{before}{placeholder}{after}"), [pattern.clone()])
    };
    Condition::any()
        .add(contains("task_name"))
        .add(contains("task_params"))
}

/// Waiting and running tasks whose name or params contain `text`, in claim
/// order (highest priority, then oldest), at most `limit`.
pub(crate) async fn search_tasks<C: ConnectionTrait>(
    conn: &C,
    text: &str,
    limit: u64,
) -> Result<Vec<task::Model>> {
    let select = task::Entity::find()
        .filter(search_condition(conn.get_database_backend(), text))
        .order_by_desc(task::Column::Priority)
        .order_by_asc(task::Column::RunAt)
        .order_by_asc(task::Column::Id)
        .limit(limit);
    let statement = super::rows::statement(conn, select);
    Ok(super::rows::lenient::<task::Entity, C>(conn, statement)
        .await?
        .0)
}

/// History rows whose name or params contain `text`, newest first.
pub(crate) async fn search_completed<C: ConnectionTrait>(
    conn: &C,
    text: &str,
    limit: u64,
) -> Result<Vec<completed_task::Model>> {
    let select = completed_task::Entity::find()
        .filter(search_condition(conn.get_database_backend(), text))
        .order_by_desc(completed_task::Column::RunAt)
        .limit(limit);
    let statement = super::rows::statement(conn, select);
    Ok(
        super::rows::lenient::<completed_task::Entity, C>(conn, statement)
            .await?
            .0,
    )
}

/// Adds `delta` to the priority of the tasks `ids`; returns rows changed.
pub(crate) async fn shift_priority<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
    delta: i32,
) -> Result<u64> {
    let mut changed = 0;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        changed += task::Entity::update_many()
            .col_expr(
                task::Column::Priority,
                Expr::col(task::Column::Priority).add(delta),
            )
            .filter(task::Column::Id.is_in(chunk.iter().copied()))
            .exec(conn)
            .await?
            .rows_affected;
    }
    Ok(changed)
}

/// Deletes the tasks `ids` that no runner holds; returns rows deleted.
/// The `locked_by IS NULL` in the statement itself keeps a task claimed
/// a moment before from being deleted under its runner. A deleted step's
/// own rows go with it; the steps that waited for a deleted task are
/// settled by the runners' sweep
/// ([`super::steps::settle_vanished`]).
pub(crate) async fn delete_tasks<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    let mut deleted = 0;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        deleted += task::Entity::delete_many()
            .filter(task::Column::Id.is_in(chunk.iter().copied()))
            .filter(task::Column::LockedBy.is_null())
            .exec(conn)
            .await?
            .rows_affected;
        super::steps::forget_deleted(conn, chunk).await?;
    }
    Ok(deleted)
}

/// Which of the tasks `ids` a runner holds (`locked_by` set), sorted.
pub(crate) async fn running_among<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<Vec<i32>> {
    let mut running = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let found: Vec<i32> = task::Entity::find()
            .select_only()
            .column(task::Column::Id)
            .filter(task::Column::Id.is_in(chunk.iter().copied()))
            .filter(task::Column::LockedBy.is_not_null())
            .into_tuple()
            .all(conn)
            .await?;
        running.extend(found);
    }
    running.sort_unstable();
    Ok(running)
}

/// Deletes the history rows `ids`; returns rows deleted.
pub(crate) async fn delete_completed<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    // The workflow steps these rows record go with them.
    super::workflows::forget_with_history(conn, ids).await?;
    let mut deleted = 0;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        deleted += completed_task::Entity::delete_many()
            .filter(completed_task::Column::Id.is_in(chunk.iter().copied()))
            .exec(conn)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

/// Due, unlocked, not failed tasks per name.
pub(crate) async fn due_by_name<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    let select = task::Entity::find()
        .select_only()
        .column(task::Column::TaskName)
        .column_as(task::Column::Id.count(), "count")
        .filter(task::Column::LockedBy.is_null())
        .filter(task::Column::FailedAt.is_null())
        .filter(task::Column::RunAt.lte(now))
        .group_by(task::Column::TaskName)
        .order_by_asc(task::Column::TaskName);
    let statement = super::portable(select.build(conn.get_database_backend()));
    let mut due = Vec::new();
    for row in conn.query_all_raw(statement).await? {
        due.push((
            row.try_get::<String>("", "task_name")?,
            row.try_get::<i64>("", "count")?,
        ));
    }
    Ok(due)
}

/// Makes the waiting tasks `ids` due at `now` (the dashboard's "run now");
/// running tasks are left alone. Returns rows changed.
pub(crate) async fn run_now<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut changed = 0;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let update = task::Entity::update_many()
            .col_expr(task::Column::RunAt, Expr::value(now))
            // A set-aside row goes back in the queue.
            .col_expr(task::Column::FailedAt, Expr::value(None::<DateTime<Utc>>))
            .filter(task::Column::Id.is_in(chunk.iter().copied()))
            .filter(task::Column::LockedBy.is_null())
            // A step waiting for others stays held: its release is theirs.
            .filter(super::steps::not_held());
        changed += super::execute(conn, update).await?.rows_affected();
    }
    Ok(changed)
}

/// Puts the set-aside rows among `ids` back in the queue, due at `now`
/// (`failed_at` cleared; attempts and the last error kept, so the reason
/// stays readable). Returns the ids put back.
pub(crate) async fn put_back<C>(conn: &C, ids: &[i32], now: DateTime<Utc>) -> Result<Vec<i32>>
where
    C: TransactionTrait + ConnectionTrait,
    C::Transaction: ConnectionTrait,
{
    let set_aside = || {
        Condition::all()
            .add(task::Column::FailedAt.is_not_null())
            .add(task::Column::LockedBy.is_null())
    };
    let mut put_back = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let txn = begin_write(conn).await?;
        let found: Vec<i32> = locked_rows(
            &txn,
            task::Entity::find()
                .filter(task::Column::Id.is_in(chunk.iter().copied()))
                .filter(set_aside()),
        )
        .await?
        .into_iter()
        .map(|row| row.id)
        .collect();
        if !found.is_empty() {
            let update = task::Entity::update_many()
                .col_expr(task::Column::RunAt, Expr::value(now))
                .col_expr(task::Column::FailedAt, Expr::value(None::<DateTime<Utc>>))
                .filter(task::Column::Id.is_in(found.iter().copied()))
                .filter(set_aside());
            super::execute(&txn, update).await?;
        }
        txn.commit().await?;
        put_back.extend(found);
    }
    Ok(put_back)
}

/// Rows `ids` of `E`, locked against concurrent writers until the
/// transaction ends (`FOR UPDATE`; SQLite's write transaction already
/// excludes every other writer).
async fn locked_rows<C, E>(txn: &C, select: sea_orm::Select<E>) -> Result<Vec<E::Model>>
where
    C: ConnectionTrait,
    E: EntityTrait,
{
    let select = if txn.get_database_backend() == DbBackend::Sqlite {
        select
    } else {
        select.lock_exclusive()
    };
    super::rows::select_all(txn, select).await
}

/// Puts the failed history rows `ids` back in the queue: each becomes a
/// task due at `now` with its attempts reset and its last error kept (so
/// the admin's "has error" still shows why it was retried), and the
/// history row is removed. One transaction; rows that are not failed
/// history rows are skipped. Returns the new tasks.
pub(crate) async fn retry_failed<C: TransactionTrait + ConnectionTrait>(
    conn: &C,
    ids: &[i32],
    now: DateTime<Utc>,
) -> Result<Vec<task::Model>>
where
    C::Transaction: ConnectionTrait,
{
    let txn = begin_write(conn).await?;
    let mut retried = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let failed = locked_rows(
            &txn,
            completed_task::Entity::find()
                .filter(completed_task::Column::Id.is_in(chunk.iter().copied()))
                .filter(completed_task::Column::FailedAt.is_not_null())
                .order_by_asc(completed_task::Column::Id),
        )
        .await?;
        if failed.is_empty() {
            continue;
        }
        completed_task::Entity::delete_many()
            .filter(completed_task::Column::Id.is_in(failed.iter().map(|row| row.id)))
            .exec(&txn)
            .await?;
        for row in failed {
            let task = super::insert_returning(
                &txn,
                task::ActiveModel {
                    id: NotSet,
                    task_name: Set(row.task_name),
                    task_params: Set(row.task_params),
                    task_hash: Set(row.task_hash),
                    verbose_name: Set(row.verbose_name),
                    priority: Set(row.priority),
                    run_at: Set(now),
                    repeat: Set(row.repeat),
                    repeat_until: Set(row.repeat_until),
                    queue: Set(row.queue),
                    attempts: Set(0),
                    failed_at: Set(None),
                    last_error: Set(row.last_error),
                    locked_by: Set(None),
                    locked_at: Set(None),
                    creator_content_type_id: Set(row.creator_content_type_id),
                    creator_object_id: Set(row.creator_object_id),
                    unique_key: Set(None),
                    policy: Set(None),
                    cancel_requested_at: Set(None),
                    trace_context: Set(None),
                    limit_key: Set(None),
                },
            )
            .await?;
            retried.push(task);
        }
    }
    txn.commit().await?;
    Ok(retried)
}

/// Cancels the tasks `ids`. A waiting one moves to the history at once, as
/// failed at `now` with `reason` as its last error and `cancelled_at` set,
/// so the cancellation stays on record (and can be retried). A running one
/// gets `cancel_requested_at`: its runner signals the body and stops it
/// after its grace period, then writes the same kind of history row. One
/// transaction; returns the history rows written and the ids of the
/// running tasks asked to stop.
pub(crate) async fn cancel<C: TransactionTrait + ConnectionTrait>(
    conn: &C,
    ids: &[i32],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(Vec<completed_task::Model>, Vec<i32>)>
where
    C::Transaction: ConnectionTrait,
{
    let txn = begin_write(conn).await?;
    let mut cancelled = Vec::new();
    let mut stopping = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        // Locked first, so a runner cannot claim a row between reading and
        // deleting it (a claim skips or waits for locked rows).
        let rows = locked_rows(
            &txn,
            task::Entity::find()
                .filter(task::Column::Id.is_in(chunk.iter().copied()))
                .order_by_asc(task::Column::Id),
        )
        .await?;
        let (running, waiting): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|row| row.locked_by.is_some());
        let running: Vec<i32> = running
            .into_iter()
            .filter(|row| row.cancel_requested_at.is_none())
            .map(|row| row.id)
            .collect();
        if !running.is_empty() {
            let mut request = Sql::new(txn.get_database_backend());
            request
                .push("UPDATE background_task SET cancel_requested_at = ")
                .bind(now)
                .push(" WHERE id")
                .is_in(running.iter().copied());
            txn.execute_raw(request.build()).await?;
            stopping.extend(running);
        }
        if waiting.is_empty() {
            continue;
        }
        task::Entity::delete_many()
            .filter(task::Column::Id.is_in(waiting.iter().map(|row| row.id)))
            .filter(task::Column::LockedBy.is_null())
            .exec(&txn)
            .await?;
        // A held step cancelled by hand is settled: the dependencies it
        // waited for no longer release it when they finish.
        let ids: Vec<i32> = waiting.iter().map(|row| row.id).collect();
        super::steps::mark_settled(&txn, &ids, now).await?;
        let mut finished = Vec::with_capacity(waiting.len());
        for row in waiting {
            // The row a permanent failure writes: the task's fields, run_at
            // and failed_at now, the reason as its error; marked cancelled.
            let mut history = super::outcome::history_row(&row, row.attempts, Some(reason), now);
            history.cancelled_at = Set(Some(now));
            let completed = super::insert_returning(&txn, history).await?;
            cancelled.push(completed);
            finished.push(super::steps::Finished {
                id: row.id,
                ended: super::steps::Ended::Cancelled,
                result: None,
                // Its history row says it was cancelled.
                forget: false,
            });
        }
        // The tasks waiting for them are cancelled too (or released, when
        // they run anyway).
        let settlement = super::steps::settle(&txn, finished, now).await?;
        cancelled.extend(settlement.cancelled);
    }
    txn.commit().await?;
    Ok((cancelled, stopping))
}

/// Of the tasks `ids` that `runner` holds, those an operator asked to
/// cancel (see [`cancel`]).
pub(crate) async fn cancel_requested<C: ConnectionTrait>(
    conn: &C,
    runner: &str,
    ids: &[i32],
) -> Result<Vec<i32>> {
    let mut requested = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut sql = Sql::new(conn.get_database_backend());
        sql.push(
            "SELECT id FROM background_task WHERE cancel_requested_at IS NOT NULL AND locked_by = ",
        )
        .bind(runner)
        .push(" AND id")
        .is_in(chunk.iter().copied());
        for row in conn.query_all_raw(sql.build()).await? {
            requested.push(row.try_get_by_index::<i32>(0)?);
        }
    }
    Ok(requested)
}
