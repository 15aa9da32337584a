//! Every statement on the queue's tables, one module per concern:
//! - [`enqueue`]: inserting tasks and the seed's RESCHEDULE/CHECK/remove rules;
//! - [`claim`]: the runner's per-backend claim, lock expiry and release;
//! - [`outcome`]: what a finished execution writes (history, retry, repeat);
//! - [`retention`]: deleting old history rows in bounded batches;
//! - [`doctor`]: what `bgtasks doctor` reads of the schema and the server;
//! - [`limits`]: global per-queue concurrency limits;
//! - [`schedules`]: cron schedules.
//!
//! The dialect choice for hand-written SQL is made in one place,
//! [`Sql`], not scattered through the queries.
//!
//! **Timestamps on SQLite.** SQLite has no datetime type: columns hold
//! text, and `run_at <= ?` compares text. Django writes naive UTC as
//! `YYYY-MM-DD HH:MM:SS[.ffffff]`; SeaORM (through sqlx) would write
//! RFC 3339, `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, and the two do not sort
//! together (`T` sorts after the space), so a row of one side would look a
//! day late to the other. Every timestamp this crate writes or compares on
//! SQLite is therefore bound in Django's text ([`at`], [`portable`]): one
//! format on disk whoever wrote the row. Reading accepts both.

pub(crate) mod admin;
pub(crate) mod claim;
pub(crate) mod controls;
pub(crate) mod doctor;
pub(crate) mod enqueue;
pub(crate) mod inspect;
pub(crate) mod keys;
pub(crate) mod limits;
pub(crate) mod outcome;
pub(crate) mod pg_array;
pub(crate) mod retention;
pub(crate) mod rows;
pub(crate) mod runners;
pub(crate) mod schedules;
pub(crate) mod steps;
pub(crate) mod workflows;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Alias;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, ExecResult, PrimaryKeyTrait,
    QueryTrait, RuntimeErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
    Value,
};

/// Begins a transaction that writes. On SQLite it is `BEGIN IMMEDIATE`: it
/// takes the write lock first, waiting up to the busy timeout, instead of
/// starting as a reader and failing with "database is locked" when another
/// writer got in first. Other backends (and nested transactions) ignore it.
pub(crate) async fn begin_write<C: TransactionTrait>(conn: &C) -> Result<C::Transaction, DbErr> {
    conn.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// The MySQL error number behind `err`, if it is a MySQL server error.
fn mysql_error_number(err: &DbErr) -> Option<u16> {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx_err))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx_err))) = err
    else {
        return None;
    };
    sqlx_err
        .as_database_error()
        .and_then(|db_err| db_err.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>())
        .map(|mysql| mysql.number())
}

/// The SQLSTATE code of a PostgreSQL server error behind `err`.
fn postgres_code(err: &DbErr) -> Option<String> {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx_err))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx_err))) = err
    else {
        return None;
    };
    sqlx_err
        .as_database_error()
        .and_then(|db_err| db_err.try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>())
        .map(|pg| pg.code().to_owned())
}

/// A lost race between transactions, which the same transaction simply
/// tried again resolves: MySQL/MariaDB deadlock (1213; on Galera also a
/// certification failure at commit) and lock wait timeout (1205);
/// PostgreSQL deadlock (40P01) and serialization failure (40001).
pub(crate) fn is_lock_conflict(err: &DbErr) -> bool {
    matches!(mysql_error_number(err), Some(1205 | 1213))
        || matches!(postgres_code(err).as_deref(), Some("40P01" | "40001"))
}

/// How many times a runner write that lost a lock race is tried again at
/// once before its caller sees the error (and, for a heartbeat, skips one
/// lease renewal).
pub(crate) const CONFLICT_RETRIES: u32 = 5;

/// Runs `write` (one whole transaction) again while it fails with a
/// [lock conflict](is_lock_conflict), at most [`CONFLICT_RETRIES`] times.
/// `what` names it in the debug log.
pub(crate) async fn retry_conflicts<T, E, F, Fut>(
    what: &str,
    mut write: F,
) -> crate::error::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<crate::error::Error>,
{
    let mut attempt = 0;
    loop {
        let err = match write().await {
            Ok(done) => return Ok(done),
            Err(err) => err.into(),
        };
        match &err {
            crate::error::Error::Database(db_err)
                if attempt < CONFLICT_RETRIES && is_lock_conflict(db_err) =>
            {
                attempt += 1;
                tracing::debug!(attempt, "{what} lost a lock race; trying again: {db_err}");
            }
            _ => return Err(err),
        }
    }
}

/// What kind of failure a database error is, for logs, messages and
/// metrics: "the database is unreachable" is only one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DbErrorKind {
    /// No connection: refused, reset, timed out, pool exhausted.
    Unreachable,
    /// A lost race (deadlock, lock wait timeout, serialization failure).
    Conflict,
    /// A value the schema refuses: unique key, NOT NULL, CHECK, foreign
    /// key, out of range, too long, invalid text.
    Constraint,
    /// A row that does not decode into the model.
    Decode,
    /// Anything else the server or driver reported.
    Other,
}

impl DbErrorKind {
    /// Every kind.
    pub(crate) const ALL: [DbErrorKind; 5] = [
        DbErrorKind::Unreachable,
        DbErrorKind::Conflict,
        DbErrorKind::Constraint,
        DbErrorKind::Decode,
        DbErrorKind::Other,
    ];

    /// A short label (metrics, logs).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DbErrorKind::Unreachable => "unreachable",
            DbErrorKind::Conflict => "conflict",
            DbErrorKind::Constraint => "constraint",
            DbErrorKind::Decode => "decode",
            DbErrorKind::Other => "other",
        }
    }

    /// How a log line introduces an error of this kind.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            DbErrorKind::Unreachable => "the database is unreachable",
            DbErrorKind::Conflict => "a lock conflict with another transaction persisted",
            DbErrorKind::Constraint => "the database refused a value",
            DbErrorKind::Decode => "a row could not be decoded",
            DbErrorKind::Other => "a statement failed",
        }
    }
}

/// The log line of a failed database step: the seed's "Database
/// unreachable" only when it is, else what happened.
pub(crate) fn failure(what: &str, err: &crate::error::Error) -> String {
    match classify(err) {
        DbErrorKind::Unreachable => format!("{what}. Database unreachable: {err}"),
        kind => format!("{what}: {}: {err}", kind.describe()),
    }
}

/// Classifies `err` (see [`DbErrorKind`]).
pub(crate) fn classify(err: &crate::error::Error) -> DbErrorKind {
    use crate::error::Error;
    match err {
        Error::Unreadable(_) | Error::Params(_) => DbErrorKind::Decode,
        Error::Connect { .. } | Error::NoWritableHost { .. } => DbErrorKind::Unreachable,
        Error::Database(db_err) | Error::Migrate(db_err) => classify_db(db_err),
        _ => DbErrorKind::Other,
    }
}

fn classify_db(err: &DbErr) -> DbErrorKind {
    if is_lock_conflict(err) {
        return DbErrorKind::Conflict;
    }
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return DbErrorKind::Unreachable,
        DbErr::Type(_) | DbErr::Json(_) | DbErr::TryIntoErr { .. } => return DbErrorKind::Decode,
        _ => {}
    }
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx_err))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx_err))
    | DbErr::Conn(RuntimeErr::SqlxError(sqlx_err))) = err
    else {
        return DbErrorKind::Other;
    };
    use sea_orm::sqlx::Error as Sqlx;
    match &**sqlx_err {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed
        | Sqlx::Protocol(_) => DbErrorKind::Unreachable,
        Sqlx::ColumnDecode { .. } | Sqlx::Decode(_) | Sqlx::TypeNotFound { .. } => {
            DbErrorKind::Decode
        }
        Sqlx::Database(_) if is_server_unavailable(err) => DbErrorKind::Unreachable,
        Sqlx::Database(db_err) => {
            use sea_orm::sqlx::error::ErrorKind;
            match db_err.kind() {
                ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation => DbErrorKind::Constraint,
                _ if is_data_error(err) => DbErrorKind::Constraint,
                _ => DbErrorKind::Other,
            }
        }
        _ => DbErrorKind::Other,
    }
}

/// A server that is up but cannot take the statement now, which another
/// server (failover) or a moment later will: PostgreSQL shutting down or
/// starting (57P01..57P03) or read-only (25006, a standby, a demoted
/// primary); a Galera node not Synced (1047, "WSREP has not yet prepared
/// node for application use").
fn is_server_unavailable(err: &DbErr) -> bool {
    matches!(mysql_error_number(err), Some(1047))
        || matches!(
            postgres_code(err).as_deref(),
            Some("57P01" | "57P02" | "57P03" | "25006")
        )
}

/// A value the column cannot hold: PostgreSQL's class 22 (data exception:
/// out of range, too long, NUL in text, bad encoding); MySQL's out of range
/// (1264), too long (1406), incorrect value (1366), NULL (1048).
fn is_data_error(err: &DbErr) -> bool {
    postgres_code(err).is_some_and(|code| code.starts_with("22"))
        || matches!(mysql_error_number(err), Some(1048 | 1264 | 1366 | 1406))
        || sqlite_primary_code(err).is_some_and(|code| matches!(code, 18..=20))
}

/// SQLite's primary result code (the low byte of the extended code) behind
/// `err`: 19 is a constraint (CHECK, NOT NULL, UNIQUE, a trigger's
/// `RAISE(ABORT)`), 18 a value too big, 20 a type mismatch.
fn sqlite_primary_code(err: &DbErr) -> Option<u32> {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx_err))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx_err))) = err
    else {
        return None;
    };
    let db_err = sqlx_err.as_database_error()?;
    db_err.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()?;
    db_err.code()?.parse::<u32>().ok().map(|code| code & 0xff)
}

/// MySQL's duplicate key error (1062): a unique task's key is taken.
pub(crate) fn is_duplicate_key(err: &DbErr) -> bool {
    mysql_error_number(err) == Some(1062)
}

/// Begins a transaction for the runner's own writes (claims, outcomes,
/// releases). As [`begin_write`], and on PostgreSQL with
/// `synchronous_commit = off`: the commit does not wait for the WAL flush.
/// A server crash can then lose the last fraction of a second of these
/// writes, and the database stays consistent: a lost claim or outcome only
/// means the task runs again after its lease (at-least-once, as with a
/// runner crash). Enqueues never use this; they stay durable.
pub(crate) async fn begin_runner_write<C: TransactionTrait + ConnectionTrait>(
    conn: &C,
) -> Result<C::Transaction, DbErr>
where
    C::Transaction: ConnectionTrait,
{
    let txn = begin_write(conn).await?;
    if conn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SET LOCAL synchronous_commit = off")
            .await?;
    }
    Ok(txn)
}

/// The time zone of the naive timestamps in the database, when it is not
/// UTC: see [`crate::db::set_time_zone`]. Process-wide, set once.
static DB_TIME_ZONE: std::sync::OnceLock<chrono_tz::Tz> = std::sync::OnceLock::new();

/// Sets [`DB_TIME_ZONE`]; false when another zone was set before.
pub(crate) fn set_db_time_zone(zone: chrono_tz::Tz) -> bool {
    *DB_TIME_ZONE.get_or_init(|| zone) == zone
}

/// The zone naive timestamps are stored in on `backend`: `None` for UTC
/// (the default), and always `None` on PostgreSQL, whose
/// `timestamp with time zone` columns store instants.
pub(crate) fn naive_zone(backend: DbBackend) -> Option<chrono_tz::Tz> {
    match backend {
        DbBackend::Postgres => None,
        _ => DB_TIME_ZONE
            .get()
            .copied()
            .filter(|zone| *zone != chrono_tz::UTC),
    }
}

/// `when` as the naive time stored for it on `backend`: UTC, or the wall
/// clock of the database's time zone.
pub(crate) fn to_stored(backend: DbBackend, when: DateTime<Utc>) -> chrono::NaiveDateTime {
    wall_clock(naive_zone(backend), when)
}

/// `when` on the wall clock of `zone` (UTC when `None`).
fn wall_clock(zone: Option<chrono_tz::Tz>, when: DateTime<Utc>) -> chrono::NaiveDateTime {
    match zone {
        None => when.naive_utc(),
        Some(zone) => when.with_timezone(&zone).naive_local(),
    }
}

/// The instant a stored naive time `naive` means on `backend` (the reverse
/// of [`to_stored`]). A wall-clock time that happens twice (the hour
/// daylight saving time repeats) is read as the first; one that never
/// happens (the hour it skips) as the same time after the jump.
pub(crate) fn from_stored(backend: DbBackend, naive: chrono::NaiveDateTime) -> DateTime<Utc> {
    instant(naive_zone(backend), naive)
}

/// The instant the wall-clock time `naive` of `zone` (UTC when `None`) is.
fn instant(zone: Option<chrono_tz::Tz>, naive: chrono::NaiveDateTime) -> DateTime<Utc> {
    use chrono::TimeZone;
    let Some(zone) = zone else {
        return naive.and_utc();
    };
    match zone.from_local_datetime(&naive) {
        chrono::LocalResult::Single(at) | chrono::LocalResult::Ambiguous(at, _) => {
            at.with_timezone(&Utc)
        }
        chrono::LocalResult::None => zone
            .from_local_datetime(&(naive + chrono::TimeDelta::hours(1)))
            .earliest()
            .map_or_else(|| naive.and_utc(), |at| at.with_timezone(&Utc)),
    }
}

/// A timestamp as bound on `backend`: on SQLite, Django's naive text
/// (`YYYY-MM-DD HH:MM:SS`, with `.ffffff` unless the microseconds are 0,
/// exactly as Python's `str(datetime)`); on MySQL a naive `DATETIME` (any
/// year, unlike a `TIMESTAMP`); both in UTC unless the database's time zone
/// says otherwise
/// ([`crate::db::set_time_zone`]). On PostgreSQL the typed instant.
pub(crate) fn at(backend: DbBackend, when: DateTime<Utc>) -> Value {
    match backend {
        DbBackend::Sqlite => Value::String(Some(naive_text(to_stored(backend, when)))),
        // A naive DATETIME value: sqlx would send a `DateTime<Utc>` as a
        // TIMESTAMP, which MySQL/MariaDB convert through the session's time
        // zone and which holds only 1970 to 2038 (outside it the value
        // became NULL).
        DbBackend::MySql => Value::ChronoDateTime(Some(to_stored(backend, when))),
        _ => Value::ChronoDateTimeUtc(Some(when)),
    }
}

/// Django's text of a UTC timestamp, truncated to microseconds.
#[cfg(test)]
pub(crate) fn django_text(when: DateTime<Utc>) -> String {
    naive_text(when.naive_utc())
}

/// Django's text of a naive timestamp (Python's `str(datetime)`),
/// truncated to microseconds.
fn naive_text(when: chrono::NaiveDateTime) -> String {
    let micros = when.and_utc().timestamp_subsec_micros();
    if micros == 0 {
        when.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", when.format("%Y-%m-%d %H:%M:%S"))
    }
}

/// `statement` with its timestamps bound as [`at`] binds them: what every
/// statement built by SeaORM's query builders goes through before it runs.
/// A naive value bound by this crate means UTC, and is stored the same way.
pub(crate) fn portable(mut statement: Statement) -> Statement {
    let backend = statement.db_backend;
    if backend == DbBackend::Postgres {
        return statement;
    }
    let zoned = naive_zone(backend).is_some();
    if let Some(values) = statement.values.as_mut() {
        for value in &mut values.0 {
            match value {
                Value::ChronoDateTimeUtc(Some(when)) => *value = at(backend, *when),
                Value::ChronoDateTime(Some(naive)) if zoned => {
                    *value = at(backend, naive.and_utc());
                }
                _ => {}
            }
        }
    }
    statement
}

/// Runs a SeaORM insert, update or delete, timestamps made [`portable`].
pub(crate) async fn execute<C: ConnectionTrait>(
    conn: &C,
    query: impl QueryTrait,
) -> Result<ExecResult, DbErr> {
    conn.execute_raw(portable(query.build(conn.get_database_backend())))
        .await
}

/// Inserts one row and returns it as stored: `RETURNING *` where the
/// backend has it, else the row read back by its new id (MySQL).
pub(crate) async fn insert_returning<C, A>(
    conn: &C,
    row: A,
) -> crate::error::Result<<A::Entity as EntityTrait>::Model>
where
    C: ConnectionTrait,
    A: ActiveModelTrait,
    <<A::Entity as EntityTrait>::PrimaryKey as PrimaryKeyTrait>::ValueType: From<i32>,
{
    let backend = conn.get_database_backend();
    let mut insert = A::Entity::insert(row);
    if backend == DbBackend::MySql {
        let result = execute(conn, insert).await?;
        let id = i32::try_from(result.last_insert_id())
            .map_err(|_| DbErr::Custom("an inserted id does not fit an i32".into()))?;
        return rows::select_one(conn, A::Entity::find_by_id(id))
            .await?
            .ok_or_else(|| DbErr::RecordNotInserted.into());
    }
    QueryTrait::query(&mut insert).returning_all();
    rows::one::<A::Entity, C>(conn, portable(insert.build(backend)))
        .await?
        .ok_or_else(|| DbErr::RecordNotInserted.into())
}

/// Inserts rows and returns their new ids, in row order: on PostgreSQL
/// with one statement of one array per column, elsewhere with one
/// multi-row `INSERT` per power of two rows. Ids of one statement are
/// handed out in row order (a sequence or rowid on PostgreSQL and SQLite,
/// consecutive from the first on MySQL for an insert of known row count).
pub(crate) async fn insert_many_ids<C, A>(conn: &C, rows: Vec<A>) -> Result<Vec<i32>, DbErr>
where
    C: ConnectionTrait,
    A: ActiveModelTrait,
{
    let backend = conn.get_database_backend();
    let count = rows.len();
    if count == 0 {
        return Ok(Vec::new());
    }
    if backend == DbBackend::Postgres {
        let insert = pg_array::insert(&rows, " RETURNING id")?;
        let mut ids: Vec<i32> = conn
            .query_all_raw(insert.build())
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<i32>(0))
            .collect::<Result<_, _>>()?;
        ids.sort_unstable();
        return Ok(ids);
    }
    // Statements of a power of two rows each (100 rows: 64, 32 and 4), so
    // batches of every size share a few prepared statements.
    let mut ids = Vec::with_capacity(count);
    let mut rows = rows.into_iter().peekable();
    let mut left = count;
    while rows.peek().is_some() {
        let size = 1 << left.ilog2();
        left -= size;
        let mut insert = A::Entity::insert_many(rows.by_ref().take(size));
        if backend == DbBackend::MySql {
            let first = execute(conn, insert).await?.last_insert_id();
            let first = i32::try_from(first)
                .map_err(|_| DbErr::Custom("an inserted id does not fit an i32".into()))?;
            ids.extend((first..).take(size));
            continue;
        }
        QueryTrait::query(&mut insert).returning_col(Alias::new("id"));
        let mut chunk: Vec<i32> = conn
            .query_all_raw(portable(insert.build(backend)))
            .await?
            .iter()
            .map(|row| row.try_get::<i32>("", "id"))
            .collect::<Result<_, _>>()?;
        chunk.sort_unstable();
        ids.extend(chunk);
    }
    Ok(ids)
}

/// A hand-written statement being built: text plus bound values, with the
/// placeholder syntax of the backend (`$1` on PostgreSQL, `?` elsewhere).
pub(crate) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            text: String::new(),
            values: Vec::new(),
        }
    }

    /// The dialect being written.
    pub(crate) fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Appends `background_task`, for a statement that picks its rows by
    /// `id IN (...)`: on MySQL/MariaDB with the primary key forced. Left to
    /// itself, MariaDB walks the `locked_by` (or claim) index for a
    /// `locked_by` condition next to the ids, and under REPEATABLE READ a
    /// locking statement locks every row it walks: an outcome or a claim
    /// then held every due row for its transaction, so a concurrent claim
    /// skipped them (`SKIP LOCKED`) and took later ones out of order, and
    /// the two deadlocked. By primary key, only the named rows are locked.
    pub(crate) fn tasks_by_id(&mut self) -> &mut Self {
        self.push(match self.backend {
            DbBackend::MySql => "background_task FORCE INDEX (PRIMARY)",
            _ => "background_task",
        })
    }

    /// Appends literal SQL.
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value` (a timestamp is bound as
    /// [`at`] binds it).
    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        let value = match value.into() {
            Value::ChronoDateTimeUtc(Some(when)) => at(self.backend, when),
            value => value,
        };
        self.values.push(value);
        match self.backend {
            DbBackend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
            _ => self.text.push('?'),
        }
        self
    }

    /// Appends `(p1, p2, ...)` bound to `values`.
    pub(crate) fn bind_list<V: Into<Value>>(
        &mut self,
        values: impl IntoIterator<Item = V>,
    ) -> &mut Self {
        self.text.push('(');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(value);
        }
        self.text.push(')');
        self
    }

    /// Appends ` IN (p1, p2, ...)` bound to `values`, so that lists of
    /// any length share a few prepared statements (sqlx keeps 100 a
    /// connection; on SQLite each holds its compiled program in memory):
    /// on PostgreSQL ` = ANY($n::type[])`, one array parameter (see
    /// [`pg_array`]); elsewhere the list padded to the next power of two
    /// by repeating its last value, which matches the same rows. The list
    /// must not be empty.
    pub(crate) fn is_in<E>(&mut self, values: impl IntoIterator<Item = E>) -> &mut Self
    where
        E: pg_array::Element + Into<Value> + Clone,
    {
        if self.backend == DbBackend::Postgres {
            return self
                .push(" = ANY(")
                .bind(pg_array::literal(values))
                .push("::")
                .push(E::ARRAY_TYPE)
                .push(")");
        }
        let mut values: Vec<E> = values.into_iter().collect();
        if let Some(last) = values.last().cloned() {
            values.resize(values.len().next_power_of_two(), last);
        }
        self.push(" IN ").bind_list(values)
    }

    /// Appends ` FOR UPDATE` where rows are locked: PostgreSQL and
    /// MySQL (SQLite's write transaction already excludes every other
    /// writer, and has no such clause).
    pub(crate) fn for_update(&mut self) -> &mut Self {
        if self.backend != DbBackend::Sqlite {
            self.push(" FOR UPDATE");
        }
        self
    }

    /// Appends ` LIMIT ?`, bound, so claims of every size share one
    /// prepared statement.
    pub(crate) fn limit(&mut self, limit: usize) -> &mut Self {
        self.push(" LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    }

    pub(crate) fn build(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_djangos_text_on_sqlite() {
        let when = DateTime::parse_from_rfc3339("2026-11-27T21:10:13.702496789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(django_text(when), "2026-11-27 21:10:13.702496");
        let whole = DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(django_text(whole), "2026-11-27 00:00:00");
        let tenth = DateTime::parse_from_rfc3339("2026-11-27T00:00:00.1Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(django_text(tenth), "2026-11-27 00:00:00.100000");
        let mut sqlite = Sql::new(DbBackend::Sqlite);
        sqlite.push("run_at <= ").bind(when);
        let built = sqlite.build();
        assert_eq!(
            built.values.unwrap().0,
            vec![Value::String(Some("2026-11-27 21:10:13.702496".into()))]
        );
        let mut pg = Sql::new(DbBackend::Postgres);
        pg.bind(when);
        assert_eq!(
            pg.build().values.unwrap().0,
            vec![Value::ChronoDateTimeUtc(Some(when))]
        );
    }

    #[test]
    fn wall_clock_times_round_trip_through_a_zone() {
        let new_york: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let utc = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let naive =
            |text: &str| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap();
        // Winter: UTC-5; summer: UTC-4.
        let winter = utc("2026-01-15T17:00:00Z");
        assert_eq!(
            wall_clock(Some(new_york), winter),
            naive("2026-01-15 12:00:00")
        );
        assert_eq!(
            instant(Some(new_york), naive("2026-01-15 12:00:00")),
            winter
        );
        let summer = utc("2026-07-15T16:00:00Z");
        assert_eq!(
            wall_clock(Some(new_york), summer),
            naive("2026-07-15 12:00:00")
        );
        assert_eq!(
            instant(Some(new_york), naive("2026-07-15 12:00:00")),
            summer
        );
        // 01:30 happens twice on 2026-11-01: the first (EDT) is taken.
        assert_eq!(
            instant(Some(new_york), naive("2026-11-01 01:30:00")),
            utc("2026-11-01T05:30:00Z")
        );
        // 02:30 never happens on 2026-03-08: read as 03:30 EDT.
        assert_eq!(
            instant(Some(new_york), naive("2026-03-08 02:30:00")),
            utc("2026-03-08T07:30:00Z")
        );
        // No zone: UTC both ways.
        assert_eq!(wall_clock(None, winter), naive("2026-01-15 17:00:00"));
        assert_eq!(instant(None, naive("2026-01-15 17:00:00")), winter);
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let mut pg = Sql::new(DbBackend::Postgres);
        pg.push("a = ").bind(1).push(" AND b IN ").bind_list([2, 3]);
        assert_eq!(pg.build().sql, "a = $1 AND b IN ($2, $3)");
        let mut my = Sql::new(DbBackend::MySql);
        my.push("a = ").bind(1).push(" AND b IN ").bind_list([2, 3]);
        assert_eq!(my.build().sql, "a = ? AND b IN (?, ?)");
    }

    #[test]
    fn lists_are_one_array_on_postgres() {
        let mut pg = Sql::new(DbBackend::Postgres);
        pg.push("a = ")
            .bind(1)
            .push(" AND b")
            .is_in([2, 3])
            .limit(5);
        let built = pg.build();
        assert_eq!(built.sql, "a = $1 AND b = ANY($2::int4[]) LIMIT $3");
        assert_eq!(
            built.values.unwrap().0,
            vec![
                Value::Int(Some(1)),
                Value::String(Some("{2,3}".into())),
                Value::BigInt(Some(5))
            ]
        );
        let mut my = Sql::new(DbBackend::MySql);
        my.push("b").is_in(["x", "y", "z"]).limit(5);
        let built = my.build();
        assert_eq!(built.sql, "b IN (?, ?, ?, ?) LIMIT ?");
        assert_eq!(
            built.values.unwrap().0,
            vec![
                Value::from("x"),
                Value::from("y"),
                Value::from("z"),
                Value::from("z"),
                Value::BigInt(Some(5))
            ]
        );
        let mut one = Sql::new(DbBackend::Sqlite);
        one.push("id").is_in([7]);
        assert_eq!(one.build().sql, "id IN (?)");
    }
}
