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
pub(crate) mod doctor;
pub(crate) mod enqueue;
pub(crate) mod inspect;
pub(crate) mod limits;
pub(crate) mod outcome;
pub(crate) mod retention;
pub(crate) mod runners;
pub(crate) mod schedules;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Alias;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, ExecResult, FromQueryResult,
    PrimaryKeyTrait, QuerySelect, QueryTrait, RuntimeErr, Select, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait, Value,
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

/// MySQL deadlock (1213) or lock wait timeout (1205): the transaction (a
/// claim, a batch of outcomes) can simply be tried again.
pub(crate) fn is_lock_conflict(err: &DbErr) -> bool {
    matches!(mysql_error_number(err), Some(1205 | 1213))
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

/// A timestamp as bound on `backend`: on SQLite, Django's naive UTC text
/// (`YYYY-MM-DD HH:MM:SS`, with `.ffffff` unless the microseconds are 0,
/// exactly as Python's `str(datetime)`); elsewhere the typed value.
pub(crate) fn at(backend: DbBackend, when: DateTime<Utc>) -> Value {
    match backend {
        DbBackend::Sqlite => Value::String(Some(django_text(when))),
        _ => Value::ChronoDateTimeUtc(Some(when)),
    }
}

/// Django's text of a UTC timestamp, truncated to microseconds.
pub(crate) fn django_text(when: DateTime<Utc>) -> String {
    let micros = when.timestamp_subsec_micros();
    if micros == 0 {
        when.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", when.format("%Y-%m-%d %H:%M:%S"))
    }
}

/// `statement` with its timestamps bound as [`at`] binds them: what every
/// statement built by SeaORM's query builders goes through before it runs.
pub(crate) fn portable(mut statement: Statement) -> Statement {
    if statement.db_backend == DbBackend::Sqlite
        && let Some(values) = statement.values.as_mut()
    {
        for value in &mut values.0 {
            if let Value::ChronoDateTimeUtc(Some(when)) = value {
                *value = Value::String(Some(django_text(*when)));
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

/// The first row of a SeaORM select, timestamps made [`portable`].
pub(crate) async fn fetch_one<C: ConnectionTrait, E: EntityTrait>(
    conn: &C,
    select: Select<E>,
) -> Result<Option<E::Model>, DbErr> {
    let statement = portable(select.limit(1).build(conn.get_database_backend()));
    E::find().from_raw_sql(statement).one(conn).await
}

/// Inserts one row and returns it as stored: `RETURNING *` where the
/// backend has it, else the row read back by its new id (MySQL).
pub(crate) async fn insert_returning<C, A>(
    conn: &C,
    row: A,
) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
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
        return A::Entity::find_by_id(id)
            .one(conn)
            .await?
            .ok_or_else(|| DbErr::RecordNotInserted);
    }
    QueryTrait::query(&mut insert).returning_all();
    <A::Entity as EntityTrait>::Model::find_by_statement(portable(insert.build(backend)))
        .one(conn)
        .await?
        .ok_or(DbErr::RecordNotInserted)
}

/// Inserts rows with one statement and returns their new ids, in row
/// order. Ids of one multi-row `INSERT` are handed out in row order (a
/// sequence or rowid on PostgreSQL and SQLite, consecutive from the first
/// on MySQL for an insert of known row count).
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
    let mut insert = A::Entity::insert_many(rows);
    if backend == DbBackend::MySql {
        let first = execute(conn, insert).await?.last_insert_id();
        let first = i32::try_from(first)
            .map_err(|_| DbErr::Custom("an inserted id does not fit an i32".into()))?;
        return Ok((first..).take(count).collect());
    }
    QueryTrait::query(&mut insert).returning_col(Alias::new("id"));
    let mut ids: Vec<i32> = conn
        .query_all_raw(portable(insert.build(backend)))
        .await?
        .iter()
        .map(|row| row.try_get::<i32>("", "id"))
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
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
    fn placeholders_follow_the_dialect() {
        let mut pg = Sql::new(DbBackend::Postgres);
        pg.push("a = ").bind(1).push(" AND b IN ").bind_list([2, 3]);
        assert_eq!(pg.build().sql, "a = $1 AND b IN ($2, $3)");
        let mut my = Sql::new(DbBackend::MySql);
        my.push("a = ").bind(1).push(" AND b IN ").bind_list([2, 3]);
        assert_eq!(my.build().sql, "a = ? AND b IN (?, ?)");
    }
}
