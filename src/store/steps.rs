//! Tasks that wait for other tasks: holding a step at enqueue, and
//! settling its dependencies as they finish, in the transaction that
//! records how they finished.
//!
//! A waiting step is a `background_task` row with `run_at` = [`held`] (the
//! year 9999), so no claim takes it, Django's `process_tasks` included; its
//! `background_task_step` row counts the dependencies still `pending`, and
//! one `background_task_dependency` row per edge receives the dependency's
//! outcome and result.
//!
//! Exactly once: a dependency's outcome is written by the one transaction
//! that deletes its task row (fenced by the runner's identity, see
//! [`super::outcome`]), and that transaction decrements the step's counter
//! with an `UPDATE`, which takes the step row's lock. Two dependencies
//! finishing at once on two runners take turns on that lock; each sees the
//! other's decrement, and only the one that brings it to zero releases the
//! step. An enqueue that adds an edge locks the dependency's task row
//! first (`FOR SHARE`), so the dependency's outcome either sees the new
//! edge or has committed before the enqueue looks, in which case the
//! enqueue reads the outcome from the history (`task_id`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DbBackend, DbErr, EntityTrait, TransactionSession,
    TransactionTrait,
};

use super::Sql;
use crate::entity::{completed_task, dependency, step, task};
use crate::error::Result;

/// Ids per `IN` list.
const IDS_PER_STATEMENT: usize = 1_000;
/// Edges per multi-row `INSERT`.
const ROWS_PER_INSERT: usize = 500;

/// How a dependency ended, as its edges record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    Failed,
    Cancelled,
    /// It left the queue without an outcome (see [`settle_vanished`]); its
    /// edges say `cancelled`.
    Vanished,
}

impl Ended {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ended::Succeeded => "succeeded",
            Ended::Failed => "failed",
            Ended::Cancelled | Ended::Vanished => "cancelled",
        }
    }

    /// How a history row says its task ended.
    pub(crate) fn of(completed: &completed_task::Model) -> Self {
        if completed.cancelled_at.is_some() {
            Ended::Cancelled
        } else if completed.failed_at.is_some() {
            Ended::Failed
        } else {
            Ended::Succeeded
        }
    }
}

/// A task that left the queue in the transaction being written.
#[derive(Clone, Debug)]
pub(crate) struct Finished {
    pub id: i32,
    pub ended: Ended,
    pub result: Option<String>,
    /// It waited for others itself and leaves no history row: its step
    /// row and edges go. With a history row they stay, as the record of
    /// its workflow ([`crate::workflow_view`]), until that row is deleted
    /// ([`super::workflows::forget_with_history`]).
    pub forget: bool,
}

/// What settling the finished tasks' dependents did.
#[derive(Debug, Default)]
pub(crate) struct Settlement {
    /// Steps whose last dependency finished: now due.
    pub released: Vec<i32>,
    /// Steps cancelled because a dependency failed or was cancelled, with
    /// their history rows.
    pub cancelled: Vec<completed_task::Model>,
    /// Batches settled: (batch name, callback id, whether the callback
    /// runs). See [`crate::workflow::Batch`].
    pub batches: Vec<(String, i32, bool)>,
}

/// What a batch's workflow name starts with.
pub(crate) const BATCH_PREFIX: &str = "batch:";
/// The step name of a batch's callback.
pub(crate) const BATCH_CALLBACK: &str = "callback";

/// The batch `waiting` is the callback of, if it is one.
fn batch_of(waiting: &step::Model) -> Option<String> {
    let batch = waiting.workflow.as_deref()?.strip_prefix(BATCH_PREFIX)?;
    (waiting.name.as_deref() == Some(BATCH_CALLBACK)).then(|| batch.to_owned())
}

/// The `run_at` of a held step.
pub(crate) fn held() -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(migration::HELD_UNTIL, "%Y-%m-%d %H:%M:%S")
        .expect("HELD_UNTIL is a timestamp")
        .and_utc()
}

/// Rows that are not held steps: what operations that move or delete
/// waiting rows by other criteria (remove-existing, reschedule-existing,
/// "run now") leave out.
pub(crate) fn not_held() -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::ColumnTrait;
    task::Column::RunAt.ne(held())
}

/// Settles the dependents of `finished` (tasks whose rows this
/// transaction deleted): records each outcome on its edges, releases the
/// steps whose last dependency finished, and cancels (with a history row)
/// those a failure or a cancellation leaves unable to run, and then their
/// own dependents, and so on. Also forgets the step rows and edges of the
/// finished tasks that leave no history row (the others stay, the record
/// of their workflow). Costs one `SELECT` when no task of the batch
/// has dependents.
pub(crate) async fn settle<C: ConnectionTrait>(
    txn: &C,
    finished: Vec<Finished>,
    now: DateTime<Utc>,
) -> Result<Settlement> {
    let backend = txn.get_database_backend();
    let mut settlement = Settlement::default();
    let mut finished = finished;
    while !finished.is_empty() {
        let ids: Vec<i32> = finished.iter().map(|done| done.id).collect();
        let steps: Vec<i32> = finished
            .iter()
            .filter(|done| done.forget)
            .map(|done| done.id)
            .collect();
        if !steps.is_empty() {
            forget(txn, &steps).await?;
        }
        // Lists go in chunks: a task can have any number of dependents,
        // and SQLite binds at most 32,766 values a statement.
        let mut edges: Vec<(i32, i32)> = Vec::new();
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let mut select = Sql::new(backend);
            select
                .push("SELECT task_id, depends_on FROM background_task_dependency WHERE depends_on")
                .is_in(chunk.iter().copied())
                .for_update();
            for row in txn.query_all_raw(select.build()).await? {
                edges.push((row.try_get_by_index(0)?, row.try_get_by_index(1)?));
            }
        }
        if edges.is_empty() {
            break;
        }

        // Each outcome onto its edges.
        let by_id: BTreeMap<i32, &Finished> = finished.iter().map(|done| (done.id, done)).collect();
        let with_dependents: BTreeSet<i32> = edges.iter().map(|(_, dep)| *dep).collect();
        for id in &with_dependents {
            let done = by_id[id];
            let mut record = Sql::new(backend);
            record
                .push("UPDATE background_task_dependency SET state = ")
                .bind(done.ended.as_str())
                .push(", result = ")
                .bind(done.result.clone())
                .push(" WHERE depends_on = ")
                .bind(*id);
            txn.execute_raw(record.build()).await?;
        }

        // Count down each dependent by the edges that just finished.
        let mut counts: BTreeMap<i32, i32> = BTreeMap::new();
        let mut broken: BTreeMap<i32, i32> = BTreeMap::new();
        for (step, dep) in &edges {
            *counts.entry(*step).or_default() += 1;
            if by_id[dep].ended != Ended::Succeeded {
                broken.entry(*step).or_insert(*dep);
            }
        }
        let mut by_count: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (step, count) in &counts {
            by_count.entry(*count).or_default().push(*step);
        }
        for (count, steps) in &by_count {
            for chunk in steps.chunks(IDS_PER_STATEMENT) {
                let mut down = Sql::new(backend);
                down.push("UPDATE background_task_step SET pending = pending - ")
                    .bind(*count)
                    .push(" WHERE task_id")
                    .is_in(chunk.iter().copied());
                txn.execute_raw(down.build()).await?;
            }
        }
        let dependents: Vec<i32> = counts.keys().copied().collect();
        let mut waiting_steps = Vec::with_capacity(dependents.len());
        for chunk in dependents.chunks(IDS_PER_STATEMENT) {
            let mut read = Sql::new(backend);
            // A step whose task row is gone (deleted while it waited) is
            // neither released nor cancelled: the sweep forgets it.
            read.push("SELECT * FROM background_task_step s WHERE s.released_at IS NULL")
                .push(" AND EXISTS (SELECT 1 FROM background_task t WHERE t.id = s.task_id)")
                .push(" AND s.task_id")
                .is_in(chunk.iter().copied())
                .for_update();
            waiting_steps.extend(super::rows::all::<step::Entity, C>(txn, read.build()).await?);
        }
        let mut ready: BTreeMap<DateTime<Utc>, Vec<i32>> = BTreeMap::new();
        let mut doomed = Vec::new();
        for waiting in waiting_steps {
            if let Some(dep) = broken.get(&waiting.task_id)
                && !waiting.run_anyway
            {
                doomed.push((waiting.task_id, *dep, by_id[dep].ended, batch_of(&waiting)));
            } else if waiting.pending <= 0 {
                if let Some(batch) = batch_of(&waiting) {
                    settlement.batches.push((batch, waiting.task_id, true));
                }
                ready
                    .entry(waiting.run_at.max(now))
                    .or_default()
                    .push(waiting.task_id);
            }
        }
        for (run_at, steps) in ready {
            release(txn, &steps, run_at, now).await?;
            settlement.released.extend(steps);
        }
        finished = Vec::new();
        for (step, dep, ended, batch) in doomed {
            if let Some(completed) = cancel_held(txn, step, dep, ended, now).await? {
                if let Some(batch) = batch {
                    settlement.batches.push((batch, step, false));
                }
                finished.push(Finished {
                    id: step,
                    ended: Ended::Cancelled,
                    result: None,
                    // Its history row says it was cancelled.
                    forget: false,
                });
                settlement.cancelled.push(completed);
            }
        }
    }
    if !settlement.released.is_empty() && backend == DbBackend::Postgres {
        // Released rows are updates, which the insert trigger does not
        // announce: wake the listening runners here.
        txn.execute_unprepared(&format!(
            "SELECT pg_notify('{}', '')",
            migration::NOTIFY_CHANNEL
        ))
        .await?;
    }
    Ok(settlement)
}

/// Deletes the step rows and edges of tasks that left the queue.
pub(crate) async fn forget<C: ConnectionTrait>(txn: &C, ids: &[i32]) -> Result<(), DbErr> {
    delete_step_rows(txn, ids, false).await
}

/// Deletes the step rows and edges of those of `ids` whose task row is
/// gone without a history row: steps an operator deleted while they
/// waited, which nothing releases or cancels. (Their dependents, if any,
/// are settled by [`settle_vanished`].)
pub(crate) async fn forget_deleted<C: ConnectionTrait>(conn: &C, ids: &[i32]) -> Result<(), DbErr> {
    delete_step_rows(conn, ids, true).await
}

async fn delete_step_rows<C: ConnectionTrait>(
    conn: &C,
    ids: &[i32],
    only_deleted: bool,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    for table in ["background_task_step", "background_task_dependency"] {
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let mut delete = Sql::new(backend);
            delete
                .push("DELETE FROM ")
                .push(table)
                .push(" WHERE task_id")
                .is_in(chunk.iter().copied());
            if only_deleted {
                // Still queued, or finished (its rows stay with its
                // history row): kept.
                for (other, column) in [
                    ("background_task", "id"),
                    ("background_task_completedtask", "task_id"),
                ] {
                    delete
                        .push(" AND NOT EXISTS (SELECT 1 FROM ")
                        .push(other)
                        .push(" o WHERE o.")
                        .push(column)
                        .push(" = ")
                        .push(table)
                        .push(".task_id)");
                }
            }
            conn.execute_raw(delete.build()).await?;
        }
    }
    Ok(())
}

/// Makes held `steps` due at `run_at`.
async fn release<C: ConnectionTrait>(
    txn: &C,
    steps: &[i32],
    run_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    for chunk in steps.chunks(IDS_PER_STATEMENT) {
        release_chunk(txn, chunk, run_at, now).await?;
    }
    Ok(())
}

async fn release_chunk<C: ConnectionTrait>(
    txn: &C,
    steps: &[i32],
    run_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let backend = txn.get_database_backend();
    let mut due = Sql::new(backend);
    due.push("UPDATE ")
        .tasks_by_id()
        .push(" SET run_at = ")
        .bind(run_at)
        .push(" WHERE run_at = ")
        .bind(held())
        .push(" AND id")
        .is_in(steps.iter().copied());
    txn.execute_raw(due.build()).await?;
    mark_settled(txn, steps, now).await
}

/// Marks the step rows of `tasks` (those that have one) settled at `now`:
/// released, or cancelled with their task. A settled step is never
/// released, nor its batch finished, again.
pub(crate) async fn mark_settled<C: ConnectionTrait>(
    txn: &C,
    tasks: &[i32],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    for chunk in tasks.chunks(IDS_PER_STATEMENT) {
        let mut mark = Sql::new(txn.get_database_backend());
        mark.push("UPDATE background_task_step SET released_at = ")
            .bind(now)
            .push(" WHERE released_at IS NULL AND task_id")
            .is_in(chunk.iter().copied());
        txn.execute_raw(mark.build()).await?;
    }
    Ok(())
}

/// Cancels the held step `step`, which can no longer run because `dep`
/// ended as `ended` (not a success): its row leaves the queue with a
/// history row marked cancelled. `None` when the row is gone (an operator
/// deleted it).
async fn cancel_held<C: ConnectionTrait>(
    txn: &C,
    step: i32,
    dep: i32,
    ended: Ended,
    now: DateTime<Utc>,
) -> Result<Option<completed_task::Model>> {
    let backend = txn.get_database_backend();
    // Settled either way: a dependency that finishes later neither
    // releases it nor finishes its batch a second time.
    mark_settled(txn, &[step], now).await?;
    let mut select = Sql::new(backend);
    select
        .push("SELECT * FROM ")
        .tasks_by_id()
        .push(" WHERE id = ")
        .bind(step);
    select.for_update();
    let Some(row) = super::rows::one::<task::Entity, C>(txn, select.build()).await? else {
        return Ok(None);
    };
    let mut delete = Sql::new(backend);
    // By primary key; MariaDB takes no index hint in a DELETE.
    delete
        .push("DELETE FROM background_task WHERE id = ")
        .bind(step)
        .push(" AND locked_by IS NULL");
    if txn.execute_raw(delete.build()).await?.rows_affected() == 0 {
        return Ok(None);
    }
    let reason = if ended == Ended::Vanished {
        format!(
            "cancelled: task {dep}, which this task runs after, left the queue without an \
             outcome (it was deleted, or run by a runner that does not settle dependencies, \
             such as Django's process_tasks); retry this task to run it anyway"
        )
    } else {
        format!(
            "cancelled: task {dep}, which this task runs after, did not succeed \
             (enqueue it with run_anyway to run it regardless)"
        )
    };
    let mut history = super::outcome::history_row(&row, row.attempts, Some(&reason), now);
    history.cancelled_at = Set(Some(now));
    super::insert_returning(txn, history).await.map(Some)
}

/// Vanished dependencies settled per sweep.
const VANISHED_PER_SWEEP: usize = 1_000;

/// Settles the dependents of tasks that left the queue without an outcome:
/// deleted (`bgtasks delete`, the dashboard, remove-existing, by hand), or
/// run by a runner that does not settle dependencies (Django's
/// `process_tasks`, a version of this crate before workflows). Their
/// dependents would wait for ever; they are cancelled instead (or
/// released, those that run anyway), as after a cancelled dependency.
///
/// Found with one read: an edge still pending whose dependency has no
/// task row. An outcome deletes the row and settles its edges in one
/// transaction, so that state only arises without one. Any number of
/// runners may sweep at once: the edges are locked and read again, and
/// one settled by another sweep (or an outcome) is no longer pending.
pub(crate) async fn settle_vanished<C>(conn: &C, now: DateTime<Utc>) -> Result<Settlement>
where
    C: TransactionTrait + ConnectionTrait,
    C::Transaction: ConnectionTrait,
{
    let backend = conn.get_database_backend();
    let mut find = Sql::new(backend);
    // From the held rows (the `run_at` index) to their pending edges (the
    // edge table's key): the cost follows what waits, not the history.
    find.push(
        "SELECT DISTINCT d.depends_on FROM background_task t \
         JOIN background_task_dependency d ON d.task_id = t.id \
         WHERE t.run_at = ",
    )
    .bind(held())
    .push(
        " AND d.state IS NULL AND NOT EXISTS \
         (SELECT 1 FROM background_task g WHERE g.id = d.depends_on)",
    )
    .push(&format!(" LIMIT {VANISHED_PER_SWEEP}"));
    let mut candidates = Vec::new();
    for row in conn.query_all_raw(find.build()).await? {
        candidates.push(row.try_get_by_index::<i32>(0)?);
    }
    if candidates.is_empty() {
        return Ok(Settlement::default());
    }
    let txn = super::begin_write(conn).await?;
    let mut lock = Sql::new(backend);
    lock.push(
        "SELECT depends_on FROM background_task_dependency WHERE state IS NULL AND depends_on",
    )
    .is_in(candidates.iter().copied())
    .for_update();
    let mut vanished = BTreeSet::new();
    for row in txn.query_all_raw(lock.build()).await? {
        vanished.insert(row.try_get_by_index::<i32>(0)?);
    }
    let finished = vanished
        .into_iter()
        .map(|id| Finished {
            id,
            ended: Ended::Vanished,
            result: None,
            // No history row of ours records it.
            forget: true,
        })
        .collect();
    let settlement = settle(&txn, finished, now).await?;
    txn.commit().await?;
    Ok(settlement)
}

/// One dependency of a step being enqueued, as found.
#[derive(Clone, Debug)]
pub(crate) struct Dependency {
    pub id: i32,
    /// `None` while it has not finished.
    pub ended: Option<Ended>,
    pub result: Option<String>,
}

/// How a step waits: what [`hold`] writes besides the task row.
#[derive(Clone, Debug, Default)]
pub(crate) struct StepOptions {
    pub run_anyway: bool,
    pub workflow: Option<String>,
    pub name: Option<String>,
}

/// Looks up the tasks `after` (distinct ids) a new step is to wait for,
/// inside the enqueue's transaction: those waiting or running are locked
/// (`FOR SHARE`), so none of them can finish until the step's edges are
/// committed; the others are looked up in the history by the id they had.
/// An id found nowhere, or a dependency that already failed or was
/// cancelled (unless `run_anyway`), is an error, and nothing is written.
pub(crate) async fn dependencies<C: ConnectionTrait>(
    txn: &C,
    after: &[i32],
    run_anyway: bool,
) -> Result<Vec<Dependency>> {
    let backend = txn.get_database_backend();
    let mut found = Vec::with_capacity(after.len());
    let mut live = BTreeSet::new();
    for chunk in after.chunks(IDS_PER_STATEMENT) {
        let mut lock = Sql::new(backend);
        lock.push("SELECT id FROM ")
            .tasks_by_id()
            .push(" WHERE id")
            .is_in(chunk.iter().copied());
        match backend {
            DbBackend::Postgres => lock.push(" FOR SHARE"),
            DbBackend::MySql => lock.push(" LOCK IN SHARE MODE"),
            _ => &mut lock,
        };
        for row in txn.query_all_raw(lock.build()).await? {
            live.insert(row.try_get_by_index::<i32>(0)?);
        }
    }
    let gone: Vec<i32> = after
        .iter()
        .copied()
        .filter(|id| !live.contains(id))
        .collect();
    let mut ended: BTreeMap<i32, completed_task::Model> = BTreeMap::new();
    for chunk in gone.chunks(IDS_PER_STATEMENT) {
        let mut history = Sql::new(backend);
        history
            .push("SELECT * FROM background_task_completedtask WHERE task_id")
            .is_in(chunk.iter().copied());
        for row in super::rows::all::<completed_task::Entity, C>(txn, history.build()).await? {
            if let Some(id) = row.task_id {
                ended.insert(id, row);
            }
        }
    }
    for id in after {
        if live.contains(id) {
            found.push(Dependency {
                id: *id,
                ended: None,
                result: None,
            });
            continue;
        }
        let Some(completed) = ended.remove(id) else {
            return Err(crate::Error::invalid(
                "after",
                format!(
                    "task {id} is not waiting or running, and no history row says how it \
                     ended (it never existed, or its history was not kept or was pruned): \
                     a task after it could never be released; check the id"
                ),
            ));
        };
        let how = Ended::of(&completed);
        if how != Ended::Succeeded && !run_anyway {
            return Err(crate::Error::invalid(
                "after",
                format!(
                    "task {id} already {} ({}): a task after it would never run; enqueue it \
                     with run_anyway to run it regardless",
                    how.as_str(),
                    completed.last_error.lines().next().unwrap_or_default()
                ),
            ));
        }
        found.push(Dependency {
            id: *id,
            ended: Some(how),
            result: completed.result,
        });
    }
    Ok(found)
}

/// Writes the step row and the edges of `task_id`, which waits for
/// `dependencies` (as [`dependencies`] found them) and runs at `run_at`
/// once they finished. The task row itself was inserted held when any of
/// them is unfinished, due at `run_at` otherwise.
pub(crate) async fn hold<C: ConnectionTrait>(
    txn: &C,
    task_id: i32,
    run_at: DateTime<Utc>,
    dependencies: &[Dependency],
    options: &StepOptions,
    now: DateTime<Utc>,
) -> Result<()> {
    let pending = dependencies
        .iter()
        .filter(|dep| dep.ended.is_none())
        .count();
    let waiting = step::ActiveModel {
        task_id: Set(task_id),
        pending: Set(i32::try_from(pending).unwrap_or(i32::MAX)),
        run_at: Set(run_at),
        run_anyway: Set(options.run_anyway),
        workflow: Set(options.workflow.clone()),
        name: Set(options.name.clone()),
        released_at: Set((pending == 0).then_some(now)),
    };
    super::execute(txn, step::Entity::insert(waiting)).await?;
    let edges: Vec<dependency::ActiveModel> = dependencies
        .iter()
        .map(|dep| dependency::ActiveModel {
            task_id: Set(task_id),
            depends_on: Set(dep.id),
            state: Set(dep.ended.map(|ended| ended.as_str().to_owned())),
            result: Set(dep.result.clone()),
        })
        .collect();
    for chunk in edges.chunks(ROWS_PER_INSERT) {
        super::execute(txn, dependency::Entity::insert_many(chunk.to_vec())).await?;
    }
    Ok(())
}

/// The edges of step `task_id`: its dependencies, how each ended and what
/// it returned, in id order.
pub(crate) async fn edges_of<C: ConnectionTrait>(
    conn: &C,
    task_id: i32,
) -> Result<Vec<dependency::Model>> {
    let mut select = Sql::new(conn.get_database_backend());
    select
        .push("SELECT * FROM background_task_dependency WHERE task_id = ")
        .bind(task_id)
        .push(" ORDER BY depends_on");
    super::rows::all::<dependency::Entity, C>(conn, select.build()).await
}
