//! One fixture for every integration test: each test body runs once per
//! backend (SQLite, PostgreSQL, MySQL/MariaDB) on a fresh, migrated database.
//!
//! - SQLite: a new file in a temporary directory.
//! - PostgreSQL / MySQL: a new database on the server named by
//!   `BGTASKS_TEST_POSTGRES_URL` / `BGTASKS_TEST_MYSQL_URL`, dropped when the
//!   test passes (`.ci/run` also drops leftovers of failed runs).
//!
//! Without those variables the server backends are skipped with a note,
//! except under `CI=true`, where a missing or unreachable server fails the
//! test loudly.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend};

pub use background_tasks::{Config, Queue, Registry};

/// Prefix of the per-test databases, so that cleanup finds them.
pub const DB_PREFIX: &str = "bgt_test_";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    fn env_var(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("BGTASKS_TEST_POSTGRES_URL"),
            Backend::MySql => Some("BGTASKS_TEST_MYSQL_URL"),
        }
    }
}

/// What a test body gets: a fresh migrated database and its URL.
pub struct TestDb {
    pub db: DatabaseConnection,
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A queue on this database with `registry` and `config`.
    pub fn queue(&self, registry: Registry, config: Config) -> Queue {
        Queue::with_parts(self.db.clone(), registry, config)
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{DB_PREFIX}{}_{n}_{nanos}", std::process::id())
}

/// Replaces the database name (the URL's path) of a server URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The admin URL of a server backend, or `None` when it is not configured
/// (which fails under `CI=true`).
pub fn server_url(backend: Backend) -> Option<String> {
    let var = backend.env_var()?;
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "CI=true but {var} is not set: CI must test {backend:?}; set it to the server's URL"
            )
        }
        _ => None,
    }
}

/// Creates a fresh migrated database for `backend`, or `None` when that
/// backend is not configured outside CI.
pub async fn fresh(backend: Backend) -> Option<TestDb> {
    fresh_with(backend, true).await
}

/// A fresh database, migrated by this crate (`migrated`) or left empty
/// (connected, no table), or `None` when the backend is not configured
/// outside CI.
pub async fn fresh_with(backend: Backend, migrated: bool) -> Option<TestDb> {
    let open = |url: String| async move {
        if migrated {
            background_tasks::db::open(Some(&url)).await
        } else {
            background_tasks::db::connect(Some(&url)).await
        }
        .unwrap_or_else(|err| panic!("open {url}: {err}"))
    };
    if backend == Backend::Sqlite {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("queue.sqlite3").display());
        let db = open(url.clone()).await;
        return Some(TestDb {
            db,
            url,
            backend,
            _dir: Some(dir),
        });
    }
    let admin_url = server_url(backend)?;
    let admin = Database::connect(&admin_url).await.unwrap_or_else(|err| {
        panic!("{backend:?} at {admin_url} is unreachable: {err}. Start the server, or unset the URL variable outside CI")
    });
    let name = unique_name();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|err| panic!("cannot create database {name} on {backend:?}: {err}"));
    admin.close().await.ok();
    let url = with_database(&admin_url, &name);
    let db = open(url.clone()).await;
    Some(TestDb {
        db,
        url,
        backend,
        _dir: None,
    })
}

/// Drops a server database after a passing test.
async fn drop_database(test_db: TestDb) {
    let TestDb {
        db, url, backend, ..
    } = test_db;
    db.close().await.ok();
    let Some(admin_url) = server_url(backend) else {
        return;
    };
    let name = url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    if let Ok(admin) = Database::connect(&admin_url).await {
        let sql = match admin.get_database_backend() {
            DbBackend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
        };
        admin.execute_unprepared(&sql).await.ok();
        admin.close().await.ok();
    }
}

/// Runs `body` on a fresh database of `backend`; skips (with a note) when
/// the backend is not configured outside CI.
pub async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = TestDb>,
{
    run_with(backend, true, body).await;
}

/// [`run`] on an empty database (no table), for tests that create the
/// schema another way (Django's migrations).
pub async fn run_empty<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = TestDb>,
{
    run_with(backend, false, body).await;
}

async fn run_with<F, Fut>(backend: Backend, migrated: bool, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = TestDb>,
{
    let Some(test_db) = fresh_with(backend, migrated).await else {
        eprintln!(
            "skipped on {backend:?}: set {} to run it",
            backend.env_var().unwrap_or_default()
        );
        return;
    };
    let test_db = body(test_db).await;
    if backend != Backend::Sqlite {
        drop_database(test_db).await;
    }
}

/// Declares tests that run on every backend: for each `async fn name(t:
/// TestDb) -> TestDb` listed, a module `name` with tests `sqlite`,
/// `postgres` and `mysql`.
#[macro_export]
macro_rules! on_all_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use $crate::fixture::{run, Backend};

                #[actix_rt::test]
                async fn sqlite() {
                    run(Backend::Sqlite, super::$name).await;
                }

                #[actix_rt::test]
                async fn postgres() {
                    run(Backend::Postgres, super::$name).await;
                }

                #[actix_rt::test]
                async fn mysql() {
                    run(Backend::MySql, super::$name).await;
                }
            }
        )+
    };
}

/// Declares tests that run on an empty database of every backend, for
/// Django's migrations to create the tables (django-background-tasks runs
/// on all three here: SQLite, PostgreSQL and MySQL/MariaDB).
#[macro_export]
macro_rules! on_django_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use $crate::fixture::{run_empty, Backend};

                #[actix_rt::test]
                async fn sqlite() {
                    run_empty(Backend::Sqlite, super::$name).await;
                }

                #[actix_rt::test]
                async fn postgres() {
                    run_empty(Backend::Postgres, super::$name).await;
                }

                #[actix_rt::test]
                async fn mysql() {
                    run_empty(Backend::MySql, super::$name).await;
                }
            }
        )+
    };
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("mysql://root@h/test?ssl-mode=disabled", "x"),
        "mysql://root@h/x?ssl-mode=disabled"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

/// How tasks are run in a test: inline one at a time (`run_next_task`, the
/// seed's synchronous mode), or by a started runner with a pool of
/// executors (the seed's async mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Sequential,
    Pool,
}

/// Waits until `condition` holds, checking every 20 ms, for at most
/// `timeout`; panics with `what` when it never does.
pub async fn wait_for<F, Fut>(what: &str, timeout: std::time::Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Like [`on_all_backends`], for `async fn name(t: TestDb, mode: Mode) ->
/// TestDb`: six tests per name, every backend in both modes.
#[macro_export]
macro_rules! on_all_backends_and_modes {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use $crate::fixture::{run, Backend, Mode};

                #[actix_rt::test]
                async fn sqlite_sequential() {
                    run(Backend::Sqlite, |t| super::$name(t, Mode::Sequential)).await;
                }

                #[actix_rt::test]
                async fn sqlite_pool() {
                    run(Backend::Sqlite, |t| super::$name(t, Mode::Pool)).await;
                }

                #[actix_rt::test]
                async fn postgres_sequential() {
                    run(Backend::Postgres, |t| super::$name(t, Mode::Sequential)).await;
                }

                #[actix_rt::test]
                async fn postgres_pool() {
                    run(Backend::Postgres, |t| super::$name(t, Mode::Pool)).await;
                }

                #[actix_rt::test]
                async fn mysql_sequential() {
                    run(Backend::MySql, |t| super::$name(t, Mode::Sequential)).await;
                }

                #[actix_rt::test]
                async fn mysql_pool() {
                    run(Backend::MySql, |t| super::$name(t, Mode::Pool)).await;
                }
            }
        )+
    };
}

/// Like [`on_all_backends`], for behaviour that only exists with a database
/// server shared by several hosts (PostgreSQL and MySQL/MariaDB).
#[macro_export]
macro_rules! on_server_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use $crate::fixture::{run, Backend};

                #[actix_rt::test]
                async fn postgres() {
                    run(Backend::Postgres, super::$name).await;
                }

                #[actix_rt::test]
                async fn mysql() {
                    run(Backend::MySql, super::$name).await;
                }
            }
        )+
    };
}
