//! Every statement on the queue's tables, one module per concern:
//! - [`enqueue`]: inserting tasks and the seed's RESCHEDULE/CHECK/remove rules;
//! - [`claim`]: the runner's per-backend claim, lock expiry and release;
//! - [`outcome`]: what a finished execution writes (history, retry, repeat).
//!
//! The dialect choice for hand-written SQL is made in one place,
//! [`Sql`], not scattered through the queries.

pub(crate) mod admin;
pub(crate) mod claim;
pub(crate) mod enqueue;
pub(crate) mod inspect;
pub(crate) mod outcome;
pub(crate) mod runners;

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, RuntimeErr, SqliteTransactionMode, Statement,
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

/// MySQL deadlock (1213) or lock wait timeout (1205): the transaction (a
/// claim, a batch of outcomes) can simply be tried again.
pub(crate) fn is_lock_conflict(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx_err))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx_err))) = err
    else {
        return false;
    };
    sqlx_err
        .as_database_error()
        .and_then(|db_err| db_err.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|mysql| matches!(mysql.number(), 1205 | 1213))
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

    /// Appends a placeholder bound to `value`.
    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
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
    fn placeholders_follow_the_dialect() {
        let mut pg = Sql::new(DbBackend::Postgres);
        pg.push("a = ").bind(1).push(" AND b IN ").bind_list([2, 3]);
        assert_eq!(pg.build().sql, "a = $1 AND b IN ($2, $3)");
        let mut my = Sql::new(DbBackend::MySql);
        my.push("a = ").bind(1).push(" AND b IN ").bind_list([2, 3]);
        assert_eq!(my.build().sql, "a = ? AND b IN (?, ?)");
    }
}
