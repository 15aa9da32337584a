//! The fleet controls' SQL: paused queues (`background_task_queue_pause`),
//! drain requests (`background_task_runner.drain_requested_at`), and the
//! reads behind their checks.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::Sql;
use crate::entity::{queue_pause, runner};
use crate::error::Result;

/// Every paused queue, by name (`""` is the default queue).
pub(crate) async fn paused<C: ConnectionTrait>(conn: &C) -> Result<Vec<queue_pause::Model>> {
    let select = queue_pause::Entity::find().order_by_asc(queue_pause::Column::Queue);
    super::rows::select_all(conn, select).await
}

/// Pauses `queue` (`""`: the default queue) as of `now`; false when it
/// was paused already (its first pause time is kept).
pub(crate) async fn pause<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let existing = queue_pause::Entity::find().filter(queue_pause::Column::Queue.eq(queue));
    if super::rows::select_one(conn, existing).await?.is_some() {
        return Ok(false);
    }
    let row = queue_pause::ActiveModel {
        queue: sea_orm::ActiveValue::Set(queue.to_owned()),
        paused_at: sea_orm::ActiveValue::Set(now),
    };
    // Two operators pausing at once: the second insert changes nothing.
    let insert = queue_pause::Entity::insert(row).on_conflict(
        OnConflict::column(queue_pause::Column::Queue)
            .update_column(queue_pause::Column::Queue)
            .to_owned(),
    );
    super::execute(conn, insert).await?;
    Ok(true)
}

/// Resumes `queue`; false when it was not paused.
pub(crate) async fn resume<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    let delete = queue_pause::Entity::delete_many().filter(queue_pause::Column::Queue.eq(queue));
    Ok(super::execute(conn, delete).await?.rows_affected() > 0)
}

/// Whether anything names `queue` (`""`: the default queue, always
/// known): a task, a history row, a cron schedule, a global limit, a
/// pause, or a runner started with `--queue`. One indexed look per table.
pub(crate) async fn queue_is_known<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    if queue.is_empty() {
        return Ok(true);
    }
    let backend = conn.get_database_backend();
    for table in [
        "background_task",
        "background_task_completedtask",
        "background_task_schedule",
        "background_task_queue_limit",
        "background_task_queue_pause",
        "background_task_runner",
    ] {
        let mut look = Sql::new(backend);
        look.push("SELECT 1 FROM ")
            .push(table)
            .push(" WHERE queue = ")
            .bind(queue)
            .push(" LIMIT 1");
        if conn.query_one_raw(look.build()).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Asks runner `runner_id` to drain as of `now` (a request already made
/// keeps its time). `None` when no such runner is registered; else whether
/// this call made the request.
pub(crate) async fn request_drain<C: ConnectionTrait>(
    conn: &C,
    runner_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<bool>> {
    let update = runner::Entity::update_many()
        .col_expr(runner::Column::DrainRequestedAt, Expr::value(now))
        .filter(runner::Column::RunnerId.eq(runner_id))
        .filter(runner::Column::DrainRequestedAt.is_null());
    if super::execute(conn, update).await?.rows_affected() > 0 {
        return Ok(Some(true));
    }
    let known = runner::Entity::find().filter(runner::Column::RunnerId.eq(runner_id));
    Ok(super::rows::select_one(conn, known).await?.map(|_| false))
}

/// Whether runner `runner_id` was asked to drain (`None`: its row is gone).
pub(crate) async fn drain_requested<C: ConnectionTrait>(
    conn: &C,
    runner_id: &str,
) -> Result<Option<bool>> {
    let row = runner::Entity::find().filter(runner::Column::RunnerId.eq(runner_id));
    Ok(super::rows::select_one(conn, row)
        .await?
        .map(|row| row.drain_requested_at.is_some()))
}
