//! Task keys: a queue's key policy (`background_task_key_limit`), the
//! claim that goes key by key, and the per-key start ledger
//! (`background_task_key_start`).
//!
//! A claim of a queue with a key policy runs inside the claim's
//! transaction, after the queue's own limits ([`super::limits::room`]):
//!
//! 1. it locks the policy row (`FOR UPDATE`; SQLite's `BEGIN IMMEDIATE`
//!    already lets one writer in), so claims of the queue by any number of
//!    runners take turns, and each counts what the previous one took;
//! 2. it finds the keys with due tasks, in key order from where the last
//!    claim stopped (`next_key`), at most [`KEYS_PER_CLAIM`], with one
//!    statement (a recursive walk of `background_task_key_idx`, one index
//!    probe per key, whatever each key's backlog), plus the tasks without a
//!    key as one group of their own;
//! 3. it counts each key's running tasks and its starts in the window, and
//!    shares the claim out: every group an equal part, capped by what its
//!    key's limits leave, the rest to the groups that had more;
//! 4. it takes each group's first tasks in claim order (priority, then
//!    `run_at`, then id) and marks them, then records the per-key starts
//!    and where the next claim starts.
//!
//! So a key with 100,000 tasks waiting takes its share of each claim and
//! no more: a key enqueued after it is claimed by the next claim.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryOrder, QueryResult};

use super::Sql;
use super::limits::window_start;
use crate::config::PriorityOrdering;
use crate::entity::key_limit;
use crate::error::Result;

/// Most keys one claim serves; the next claim goes on from the last.
pub(crate) const KEYS_PER_CLAIM: usize = 64;

/// A queue's key policy, as a claim reads it under its lock.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub max_running: Option<i32>,
    /// Most starts per key, and the window in milliseconds.
    pub rate: Option<(i32, i64)>,
    pub next_key: Option<String>,
}

/// The key policy of `queue`, its row locked until the claim commits;
/// `None` without one.
pub(crate) async fn policy_for_update<C: ConnectionTrait>(
    txn: &C,
    queue: &str,
) -> Result<Option<Policy>, DbErr> {
    let mut select = Sql::new(txn.get_database_backend());
    select
        .push(
            "SELECT max_running, max_starts, period_ms, next_key FROM background_task_key_limit \
             WHERE queue = ",
        )
        .bind(queue);
    select.for_update();
    let Some(row) = txn.query_one_raw(select.build()).await? else {
        return Ok(None);
    };
    let max_starts = row.try_get_by_index::<Option<i32>>(1)?;
    let period_ms = row.try_get_by_index::<Option<i64>>(2)?;
    Ok(Some(Policy {
        max_running: row.try_get_by_index::<Option<i32>>(0)?,
        rate: max_starts.zip(period_ms),
        next_key: row.try_get_by_index::<Option<String>>(3)?,
    }))
}

/// What a keyed claim selects from.
pub(crate) struct KeyedFilter<'a> {
    pub queue: &'a str,
    /// Task names with a handler in this runner.
    pub names: &'a [String],
    pub ordering: PriorityOrdering,
}

/// A share of the claim: the tasks of one key, or those without one.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Group {
    Key(String),
    Unkeyed,
}

/// Claims up to `limit` due tasks of the filter's queue for `runner`, key
/// by key under `policy` (see the module's documentation), inside `txn`;
/// returns the claimed rows as the database returned them.
pub(crate) async fn claim<C: ConnectionTrait>(
    txn: &C,
    runner: &str,
    now: DateTime<Utc>,
    limit: usize,
    filter: &KeyedFilter<'_>,
    policy: &Policy,
) -> Result<Vec<QueryResult>, DbErr> {
    // Claims take the policy row's lock in turn, but each read its clock
    // before waiting for it: a claim whose `now` is behind the last start
    // recorded would count (and prune) the ledger's windows as of a moment
    // already gone, and start a key's tasks in a window that is full.
    // Its starts go at the last recorded start instead, so the ledger's
    // times follow the order of the claims.
    let now = if policy.rate.is_some() {
        now.max(last_start(txn, filter.queue).await?.unwrap_or(now))
    } else {
        now
    };
    let cap = KEYS_PER_CLAIM.min(limit).max(1);
    let mut keys = due_keys(txn, now, filter, policy.next_key.as_deref(), None, cap).await?;
    let walked_all = keys.len() < cap;
    if walked_all && let Some(after) = &policy.next_key {
        // Round the key order: the keys up to where the last claim stopped.
        let more = due_keys(txn, now, filter, None, Some(after), cap - keys.len()).await?;
        keys.extend(more);
    }
    let next_key = if keys.len() >= cap {
        keys.last().cloned()
    } else {
        None
    };
    let mut groups: Vec<Group> = keys.into_iter().map(Group::Key).collect();
    if has_unkeyed_due(txn, now, filter).await? {
        groups.push(Group::Unkeyed);
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let room = key_room(txn, now, filter.queue, &groups, policy).await?;
    let mut taken: Vec<usize> = vec![0; groups.len()];
    let mut rows = Vec::new();
    // A group that had fewer due tasks than its share leaves the rest to
    // the groups that filled theirs, in a second round.
    let mut hungry: Vec<usize> = (0..groups.len()).collect();
    for _ in 0..2 {
        let left = limit - rows.len();
        if left == 0 || hungry.is_empty() {
            break;
        }
        let caps: Vec<Option<usize>> = hungry
            .iter()
            .map(|&at| room[at].map(|room| room.saturating_sub(taken[at])))
            .collect();
        let asked = shares(left, &caps);
        let wanted: Vec<(usize, usize)> = hungry
            .iter()
            .zip(&asked)
            .filter(|(_, asked)| **asked > 0)
            .map(|(&at, &asked)| (at, asked))
            .collect();
        if wanted.is_empty() {
            break;
        }
        let ids = due_ids(txn, now, filter, &groups, &wanted).await?;
        let claimed = mark(txn, runner, now, &ids).await?;
        let mut got: BTreeMap<usize, usize> = BTreeMap::new();
        for row in &claimed {
            let key = row.try_get::<Option<String>>("", "limit_key")?;
            let at = groups
                .iter()
                .position(|group| match (group, &key) {
                    (Group::Key(group), Some(key)) => same_key(txn, group, key),
                    (Group::Unkeyed, None) => true,
                    _ => false,
                })
                .unwrap_or(0);
            *got.entry(at).or_default() += 1;
        }
        for (at, n) in &got {
            taken[*at] += n;
        }
        rows.extend(claimed);
        hungry = wanted
            .iter()
            .filter(|(at, asked)| got.get(at).copied().unwrap_or(0) >= *asked)
            .map(|(at, _)| *at)
            .collect();
    }
    if policy.rate.is_some() {
        let starts: Vec<(&str, usize)> = groups
            .iter()
            .zip(&taken)
            .filter_map(|(group, n)| match group {
                Group::Key(key) if *n > 0 => Some((key.as_str(), *n)),
                _ => None,
            })
            .collect();
        record_starts(txn, filter.queue, &starts, now).await?;
    }
    if next_key != policy.next_key {
        let mut update = Sql::new(txn.get_database_backend());
        update
            .push("UPDATE background_task_key_limit SET next_key = ")
            .bind(next_key)
            .push(" WHERE queue = ")
            .bind(filter.queue);
        txn.execute_raw(update.build()).await?;
    }
    Ok(rows)
}

/// Whether two keys are one, as the database compares them: MySQL's
/// default collations ignore case and trailing spaces.
fn same_key<C: ConnectionTrait>(conn: &C, a: &str, b: &str) -> bool {
    match conn.get_database_backend() {
        DbBackend::MySql => a.trim_end().to_lowercase() == b.trim_end().to_lowercase(),
        _ => a == b,
    }
}

/// Splits `limit` into equal shares, one per entry of `caps`, each at most
/// its cap (`None`: no cap); what a capped share cannot take goes to the
/// others.
fn shares(limit: usize, caps: &[Option<usize>]) -> Vec<usize> {
    let mut take = vec![0; caps.len()];
    let mut left = limit;
    let room = |at: usize, take: &[usize]| caps[at].map_or(usize::MAX, |cap| cap - take[at]);
    let mut open: Vec<usize> = (0..caps.len()).filter(|&at| room(at, &take) > 0).collect();
    while left > 0 && !open.is_empty() {
        let each = (left / open.len()).max(1);
        for &at in &open {
            let more = each.min(room(at, &take)).min(left);
            take[at] += more;
            left -= more;
        }
        open.retain(|&at| room(at, &take) > 0);
    }
    take
}

/// ` WHERE <due> AND queue = <queue>`: unlocked, not failed, due, with a
/// handler here (the claim's own conditions).
fn due_in_queue(sql: &mut Sql, alias: &str, now: DateTime<Utc>, filter: &KeyedFilter<'_>) {
    sql.push(" WHERE ")
        .push(alias)
        .push("locked_by IS NULL AND ")
        .push(alias)
        .push("failed_at IS NULL AND ")
        .push(alias)
        .push("run_at <= ")
        .bind(now)
        .push(" AND ")
        .push(alias)
        .push("queue = ")
        .bind(filter.queue)
        .push(" AND ")
        .push(alias)
        .push("task_name")
        .is_in(filter.names.iter().map(String::as_str));
}

/// Up to `max` distinct keys with due tasks, in key order, after `after`
/// and up to `upto` (both optional): one statement that walks the key
/// index one probe per key.
async fn due_keys<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    filter: &KeyedFilter<'_>,
    after: Option<&str>,
    upto: Option<&str>,
    max: usize,
) -> Result<Vec<String>, DbErr> {
    if max == 0 {
        return Ok(Vec::new());
    }
    if txn.get_database_backend() == DbBackend::MySql {
        return due_keys_one_by_one(txn, now, filter, after, upto, max).await;
    }
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("WITH RECURSIVE k(limit_key, n) AS (SELECT (SELECT limit_key FROM background_task");
    due_in_queue(&mut sql, "", now, filter);
    match after {
        Some(after) => sql.push(" AND limit_key > ").bind(after.to_owned()),
        None => sql.push(" AND limit_key IS NOT NULL"),
    };
    if let Some(upto) = upto {
        sql.push(" AND limit_key <= ").bind(upto.to_owned());
    }
    sql.push(" ORDER BY limit_key LIMIT 1), 1 UNION ALL SELECT (SELECT t.limit_key FROM background_task t");
    due_in_queue(&mut sql, "t.", now, filter);
    sql.push(" AND t.limit_key > k.limit_key");
    if let Some(upto) = upto {
        sql.push(" AND t.limit_key <= ").bind(upto.to_owned());
    }
    sql.push(
        " ORDER BY t.limit_key LIMIT 1), k.n + 1 FROM k WHERE k.limit_key IS NOT NULL AND k.n < ",
    )
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .push(") SELECT limit_key FROM k WHERE limit_key IS NOT NULL");
    txn.query_all_raw(sql.build())
        .await?
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
}

/// [`due_keys`] on MySQL/MariaDB: one statement per key. MariaDB runs the
/// recursive walk's inner probe as a scan of the queue's rows (120 ms over
/// 100,000 rows of one key, where each probe alone takes 0.2 ms).
async fn due_keys_one_by_one<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    filter: &KeyedFilter<'_>,
    after: Option<&str>,
    upto: Option<&str>,
    max: usize,
) -> Result<Vec<String>, DbErr> {
    let mut keys: Vec<String> = Vec::new();
    while keys.len() < max {
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push("SELECT limit_key FROM background_task");
        due_in_queue(&mut sql, "", now, filter);
        match keys.last().map(String::as_str).or(after) {
            Some(after) => sql.push(" AND limit_key > ").bind(after.to_owned()),
            None => sql.push(" AND limit_key IS NOT NULL"),
        };
        if let Some(upto) = upto {
            sql.push(" AND limit_key <= ").bind(upto.to_owned());
        }
        sql.push(" ORDER BY limit_key LIMIT 1");
        match txn.query_one_raw(sql.build()).await? {
            Some(row) => keys.push(row.try_get_by_index::<String>(0)?),
            None => break,
        }
    }
    Ok(keys)
}

/// Whether the queue has due tasks without a key.
async fn has_unkeyed_due<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    filter: &KeyedFilter<'_>,
) -> Result<bool, DbErr> {
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("SELECT id FROM background_task");
    due_in_queue(&mut sql, "", now, filter);
    sql.push(" AND limit_key IS NULL LIMIT 1");
    Ok(txn.query_one_raw(sql.build()).await?.is_some())
}

/// The latest start the ledger of `queue` records.
async fn last_start<C: ConnectionTrait>(
    txn: &C,
    queue: &str,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let backend = txn.get_database_backend();
    let mut select = Sql::new(backend);
    select
        .push("SELECT MAX(started_at) FROM background_task_key_start WHERE queue = ")
        .bind(queue);
    let Some(row) = txn.query_one_raw(select.build()).await? else {
        return Ok(None);
    };
    Ok(match backend {
        DbBackend::Postgres => row.try_get_by_index::<Option<DateTime<Utc>>>(0)?,
        _ => row
            .try_get_by_index::<Option<chrono::NaiveDateTime>>(0)?
            .map(|naive| super::from_stored(backend, naive)),
    })
}

/// How many more tasks of each group may start now under the policy's
/// per-key limits (`None`: no limit; the unkeyed group has none).
async fn key_room<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    queue: &str,
    groups: &[Group],
    policy: &Policy,
) -> Result<Vec<Option<usize>>, DbErr> {
    let keys: Vec<&str> = groups
        .iter()
        .filter_map(|group| match group {
            Group::Key(key) => Some(key.as_str()),
            Group::Unkeyed => None,
        })
        .collect();
    let mut room: BTreeMap<String, i64> = BTreeMap::new();
    let mut limited = false;
    if let (Some(max_running), false) = (policy.max_running, keys.is_empty()) {
        limited = true;
        let running = counts(txn, running_per_key(txn, queue, &keys)).await?;
        for key in &keys {
            let used = lookup(txn, &running, key);
            room.insert((*key).to_owned(), i64::from(max_running) - used);
        }
    }
    if let (Some((max_starts, period_ms)), false) = (policy.rate, keys.is_empty()) {
        limited = true;
        let since = window_start(now, period_ms);
        let mut forget = Sql::new(txn.get_database_backend());
        forget
            .push("DELETE FROM background_task_key_start WHERE queue = ")
            .bind(queue)
            .push(" AND started_at <= ")
            .bind(since);
        txn.execute_raw(forget.build()).await?;
        let started = counts(txn, starts_per_key(txn, queue, Some(&keys), since)).await?;
        for key in &keys {
            let rate_room = i64::from(max_starts) - lookup(txn, &started, key);
            let entry = room.entry((*key).to_owned()).or_insert(rate_room);
            *entry = (*entry).min(rate_room);
        }
    }
    Ok(groups
        .iter()
        .map(|group| match group {
            Group::Key(key) if limited => {
                Some(usize::try_from(room.get(key).copied().unwrap_or(0).max(0)).unwrap_or(0))
            }
            _ => None,
        })
        .collect())
}

/// `counts[key]`, the key compared as the database compares it.
fn lookup<C: ConnectionTrait>(conn: &C, counts: &BTreeMap<String, i64>, key: &str) -> i64 {
    counts
        .iter()
        .filter(|(counted, _)| same_key(conn, counted, key))
        .map(|(_, n)| *n)
        .sum()
}

/// `SELECT limit_key, COUNT(*)` of the running tasks of `keys` in `queue`.
fn running_per_key<C: ConnectionTrait>(conn: &C, queue: &str, keys: &[&str]) -> Sql {
    let mut sql = Sql::new(conn.get_database_backend());
    let count = match conn.get_database_backend() {
        DbBackend::MySql => "SELECT limit_key, CAST(COUNT(*) AS SIGNED)",
        _ => "SELECT limit_key, COUNT(*)",
    };
    sql.push(count)
        .push(" FROM background_task WHERE locked_by IS NOT NULL AND queue = ")
        .bind(queue)
        .push(" AND limit_key")
        .is_in(keys.iter().copied())
        .push(" GROUP BY limit_key");
    sql
}

/// `SELECT limit_key, SUM(starts)` of the ledger of `queue` after `since`,
/// for `keys` (or every key).
fn starts_per_key<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    keys: Option<&[&str]>,
    since: DateTime<Utc>,
) -> Sql {
    // SUM of an integer column is a bigint on PostgreSQL, an integer on
    // SQLite and a DECIMAL on MySQL, which is cast back.
    let sum = match conn.get_database_backend() {
        DbBackend::MySql => "SELECT limit_key, CAST(SUM(starts) AS SIGNED)",
        _ => "SELECT limit_key, SUM(starts)",
    };
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push(sum)
        .push(" FROM background_task_key_start WHERE queue = ")
        .bind(queue)
        .push(" AND started_at > ")
        .bind(since);
    if let Some(keys) = keys {
        sql.push(" AND limit_key").is_in(keys.iter().copied());
    }
    sql.push(" GROUP BY limit_key");
    sql
}

/// Runs a `SELECT key, count` and collects it.
async fn counts<C: ConnectionTrait>(conn: &C, sql: Sql) -> Result<BTreeMap<String, i64>, DbErr> {
    let mut counts = BTreeMap::new();
    for row in conn.query_all_raw(sql.build()).await? {
        let key = row.try_get_by_index::<Option<String>>(0)?;
        let n = row.try_get_by_index::<i64>(1)?;
        if let Some(key) = key {
            *counts.entry(key).or_default() += n;
        }
    }
    Ok(counts)
}

/// The ids of each wanted group's first due tasks in claim order, at most
/// its share: one `UNION ALL` of one ordered, limited select per group.
async fn due_ids<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    filter: &KeyedFilter<'_>,
    groups: &[Group],
    wanted: &[(usize, usize)],
) -> Result<Vec<i64>, DbErr> {
    let mut sql = Sql::new(txn.get_database_backend());
    for (i, (at, asked)) in wanted.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        // Walked in claim order within the key; left to itself MariaDB
        // walks the claim index instead, past every earlier key's rows.
        sql.push(match sql.backend() {
            DbBackend::Sqlite => {
                "SELECT id FROM (SELECT id FROM background_task INDEXED BY background_task_key_idx"
            }
            DbBackend::MySql => {
                "SELECT id FROM (SELECT id FROM background_task FORCE INDEX \
                 (background_task_key_idx)"
            }
            _ => "SELECT id FROM (SELECT id FROM background_task",
        });
        due_in_queue(&mut sql, "", now, filter);
        match &groups[*at] {
            Group::Key(key) => sql.push(" AND limit_key = ").bind(key.clone()),
            Group::Unkeyed => sql.push(" AND limit_key IS NULL"),
        };
        sql.push(match filter.ordering {
            PriorityOrdering::Desc => " ORDER BY priority DESC, run_at, id",
            PriorityOrdering::Asc => " ORDER BY priority ASC, run_at, id",
        });
        sql.limit(*asked);
        sql.push(") g").push(&i.to_string());
    }
    txn.query_all_raw(sql.build())
        .await?
        .iter()
        .map(super::claim::read_id)
        .collect()
}

/// Marks the rows `ids` that are still unlocked as `runner`'s; returns
/// them.
async fn mark<C: ConnectionTrait>(
    txn: &C,
    runner: &str,
    now: DateTime<Utc>,
    ids: &[i64],
) -> Result<Vec<QueryResult>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = txn.get_database_backend();
    let mut update = Sql::new(backend);
    update.push("UPDATE ").tasks_by_id();
    super::claim::lock_columns(&mut update, runner, now);
    update
        .push(" WHERE locked_by IS NULL AND id")
        .is_in(ids.iter().copied());
    if backend != DbBackend::MySql {
        update.push(" RETURNING *");
        return txn.query_all_raw(update.build()).await;
    }
    txn.execute_raw(update.build()).await?;
    let mut read = Sql::new(backend);
    read.push("SELECT * FROM ")
        .tasks_by_id()
        .push(" WHERE locked_by = ")
        .bind(runner)
        .push(" AND id")
        .is_in(ids.iter().copied());
    txn.query_all_raw(read.build()).await
}

/// Writes the starts of each key at `now` into the per-key ledger.
async fn record_starts<C: ConnectionTrait>(
    txn: &C,
    queue: &str,
    starts: &[(&str, usize)],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    if starts.is_empty() {
        return Ok(());
    }
    let mut insert = Sql::new(txn.get_database_backend());
    insert.push(
        "INSERT INTO background_task_key_start (queue, limit_key, started_at, starts) VALUES ",
    );
    for (i, (key, n)) in starts.iter().enumerate() {
        if i > 0 {
            insert.push(", ");
        }
        insert
            .push("(")
            .bind(queue)
            .push(", ")
            .bind(*key)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(i32::try_from(*n).unwrap_or(i32::MAX))
            .push(")");
    }
    txn.execute_raw(insert.build()).await?;
    Ok(())
}

/// Sets (or replaces) the key policy of `queue`.
pub(crate) async fn set_policy<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    max_running: Option<i32>,
    rate: Option<(i32, i64)>,
) -> Result<()> {
    let row = key_limit::ActiveModel {
        queue: sea_orm::ActiveValue::Set(queue.to_owned()),
        max_running: sea_orm::ActiveValue::Set(max_running),
        max_starts: sea_orm::ActiveValue::Set(rate.map(|(n, _)| n)),
        period_ms: sea_orm::ActiveValue::Set(rate.map(|(_, ms)| ms)),
        next_key: sea_orm::ActiveValue::Set(None),
    };
    let insert = key_limit::Entity::insert(row).on_conflict(
        OnConflict::column(key_limit::Column::Queue)
            .update_columns([
                key_limit::Column::MaxRunning,
                key_limit::Column::MaxStarts,
                key_limit::Column::PeriodMs,
            ])
            .to_owned(),
    );
    super::execute(conn, insert).await?;
    Ok(())
}

/// Removes the key policy of `queue` and its ledger; false when it had
/// none.
pub(crate) async fn remove_policy<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    let mut delete = Sql::new(conn.get_database_backend());
    delete
        .push("DELETE FROM background_task_key_limit WHERE queue = ")
        .bind(queue);
    let removed = conn.execute_raw(delete.build()).await?.rows_affected() > 0;
    let mut forget = Sql::new(conn.get_database_backend());
    forget
        .push("DELETE FROM background_task_key_start WHERE queue = ")
        .bind(queue);
    conn.execute_raw(forget.build()).await?;
    Ok(removed)
}

/// Every key policy, by queue name.
pub(crate) async fn policies<C: ConnectionTrait>(conn: &C) -> Result<Vec<key_limit::Model>> {
    let select = key_limit::Entity::find().order_by_asc(key_limit::Column::Queue);
    super::rows::select_all(conn, select).await
}

/// One key's current use.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyUse {
    pub running: i64,
    pub waiting: i64,
    pub started_in_window: i64,
}

/// The current use of the keys of `queue` under its policy: running and
/// waiting tasks per key, and starts in the window that ends at `now`
/// (with a rate), at most `max` keys, busiest first.
pub(crate) async fn key_uses<C: ConnectionTrait>(
    conn: &C,
    policy: &key_limit::Model,
    now: DateTime<Utc>,
    max: usize,
) -> Result<Vec<(String, KeyUse)>> {
    let backend = conn.get_database_backend();
    let count = match backend {
        DbBackend::MySql => "CAST(COUNT(*) AS SIGNED)",
        _ => "COUNT(*)",
    };
    let mut uses: BTreeMap<String, KeyUse> = BTreeMap::new();
    for running in [true, false] {
        let mut sql = Sql::new(backend);
        sql.push("SELECT limit_key, ")
            .push(count)
            .push(" FROM background_task WHERE queue = ")
            .bind(policy.queue.as_str())
            .push(if running {
                " AND locked_by IS NOT NULL"
            } else {
                " AND locked_by IS NULL AND failed_at IS NULL"
            })
            .push(" AND limit_key IS NOT NULL GROUP BY limit_key");
        for (key, n) in counts(conn, sql).await? {
            let entry = uses.entry(key).or_default();
            if running {
                entry.running = n;
            } else {
                entry.waiting = n;
            }
        }
    }
    if let Some(period_ms) = policy.period_ms {
        let since = window_start(now, period_ms);
        let started = counts(conn, starts_per_key(conn, &policy.queue, None, since)).await?;
        for (key, n) in started {
            uses.entry(key).or_default().started_in_window = n;
        }
    }
    let mut uses: Vec<(String, KeyUse)> = uses.into_iter().collect();
    uses.sort_by(|a, b| {
        (b.1.running + b.1.started_in_window, b.1.waiting)
            .cmp(&(a.1.running + a.1.started_in_window, a.1.waiting))
            .then_with(|| a.0.cmp(&b.0))
    });
    uses.truncate(max);
    Ok(uses)
}

/// Queues with a key policy.
pub(crate) async fn keyed_queues<C: ConnectionTrait>(conn: &C) -> Result<Vec<String>> {
    Ok(policies(conn)
        .await?
        .into_iter()
        .map(|policy| policy.queue)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_equal_and_capped_shares_give_way() {
        assert_eq!(shares(128, &[None, None]), [64, 64]);
        assert_eq!(shares(10, &[None, None, None]), [4, 3, 3]);
        assert_eq!(shares(128, &[Some(2), None]), [2, 126]);
        assert_eq!(shares(5, &[Some(0), Some(1), Some(1)]), [0, 1, 1]);
        assert_eq!(shares(2, &[None, None, None, None]), [1, 1, 0, 0]);
        assert_eq!(shares(0, &[None]), [0]);
        let total: usize = shares(100, &[Some(7), None, Some(30), None]).iter().sum();
        assert_eq!(total, 100);
    }
}
