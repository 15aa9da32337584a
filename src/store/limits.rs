//! Global per-queue concurrency limits: `background_task_queue_limit`, and
//! the room a claim has under one.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
};

use super::Sql;
use crate::entity::queue_limit;
use crate::error::Result;

/// How many more tasks of `queue` may start now under its global limit, or
/// `None` when it has none. Run inside the claim's transaction: on
/// PostgreSQL and MySQL it locks the queue's limit row until the claim
/// commits, so concurrent claims of the queue take turns, and each counts
/// the tasks the previous one claimed (SQLite's `BEGIN IMMEDIATE` already
/// lets one writer in at a time).
pub(crate) async fn room<C: ConnectionTrait>(txn: &C, queue: &str) -> Result<Option<usize>, DbErr> {
    let backend = txn.get_database_backend();
    let mut limit = Sql::new(backend);
    limit
        .push("SELECT max_running FROM background_task_queue_limit WHERE queue = ")
        .bind(queue);
    if backend != DbBackend::Sqlite {
        limit.push(" FOR UPDATE");
    }
    let Some(row) = txn.query_one_raw(limit.build()).await? else {
        return Ok(None);
    };
    let max_running = row.try_get_by_index::<i32>(0)?;
    let mut running = Sql::new(backend);
    running
        .push("SELECT COUNT(*) FROM background_task WHERE locked_by IS NOT NULL AND queue = ")
        .bind(queue);
    let running = txn
        .query_one_raw(running.build())
        .await?
        .map(|row| row.try_get_by_index::<i64>(0))
        .transpose()?
        .unwrap_or_default();
    Ok(Some(
        usize::try_from(i64::from(max_running).saturating_sub(running).max(0)).unwrap_or(0),
    ))
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
