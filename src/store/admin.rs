//! Statements behind the operator's views and bulk actions (the seed's
//! admin): search, priority +1/-1, delete, due counts per task name.
//! Id lists are cut into chunks so no statement exceeds a backend's bound
//! parameters (the seed's admin failed with "too many SQL variables").

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::entity::{completed_task, task};
use crate::error::Result;

/// Ids per statement in bulk actions.
const IDS_PER_STATEMENT: usize = 1_000;

/// `%text%` with the LIKE wildcards in `text` escaped.
fn contains(text: &str) -> LikeExpr {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    LikeExpr::new(format!("%{escaped}%")).escape('\\')
}

/// Waiting and running tasks whose name or params contain `text`, in claim
/// order (highest priority, then oldest), at most `limit`.
pub(crate) async fn search_tasks<C: ConnectionTrait>(
    conn: &C,
    text: &str,
    limit: u64,
) -> Result<Vec<task::Model>> {
    Ok(task::Entity::find()
        .filter(
            Condition::any()
                .add(task::Column::TaskName.like(contains(text)))
                .add(task::Column::TaskParams.like(contains(text))),
        )
        .order_by_desc(task::Column::Priority)
        .order_by_asc(task::Column::RunAt)
        .order_by_asc(task::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// History rows whose name or params contain `text`, newest first.
pub(crate) async fn search_completed<C: ConnectionTrait>(
    conn: &C,
    text: &str,
    limit: u64,
) -> Result<Vec<completed_task::Model>> {
    Ok(completed_task::Entity::find()
        .filter(
            Condition::any()
                .add(completed_task::Column::TaskName.like(contains(text)))
                .add(completed_task::Column::TaskParams.like(contains(text))),
        )
        .order_by_desc(completed_task::Column::RunAt)
        .limit(limit)
        .all(conn)
        .await?)
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

/// Deletes the tasks `ids`; returns rows deleted.
pub(crate) async fn delete_tasks<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
    let mut deleted = 0;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        deleted += task::Entity::delete_many()
            .filter(task::Column::Id.is_in(chunk.iter().copied()))
            .exec(conn)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

/// Deletes the history rows `ids`; returns rows deleted.
pub(crate) async fn delete_completed<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<u64> {
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
    Ok(task::Entity::find()
        .select_only()
        .column(task::Column::TaskName)
        .column_as(task::Column::Id.count(), "count")
        .filter(task::Column::LockedBy.is_null())
        .filter(task::Column::FailedAt.is_null())
        .filter(task::Column::RunAt.lte(now))
        .group_by(task::Column::TaskName)
        .order_by_asc(task::Column::TaskName)
        .into_tuple::<(String, i64)>()
        .all(conn)
        .await?)
}
