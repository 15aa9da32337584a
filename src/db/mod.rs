//! Opening the queue's database: URL checks, per-backend connection
//! settings, and migrations that are safe when several processes start at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use crate::error::{Error, Result};

mod hosts;
mod url;

pub use url::Pooler;
pub(crate) use url::redact;
use url::{normalize_url, sqlite_synchronous};

/// File of the embedded SQLite database used when no URL is given,
/// created in the working directory.
pub const DEFAULT_SQLITE_FILE: &str = "background_tasks.sqlite3";

/// How long a SQLite writer waits for another writer before giving up
/// (SQLite's `busy_timeout`).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening a connection to PostgreSQL or MySQL may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Key of the lock that serializes migrations between processes
/// (`pg_advisory_xact_lock` on PostgreSQL, `GET_LOCK` on MySQL/MariaDB).
const MIGRATION_LOCK_KEY: i64 = 0x0062_6774_6173_6b73; // "bgtasks" in ASCII
const MIGRATION_LOCK_NAME: &str = "background_tasks_migrate";

/// Sets the time zone the database's naive timestamps are in, for this
/// process: an IANA name (`America/New_York`). The default is UTC.
///
/// For a database shared with a Django project that has `USE_TZ = False`:
/// such a project writes every timestamp as a naive wall-clock time of its
/// `TIME_ZONE`. Give that zone here and every timestamp this crate writes
/// to the queue's tables (SQLite and MySQL/MariaDB) is the same wall-clock
/// time, and every one it reads is taken as one, so tasks run when they are
/// due on both sides. PostgreSQL stores instants
/// (`timestamp with time zone`) whatever Django's setting, so there the
/// zone changes nothing. `bgtasks` reads it from
/// `BACKGROUND_TASK_DB_TIME_ZONE`.
///
/// One zone per process, like Django's own setting: set it before the
/// first statement; setting another zone later is refused. Your own SeaORM
/// statements on these tables do not go through it.
pub fn set_time_zone(zone: &str) -> Result<()> {
    let parsed: chrono_tz::Tz = zone.parse().map_err(|_| {
        Error::invalid(
            "time zone",
            format!(
                "{zone:?} is not an IANA time zone name; give one such as UTC, Europe/Paris or \
                 America/New_York (Django's TIME_ZONE)"
            ),
        )
    })?;
    if !crate::store::set_db_time_zone(parsed) {
        return Err(Error::invalid(
            "time zone",
            format!(
                "this process already reads and writes timestamps in {}; it cannot change to \
                 {zone} (one zone per process)",
                time_zone()
            ),
        ));
    }
    Ok(())
}

/// The time zone set by [`set_time_zone`] (`UTC` when none was).
pub fn time_zone() -> String {
    crate::store::naive_zone(DbBackend::MySql)
        .map_or_else(|| "UTC".to_owned(), |zone| zone.name().to_owned())
}

/// The URL of the embedded default database: [`DEFAULT_SQLITE_FILE`] in the
/// working directory, created when missing.
pub fn default_url() -> String {
    format!("sqlite://{DEFAULT_SQLITE_FILE}?mode=rwc")
}

/// Connects to `url` (or the embedded SQLite file when `None`) and brings the
/// schema up to date. This is what the runner and most applications want.
pub async fn open(url: Option<&str>) -> Result<DatabaseConnection> {
    let db = connect(url).await?;
    migrate(&db).await?;
    Ok(db)
}

/// Connects without touching the schema.
///
/// SQLite runs in WAL mode (other processes read while one writes) with a
/// busy timeout of [`SQLITE_BUSY_TIMEOUT`] and `synchronous = FULL`, so a
/// committed task survives a power cut (`?synchronous=normal` in the URL
/// trades that for speed: a power cut may then roll back the last
/// commits), through one connection per process
/// (all of a process's writes go through one writer). PostgreSQL and MySQL connections time out after
/// [`CONNECT_TIMEOUT`] instead of hanging on an unreachable host.
pub async fn connect(url: Option<&str>) -> Result<DatabaseConnection> {
    connect_pool(url, false).await
}

/// Connects for one short command that runs its statements one after
/// another (`bgtasks enqueue`, `list`, `retry`...): a pool of one
/// connection, so the command opens one connection (one TLS handshake) in
/// all.
///
/// With a larger pool, sqlx gives a released connection back through a
/// spawned task that first pings it; the next statement, issued at once,
/// finds no idle connection and opens a second one. With one connection it
/// waits for that ping (one round trip) instead. The ping on acquire is
/// skipped: the connection was just pinged on release.
pub(crate) async fn connect_for_command(url: Option<&str>) -> Result<DatabaseConnection> {
    connect_pool(url, true).await
}

async fn connect_pool(url: Option<&str>, one_connection: bool) -> Result<DatabaseConnection> {
    let url = match url {
        Some(url) => normalize_url(url)?,
        None => default_url(),
    };
    if !url.starts_with("sqlite:") {
        return connect_server(&url, one_connection).await;
    }
    let (url, synchronous) = sqlite_synchronous(&url)?;
    let mut options = ConnectOptions::new(url.clone());
    options
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlx_logging(false);
    {
        // One connection: this process's writes queue up in the pool, in
        // order, instead of several connections fighting for SQLite's one
        // write lock through its busy handler (which sleeps up to 100 ms a
        // try, and under load ends in "database is locked"). Other
        // processes still wait for the lock up to the busy timeout. Inside
        // your own transaction, enqueue with `enqueue_with(&txn, ..)`: the
        // pool's only connection is the transaction's.
        //
        // No ping before each use: the connection is a file opened in this
        // process, it cannot have been dropped by a server or a network,
        // and sqlx already pings it when it comes back to the pool. The
        // ping cost a round trip to SQLite's worker thread per
        // transaction.
        options
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(SQLITE_BUSY_TIMEOUT * 2)
            .test_before_acquire(false);
    }
    options.map_sqlx_sqlite_opts(move |opts| {
        opts.journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
    });
    let pool = Arc::new(holders::Pool::default());
    {
        let (acquired, connected, released) = (pool.clone(), pool.clone(), pool.clone());
        options.map_sqlx_sqlite_pool_opts(move |pool| {
            let (acquired, connected, released) =
                (acquired.clone(), connected.clone(), released.clone());
            pool.before_acquire(move |_, _| {
                acquired.holder.store(current_task(), Ordering::SeqCst);
                Box::pin(async { Ok(true) })
            })
            .after_connect(move |_, _| {
                connected.holder.store(current_task(), Ordering::SeqCst);
                Box::pin(async { Ok(()) })
            })
            .after_release(move |_, _| {
                released.holder.store(0, Ordering::SeqCst);
                Box::pin(async { Ok(true) })
            })
        });
    }
    let db = Database::connect(options)
        .await
        .map_err(|source| Error::Connect {
            url: redact(&url),
            source,
        })?;
    holders::register(&db, &pool);
    Ok(db)
}

/// Connects to PostgreSQL or MySQL/MariaDB: one host or several (the first
/// writable, watched for failover: [`hosts`]), directly or through a
/// transaction pooler ([`Pooler`]).
async fn connect_server(url: &str, one_connection: bool) -> Result<DatabaseConnection> {
    let target = url::target(url)?;
    let connect_error = |source| Error::Connect {
        url: redact(url),
        source,
    };
    let options = if target.url.starts_with("mysql:") {
        hosts::Options::MySql(target.url.parse().map_err(|err: sea_orm::sqlx::Error| {
            connect_error(sea_orm::DbErr::Custom(err.to_string()))
        })?)
    } else {
        let options: sea_orm::sqlx::postgres::PgConnectOptions =
            target.url.parse().map_err(|err: sea_orm::sqlx::Error| {
                connect_error(sea_orm::DbErr::Custom(err.to_string()))
            })?;
        hosts::Options::Postgres(match target.pooler {
            // Unnamed statements, parsed and run with no ReadyForQuery in
            // between (vendor/sqlx-postgres): nothing outlives a statement.
            Pooler::Transaction => options.statement_cache_capacity(0),
            Pooler::None => options,
        })
    };
    let chosen = if target.read_write {
        hosts::choose(&target, &options, CONNECT_TIMEOUT)
            .await
            .map_err(|answers| Error::NoWritableHost {
                url: redact(url),
                answers,
            })?
    } else {
        0
    };
    let chosen_options = hosts::options_on(&options, &target, chosen);
    let info = Arc::new(PoolInfo {
        pooler: target.pooler,
        switches: hosts::Switches::new(chosen),
    });
    let mut connect = ConnectOptions::new(target.url.clone());
    connect
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlx_logging(false);
    // No ping before every statement (sqlx's default): it doubled the round
    // trips of a lone statement (a single enqueue, a claim, an outcome
    // batch). sqlx pings a connection when it comes back to the pool; the
    // `before_acquire` hooks below ping one again only when it has been
    // idle for `IDLE_CHECK` or longer, time in which a server, a pooler or
    // a failover may have dropped it.
    connect.test_before_acquire(false);
    if one_connection {
        connect.max_connections(1);
    }
    let check = target.read_write;
    match chosen_options.clone() {
        hosts::Options::Postgres(chosen) => {
            let held = info.clone();
            // On top of sea-orm's own options (statement logging off...):
            // the chosen host, and no statement cache behind a pooler.
            let (host, port) = (chosen.get_host().to_owned(), chosen.get_port());
            let pooled = target.pooler == Pooler::Transaction;
            connect.map_sqlx_postgres_opts(move |options| {
                let options = options.host(&host).port(port);
                if pooled {
                    options.statement_cache_capacity(0)
                } else {
                    options
                }
            });
            connect.map_sqlx_postgres_pool_opts(move |pool| {
                let held = held.clone();
                let pool = pool.before_acquire(move |conn, meta| {
                    let current = held.switches.is_current(meta.age);
                    Box::pin(hosts::usable(conn, meta, current))
                });
                if check {
                    pool.after_connect(|conn, _| Box::pin(hosts::check_postgres(conn)))
                } else {
                    pool
                }
            });
        }
        hosts::Options::MySql(chosen) => {
            let held = info.clone();
            let (host, port) = (chosen.get_host().to_owned(), chosen.get_port());
            connect.map_sqlx_mysql_opts(move |options| options.host(&host).port(port));
            connect.map_sqlx_mysql_pool_opts(move |pool| {
                let held = held.clone();
                let pool = pool.before_acquire(move |conn, meta| {
                    let current = held.switches.is_current(meta.age);
                    Box::pin(hosts::usable(conn, meta, current))
                });
                if check {
                    pool.after_connect(|conn, _| Box::pin(hosts::check_mysql(conn)))
                } else {
                    pool
                }
            });
        }
    }
    let db = Database::connect(connect).await.map_err(connect_error)?;
    pools::register(&db, &info);
    if target.hosts.len() > 1 && !one_connection {
        let pool = match db.get_database_backend() {
            DbBackend::Postgres => hosts::Pool::Postgres(db.get_postgres_connection_pool().clone()),
            _ => hosts::Pool::MySql(db.get_mysql_connection_pool().clone()),
        };
        let switches = info.switches.clone();
        tokio::spawn(hosts::watch(target, options, pool, switches));
    }
    Ok(db)
}

/// What this crate knows of a server pool it opened.
struct PoolInfo {
    pooler: Pooler,
    switches: Arc<hosts::Switches>,
}

/// What stands between `db` and its PostgreSQL server, as its URL said
/// (`pooler=`): a transaction pooler takes no `LISTEN`.
pub fn pooler(db: &DatabaseConnection) -> Pooler {
    pools::of(db).map_or(Pooler::None, |info| info.pooler)
}

/// The server pools this process opened, each known by its options'
/// address for as long as the pool (whose hooks hold the info) lives.
mod pools {
    use std::sync::{Arc, Mutex, Weak};

    use sea_orm::{DatabaseConnection, DbBackend};

    use super::PoolInfo;

    static POOLS: Mutex<Vec<(usize, Weak<PoolInfo>)>> = Mutex::new(Vec::new());

    fn key(db: &DatabaseConnection) -> Option<usize> {
        match db.get_database_backend() {
            DbBackend::Postgres => {
                Some(db.get_postgres_connection_pool().options() as *const _ as usize)
            }
            DbBackend::MySql => Some(db.get_mysql_connection_pool().options() as *const _ as usize),
            _ => None,
        }
    }

    fn lock() -> std::sync::MutexGuard<'static, Vec<(usize, Weak<PoolInfo>)>> {
        POOLS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn register(db: &DatabaseConnection, info: &Arc<PoolInfo>) {
        let Some(key) = key(db) else { return };
        let mut pools = lock();
        pools.retain(|(_, info)| info.strong_count() > 0);
        pools.push((key, Arc::downgrade(info)));
    }

    pub(super) fn of(db: &DatabaseConnection) -> Option<Arc<PoolInfo>> {
        let key = key(db)?;
        lock()
            .iter()
            .rev()
            .find(|(k, info)| *k == key && info.strong_count() > 0)
            .and_then(|(_, info)| info.upgrade())
    }
}

/// The tokio task running now, as a number; outside a task (the future a
/// `block_on` runs, such as an `#[actix_web::main]` body) the thread.
fn current_task() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match tokio::task::try_id() {
        Some(id) => id.hash(&mut hasher),
        None => (std::thread::current().id(), "block_on").hash(&mut hasher),
    }
    hasher.finish().max(1)
}

/// How long an enqueue on the pool waits, when the calling task itself
/// holds SQLite's one connection, before it is refused: long enough for a
/// connection the task just released (a commit) to come back.
const SELF_HELD_GRACE: Duration = Duration::from_millis(100);

/// Who uses each SQLite pool's one connection: the task holding it (set
/// when a task acquires it, cleared when it comes back; a transaction,
/// `db.begin()`, holds it until it commits or rolls back), and how many of
/// this crate's own writes each task has under way on it.
mod holders {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, Weak};

    use sea_orm::DatabaseConnection;

    #[derive(Default)]
    pub(super) struct Pool {
        /// The task holding the connection, or 0.
        pub(super) holder: AtomicU64,
        /// Task -> this crate's writes of that task under way on the pool.
        writes: Mutex<HashMap<u64, usize>>,
    }

    impl Pool {
        /// Whether `task` has one of this crate's writes under way.
        pub(super) fn writing(&self, task: u64) -> bool {
            lock(&self.writes).contains_key(&task)
        }

        /// Counts a write of `task` until the returned guard drops (also
        /// when the write's future is dropped half-way).
        pub(super) fn write(self: &Arc<Self>, task: u64) -> Write {
            *lock(&self.writes).entry(task).or_default() += 1;
            Write {
                pool: Arc::clone(self),
                task,
            }
        }

        pub(super) fn held_by(&self, task: u64) -> bool {
            self.holder.load(Ordering::SeqCst) == task
        }
    }

    pub(super) struct Write {
        pool: Arc<Pool>,
        task: u64,
    }

    impl Drop for Write {
        fn drop(&mut self) {
            let mut writes = lock(&self.pool.writes);
            if let Some(count) = writes.get_mut(&self.task) {
                *count -= 1;
                if *count == 0 {
                    writes.remove(&self.task);
                }
            }
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    static POOLS: Mutex<Vec<(usize, Weak<Pool>)>> = Mutex::new(Vec::new());

    /// The pool's identity: its shared connect options.
    fn key(db: &DatabaseConnection) -> usize {
        Arc::as_ptr(&db.get_sqlite_connection_pool().connect_options()) as usize
    }

    pub(super) fn register(db: &DatabaseConnection, pool: &Arc<Pool>) {
        let mut pools = lock(&POOLS);
        pools.retain(|(_, pool)| pool.strong_count() > 0);
        pools.push((key(db), Arc::downgrade(pool)));
    }

    pub(super) fn of(db: &DatabaseConnection) -> Option<Arc<Pool>> {
        let key = key(db);
        lock(&POOLS)
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, pool)| pool.upgrade())
    }
}

/// Runs `work` (statements on `db`'s pool, outside any transaction of the
/// caller's). On SQLite the process has one connection: when the calling
/// task holds it in a transaction of its own, `work` would wait for that
/// transaction forever (and every runner of the process with it), so it is
/// refused within [`SELF_HELD_GRACE`] with an error that says to enqueue
/// inside the transaction. Other backends, and other tasks' transactions,
/// just run `work`.
///
/// The calling task may also hold the connection for one of this crate's
/// own writes (several enqueues awaited together, as `join_all` does):
/// that hold ends by itself, so `work` waits its turn instead.
pub(crate) async fn outside_own_transaction<T>(
    db: &DatabaseConnection,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return work.await;
    }
    let Some(pool) = holders::of(db) else {
        return work.await;
    };
    let me = current_task();
    // A connection this task just gave back (a commit, or its previous
    // statement) is returned to the pool by a task sqlx spawns: wait for
    // that, never for the database. A transaction of this task's own never
    // gives it back.
    let deadline = tokio::time::Instant::now() + SELF_HELD_GRACE;
    while pool.held_by(me) && !pool.writing(me) {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::OwnTransaction);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _write = pool.write(me);
    work.await
}

/// Names of the migrations this version expects that have not run on
/// `db`, in order: empty when the schema is up to date. Reads only: unlike
/// sea-orm-migration's status, it never creates the migrations table.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>> {
    let backend = db.get_database_backend();
    let table = Migrator::MIGRATION_TABLE;
    let exists = match backend {
        DbBackend::Postgres => format!(
            "SELECT 1 AS found FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '{table}'"
        ),
        DbBackend::MySql => format!(
            "SELECT 1 AS found FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '{table}'"
        ),
        _ => format!(
            "SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
        ),
    };
    let applied: Vec<String> = if db
        .query_one_raw(Statement::from_string(backend, exists))
        .await?
        .is_some()
    {
        db.query_all_raw(Statement::from_string(
            backend,
            format!("SELECT version FROM {table}"),
        ))
        .await?
        .iter()
        .filter_map(|row| row.try_get::<String>("", "version").ok())
        .collect()
    } else {
        Vec::new()
    };
    Ok(Migrator::migrations()
        .iter()
        .map(|migration| migration.name().to_owned())
        .filter(|name| !applied.contains(name))
        .collect())
}

/// The file a SQLite URL (or the default, for `None`) names; `None` for
/// other databases and for in-memory SQLite.
pub fn sqlite_file(url: Option<&str>) -> Option<std::path::PathBuf> {
    let url = url.map_or_else(default_url, str::to_owned);
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Applies the pending migrations of the queue's tables.
///
/// Runs in one transaction holding a database-wide lock, so processes that
/// start together (a web app and its runners) migrate once, one after the
/// other, and never see a half-created schema.
pub async fn migrate(db: &DatabaseConnection) -> Result<()> {
    migrate_and(db, false).await.map(drop)
}

/// Applies the pending migrations, then creates every index of Django's
/// `0001_initial` that is missing (under Django's names) and returns their
/// names: run it before a Django app attaches to tables this crate created
/// (`bgtasks migrate --django-indexes`). Without a Django app the queue
/// keeps only the indexes it reads through (migration 12), which makes every
/// enqueue, claim and history insert cheaper.
pub async fn migrate_with_django_indexes(db: &DatabaseConnection) -> Result<Vec<String>> {
    migrate_and(db, true).await
}

async fn migrate_and(db: &DatabaseConnection, django_indexes: bool) -> Result<Vec<String>> {
    let backend = db.get_database_backend();
    let options = TransactionOptions {
        // SQLite: take the write lock at BEGIN, which is the migration lock.
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    let txn = db
        .begin_with_options(options)
        .await
        .map_err(Error::Migrate)?;
    match backend {
        DbBackend::Postgres => {
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                "SELECT pg_advisory_xact_lock($1)",
                [MIGRATION_LOCK_KEY.into()],
            ))
            .await
            .map_err(Error::Migrate)?;
        }
        DbBackend::MySql => {
            // MySQL commits DDL implicitly, so its lock is a named session
            // lock on the transaction's connection, released below.
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                "SELECT GET_LOCK(?, 60)",
                [MIGRATION_LOCK_NAME.into()],
            ))
            .await
            .map_err(Error::Migrate)?;
        }
        _ => {}
    }
    let mut outcome = Migrator::up(&txn, None).await.map(|()| Vec::new());
    if django_indexes && outcome.is_ok() {
        outcome = migration::django_indexes(&txn).await;
    }
    if backend == DbBackend::MySql {
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            "SELECT RELEASE_LOCK(?)",
            [MIGRATION_LOCK_NAME.into()],
        ))
        .await
        .map_err(Error::Migrate)?;
    }
    let created = outcome.map_err(Error::Migrate)?;
    txn.commit().await.map_err(Error::Migrate)?;
    Ok(created)
}
