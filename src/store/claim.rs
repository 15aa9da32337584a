//! The runner's claim: take up to N due tasks and mark them with the
//! runner's identity, in one short transaction per backend; and the two
//! ways a lock ends without an outcome (expiry and release).
//!
//! A task is due when it is not locked, not failed, `run_at <= now`, in the
//! runner's queue (when it has one), and its name has a handler in this
//! runner (rows of other names stay for runners that know them). Order:
//! priority (DESC, or ASC for the seed's "ASC" setting), then `run_at`, then
//! `id`, the order of `background_task_claim_idx`.
//!
//! - PostgreSQL: `UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE
//!   SKIP LOCKED)) RETURNING *`: concurrent runners skip each other's rows
//!   instead of waiting, and no row is handed to two of them.
//! - SQLite: the same UPDATE ... RETURNING in a `BEGIN IMMEDIATE`
//!   transaction: it takes the write lock first (waiting up to the busy
//!   timeout) instead of failing when upgrading a read.
//! - MySQL/MariaDB (no `LIMIT` in an `IN` subquery): `SELECT ... FOR UPDATE
//!   SKIP LOCKED`, then `UPDATE` by id of the rows still unlocked, in one
//!   transaction, retried on deadlock (1213; on Galera also the
//!   certification failure of two nodes' claims of one row) and lock wait
//!   timeout (1205).
//!
//! A queue with a global concurrency limit or a rate limit is claimed on
//! its own, and its claim first locks the queue's limit rows and counts
//! the queue's running tasks and its starts in the window, in the same
//! transaction ([`super::limits::room`]), so claims of that queue by any
//! number of runners take turns and never exceed either; a claim of a
//! rate-limited queue writes its starts to the ledger before it commits.
//! A queue with a key policy is claimed key by key ([`super::keys`]).

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr};

use super::Sql;
use crate::config::PriorityOrdering;
use crate::entity::task;
use crate::error::{Result, UnreadableRow};

/// Which rows a runner may claim.
pub(crate) struct ClaimFilter<'a> {
    /// Task names with a handler in this runner.
    pub names: &'a [String],
    /// Which queues.
    pub queues: Queues<'a>,
    /// Priority order.
    pub ordering: PriorityOrdering,
}

/// The queues a claim takes tasks from.
#[derive(Clone, Copy)]
pub(crate) enum Queues<'a> {
    /// Every queue.
    All,
    /// Only this one.
    Only(&'a str),
    /// Every queue but the `named` ones, and but the default queue when
    /// `default`.
    AllBut { named: &'a [String], default: bool },
}

/// What one claim took.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// Tasks now locked by the runner, in claim order.
    pub tasks: Vec<task::Model>,
    /// Rows the claim took but could not decode: set aside in the same
    /// transaction (failed in place, unlocked, their `last_error` saying
    /// why), so no runner takes them again and the rows behind them run.
    pub set_aside: Vec<UnreadableRow>,
}

/// Claims up to `limit` due tasks for `runner`, in claim order. With
/// `global_limit`, the filter names one queue, and the claim takes no more
/// than that queue's global concurrency limit leaves room for (see
/// [`super::limits::room`]), in the same transaction.
pub(crate) async fn claim(
    db: &DatabaseConnection,
    runner: &str,
    now: DateTime<Utc>,
    limit: usize,
    filter: &ClaimFilter<'_>,
    global_limit: bool,
) -> Result<Claimed> {
    if limit == 0 || filter.names.is_empty() {
        return Ok(Claimed::default());
    }
    let mut claimed = super::retry_conflicts("claim", || {
        claim_once(db, runner, now, limit, filter, global_limit)
    })
    .await?;
    // RETURNING gives no order; hand tasks out in claim order.
    sort_in_claim_order(&mut claimed.tasks, filter.ordering);
    Ok(claimed)
}

async fn claim_once(
    db: &DatabaseConnection,
    runner: &str,
    now: DateTime<Utc>,
    limit: usize,
    filter: &ClaimFilter<'_>,
    global_limit: bool,
) -> Result<Claimed, DbErr> {
    let backend = db.get_database_backend();
    let txn = super::begin_runner_write(db).await?;
    let room = match (global_limit, filter.queues) {
        (true, Queues::Only(queue)) => Some((queue, super::limits::room(&txn, queue, now).await?)),
        _ => None,
    };
    let limit = room
        .as_ref()
        .and_then(|(_, room)| room.room)
        .map_or(limit, |room| room.min(limit));
    if limit == 0 {
        txn.commit().await?;
        return Ok(Claimed::default());
    }
    let policy = match (global_limit, filter.queues) {
        (true, Queues::Only(queue)) => super::keys::policy_for_update(&txn, queue).await?,
        _ => None,
    };
    // Whether `rows` were read before the update that marked them.
    let mut marked_by_update = false;
    let rows = match (policy, filter.queues) {
        (Some(policy), Queues::Only(queue)) => {
            let keyed = super::keys::KeyedFilter {
                queue,
                names: filter.names,
                ordering: filter.ordering,
            };
            super::keys::claim(&txn, runner, now, limit, &keyed, &policy).await?
        }
        _ => match backend {
            DbBackend::Postgres => {
                // The locking select must run exactly once: as a plain `IN
                // (subquery)` the planner may re-run it per row (a semi join),
                // and each run locks and returns other rows, so one claim
                // could lock more than `limit` rows. In `ARRAY(...)` it is an
                // InitPlan, evaluated once; and `id = ANY(...)` finds the rows
                // by primary key (joined to a CTE, the planner hashed the CTE
                // and scanned the whole table for its rows).
                let mut sql = Sql::new(backend);
                lock_rows(&mut sql, runner, now);
                sql.push(" WHERE id = ANY(ARRAY(");
                due_ids(&mut sql, now, limit, filter);
                sql.push(" FOR UPDATE SKIP LOCKED)) RETURNING *");
                txn.query_all_raw(sql.build()).await?
            }
            DbBackend::MySql => {
                // No `LIMIT` in an `IN` subquery: select and lock, then update.
                let mut select = Sql::new(backend);
                due_rows(&mut select, "*", now, limit, filter);
                select.push(" FOR UPDATE SKIP LOCKED");
                let rows = txn.query_all_raw(select.build()).await?;
                let ids: Vec<i64> = rows
                    .iter()
                    .map(|row| read_id_at(row, "id"))
                    .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    Vec::new()
                } else {
                    // Only rows still unlocked, and only the ones this update
                    // took: on Galera the locking read is node-local, and a
                    // claim another node committed may be applied here between
                    // the read and the update (the row then reads as locked by
                    // that runner). Certification catches the rest: two nodes
                    // updating the same row, the later fails at commit (1213).
                    let mut update = Sql::new(backend);
                    update.push("UPDATE ").tasks_by_id();
                    lock_columns(&mut update, runner, now);
                    update
                        .push(" WHERE locked_by IS NULL AND id")
                        .is_in(ids.iter().copied());
                    let taken = txn.execute_raw(update.build()).await?.rows_affected();
                    if taken == ids.len() as u64 {
                        // Every row read is now this runner's: the locking read
                        // has the rest of each row, without reading it back.
                        marked_by_update = true;
                        rows
                    } else {
                        let mut read = Sql::new(backend);
                        read.push("SELECT * FROM ")
                            .tasks_by_id()
                            .push(" WHERE locked_by = ")
                            .bind(runner)
                            .push(" AND id")
                            .is_in(ids.iter().copied());
                        txn.query_all_raw(read.build()).await?
                    }
                }
            }
            _ => {
                let mut sql = Sql::new(backend);
                lock_rows(&mut sql, runner, now);
                sql.push(" WHERE locked_by IS NULL AND id IN (");
                due_ids(&mut sql, now, limit, filter);
                sql.push(") RETURNING *");
                txn.query_all_raw(sql.build()).await?
            }
        },
    };
    let (mut tasks, set_aside) = super::rows::split::<task::Entity>(&rows, backend);
    if marked_by_update {
        // What the update wrote, as the database stores it (microseconds).
        let locked_at = now.trunc_subsecs(6);
        for task in &mut tasks {
            task.locked_by = Some(runner.to_owned());
            task.locked_at = Some(locked_at);
        }
    }
    for unreadable in &set_aside {
        set_aside_row(&txn, unreadable, now).await?;
    }
    if let Some((queue, room)) = room
        && room.rate_limited
        && !tasks.is_empty()
    {
        super::limits::record_starts(&txn, queue, tasks.len(), now).await?;
    }
    txn.commit().await?;
    Ok(Claimed { tasks, set_aside })
}

/// Sets aside task `id`, held by `runner`, whose outcome the database
/// refuses (a value its schema does not accept: the write can never
/// succeed, and retrying it would hold the executor forever): failed in
/// place and unlocked, `reason` as its last error, like a row a claim
/// cannot decode. False when `runner` no longer holds it.
pub(crate) async fn set_aside_refused(
    db: &DatabaseConnection,
    runner: &str,
    id: i32,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE background_task SET failed_at = ")
        .bind(now)
        .push(", locked_by = NULL, locked_at = NULL, last_error = ")
        .bind(reason.replace('\0', "\u{fffd}"))
        .push(" WHERE id = ")
        .bind(id)
        .push(" AND locked_by = ")
        .bind(runner);
    Ok(db.execute_raw(sql.build()).await?.rows_affected() == 1)
}

/// The id in the first column of a row (`SELECT id ...`), whatever
/// integer type its column has.
pub(crate) fn read_id(row: &sea_orm::QueryResult) -> Result<i64, DbErr> {
    read_id_at(row, 0usize)
}

/// The id in column `at` (a position, or a name for `SELECT *`, whose
/// column order is the table's: Django's or this crate's), whatever
/// integer type its column has.
fn read_id_at(row: &sea_orm::QueryResult, at: impl sea_orm::ColIdx) -> Result<i64, DbErr> {
    row.try_get_by::<i64, _>(at)
        .or_else(|_| row.try_get_by::<i32, _>(at).map(i64::from))
        .or_else(|_| row.try_get_by::<u32, _>(at).map(i64::from))
}

/// Sets aside a claimed row that cannot be decoded: failed in place
/// (`failed_at`, so neither this crate's claim nor Django's picks it up
/// again), unlocked, with the diagnosis as its last error. Every other
/// column is left as it is, for an operator to correct; `bgtasks retry --set-aside`
/// of a set-aside task puts it back in the queue.
async fn set_aside_row<C: ConnectionTrait>(
    txn: &C,
    unreadable: &UnreadableRow,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let Some(id) = unreadable
        .id
        .as_deref()
        .and_then(|id| id.parse::<i64>().ok())
    else {
        // Without an id there is no row to address; the claim's lock stays
        // and expires after the lease, and the next claim sees it again.
        return Ok(());
    };
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("UPDATE background_task SET failed_at = ")
        .bind(now)
        .push(", locked_by = NULL, locked_at = NULL, last_error = ")
        .bind(format!("Set aside by the runner: {unreadable}."))
        .push(" WHERE id = ")
        .bind(id);
    txn.execute_raw(sql.build()).await?;
    Ok(())
}

/// `UPDATE background_task SET locked_by = <runner>, locked_at = <now>`:
/// the mark of a claim, the same on every backend.
fn lock_rows(sql: &mut Sql, runner: &str, now: DateTime<Utc>) {
    sql.push("UPDATE background_task");
    lock_columns(sql, runner, now);
}

/// ` SET locked_by = <runner>, locked_at = <now>`.
pub(super) fn lock_columns(sql: &mut Sql, runner: &str, now: DateTime<Utc>) {
    sql.push(" SET locked_by = ")
        .bind(runner)
        .push(", locked_at = ")
        .bind(now);
}

/// `SELECT id FROM background_task WHERE <due> ORDER BY <claim order> LIMIT n`.
fn due_ids(sql: &mut Sql, now: DateTime<Utc>, limit: usize, filter: &ClaimFilter<'_>) {
    due_rows(sql, "id", now, limit, filter);
}

/// `SELECT <columns> FROM background_task WHERE <due> ORDER BY <claim
/// order> LIMIT n`.
fn due_rows(
    sql: &mut Sql,
    columns: &str,
    now: DateTime<Utc>,
    limit: usize,
    filter: &ClaimFilter<'_>,
) {
    // The claim index returns rows in claim order and stops after `limit`;
    // without the hint SQLite and MySQL pick a single-column index (say
    // `failed_at`) and sort every due row, so a claim grows with the
    // backlog. The index is this crate's own migration's.
    let table = match sql.backend() {
        DbBackend::Sqlite => " FROM background_task INDEXED BY background_task_claim_idx",
        DbBackend::MySql => " FROM background_task FORCE INDEX (background_task_claim_idx)",
        _ => " FROM background_task",
    };
    sql.push("SELECT ")
        .push(columns)
        .push(table)
        .push(" WHERE locked_by IS NULL AND failed_at IS NULL AND run_at <= ")
        .bind(now);
    match filter.queues {
        Queues::All => {}
        Queues::Only(queue) => {
            sql.push(" AND queue = ").bind(queue);
        }
        Queues::AllBut { named, default } => {
            let not_named = |sql: &mut Sql| {
                sql.push("queue NOT IN ")
                    .bind_list(named.iter().map(String::as_str));
            };
            match (named.is_empty(), default) {
                (true, false) => {}
                (true, true) => {
                    sql.push(" AND queue IS NOT NULL");
                }
                (false, true) => {
                    sql.push(" AND queue IS NOT NULL AND ");
                    not_named(sql);
                }
                (false, false) => {
                    sql.push(" AND (queue IS NULL OR ");
                    not_named(sql);
                    sql.push(")");
                }
            }
        }
    }
    sql.push(" AND task_name")
        .is_in(filter.names.iter().map(String::as_str));
    sql.push(match filter.ordering {
        PriorityOrdering::Desc => " ORDER BY priority DESC, run_at, id",
        PriorityOrdering::Asc => " ORDER BY priority ASC, run_at, id",
    });
    sql.limit(limit);
}

fn sort_in_claim_order(tasks: &mut [task::Model], ordering: PriorityOrdering) {
    tasks.sort_by(|a, b| {
        let priority = match ordering {
            PriorityOrdering::Desc => b.priority.cmp(&a.priority),
            PriorityOrdering::Asc => a.priority.cmp(&b.priority),
        };
        priority.then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id))
    });
}

/// A value that changes when other processes add work, for runners that
/// cannot be told (see `actors::watch`). SQLite: `PRAGMA data_version`
/// (changes on every commit by another connection); MySQL: the highest
/// task id. PostgreSQL runners listen instead; this reads the highest id.
pub(crate) async fn change_marker(db: &DatabaseConnection) -> Result<i64> {
    let sql = match db.get_database_backend() {
        DbBackend::Sqlite => "PRAGMA data_version",
        DbBackend::Postgres => "SELECT COALESCE(MAX(id), 0)::bigint FROM background_task",
        _ => "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM background_task",
    };
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await?;
    Ok(row
        .map(|row| row.try_get_by_index::<i64>(0))
        .transpose()?
        .unwrap_or_default())
}

/// Lock expiry: takes back tasks whose runner stopped renewing their locks,
/// so any runner can run them again. Attempts are not counted: the
/// execution never reported. Returns how many rows were unlocked.
///
/// - Locks of this crate's runners (`host:pid:random`) are renewed by their
///   heartbeat while the task runs; one older than `lease_cutoff` belongs to
///   a runner that died or hung, or to a claim whose runner never learned
///   it succeeded (the connection dropped before the reply). That includes
///   this runner's own: it renews only what it runs.
/// - Other locks (Django's `process_tasks` writes its bare PID and never
///   renews) expire after `MAX_RUN_TIME`, as in the seed: `max_run_cutoff`.
///
/// On MySQL/MariaDB the expired rows are found first with a plain read and
/// then unlocked by id, the conditions checked again: an `UPDATE` whose
/// `WHERE` walks the `locked_by` index locks every row and gap it scans,
/// and deadlocked (1213) with the claims and heartbeats of busy runners.
pub(crate) async fn unlock_expired(
    db: &DatabaseConnection,
    lease_cutoff: DateTime<Utc>,
    max_run_cutoff: DateTime<Utc>,
) -> Result<u64> {
    let backend = db.get_database_backend();
    let expired = |sql: &mut Sql| {
        sql.push("locked_by IS NOT NULL AND ((locked_by LIKE '%:%:%' AND locked_at < ")
            .bind(lease_cutoff)
            .push(") OR (locked_by NOT LIKE '%:%:%' AND locked_at < ")
            .bind(max_run_cutoff)
            .push("))");
    };
    let mut sql = Sql::new(backend);
    sql.push("UPDATE ")
        .tasks_by_id()
        .push(" SET locked_by = NULL, locked_at = NULL WHERE ");
    if backend == DbBackend::MySql {
        let mut find = Sql::new(backend);
        find.push("SELECT id FROM background_task WHERE ");
        expired(&mut find);
        let ids: Vec<i64> = db
            .query_all_raw(find.build())
            .await?
            .iter()
            .map(read_id)
            .collect::<Result<_, DbErr>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        sql.push("id IN ").bind_list(ids).push(" AND ");
    }
    expired(&mut sql);
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

/// Hands tasks back unfinished (shutdown): unlocks the rows `runner` still
/// holds, without counting an attempt.
pub(crate) async fn release<C: ConnectionTrait>(db: &C, runner: &str, ids: &[i32]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("UPDATE ")
        .tasks_by_id()
        .push(" SET locked_by = NULL, locked_at = NULL WHERE locked_by = ")
        .bind(runner)
        .push(" AND id")
        .is_in(ids.iter().copied());
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}
