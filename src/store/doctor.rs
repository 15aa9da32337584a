//! What `bgtasks doctor` reads: which tables, indexes and trigger exist,
//! the server's version and clock, SQLite's journal mode, and the locks
//! held per runner identity.
//!
//! Times are bound through [`portable`](super::portable), as everywhere.
//! Catalog queries differ per backend; they are chosen in one place,
//! [`Dialect::of`]. Every statement only reads, and none touches a table
//! that may be missing unless the caller has seen it exist.

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};

use super::{Sql, portable};
use crate::entity::task;
use crate::error::Result;

/// The catalog queries of one backend. Table names are bound after each
/// text, as a list (`IN (...)`).
struct Dialect {
    /// Names of the listed tables that exist.
    tables: &'static str,
    /// `(table, index, first column)` of every index on the listed
    /// tables; the column is NULL when the index does not hold it whole for
    /// every row (an expression, a partial or a prefix index).
    indexes: &'static str,
    /// The server's version, as text.
    version: &'static str,
    /// The server's clock, in UTC; `None`: the database is on this host.
    clock: Option<&'static str>,
}

impl Dialect {
    fn of(backend: DbBackend) -> Self {
        match backend {
            DbBackend::Postgres => Dialect {
                tables: "SELECT table_name::text FROM information_schema.tables \
                         WHERE table_schema = current_schema() AND table_name IN ",
                // indkey[0] is the first column (0 for an expression); a
                // partial index (indpred) covers only some rows.
                indexes: "SELECT t.relname::text, i.relname::text, \
                          CASE WHEN x.indpred IS NULL THEN a.attname::text END \
                          FROM pg_index x \
                          JOIN pg_class i ON i.oid = x.indexrelid \
                          JOIN pg_class t ON t.oid = x.indrelid \
                          LEFT JOIN pg_attribute a \
                          ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0] \
                          WHERE t.relnamespace = current_schema()::regnamespace \
                          AND t.relname IN ",
                version: "SELECT current_setting('server_version')",
                // clock_timestamp(), not now(): the time of reading, not of
                // the transaction's start.
                clock: Some("SELECT clock_timestamp()"),
            },
            // information_schema's text columns come back as binary
            // strings on some versions: cast them.
            DbBackend::MySql => Dialect {
                tables: "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                         WHERE table_schema = DATABASE() AND table_name IN ",
                // One row per index column: keep the first. A prefix index
                // (sub_part) does not hold the whole column.
                indexes: "SELECT CAST(table_name AS CHAR), CAST(index_name AS CHAR), \
                          CASE WHEN sub_part IS NULL THEN CAST(column_name AS CHAR) END \
                          FROM information_schema.statistics \
                          WHERE table_schema = DATABASE() AND seq_in_index = 1 \
                          AND table_name IN ",
                version: "SELECT CAST(VERSION() AS CHAR)",
                clock: Some("SELECT UTC_TIMESTAMP(6)"),
            },
            _ => Dialect {
                tables: "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ",
                indexes: "SELECT m.name, l.name, CASE WHEN l.partial = 0 THEN \
                          (SELECT c.name FROM pragma_index_info(l.name) c WHERE c.seqno = 0) END \
                          FROM sqlite_master m, pragma_index_list(m.name) l \
                          WHERE m.type = 'table' AND m.name IN ",
                version: "SELECT sqlite_version()",
                clock: None,
            },
        }
    }
}

/// Which of `tables` exist.
pub(crate) async fn existing_tables<C: ConnectionTrait>(
    conn: &C,
    tables: &[&str],
) -> Result<Vec<String>> {
    let backend = conn.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push(Dialect::of(backend).tables)
        .bind_list(tables.iter().copied());
    let rows = conn.query_all_raw(sql.build()).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?)
}

/// One index on a table, as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Index {
    pub(crate) table: String,
    pub(crate) name: String,
    /// Its first column, which it serves lookups on as a single-column
    /// index on that column would; `None` for an expression, a partial or a
    /// prefix index, which do not.
    pub(crate) first_column: Option<String>,
}

/// Every index on `tables` (SQLite's automatic indexes and the primary
/// keys included; MySQL's foreign keys' own indexes too).
pub(crate) async fn indexes<C: ConnectionTrait>(conn: &C, tables: &[&str]) -> Result<Vec<Index>> {
    let backend = conn.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push(Dialect::of(backend).indexes)
        .bind_list(tables.iter().copied());
    let rows = conn.query_all_raw(sql.build()).await?;
    Ok(rows
        .iter()
        .map(|row| {
            Ok(Index {
                table: row.try_get_by_index(0)?,
                name: row.try_get_by_index(1)?,
                first_column: row.try_get_by_index(2)?,
            })
        })
        .collect::<Result<_, sea_orm::DbErr>>()?)
}

/// Whether the PostgreSQL trigger `name` exists on `background_task`;
/// `None` on other backends, which have no such trigger.
pub(crate) async fn notify_trigger<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<bool>> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Postgres {
        return Ok(None);
    }
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         WHERE c.relname = 'background_task' AND c.relnamespace = current_schema()::regnamespace \
         AND NOT t.tgisinternal AND t.tgname = ",
    )
    .bind(name);
    Ok(Some(conn.query_one_raw(sql.build()).await?.is_some()))
}

/// The server's version (SQLite: the library's).
pub(crate) async fn version<C: ConnectionTrait>(conn: &C) -> Result<String> {
    let backend = conn.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push(Dialect::of(backend).version);
    Ok(match conn.query_one_raw(sql.build()).await? {
        Some(row) => row.try_get_by_index::<String>(0)?,
        None => String::new(),
    })
}

/// SQLite's journal mode (`wal`, `delete`, `memory`, ...); `None` on
/// other backends.
pub(crate) async fn journal_mode<C: ConnectionTrait>(conn: &C) -> Result<Option<String>> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Sqlite {
        return Ok(None);
    }
    let mut sql = Sql::new(backend);
    sql.push("PRAGMA journal_mode");
    Ok(match conn.query_one_raw(sql.build()).await? {
        Some(row) => Some(row.try_get_by_index::<String>(0)?),
        None => None,
    })
}

/// The server's clock, in UTC; `None` when the database is on this host
/// (SQLite).
pub(crate) async fn server_clock<C: ConnectionTrait>(conn: &C) -> Result<Option<DateTime<Utc>>> {
    let backend = conn.get_database_backend();
    let Some(text) = Dialect::of(backend).clock else {
        return Ok(None);
    };
    let mut sql = Sql::new(backend);
    sql.push(text);
    let Some(row) = conn.query_one_raw(sql.build()).await? else {
        return Ok(None);
    };
    Ok(Some(match backend {
        DbBackend::Postgres => row.try_get_by_index::<DateTime<Utc>>(0)?,
        // UTC_TIMESTAMP is a DATETIME: a time without zone, in UTC.
        _ => row.try_get_by_index::<NaiveDateTime>(0)?.and_utc(),
    }))
}

/// Tasks locked before `before`, counted per `locked_by`.
pub(crate) async fn old_locks_by_owner<C: ConnectionTrait>(
    conn: &C,
    before: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    let select = task::Entity::find()
        .select_only()
        .column(task::Column::LockedBy)
        .column_as(task::Column::Id.count(), "count")
        .filter(task::Column::LockedBy.is_not_null())
        .filter(task::Column::LockedAt.lt(before))
        .group_by(task::Column::LockedBy)
        .order_by_asc(task::Column::LockedBy)
        .build(conn.get_database_backend());
    let rows = conn.query_all_raw(portable(select)).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect::<Result<_, sea_orm::DbErr>>()?)
}

/// How many tasks runners set aside (unlocked task rows with `failed_at`),
/// and the ids of the first `limit`.
pub(crate) async fn set_aside<C: ConnectionTrait>(conn: &C, limit: u64) -> Result<(i64, Vec<i64>)> {
    let backend = conn.get_database_backend();
    let mut count = Sql::new(backend);
    count.push(
        "SELECT COUNT(*) FROM background_task WHERE failed_at IS NOT NULL AND locked_by IS NULL",
    );
    let count: i64 = match conn.query_one_raw(count.build()).await? {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let mut ids = Sql::new(backend);
    ids.push(
        "SELECT id FROM background_task WHERE failed_at IS NOT NULL AND locked_by IS NULL \
         ORDER BY id LIMIT ",
    )
    .push(&limit.to_string());
    let ids = conn
        .query_all_raw(ids.build())
        .await?
        .iter()
        .map(super::claim::read_id)
        .collect::<Result<_, sea_orm::DbErr>>()?;
    Ok((count, ids))
}

/// Ids of tasks locked by one of `owners` before `before`, lowest first,
/// at most `limit`.
pub(crate) async fn old_locked_ids<C: ConnectionTrait>(
    conn: &C,
    owners: &[&str],
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<i32>> {
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    let select = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .filter(task::Column::LockedBy.is_in(owners.iter().copied()))
        .filter(task::Column::LockedAt.lt(before))
        .order_by_asc(task::Column::Id)
        .limit(limit)
        .build(conn.get_database_backend());
    let rows = conn.query_all_raw(portable(select)).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get_by_index::<i32>(0))
        .collect::<Result<_, _>>()?)
}

/// The `background_task` migrations Django recorded in `django_migrations`;
/// `None` when that table does not exist (no Django project migrated this
/// database).
pub(crate) async fn django_migrations<C: ConnectionTrait>(conn: &C) -> Result<Option<Vec<String>>> {
    if existing_tables(conn, &["django_migrations"])
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    let backend = conn.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("SELECT name FROM django_migrations WHERE app = 'background_task' ORDER BY id");
    let rows = conn.query_all_raw(sql.build()).await?;
    Ok(Some(
        rows.iter()
            .map(|row| row.try_get_by_index::<String>(0))
            .collect::<Result<_, _>>()?,
    ))
}

/// Which of `names` exist as triggers (SQLite); `None` on other backends.
pub(crate) async fn sqlite_triggers<C: ConnectionTrait>(
    conn: &C,
    names: &[&str],
) -> Result<Option<Vec<String>>> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Sqlite {
        return Ok(None);
    }
    let mut sql = Sql::new(backend);
    sql.push("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN ")
        .bind_list(names.iter().copied());
    let rows = conn.query_all_raw(sql.build()).await?;
    Ok(Some(
        rows.iter()
            .map(|row| row.try_get_by_index::<String>(0))
            .collect::<Result<_, _>>()?,
    ))
}

/// The latest of each timestamp that is written as "now" by whoever
/// writes it (a finish time, a failure time, a lock), read as this crate
/// reads timestamps: `(table.column, latest)`, for the columns that have
/// any value. A latest time well in the future says the writers and this
/// reader disagree on the zone of naive timestamps.
pub(crate) async fn latest_now_times<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<(&'static str, DateTime<Utc>)>> {
    const COLUMNS: [(&str, &str, &str); 3] = [
        (
            "background_task_completedtask.run_at",
            "background_task_completedtask",
            "run_at",
        ),
        (
            "background_task_completedtask.failed_at",
            "background_task_completedtask",
            "failed_at",
        ),
        ("background_task.locked_at", "background_task", "locked_at"),
    ];
    let backend = conn.get_database_backend();
    let mut latest = Vec::new();
    for (label, table, column) in COLUMNS {
        let mut sql = Sql::new(backend);
        sql.push("SELECT MAX(")
            .push(column)
            .push(") AS latest FROM ")
            .push(table);
        let Some(row) = conn.query_one_raw(sql.build()).await? else {
            continue;
        };
        let read = match backend {
            DbBackend::Postgres => row.try_get_by_index::<Option<DateTime<Utc>>>(0)?,
            _ => row
                .try_get_by_index::<Option<NaiveDateTime>>(0)?
                .map(|naive| super::from_stored(backend, naive)),
        };
        if let Some(at) = read {
            latest.push((label, at));
        }
    }
    Ok(latest)
}
