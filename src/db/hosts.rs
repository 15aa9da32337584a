//! Several servers behind one URL: which one takes writes, and moving the
//! pool to another when it stops (a PostgreSQL standby promoted after its
//! primary died, a Galera node that left its cluster).
//!
//! - At connect, the hosts are tried in the URL's order and the first
//!   writable one is used: PostgreSQL not in recovery and not read-only
//!   (libpq's `target_session_attrs=read-write`); MySQL/MariaDB not
//!   `read_only` and, on Galera, `Synced`. None writable within
//!   [`super::CONNECT_TIMEOUT`]: an error that says what each host is.
//! - Every new pooled connection is checked the same way, so none lands on
//!   a server that cannot take the queue's writes.
//! - A watch (its own connection, one query every [`WATCH_EVERY`]) notices when
//!   the host in use stops answering or taking writes, looks for another,
//!   and points the pool at it; connections opened before the switch are
//!   closed instead of being handed out. It ends when the pool is closed.
//!
//! Nothing here retries a statement: a statement that was under way when
//! its server died fails, as it would with one host, and the runner's own
//! retries (claims, outcome writes) or the caller (an enqueue) try again on
//! the new server.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _, Row as _};

use super::url::Target;

/// How often the watch checks the host in use.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(500);

/// How long one host may take to answer a check.
const HOST_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a pooled connection may sit idle before it is pinged again
/// when taken from the pool ([`usable`]).
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Whether a pooled connection may be handed out: opened after the last
/// host switch (`current`) and, when it has been idle for [`IDLE_CHECK`] or
/// longer, answering a ping. A busy pool hands its connections out without
/// a round trip; sqlx pinged each when it came back.
pub(super) async fn usable<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
    current: bool,
) -> Result<bool, sqlx::Error> {
    if !current {
        return Ok(false);
    }
    if meta.idle_for < IDLE_CHECK {
        return Ok(true);
    }
    Ok(conn.ping().await.is_ok())
}

/// The driver options of one backend, for any of the URL's hosts.
#[derive(Clone)]
pub(super) enum Options {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
}

impl Options {
    fn on(&self, target: &Target, index: usize) -> Options {
        let (host, port) = &target.hosts[index];
        match self {
            Options::Postgres(options) => {
                Options::Postgres(options.clone().host(host).port(port.unwrap_or(5432)))
            }
            Options::MySql(options) => {
                Options::MySql(options.clone().host(host).port(port.unwrap_or(3306)))
            }
        }
    }

    /// Connects and says whether the server takes writes.
    async fn check(&self) -> Result<Check, String> {
        let work = async {
            let mut conn = self.connect().await?;
            let state = conn.state().await;
            conn.close().await;
            state
        };
        tokio::time::timeout(HOST_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", HOST_TIMEOUT.as_secs())))
    }

    async fn connect(&self) -> Result<Probe, String> {
        match self {
            Options::Postgres(options) => options.connect().await.map(Probe::Postgres),
            Options::MySql(options) => options.connect().await.map(Probe::MySql),
        }
        .map_err(|err| err.to_string())
    }
}

/// The watch's own connection to the host in use.
enum Probe {
    Postgres(PgConnection),
    MySql(MySqlConnection),
}

impl Probe {
    async fn state(&mut self) -> Result<Check, String> {
        match self {
            Probe::Postgres(conn) => postgres_state(conn).await,
            Probe::MySql(conn) => mysql_state(conn).await,
        }
        .map_err(|err| err.to_string())
    }

    async fn close(self) {
        let _ = match self {
            Probe::Postgres(conn) => conn.close().await,
            Probe::MySql(conn) => conn.close().await,
        };
    }

    /// The state of the host through this connection, or through a new one
    /// when this one fails (it may have been closed while the host is
    /// fine): `Err` only when a new connection fails too.
    async fn check(slot: &mut Option<Probe>, options: &Options) -> Result<Check, String> {
        if let Some(conn) = slot.as_mut() {
            match tokio::time::timeout(HOST_TIMEOUT, conn.state()).await {
                Ok(Ok(state)) => return Ok(state),
                _ => *slot = None,
            }
        }
        let work = async {
            let mut conn = options.connect().await?;
            let state = conn.state().await?;
            Ok::<_, String>((conn, state))
        };
        match tokio::time::timeout(HOST_TIMEOUT, work).await {
            Ok(Ok((conn, state))) => {
                *slot = Some(conn);
                Ok(state)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(format!("no answer within {} s", HOST_TIMEOUT.as_secs())),
        }
    }
}

/// What a server said about taking writes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Check {
    Writable,
    /// Why not: "a standby (in recovery)", "read-only", "a Galera node
    /// that is Joining, not Synced".
    Not(String),
}

async fn postgres_state(conn: &mut PgConnection) -> Result<Check, sqlx::Error> {
    let row = sqlx::raw_sql(
        "SELECT CASE WHEN pg_is_in_recovery() THEN 'a standby (in recovery)' \
         WHEN current_setting('transaction_read_only') = 'on' THEN 'read-only' ELSE '' END",
    )
    .fetch_one(&mut *conn)
    .await?;
    let why: String = row.try_get(0)?;
    Ok(if why.is_empty() {
        Check::Writable
    } else {
        Check::Not(why)
    })
}

async fn mysql_state(conn: &mut MySqlConnection) -> Result<Check, sqlx::Error> {
    let row = sqlx::raw_sql("SELECT IF(@@global.read_only, 'read-only', '')")
        .fetch_one(&mut *conn)
        .await?;
    let why: String = row.try_get(0)?;
    if !why.is_empty() {
        return Ok(Check::Not(why));
    }
    let galera = sqlx::raw_sql("SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'")
        .fetch_all(&mut *conn)
        .await?;
    if let Some(row) = galera.first() {
        let state: String = row.try_get(1)?;
        if state != "Synced" {
            return Ok(Check::Not(format!(
                "a Galera node that is {state}, not Synced with its cluster"
            )));
        }
    }
    Ok(Check::Writable)
}

/// The check of a pooled connection just opened: an error (the connection
/// is closed and the pool tries again) when the server does not take writes.
pub(super) async fn check_postgres(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    match postgres_state(conn).await? {
        Check::Writable => Ok(()),
        Check::Not(why) => Err(not_writable(&why)),
    }
}

/// [`check_postgres`] for MySQL/MariaDB.
pub(super) async fn check_mysql(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    match mysql_state(conn).await? {
        Check::Writable => Ok(()),
        Check::Not(why) => Err(not_writable(&why)),
    }
}

fn not_writable(why: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!(
            "the server is {why}, and the queue needs one that takes writes; the URL's other \
             hosts are tried in turn"
        ),
    ))
}

/// Finds the first writable host, trying them all until `timeout` and
/// logging each round that found none. The error lists every host with
/// what it answered.
pub(super) async fn choose(
    target: &Target,
    options: &Options,
    timeout: Duration,
) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut answers = Vec::new();
        for index in 0..target.hosts.len() {
            match options.on(target, index).check().await {
                Ok(Check::Writable) => return Ok(index),
                Ok(Check::Not(why)) => {
                    answers.push(format!("{} is {why}", target.host_name(index)))
                }
                Err(err) => answers.push(format!(
                    "{} is unreachable ({err})",
                    target.host_name(index)
                )),
            }
        }
        let answers = answers.join("; ");
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no host of the URL takes writes: {answers}. Check that one server is a primary \
                 (a promoted standby, a Synced Galera node) and that the URL lists it"
            ));
        }
        tracing::warn!("waiting for a writable database host: {answers}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When the pool last moved to another host, so connections opened before
/// are closed instead of handed out.
#[derive(Default)]
pub(super) struct Switches {
    /// Milliseconds from [`epoch`] to the last switch; 0: never.
    last: AtomicU64,
    /// The host in use (an index into the target's hosts).
    current: AtomicUsize,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Switches {
    pub(super) fn new(current: usize) -> Arc<Self> {
        epoch();
        Arc::new(Switches {
            last: AtomicU64::new(0),
            current: AtomicUsize::new(current),
        })
    }

    /// Whether a pooled connection of this `age` was opened after the last
    /// switch (so it is connected to the host in use).
    pub(super) fn is_current(&self, age: Duration) -> bool {
        let last = self.last.load(Ordering::SeqCst);
        if last == 0 {
            return true;
        }
        let opened = epoch().elapsed().saturating_sub(age);
        opened.as_millis() as u64 >= last
    }

    fn switch(&self, to: usize) {
        self.current.store(to, Ordering::SeqCst);
        let now = (epoch().elapsed().as_millis() as u64).max(1);
        self.last.store(now, Ordering::SeqCst);
    }
}

/// The pool a watch moves.
pub(super) enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl Pool {
    fn is_closed(&self) -> bool {
        match self {
            Pool::Postgres(pool) => pool.is_closed(),
            Pool::MySql(pool) => pool.is_closed(),
        }
    }

    fn point_at(&self, options: Options) {
        match (self, options) {
            (Pool::Postgres(pool), Options::Postgres(options)) => pool.set_connect_options(options),
            (Pool::MySql(pool), Options::MySql(options)) => pool.set_connect_options(options),
            _ => {}
        }
    }
}

/// Watches the host in use every [`WATCH_EVERY`] until the pool closes;
/// when it stops answering or taking writes, points the pool at the first
/// host that takes them.
pub(super) async fn watch(target: Target, options: Options, pool: Pool, switches: Arc<Switches>) {
    let mut outage_logged = false;
    let mut probe = None;
    while !pool.is_closed() {
        tokio::time::sleep(WATCH_EVERY).await;
        let current = switches.current.load(Ordering::SeqCst);
        let why = match Probe::check(&mut probe, &options.on(&target, current)).await {
            Ok(Check::Writable) => {
                outage_logged = false;
                continue;
            }
            Ok(Check::Not(why)) => format!("is {why}"),
            Err(err) => format!("is unreachable ({err})"),
        };
        if pool.is_closed() {
            break;
        }
        match choose(&target, &options, Duration::ZERO).await {
            Ok(index) if index == current => outage_logged = false,
            Ok(index) => {
                tracing::warn!(
                    "database host {} {why}: moving to {}, which takes writes",
                    target.host_name(current),
                    target.host_name(index)
                );
                pool.point_at(options.on(&target, index));
                switches.switch(index);
                if let Some(old) = probe.take() {
                    old.close().await;
                }
                outage_logged = false;
            }
            Err(none) => {
                if !outage_logged {
                    tracing::warn!(
                        "database host {} {why}, and {none}; checking again every {} ms",
                        target.host_name(current),
                        WATCH_EVERY.as_millis()
                    );
                    outage_logged = true;
                }
            }
        }
    }
    if let Some(probe) = probe {
        probe.close().await;
    }
}

/// The options of host `index` of `target`, from the options of the first.
pub(super) fn options_on(options: &Options, target: &Target, index: usize) -> Options {
    options.on(target, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_a_switch_are_not_handed_out() {
        let switches = Switches::new(0);
        assert!(
            switches.is_current(Duration::from_secs(3600)),
            "no switch yet"
        );
        std::thread::sleep(Duration::from_millis(20));
        switches.switch(1);
        assert_eq!(switches.current.load(Ordering::SeqCst), 1);
        assert!(
            !switches.is_current(Duration::from_millis(500)),
            "opened before"
        );
        assert!(switches.is_current(Duration::ZERO), "opened just now");
    }
}
