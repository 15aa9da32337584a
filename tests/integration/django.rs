//! One database with a Django app, proved with the real
//! django-background-tasks 1.2.8: Django's migrations create the tables,
//! Rust attaches to them; Python enqueues and a Rust runner executes, Rust
//! enqueues and Django's `process_tasks` executes; both read each other's
//! rows field by field, and identical calls hash identically.
//!
//! The Python side is `tests/django/interop.py`, in the virtual environment
//! `scripts/install-django.sh` creates (`target/django-venv`; `.ci/run`
//! runs it). Without it these tests are skipped with a note, except under
//! `CI=true`, where they fail. They run on SQLite, PostgreSQL and
//! MySQL/MariaDB (Django's MySQL backend through PyMySQL, pinned in
//! `tests/django/requirements.txt`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use background_tasks::params::{self, ParamsError};
use background_tasks::{
    Config, Creator, Queue, Registry, Runner, Task, TaskContext, TaskError, admin, completed_task,
    db, doctor, task_row,
};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement};
use serde_json::{Map, Value, json};

use crate::fixture::{Backend, TestDb, wait_for};

on_django_backends!(
    python_enqueues_and_a_rust_runner_executes,
    rust_enqueues_and_django_process_tasks_executes,
    identical_calls_hash_identically_across_languages,
    the_django_admin_reads_rows_rust_holds,
    bgtasks_doctor_passes_a_django_database_and_finds_a_missing_index,
    a_project_without_time_zones_and_rust_agree_on_due_times,
    wide_integers_and_lone_surrogates_cross_languages,
    a_django_app_attaches_to_tables_bgtasks_created,
    django_never_runs_a_step_before_what_it_waits_for_succeeded,
    a_step_after_a_task_django_ran_is_cancelled_not_held_for_ever,
);

/// The Python side, on the test's database.
struct Django {
    python: PathBuf,
    script: PathBuf,
    database: String,
    record: PathBuf,
    /// Settings of this Django project besides the database.
    env: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

/// The Python of the Django venv, or `None` (with a note saying `what` is
/// skipped) when it is missing outside CI; under `CI=true` a missing venv
/// fails the test.
pub fn venv_python(what: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("BGTASKS_DJANGO_VENV")
        .map_or_else(|| root.join("target/django-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    if !python.exists() {
        let message = format!(
            "{} is missing: run scripts/install-django.sh to install Django and \
             django-background-tasks 1.2.8",
            python.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("note: {what} is skipped: {message}");
        return None;
    }
    Some(python)
}

impl Django {
    /// `None` (with a note) when the virtual environment is missing
    /// outside CI.
    fn new(t: &TestDb) -> Option<Django> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = venv_python("the Django interop test")?;
        let dir = tempfile::tempdir().unwrap();
        Some(Django {
            python,
            script: root.join("tests/django/interop.py"),
            database: t.url.clone(),
            record: dir.path().join("record.jsonl"),
            env: Vec::new(),
            _dir: dir,
        })
    }

    /// The project with one more setting (`BGTASKS_DJANGO_*`).
    fn with(mut self, name: &'static str, value: &str) -> Django {
        self.env.push((name, value.to_owned()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg(&self.script)
            .args(args)
            .env("BGTASKS_DJANGO_DATABASE", &self.database)
            .env("BGTASKS_DJANGO_RECORD", &self.record)
            .env("BGTASKS_DJANGO_MAX_ATTEMPTS", "1")
            .envs(self.env.iter().map(|(name, value)| (*name, value)));
        command
    }

    /// Runs `interop.py ARGS` and parses its JSON answer.
    fn run(&self, args: &[&str]) -> Value {
        let output = self.command(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "interop.py {args:?} failed:\n{}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// What the Python task functions received, one call per line.
    fn recorded(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// Django's migrations create the tables; this crate attaches to them.
async fn attach(t: &TestDb, django: &Django) {
    let migrated = django.run(&["migrate"]);
    assert!(
        migrated["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "background_task.0001_initial"),
        "{migrated}"
    );
    db::migrate(&t.db)
        .await
        .expect("this crate's migrations attach to Django's tables");
    let findings = doctor::check(&t.db, &Registry::new(), &doctor::Options::default()).await;
    let mode = findings.iter().find(|f| f.check == "mode").unwrap();
    assert!(mode.detail.contains("shared with Django"), "{mode:?}");
    let schema = findings.iter().find(|f| f.check == "schema").unwrap();
    assert_eq!(schema.status, doctor::Status::Ok, "{schema:?}");
    let indexes = findings.iter().find(|f| f.check == "indexes").unwrap();
    assert_eq!(indexes.status, doctor::Status::Ok, "{indexes:?}");
}

/// A call as stored: positional and keyword arguments.
type Call = (Vec<Value>, Map<String, Value>);

/// A Rust handler registered under a Python task's name, recording the
/// positional and keyword arguments it received.
#[derive(Clone, Default)]
struct Record {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Task for Record {
    type Params = Call;
    type Output = ();
    fn name() -> &'static str {
        "interop.record"
    }
    fn encode(params: &Self::Params) -> Result<String, ParamsError> {
        params::encode_call(&params.0, &params.1)
    }
    fn decode(task_params: &str) -> Result<Self::Params, ParamsError> {
        params::decode_call(task_params)
    }
    async fn run(&self, call: Self::Params, _: TaskContext) -> Result<(), TaskError> {
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
}

/// `interop.add(a, b)`, in Rust.
#[derive(Clone, Default)]
struct Add {
    sums: Arc<Mutex<Vec<i64>>>,
}

impl Task for Add {
    type Params = (i64, i64);
    type Output = ();
    fn name() -> &'static str {
        "interop.add"
    }
    async fn run(&self, (a, b): (i64, i64), _: TaskContext) -> Result<(), TaskError> {
        self.sums.lock().unwrap().push(a + b);
        Ok(())
    }
}

fn raw_times_are_djangos(django: &Django, backend: Backend) {
    if backend != Backend::Sqlite {
        return;
    }
    let raw = django.run(&["raw-datetimes"]);
    for table in ["background_task", "background_task_completedtask"] {
        for row in raw[table].as_array().unwrap() {
            for column in ["run_at", "locked_at", "failed_at", "repeat_until"] {
                if let Some(text) = row[column].as_str() {
                    assert!(
                        !text.contains('T') && !text.contains('+'),
                        "{table}.{column} = {text:?} is not Django's format"
                    );
                }
            }
        }
    }
}

async fn python_enqueues_and_a_rust_runner_executes(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    attach(&t, &django).await;
    let record = django.run(&[
        "enqueue",
        "--name",
        "interop.record",
        "--args",
        "[1, \"\u{e9}\"]",
        "--kwargs",
        "{\"b\": 2, \"nested\": {\"z\": [1.5, null, true]}}",
        "--priority",
        "5",
        "--queue",
        "q",
        "--schedule",
        "-10",
        "--verbose-name",
        "Record one",
        "--creator-order-id",
        "7",
    ]);
    django.run(&[
        "enqueue",
        "--name",
        "interop.add",
        "--args",
        "[2, 3]",
        "--schedule",
        "-10",
    ]);
    let later = django.run(&[
        "enqueue",
        "--name",
        "interop.add",
        "--args",
        "[9, 9]",
        "--schedule",
        "3600",
    ]);

    let registry = Registry::new();
    let recorder = Record::default();
    let adder = Add::default();
    registry.register(recorder.clone()).register(adder.clone());
    let queue = Queue::with_parts(t.db.clone(), registry, Config::default());
    let mut ran = 0;
    while queue.run_next_task().await {
        ran += 1;
    }
    assert_eq!(ran, 2, "the two due tasks, not the one an hour away");
    assert_eq!(
        *recorder.calls.lock().unwrap(),
        vec![(
            vec![json!(1), json!("\u{e9}")],
            json!({"b": 2, "nested": {"z": [1.5, null, true]}})
                .as_object()
                .unwrap()
                .clone()
        )],
        "the Rust handler got Python's positional and keyword arguments"
    );
    assert_eq!(*adder.sums.lock().unwrap(), vec![5]);

    // Django reads the history Rust wrote, every field.
    let completed = django.run(&["completed"]);
    let row = completed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task_name"] == "interop.record")
        .unwrap_or_else(|| panic!("{completed}"));
    for field in [
        "task_params",
        "task_hash",
        "verbose_name",
        "priority",
        "queue",
        "repeat",
        "repeat_until",
        "creator_content_type_id",
        "creator_object_id",
    ] {
        assert_eq!(row[field], record[field], "{field}: {row}");
    }
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["failed_at"], Value::Null);
    assert_eq!(row["last_error"], "");
    assert_eq!(row["locked_by"], queue.runner_id());
    assert!(
        row["locked_at"].is_string() && row["run_at"].is_string(),
        "{row}"
    );
    assert_eq!(row["display"]["creator"]["str"], "Order #7", "{row}");
    assert_eq!(row["display"]["has_error"], false);
    // The task an hour away still waits, untouched, for either side.
    let tasks = django.run(&["tasks"]);
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks[0]["id"], later["id"]);
    assert_eq!(tasks[0]["attempts"], 0);
    raw_times_are_djangos(&django, t.backend);
    t
}

async fn rust_enqueues_and_django_process_tasks_executes(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    attach(&t, &django).await;
    let order = django.run(&["create-order", "--id", "7"]);
    let content_type = order["content_type_id"].as_i64().unwrap() as i32;
    let queue = Queue::new(t.db.clone());
    let record = queue
        .enqueue_call(
            "interop.record",
            &json!([1, "\u{e9}", {"k": [1, 2]}]),
            &json!({"b": 2.5, "flag": false}),
        )
        .priority(3)
        .queue("q")
        .verbose_name("from Rust")
        .creator(Creator::new(content_type, 7))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    queue
        .enqueue_call("interop.add", &(2, 3), &())
        .await
        .unwrap();
    queue
        .enqueue_call("interop.fail", &("boom",), &())
        .await
        .unwrap();
    let later = queue
        .enqueue_call("interop.add", &(9, 9), &())
        .schedule(3_600)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    raw_times_are_djangos(&django, t.backend);

    let processed = django.run(&["process", "--duration", "3"]);
    let python_pid = processed["pid"].as_i64().unwrap().to_string();
    let mut calls = django.recorded();
    calls.sort_by_key(|call| call["task"].as_str().unwrap().to_owned());
    assert_eq!(
        calls,
        vec![
            json!({"task": "interop.add", "args": [2, 3], "kwargs": {}}),
            json!({"task": "interop.fail", "args": ["boom"], "kwargs": {}}),
            json!({"task": "interop.record", "args": [1, "\u{e9}", {"k": [1, 2]}], "kwargs": {"b": 2.5, "flag": false}}),
        ],
        "the Python functions got Rust's arguments; the task an hour away did not run"
    );

    // Rust reads the history Django wrote.
    let history = completed_task::Entity::find()
        .filter(completed_task::Column::TaskName.eq("interop.record"))
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.task_params, record.task_params);
    assert_eq!(history.task_hash, record.task_hash);
    assert_eq!((history.priority, history.queue.as_deref()), (3, Some("q")));
    assert_eq!(history.verbose_name.as_deref(), Some("from Rust"));
    assert_eq!(
        (history.creator_content_type_id, history.creator_object_id),
        (Some(content_type), Some(7))
    );
    assert_eq!((history.attempts, history.failed_at), (1, None));
    assert_eq!(
        history.locked_by.as_deref(),
        Some(python_pid.as_str()),
        "Django's worker writes its pid"
    );
    assert!(history.run_at >= record.run_at);
    // Django's bare pid reads as a process of this host: gone now.
    assert_eq!(
        admin::locked_by_pid_running(history.locked_by.as_deref()),
        Some(false)
    );
    let failed = completed_task::Entity::find()
        .filter(completed_task::Column::TaskName.eq("interop.fail"))
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        failed.failed_at.is_some() && failed.last_error.contains("interop.fail always fails"),
        "{failed:?}"
    );
    let waiting: Vec<i32> = task_row::Entity::find()
        .all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(waiting, vec![later.id]);
    raw_times_are_djangos(&django, t.backend);
    t
}

async fn identical_calls_hash_identically_across_languages(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    attach(&t, &django).await;
    for (args, kwargs) in [
        (json!([]), json!({})),
        (json!([1, 2.5, "x", null, true]), json!({})),
        (
            json!(["\u{e9}\u{65e5}\u{672c}\u{1f600}", "a\"b\\c\n"]),
            json!({"z": 1, "a": {"y": [1e-5, 1e16, 0.1]}}),
        ),
        (json!([]), json!({"to": "ada@example.com", "n": -3})),
    ] {
        let python = django.run(&[
            "hash",
            "--name",
            "interop.record",
            "--args",
            &args.to_string(),
            "--kwargs",
            &kwargs.to_string(),
        ]);
        let encoded = params::encode_call(&args, &kwargs).unwrap();
        assert_eq!(python["task_params"], encoded, "{args} {kwargs}");
        assert_eq!(
            python["task_hash"],
            params::task_hash("interop.record", &encoded)
        );
    }

    // remove_existing from Rust removes what Python enqueued with the same call.
    for _ in 0..2 {
        django.run(&[
            "enqueue",
            "--name",
            "interop.record",
            "--args",
            "[1]",
            "--schedule",
            "60",
        ]);
    }
    let queue = Queue::new(t.db.clone());
    queue
        .enqueue_call("interop.record", &(1,), &())
        .remove_existing_tasks(true)
        .await
        .unwrap();
    let rows = task_row::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(rows.len(), 1, "Python's two copies were replaced: {rows:?}");
    // CHECK_EXISTING from Python finds the row Rust wrote.
    let created = django.run(&[
        "enqueue",
        "--name",
        "interop.record",
        "--args",
        "[1]",
        "--action",
        "check_existing",
    ]);
    assert_eq!(
        created,
        Value::Null,
        "Django found Rust's row and created nothing"
    );
    // RESCHEDULE_EXISTING from Python moves it.
    django.run(&[
        "enqueue",
        "--name",
        "interop.record",
        "--args",
        "[1]",
        "--schedule",
        "7200",
        "--action",
        "reschedule_existing",
    ]);
    let moved = task_row::Entity::find_by_id(rows[0].id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        moved.run_at > rows[0].run_at + chrono::TimeDelta::minutes(60),
        "{moved:?}"
    );
    t
}

/// Holds until told to finish: a task that is running while the test looks.
#[derive(Clone, Default)]
struct Hold {
    release: Arc<tokio::sync::Notify>,
}

impl Task for Hold {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "interop.hold"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        self.release.notified().await;
        Ok(())
    }
}

async fn the_django_admin_reads_rows_rust_holds(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    attach(&t, &django).await;
    let registry = Registry::new();
    let hold = Hold::default();
    registry.register(hold.clone());
    let queue = Queue::with_parts(t.db.clone(), registry, Config::default());
    let task = queue
        .enqueue::<Hold>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    let db = t.db.clone();
    wait_for(
        "the Rust runner to lock the task",
        std::time::Duration::from_secs(20),
        || {
            let db = db.clone();
            async move {
                task_row::Entity::find_by_id(task.id)
                    .one(&db)
                    .await
                    .unwrap()
                    .is_some_and(|r| r.locked_by.is_some())
            }
        },
    )
    .await;
    let listed = django.run(&["admin-list"]);
    let row = listed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pk"] == task.id)
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(row["task_name"], "interop.hold");
    assert_eq!(row["locked_by"], queue.runner_id(), "{row}");
    // The admin's column runs int(locked_by): a Rust runner's host:pid:random
    // identity is never taken for some other local process, and reads as
    // not running (README: what the Django admin shows).
    assert_eq!(row["locked_by_pid_running"], false, "{row}");
    hold.release.notify_one();
    runner.shutdown(std::time::Duration::from_secs(10)).await;
    t
}

/// `bgtasks ARGS` on the test's database, as an operator runs it.
fn bgtasks(t: &TestDb, args: &[&str]) -> (Option<i32>, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_bgtasks"))
        .env("DATABASE_URL", &t.url)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = format!(
        "bgtasks {args:?}: exit {:?}\n{stdout}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code(), json, report)
}

/// The `indexes` finding of `bgtasks --json doctor`, with its exit code.
fn doctor_indexes(t: &TestDb) -> (Option<i32>, Value, String) {
    let (code, findings, report) = bgtasks(t, &["--json", "doctor"]);
    let indexes = findings
        .as_array()
        .and_then(|all| all.iter().find(|f| f["check"] == "indexes"))
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    (code, indexes, report)
}

/// Regression: on MySQL, Django gives `creator_content_type_id` the foreign
/// key's own index (named after the constraint) and no index of its usual
/// name, and the doctor took that column for unindexed.
async fn bgtasks_doctor_passes_a_django_database_and_finds_a_missing_index(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    django.run(&["migrate"]);
    let (code, _, report) = bgtasks(&t, &["migrate"]);
    assert_eq!(code, Some(0), "{report}");

    let (code, findings, report) = bgtasks(&t, &["--json", "doctor"]);
    assert_eq!(code, Some(0), "a healthy Django database: {report}");
    for finding in findings.as_array().unwrap() {
        assert_eq!(finding["status"], "ok", "{report}");
    }
    let (_, indexes, report) = doctor_indexes(&t);
    let detail = indexes["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("all 21 expected indexes are present"),
        "{report}"
    );
    if t.backend == Backend::MySql {
        for table in ["background_task", "background_task_completedtask"] {
            assert!(
                detail.contains(&format!("creator_content_type_id on {table} by ")),
                "the foreign key's index stands in: {report}"
            );
        }
    }

    // A really missing index is still reported, with the statement that
    // recreates it.
    let index = "background_task_completedtask_run_at_77c80f34";
    let drop = match t.backend {
        Backend::MySql => format!("DROP INDEX {index} ON background_task_completedtask"),
        _ => format!("DROP INDEX {index}"),
    };
    t.db.execute_unprepared(&drop).await.unwrap();
    let (code, indexes, report) = doctor_indexes(&t);
    assert_eq!(code, Some(4), "{report}");
    assert_eq!(indexes["status"], "fail", "{report}");
    assert!(
        indexes["detail"].as_str().unwrap().contains(&format!(
            "CREATE INDEX {index} ON background_task_completedtask (run_at)"
        )),
        "{report}"
    );

    // On MySQL, without the foreign key and its index the column has no
    // index at all: reported under Django's usual name.
    if t.backend == Backend::MySql {
        let fk = t
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT CAST(constraint_name AS CHAR) FROM information_schema.referential_constraints \
                 WHERE constraint_schema = DATABASE() AND table_name = 'background_task'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<String>(0)
            .unwrap();
        for sql in [
            format!("ALTER TABLE background_task DROP FOREIGN KEY {fk}"),
            format!("DROP INDEX {fk} ON background_task"),
        ] {
            t.db.execute_unprepared(&sql).await.unwrap();
        }
        let (code, indexes, report) = doctor_indexes(&t);
        assert_eq!(code, Some(4), "{report}");
        assert!(
            indexes["detail"].as_str().unwrap().contains(
                "CREATE INDEX background_task_creator_content_type_id_61cc9af3 ON background_task \
                 (creator_content_type_id)"
            ),
            "{report}"
        );
    }
    t
}

/// A Django project with `USE_TZ = False` stores naive wall-clock times of
/// its `TIME_ZONE` (here New York, UTC-4 or -5). Read as UTC, its task due
/// in an hour looked due hours ago, and Django's `process_tasks` saw a Rust
/// task due now as due hours later. With `BACKGROUND_TASK_DB_TIME_ZONE`
/// both sides agree: the `bgtasks` binary runs Django's due task and not
/// its later one, and Django runs Rust's due task and not its later one.
/// PostgreSQL stores instants, so there both agree with or without it.
async fn a_project_without_time_zones_and_rust_agree_on_due_times(t: TestDb) -> TestDb {
    const ZONE: &str = "America/New_York";
    let Some(django) = Django::new(&t) else {
        return t;
    };
    let django = django
        .with("BGTASKS_DJANGO_USE_TZ", "false")
        .with("BGTASKS_DJANGO_TIME_ZONE", ZONE);
    attach(&t, &django).await;
    let bgtasks = |zone: bool| {
        let mut command = crate::cli::bgtasks(&t);
        if zone {
            command.env("BACKGROUND_TASK_DB_TIME_ZONE", ZONE);
        }
        command
    };
    let pending = |zone: bool| {
        let output = bgtasks(zone)
            .args(["--json", "list", "--state", "pending"])
            .output()
            .unwrap();
        if output.status.code() == Some(3) {
            return 0; // nothing matched
        }
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
        listed["rows"].as_array().unwrap().len()
    };

    // Django enqueues one task due now and one due in an hour.
    django.run(&["enqueue", "--name", "bgtasks.noop"]);
    django.run(&["enqueue", "--name", "bgtasks.noop", "--schedule", "3600"]);
    assert_eq!(pending(true), 1, "with the zone, one task is due");
    let naive = t.backend != Backend::Postgres;
    assert_eq!(
        pending(false),
        if naive { 2 } else { 1 },
        "without it, naive New York times read as UTC make the later task look due"
    );
    let ran = bgtasks(true)
        .args(["process", "--duration", "3", "--sleep", "0.2"])
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let done = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(done.len(), 1, "only the due task ran: {done:?}");
    let waiting = django.run(&["tasks"]);
    assert_eq!(waiting.as_array().unwrap().len(), 1, "{waiting}");

    // Rust enqueues one task due now and one due in an hour; Django runs
    // the first only.
    for schedule in ["0", "1h"] {
        let enqueued = bgtasks(true)
            .args([
                "enqueue",
                "interop.record",
                "--allow-unknown",
                "--args",
                &format!("[{schedule:?}]"),
                "--schedule",
                schedule,
            ])
            .output()
            .unwrap();
        assert!(
            enqueued.status.success(),
            "{}",
            String::from_utf8_lossy(&enqueued.stderr)
        );
    }
    django.run(&["process", "--duration", "2"]);
    let recorded = django.recorded();
    assert_eq!(
        recorded,
        vec![json!({"task": "interop.record", "args": ["0"], "kwargs": {}})],
        "Django ran Rust's due task, and only it"
    );

    // doctor agrees with the zone set.
    let doctor = bgtasks(true).args(["--json", "doctor"]).output().unwrap();
    let findings: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let zone = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "time_zone")
        .unwrap();
    assert_eq!(zone["status"], "ok", "{zone}");
    t
}

/// `interop.record` as a Rust task taking Python's wide integers exactly.
#[derive(Clone, Default)]
struct WideRecord {
    got: Arc<Mutex<Vec<(u128, i128, i128)>>>,
}

impl Task for WideRecord {
    type Params = (u128, i128, i128);
    type Output = ();
    fn name() -> &'static str {
        "interop.record"
    }
    async fn run(&self, params: Self::Params, _: TaskContext) -> Result<(), TaskError> {
        self.got.lock().unwrap().push(params);
        Ok(())
    }
}

/// `interop.fail` as a Rust task taking any call as `serde_json::Value`s.
struct AnyCall;

impl Task for AnyCall {
    type Params = Call;
    type Output = ();
    fn name() -> &'static str {
        "interop.fail"
    }
    fn encode(params: &Self::Params) -> Result<String, ParamsError> {
        params::encode_call(&params.0, &params.1)
    }
    fn decode(task_params: &str) -> Result<Self::Params, ParamsError> {
        params::decode_call(task_params)
    }
    async fn run(&self, _: Self::Params, _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Python's unbounded ints and its strs with lone surrogates, both ways:
/// what Django stores for 2**64, 10**30 and -2**63-1 is what Rust and
/// `bgtasks enqueue` store (same text, same hash); a Rust runner hands them
/// exactly to an i128/u128 params type, and fails a task permanently, naming
/// the value, where the params type cannot hold them or the str has a lone
/// surrogate; Django's worker gets Rust's wide integers exactly.
async fn wide_integers_and_lone_surrogates_cross_languages(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    attach(&t, &django).await;
    let wide_args = "[18446744073709551616, 1000000000000000000000000000000, -9223372036854775809]";
    let wide = (1u128 << 64, 10i128.pow(30), i128::from(i64::MIN) - 1);
    let from_python = django.run(&[
        "enqueue",
        "--name",
        "interop.record",
        "--args",
        wide_args,
        "--schedule",
        "-10",
    ]);
    let python_params = from_python["task_params"].as_str().unwrap().to_owned();
    assert_eq!(python_params, format!("[{wide_args}, {{}}]"));
    let hashed = django.run(&["hash", "--name", "interop.record", "--args", wide_args]);
    assert_eq!(hashed["task_hash"], from_python["task_hash"]);
    // Rust's encoding of the typed values, and the CLI's of the same JSON.
    let rust_params = params::encode_call(&wide, &()).unwrap();
    assert_eq!(rust_params, python_params);
    assert_eq!(
        params::task_hash("interop.record", &rust_params),
        from_python["task_hash"].as_str().unwrap()
    );
    let cli = crate::cli::bgtasks(&t)
        .args([
            "--json",
            "enqueue",
            "interop.record",
            "--allow-unknown",
            "--schedule",
            "3600",
        ])
        .arg(format!("--args={wide_args}"))
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cli["task"]["task_params"], from_python["task_params"]);
    assert_eq!(cli["task"]["task_hash"], from_python["task_hash"]);

    // interop.add(2**64, 1) for a Rust (i64, i64) task, and a str with a
    // lone surrogate for a serde_json::Value one.
    django.run(&[
        "enqueue",
        "--name",
        "interop.add",
        "--args",
        "[18446744073709551616, 1]",
        "--schedule",
        "-10",
    ]);
    let lone = django.run(&[
        "enqueue",
        "--name",
        "interop.fail",
        "--args",
        r#"["\ud800"]"#,
        "--schedule",
        "-10",
    ]);
    assert_eq!(lone["task_params"], r#"[["\ud800"], {}]"#);

    let registry = Registry::new();
    let record = WideRecord::default();
    registry
        .register(record.clone())
        .register(Add::default())
        .register(AnyCall);
    let queue = Queue::with_parts(t.db.clone(), registry, Config::default());
    let mut ran = 0;
    while queue.run_next_task().await {
        ran += 1;
    }
    assert_eq!(ran, 3, "the three due tasks, not the CLI's an hour away");
    assert_eq!(
        *record.got.lock().unwrap(),
        vec![wide],
        "exactly Python's ints"
    );
    let completed = django.run(&["completed"]);
    let row = |name: &str| {
        completed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task_name"] == name)
            .unwrap_or_else(|| panic!("{name}: {completed}"))
            .clone()
    };
    assert_eq!(row("interop.record")["failed_at"], Value::Null);
    for (name, says) in [
        (
            "interop.add",
            "the integer 18446744073709551616 cannot be decoded exactly",
        ),
        (
            "interop.fail",
            r"the lone UTF-16 surrogate \ud800 at character 4",
        ),
    ] {
        let row = row(name);
        let error = row["last_error"].as_str().unwrap();
        assert!(row["failed_at"].is_string(), "failed for good: {row}");
        assert_eq!(row["attempts"], 1, "no retry: {row}");
        assert!(error.contains(says), "{error}");
        assert!(!error.contains("written by"), "{error}");
    }

    // Rust enqueues wide integers; Django's worker receives them exactly.
    Queue::new(t.db.clone())
        .enqueue_call("interop.record", &wide, &())
        .await
        .unwrap();
    django.run(&["process", "--duration", "2"]);
    let recorded = std::fs::read_to_string(&django.record).unwrap();
    assert!(
        recorded.contains(&format!("\"args\": {wide_args}")),
        "the Python function got the exact ints: {recorded}"
    );
    t
}

/// The README's steps for a Django app that attaches to tables `bgtasks`
/// created, verbatim: `bgtasks migrate`, then `bgtasks migrate
/// --django-indexes`, then `manage.py migrate --fake-initial`. The doctor
/// then reports Django's index set, and a task Django enqueues runs in Rust.
async fn a_django_app_attaches_to_tables_bgtasks_created(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    let (code, _, report) = bgtasks(&t, &["migrate"]);
    assert_eq!(code, Some(0), "{report}");
    let (_, indexes, report) = doctor_indexes(&t);
    assert!(
        indexes["detail"]
            .as_str()
            .unwrap()
            .contains("the lean index set"),
        "{report}"
    );
    let (code, _, report) = bgtasks(&t, &["migrate", "--django-indexes"]);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("Django's indexes: created"), "{report}");
    let migrated = django.run(&["migrate", "--fake-initial"]);
    assert!(
        migrated["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "background_task.0001_initial"),
        "{migrated}"
    );
    let (code, findings, report) = bgtasks(&t, &["--json", "doctor"]);
    assert_eq!(code, Some(0), "{report}");
    for finding in findings.as_array().unwrap() {
        assert_eq!(finding["status"], "ok", "{report}");
    }
    let (_, indexes, report) = doctor_indexes(&t);
    assert!(
        indexes["detail"]
            .as_str()
            .unwrap()
            .starts_with("all 21 expected indexes are present: Django's index set"),
        "{report}"
    );

    django.run(&[
        "enqueue",
        "--name",
        "interop.add",
        "--args",
        "[2, 3]",
        "--schedule",
        "-10",
    ]);
    let registry = Registry::new();
    let adder = Add::default();
    registry.register(adder.clone());
    let queue = Queue::with_parts(t.db.clone(), registry, Config::default());
    assert!(queue.run_next_task().await, "the task Django enqueued runs");
    assert!(!queue.run_next_task().await);
    t
}

/// A task only Rust runs.
struct RustFirst;

impl Task for RustFirst {
    type Params = (i64,);
    type Output = i64;
    fn name() -> &'static str {
        "rust.first"
    }
    async fn run(&self, (n,): (i64,), _: TaskContext) -> Result<i64, TaskError> {
        Ok(n)
    }
}

/// Runs a Rust runner that knows `rust.first` until task `id` has its
/// history row, and returns that row.
async fn rust_runner_until_recorded(t: &TestDb, id: i32) -> completed_task::Model {
    let registry = Registry::new();
    registry.register(RustFirst);
    let config = Config::builder()
        .sleep(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let runner = Runner::start(t.queue(registry, config)).unwrap();
    let recorded = || async {
        completed_task::Entity::find()
            .filter(completed_task::Column::TaskId.eq(id))
            .one(&t.db)
            .await
            .unwrap()
    };
    wait_for(
        &format!("the Rust runner to record task {id}"),
        std::time::Duration::from_secs(30),
        || async { recorded().await.is_some() },
    )
    .await;
    runner.shutdown(std::time::Duration::from_secs(5)).await;
    recorded().await.unwrap()
}

/// A step that waits is held where Django's `process_tasks` does not look
/// (its `run_at` is the far future): Django runs it only once the Rust
/// runner recorded what it waits for, which released it.
async fn django_never_runs_a_step_before_what_it_waits_for_succeeded(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    attach(&t, &django).await;
    let queue = Queue::new(t.db.clone());
    let first = queue
        .enqueue::<RustFirst>(&(7,))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let step = queue
        .enqueue_call("interop.record", &json!(["after"]), &json!({}))
        .after([first.id])
        .await
        .unwrap()
        .into_task()
        .unwrap();
    raw_times_are_djangos(&django, t.backend);
    django.run(&["process", "--duration", "3"]);
    assert!(
        django.recorded().is_empty(),
        "Django ran nothing: the step is held, and rust.first is not Django's: {:?}",
        django.recorded()
    );

    rust_runner_until_recorded(&t, first.id).await;
    let released = task_row::Entity::find_by_id(step.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(released.run_at <= chrono::Utc::now(), "{released:?}");
    raw_times_are_djangos(&django, t.backend);

    django.run(&["process", "--duration", "3"]);
    assert_eq!(
        django.recorded(),
        vec![json!({"task": "interop.record", "args": ["after"], "kwargs": {}})],
        "released, the step runs under Django"
    );
    t
}

/// Django's `process_tasks` runs a task a step waits for and writes its
/// history without settling the step (it knows nothing of steps): the
/// Rust runner's sweep cancels the step, saying why, instead of leaving it
/// held for ever.
async fn a_step_after_a_task_django_ran_is_cancelled_not_held_for_ever(t: TestDb) -> TestDb {
    let Some(django) = Django::new(&t) else {
        return t;
    };
    attach(&t, &django).await;
    let queue = Queue::new(t.db.clone());
    let first = queue
        .enqueue_call("interop.record", &json!(["first"]), &json!({}))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let step = queue
        .enqueue::<RustFirst>(&(7,))
        .after([first.id])
        .await
        .unwrap()
        .into_task()
        .unwrap();
    raw_times_are_djangos(&django, t.backend);
    django.run(&["process", "--duration", "3"]);
    assert_eq!(
        django.recorded(),
        vec![json!({"task": "interop.record", "args": ["first"], "kwargs": {}})],
        "Django ran the dependency, not the held step"
    );

    let settled = rust_runner_until_recorded(&t, step.id).await;
    assert!(settled.cancelled_at.is_some(), "{settled:?}");
    assert_eq!(settled.attempts, 0, "it never ran");
    assert!(
        settled
            .last_error
            .contains("left the queue without an outcome")
            && settled.last_error.contains("process_tasks"),
        "{}",
        settled.last_error
    );
    assert!(
        task_row::Entity::find_by_id(step.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    t
}
