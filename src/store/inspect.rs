//! Statements behind the operator's read views (dashboard, CLI, metrics):
//! pages of tasks per state, counts per queue and state, the oldest due
//! task, completions per time bucket, one task's repeat chain.
//!
//! Pages are keyset-paginated (`WHERE (sort keys) > (last row's keys)`), so
//! page 1,000 costs what page 1 costs and no page needs a COUNT over the
//! table. Each state's order follows an index: pending rows walk the claim
//! index (named to SQLite and MySQL, whose planners otherwise sort every
//! due row), scheduled and history rows walk Django's `run_at` index.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Value};

use super::Sql;
use crate::entity::{completed_task, task};
use crate::error::{Result, UnreadableRow};
use crate::inspect::{Cursor, Filter, QueueFilter, State};

/// Which way a page walks from its cursor, in a state's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The rows after the cursor, in order: the next page.
    Forward,
    /// The rows before the cursor, nearest first (in reverse order): the
    /// previous page, which the caller turns round.
    Backward,
}

/// One sort key of a state's order: its column, whether it sorts
/// descending, and its value in `cursor`.
struct Key {
    column: &'static str,
    descending: bool,
    value: Value,
}

/// The sort keys of `state`'s order, most significant first, with the
/// values `cursor` holds (placeholders for the `ORDER BY` alone). The last
/// key is the id, so the order is total and no row shows on two pages.
fn keys(state: State, cursor: Option<&Cursor>) -> Vec<Key> {
    let key = |column, descending, value: Value| Key {
        column,
        descending,
        value,
    };
    let id = Value::from(cursor.map_or(0, |c| c.id));
    let at = Value::from(cursor.map_or_else(DateTime::<Utc>::default, |c| c.at));
    match state {
        State::Pending => vec![
            key(
                "priority",
                true,
                Value::from(cursor.map_or(0, |c| c.priority)),
            ),
            key("run_at", false, at),
            key("id", false, id),
        ],
        State::Scheduled | State::SetAside => {
            vec![key("run_at", false, at), key("id", false, id)]
        }
        State::Running => vec![key("locked_at", false, at), key("id", false, id)],
        State::Failed | State::Completed => {
            vec![key("run_at", true, at), key("id", true, id)]
        }
    }
}

/// `ORDER BY` text of `state`'s order, walked in `direction`.
fn order_by(state: State, direction: Direction) -> String {
    keys(state, None)
        .iter()
        .map(|key| {
            let descending = key.descending != (direction == Direction::Backward);
            format!("{} {}", key.column, if descending { "DESC" } else { "ASC" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `WHERE` text selecting `state`'s rows at `now`.
fn push_state(sql: &mut Sql, state: State, now: DateTime<Utc>) {
    match state {
        State::Pending => {
            sql.push("locked_by IS NULL AND failed_at IS NULL AND run_at <= ")
                .bind(now);
        }
        State::Scheduled => {
            sql.push("locked_by IS NULL AND failed_at IS NULL AND run_at > ")
                .bind(now);
        }
        State::Running => {
            sql.push("locked_by IS NOT NULL");
        }
        State::Failed => {
            sql.push("failed_at IS NOT NULL");
        }
        State::SetAside => {
            sql.push("locked_by IS NULL AND failed_at IS NOT NULL");
        }
        State::Completed => {
            sql.push("failed_at IS NULL");
        }
    }
}

/// The `LIKE` escape character: `!` rather than a backslash, whose meaning
/// inside string literals differs between MySQL and the others.
const LIKE_ESCAPE: char = '!';

/// `%text%` with the LIKE wildcards in `text` escaped.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// `column LIKE <pattern> ESCAPE '!'` without regard to case, in
/// `backend`'s dialect: the text before and after the pattern's
/// placeholder. Free-text search is case-insensitive on every backend:
/// `ILIKE` on PostgreSQL (whose `LIKE` tells case; a `pg_trgm` index
/// serves `ILIKE` as it serves `LIKE`), `LOWER(..) LIKE LOWER(..)` on
/// MySQL (whose `LIKE` follows the column's collation, case-sensitive when
/// binary), `LIKE` on SQLite (which folds ASCII letters only: `É` does not
/// find `é` there). A `%text%` pattern walks the rows on every backend
/// either way; the exact-name filter, which an index serves, is left as it
/// is.
pub(crate) fn case_insensitive_like(backend: DbBackend, column: &str) -> (String, String) {
    let escape = format!(" ESCAPE '{LIKE_ESCAPE}'");
    match backend {
        DbBackend::Postgres => (format!("{column} ILIKE "), escape),
        DbBackend::MySql => (format!("LOWER({column}) LIKE LOWER("), format!("){escape}")),
        _ => (format!("{column} LIKE "), escape),
    }
}

/// Appends [`case_insensitive_like`] of `column`, bound to `pattern`.
fn push_contains(sql: &mut Sql, column: &str, pattern: &str) {
    let (before, after) = case_insensitive_like(sql.backend(), column);
    sql.push(&before).bind(pattern.to_owned()).push(&after);
}

/// ` AND ...` for each filter that is set.
fn push_filter(sql: &mut Sql, filter: &Filter) {
    match &filter.queue {
        QueueFilter::Any => {}
        QueueFilter::Default => {
            sql.push(" AND queue IS NULL");
        }
        QueueFilter::Named(queue) => {
            sql.push(" AND queue = ").bind(queue.clone());
        }
    }
    if let Some(name) = &filter.name {
        sql.push(" AND task_name = ").bind(name.clone());
    }
    if let Some(text) = filter.search.as_deref().filter(|t| !t.is_empty()) {
        let pattern = contains_pattern(text);
        sql.push(" AND (");
        push_contains(sql, "task_name", &pattern);
        sql.push(" OR ");
        push_contains(sql, "task_params", &pattern);
        sql.push(")");
    }
    if let Some(since) = filter.since {
        sql.push(" AND run_at >= ").bind(since);
    }
    if let Some(until) = filter.until {
        sql.push(" AND run_at < ").bind(until);
    }
}

/// ` AND (rows past the cursor)`, in `state`'s order walked in
/// `direction`: for keys `a, b, id`, `(a > ? OR (a = ? AND (b > ? OR (b = ?
/// AND id > ?))))`, each `>` a `<` where the key sorts descending, or the
/// walk goes backward (both: `>` again).
fn push_past(sql: &mut Sql, state: State, cursor: &Cursor, direction: Direction) {
    let keys = keys(state, Some(cursor));
    sql.push(" AND ");
    for (i, key) in keys.iter().enumerate() {
        let past = if key.descending == (direction == Direction::Backward) {
            " > "
        } else {
            " < "
        };
        sql.push("(")
            .push(key.column)
            .push(past)
            .bind(key.value.clone());
        if i + 1 < keys.len() {
            sql.push(" OR (")
                .push(key.column)
                .push(" = ")
                .bind(key.value.clone())
                .push(" AND ");
        }
    }
    for i in 0..keys.len() {
        sql.push(if i + 1 < keys.len() { "))" } else { ")" });
    }
}

/// `SELECT * FROM table [index hint] WHERE state AND filters AND after
/// ORDER BY .. LIMIT limit`.
fn page_statement(
    backend: DbBackend,
    state: State,
    filter: &Filter,
    from: Option<(&Cursor, Direction)>,
    limit: u64,
    now: DateTime<Utc>,
) -> Sql {
    let mut sql = Sql::new(backend);
    let table = if state.in_history() {
        "background_task_completedtask"
    } else {
        "background_task"
    };
    sql.push("SELECT * FROM ").push(table);
    if state == State::Pending {
        // The claim index holds exactly the unlocked, unfailed rows in
        // pending order; without the hint SQLite and MySQL pick the run_at
        // index and sort every due row for each page.
        match backend {
            DbBackend::Sqlite => {
                sql.push(" INDEXED BY background_task_claim_idx");
            }
            DbBackend::MySql => {
                sql.push(" FORCE INDEX (background_task_claim_idx)");
            }
            _ => {}
        }
    }
    sql.push(" WHERE ");
    push_state(&mut sql, state, now);
    push_filter(&mut sql, filter);
    let direction = from.map_or(Direction::Forward, |(_, direction)| direction);
    if let Some((cursor, direction)) = from {
        push_past(&mut sql, state, cursor, direction);
    }
    sql.push(" ORDER BY ")
        .push(&order_by(state, direction))
        .push(" LIMIT ")
        .bind(limit as i64);
    sql
}

/// Up to `limit` rows of `E` in `state`: `task::Entity` for the waiting
/// and running states, `completed_task::Entity` for the history states.
/// From the first row when `from` is `None`; else the rows past the
/// cursor in its direction, nearest first (so a backward page comes in
/// reverse order). Rows that cannot be decoded come apart, so one bad row
/// does not hide the page.
pub(crate) async fn page<E: EntityTrait, C: ConnectionTrait>(
    conn: &C,
    state: State,
    filter: &Filter,
    from: Option<(&Cursor, Direction)>,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<(Vec<E::Model>, Vec<UnreadableRow>)> {
    let backend = conn.get_database_backend();
    let statement = page_statement(backend, state, filter, from, limit, now);
    super::rows::lenient::<E, C>(conn, statement.build()).await
}

#[derive(Debug, FromQueryResult)]
struct StateCountRow {
    queue: Option<String>,
    state: String,
    count: i64,
}

/// Waiting and running tasks per queue and state at `now`: one pass over
/// the task table.
pub(crate) async fn counts<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
) -> Result<Vec<(Option<String>, State, i64)>> {
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push(
        "SELECT queue, state, COUNT(*) AS count FROM (SELECT queue, CASE \
         WHEN locked_by IS NOT NULL THEN 'running' \
         WHEN failed_at IS NOT NULL THEN 'set-aside' \
         WHEN run_at <= ",
    )
    .bind(now)
    .push(
        " THEN 'pending' ELSE 'scheduled' END AS state FROM background_task) counted \
         GROUP BY queue, state ORDER BY queue, state",
    );
    let rows = StateCountRow::find_by_statement(sql.build())
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.queue, row.state.parse().ok()?, row.count)))
        .collect())
}

/// Failed history rows per queue, counting at most `cap` rows (history
/// tables grow without bound; a bounded count stays fast).
pub(crate) async fn failed_counts<C: ConnectionTrait>(
    conn: &C,
    cap: u64,
) -> Result<Vec<(Option<String>, i64)>> {
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push(
        "SELECT queue, 'failed' AS state, COUNT(*) AS count FROM (SELECT queue \
         FROM background_task_completedtask WHERE failed_at IS NOT NULL LIMIT ",
    )
    .bind(cap as i64)
    .push(") capped GROUP BY queue ORDER BY queue");
    let rows = StateCountRow::find_by_statement(sql.build())
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|row| (row.queue, row.count)).collect())
}

/// History rows that failed (`failed`) or succeeded, counting at most
/// `cap` rows.
pub(crate) async fn history_count<C: ConnectionTrait>(
    conn: &C,
    failed: bool,
    cap: u64,
) -> Result<i64> {
    #[derive(Debug, FromQueryResult)]
    struct CountRow {
        count: i64,
    }
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push("SELECT COUNT(*) AS count FROM (SELECT id FROM background_task_completedtask WHERE ")
        .push(if failed {
            "failed_at IS NOT NULL"
        } else {
            "failed_at IS NULL"
        })
        .push(" LIMIT ")
        .bind(cap as i64)
        .push(") capped");
    let row = CountRow::find_by_statement(sql.build()).one(conn).await?;
    Ok(row.map_or(0, |row| row.count))
}

/// The due task that has waited longest (earliest run_at), if any.
pub(crate) async fn oldest_due<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
) -> Result<Option<task::Model>> {
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push("SELECT * FROM background_task WHERE ");
    push_state(&mut sql, State::Pending, now);
    sql.push(" ORDER BY run_at ASC, id ASC LIMIT 1");
    let (mut due, _unreadable) = super::rows::lenient::<task::Entity, C>(conn, sql.build()).await?;
    Ok(due.pop())
}

#[derive(Debug, FromQueryResult)]
struct BucketRow {
    bucket: i64,
    failed: i64,
    count: i64,
}

/// History rows finished in `[start, start + bucket × buckets)` per bucket
/// of `bucket`, as `(bucket index, failed, count)`. The `run_at` of a
/// history row is its completion time.
pub(crate) async fn completions<C: ConnectionTrait>(
    conn: &C,
    start: DateTime<Utc>,
    bucket: TimeDelta,
    buckets: u32,
) -> Result<Vec<(u32, bool, i64)>> {
    let backend = conn.get_database_backend();
    let seconds = bucket.num_seconds().max(1);
    let end = start + bucket * buckets as i32;
    let mut sql = Sql::new(backend);
    sql.push("SELECT bucket, failed, COUNT(*) AS count FROM (SELECT ");
    // Seconds since `start`, whole, in each dialect.
    match backend {
        DbBackend::Postgres => {
            sql.push("CAST(FLOOR(EXTRACT(EPOCH FROM (run_at - ")
                .bind(start)
                .push(")) / ")
                .bind(seconds)
                .push(") AS BIGINT)");
        }
        DbBackend::MySql => {
            sql.push("CAST(FLOOR(TIMESTAMPDIFF(SECOND, ")
                .bind(start)
                .push(", run_at) / ")
                .bind(seconds)
                .push(") AS SIGNED)");
        }
        _ => {
            sql.push("CAST((julianday(run_at) - julianday(")
                .bind(start)
                .push(")) * 86400.0 / ")
                .bind(seconds)
                .push(" AS INTEGER)");
        }
    }
    let integer = match backend {
        DbBackend::MySql => "SIGNED",
        DbBackend::Postgres => "BIGINT",
        _ => "INTEGER",
    };
    sql.push(" AS bucket, CAST(CASE WHEN failed_at IS NULL THEN 0 ELSE 1 END AS ")
        .push(integer)
        .push(
            ") AS failed \
             FROM background_task_completedtask WHERE run_at >= ",
        )
        .bind(start)
        .push(" AND run_at < ")
        .bind(end)
        .push(") timed GROUP BY bucket, failed ORDER BY bucket, failed");
    let rows = BucketRow::find_by_statement(sql.build()).all(conn).await?;
    Ok(rows
        .into_iter()
        .filter(|row| (0..i64::from(buckets)).contains(&row.bucket))
        .map(|row| (row.bucket as u32, row.failed != 0, row.count))
        .collect())
}

/// Every queue named by a waiting, running or history row (`None`: the
/// default queue), sorted. Each table is read through its `queue` index.
pub(crate) async fn queues<C: ConnectionTrait>(conn: &C) -> Result<Vec<Option<String>>> {
    #[derive(Debug, FromQueryResult)]
    struct QueueRow {
        queue: Option<String>,
    }
    let mut sql = Sql::new(conn.get_database_backend());
    sql.push(
        "SELECT DISTINCT queue FROM background_task UNION \
         SELECT DISTINCT queue FROM background_task_completedtask",
    );
    let mut queues: Vec<Option<String>> = QueueRow::find_by_statement(sql.build())
        .all(conn)
        .await?
        .into_iter()
        .map(|row| row.queue)
        .collect();
    queues.sort();
    queues.dedup();
    Ok(queues)
}

/// Waiting rows and history rows of one repeat chain (same name and hash),
/// newest first, at most `limit` of each.
pub(crate) async fn chain<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    hash: &str,
    limit: u64,
) -> Result<(Vec<task::Model>, Vec<completed_task::Model>)> {
    use super::rows::{lenient, statement};
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let waiting = task::Entity::find()
        .filter(task::Column::TaskHash.eq(hash))
        .filter(task::Column::TaskName.eq(name))
        .order_by_asc(task::Column::RunAt)
        .limit(limit);
    let (waiting, _) = lenient::<task::Entity, C>(conn, statement(conn, waiting)).await?;
    let history = completed_task::Entity::find()
        .filter(completed_task::Column::TaskHash.eq(hash))
        .filter(completed_task::Column::TaskName.eq(name))
        .order_by_desc(completed_task::Column::RunAt)
        .order_by_desc(completed_task::Column::Id)
        .limit(limit);
    let (history, _) = lenient::<completed_task::Entity, C>(conn, statement(conn, history)).await?;
    Ok((waiting, history))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("a_b%c!d"), "%a!_b!%c!!d%");
        assert_eq!(contains_pattern(""), "%%");
    }

    #[test]
    fn pages_bind_every_value() {
        let filter = Filter {
            queue: QueueFilter::Named("q".into()),
            name: Some("n".into()),
            search: Some("50%".into()),
            since: Some(Utc::now()),
            until: None,
        };
        let cursor = Cursor {
            priority: 3,
            at: Utc::now(),
            id: 9,
        };
        let sql = page_statement(
            DbBackend::Postgres,
            State::Pending,
            &filter,
            Some((&cursor, Direction::Forward)),
            20,
            Utc::now(),
        )
        .build();
        assert!(!sql.sql.contains("50%"), "{}", sql.sql);
        assert!(sql.sql.contains("ORDER BY priority DESC"), "{}", sql.sql);
        assert_eq!(sql.values.map_or(0, |v| v.0.len()), 12);
    }

    /// The text of `state`'s page past a cursor, without the filters.
    fn past(state: State, direction: Direction) -> String {
        let cursor = Cursor {
            priority: 3,
            at: Utc::now(),
            id: 9,
        };
        let sql = page_statement(
            DbBackend::Sqlite,
            state,
            &Filter::default(),
            Some((&cursor, direction)),
            20,
            Utc::now(),
        )
        .build()
        .sql;
        let start = sql.find("AND (").unwrap_or(0);
        sql[start..].to_owned()
    }

    #[test]
    fn pages_walk_both_ways_in_each_order() {
        assert_eq!(
            past(State::Pending, Direction::Forward),
            "AND (priority < ? OR (priority = ? AND (run_at > ? OR (run_at = ? AND (id > ?))))) \
             ORDER BY priority DESC, run_at ASC, id ASC LIMIT ?"
        );
        assert_eq!(
            past(State::Pending, Direction::Backward),
            "AND (priority > ? OR (priority = ? AND (run_at < ? OR (run_at = ? AND (id < ?))))) \
             ORDER BY priority ASC, run_at DESC, id DESC LIMIT ?"
        );
        assert_eq!(
            past(State::Completed, Direction::Backward),
            "AND (run_at > ? OR (run_at = ? AND (id > ?))) ORDER BY run_at ASC, id ASC LIMIT ?"
        );
        assert_eq!(
            past(State::Running, Direction::Forward),
            "AND (locked_at > ? OR (locked_at = ? AND (id > ?))) \
             ORDER BY locked_at ASC, id ASC LIMIT ?"
        );
    }
}
