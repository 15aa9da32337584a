//! Reading workflows back: their names, their steps and how each stands,
//! for [`crate::workflow::view`]; and forgetting the steps whose history
//! rows are deleted.
//!
//! Every read starts from `background_task_step` through its index over
//! `(workflow, task_id)` (migration 16), and reaches the task and history
//! tables by primary key and by `task_id` (migration 13's index), so it
//! reads the steps of the workflows asked for and nothing else: never the
//! whole task table.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbErr};

use super::Sql;
use crate::entity::{completed_task, dependency, step, task};
use crate::error::Result;

/// Ids per `IN` list.
const IDS_PER_STATEMENT: usize = 1_000;

/// How the steps of one workflow stand, counted in the database.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub workflow: String,
    pub steps: i64,
    pub waiting: i64,
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub unknown: i64,
    pub first_task_id: i32,
    pub newest_task_id: i32,
    /// The newest history row of its steps: the last one that finished.
    pub newest_history_id: Option<i32>,
}

/// Up to `limit` workflow names, in name order, after `after`.
pub(crate) async fn names<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<String>> {
    let mut select = Sql::new(conn.get_database_backend());
    select.push("SELECT workflow FROM background_task_step WHERE workflow IS NOT NULL");
    if let Some(after) = after {
        select.push(" AND workflow > ").bind(after.to_owned());
    }
    select
        .push(" GROUP BY workflow ORDER BY workflow")
        .limit(usize::try_from(limit).unwrap_or(usize::MAX));
    let mut names = Vec::new();
    for row in conn.query_all_raw(select.build()).await? {
        names.push(row.try_get_by_index::<String>(0)?);
    }
    Ok(names)
}

/// How the steps of each of `workflows` stand; `skip_step` leaves out the
/// steps of that name (a batch's callback). Workflows without steps are
/// missing from the answer.
pub(crate) async fn tallies<C: ConnectionTrait>(
    conn: &C,
    workflows: &[String],
    skip_step: Option<&str>,
) -> Result<Vec<Tally>> {
    if workflows.is_empty() {
        return Ok(Vec::new());
    }
    // A step row whose task is still in the queue waits until it is
    // released, then is queued or running; once the task left, its
    // history row says how it ended, and without one, nobody knows.
    let mut select = Sql::new(conn.get_database_backend());
    select
        .push(
            "SELECT s.workflow, COUNT(*), \
             COUNT(CASE WHEN t.id IS NOT NULL AND s.released_at IS NULL THEN 1 END), \
             COUNT(CASE WHEN t.id IS NOT NULL AND s.released_at IS NOT NULL \
                   AND t.locked_by IS NULL THEN 1 END), \
             COUNT(CASE WHEN t.id IS NOT NULL AND s.released_at IS NOT NULL \
                   AND t.locked_by IS NOT NULL THEN 1 END), \
             COUNT(CASE WHEN t.id IS NULL AND h.id IS NOT NULL AND h.cancelled_at IS NULL \
                   AND h.failed_at IS NULL THEN 1 END), \
             COUNT(CASE WHEN t.id IS NULL AND h.id IS NOT NULL AND h.cancelled_at IS NULL \
                   AND h.failed_at IS NOT NULL THEN 1 END), \
             COUNT(CASE WHEN t.id IS NULL AND h.cancelled_at IS NOT NULL THEN 1 END), \
             COUNT(CASE WHEN t.id IS NULL AND h.id IS NULL THEN 1 END), \
             MIN(s.task_id), MAX(s.task_id), MAX(h.id) \
             FROM background_task_step s \
             LEFT JOIN background_task t ON t.id = s.task_id \
             LEFT JOIN background_task_completedtask h ON h.task_id = s.task_id \
             WHERE s.workflow",
        )
        .is_in(workflows.iter().map(String::as_str));
    if let Some(skip) = skip_step {
        select
            .push(" AND (s.name IS NULL OR s.name <> ")
            .bind(skip.to_owned())
            .push(")");
    }
    select.push(" GROUP BY s.workflow ORDER BY s.workflow");
    let mut tallies = Vec::new();
    for row in conn.query_all_raw(select.build()).await? {
        let count = |at: usize| row.try_get_by_index::<i64>(at);
        tallies.push(Tally {
            workflow: row.try_get_by_index(0)?,
            steps: count(1)?,
            waiting: count(2)?,
            queued: count(3)?,
            running: count(4)?,
            succeeded: count(5)?,
            failed: count(6)?,
            cancelled: count(7)?,
            unknown: count(8)?,
            first_task_id: row.try_get_by_index(9)?,
            newest_task_id: row.try_get_by_index(10)?,
            newest_history_id: row.try_get_by_index(11)?,
        });
    }
    Ok(tallies)
}

/// Up to `limit` steps of `workflow` in enqueue order (task id), after
/// the step with task id `after`; `only` picks the steps of one name.
pub(crate) async fn steps<C: ConnectionTrait>(
    conn: &C,
    workflow: &str,
    only: Option<&str>,
    after: Option<i32>,
    limit: u64,
) -> Result<Vec<step::Model>> {
    let mut select = Sql::new(conn.get_database_backend());
    select
        .push("SELECT * FROM background_task_step WHERE workflow = ")
        .bind(workflow.to_owned());
    if let Some(name) = only {
        select.push(" AND name = ").bind(name.to_owned());
    }
    if let Some(after) = after {
        select.push(" AND task_id > ").bind(after);
    }
    select
        .push(" ORDER BY task_id")
        .limit(usize::try_from(limit).unwrap_or(usize::MAX));
    super::rows::all::<step::Entity, C>(conn, select.build()).await
}

/// The step rows of tasks `ids` (any workflow).
pub(crate) async fn steps_by_id<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
) -> Result<Vec<step::Model>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut select = Sql::new(conn.get_database_backend());
        select
            .push("SELECT * FROM background_task_step WHERE task_id")
            .is_in(chunk.iter().copied());
        found.extend(super::rows::all::<step::Entity, C>(conn, select.build()).await?);
    }
    Ok(found)
}

/// The rows of tasks `ids` still in the queue.
pub(crate) async fn tasks<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<Vec<task::Model>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut select = Sql::new(conn.get_database_backend());
        select
            .push("SELECT * FROM ")
            .tasks_by_id()
            .push(" WHERE id")
            .is_in(chunk.iter().copied());
        found.extend(super::rows::all::<task::Entity, C>(conn, select.build()).await?);
    }
    Ok(found)
}

/// The history rows of tasks that had the ids `task_ids`, by that id (the
/// newest row when several name one).
pub(crate) async fn history<C: ConnectionTrait>(
    conn: &C,
    task_ids: &[i32],
) -> Result<BTreeMap<i32, completed_task::Model>> {
    let mut found = BTreeMap::new();
    for chunk in task_ids.chunks(IDS_PER_STATEMENT) {
        let mut select = Sql::new(conn.get_database_backend());
        select
            .push("SELECT * FROM background_task_completedtask WHERE task_id")
            .is_in(chunk.iter().copied())
            .push(" ORDER BY id");
        for row in super::rows::all::<completed_task::Entity, C>(conn, select.build()).await? {
            if let Some(id) = row.task_id {
                found.insert(id, row);
            }
        }
    }
    Ok(found)
}

/// History rows by their own ids.
pub(crate) async fn history_by_id<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
) -> Result<Vec<completed_task::Model>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut select = Sql::new(conn.get_database_backend());
        select
            .push("SELECT * FROM background_task_completedtask WHERE id")
            .is_in(chunk.iter().copied());
        found.extend(super::rows::all::<completed_task::Entity, C>(conn, select.build()).await?);
    }
    Ok(found)
}

/// The edges of steps `ids`: what each waits (or waited) for.
pub(crate) async fn edges<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
) -> Result<Vec<dependency::Model>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut select = Sql::new(conn.get_database_backend());
        select
            .push("SELECT * FROM background_task_dependency WHERE task_id")
            .is_in(chunk.iter().copied())
            .push(" ORDER BY task_id, depends_on");
        found.extend(super::rows::all::<dependency::Entity, C>(conn, select.build()).await?);
    }
    Ok(found)
}

/// Before the history rows `ids` are deleted: deletes the step rows and
/// edges of the tasks they record, which stayed as the record of their
/// workflow (see [`super::steps::Finished::forget`]).
pub(crate) async fn forget_with_history<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
) -> Result<(), DbErr> {
    for table in ["background_task_dependency", "background_task_step"] {
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let mut delete = Sql::new(conn.get_database_backend());
            delete
                .push("DELETE FROM ")
                .push(table)
                .push(
                    " WHERE task_id IN (SELECT task_id FROM background_task_completedtask \
                     WHERE task_id IS NOT NULL AND id",
                )
                .is_in(chunk.iter().copied())
                .push(")");
            conn.execute_raw(delete.build()).await?;
        }
    }
    Ok(())
}
