//! The crate's error type.
//!
//! "The task failed" is not "the queue failed": a task body returns a
//! [`TaskError`](crate::TaskError); this [`Error`] is for the queue itself
//! (database, configuration, bad input to the enqueue API).

use crate::params::ParamsError;

/// Result of the queue's own operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the queue (not in a task body).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL does not parse, or names a database this crate does not support.
    #[error(
        "invalid database URL {url:?}: {reason}. Use sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB"
    )]
    InvalidDatabaseUrl {
        /// The URL, with any password hidden.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The database could not be reached or refused the connection.
    #[error(
        "cannot connect to the database at {url}: {source}{hint}. Check that the server is running and that the URL, user and password are right", hint = hint(source)
    )]
    Connect {
        /// The URL, with any password hidden.
        url: String,
        /// The driver's error.
        #[source]
        source: sea_orm::DbErr,
    },
    /// A URL with several hosts (or `target_session_attrs=read-write`)
    /// where none takes writes within the connect timeout.
    #[error("cannot connect to the database at {url}: {answers}")]
    NoWritableHost {
        /// The URL, with any password hidden.
        url: String,
        /// What each host answered, and what to do.
        answers: String,
    },
    /// Creating or upgrading the schema failed.
    #[error("migrating the queue's tables failed: {0}")]
    Migrate(#[source] sea_orm::DbErr),
    /// A statement failed.
    #[error("database error: {0}{hint}", hint = hint(.0))]
    Database(#[from] sea_orm::DbErr),
    /// A task's params could not be encoded (at enqueue) or decoded (at run time).
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// A row of the queue's tables cannot be decoded: a value of the wrong
    /// type, out of range, or NULL where one is needed (a row written by
    /// hand or by another program). Runners set such a task aside instead
    /// of retrying it forever.
    #[error("{0}")]
    Unreadable(Box<UnreadableRow>),
    /// On SQLite, an enqueue outside a transaction was called by the task
    /// that holds the process's one connection in its own transaction: it
    /// would have waited for that transaction forever.
    #[error(
        "this task holds the SQLite database's only connection in its own transaction \
         (queue.db().begin()), so an enqueue outside that transaction would wait for it forever, \
         and every runner of this process with it: enqueue inside the transaction with \
         queue.enqueue_with(&txn, ..), or commit it first"
    )]
    OwnTransaction,
    /// Registered tasks require app state ([`crate::Task::requires`]) that
    /// the registry has no value of ([`crate::Registry::data`]): the runner
    /// refuses to start.
    #[error("{}", crate::state::missing_text(.missing))]
    MissingState {
        /// Every task and type missing, sorted by task.
        missing: Vec<crate::state::MissingState>,
    },
    /// An enqueue option or a setting has a value that is not allowed.
    #[error("invalid value for `{option}`: {reason}")]
    InvalidOption {
        /// Name of the option or setting.
        option: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            option,
            reason: reason.into(),
        }
    }

    /// Whether the database refused a value of a statement rather than
    /// failed: an SQLSTATE of class 22 (data exception: a string too long
    /// for its column, a number or time out of range, a NUL byte on
    /// PostgreSQL), MySQL's "incorrect string value" (1366), or a value the
    /// driver could not encode. Bad input, not an outage.
    pub(crate) fn is_refused_value(&self) -> bool {
        use sea_orm::{DbErr, RuntimeErr};
        let Error::Database(
            DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)),
        ) = self
        else {
            return false;
        };
        if matches!(err.as_ref(), sea_orm::sqlx::Error::Encode(_)) {
            return true;
        }
        let Some(db_err) = err.as_database_error() else {
            return false;
        };
        db_err.code().is_some_and(|code| code.starts_with("22"))
            || db_err
                .try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|mysql| mysql.number() == 1366)
    }
}

/// A row that could not be decoded, and why: which row, which column,
/// what it holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnreadableRow {
    /// The table it is in.
    pub table: String,
    /// Its id, as the database prints it; `None` when even that did not read.
    pub id: Option<String>,
    /// The first column that did not decode; `None` when each column reads
    /// on its own and only the row as a whole did not.
    pub column: Option<String>,
    /// That column's value as the database prints it (text in quotes, cut
    /// when long), or `NULL`.
    pub value: Option<String>,
    /// Why it did not decode, phrased to follow "column C holds V, "
    /// (`which is not a 32-bit integer (...)`, `but this column must have
    /// a value`).
    pub reason: String,
}

impl std::fmt::Display for UnreadableRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "row {id} of {} cannot be read", self.table)?,
            None => write!(f, "a row of {} cannot be read", self.table)?,
        }
        match (&self.column, &self.value) {
            (Some(column), Some(value)) => write!(f, ": column {column} holds {value}, ")?,
            (Some(column), None) => write!(f, ": column {column}, ")?,
            _ => f.write_str(": ")?,
        }
        write!(
            f,
            "{}. Correct the value in the database or delete the row",
            self.reason
        )
    }
}

/// What to do about a driver error that says more about the set-up than
/// about the statement: a pooler or a cluster node the URL does not
/// describe. Empty for every other error.
fn hint(err: &sea_orm::DbErr) -> &'static str {
    let text = err.to_string();
    if text.contains("prepared statement \"sqlx_s_")
        || text.contains("bind message supplies")
        || text.contains("unnamed prepared statement does not exist")
    {
        ". The server's prepared statements are not this connection's: the URL names a \
         transaction pooler (PgBouncer with pool_mode = transaction), which hands server \
         connections from client to client, without saying so; add pooler=transaction to the \
         URL (README, \"Deployment\")"
    } else if text.contains("unsupported startup parameter") {
        ". PgBouncer refuses a connection parameter the driver sends: add \
         ignore_startup_parameters = extra_float_digits to pgbouncer.ini"
    } else if text.contains("WSREP has not yet prepared node") {
        ". This Galera node is not Synced with its cluster yet (it is joining or was cut off): \
         wait for wsrep_local_state_comment = Synced, or list the cluster's other nodes in the \
         URL (mysql://USER@NODE1,NODE2,NODE3/DB) so another one is used"
    } else {
        ""
    }
}
