//! `bgtasks prune` and `bgtasks doctor`, and the runner's own retention.
//!
//! Pruning runs over one history of 50 rows ([`history`]), finished one
//! hour apart, with every fifth row failed and five rows sharing one
//! finish time, so that `--keep-last` has to break a tie by id. What must
//! remain is worked out by [`expected`], independently of the SQL.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use background_tasks::doctor::{self, Status};
use background_tasks::{
    Config, Registry, Retention, Runner, admin, completed_task, runner_row, task_row,
};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QueryTrait,
};
use serde_json::Value;

use crate::fixture::{Backend, TestDb, wait_for};

on_all_backends!(
    prune_by_each_policy_in_small_batches,
    prune_by_every_policy_at_once,
    prune_dry_run_deletes_nothing,
    prune_refuses_bad_input_and_deletes_nothing,
    prune_and_doctor_on_an_unmigrated_database,
    admin_prune_in_bounded_batches,
    runner_prunes_by_its_retention,
    process_reads_the_retention_flags,
    doctor_is_happy_on_a_healthy_database,
    doctor_spots_naive_times_of_another_zone,
    doctor_finds_a_dropped_index,
    doctor_finds_locks_of_gone_runners,
    doctor_finds_due_tasks_nobody_here_can_run,
);

fn bgtasks(t: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bgtasks"));
    command.env("DATABASE_URL", &t.url).env("RUST_LOG", "info");
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run bgtasks")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {}", text(output)))
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// One history row of the fixture.
#[derive(Clone, Copy, Debug)]
struct Row {
    id: i32,
    age: TimeDelta,
    failed: bool,
}

/// A policy in the units of the command line.
#[derive(Clone, Copy, Debug, Default)]
struct Policy {
    completed_hours: Option<i64>,
    failed_hours: Option<i64>,
    keep_last: Option<usize>,
}

impl Policy {
    fn retention(self) -> Retention {
        Retention {
            completed: self
                .completed_hours
                .map(|h| Duration::from_secs(h as u64 * 3_600)),
            failed: self
                .failed_hours
                .map(|h| Duration::from_secs(h as u64 * 3_600)),
            keep_last: self.keep_last.map(|n| n as u64),
        }
    }

    fn flags(self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(h) = self.completed_hours {
            flags.extend(["--completed-older-than".to_owned(), format!("{h}h")]);
        }
        if let Some(h) = self.failed_hours {
            flags.extend(["--failed-older-than".to_owned(), format!("{h}h")]);
        }
        if let Some(n) = self.keep_last {
            flags.extend(["--keep-last".to_owned(), n.to_string()]);
        }
        flags
    }
}

/// Replaces the history with 50 rows, oldest first: row `i` finished
/// `50 - i` hours (less half an hour) ago, rows 30 to 34 all at row 30's
/// time, and rows with `i % 5 == 3` failed. Returns them with their ids.
async fn history(t: &TestDb) -> Vec<Row> {
    completed_task::Entity::delete_many()
        .exec(&t.db)
        .await
        .unwrap();
    let now = now();
    let mut rows = Vec::new();
    for i in 0..50_i64 {
        let hours = if (30..35).contains(&i) { 20 } else { 50 - i };
        let age = TimeDelta::hours(hours) - TimeDelta::minutes(30);
        let failed = i % 5 == 3;
        let id = insert_history(t, now - age, failed).await;
        rows.push(Row { id, age, failed });
    }
    rows
}

async fn insert_history(t: &TestDb, finished: DateTime<Utc>, failed: bool) -> i32 {
    let row = completed_task::ActiveModel {
        id: NotSet,
        task_name: Set("report.build".into()),
        task_params: Set("[[], {}]".into()),
        task_hash: Set("0".repeat(40)),
        verbose_name: Set(None),
        priority: Set(0),
        run_at: Set(finished),
        repeat: Set(0),
        repeat_until: Set(None),
        queue: Set(None),
        attempts: Set(1),
        failed_at: Set(failed.then_some(finished)),
        last_error: Set(if failed { "boom".into() } else { String::new() }),
        locked_by: Set(None),
        locked_at: Set(None),
        creator_content_type_id: Set(None),
        creator_object_id: Set(None),
        result: Set(None),
        cancelled_at: Set(None),
        task_id: Set(None),
    };
    write(t, completed_task::Entity::insert(row)).await;
    completed_task::Entity::find()
        .order_by_desc(completed_task::Column::Id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Runs `query` as the crate writes rows: on SQLite, times in Django's
/// text (`YYYY-MM-DD HH:MM:SS.ffffff`, what the crate's statements
/// compare with); typed elsewhere.
async fn write(t: &TestDb, query: impl QueryTrait) {
    let mut statement = query.build(t.db.get_database_backend());
    if t.backend == Backend::Sqlite
        && let Some(values) = statement.values.as_mut()
    {
        for value in &mut values.0 {
            if let sea_orm::Value::ChronoDateTimeUtc(Some(when)) = value {
                let text = match when.timestamp_subsec_micros() {
                    0 => when.format("%Y-%m-%d %H:%M:%S").to_string(),
                    micros => format!("{}.{micros:06}", when.format("%Y-%m-%d %H:%M:%S")),
                };
                *value = sea_orm::Value::String(Some(text));
            }
        }
    }
    t.db.execute_raw(statement).await.unwrap();
}

/// Ids of the history rows left.
async fn remaining(t: &TestDb) -> BTreeSet<i32> {
    completed_task::Entity::find()
        .all(&t.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect()
}

/// What `policy` leaves of `rows`, and the rows it deletes per reason
/// (succeeded by age, failed by age, beyond the newest).
fn expected(rows: &[Row], policy: Policy) -> (BTreeSet<i32>, [usize; 3]) {
    let older =
        |age: TimeDelta, hours: Option<i64>| hours.is_some_and(|h| age > TimeDelta::hours(h));
    let completed = rows
        .iter()
        .filter(|r| !r.failed && older(r.age, policy.completed_hours))
        .count();
    let failed = rows
        .iter()
        .filter(|r| r.failed && older(r.age, policy.failed_hours))
        .count();
    let mut left: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            let hours = if r.failed {
                policy.failed_hours
            } else {
                policy.completed_hours
            };
            !older(r.age, hours)
        })
        .collect();
    // Newest first: the youngest age, then the highest id.
    left.sort_by(|a, b| a.age.cmp(&b.age).then(b.id.cmp(&a.id)));
    let keep = policy.keep_last.unwrap_or(usize::MAX);
    let beyond = left.len().saturating_sub(keep);
    left.truncate(keep);
    (
        left.iter().map(|r| r.id).collect(),
        [completed, failed, beyond],
    )
}

const EVERY_POLICY: Policy = Policy {
    completed_hours: Some(20),
    failed_hours: Some(40),
    keep_last: Some(17),
};

async fn prune_by_each_policy_in_small_batches(t: TestDb) -> TestDb {
    for policy in [
        Policy {
            completed_hours: Some(20),
            ..Policy::default()
        },
        Policy {
            failed_hours: Some(10),
            ..Policy::default()
        },
        Policy {
            keep_last: Some(17),
            ..Policy::default()
        },
    ] {
        let rows = history(&t).await;
        let (left, deleted) = expected(&rows, policy);
        let output = run(bgtasks(&t)
            .arg("prune")
            .args(policy.flags())
            .args(["--batch", "7"]));
        assert!(output.status.success(), "{policy:?}: {}", text(&output));
        assert_eq!(remaining(&t).await, left, "{policy:?}: {}", text(&output));
        let total: usize = deleted.iter().sum();
        assert!(total > 7, "{policy:?}: the fixture needs several batches");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("total") && l.ends_with(&total.to_string())),
            "{stdout}"
        );
    }
    // The keep-last boundary falls inside the rows sharing one finish
    // time: the higher ids of them stay.
    let rows = history(&t).await;
    let ties: Vec<i32> = rows[30..35].iter().map(|r| r.id).collect();
    let (left, _) = expected(
        &rows,
        Policy {
            keep_last: Some(17),
            ..Policy::default()
        },
    );
    assert_eq!(
        ties.iter()
            .filter(|id| left.contains(id))
            .collect::<Vec<_>>(),
        vec![&ties[3], &ties[4]]
    );
    t
}

async fn prune_by_every_policy_at_once(t: TestDb) -> TestDb {
    let rows = history(&t).await;
    let (left, [completed, failed, beyond]) = expected(&rows, EVERY_POLICY);
    assert_eq!(
        (completed, failed, beyond),
        (24, 2, 7),
        "the fixture's counts"
    );
    let output = run(bgtasks(&t)
        .args(["--json", "prune"])
        .args(EVERY_POLICY.flags())
        .args(["--batch", "7"]));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(remaining(&t).await, left);
    let report = json(&output);
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["completed"], 24);
    assert_eq!(report["failed"], 2);
    assert_eq!(report["beyond_keep_last"], 7);
    assert_eq!(report["total"], 33);

    // Again: nothing is old enough any more, and it says so.
    let output = run(bgtasks(&t).arg("prune").args(EVERY_POLICY.flags()));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("nothing to prune"),
        "{}",
        text(&output)
    );
    assert_eq!(remaining(&t).await, left);
    t
}

async fn prune_dry_run_deletes_nothing(t: TestDb) -> TestDb {
    let rows = history(&t).await;
    let all: BTreeSet<i32> = rows.iter().map(|r| r.id).collect();
    let (_, [completed, failed, beyond]) = expected(&rows, EVERY_POLICY);
    let output = run(bgtasks(&t)
        .args(["--json", "prune", "--dry-run"])
        .args(EVERY_POLICY.flags()));
    assert!(output.status.success(), "{}", text(&output));
    let report = json(&output);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["completed"], completed);
    assert_eq!(report["failed"], failed);
    assert_eq!(
        report["beyond_keep_last"], beyond,
        "counted among the rows the ages spare"
    );
    assert_eq!(report["at_least"], false);
    assert_eq!(remaining(&t).await, all);

    let output = run(bgtasks(&t).args(["prune", "--dry-run", "--keep-last", "10"]));
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("WOULD DELETE") && stdout.contains("nothing was deleted"),
        "{stdout}"
    );
    assert_eq!(remaining(&t).await, all);
    t
}

async fn prune_refuses_bad_input_and_deletes_nothing(t: TestDb) -> TestDb {
    let rows = history(&t).await;
    let all: BTreeSet<i32> = rows.iter().map(|r| r.id).collect();
    for (args, says) in [
        (vec!["prune"], "say what to prune"),
        (vec!["prune", "--batch", "5"], "say what to prune"),
        (
            vec!["prune", "--completed-older-than", "7x"],
            "--completed-older-than",
        ),
        (
            vec!["prune", "--failed-older-than=-1d"],
            "--failed-older-than",
        ),
        (vec!["prune", "--keep-last", "many"], "--keep-last"),
        (vec!["prune", "--keep-last", "1", "--batch", "0"], "--batch"),
        (
            vec!["prune", "--keep-last", "1", "--batch", "10001"],
            "--batch",
        ),
    ] {
        let output = run(bgtasks(&t).args(&args));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(remaining(&t).await, all);
    t
}

/// The URL of an empty database beside the test's own: a new file for
/// SQLite, a new database on the server otherwise (dropped by
/// [`drop_empty`]).
async fn empty_database(t: &TestDb, dir: &tempfile::TempDir) -> String {
    let (base, name) = t.url.rsplit_once('/').unwrap();
    match t.backend {
        Backend::Sqlite => {
            let file = dir.path().join("empty.sqlite3");
            std::fs::File::create(&file).unwrap();
            format!("sqlite://{}", file.display())
        }
        _ => {
            let empty = format!("{}_empty", name.split('?').next().unwrap());
            t.db.execute_unprepared(&format!("CREATE DATABASE {empty}"))
                .await
                .unwrap();
            format!("{base}/{empty}")
        }
    }
}

async fn drop_empty(t: &TestDb, url: &str) {
    if t.backend == Backend::Sqlite {
        return;
    }
    let name = url.rsplit('/').next().unwrap();
    let sql = match t.backend {
        Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        _ => format!("DROP DATABASE IF EXISTS {name}"),
    };
    t.db.execute_unprepared(&sql).await.unwrap();
}

async fn prune_and_doctor_on_an_unmigrated_database(t: TestDb) -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    // SQLite: no file at all. Neither command creates one.
    let missing = dir.path().join("missing.sqlite3");
    let missing_url = format!("sqlite://{}", missing.display());
    let output =
        run(bgtasks(&t)
            .env("DATABASE_URL", &missing_url)
            .args(["prune", "--keep-last", "1"]));
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    let output = run(bgtasks(&t)
        .env("DATABASE_URL", &missing_url)
        .args(["--json", "doctor"]));
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let findings = json(&output);
    assert_eq!(findings[0]["check"], "schema");
    assert_eq!(findings[0]["status"], "fail");
    assert!(
        findings[0]["detail"]
            .as_str()
            .unwrap()
            .contains("no database at"),
        "{findings}"
    );
    assert!(!missing.exists(), "nothing created the file");

    // A database that exists but was never migrated.
    let url = empty_database(&t, &dir).await;
    let output =
        run(bgtasks(&t)
            .env("DATABASE_URL", &url)
            .args(["prune", "--completed-older-than", "1d"]));
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("bgtasks migrate"),
        "{}",
        text(&output)
    );
    let output = run(bgtasks(&t)
        .env("DATABASE_URL", &url)
        .args(["--json", "doctor"]));
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let findings = by_check(&json(&output));
    assert_eq!(findings["schema"].0, "fail", "{findings:?}");
    assert!(
        findings["schema"].1.contains("bgtasks migrate"),
        "{findings:?}"
    );
    for check in ["indexes", "runners", "unknown_tasks", "stale_locks"] {
        assert_eq!(findings[check].0, "skip", "{check}: {findings:?}");
    }
    assert_eq!(findings["database"].0, "ok", "{findings:?}");
    assert_eq!(findings["clock"].0, "ok", "{findings:?}");
    // Still unmigrated: the doctor only looks.
    let output = run(bgtasks(&t)
        .env("DATABASE_URL", &url)
        .args(["migrate", "status"]));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("migration(s) pending"),
        "{}",
        text(&output)
    );
    drop_empty(&t, &url).await;
    t
}

async fn admin_prune_in_bounded_batches(t: TestDb) -> TestDb {
    let rows = history(&t).await;
    let retention = EVERY_POLICY.retention();
    let (left, [completed, failed, beyond]) = expected(&rows, EVERY_POLICY);

    let preview = admin::prune_preview(&t.db, &retention, now(), 1_000)
        .await
        .unwrap();
    assert_eq!(
        (preview.completed, preview.failed, preview.beyond_keep_last),
        (completed as u64, failed as u64, beyond as u64)
    );
    let capped = admin::prune_preview(&t.db, &retention, now(), 5)
        .await
        .unwrap();
    assert_eq!(
        (capped.completed, capped.failed),
        (5, 2),
        "counts stop at the cap"
    );

    // Two batches of three: six rows, and more is left.
    let some = admin::prune_some(&t.db, &retention, now(), 3, 2)
        .await
        .unwrap();
    assert_eq!((some.completed, some.total(), some.more), (6, 6, true));
    assert_eq!(remaining(&t).await.len(), 44);

    let rest = admin::prune(&t.db, &retention, now(), 3).await.unwrap();
    assert_eq!(
        (
            rest.completed,
            rest.failed,
            rest.beyond_keep_last,
            rest.more
        ),
        (completed as u64 - 6, failed as u64, beyond as u64, false)
    );
    assert_eq!(remaining(&t).await, left);
    let again = admin::prune(&t.db, &retention, now(), 3).await.unwrap();
    assert_eq!(again, admin::Pruned::default());

    // One step at a time, as the CLI's progress does.
    let rows = history(&t).await;
    let (left, _) = expected(&rows, EVERY_POLICY);
    let mut pruning = admin::Pruning::new(&retention, now(), 10).unwrap();
    let mut steps = 0;
    while pruning.step(&t.db).await.unwrap() {
        steps += 1;
        assert!(steps < 100, "a pruning ends");
    }
    assert!(pruning.is_done());
    assert_eq!(pruning.pruned().total(), 33);
    assert_eq!(remaining(&t).await, left);

    // keep_last = 0 keeps nothing; a batch out of range is refused.
    let none = Retention {
        keep_last: Some(0),
        ..Retention::default()
    };
    let all = admin::prune(&t.db, &none, now(), 7).await.unwrap();
    assert_eq!(all.beyond_keep_last, left.len() as u64);
    assert!(remaining(&t).await.is_empty());
    assert!(admin::prune(&t.db, &none, now(), 0).await.is_err());
    assert!(
        admin::prune(&t.db, &none, now(), admin::MAX_PRUNE_BATCH + 1)
            .await
            .is_err()
    );
    t
}

async fn runner_prunes_by_its_retention(t: TestDb) -> TestDb {
    let rows = history(&t).await;
    let (left, _) = expected(&rows, EVERY_POLICY);
    let config = Config::builder()
        .retention(EVERY_POLICY.retention())
        .retention_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let runner = Runner::start(t.queue(Registry::new(), config)).unwrap();
    wait_for(
        "the runner to prune the history",
        Duration::from_secs(30),
        || async { remaining(&t).await == left },
    )
    .await;
    // It keeps pruning on its timer: a row finished two days ago goes too.
    let old = insert_history(&t, now() - TimeDelta::days(2), false).await;
    wait_for(
        "the runner's next round",
        Duration::from_secs(30),
        || async { !remaining(&t).await.contains(&old) },
    )
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(remaining(&t).await, left);
    t
}

async fn process_reads_the_retention_flags(t: TestDb) -> TestDb {
    let rows = history(&t).await;
    let all: BTreeSet<i32> = rows.iter().map(|r| r.id).collect();
    for (flag, value, env) in [
        ("--keep-completed", "0", None),
        ("--keep-failed", "7x", None),
        ("--keep-last", "0", None),
        ("--keep-last", "x", Some("BACKGROUND_TASK_KEEP_LAST")),
        (
            "--keep-completed",
            "soon",
            Some("BACKGROUND_TASK_KEEP_COMPLETED"),
        ),
    ] {
        let mut command = bgtasks(&t);
        command.args(["process", "--duration", "1"]);
        match env {
            Some(name) => command.env(name, value),
            None => command.args([flag, value]),
        };
        let output = run(&mut command);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{flag} {value}: {}",
            text(&output)
        );
        // The message names what was given: the flag, or the variable.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let named = env.unwrap_or(flag);
        assert!(stderr.contains(named), "{named}={value}: {stderr}");
    }
    assert_eq!(remaining(&t).await, all);

    let (left, _) = expected(&rows, EVERY_POLICY);
    let output = run(bgtasks(&t)
        .args(["process", "--duration", "3", "--sleep", "0.1"])
        .args(["--keep-completed", "20h", "--keep-failed", "40h"])
        .env("BACKGROUND_TASK_KEEP_LAST", "17"));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("pruned 33 history rows"),
        "{}",
        text(&output)
    );
    assert_eq!(remaining(&t).await, left);
    t
}

/// `check → (status, detail)` of a doctor's JSON.
fn by_check(findings: &Value) -> std::collections::HashMap<String, (String, String)> {
    findings
        .as_array()
        .unwrap_or_else(|| panic!("{findings}"))
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_owned(),
                (
                    f["status"].as_str().unwrap().to_owned(),
                    f["detail"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

const CHECKS: [&str; 10] = [
    "schema",
    "mode",
    "indexes",
    "database",
    "clock",
    "runners",
    "unknown_tasks",
    "stale_locks",
    "set_aside",
    "time_zone",
];

async fn doctor_is_happy_on_a_healthy_database(t: TestDb) -> TestDb {
    // A task due now and a fresh history: nothing is wrong.
    let queue = t.queue(Registry::new(), Config::default());
    queue.enqueue_call("bgtasks.noop", &(), &()).await.unwrap();
    history(&t).await;
    let output = run(bgtasks(&t).arg("doctor"));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), CHECKS.len(), "{stdout}");
    for (line, check) in lines.iter().zip(CHECKS) {
        assert!(line.starts_with("ok") && line.contains(check), "{stdout}");
    }

    let output = run(bgtasks(&t).args(["--json", "doctor"]));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let findings = json(&output);
    let checks: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, CHECKS);
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["status"] == "ok"),
        "{findings}"
    );
    t
}

async fn doctor_finds_a_dropped_index(t: TestDb) -> TestDb {
    let index = "background_task_completedtask_run_at_77c80f34";
    let drop = match t.backend {
        Backend::MySql => format!("DROP INDEX {index} ON background_task_completedtask"),
        _ => format!("DROP INDEX {index}"),
    };
    t.db.execute_unprepared(&drop).await.unwrap();

    let findings = doctor::check(&t.db, &Registry::new(), &doctor::Options::default()).await;
    let problems: Vec<_> = findings.iter().filter(|f| f.is_problem()).collect();
    assert_eq!(problems.len(), 1, "{findings:#?}");
    assert_eq!(problems[0].check, "indexes");
    assert_eq!(problems[0].status, Status::Fail);
    assert!(
        problems[0].detail.contains(&format!(
            "CREATE INDEX {index} ON background_task_completedtask (run_at)"
        )),
        "{}",
        problems[0].detail
    );

    let output = run(bgtasks(&t).arg("doctor"));
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(index),
        "{}",
        text(&output)
    );

    // PostgreSQL's notify trigger is part of the schema too.
    if t.backend == Backend::Postgres {
        t.db.execute_unprepared("DROP TRIGGER background_task_notify ON background_task")
            .await
            .unwrap();
        let findings = doctor::check(&t.db, &Registry::new(), &doctor::Options::default()).await;
        let schema = &findings[0];
        assert_eq!((schema.check, schema.status), ("schema", Status::Warn));
        assert!(
            schema.detail.contains("CREATE TRIGGER"),
            "{}",
            schema.detail
        );
    }
    t
}

/// Registers a runner that was seen `ago`.
async fn register_runner(t: &TestDb, id: &str, ago: TimeDelta) {
    let seen = now() - ago;
    let row = runner_row::Model {
        runner_id: id.to_owned(),
        host: "elsewhere".into(),
        pid: 7,
        queue: None,
        executors: 1,
        running: 1,
        started_at: seen,
        last_seen: seen,
        drain_requested_at: None,
    };
    write(t, runner_row::Entity::insert(row.into_active_model())).await;
}

/// Enqueues a task named `name`, due `due_ago` ago, locked by `lock`'s
/// identity for its time ago when given. Returns its id.
async fn task(t: &TestDb, name: &str, due_ago: TimeDelta, lock: Option<(&str, TimeDelta)>) -> i32 {
    let queue = t.queue(Registry::new(), Config::default());
    let stored = queue.enqueue_call(name, &(), &()).await.unwrap();
    let id = stored.into_task().unwrap().id;
    let mut update = task_row::Entity::update_many()
        .col_expr(task_row::Column::RunAt, Expr::value(now() - due_ago))
        .filter(task_row::Column::Id.eq(id));
    if let Some((by, ago)) = lock {
        update = update
            .col_expr(task_row::Column::LockedBy, Expr::value(by))
            .col_expr(task_row::Column::LockedAt, Expr::value(now() - ago));
    }
    write(t, update).await;
    id
}

async fn doctor_finds_locks_of_gone_runners(t: TestDb) -> TestDb {
    let minutes = TimeDelta::minutes;
    register_runner(&t, "elsewhere:7:0000aaaa", TimeDelta::zero()).await;
    register_runner(&t, "elsewhere:8:0000bbbb", minutes(10)).await;
    // Stale: a registered runner that stopped renewing, an identity never
    // registered, a Django bare PID that is not running.
    let dead = task(
        &t,
        "bgtasks.noop",
        minutes(20),
        Some(("elsewhere:8:0000bbbb", minutes(15))),
    )
    .await;
    let unknown = task(
        &t,
        "bgtasks.noop",
        minutes(20),
        Some(("gone:9:0000cccc", minutes(15))),
    )
    .await;
    let django = task(
        &t,
        "bgtasks.noop",
        minutes(20),
        Some(("2147483646", minutes(15))),
    )
    .await;
    // Not stale: an alive runner's, a recent lock, a running Django PID.
    task(
        &t,
        "bgtasks.noop",
        minutes(20),
        Some(("elsewhere:7:0000aaaa", minutes(15))),
    )
    .await;
    task(
        &t,
        "bgtasks.noop",
        minutes(20),
        Some(("gone:9:0000cccc", TimeDelta::seconds(5))),
    )
    .await;
    let me = std::process::id().to_string();
    task(&t, "bgtasks.noop", minutes(20), Some((&me, minutes(15)))).await;

    let output = run(bgtasks(&t).args(["--json", "doctor"]));
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let findings = by_check(&json(&output));
    let (status, detail) = &findings["stale_locks"];
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.starts_with("3 task(s)"), "{detail}");
    let mut ids = [dead, unknown, django];
    ids.sort();
    let listed = ids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    assert!(detail.contains(&format!("ids {listed}.")), "{detail}");
    assert!(detail.contains("when the lock expires"), "{detail}");
    // The metrics' gauge counts the same three.
    let queue = t.queue(
        background_tasks::Registry::new(),
        background_tasks::Config::default(),
    );
    let metrics = background_tasks::metrics::render(&queue).await.unwrap();
    assert!(
        metrics.contains("background_tasks_stale_locks 3"),
        "{metrics}"
    );
    for check in CHECKS.iter().filter(|c| **c != "stale_locks") {
        assert_eq!(findings[*check].0, "ok", "{check}: {findings:?}");
    }
    t
}

async fn doctor_finds_due_tasks_nobody_here_can_run(t: TestDb) -> TestDb {
    let minutes = TimeDelta::minutes;
    for _ in 0..3 {
        task(&t, "not.ours", minutes(10), None).await;
    }
    // Due, but not for longer than the lease: not reported.
    task(&t, "also.not.ours", TimeDelta::seconds(1), None).await;
    let output = run(bgtasks(&t).args(["--json", "doctor"]));
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let findings = by_check(&json(&output));
    let (status, detail) = &findings["unknown_tasks"];
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.contains("3 × not.ours"), "{detail}");
    assert!(!detail.contains("also.not.ours"), "{detail}");
    let (status, detail) = &findings["runners"];
    assert_eq!(status, "warn", "no runner, and a task has waited: {detail}");
    assert!(detail.contains("bgtasks process"), "{detail}");

    // With a runner alive, only the unknown names remain a problem.
    register_runner(&t, "elsewhere:7:0000aaaa", TimeDelta::zero()).await;
    let output = run(bgtasks(&t).args(["--json", "doctor"]));
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let findings = by_check(&json(&output));
    assert_eq!(findings["runners"].0, "ok", "{findings:?}");
    assert_eq!(findings["unknown_tasks"].0, "warn", "{findings:?}");
    let order: Vec<_> = task_row::Entity::find()
        .order_by_asc(task_row::Column::Id)
        .all(&t.db)
        .await
        .unwrap();
    assert_eq!(order.len(), 4, "the doctor changed nothing");
    assert!(order.iter().all(|task| task.locked_by.is_none()));
    t
}

/// A history row finished "five hours from now": what a Django project
/// with `USE_TZ = False` in a zone five hours east of UTC writes (its wall
/// clock, naive). Doctor fails its time_zone check on SQLite and MySQL,
/// and passes once told the zone; PostgreSQL stores instants.
async fn doctor_spots_naive_times_of_another_zone(t: TestDb) -> TestDb {
    insert_history(&t, now() + TimeDelta::hours(5), false).await;
    let output = run(bgtasks(&t).args(["--json", "doctor"]));
    let findings = json(&output);
    let zone = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "time_zone")
        .unwrap()
        .clone();
    if t.backend == Backend::Postgres {
        assert_eq!(zone["status"], "ok", "{zone}");
        return t;
    }
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert_eq!(zone["status"], "fail", "{zone}");
    let detail = zone["detail"].as_str().unwrap();
    assert!(detail.contains("5.0 h east of UTC"), "{detail}");
    assert!(detail.contains("BACKGROUND_TASK_DB_TIME_ZONE"), "{detail}");
    // Asia/Karachi is UTC+5 all year.
    let output = run(bgtasks(&t)
        .env("BACKGROUND_TASK_DB_TIME_ZONE", "Asia/Karachi")
        .args(["--json", "doctor"]));
    let findings = json(&output);
    let zone = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "time_zone")
        .unwrap()
        .clone();
    assert_eq!(zone["status"], "ok", "{zone}");
    // A zone that is not one is bad input.
    let output = run(bgtasks(&t)
        .env("BACKGROUND_TASK_DB_TIME_ZONE", "Mars/Olympus")
        .arg("doctor"));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("Mars/Olympus"), "{}", text(&output));
    t
}
