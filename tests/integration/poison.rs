//! Rows the runner cannot decode: broken by hand, by another program, or
//! by a schema that another owner made differently. None of them may stall
//! the queue: a claimed row that does not decode is set aside (failed in
//! place, unlocked, its last error naming the row, the column and the
//! value) in the claim's own transaction, and the tasks behind it run. The
//! operator's views list such rows apart instead of failing.
//!
//! What can be broken depends on the backend: SQLite stores any value in
//! any column; PostgreSQL checks types per column, so a broken row there
//! comes from a changed schema (a dropped NOT NULL or CHECK); MySQL
//! converts on write but a widened column can hold what the model cannot.

use std::time::Duration;

use background_tasks::{Config, Creator, Registry, Runner, builtin, completed_task};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement};

use crate::fixture::{Backend, TestDb, wait_for};

on_all_backends!(
    undecodable_rows_are_set_aside_and_the_rest_run,
    lists_show_undecodable_rows_apart,
    an_earlier_signed_object_id_column_becomes_unsigned,
    an_error_with_a_nul_character_is_recorded,
    an_outcome_the_database_refuses_is_set_aside,
    times_past_the_year_9999_are_refused_or_end_a_chain,
    set_aside_rows_are_reported_and_put_back,
);
on_server_backends!(object_ids_follow_djangos_positive_integer_field);

/// One way a row is broken: the statements that break row `id`, and what
/// its set-aside error must name.
struct Breakage {
    statements: Vec<String>,
    column: &'static str,
    value: &'static str,
}

fn breakages(backend: Backend, id: impl Fn(usize) -> i32) -> Vec<Breakage> {
    match backend {
        Backend::Sqlite => vec![
            Breakage {
                statements: vec![format!(
                    "UPDATE background_task SET priority = 'high' WHERE id = {}",
                    id(0)
                )],
                column: "priority",
                value: "\"high\"",
            },
            Breakage {
                statements: vec![format!(
                    "UPDATE background_task SET attempts = 1099511627776 WHERE id = {}",
                    id(1)
                )],
                column: "attempts",
                value: "1099511627776",
            },
            Breakage {
                statements: vec![format!(
                    "UPDATE background_task SET repeat_until = 'some day' WHERE id = {}",
                    id(2)
                )],
                column: "repeat_until",
                value: "\"some day\"",
            },
        ],
        Backend::Postgres => vec![
            Breakage {
                statements: vec![
                    "ALTER TABLE background_task ALTER COLUMN last_error DROP NOT NULL".into(),
                    format!(
                        "UPDATE background_task SET last_error = NULL WHERE id = {}",
                        id(0)
                    ),
                ],
                column: "last_error",
                value: "NULL",
            },
            Breakage {
                statements: vec![
                    // A schema without Django's CHECK (creator_object_id >= 0).
                    "DO $$ DECLARE c text; BEGIN FOR c IN SELECT conname FROM pg_constraint \
                     WHERE conrelid = 'background_task'::regclass AND contype = 'c' LOOP \
                     EXECUTE 'ALTER TABLE background_task DROP CONSTRAINT ' || quote_ident(c); \
                     END LOOP; END $$"
                        .into(),
                    format!(
                        "UPDATE background_task SET creator_content_type_id = 1, \
                         creator_object_id = -5 WHERE id = {}",
                        id(1)
                    ),
                ],
                column: "creator_object_id",
                value: "-5",
            },
        ],
        Backend::MySql => vec![
            Breakage {
                statements: vec![
                    "ALTER TABLE background_task MODIFY last_error longtext NULL".into(),
                    format!(
                        "UPDATE background_task SET last_error = NULL WHERE id = {}",
                        id(0)
                    ),
                ],
                column: "last_error",
                value: "NULL",
            },
            Breakage {
                statements: vec![
                    "ALTER TABLE background_task MODIFY attempts bigint NOT NULL".into(),
                    format!(
                        "UPDATE background_task SET attempts = 1099511627776 WHERE id = {}",
                        id(1)
                    ),
                ],
                column: "attempts",
                value: "1099511627776",
            },
        ],
    }
}

fn queue_of(t: &TestDb) -> background_tasks::Queue {
    let registry = Registry::new();
    builtin::register(&registry);
    t.queue(
        registry,
        Config::builder()
            .run_async(true)
            .async_threads(2)
            .sleep(Duration::from_millis(100))
            .build()
            .unwrap(),
    )
}

async fn exec(t: &TestDb, sql: &str) {
    t.db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// `last_error` of task `id` when it is set aside (failed in place and
/// unlocked), else `None`. Read as text, without the model.
async fn set_aside_error(t: &TestDb, id: i32) -> Option<String> {
    let backend = t.db.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let row =
        t.db.query_one_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT last_error FROM background_task WHERE id = {placeholder} \
                 AND failed_at IS NOT NULL AND locked_by IS NULL"
            ),
            [id.into()],
        ))
        .await
        .unwrap()?;
    row.try_get::<String>("", "last_error").ok()
}

async fn history_count(t: &TestDb) -> usize {
    completed_task::Entity::find()
        .all(&t.db)
        .await
        .unwrap()
        .len()
}

/// Broken rows ahead of good ones in claim order (higher priority): the
/// claim takes them first, sets them aside and runs the rest.
async fn undecodable_rows_are_set_aside_and_the_rest_run(t: TestDb) -> TestDb {
    let queue = queue_of(&t);
    let mut broken_ids = Vec::new();
    for _ in 0..3 {
        let id = queue
            .enqueue::<builtin::Noop>(&())
            .priority(10)
            .await
            .unwrap()
            .into_task()
            .unwrap()
            .id;
        broken_ids.push(id);
    }
    // A task whose params are not JSON: decoded when it runs, and failed
    // permanently with a clear error, never retried.
    let bad_params = queue
        .enqueue::<builtin::Noop>(&())
        .priority(10)
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    exec(
        &t,
        &format!(
            "UPDATE background_task SET task_params = '[[], {{not json' WHERE id = {bad_params}"
        ),
    )
    .await;
    for _ in 0..5 {
        queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    }
    let breakages = breakages(t.backend, |i| broken_ids[i]);
    for breakage in &breakages {
        for statement in &breakage.statements {
            exec(&t, statement).await;
        }
    }
    let runner = Runner::start(queue.clone()).unwrap();
    // The good tasks (five, and the high-priority ones this backend has
    // no breakage for) and the bad-params one end in the history.
    let expected = 5 + (broken_ids.len() - breakages.len()) + 1;
    wait_for("the good tasks to run", Duration::from_secs(30), || async {
        history_count(&t).await == expected
    })
    .await;
    for (breakage, id) in breakages.iter().zip(&broken_ids) {
        wait_for(
            "the broken row to be set aside",
            Duration::from_secs(10),
            || async { set_aside_error(&t, *id).await.is_some() },
        )
        .await;
        let error = set_aside_error(&t, *id).await.unwrap();
        assert!(
            error.contains(&format!("row {id} of background_task"))
                && error.contains(&format!(
                    "column {} holds {}",
                    breakage.column, breakage.value
                )),
            "{error}"
        );
    }
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    let failed: Vec<_> = history
        .iter()
        .filter(|row| row.failed_at.is_some())
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "only the bad-params task failed: {history:?}"
    );
    assert!(
        failed[0].last_error.contains("cannot be decoded")
            && failed[0].last_error.contains("invalid JSON"),
        "{}",
        failed[0].last_error
    );
    // The runner goes on: a task enqueued now runs too.
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    wait_for("a later task to run", Duration::from_secs(10), || async {
        history_count(&t).await == expected + 1
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    // Set-aside rows stay set aside: still in the table, failed, unlocked.
    for id in &broken_ids[..breakages.len()] {
        assert!(set_aside_error(&t, *id).await.is_some());
    }
    t
}

/// A set-aside row is not lost from sight: `doctor` warns with its id,
/// `stats` counts it and `list --state set-aside` shows why; once the row
/// is corrected, `bgtasks retry --set-aside ID` puts it back and it runs.
async fn set_aside_rows_are_reported_and_put_back(t: TestDb) -> TestDb {
    let queue = queue_of(&t);
    let id = queue
        .enqueue::<builtin::Noop>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    let breakage = breakages(t.backend, |_| id).remove(0);
    for statement in &breakage.statements {
        exec(&t, statement).await;
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for(
        "the row to be set aside",
        Duration::from_secs(20),
        || async { set_aside_error(&t, id).await.is_some() },
    )
    .await;
    // Corrected by the operator (on PostgreSQL and MySQL the broken column
    // was last_error, which the set-aside itself filled in).
    if t.backend == Backend::Sqlite {
        exec(
            &t,
            &format!("UPDATE background_task SET priority = 0 WHERE id = {id}"),
        )
        .await;
    }
    let doctor = crate::cli::bgtasks(&t)
        .args(["--json", "doctor"])
        .output()
        .unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let finding = findings
        .as_array()
        .unwrap_or_else(|| panic!("{findings}"))
        .iter()
        .find(|f| f["check"] == "set_aside")
        .cloned()
        .unwrap_or_else(|| panic!("no set_aside check: {findings}"));
    assert_eq!(finding["status"], "warn", "{finding}");
    let detail = finding["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("ids {id}")) && detail.contains("retry --set-aside"),
        "{detail}"
    );
    let stats = crate::cli::bgtasks(&t)
        .args(["--json", "stats"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(
        stats["counts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["state"] == "set-aside" && c["count"] == 1),
        "{stats}"
    );
    let listed = crate::cli::bgtasks(&t)
        .args(["--json", "list", "--state", "set-aside"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rows = listed["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["id"], id, "{listed}");
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("Set aside by the runner"),
        "{listed}"
    );
    // Retrying the history does not touch it; --set-aside puts it back.
    let retried = crate::cli::bgtasks(&t)
        .args(["retry", &id.to_string()])
        .output()
        .unwrap();
    assert_eq!(retried.status.code(), Some(3), "nothing matched");
    let put_back = crate::cli::bgtasks(&t)
        .args(["retry", "--set-aside", &id.to_string()])
        .output()
        .unwrap();
    assert!(
        put_back.status.success(),
        "{}",
        String::from_utf8_lossy(&put_back.stderr)
    );
    wait_for("the task to run", Duration::from_secs(20), || async {
        history_count(&t).await == 1
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert!(history[0].failed_at.is_none(), "{history:?}");
    t
}

/// `bgtasks list` with an undecodable row: exit 0, the good rows listed,
/// the broken one named on stderr and under `unreadable` in JSON; `show`
/// of it says which column holds what.
async fn lists_show_undecodable_rows_apart(t: TestDb) -> TestDb {
    let queue = queue_of(&t);
    let broken = queue
        .enqueue::<builtin::Noop>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    let good = queue
        .enqueue::<builtin::Noop>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    let breakage = breakages(t.backend, |_| broken).remove(0);
    for statement in &breakage.statements {
        exec(&t, statement).await;
    }
    let listed = crate::cli::bgtasks(&t)
        .args(["list", "--state", "pending"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(listed.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&good.to_string()), "{stdout}");
    assert!(
        stderr.contains(&format!("row {broken} of background_task"))
            && stderr.contains(breakage.column),
        "{stderr}"
    );
    let json = crate::cli::bgtasks(&t)
        .args(["--json", "list", "--state", "pending"])
        .output()
        .unwrap();
    assert!(json.status.success());
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["unreadable"][0]["id"], broken.to_string(), "{json}");
    assert_eq!(json["unreadable"][0]["column"], breakage.column, "{json}");
    let shown = crate::cli::bgtasks(&t)
        .args(["show", &broken.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert_eq!(shown.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "column {} holds {}",
            breakage.column, breakage.value
        )),
        "{stderr}"
    );
    // A bulk action by filter reaches the broken row too.
    let deleted = crate::cli::bgtasks(&t)
        .args(["delete", "--state", "pending", "--name", "bgtasks.noop"])
        .output()
        .unwrap();
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let left =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM background_task",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(left, 0);
    t
}

/// Django's `PositiveIntegerField` on MySQL is `integer unsigned`: object
/// ids up to 4294967295. Such a task runs, and its history row keeps the
/// id; PostgreSQL refuses it at enqueue with a clear error.
async fn object_ids_follow_djangos_positive_integer_field(t: TestDb) -> TestDb {
    let queue = queue_of(&t);
    let enqueued = queue
        .enqueue::<builtin::Noop>(&())
        .creator(Creator::new(7, 3_000_000_000))
        .await;
    if t.backend == Backend::Postgres {
        let err = enqueued.unwrap_err().to_string();
        assert!(
            err.contains("3000000000") && err.contains("2147483647"),
            "{err}"
        );
        return t;
    }
    enqueued.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("the task to run", Duration::from_secs(10), || async {
        history_count(&t).await == 1
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let done = completed_task::Entity::find()
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.creator_object_id, Some(3_000_000_000));
    assert_eq!(done.failed_at, None);
    t
}

/// A MySQL database made by an earlier version of this crate has a signed
/// `creator_object_id`; migration 9 gives it Django's unsigned type, so
/// both schema owners' tables read the same.
async fn an_earlier_signed_object_id_column_becomes_unsigned(t: TestDb) -> TestDb {
    use background_tasks::db;
    if t.backend == Backend::MySql {
        for table in ["background_task", "background_task_completedtask"] {
            exec(
                &t,
                &format!("ALTER TABLE {table} MODIFY creator_object_id integer NULL"),
            )
            .await;
        }
        exec(
            &t,
            "DELETE FROM background_tasks_migrations \
             WHERE version = 'm20261202_000009_unsigned_creator_object_id'",
        )
        .await;
        db::migrate(&t.db).await.unwrap();
        let row =
            t.db.query_one_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT CAST(COLUMN_TYPE AS CHAR) AS t FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'background_task' \
                 AND COLUMN_NAME = 'creator_object_id'",
            ))
            .await
            .unwrap()
            .unwrap();
        let column_type: String = row.try_get("", "t").unwrap();
        assert!(column_type.contains("unsigned"), "{column_type}");
    }
    let queue = queue_of(&t);
    let task = queue
        .enqueue::<builtin::Noop>(&())
        .creator(Creator::new(7, 2_147_483_647))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(task.creator_object_id, Some(2_147_483_647));
    t
}

/// A body whose error carries a NUL character (from its input, say):
/// PostgreSQL's `text` refuses NUL, and an outcome the database refuses
/// was retried forever, holding the executor. The character is replaced.
struct NulError;

impl background_tasks::Task for NulError {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "test.nul_error"
    }
    async fn run(
        &self,
        _: (),
        _: background_tasks::TaskContext,
    ) -> Result<(), background_tasks::TaskError> {
        Err(background_tasks::TaskError::invalid("bad\0byte"))
    }
}

async fn an_error_with_a_nul_character_is_recorded(t: TestDb) -> TestDb {
    let registry = Registry::new();
    builtin::register(&registry);
    registry.register(NulError);
    let queue = t.queue(
        registry,
        Config::builder()
            .sleep(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    queue.enqueue::<NulError>(&()).await.unwrap();
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("both tasks to end", Duration::from_secs(20), || async {
        history_count(&t).await == 2
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let failed = completed_task::Entity::find()
        .all(&t.db)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.failed_at.is_some())
        .unwrap();
    assert!(
        failed.last_error.contains("bad\u{fffd}byte"),
        "{}",
        failed.last_error
    );
    t
}

/// A history row the database refuses (a constraint the operator added):
/// no retry can write it, and retrying forever held the executor. The task
/// is set aside with the refusal as its last error; the others run.
async fn an_outcome_the_database_refuses_is_set_aside(t: TestDb) -> TestDb {
    let refuse = match t.backend {
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_bad_bytes BEFORE INSERT ON background_task_completedtask \
             WHEN NEW.last_error LIKE '%bad%' BEGIN SELECT RAISE(ABORT, 'no bad bytes here'); END"
        }
        _ => {
            "ALTER TABLE background_task_completedtask ADD CONSTRAINT refuse_bad_bytes \
             CHECK (last_error NOT LIKE '%bad%')"
        }
    };
    exec(&t, refuse).await;
    let registry = Registry::new();
    builtin::register(&registry);
    registry.register(NulError);
    let queue = t.queue(
        registry,
        Config::builder()
            .run_async(true)
            .async_threads(2)
            .sleep(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let refused = queue
        .enqueue::<NulError>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    for _ in 0..3 {
        queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for(
        "the refused task to be set aside",
        Duration::from_secs(20),
        || async { set_aside_error(&t, refused).await.is_some() },
    )
    .await;
    wait_for(
        "the other tasks to run",
        Duration::from_secs(20),
        || async { history_count(&t).await == 3 },
    )
    .await;
    // The runner goes on.
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    wait_for("a later task to run", Duration::from_secs(20), || async {
        history_count(&t).await == 4
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let error = set_aside_error(&t, refused).await.unwrap();
    assert!(
        error.contains("the database refused to record this task's outcome"),
        "{error}"
    );
    t
}

/// Delays and periods beyond what a database stores: an enqueue is refused
/// with a clear error and writes nothing (`.schedule(i64::MAX)` panicked in
/// chrono); a repeating row written by hand with a period of millennia
/// runs, and its chain ends instead of panicking the outcome writer.
async fn times_past_the_year_9999_are_refused_or_end_a_chain(t: TestDb) -> TestDb {
    let queue = queue_of(&t);
    for seconds in [i64::MAX, i64::MIN, 400 * 365 * 86_400 * 24] {
        let err = queue
            .enqueue::<builtin::Noop>(&())
            .schedule(seconds)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                background_tasks::Error::InvalidOption {
                    option: "schedule",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert!(
        background_tasks::task_row::Entity::find()
            .all(&t.db)
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );
    let id = queue
        .enqueue::<builtin::Noop>(&())
        .repeat(3600)
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    exec(
        &t,
        // `repeat` is a reserved word on MySQL.
        &if t.backend == Backend::MySql {
            format!("UPDATE background_task SET `repeat` = 9000000000000000 WHERE id = {id}")
        } else {
            format!("UPDATE background_task SET repeat = 9000000000000000 WHERE id = {id}")
        },
    )
    .await;
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("the task to run", Duration::from_secs(20), || async {
        history_count(&t).await == 1
    })
    .await;
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    wait_for("the runner to go on", Duration::from_secs(20), || async {
        history_count(&t).await == 2
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let left = background_tasks::task_row::Entity::find()
        .all(&t.db)
        .await
        .unwrap();
    assert!(left.is_empty(), "the chain ended: {left:?}");
    t
}
