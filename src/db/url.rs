//! Reading a database URL: the scheme and its aliases, SQLite's file and
//! `synchronous=`, and the parameters sqlx does not know that say how to
//! reach a server: several hosts (`h1:5432,h2:5432`), `target_session_attrs`
//! and `pooler`.

use sea_orm::sqlx::sqlite::SqliteSynchronous;

use crate::error::{Error, Result};

/// What stands between the process and PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooler {
    /// The server itself, or a pooler that keeps one server connection per
    /// client connection (PgBouncer's `pool_mode = session`).
    #[default]
    None,
    /// A pooler that may hand the server connection to another client after
    /// every transaction (PgBouncer's `pool_mode = transaction`): no
    /// statement outlives its transaction, and no `LISTEN` goes through it.
    Transaction,
}

/// Where a URL says to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The URL without this crate's own parameters, naming the first host.
    pub url: String,
    /// Every host, in the order given: `(host, port)`; the port is `None`
    /// when the URL gives none (the driver's default).
    pub hosts: Vec<(String, Option<u16>)>,
    /// Whether a connection must be writable (`target_session_attrs`
    /// `read-write` or `primary`; the default with several hosts).
    pub read_write: bool,
    pub pooler: Pooler,
}

impl Target {
    /// `host:port` of host `index`, for messages.
    pub fn host_name(&self, index: usize) -> String {
        let (host, port) = &self.hosts[index];
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        match port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }
}

/// Checks the scheme and maps aliases; adds `mode=rwc` to SQLite file URLs
/// so a missing file is created.
pub(super) fn normalize_url(url: &str) -> Result<String> {
    let invalid = |reason: &str| Error::InvalidDatabaseUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .or_else(|| url.split_once(':'))
        .ok_or_else(|| invalid("it has no scheme"))?;
    match scheme {
        "postgres" | "postgresql" | "mysql" => {
            if rest.is_empty() {
                return Err(invalid("it names no host"));
            }
            Ok(url.to_owned())
        }
        "mariadb" => Ok(format!("mysql://{rest}")),
        "sqlite" => {
            if rest.is_empty() {
                return Err(invalid("it names no file"));
            }
            if rest.contains("mode=") || rest.starts_with(":memory:") {
                Ok(url.to_owned())
            } else if rest.contains('?') {
                Ok(format!("{url}&mode=rwc"))
            } else {
                Ok(format!("{url}?mode=rwc"))
            }
        }
        other => Err(invalid(&format!(
            "the scheme {other:?} is not one of sqlite, postgres, mysql, mariadb"
        ))),
    }
}

/// Splits a PostgreSQL or MySQL URL (already [normalized](normalize_url))
/// into its hosts and this crate's parameters:
///
/// - several hosts, `postgres://u@h1:5432,h2:5432/db`, as libpq and the
///   MariaDB connectors write them: the first writable one is used, and
///   another is looked for when it stops being so (failover);
/// - `target_session_attrs=read-write` (or `primary`): connect only to a
///   writable server, the default with several hosts; `any` takes the
///   first that answers;
/// - `pooler=transaction` (PostgreSQL): the URL names a transaction
///   pooler such as PgBouncer in `pool_mode = transaction`.
pub(crate) fn target(url: &str) -> Result<Target> {
    let invalid = |reason: String| Error::InvalidDatabaseUrl {
        url: redact(url),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("it has no scheme".to_owned()))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) =
        before_query.split_at(before_query.find('/').unwrap_or(before_query.len()));
    let (userinfo, host_list) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let mut hosts = Vec::new();
    for host in host_list.split(',') {
        hosts.push(host_port(host).map_err(&invalid)?);
    }
    let mut read_write = hosts.len() > 1;
    let mut pooler = Pooler::None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|query| query.split('&')) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => {
                read_write = match value {
                    "read-write" | "primary" => true,
                    "any" => false,
                    other => {
                        return Err(invalid(format!(
                            "target_session_attrs={other} is not supported: the queue writes to \
                             its database, so use read-write (the default with several hosts) \
                             or any"
                        )));
                    }
                }
            }
            Some(("pooler", value)) => {
                if scheme != "postgres" && scheme != "postgresql" {
                    return Err(invalid(
                        "pooler= applies to PostgreSQL URLs (PgBouncer); MySQL and MariaDB \
                         connections need no such setting"
                            .to_owned(),
                    ));
                }
                pooler = match value {
                    "transaction" => Pooler::Transaction,
                    "session" | "none" => Pooler::None,
                    other => {
                        return Err(invalid(format!(
                            "pooler={other} is not supported: use pooler=transaction behind \
                             PgBouncer's pool_mode = transaction (or statement), and nothing (or \
                             pooler=session) behind a session pooler or the server itself"
                        )));
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let userinfo = userinfo
        .map(|userinfo| format!("{userinfo}@"))
        .unwrap_or_default();
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let mut target = Target {
        url: String::new(),
        hosts,
        read_write,
        pooler,
    };
    target.url = format!("{scheme}://{userinfo}{}{path}{query}", target.host_name(0));
    Ok(target)
}

/// `host`, `host:port` or `[v6]:port`.
fn host_port(host: &str) -> std::result::Result<(String, Option<u16>), String> {
    if host.is_empty() {
        return Err(
            "it has an empty host (two commas, or a comma at an end of the host list)".to_owned(),
        );
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("the host {host:?} opens a bracket it does not close"))?;
        (name.to_owned(), after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port)),
            None => (host.to_owned(), None),
        }
    };
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .map_err(|_| format!("the port of {host:?} is not a number from 0 to 65535"))
        })
        .transpose()?;
    Ok((name, port))
}

/// Takes this crate's own `synchronous=` parameter out of a SQLite URL
/// (sqlx does not know it): `full` (the default: a committed transaction
/// survives a power cut) or `normal` (WAL commits are not flushed to disk
/// one by one; a power cut may roll back the last ones, never corrupts the
/// file; several times faster for small transactions).
pub(super) fn sqlite_synchronous(url: &str) -> Result<(String, SqliteSynchronous)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), SqliteSynchronous::Full));
    };
    if !url.starts_with("sqlite:") {
        return Ok((url.to_owned(), SqliteSynchronous::Full));
    }
    let mut synchronous = SqliteSynchronous::Full;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "full" => SqliteSynchronous::Full,
                    "normal" => SqliteSynchronous::Normal,
                    other => {
                        return Err(Error::InvalidDatabaseUrl {
                            url: redact(url),
                            reason: format!(
                                "synchronous={other} is not supported; use synchronous=full \
                                 (the default) or synchronous=normal"
                            ),
                        });
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, synchronous))
}

/// The URL with its password replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_normalized() {
        assert_eq!(
            normalize_url("sqlite://x.db").unwrap(),
            "sqlite://x.db?mode=rwc"
        );
        assert_eq!(
            normalize_url("sqlite://x.db?a=b").unwrap(),
            "sqlite://x.db?a=b&mode=rwc"
        );
        assert_eq!(normalize_url("sqlite::memory:").unwrap(), "sqlite::memory:");
        assert_eq!(
            normalize_url("mariadb://root@h/db").unwrap(),
            "mysql://root@h/db"
        );
        assert!(normalize_url("redis://h").is_err());
        assert!(normalize_url("no scheme").is_err());
        assert!(normalize_url("postgres://").is_err());
    }

    #[test]
    fn sqlite_synchronous_is_ours_to_read() {
        let (url, sync) = sqlite_synchronous("sqlite://q.db?mode=rwc&synchronous=normal").unwrap();
        assert_eq!(url, "sqlite://q.db?mode=rwc");
        assert!(matches!(sync, SqliteSynchronous::Normal));
        let (url, sync) = sqlite_synchronous("sqlite://q.db?mode=rwc").unwrap();
        assert_eq!(url, "sqlite://q.db?mode=rwc");
        assert!(matches!(sync, SqliteSynchronous::Full));
        let err = sqlite_synchronous("sqlite://q.db?synchronous=off").unwrap_err();
        assert!(err.to_string().contains("synchronous=normal"), "{err}");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        let err = normalize_url("oracle://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        let err = target("postgres://u:secret@h1,,h2/db")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("secret") && err.contains("empty host"),
            "{err}"
        );
    }

    #[test]
    fn several_hosts_and_our_parameters_are_taken_out() {
        let t = target(
            "postgres://u:p@10.0.0.1:5432,[::1]:5433,db3/queue?sslmode=require&\
             target_session_attrs=read-write&pooler=transaction",
        )
        .unwrap();
        assert_eq!(t.url, "postgres://u:p@10.0.0.1:5432/queue?sslmode=require");
        assert_eq!(
            t.hosts,
            vec![
                ("10.0.0.1".to_owned(), Some(5432)),
                ("::1".to_owned(), Some(5433)),
                ("db3".to_owned(), None),
            ]
        );
        assert!(t.read_write);
        assert_eq!(t.pooler, Pooler::Transaction);
        assert_eq!(t.host_name(1), "[::1]:5433");
        assert_eq!(t.host_name(2), "db3");

        let one = target("mysql://root@127.0.0.1:3306/test").unwrap();
        assert_eq!(one.url, "mysql://root@127.0.0.1:3306/test");
        assert!(!one.read_write);
        assert_eq!(one.pooler, Pooler::None);

        let any = target("mysql://root@a:1,b:2/test?target_session_attrs=any").unwrap();
        assert!(!any.read_write);
        assert_eq!(any.url, "mysql://root@a:1/test");
    }

    #[test]
    fn parameters_that_cannot_work_are_refused_with_the_fix() {
        let standby = target("postgres://h1,h2/db?target_session_attrs=standby")
            .unwrap_err()
            .to_string();
        assert!(standby.contains("read-write"), "{standby}");
        let mysql_pooler = target("mysql://h/db?pooler=transaction")
            .unwrap_err()
            .to_string();
        assert!(mysql_pooler.contains("PostgreSQL"), "{mysql_pooler}");
        let typo = target("postgres://h/db?pooler=transactions")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("pooler=transaction"), "{typo}");
        let port = target("postgres://h:99999/db").unwrap_err().to_string();
        assert!(port.contains("65535"), "{port}");
    }
}
