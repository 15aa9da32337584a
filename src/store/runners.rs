//! The runner registry and the heartbeat: a runner's row in
//! `background_task_runner`, and the renewal of the locks it holds.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
};

use super::Sql;
use crate::entity::runner;
use crate::error::Result;

/// Inserts (or replaces) the row of a starting runner.
pub(crate) async fn register<C: ConnectionTrait>(conn: &C, row: runner::Model) -> Result<()> {
    let model: runner::ActiveModel = row.into();
    let insert = runner::Entity::insert(model).on_conflict(
        OnConflict::column(runner::Column::RunnerId)
            .update_columns([
                runner::Column::Host,
                runner::Column::Pid,
                runner::Column::Queue,
                runner::Column::Executors,
                runner::Column::Running,
                runner::Column::StartedAt,
                runner::Column::LastSeen,
            ])
            .to_owned(),
    );
    super::execute(conn, insert).await?;
    Ok(())
}

/// One heartbeat: renews the locks of the tasks `runner_id` is running
/// (`running`: so no other runner, and no Django `process_tasks`, takes them
/// for expired) and refreshes its registry row. Rows it holds but does not
/// know it runs (a claim whose reply was lost) are not renewed, so they
/// expire and are run again. Returns what it found, or `None` when its
/// registry row is gone (removed as dead) and must be written again.
pub(crate) async fn heartbeat<C: ConnectionTrait>(
    conn: &C,
    runner_id: &str,
    running: &[i32],
    now: DateTime<Utc>,
) -> Result<Option<Beat>> {
    let backend = conn.get_database_backend();
    let mut held = 0;
    for ids in running.chunks(1_000) {
        let mut renew = Sql::new(backend);
        renew
            .push("UPDATE ")
            .tasks_by_id()
            .push(" SET locked_at = ")
            .bind(now)
            .push(" WHERE locked_by = ")
            .bind(runner_id)
            .push(" AND id IN ")
            .bind_list(ids.iter().copied());
        held += conn.execute_raw(renew.build()).await?.rows_affected();
    }
    let seen = runner::Entity::update_many()
        .col_expr(runner::Column::LastSeen, Expr::value(now))
        .col_expr(
            runner::Column::Running,
            Expr::value(i32::try_from(held).unwrap_or(i32::MAX)),
        )
        .filter(runner::Column::RunnerId.eq(runner_id));
    let seen = super::execute(conn, seen).await?;
    if seen.rows_affected() == 0 {
        return Ok(None);
    }
    let drain_requested = super::controls::drain_requested(conn, runner_id)
        .await?
        .unwrap_or_default();
    Ok(Some(Beat { drain_requested }))
}

/// What one heartbeat found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Beat {
    /// Whether an operator asked the runner to drain.
    pub drain_requested: bool,
}

/// Removes a runner's row at a clean shutdown.
pub(crate) async fn deregister<C: ConnectionTrait>(conn: &C, runner_id: &str) -> Result<()> {
    runner::Entity::delete_many()
        .filter(runner::Column::RunnerId.eq(runner_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Forgets runners not seen since `cutoff` (they died long ago).
pub(crate) async fn forget_dead<C: ConnectionTrait>(
    conn: &C,
    cutoff: DateTime<Utc>,
) -> Result<u64> {
    let delete = runner::Entity::delete_many().filter(runner::Column::LastSeen.lt(cutoff));
    Ok(super::execute(conn, delete).await?.rows_affected())
}

/// Every registered runner, most recently started first.
pub(crate) async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<runner::Model>> {
    super::rows::select_all(
        conn,
        runner::Entity::find().order_by_desc(runner::Column::StartedAt),
    )
    .await
}

/// Tasks finished (succeeded, or failed for good) at or after `since`, per
/// runner id: a history row keeps the `locked_by` of the runner that ran
/// it, and its `run_at` is when it finished, so Django's `run_at` index
/// bounds the rows read to the window.
pub(crate) async fn finished_since<C: ConnectionTrait>(
    conn: &C,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    #[derive(Debug, FromQueryResult)]
    struct FinishedRow {
        locked_by: String,
        finished: i64,
    }
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push(
        "SELECT locked_by, COUNT(*) AS finished FROM background_task_completedtask \
         WHERE run_at >= ",
    )
    .bind(since)
    .push(" AND locked_by IS NOT NULL GROUP BY locked_by");
    Ok(FinishedRow::find_by_statement(sql.build())
        .all(conn)
        .await?
        .into_iter()
        .map(|row| (row.locked_by, row.finished))
        .collect())
}
