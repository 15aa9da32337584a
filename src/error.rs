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
        "cannot connect to the database at {url}: {source}. Check that the server is running and that the URL, user and password are right"
    )]
    Connect {
        /// The URL, with any password hidden.
        url: String,
        /// The driver's error.
        #[source]
        source: sea_orm::DbErr,
    },
    /// Creating or upgrading the schema failed.
    #[error("migrating the queue's tables failed: {0}")]
    Migrate(#[source] sea_orm::DbErr),
    /// A statement failed.
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// A task's params could not be encoded (at enqueue) or decoded (at run time).
    #[error(transparent)]
    Params(#[from] ParamsError),
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
