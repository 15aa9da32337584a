//! Opening databases: the embedded default, SQLite settings, and URLs that
//! do not parse or cannot be reached.

use background_tasks::{Error, db};
use sea_orm::{ConnectionTrait, Statement};

#[actix_rt::test]
async fn a_url_that_does_not_parse_is_named_in_the_error() {
    let err = db::open(Some("redis://u:hunter2@localhost/0"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidDatabaseUrl { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("redis"), "{text}");
    assert!(!text.contains("hunter2"), "the password is hidden: {text}");
}

#[actix_rt::test]
async fn an_unreachable_server_is_a_connect_error() {
    let err = db::open(Some("postgres://u:hunter2@127.0.0.1:1/nothing"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[actix_rt::test]
async fn sqlite_runs_in_wal_mode_with_a_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.sqlite3").display());
    let conn = db::open(Some(&url)).await.unwrap();
    let backend = conn.get_database_backend();
    let mode = conn
        .query_one_raw(Statement::from_string(backend, "PRAGMA journal_mode"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode.try_get_by_index::<String>(0).unwrap(), "wal");
    let timeout = conn
        .query_one_raw(Statement::from_string(backend, "PRAGMA busy_timeout"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        timeout.try_get_by_index::<i64>(0).unwrap(),
        db::SQLITE_BUSY_TIMEOUT.as_millis() as i64
    );
}

/// No URL: `background_tasks.sqlite3` appears in the working directory,
/// migrated. Runs the binary in a temporary directory (changing this
/// process's directory would race with other tests).
#[test]
fn the_default_database_is_created_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bgtasks"))
        .arg("migrate")
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = dir.path().join(db::DEFAULT_SQLITE_FILE);
    assert!(file.exists(), "{} was not created", file.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = db::connect(Some(&format!("sqlite://{}", file.display()))).await.unwrap();
        let tables = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('background_task', 'background_task_completedtask')",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tables.try_get_by_index::<i64>(0).unwrap(), 2);
    });
}
