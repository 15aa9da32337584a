//! What the benches share: the no-op task and the databases to run on.

#![allow(dead_code, reason = "each bench uses its own part of this")]

use background_tasks::{Task, TaskContext, TaskError, db};
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// A task whose body does nothing: what is measured is the queue.
pub struct Noop;

impl Task for Noop {
    type Params = (u64,);
    type Output = ();
    fn name() -> &'static str {
        "noop"
    }
    async fn run(&self, _: (u64,), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// SQLite in `dir`, plus PostgreSQL / MySQL when
/// `BGTASKS_BENCH_POSTGRES_URL` / `BGTASKS_BENCH_MYSQL_URL` are set.
pub fn backends(dir: &tempfile::TempDir) -> Vec<(&'static str, String)> {
    let mut list = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.sqlite3").display()),
    )];
    for (name, var) in [
        ("postgres", "BGTASKS_BENCH_POSTGRES_URL"),
        ("mysql", "BGTASKS_BENCH_MYSQL_URL"),
    ] {
        if let Ok(url) = std::env::var(var) {
            list.push((name, url));
        }
    }
    list
}

/// Opens (and migrates) a bench database and empties the queue and its history.
pub async fn open(url: &str) -> DatabaseConnection {
    let conn = db::open(Some(url)).await.expect("open the bench database");
    for table in ["background_task", "background_task_completedtask"] {
        conn.execute_unprepared(&format!("DELETE FROM {table}"))
            .await
            .expect("empty the queue's tables");
    }
    conn
}
