//! Cron schedules: `background_task_schedule`, and the compare-and-set that
//! makes each occurrence fire once however many runners look.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::Sql;
use crate::entity::schedule;
use crate::error::Result;

/// Inserts a new schedule and returns it as stored.
pub(crate) async fn insert<C: ConnectionTrait>(
    conn: &C,
    row: schedule::ActiveModel,
) -> Result<schedule::Model> {
    super::insert_returning(conn, row).await
}

/// Every schedule, by name.
pub(crate) async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<schedule::Model>> {
    super::rows::select_all(
        conn,
        schedule::Entity::find().order_by_asc(schedule::Column::Name),
    )
    .await
}

/// The schedule called `name`.
pub(crate) async fn by_name<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<schedule::Model>> {
    super::rows::select_one(
        conn,
        schedule::Entity::find().filter(schedule::Column::Name.eq(name)),
    )
    .await
}

/// Pauses or resumes the schedule `id`; a resumed one next fires at
/// `next_fire_at`. False when there is no such schedule.
pub(crate) async fn set_paused<C: ConnectionTrait>(
    conn: &C,
    id: i32,
    paused: bool,
    next_fire_at: Option<DateTime<Utc>>,
) -> Result<bool> {
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push("UPDATE background_task_schedule SET paused = ")
        .bind(paused);
    if let Some(next) = next_fire_at {
        sql.push(", next_fire_at = ").bind(next);
    }
    sql.push(" WHERE id = ").bind(id);
    Ok(conn.execute_raw(sql.build()).await?.rows_affected() > 0)
}

/// Removes the schedule called `name`; false when there is none. Tasks it
/// already enqueued stay.
pub(crate) async fn remove<C: ConnectionTrait>(conn: &C, name: &str) -> Result<bool> {
    let deleted = schedule::Entity::delete_many()
        .filter(schedule::Column::Name.eq(name))
        .exec(conn)
        .await?;
    Ok(deleted.rows_affected > 0)
}

/// Schedules not paused whose next occurrence is at or before `now`.
pub(crate) async fn due<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
) -> Result<Vec<schedule::Model>> {
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push("SELECT * FROM background_task_schedule WHERE paused = ")
        .bind(false)
        .push(" AND next_fire_at <= ")
        .bind(now)
        .push(" ORDER BY next_fire_at, id");
    super::rows::all::<schedule::Entity, C>(conn, sql.build()).await
}

/// Moves schedule `id` on from the occurrence `seen` to `next`, recording
/// `fired` as the last one, only if no one else did (its `next_fire_at` is
/// still `seen` and it is not paused): true for the one caller that wins.
pub(crate) async fn advance<C: ConnectionTrait>(
    conn: &C,
    id: i32,
    seen: DateTime<Utc>,
    next: DateTime<Utc>,
    fired: DateTime<Utc>,
) -> Result<bool> {
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push("UPDATE background_task_schedule SET next_fire_at = ")
        .bind(next)
        .push(", last_fired_at = ")
        .bind(fired)
        .push(" WHERE id = ")
        .bind(id)
        .push(" AND next_fire_at = ")
        .bind(seen)
        .push(" AND paused = ")
        .bind(false);
    Ok(conn.execute_raw(sql.build()).await?.rows_affected() == 1)
}

/// The earliest next occurrence among the schedules not paused.
pub(crate) async fn earliest<C: ConnectionTrait>(conn: &C) -> Result<Option<DateTime<Utc>>> {
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push("SELECT * FROM background_task_schedule WHERE paused = ")
        .bind(false)
        .push(" ORDER BY next_fire_at LIMIT 1");
    Ok(super::rows::one::<schedule::Entity, C>(conn, sql.build())
        .await?
        .map(|schedule| schedule.next_fire_at))
}
