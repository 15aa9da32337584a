//! A runner in its own process, for the tests that need several runners
//! or kill one: the test binary runs itself with `child::child_runner`
//! (ignored in normal runs) and these variables:
//! `BGT_CHILD_URL` (database), `BGT_CHILD_THREADS`, `BGT_CHILD_LEASE_MS`.
//!
//! It runs the `ledger` task, whose body records each execution in the
//! table `bgt_ledger` (created by the parent), prints its runner identity on
//! the first line of stdout, and stops gracefully at SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use background_tasks::{Config, Queue, Registry, Runner, Task, TaskContext, TaskError};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// Records every execution: (job, runner).
#[derive(Clone)]
pub struct Ledger {
    pub db: DatabaseConnection,
    pub runner: String,
}

impl Task for Ledger {
    type Params = (i64, u64);
    type Output = ();
    fn name() -> &'static str {
        "ledger"
    }
    async fn run(&self, (job, millis): (i64, u64), _: TaskContext) -> Result<(), TaskError> {
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => "INSERT INTO bgt_ledger (job, runner) VALUES ($1, $2)",
            _ => "INSERT INTO bgt_ledger (job, runner) VALUES (?, ?)",
        };
        self.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [job.into(), self.runner.clone().into()],
            ))
            .await?;
        if millis > 0 {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        Ok(())
    }
}

/// Creates the ledger table.
pub async fn create_ledger(db: &DatabaseConnection) {
    let sql = match db.get_database_backend() {
        // A primary key: Galera replicates row changes by it.
        DbBackend::MySql => {
            "CREATE TABLE bgt_ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, job BIGINT NOT NULL, \
             runner VARCHAR(64) NOT NULL, INDEX (job))"
        }
        // An id in insert order: which body ran first.
        DbBackend::Postgres => {
            "CREATE TABLE bgt_ledger (id BIGSERIAL PRIMARY KEY, job BIGINT NOT NULL, \
             runner VARCHAR(64) NOT NULL)"
        }
        _ => {
            "CREATE TABLE bgt_ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, job BIGINT NOT NULL, \
             runner VARCHAR(64) NOT NULL)"
        }
    };
    db.execute_unprepared(sql).await.unwrap();
}

/// A runner process on `url`; its first stdout line is its identity.
pub struct ChildRunner {
    pub child: Child,
    pub runner_id: String,
    /// Its log (stderr), in a file so a full pipe never blocks it.
    log: tempfile::NamedTempFile,
}

impl ChildRunner {
    pub fn spawn(url: &str, threads: usize, lease: Duration) -> ChildRunner {
        ChildRunner::spawn_listening(url, threads, lease, None)
    }

    /// With a direct URL to `LISTEN` on (for a `pooler=transaction` URL).
    pub fn spawn_listening(
        url: &str,
        threads: usize,
        lease: Duration,
        listen_url: Option<&str>,
    ) -> ChildRunner {
        use std::io::{BufRead, BufReader};
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child::child_runner",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BGT_CHILD_URL", url)
            .env("BGT_CHILD_THREADS", threads.to_string())
            .env("BGT_CHILD_LEASE_MS", lease.as_millis().to_string())
            .env("BGT_CHILD_LISTEN_URL", listen_url.unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let runner_id = loop {
            let line = lines
                .next()
                .expect("the child runner printed its identity")
                .unwrap();
            // libtest may print "test child::child_runner ... " first, on
            // the same line.
            if let Some((_, id)) = line.split_once("RUNNER ") {
                break id.trim().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ChildRunner {
            child,
            runner_id,
            log,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// kill -9: no chance to clean up.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a graceful exit; returns its log.
    pub fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "child runner failed: {log}");
        log
    }
}

#[test]
#[ignore = "entry point of child runner processes, started by other tests"]
fn child_runner() {
    let Ok(url) = std::env::var("BGT_CHILD_URL") else {
        return;
    };
    let threads: usize = std::env::var("BGT_CHILD_THREADS").unwrap().parse().unwrap();
    let lease_ms: u64 = std::env::var("BGT_CHILD_LEASE_MS")
        .unwrap()
        .parse()
        .unwrap();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    actix_rt::System::new().block_on(async move {
        let db = background_tasks::db::connect(Some(&url)).await.unwrap();
        let mut config = Config::builder()
            .run_async(true)
            .async_threads(threads)
            .lease(Duration::from_millis(lease_ms))
            .sleep(Duration::from_millis(200));
        if let Ok(listen) = std::env::var("BGT_CHILD_LISTEN_URL")
            && !listen.is_empty()
        {
            config = config.listen_url(listen);
        }
        let config = config.build().unwrap();
        let registry = Registry::new();
        let queue = Queue::with_parts(db.clone(), registry.clone(), config);
        registry.register(Ledger {
            db,
            runner: queue.runner_id().to_owned(),
        });
        println!("RUNNER {}", queue.runner_id());
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        Runner::run(
            queue,
            async move {
                term.recv().await;
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    });
}
