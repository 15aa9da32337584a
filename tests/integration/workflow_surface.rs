//! Workflows, batches and limits where a user looks (issue 20, point 5):
//! created through `bgtasks workflow create` and `POST /api/workflows`,
//! watched through `bgtasks workflow show`, `/api/workflows/{name}`,
//! `/api/batches/{name}` and the dashboard's pages as a runner executes
//! them; bad input refused with nothing written; hostile names shown as
//! text; rate-limit use shown.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, test};
use background_tasks::web::{Access, Dashboard};
use background_tasks::{Config, Queue, Registry, Runner, admin, builtin, completed_task};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, Statement};
use serde_json::{Value, json};

use crate::cli::bgtasks;
use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    a_workflow_from_a_file_shows_its_steps_change_as_they_run,
    the_api_creates_a_batch_and_shows_its_progress_after_failures,
    bad_workflows_and_batches_are_refused_and_nothing_is_written,
    hostile_names_render_as_text,
    limits_show_their_use,
);

const WAIT: Duration = Duration::from_secs(60);
const MOUNT: &str = "/dash";

fn config() -> Config {
    Config::builder()
        .run_async(true)
        .async_threads(2)
        .sleep(Duration::from_millis(100))
        .max_attempts(1)
        .build()
        .unwrap()
}

/// A queue of the built-in tasks on a pool of its own (see
/// `workflows::own_queue`): the runner's connections die with it.
async fn own_queue(t: &TestDb) -> Queue {
    let registry = Registry::new();
    builtin::register(&registry);
    let db = background_tasks::db::connect(Some(&t.url)).await.unwrap();
    Queue::with_parts(db, registry, config())
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Nothing of a workflow was written.
async fn nothing_written(db: &DatabaseConnection) {
    for table in [
        "background_task",
        "background_task_step",
        "background_task_dependency",
    ] {
        assert_eq!(
            count(db, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table} is empty"
        );
    }
}

/// How the history says task `id` ended: succeeded, failed or cancelled.
async fn ended(db: &DatabaseConnection, id: i64) -> Option<&'static str> {
    let rows = completed_task::Entity::find().all(db).await.unwrap();
    rows.into_iter()
        .find(|row| row.task_id == Some(i32::try_from(id).unwrap()))
        .map(|row| {
            if row.cancelled_at.is_some() {
                "cancelled"
            } else if row.failed_at.is_some() {
                "failed"
            } else {
                "succeeded"
            }
        })
}

fn run(mut command: std::process::Command, stdin: Option<&str>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `bgtasks workflow show NAME --json`: the state of each step by name.
fn states(t: &TestDb, name: &str) -> Value {
    let mut command = bgtasks(t);
    command.args(["--json", "workflow", "show", name]);
    let shown = stdout_json(&run(command, None));
    let mut states = serde_json::Map::new();
    for step in shown["steps"].as_array().unwrap() {
        states.insert(
            step["step"].as_str().unwrap().to_owned(),
            step["state"].clone(),
        );
    }
    Value::Object(states)
}

async fn a_workflow_from_a_file_shows_its_steps_change_as_they_run(t: TestDb) -> TestDb {
    let name = "nightly-2026-12-03";
    let file = std::env::temp_dir().join(format!("bgtasks-workflow-{}.json", std::process::id()));
    std::fs::write(
        &file,
        json!({
            "name": name,
            "steps": [
                {"name": "fetch", "task": "bgtasks.echo", "params": [["eu"], {}]},
                {"name": "check", "task": "bgtasks.reject", "after": ["fetch"]},
                {"name": "publish", "task": "bgtasks.noop", "after": ["check"]},
                {"name": "report", "task": "bgtasks.noop", "after": ["check"], "run_anyway": true},
            ]
        })
        .to_string(),
    )
    .unwrap();
    let mut command = bgtasks(&t);
    command
        .arg("--json")
        .args(["workflow", "create"])
        .arg(&file);
    let created = stdout_json(&run(command, None));
    std::fs::remove_file(&file).unwrap();
    let ids = &created["ids"];
    assert_eq!(ids.as_object().unwrap().len(), 4, "{created}");

    // Before any runner: the first step is queued, the others wait.
    let before = states(&t, name);
    assert_eq!(
        before,
        json!({"fetch": "queued", "check": "waiting", "publish": "waiting", "report": "waiting"})
    );
    let mut command = bgtasks(&t);
    command.args(["--json", "workflow", "show", name]);
    let shown = stdout_json(&run(command, None));
    let check = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "check")
        .unwrap();
    assert_eq!(check["waiting_on"], 1);
    assert_eq!(check["after"][0]["step"], "fetch");
    assert_eq!(check["task_name"], "bgtasks.reject");

    // A runner executes it: the failed step cancels what needs it, and
    // the step that runs anyway runs.
    let runner = Runner::start(own_queue(&t).await).unwrap();
    let report = ids["report"].as_i64().unwrap();
    let publish = ids["publish"].as_i64().unwrap();
    let db = t.db.clone();
    wait_for("report ran and publish was cancelled", WAIT, || {
        let db = db.clone();
        async move {
            ended(&db, report).await == Some("succeeded")
                && ended(&db, publish).await == Some("cancelled")
        }
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        ended(&t.db, ids["check"].as_i64().unwrap()).await,
        Some("failed")
    );

    let after = states(&t, name);
    assert_eq!(
        after,
        json!({"fetch": "succeeded", "check": "failed", "publish": "cancelled", "report": "succeeded"})
    );
    let mut command = bgtasks(&t);
    command.args(["--json", "workflow", "show", name]);
    let shown = stdout_json(&run(command, None));
    let check = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "check")
        .unwrap();
    assert!(
        check["last_error"]
            .as_str()
            .unwrap()
            .contains("always fails permanently"),
        "{check}"
    );

    // The list counts the steps per state.
    let mut command = bgtasks(&t);
    command.args(["--json", "workflow", "list"]);
    let listed = stdout_json(&run(command, None));
    let workflow = &listed["workflows"][0];
    assert_eq!(workflow["name"], name);
    assert_eq!(workflow["steps"], 4);
    assert_eq!(
        workflow["counts"],
        json!({"waiting": 0, "queued": 0, "running": 0, "succeeded": 2, "failed": 1, "cancelled": 1, "unknown": 0})
    );
    assert!(workflow["newest_activity"].is_string());

    // Its people's view says the same.
    let mut command = bgtasks(&t);
    command.args(["workflow", "show", name]);
    let text = run(command, None);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("publish") && text.contains("cancelled"),
        "{text}"
    );

    // Pruning the history forgets the steps with it.
    admin::delete_completed(
        &t.db,
        &completed_task::Entity::find()
            .all(&t.db)
            .await
            .unwrap()
            .iter()
            .map(|row| row.id)
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM background_task_step").await,
        0
    );
    let mut command = bgtasks(&t);
    command.args(["workflow", "show", name]);
    assert_eq!(run(command, None).status.code(), Some(3));
    t
}

fn dashboard(queue: &Queue) -> Dashboard {
    Dashboard::new(queue.clone()).authorize(|_| Access::Full)
}

async fn get<S, B>(app: &S, path: &str) -> (StatusCode, String)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = test::TestRequest::get()
        .uri(&format!("{MOUNT}{path}"))
        .to_request();
    let response = test::call_service(app, request).await;
    let status = response.status();
    let body = test::read_body(response).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_json<S, B>(app: &S, path: &str) -> (StatusCode, Value)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let (status, body) = get(app, path).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn post<S, B>(app: &S, path: &str, body: impl Into<String>) -> (StatusCode, Value)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = test::TestRequest::post()
        .uri(&format!("{MOUNT}{path}"))
        .insert_header(("Content-Type", "application/json"))
        .set_payload(body.into())
        .to_request();
    let response = test::call_service(app, request).await;
    let status = response.status();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn the_api_creates_a_batch_and_shows_its_progress_after_failures(t: TestDb) -> TestDb {
    let queue = own_queue(&t).await;
    let app = test::init_service(App::new().service(dashboard(&queue).scope(MOUNT))).await;

    // A workflow through the API.
    let (status, created) = post(
        &app,
        "/api/workflows",
        json!({"name": "api-flow", "steps": [
            {"name": "a", "task": "bgtasks.noop"},
            {"name": "b", "task": "bgtasks.echo", "params": {"to": "ada"}, "after": ["a"], "priority": 3},
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let b = created["ids"]["b"].as_i64().unwrap();
    let (status, shown) = get_json(&app, "/api/workflows/api-flow").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["total"], 2);
    assert_eq!(shown["steps"][1]["step"], "b");
    assert_eq!(shown["steps"][1]["task_id"], b);
    assert_eq!(shown["steps"][1]["state"], "waiting");

    // A batch with a failure, and a callback on finish.
    let (status, created) = post(
        &app,
        "/api/batches",
        json!({"name": "newsletter-42", "tasks": [
            {"task": "bgtasks.noop"},
            {"task": "bgtasks.reject"},
            {"task": "bgtasks.echo", "args": [1]},
        ], "on_finish": {"task": "bgtasks.noop"}})
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["tasks"].as_array().unwrap().len(), 3);
    let callback = created["callback"].as_i64().unwrap();
    let (_, progress) = get_json(&app, "/api/batches/newsletter-42").await;
    assert_eq!(progress["total"], 3);
    assert_eq!(progress["pending"], 3);
    assert_eq!(progress["callback"]["state"], "waiting");
    assert_eq!(progress["callback_kind"], "on_finish");

    // The runner on a pool of its own: connections its executors open
    // belong to their runtimes, which end with the runner.
    let runner = Runner::start(own_queue(&t).await).unwrap();
    let db = t.db.clone();
    wait_for("the callback and the workflow ran", WAIT, || {
        let db = db.clone();
        async move {
            ended(&db, callback).await == Some("succeeded") && ended(&db, b).await.is_some()
        }
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;

    let (_, progress) = get_json(&app, "/api/batches/newsletter-42").await;
    assert_eq!(progress["total"], 3, "{progress}");
    assert_eq!(progress["succeeded"], 2, "{progress}");
    assert_eq!(progress["failed"], 1, "{progress}");
    assert_eq!(progress["cancelled"], 0, "{progress}");
    assert_eq!(progress["pending"], 0, "{progress}");
    assert_eq!(progress["callback"]["state"], "succeeded", "{progress}");
    let (_, shown) = get_json(&app, "/api/workflows/api-flow").await;
    assert_eq!(shown["counts"]["succeeded"], 2, "{shown}");

    // The list pages by name.
    let (_, first) = get_json(&app, "/api/workflows?limit=1").await;
    assert_eq!(first["workflows"][0]["name"], "api-flow");
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = get_json(&app, &format!("/api/workflows?limit=1&after={next}")).await;
    assert_eq!(second["workflows"][0]["name"], "batch:newsletter-42");
    assert_eq!(second["workflows"][0]["batch"], true);
    assert!(second["next"].is_null());

    // The pages show the same.
    let (status, page) = get(&app, "/batches/newsletter-42").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<progress"), "{page}");
    assert!(page.contains("on_finish"), "{page}");
    let (status, page) = get(&app, "/workflows").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("api-flow") && page.contains("batch:newsletter-42"));
    let (status, _) = get_json(&app, "/api/batches/no-such-batch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t
}

async fn bad_workflows_and_batches_are_refused_and_nothing_is_written(t: TestDb) -> TestDb {
    let queue = own_queue(&t).await;
    let app = test::init_service(App::new().service(dashboard(&queue).scope(MOUNT))).await;
    let long = "s".repeat(10_000);
    let workflows = [
        (
            json!({"name": "w", "steps": [
                {"name": "a", "task": "bgtasks.noop", "after": ["b"]},
                {"name": "b", "task": "bgtasks.noop", "after": ["a"]}]})
            .to_string(),
            "cycle",
        ),
        (
            json!({"name": "w", "steps": [
                {"name": "a", "task": "bgtasks.noop"},
                {"name": "b", "task": "bgtasks.noop", "after": ["nope"]}]})
            .to_string(),
            "not one of its steps",
        ),
        (
            json!({"name": "w", "steps": [
                {"name": "a", "task": "bgtasks.noop"},
                {"name": "b", "task": "no.such.task"}]})
            .to_string(),
            "allow_unknown",
        ),
        (
            json!({"name": "w", "steps": [{"name": long, "task": "bgtasks.noop"}]}).to_string(),
            "10000 characters",
        ),
        (
            json!({"name": "w", "steps": [{"name": "a", "task": "bgtasks.noop", "params": 7}]})
                .to_string(),
            "[args, kwargs]",
        ),
        (
            json!({"name": "w", "steps": [{"name": "a\u{0}", "task": "bgtasks.noop"}]}).to_string(),
            "NUL",
        ),
        ("{\"name\": \"w\", \"steps\": [".to_owned(), "not valid"),
        ("[1, 2]".to_owned(), "not valid"),
    ];
    for (body, says) in &workflows {
        let (status, answer) = post(&app, "/api/workflows", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{error:?} says {says:?}");
    }
    let batches = [
        (json!({"name": "b", "tasks": []}).to_string(), "no task"),
        (
            json!({"name": "b", "tasks": [{"task": "bgtasks.noop"}],
                   "on_finish": {"task": "bgtasks.noop"}, "on_success": {"task": "bgtasks.noop"}})
            .to_string(),
            "not both",
        ),
        (
            json!({"name": "b", "tasks": [{"task": "bgtasks.noop", "schedule": "soon"}]})
                .to_string(),
            "not a time",
        ),
        ("not json".to_owned(), "not valid"),
    ];
    for (body, says) in &batches {
        let (status, answer) = post(&app, "/api/batches", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{error:?} says {says:?}");
    }
    nothing_written(&t.db).await;

    // The command line refuses the same with exit code 2.
    for (body, says) in workflows.iter().take(4) {
        let mut command = bgtasks(&t);
        command.args(["workflow", "create", "-"]);
        let output = run(command, Some(body));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr:?} says {says:?}");
    }
    let mut command = bgtasks(&t);
    command.args(["batch", "create", "-"]);
    let output = run(command, Some("{\"name\": \"b\", \"tasks\": []}"));
    assert_eq!(output.status.code(), Some(2));
    let mut command = bgtasks(&t);
    command.args(["workflow", "create", "/no/such/file.json"]);
    assert_eq!(run(command, None).status.code(), Some(2));
    nothing_written(&t.db).await;
    t
}

async fn hostile_names_render_as_text(t: TestDb) -> TestDb {
    let queue = own_queue(&t).await;
    let app = test::init_service(App::new().service(dashboard(&queue).scope(MOUNT))).await;
    let name = "<script>alert(1)</script>&\"'?#%";
    let step = "<img src=x onerror=alert(2)>";
    let (status, created) = post(
        &app,
        "/api/workflows",
        json!({"name": name, "steps": [
            {"name": step, "task": "bgtasks.noop"},
            {"name": "after", "task": "bgtasks.noop", "after": [step]}]})
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, list) = get(&app, "/workflows").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!list.contains("<script>alert"), "{list}");
    assert!(
        list.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{list}"
    );
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (status, page) = get(&app, &format!("/workflows/{encoded}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    let (status, shown) = get_json(&app, &format!("/api/workflows/{encoded}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["name"], name);
    assert_eq!(shown["steps"][1]["after"][0]["step"], step);
    t
}

async fn limits_show_their_use(t: TestDb) -> TestDb {
    let queue = own_queue(&t).await;
    admin::set_rate_limit(&t.db, "metered", 10, Duration::from_secs(3_600))
        .await
        .unwrap();
    admin::set_queue_limit(&t.db, "narrow", 2).await.unwrap();
    // A key policy, with one key's tasks waiting (a hostile key shows as
    // text).
    admin::set_key_limit(
        &t.db,
        "tenants",
        admin::KeyLimit::fair()
            .max_running(2)
            .rate(5, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        queue
            .enqueue_spec(
                queue.db(),
                background_tasks::TaskSpec::call("bgtasks.noop", &(), &(), queue.registry())
                    .queue("tenants")
                    .key("<b>acme</b>")
                    .schedule(3_600),
            )
            .await
            .unwrap();
    }
    for _ in 0..3 {
        queue
            .enqueue_spec(
                queue.db(),
                background_tasks::TaskSpec::call("bgtasks.noop", &(), &(), queue.registry())
                    .queue("metered"),
            )
            .await
            .unwrap();
    }
    // The runner on a pool of its own: connections its executors open
    // belong to their runtimes, which end with the runner.
    let runner = Runner::start(own_queue(&t).await).unwrap();
    let db = t.db.clone();
    wait_for("the metered tasks ran", WAIT, || {
        let db = db.clone();
        async move { completed_task::Entity::find().all(&db).await.unwrap().len() == 3 }
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;

    let app = test::init_service(App::new().service(dashboard(&queue).scope(MOUNT))).await;
    let (status, limits) = get_json(&app, "/api/limits").await;
    assert_eq!(status, StatusCode::OK, "{limits}");
    assert_eq!(
        limits["rate"],
        json!([{"queue": "metered", "max_starts": 10, "period_seconds": 3600.0, "started_in_window": 3}])
    );
    assert_eq!(
        limits["concurrency"],
        json!([{"queue": "narrow", "max_running": 2, "running": 0}])
    );
    assert_eq!(
        limits["keys"],
        json!([{"queue": "tenants", "max_running": 2, "max_starts": 5, "period_seconds": 60.0,
            "keys": [{"key": "<b>acme</b>", "running": 0, "waiting": 2, "started_in_window": 0}]}])
    );
    let (status, page) = get(&app, "/limits").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&lt;b&gt;acme&lt;/b&gt;") && !page.contains("<b>acme</b>"),
        "{page}"
    );
    assert!(page.contains("at most 2 running"), "{page}");
    assert!(
        page.contains("metered") && page.contains("narrow"),
        "{page}"
    );
    assert!(page.contains("<meter value=\"3\" max=\"10\""), "{page}");
    t
}
