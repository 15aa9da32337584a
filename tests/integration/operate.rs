//! The operator's commands of `bgtasks` end to end: the built binary
//! against a real database, checked through its exit code, its output
//! (tables and `--json`) and the rows it leaves.

use std::io::Write;
use std::process::{Output, Stdio};

use background_tasks::{admin, completed_task, task_row};
use chrono::{TimeDelta, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::cli::{bgtasks, queue};
use crate::fixture::TestDb;
use crate::rows::History;

on_all_backends!(
    enqueue_stores_every_option,
    enqueue_refuses_bad_input_and_changes_nothing,
    list_filters_pages_and_says_when_nothing_matches,
    show_prints_a_task_and_its_chain,
    stats_reports_queues_throughput_and_runners,
    retry_cancel_and_delete_by_id_and_by_filter,
    commands_refuse_an_unmigrated_database,
    demo_prints_json_for_scripts,
    cron_limit_and_policy_commands_change_the_database,
    enqueue_takes_negative_schedules,
    enqueue_from_file_writes_every_line_as_stated,
    enqueue_from_stdin_streams_batches_in_file_order,
    enqueue_from_reports_every_bad_line_and_atomic_writes_nothing,
);
on_server_backends!(each_command_opens_one_connection);

/// Runs `bgtasks ARGS` on the test database.
fn run(t: &TestDb, args: &[&str]) -> Output {
    bgtasks(t).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `bgtasks --json ARGS`, expecting success, and parses its output.
fn run_json(t: &TestDb, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = run(t, &all);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)))
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

async fn task_count(t: &TestDb) -> u64 {
    task_row::Entity::find().count(&t.db).await.unwrap()
}

/// A history row as a runner writes it, finished `age` ago.
async fn history(
    t: &TestDb,
    name: &str,
    queue: Option<&str>,
    error: Option<&str>,
    age: TimeDelta,
) -> i32 {
    History {
        queue: queue.map(str::to_owned),
        error: error.map(str::to_owned),
        age,
        ..History::of(name)
    }
    .insert(t)
    .await
}

async fn enqueue_stores_every_option(t: TestDb) -> TestDb {
    let until = (Utc::now() + TimeDelta::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let out = run_json(
        &t,
        &[
            "enqueue",
            "bgtasks.echo",
            "--args",
            "[\"hi\", 2]",
            "--kwargs",
            "{\"to\": \"ada\"}",
            "--priority",
            "-3",
            "--queue",
            "mail",
            "--schedule",
            "2h",
            "--verbose-name",
            "Say hi",
            "--repeat",
            "15m",
            "--repeat-until",
            &until,
        ],
    );
    assert_eq!(out["result"], "created", "{out}");
    let id = out["task"]["id"].as_i64().unwrap() as i32;
    let row = task_row::Entity::find_by_id(id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.task_params, "[[\"hi\", 2], {\"to\": \"ada\"}]");
    assert_eq!(
        (row.priority, row.queue.as_deref(), row.repeat),
        (-3, Some("mail"), 900)
    );
    assert_eq!(row.verbose_name.as_deref(), Some("Say hi"));
    let in_two_hours = Utc::now() + TimeDelta::hours(2);
    assert!(
        (row.run_at - in_two_hours).num_seconds().abs() < 60,
        "{}",
        row.run_at
    );
    assert_eq!(
        row.repeat_until
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        until
    );

    // Seconds and absolute times schedule too; --remove-existing replaces.
    let at = (Utc::now() + TimeDelta::days(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let output = run(&t, &["enqueue", "bgtasks.noop", "--schedule", &at]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("enqueued task"),
        "{}",
        stdout(&output)
    );
    run(&t, &["enqueue", "bgtasks.noop", "--schedule", "60"]);
    let output = run(&t, &["enqueue", "bgtasks.noop", "--remove-existing"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let noops = task_row::Entity::find()
        .filter(task_row::Column::TaskName.eq("bgtasks.noop"))
        .count(&t.db)
        .await
        .unwrap();
    assert_eq!(
        noops, 1,
        "--remove-existing deleted the waiting copies first"
    );
    t
}

async fn enqueue_refuses_bad_input_and_changes_nothing(t: TestDb) -> TestDb {
    for (args, says) in [
        (
            vec!["enqueue", "bgtasks.echo", "--args", "[1,"],
            "not valid JSON",
        ),
        (
            vec!["enqueue", "bgtasks.echo", "--args", "{\"a\": 1}"],
            "must be a JSON array",
        ),
        (
            vec!["enqueue", "bgtasks.echo", "--kwargs", "[1]"],
            "must be a JSON object",
        ),
        (vec!["enqueue", "no.such.task"], "--allow-unknown"),
        (
            vec!["enqueue", "bgtasks.noop", "--schedule", "soonish"],
            "2026-11-27",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--repeat", "often"],
            "duration",
        ),
        (vec!["enqueue", "bgtasks.noop", "--queue", ""], "queue"),
        (vec!["enqueue", "bgtasks.echo", "--args", "[NaN]"], "JSON"),
    ] {
        let output = run(&t, &args);
        assert_eq!(code(&output), Some(2), "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(task_count(&t).await, 0, "bad input writes nothing");
    let output = run(&t, &["enqueue", "django.only", "--allow-unknown"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(task_count(&t).await, 1);
    t
}

async fn list_filters_pages_and_says_when_nothing_matches(t: TestDb) -> TestDb {
    let output = run(&t, &["list"]);
    assert_eq!(code(&output), Some(3), "an empty queue lists nothing");
    let q = queue(&t);
    for i in 0..5 {
        q.enqueue_call("bgtasks.echo", &(i,), &())
            .priority(i)
            .queue("mail")
            .await
            .unwrap();
    }
    q.enqueue_call("bgtasks.noop", &(), &())
        .schedule(3_600)
        .await
        .unwrap();
    history(
        &t,
        "bgtasks.fail",
        None,
        Some("Traceback\nValueError: boom"),
        TimeDelta::minutes(5),
    )
    .await;
    history(&t, "bgtasks.noop", None, None, TimeDelta::minutes(5)).await;

    let output = run(&t, &["list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    for expected in [
        "pending",
        "scheduled",
        "failed",
        "completed",
        "ValueError: boom",
    ] {
        assert!(table.contains(expected), "{expected} missing:\n{table}");
    }
    let all = run_json(&t, &["list"]);
    assert_eq!(all["rows"].as_array().unwrap().len(), 8, "{all}");

    let failed = run_json(&t, &["list", "--state", "failed"]);
    assert_eq!(failed["rows"][0]["task_name"], "bgtasks.fail");
    assert_eq!(failed["rows"][0]["state"], "failed");
    let mail = run_json(&t, &["list", "--queue", "mail", "--search", "[[3]"]);
    assert_eq!(mail["rows"].as_array().unwrap().len(), 1, "{mail}");
    let default = run_json(
        &t,
        &["list", "--queue", "(default)", "--state", "scheduled"],
    );
    assert_eq!(default["rows"][0]["task_name"], "bgtasks.noop");
    let recent = run_json(&t, &["list", "--state", "completed", "--since", "1h"]);
    assert_eq!(recent["rows"].as_array().unwrap().len(), 1);
    let output = run(&t, &["list", "--state", "completed", "--until", "1h"]);
    assert_eq!(code(&output), Some(3), "nothing finished over an hour ago");

    // Pages: two rows, then the rest through the printed cursor.
    let output = run(&t, &["list", "--state", "pending", "--limit", "2"]);
    let text = stdout(&output);
    let more = text
        .lines()
        .find(|l| l.starts_with("more: "))
        .unwrap_or_else(|| panic!("{text}"));
    let cursor = more.rsplit(' ').next().unwrap();
    let page = run_json(&t, &["list", "--state", "pending", "--limit", "2"]);
    assert_eq!(page["next"], cursor);
    let rest = run_json(&t, &["list", "--state", "pending", "--after", cursor]);
    let priorities: Vec<i64> = rest["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(
        priorities,
        vec![2, 1, 0],
        "the page after the first two, in claim order"
    );

    for (args, exit) in [
        (vec!["list", "--queue", "nosuch"], 2),
        (vec!["list", "--state", "done"], 2),
        (vec!["list", "--since", "yesterday"], 2),
        (vec!["list", "--after", "1_2_3"], 2),
        (vec!["list", "--name", "nobody"], 3),
    ] {
        let output = run(&t, &args);
        assert_eq!(code(&output), Some(exit), "{args:?}: {}", stderr(&output));
    }
    t
}

async fn show_prints_a_task_and_its_chain(t: TestDb) -> TestDb {
    let q = queue(&t);
    let task = q
        .enqueue_call("bgtasks.echo", &("x",), &())
        .repeat(60)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let earlier = History {
        params: task.task_params.clone(),
        hash: Some(task.task_hash.clone()),
        error: Some("Traceback\nKeyError: 'x'".into()),
        repeat: 60,
        attempts: Some(2),
        creator: Some((3, 4)),
        ..History::of(&task.task_name)
    }
    .insert(&t)
    .await;

    let output = run(&t, &["show", &task.id.to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "state: pending",
        "repeat: every 60 s",
        "\"x\"",
        "repeat chain",
        &format!("history {earlier}"),
        "KeyError: 'x'",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    let shown = run_json(&t, &["show", &earlier.to_string(), "--history"]);
    assert_eq!(shown["state"], "failed");
    assert_eq!(shown["completed"]["last_error"], "Traceback\nKeyError: 'x'");
    assert_eq!(shown["completed"]["creator_object_id"], 4);
    assert_eq!(shown["chain"]["waiting"][0]["id"], task.id);
    let output = run(&t, &["show", "999999"]);
    assert_eq!(code(&output), Some(3));
    assert!(
        stderr(&output).contains("no task 999999"),
        "{}",
        stderr(&output)
    );
    t
}

async fn stats_reports_queues_throughput_and_runners(t: TestDb) -> TestDb {
    let q = queue(&t);
    q.enqueue_call("bgtasks.noop", &(), &())
        .queue("mail")
        .await
        .unwrap();
    q.enqueue_call("bgtasks.noop", &(), &())
        .schedule(600)
        .await
        .unwrap();
    history(&t, "bgtasks.noop", None, None, TimeDelta::minutes(2)).await;
    history(&t, "bgtasks.noop", None, None, TimeDelta::minutes(3)).await;
    history(
        &t,
        "bgtasks.fail",
        Some("mail"),
        Some("boom"),
        TimeDelta::minutes(1),
    )
    .await;
    history(&t, "bgtasks.noop", None, None, TimeDelta::hours(2)).await;

    let stats = run_json(&t, &["stats", "--minutes", "10"]);
    let count = |queue: Option<&str>, state: &str| -> i64 {
        stats["counts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["queue"].as_str() == queue && c["state"] == state)
            .map(|c| c["count"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(count(Some("mail"), "pending"), 1, "{stats}");
    assert_eq!(count(None, "scheduled"), 1);
    assert_eq!(count(Some("mail"), "failed"), 1);
    let sum = |series: &str| -> i64 {
        stats["throughput"][series]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("succeeded"), sum("failed")),
        (2, 1),
        "only the last 10 minutes"
    );
    assert_eq!(
        stats["throughput"]["succeeded"].as_array().unwrap().len(),
        10
    );
    assert!(stats["oldest_due"]["id"].is_i64());
    assert_eq!(stats["runners_alive"].as_array().unwrap().len(), 0);

    let output = run(&t, &["stats"]);
    let text = stdout(&output);
    assert!(
        text.contains("mail")
            && text.contains("oldest due task")
            && text.contains("runners alive: 0"),
        "{text}"
    );
    t
}

async fn retry_cancel_and_delete_by_id_and_by_filter(t: TestDb) -> TestDb {
    let q = queue(&t);
    let failed = history(
        &t,
        "bgtasks.fail",
        Some("mail"),
        Some("boom"),
        TimeDelta::minutes(1),
    )
    .await;
    let other_failed = history(
        &t,
        "bgtasks.fail",
        None,
        Some("boom"),
        TimeDelta::minutes(1),
    )
    .await;
    let done = history(&t, "bgtasks.noop", None, None, TimeDelta::minutes(1)).await;

    // Retry by id: a succeeded row is not retried.
    let out = run_json(&t, &["retry", &failed.to_string(), &done.to_string()]);
    assert_eq!(
        (out["selected"].as_i64(), out["changed"].as_i64()),
        (Some(2), Some(1)),
        "{out}"
    );
    let new_id = out["ids"][0].as_i64().unwrap() as i32;
    let retried = task_row::Entity::find_by_id(new_id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (retried.attempts, retried.queue.as_deref()),
        (0, Some("mail"))
    );
    assert!(
        completed_task::Entity::find_by_id(failed)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    // Retry by filter, then nothing is left to retry.
    let output = run(&t, &["retry", "--name", "bgtasks.fail"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("retried: 1 of 1"),
        "{}",
        stdout(&output)
    );
    assert!(
        completed_task::Entity::find_by_id(other_failed)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(code(&run(&t, &["retry", "--all"])), Some(3));
    // Naming nothing at all is refused.
    let output = run(&t, &["retry"]);
    assert_eq!(code(&output), Some(2));
    assert!(
        stderr(&output).contains("say which tasks"),
        "{}",
        stderr(&output)
    );

    // Cancel by filter: the waiting tasks of queue mail move to the history.
    q.enqueue_call("bgtasks.noop", &(), &())
        .queue("mail")
        .schedule(600)
        .await
        .unwrap();
    let keep = q
        .enqueue_call("bgtasks.noop", &(), &())
        .queue("other")
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let out = run_json(&t, &["cancel", "--queue", "mail"]);
    assert_eq!(
        out["changed"], 2,
        "the retried task and the scheduled one: {out}"
    );
    let cancelled = completed_task::Entity::find()
        .filter(completed_task::Column::LastError.eq(admin::CANCELLED_ERROR))
        .count(&t.db)
        .await
        .unwrap();
    assert_eq!(cancelled, 2);
    assert!(
        task_row::Entity::find_by_id(keep.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        code(&run(&t, &["cancel", "--queue", "mail"])),
        Some(3),
        "nothing left to cancel"
    );

    // Delete: a task by id, history rows by state, a missing id.
    let output = run(&t, &["delete", &keep.id.to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        task_row::Entity::find_by_id(keep.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    let out = run_json(&t, &["delete", "--state", "failed", "--all"]);
    assert_eq!(out["changed"], 2, "the two cancelled rows: {out}");
    let output = run(&t, &["delete", "--history", &done.to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        completed_task::Entity::find().count(&t.db).await.unwrap(),
        0
    );
    assert_eq!(code(&run(&t, &["delete", "424242"])), Some(3));
    assert_eq!(
        code(&run(&t, &["delete", "--all"])),
        Some(2),
        "deleting by filter needs a --state"
    );
    t
}

async fn commands_refuse_an_unmigrated_database(t: TestDb) -> TestDb {
    let status = run_json(&t, &["migrate", "status"]);
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["applied"] == true),
        "{status}"
    );
    let output = run(&t, &["migrate", "down", "--all"]);
    assert!(output.status.success(), "{}", stderr(&output));
    for args in [
        vec!["list"],
        vec!["stats"],
        vec!["enqueue", "bgtasks.noop"],
        vec!["retry", "--all"],
        vec!["show", "1"],
    ] {
        let output = run(&t, &args);
        assert_eq!(code(&output), Some(5), "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("bgtasks migrate"),
            "{}",
            stderr(&output)
        );
    }
    let status = run_json(&t, &["migrate", "status"]);
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["applied"] == false),
        "{status}"
    );
    let output = run(&t, &["migrate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        code(&run(&t, &["list"])),
        Some(3),
        "migrated again, and empty"
    );

    if t.backend == crate::fixture::Backend::Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sqlite3");
        let output = bgtasks(&t)
            .env("DATABASE_URL", format!("sqlite://{}", missing.display()))
            .arg("list")
            .output()
            .unwrap();
        assert_eq!(code(&output), Some(5), "{}", stderr(&output));
        assert!(!missing.exists(), "a read command creates no database");
    }
    t
}

async fn demo_prints_json_for_scripts(t: TestDb) -> TestDb {
    let out = run_json(&t, &["demo", "--tasks", "20"]);
    assert_eq!(out["enqueued"], 31, "{out}");
    assert_eq!(out["failed"].as_array().unwrap().len(), 2);
    assert!(out["succeeded"].as_i64().unwrap() >= 28);
    t
}

async fn cron_limit_and_policy_commands_change_the_database(t: TestDb) -> TestDb {
    // cron add: bad input exits 2 and stores nothing.
    for bad in [
        vec![
            "cron",
            "add",
            "nightly",
            "--cron",
            "nightly",
            "--task",
            "bgtasks.noop",
        ],
        vec![
            "cron",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--task",
            "bgtasks.noop",
            "--timezone",
            "Moon/Base",
        ],
        vec![
            "cron",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--task",
            "no.such.task",
        ],
        vec![
            "cron",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--task",
            "bgtasks.noop",
            "--missed",
            "sometimes",
        ],
    ] {
        let output = run(&t, &bad);
        assert_eq!(code(&output), Some(2), "{bad:?}: {}", stderr(&output));
    }
    assert!(
        background_tasks::cron::list(&t.db)
            .await
            .unwrap()
            .is_empty()
    );

    let out = run_json(
        &t,
        &[
            "cron",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--task",
            "bgtasks.noop",
            "--timezone",
            "America/New_York",
            "--queue",
            "night",
            "--priority",
            "-2",
            "--missed",
            "run-once",
        ],
    );
    assert_eq!(out["result"], "created");
    let stored = background_tasks::cron::get(&t.db, "nightly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            stored.timezone.as_str(),
            stored.queue.as_deref(),
            stored.priority,
            stored.missed.as_str()
        ),
        ("America/New_York", Some("night"), -2, "run_once")
    );
    let listed = run(&t, &["cron", "list"]);
    assert!(listed.status.success());
    assert!(stdout(&listed).contains("nightly") && stdout(&listed).contains("active"));
    assert_eq!(
        run_json(&t, &["cron", "pause", "nightly"])["action"],
        "paused"
    );
    assert!(
        background_tasks::cron::get(&t.db, "nightly")
            .await
            .unwrap()
            .unwrap()
            .paused
    );
    assert_eq!(
        run_json(&t, &["cron", "resume", "nightly"])["action"],
        "resumed"
    );
    assert!(
        !background_tasks::cron::get(&t.db, "nightly")
            .await
            .unwrap()
            .unwrap()
            .paused
    );
    assert_eq!(
        run_json(&t, &["cron", "remove", "nightly"])["action"],
        "removed"
    );
    assert_eq!(code(&run(&t, &["cron", "remove", "nightly"])), Some(3));

    // limit set / list / remove.
    assert_eq!(code(&run(&t, &["limit", "set", "mail", "0"])), Some(2));
    run_json(&t, &["limit", "set", "mail", "3"]);
    let limits = admin::queue_limits(&t.db).await.unwrap();
    assert_eq!(
        (limits[0].queue.as_str(), limits[0].max_running),
        ("mail", 3)
    );
    assert_eq!(
        run_json(&t, &["limit", "list"])["limits"][0]["max_running"],
        3
    );
    run_json(&t, &["limit", "remove", "mail"]);
    assert_eq!(code(&run(&t, &["limit", "remove", "mail"])), Some(3));

    // limit rate / list / remove-rate; bad values refused, nothing written.
    assert_eq!(code(&run(&t, &["limit", "rate", "api", "0", "1"])), Some(2));
    assert_eq!(
        code(&run(&t, &["limit", "rate", "api", "5", "-1"])),
        Some(2)
    );
    assert_eq!(code(&run(&t, &["limit", "rate", "api", "5", "0"])), Some(2));
    assert_eq!(
        code(&run(&t, &["limit", "rate", "api", "-5", "1"])),
        Some(2)
    );
    assert!(
        run_json(&t, &["limit", "list"])["rate_limits"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        run_json(&t, &["limit", "rate", "api", "5", "0.5"])["period_ms"],
        500
    );
    let listed = run_json(&t, &["limit", "list"]);
    assert_eq!(listed["rate_limits"][0]["queue"], "api");
    assert_eq!(listed["rate_limits"][0]["max_starts"], 5);
    assert_eq!(listed["rate_limits"][0]["started_in_window"], 0);
    run_json(&t, &["limit", "remove-rate", "api"]);
    assert_eq!(code(&run(&t, &["limit", "remove-rate", "api"])), Some(3));

    // Per-enqueue policies.
    let out = run_json(
        &t,
        &[
            "enqueue",
            "bgtasks.noop",
            "--max-attempts",
            "3",
            "--max-run-time",
            "90s",
            "--keep-history",
            "failures-only",
        ],
    );
    assert_eq!(
        out["task"]["policy"],
        r#"{"max_attempts":3,"max_run_time_ms":90000,"keep_history":"failures_only"}"#
    );
    let before = task_count(&t).await;
    assert_eq!(
        code(&run(
            &t,
            &["enqueue", "bgtasks.noop", "--keep-history", "sometimes"]
        )),
        Some(2)
    );
    assert_eq!(task_count(&t).await, before, "nothing written");
    t
}

/// Runs `bgtasks ARGS` with `input` on its stdin.
fn run_with_stdin(t: &TestDb, args: &[&str], input: &str) -> Output {
    let mut child = bgtasks(t)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    // Written from another thread, so a large input cannot fill the pipe
    // while the child waits for us to read its output.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

/// The rows of `background_task`, oldest id first.
async fn rows(t: &TestDb) -> Vec<task_row::Model> {
    task_row::Entity::find()
        .order_by_asc(task_row::Column::Id)
        .all(&t.db)
        .await
        .unwrap()
}

async fn enqueue_takes_negative_schedules(t: TestDb) -> TestDb {
    for schedule in [
        vec!["--schedule", "-60"],
        vec!["--schedule=-60"],
        vec!["--schedule", "-5m"],
    ] {
        let mut args = vec!["enqueue", "bgtasks.noop"];
        args.extend(&schedule);
        let out = run_json(&t, &args);
        let id = out["task"]["id"].as_i64().unwrap() as i32;
        let row = task_row::Entity::find_by_id(id)
            .one(&t.db)
            .await
            .unwrap()
            .unwrap();
        let ago = Utc::now() - row.run_at;
        assert!(
            ago >= TimeDelta::seconds(59) && ago < TimeDelta::minutes(6),
            "{schedule:?}: run_at {} is {ago} ago",
            row.run_at
        );
    }
    t
}

async fn enqueue_from_file_writes_every_line_as_stated(t: TestDb) -> TestDb {
    let until = (Utc::now() + TimeDelta::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    // A waiting copy, which the line with remove_existing deletes first.
    let stale = queue(&t)
        .enqueue_call("bgtasks.echo", &(7,), &())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let full = format!(
        r#"{{"name": "bgtasks.echo", "args": ["hé 𝄞", 123456789012345678901234567890], "kwargs": {{"to": "ada", "n": 1.5}}, "priority": -3, "queue": "mail", "schedule": "2h", "verbose_name": "Say hi", "repeat": "15m", "repeat_until": "{until}", "creator": "12:34", "max_attempts": 3, "max_run_time": 90, "keep_history": "failures-only"}}"#
    );
    let lines = [
        full.as_str(),
        r#"{"name": "bgtasks.noop", "schedule": -60, "unique": true}"#,
        r#"{"name": "bgtasks.noop", "schedule": -60, "unique": true}"#,
        "",
        r#"{"name": "django.only", "allow_unknown": true, "kwargs": {"b": 2, "a": 1}}"#,
        r#"{"name": "bgtasks.echo", "args": [7], "remove_existing": true, "creator": {"content_type_id": 5, "object_id": 6}}"#,
        r#"{"name": "bgtasks.echo", "args": [8], "queue": null}"#,
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    // Flags are the default of every line that does not set its own.
    let out = run_json(
        &t,
        &[
            "enqueue",
            "--from",
            file.to_str().unwrap(),
            "--priority",
            "4",
            "--queue",
            "bulk",
        ],
    );
    assert_eq!(
        (
            &out["result"],
            &out["lines"],
            &out["written"],
            &out["already_waiting"],
            &out["bad_lines"]
        ),
        (
            &json!("enqueued"),
            &json!(7),
            &json!(5),
            &json!(1),
            &json!(0)
        ),
        "{out}"
    );
    let stored = rows(&t).await;
    let names: Vec<&str> = stored.iter().map(|row| row.task_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bgtasks.echo",
            "bgtasks.noop",
            "django.only",
            "bgtasks.echo",
            "bgtasks.echo"
        ],
        "in the file's order, the unique duplicate and the removed copy left out"
    );
    assert!(stored.iter().all(|row| row.id != stale.id), "removed first");

    // The full line is stored exactly as `bgtasks enqueue` with the same
    // flags stores it.
    let reference = run_json(
        &t,
        &[
            "enqueue",
            "bgtasks.echo",
            "--args",
            r#"["hé 𝄞", 123456789012345678901234567890]"#,
            "--kwargs",
            r#"{"to": "ada", "n": 1.5}"#,
            "--priority",
            "-3",
            "--queue",
            "mail",
            "--schedule",
            "2h",
            "--verbose-name",
            "Say hi",
            "--repeat",
            "15m",
            "--repeat-until",
            &until,
            "--creator",
            "12:34",
            "--max-attempts",
            "3",
            "--max-run-time",
            "90",
            "--keep-history",
            "failures-only",
        ],
    );
    let reference_id = reference["task"]["id"].as_i64().unwrap() as i32;
    let reference = task_row::Entity::find_by_id(reference_id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    let from_file = &stored[0];
    assert_eq!(
        from_file.task_params,
        r#"[["h\u00e9 \ud834\udd1e", 123456789012345678901234567890], {"n": 1.5, "to": "ada"}]"#
    );
    let fields = |row: &task_row::Model| {
        (
            row.task_params.clone(),
            row.task_hash.clone(),
            row.priority,
            row.queue.clone(),
            row.verbose_name.clone(),
            row.repeat,
            row.repeat_until,
            (row.creator_content_type_id, row.creator_object_id),
            row.policy.clone(),
            row.unique_key.clone(),
        )
    };
    assert_eq!(fields(from_file), fields(&reference));
    assert!(
        (from_file.run_at - reference.run_at).num_seconds().abs() < 60
            && (from_file.run_at - Utc::now() - TimeDelta::hours(2))
                .num_seconds()
                .abs()
                < 60,
        "{} / {}",
        from_file.run_at,
        reference.run_at
    );

    let noop = &stored[1];
    let ago = Utc::now() - noop.run_at;
    assert!(
        ago >= TimeDelta::seconds(59) && ago < TimeDelta::minutes(5),
        "schedule -60 is a minute ago: {ago}"
    );
    assert!(noop.unique_key.is_some());
    assert_eq!(
        (noop.priority, noop.queue.as_deref()),
        (4, Some("bulk")),
        "the flags apply where the line sets nothing"
    );
    let django = &stored[2];
    assert_eq!(django.task_params, r#"[[], {"a": 1, "b": 2}]"#);
    let replaced = &stored[3];
    assert_eq!(replaced.task_params, "[[7], {}]");
    assert_eq!(
        (replaced.creator_content_type_id, replaced.creator_object_id),
        (Some(5), Some(6))
    );
    assert_eq!(
        stored[4].queue.as_deref(),
        Some("bulk"),
        "null sets nothing"
    );
    t
}

async fn enqueue_from_stdin_streams_batches_in_file_order(t: TestDb) -> TestDb {
    // More than two INSERT batches of 1,000, with lines that remove the
    // waiting copy written by an earlier line of the same batch and of an
    // earlier batch: each is removed as one enqueue after the other would.
    let mut input = String::new();
    let mut expected: Vec<String> = Vec::new();
    for i in 0..2_502 {
        let (n, remove) = match i {
            11 => (5, true),
            2_501 => (3, true),
            i => (i, false),
        };
        input += &format!(
            "{{\"name\": \"bgtasks.echo\", \"args\": [{n}], \"remove_existing\": {remove}}}\n"
        );
        let params = format!("[[{n}], {{}}]");
        if remove {
            expected.retain(|p| *p != params);
        }
        expected.push(params);
    }
    let output = run_with_stdin(&t, &["enqueue", "--from", "-", "--atomic"], &input);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("enqueued 2502 task(s) from stdin (2502 lines)"),
        "{}",
        stdout(&output)
    );
    let params: Vec<String> = rows(&t)
        .await
        .into_iter()
        .map(|row| row.task_params)
        .collect();
    assert_eq!(params.len(), expected.len());
    assert!(params == expected, "rows are not in the file's order");
    t
}

async fn enqueue_from_reports_every_bad_line_and_atomic_writes_nothing(t: TestDb) -> TestDb {
    let lines = [
        r#"{"name": "bgtasks.echo", "args": [1]}"#,
        r#"{"name": "bgtasks.echo", "args": [1,"#,
        r#"{"name": "bgtasks.echo", "args": [3]}"#,
        r#"{"name": "no.such.task"}"#,
        r#"{"name": "bgtasks.noop", "priority": "high"}"#,
        r#"{"name": "bgtasks.noop", "schedule": "soonish"}"#,
        r#"{"name": "bgtasks.noop", "colour": "red"}"#,
        r#"[1, 2]"#,
        r#"{"name": "bgtasks.noop", "queue": ""}"#,
        r#"{"name": "bgtasks.echo", "args": [10]}"#,
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let file = file.to_str().unwrap();
    let expected = [
        (2, "not valid JSON"),
        (4, "no task named \"no.such.task\""),
        (5, "priority:"),
        (6, "schedule:"),
        (7, "unknown key \"colour\""),
        (8, "one JSON object"),
        (9, "queue"),
    ];
    let check_report = |output: &Output| {
        assert_eq!(code(output), Some(2), "{}", stderr(output));
        let err = stderr(output);
        for (line, says) in expected {
            let reported = err
                .lines()
                .find(|l| l.starts_with(&format!("bgtasks: line {line}: ")))
                .unwrap_or_else(|| panic!("line {line} is not reported:\n{err}"));
            assert!(reported.contains(says), "{reported}");
        }
        for good in [1, 3, 10] {
            assert!(!err.contains(&format!("line {good}:")), "{err}");
        }
        assert!(err.contains("7 of the 10 lines"), "{err}");
    };

    let output = run(&t, &["enqueue", "--from", file, "--atomic"]);
    check_report(&output);
    assert!(stderr(&output).contains("nothing was written"));
    assert_eq!(task_count(&t).await, 0, "--atomic writes nothing");
    let output = run(&t, &["--json", "enqueue", "--from", file, "--atomic"]);
    check_report(&output);
    let out: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let listed: Vec<i64> = out["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bad| bad["line"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        (&out["result"], &out["written"]),
        (&json!("nothing_written"), &json!(0))
    );
    assert_eq!(task_count(&t).await, 0);

    // Without --atomic the good lines are written, and the exit code still
    // says some were not.
    let output = run(&t, &["enqueue", "--from", file]);
    check_report(&output);
    assert!(stderr(&output).contains("were skipped"));
    let params: Vec<String> = rows(&t).await.into_iter().map(|r| r.task_params).collect();
    assert_eq!(params, ["[[1], {}]", "[[3], {}]", "[[10], {}]"]);

    // Many bad lines: the first 100 are listed, all are counted.
    let many: String = (0..150)
        .map(|i| format!("{{\"name\": \"x{i}\"}}\n"))
        .collect();
    let output = run_with_stdin(&t, &["enqueue", "--from", "-", "--atomic"], &many);
    assert_eq!(code(&output), Some(2));
    let err = stderr(&output);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("bgtasks: line "))
            .count(),
        100
    );
    assert!(
        err.contains("150 of the 150 lines") && err.contains("the first 100"),
        "{err}"
    );

    // A bad flag is one error, before any line is read.
    let output = run(&t, &["enqueue", "--from", file, "--schedule", "soonish"]);
    assert_eq!(code(&output), Some(2));
    assert!(!stderr(&output).contains("line "), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--schedule"),
        "{}",
        stderr(&output)
    );
    let output = run(&t, &["enqueue", "--from", "no/such/file.jsonl"]);
    assert_eq!(code(&output), Some(2));
    assert_eq!(task_count(&t).await, 3, "nothing more was written");

    // Unknown names follow --allow-unknown.
    let output = run_with_stdin(
        &t,
        &["enqueue", "--from", "-", "--allow-unknown"],
        "{\"name\": \"no.such.task\"}\n",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(task_count(&t).await, 4);
    t
}

/// A TCP proxy to the test's database server that counts the connections
/// made through it: each is one connection set-up (and, with TLS, one
/// handshake), whatever the client does inside it.
struct CountingProxy {
    url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    /// A proxy to the server of `url`, and `url` through it.
    fn new(url: &str) -> Self {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (user, host) = authority
            .rsplit_once('@')
            .map_or(("", authority), |(user, host)| (user, host));
        let default_port = if scheme.starts_with("postgres") {
            5432
        } else {
            3306
        };
        let server = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:{default_port}")
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let proxy = Self {
            url: format!("{scheme}://{at}127.0.0.1:{port}{path}"),
            accepted: accepted.clone(),
        };
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(upstream) = std::net::TcpStream::connect(&server) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        std::io::copy(&mut from, &mut to).ok();
                        to.shutdown(std::net::Shutdown::Both).ok();
                    });
                }
            }
        });
        proxy
    }

    /// Connections made so far. Called after the client exited: every
    /// connection it made was accepted to carry its statements.
    fn count(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn each_command_opens_one_connection(t: TestDb) -> TestDb {
    let proxy = CountingProxy::new(&t.url);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(
        &file,
        "{\"name\": \"bgtasks.noop\"}\n{\"name\": \"bgtasks.echo\", \"args\": [1]}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["enqueue", "bgtasks.noop"],
        vec!["enqueue", "bgtasks.noop", "--remove-existing"],
        vec!["enqueue", "--from", file],
        vec!["enqueue", "--from", file, "--atomic"],
        vec!["list"],
    ] {
        let before = proxy.count();
        let output = bgtasks(&t)
            .env("DATABASE_URL", &proxy.url)
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        assert_eq!(
            proxy.count() - before,
            1,
            "{args:?} set up {} connections",
            proxy.count() - before
        );
    }
    assert_eq!(
        task_count(&t).await,
        5,
        "the commands wrote through the proxy"
    );
    t
}
