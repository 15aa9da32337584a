//! The web surface and the command line against hostile input, from the
//! outside: real HTTP requests to the dashboard's actix service (foreign
//! `Host` and `Origin` headers, forwarded headers from strangers, media
//! types that only start like JSON, return addresses that leave the
//! dashboard, values no database stores, times that overflow), and the
//! `bgtasks` binary with such flags. Every case must end in a clear 4xx
//! (or exit 2) and an unchanged database; the property tests at the end
//! send generated query strings, forms and JSON bodies and require that
//! none gets a 500 or panics.

use std::fmt::Debug;
use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, test};
use background_tasks::web::{Access, Dashboard};
use background_tasks::{
    Config, Creator, Queue, Registry, TaskSpec, admin, builtin, completed_task, cron, task_row,
};
use chrono::Utc;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::cli::bgtasks;
use crate::fixture::{TestDb, wait_for};
use crate::rows::History;
use crate::tasks::Add;

on_all_backends!(
    rebinding_hosts_are_refused_and_forwarded_hosts_need_a_trusted_proxy,
    writes_need_this_exact_origin_and_exactly_json,
    return_addresses_outside_the_dashboard_are_refused_before_acting,
    values_the_database_cannot_store_are_answered_400,
    database_errors_never_reach_a_response,
    times_from_input_never_overflow_on_the_web,
    times_and_durations_never_overflow_on_the_command_line,
    times_outside_1970_to_2038_are_stored_and_found,
    search_ignores_case_on_every_backend,
    running_tasks_are_cancelled_not_deleted,
    dashboard_takes_its_password_from_a_file_and_answers_only_allowed_hosts,
    generated_queries_never_get_a_500,
    generated_forms_never_get_a_500_and_refusals_change_nothing,
    generated_json_writes_never_get_a_500_and_refusals_change_nothing,
    generated_bulk_enqueues_store_what_single_enqueues_store,
);

const MOUNT: &str = "/dash";

fn full(queue: &Queue) -> Dashboard {
    Dashboard::new(queue.clone()).authorize(|_| Access::Full)
}

async fn app(
    dashboard: Dashboard,
) -> impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    test::init_service(App::new().service(dashboard.scope(MOUNT))).await
}

/// Sends `request`: its status and body.
async fn call<S, B>(app: &S, request: Request) -> (StatusCode, String)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, request).await;
    let status = response.status();
    let body = test::read_body(response).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get().uri(&format!("{MOUNT}{path}"))
}

/// A JSON action as a browser on this dashboard's origin sends it.
fn json_action(body: &Value) -> test::TestRequest {
    test::TestRequest::post()
        .uri(&format!("{MOUNT}/api/actions"))
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

/// What the database says when it fails, which no response may repeat.
const DATABASE_TEXT: [&str; 14] = [
    "SELECT",
    "INSERT",
    "syntax",
    "sqlx",
    "SqlxError",
    "Exec(",
    "Query(",
    "background_task",
    "invalid byte sequence",
    "character varying",
    "Data too long",
    "no such table",
    "does not exist",
    "doesn't exist",
];

fn assert_no_database_text(body: &str) {
    for text in DATABASE_TEXT {
        assert!(!body.contains(text), "the response shows {text:?}: {body}");
    }
}

/// Everything an action or a schedule change could touch.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tasks: Vec<task_row::Model>,
    history: Vec<completed_task::Model>,
    schedules: Vec<background_tasks::entity::schedule::Model>,
}

async fn snapshot(t: &TestDb) -> Snapshot {
    let mut tasks = task_row::Entity::find().all(&t.db).await.unwrap();
    tasks.sort_by_key(|row| row.id);
    let mut history = completed_task::Entity::find().all(&t.db).await.unwrap();
    history.sort_by_key(|row| row.id);
    let mut schedules = background_tasks::entity::schedule::Entity::find()
        .all(&t.db)
        .await
        .unwrap();
    schedules.sort_by_key(|row| row.id);
    Snapshot {
        tasks,
        history,
        schedules,
    }
}

/// Marks task `id` as held by a runner on another host.
async fn lock(t: &TestDb, id: i32) {
    task_row::Entity::update_many()
        .col_expr(
            task_row::Column::LockedBy,
            sea_orm::sea_query::Expr::value("elsewhere:1:0"),
        )
        .col_expr(
            task_row::Column::LockedAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .filter(task_row::Column::Id.eq(id))
        .exec(&t.db)
        .await
        .unwrap();
}

async fn enqueue(queue: &Queue, n: i64) -> task_row::Model {
    queue
        .enqueue::<Add>(&(n, 1))
        .await
        .unwrap()
        .into_task()
        .unwrap()
}

// ---- hosts, proxies, origins, media types ------------------------------

async fn rebinding_hosts_are_refused_and_forwarded_hosts_need_a_trusted_proxy(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    enqueue(&queue, 1).await;
    let plain = app(full(&queue)).await;
    let overview = |host: &str| get("/api/overview").insert_header((header::HOST, host));

    // A page on another name that resolves to this server is refused,
    // on the API and the pages alike, whatever it forwards.
    for request in [
        overview("evil.example:8000"),
        overview("EVIL.example"),
        overview("localhost.evil.example"),
        overview("evil.example").insert_header(("x-forwarded-host", "localhost")),
        overview("evil.example").insert_header((header::FORWARDED, "host=localhost")),
        get("/tasks?state=pending").insert_header((header::HOST, "evil.example")),
        get("/metrics").insert_header((header::HOST, "evil.example")),
    ] {
        let (status, body) = call(&plain, request.to_request()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body.contains("evil.example") && body.contains("allowed_hosts"),
            "{body}"
        );
    }
    // A stranger cannot forward its way out of an allowed Host either.
    let (status, body) = call(
        &plain,
        overview("localhost:8000")
            .insert_header(("x-forwarded-host", "evil.example"))
            .to_request(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "forwarded headers of a stranger are ignored: {body}"
    );
    // localhost and IP addresses, with any port, are always answered.
    for host in [
        "localhost",
        "LOCALHOST:8000",
        "127.0.0.1:9",
        "[::1]:8000",
        "10.1.2.3",
    ] {
        let (status, body) = call(&plain, overview(host).to_request()).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    let (status, _) = call(&plain, overview("a b").to_request()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a Host that is no name");

    // An app names the hosts it is reached by, and its proxies.
    let proxy: std::net::SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let stranger: std::net::SocketAddr = "10.0.0.2:40000".parse().unwrap();
    let named = app(full(&queue)
        .allowed_hosts(["Dash.Example.com:443", "not a name"])
        .trusted_proxies(["10.0.0.1".parse().unwrap()]))
    .await;
    let (status, body) = call(&named, overview("dash.example.com").to_request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&named, overview("other.example.com").to_request()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let forwarded = |peer| {
        overview("backend.internal:8080")
            .peer_addr(peer)
            .insert_header(("x-forwarded-host", "dash.example.com"))
            .insert_header(("x-forwarded-proto", "https"))
    };
    let (status, body) = call(&named, forwarded(proxy).to_request()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the trusted proxy says where: {body}"
    );
    let (status, _) = call(&named, forwarded(stranger).to_request()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a stranger's forwarding is ignored"
    );
    let (status, _) = call(
        &named,
        overview("backend.internal:8080")
            .peer_addr(proxy)
            .insert_header((
                header::FORWARDED,
                "for=1.2.3.4;host=evil.example;proto=https",
            ))
            .to_request(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a forwarded host must be allowed too"
    );
    // "*" answers to every name.
    let any = app(full(&queue).allowed_hosts(["*"])).await;
    let (status, _) = call(&any, overview("whatever.example").to_request()).await;
    assert_eq!(status, StatusCode::OK);
    t
}

async fn writes_need_this_exact_origin_and_exactly_json(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let task = enqueue(&queue, 1).await;
    let app = app(full(&queue)).await;
    let before = snapshot(&t).await;
    let bump = json!({"action": "priority_up", "ids": [task.id]});

    // The server is http://localhost:8000; the Origin must say exactly so.
    for origin in [
        "http://localhost:9999",
        "https://localhost:8000",
        "http://localhost",
        "http://evil.example:8000",
        "http://localhost:8000.evil.example",
        "null",
        "localhost:8000",
    ] {
        let request = json_action(&bump)
            .insert_header((header::HOST, "localhost:8000"))
            .insert_header((header::ORIGIN, origin))
            .to_request();
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {body}");
    }
    // Form posts are held to the same Origin rule.
    let request = test::TestRequest::post()
        .uri(&format!("{MOUNT}/actions"))
        .insert_header((header::HOST, "localhost:8000"))
        .insert_header((header::ORIGIN, "https://localhost:8000"))
        .cookie(actix_web::cookie::Cookie::new(
            "bgtasks_csrf",
            "a1".repeat(32),
        ))
        .set_form([
            ("csrf", "a1".repeat(32)),
            ("action", "priority_up".into()),
            ("id", task.id.to_string()),
        ])
        .to_request();
    assert_eq!(call(&app, request).await.0, StatusCode::FORBIDDEN);
    // Only application/json itself, with or without parameters.
    for media_type in [
        "application/jsonx",
        "application/json-seq",
        "application/json5",
        "text/plain",
        "text/plain; a=application/json",
        "application/x-www-form-urlencoded",
        "",
    ] {
        let request = test::TestRequest::post()
            .uri(&format!("{MOUNT}/api/actions"))
            .insert_header((header::CONTENT_TYPE, media_type))
            .set_payload(bump.to_string())
            .to_request();
        let (status, body) = call(&app, request).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{media_type:?}: {body}"
        );
    }
    assert_eq!(
        snapshot(&t).await,
        before,
        "no refused write changed anything"
    );

    // This origin (default port made explicit or not), as JSON: accepted.
    for (host, origin, media_type) in [
        (
            "localhost:8000",
            "http://localhost:8000",
            "application/json",
        ),
        (
            "localhost",
            "http://localhost:80",
            "Application/JSON; charset=utf-8",
        ),
        (
            "[::1]:8000",
            "http://[::1]:8000",
            "application/json;charset=UTF-8",
        ),
    ] {
        let request = test::TestRequest::post()
            .uri(&format!("{MOUNT}/api/actions"))
            .insert_header((header::HOST, host))
            .insert_header((header::ORIGIN, origin))
            .insert_header((header::CONTENT_TYPE, media_type))
            .set_payload(bump.to_string())
            .to_request();
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::OK, "{origin} {media_type}: {body}");
    }
    // Behind a trusted TLS proxy the origin is https and the public name.
    let proxied = self::app(
        full(&queue)
            .allowed_hosts(["dash.example.com"])
            .trusted_proxies(["10.0.0.1".parse().unwrap()]),
    )
    .await;
    let request = json_action(&bump)
        .peer_addr("10.0.0.1:5000".parse().unwrap())
        .insert_header((header::HOST, "127.0.0.1:8080"))
        .insert_header((header::FORWARDED, "proto=https;host=dash.example.com"))
        .insert_header((header::ORIGIN, "https://dash.example.com"))
        .to_request();
    let (status, body) = call(&proxied, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let priority = task_row::Entity::find_by_id(task.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap()
        .priority;
    assert_eq!(priority, task.priority + 4, "four accepted writes");
    t
}

/// A page's CSRF token, as a browser gets it.
async fn token<S, B>(app: &S) -> String
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, get("/tasks?state=pending").to_request()).await;
    response
        .response()
        .cookies()
        .find(|c| c.name() == "bgtasks_csrf")
        .map(|c| c.value().to_owned())
        .expect("the page sets the CSRF cookie")
}

/// A form post with a valid CSRF token, from this dashboard's origin.
fn form(token: &str, fields: &[(&str, String)]) -> Request {
    let mut all: Vec<(&str, String)> = vec![("csrf", token.to_owned())];
    all.extend(fields.iter().cloned());
    test::TestRequest::post()
        .uri(&format!("{MOUNT}/actions"))
        .cookie(actix_web::cookie::Cookie::new(
            "bgtasks_csrf",
            token.to_owned(),
        ))
        .set_form(all)
        .to_request()
}

async fn return_addresses_outside_the_dashboard_are_refused_before_acting(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let task = enqueue(&queue, 1).await;
    let app = app(full(&queue)).await;
    let token = token(&app).await;
    let before = snapshot(&t).await;
    for back in [
        "https://evil.example/",
        "//evil.example/dash/",
        "/\\evil.example/",
        "/dash/\\evil",
        "/dash/tasks\r\nSet-Cookie: a=b",
        "/dash/tasks\nx",
        "/dash/\ttasks",
        "/dash/tâches",
        "/dash/../admin",
        "/dash/%2e%2E/admin",
        "/elsewhere/",
        "",
    ] {
        let (status, body) = call(
            &app,
            form(
                &token,
                &[
                    ("action", "priority_up".into()),
                    ("id", task.id.to_string()),
                    ("back", back.into()),
                ],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{back:?}: {body}");
        assert!(body.contains("not a page of this dashboard"), "{body}");
    }
    assert_eq!(snapshot(&t).await, before, "no refused form acted");
    // A page of this dashboard is where the form goes back to.
    let response = test::call_service(
        &app,
        form(
            &token,
            &[
                ("action", "priority_up".into()),
                ("id", task.id.to_string()),
                ("back", "/dash/tasks?state=pending&q=a%20b".into()),
            ],
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers().get(header::LOCATION).unwrap(),
        "/dash/tasks?state=pending&q=a%20b&done=priority_up&n=1"
    );
    t
}

// ---- values and errors --------------------------------------------------

async fn values_the_database_cannot_store_are_answered_400(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    enqueue(&queue, 1).await;
    let app = app(full(&queue)).await;
    let before = snapshot(&t).await;
    // A NUL byte in any filter: PostgreSQL would refuse it in a statement.
    for query in [
        "q=a%00b",
        "name=add%00",
        "queue=%00",
        "since=1h%00",
        "state=pending%00",
        "after=%00",
    ] {
        let (status, body) = call(&app, get(&format!("/api/tasks?{query}")).to_request()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = serde_json::from_str::<Value>(&body).unwrap()["error"].to_string();
        assert!(error.contains("NUL"), "{query}: {error}");
        let (status, page) = call(&app, get(&format!("/tasks?{query}")).to_request()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            page.contains("role=\"alert\"") && page.contains("NUL"),
            "{page}"
        );
    }
    // Long filters are fine: nothing matches.
    let long = "x".repeat(5_000);
    let (status, body) = call(
        &app,
        get(&format!("/api/tasks?name={long}&queue={long}&q={long}")).to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Schedules: NUL bytes and over-long values are refused with a message.
    let schedule = |change: Value| {
        let mut body = json!({"name": "nightly", "cron": "0 3 * * *", "task": "add"});
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        test::TestRequest::post()
            .uri(&format!("{MOUNT}/api/schedules"))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body.to_string())
            .to_request()
    };
    for (change, says) in [
        (json!({"name": "night\u{0}ly"}), "NUL"),
        (json!({"task": "a\u{0}dd"}), "NUL"),
        (json!({"queue": "\u{0}"}), "NUL"),
        (json!({"verbose_name": "a\u{0}"}), "NUL"),
        (json!({"timezone": "UTC\u{0}"}), "NUL"),
        (json!({"cron": "0 3 * * *\u{0}"}), "NUL"),
        (json!({"name": "n".repeat(191)}), "190"),
        (json!({"task": "t".repeat(191)}), "190"),
        (json!({"queue": "q".repeat(191)}), "190"),
        (json!({"verbose_name": "v".repeat(256)}), "255"),
        (
            json!({"cron": format!("0{} 3 * * *", ",0".repeat(200))}),
            "255",
        ),
        (json!({"timezone": "Z".repeat(300)}), ""),
    ] {
        let (status, body) = call(&app, schedule(change.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change}: {body}");
        assert!(body.contains(says), "{change}: {body}");
        assert_no_database_text(&body);
    }
    // Schedule names in paths: a NUL byte, and a name far too long.
    for path in ["/api/schedules/a%00b/pause", "/api/schedules/a%00b"] {
        let method = if path.ends_with("pause") {
            test::TestRequest::post()
        } else {
            test::TestRequest::delete()
        };
        let request = method
            .uri(&format!("{MOUNT}{path}"))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .to_request();
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("NUL"), "{body}");
    }
    let request = test::TestRequest::post()
        .uri(&format!(
            "{MOUNT}/api/schedules/{}/pause",
            "n".repeat(3_000)
        ))
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .to_request();
    assert_eq!(call(&app, request).await.0, StatusCode::NOT_FOUND);
    assert_eq!(snapshot(&t).await, before, "nothing was written");
    t
}

async fn database_errors_never_reach_a_response(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let app = app(full(&queue)).await;
    // A statement that fails for the database's own reasons.
    t.db.execute_unprepared("DROP TABLE background_task_schedule")
        .await
        .unwrap();
    for path in ["/api/schedules", "/schedules"] {
        let (status, body) = call(&app, get(path).to_request()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {body}");
        assert!(body.contains("the server's log says why"), "{body}");
        assert_no_database_text(&body);
    }
    t
}

// ---- times and durations ------------------------------------------------

async fn times_from_input_never_overflow_on_the_web(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    enqueue(&queue, 1).await;
    let app = app(full(&queue)).await;
    for (query, says) in [
        ("since=99999999d", "since"),
        ("until=99999999d", "until"),
        ("since=9223372036854775807s", "100 years"),
        ("since=99999999999999999999999999d", "100 years"),
        ("since=1%C3%A9", "not a time"),
        ("since=-5h", "not a time"),
        ("until=10000-01-01", "not a time"),
        ("since=9999-12-31T23:00:00-05:00", "years 1 to 9999"),
        ("since=0000-01-01T00:00:00Z", "years 1 to 9999"),
        ("after=1_-99999999999999999_0", "cursor"),
        ("after=1_253402300800000000_0", "cursor"),
        ("limit=-1", "query string"),
        ("limit=99999999999999999999999", "query string"),
    ] {
        let (status, body) = call(
            &app,
            get(&format!("/api/tasks?state=pending&{query}")).to_request(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = serde_json::from_str::<Value>(&body).unwrap()["error"].to_string();
        assert!(error.contains(says), "{query}: {error}");
        let (status, page) = call(
            &app,
            get(&format!("/tasks?state=pending&{query}")).to_request(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {page}");
    }
    // The longest age, and the edges of the storable years, are fine.
    for query in [
        "since=36525d",
        "since=0001-01-01",
        "until=9999-12-31T23:59:59Z",
        "limit=0",
    ] {
        let (status, body) = call(
            &app,
            get(&format!("/api/tasks?state=pending&{query}")).to_request(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
    }
    // A mangled notice does not break the page under it.
    let (status, _) = call(
        &app,
        get("/tasks?state=pending&done=run_now&n=-1").to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    t
}

/// Runs `bgtasks args`: its exit code and stderr.
fn run_bgtasks(t: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = bgtasks(t);
    command.args(args).stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn times_and_durations_never_overflow_on_the_command_line(t: TestDb) -> TestDb {
    let queue = crate::cli::queue(&t);
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    History {
        ..History::of("bgtasks.noop")
    }
    .insert(&t)
    .await;
    let before = snapshot(&t).await;
    for (args, says) in [
        (vec!["list", "--since", "99999999d"], "--since"),
        (vec!["list", "--until", "9223372036854775807s"], "100 years"),
        (vec!["list", "--since", "1é"], "not a time"),
        (vec!["list", "--since", "10000-01-01"], "not a time"),
        (
            vec!["delete", "--state", "pending", "--since", "99999999d"],
            "--since",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--schedule", "9000000000000000"],
            "100 years",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--schedule", "99999999d"],
            "100 years",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--schedule=-99999999999"],
            "100 years",
        ),
        (
            vec![
                "enqueue",
                "bgtasks.noop",
                "--schedule",
                "9999-12-31T23:00:00-05:00",
            ],
            "years 1 to 9999",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--repeat", "99999999999999"],
            "100 years",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--repeat", "36526d"],
            "100 years",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--repeat-until", "99999999d"],
            "--repeat-until",
        ),
        (
            vec!["enqueue", "bgtasks.noop", "--max-run-time", "99999999d"],
            "100 years",
        ),
        (
            vec!["prune", "--completed-older-than", "99999999d"],
            "100 years",
        ),
        (vec!["prune", "--failed-older-than", "1e300"], "100 years"),
        (vec!["prune", "--failed-older-than", "1é"], "not a duration"),
        (
            vec![
                "process",
                "--keep-completed",
                "99999999d",
                "--duration",
                "1",
            ],
            "100 years",
        ),
        (
            vec!["process", "--lease", "1e15", "--duration", "1"],
            "100 years",
        ),
        (
            vec!["process", "--sleep", "1e300", "--duration", "1"],
            "seconds",
        ),
        (vec!["stats", "--lease", "1e15"], "100 years"),
        (
            vec!["demo", "--duration", "18446744073709551615"],
            "3155760000",
        ),
        (
            vec!["dashboard", "--lease", "1e15", "--bind", "127.0.0.1:0"],
            "100 years",
        ),
    ] {
        let (code, stderr) = run_bgtasks(&t, &args, &[]);
        assert_eq!(code, Some(2), "{args:?} is bad input: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let (code, stderr) = run_bgtasks(
        &t,
        &["process", "--duration", "1"],
        &[("MAX_RUN_TIME", "1e15")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("MAX_RUN_TIME") && stderr.contains("100 years"),
        "{stderr}"
    );
    assert_eq!(
        snapshot(&t).await,
        before,
        "no refused command changed anything"
    );
    // The longest allowed values are accepted as input.
    let (code, stderr) = run_bgtasks(&t, &["list", "--since", "36525d"], &[]);
    assert_ne!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (code, stderr) = run_bgtasks(
        &t,
        &["prune", "--completed-older-than", "36525d", "--dry-run"],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    t
}

/// Times are bound as naive `DATETIME` values on MySQL/MariaDB: a UTC time
/// bound as `TIMESTAMP` (sqlx's choice for `DateTime<Utc>`) holds only
/// 1970 to 2038, and outside it became NULL ("Column 'run_at' cannot be
/// null" for `--schedule 2040-01-01`, nothing found for `--until 2040`).
async fn times_outside_1970_to_2038_are_stored_and_found(t: TestDb) -> TestDb {
    let (code, stderr) = run_bgtasks(
        &t,
        &[
            "enqueue",
            "bgtasks.noop",
            "--schedule",
            "2040-01-01 12:00",
            "--repeat-until",
            "2099-12-31 00:00",
            "--repeat",
            "1d",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let row = task_row::Entity::find().one(&t.db).await.unwrap().unwrap();
    assert_eq!(row.run_at.to_rfc3339(), "2040-01-01T12:00:00+00:00");
    assert_eq!(
        row.repeat_until.map(|at| at.to_rfc3339()),
        Some("2099-12-31T00:00:00+00:00".to_owned())
    );
    let output = bgtasks(&t)
        .args([
            "--json",
            "list",
            "--state",
            "scheduled",
            "--since",
            "2039-12-31",
            "--until",
            "2040-01-02",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["rows"].as_array().unwrap().len(), 1, "{listed}");
    t
}

// ---- search, delete -----------------------------------------------------

async fn search_ignores_case_on_every_backend(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let mail = queue
        .enqueue_call("Mail.Send", &("Ada@Example.COM",), &())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    queue.enqueue_call("other", &("x",), &()).await.unwrap();
    let done = History {
        params: "[[\"Grace@Example.com\"], {}]".into(),
        ..History::of("Mail.Receipt")
    }
    .insert(&t)
    .await;
    let app = app(full(&queue)).await;
    let ids = |body: &str| -> Vec<i64> {
        serde_json::from_str::<Value>(body).unwrap()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["id"].as_i64().unwrap())
            .collect()
    };
    for q in [
        "mail.send",
        "MAIL.SEND",
        "ada@example.com",
        "ADA@EXAMPLE",
        "aDa",
    ] {
        let (status, body) = call(
            &app,
            get(&format!("/api/tasks?state=pending&q={q}")).to_request(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ids(&body), vec![i64::from(mail.id)], "{q}");
    }
    for q in ["MAIL.receipt", "grace@EXAMPLE"] {
        let (_, body) = call(
            &app,
            get(&format!("/api/tasks?state=completed&q={q}")).to_request(),
        )
        .await;
        assert_eq!(ids(&body), vec![i64::from(done)], "{q}");
    }
    // Wildcards stay literal.
    let (_, body) = call(&app, get("/api/tasks?state=pending&q=M_il").to_request()).await;
    assert!(ids(&body).is_empty(), "{body}");
    // The admin functions and the command line follow the same rule.
    let found = admin::search_tasks(&t.db, "ADA@example", 10).await.unwrap();
    assert_eq!(
        found.iter().map(|row| row.id).collect::<Vec<_>>(),
        vec![mail.id]
    );
    let found = admin::search_completed(&t.db, "mail.RECEIPT", 10)
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|row| row.id).collect::<Vec<_>>(),
        vec![done]
    );
    let output = bgtasks(&t)
        .args(["list", "--json", "--search", "MAIL.SEND"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["rows"][0]["id"], mail.id, "{listed}");
    assert_eq!(listed["rows"].as_array().unwrap().len(), 1, "{listed}");
    t
}

async fn running_tasks_are_cancelled_not_deleted(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let running = enqueue(&queue, 1).await;
    lock(&t, running.id).await;
    let waiting = enqueue(&queue, 2).await;
    let app = app(full(&queue)).await;
    let before = snapshot(&t).await;

    // The API refuses a selection with a running task, and deletes nothing.
    for ids in [vec![running.id], vec![waiting.id, running.id]] {
        let (status, body) = call(
            &app,
            json_action(&json!({"action": "delete", "ids": ids})).to_request(),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body.contains(&running.id.to_string()) && body.contains("Cancel"),
            "{body}"
        );
    }
    // So does the dashboard's form.
    let token = token(&app).await;
    let (status, body) = call(
        &app,
        form(
            &token,
            &[("action", "delete".into()), ("id", running.id.to_string())],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // And `bgtasks delete`, by id or by state.
    for args in [
        vec!["delete".to_owned(), running.id.to_string()],
        vec![
            "delete".into(),
            "--state".into(),
            "running".into(),
            "--all".into(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = run_bgtasks(&t, &args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("bgtasks cancel"), "{stderr}");
    }
    assert_eq!(
        snapshot(&t).await,
        before,
        "the running task's row is still its runner's"
    );

    // Waiting tasks are deleted as before; cancelling the running one asks it to stop.
    let (status, body) = call(
        &app,
        json_action(&json!({"action": "delete", "ids": [waiting.id]})).to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        task_row::Entity::find_by_id(waiting.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    let (status, body) = call(
        &app,
        json_action(&json!({"action": "cancel", "ids": [running.id]})).to_request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = task_row::Entity::find_by_id(running.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.cancel_requested_at.is_some(), "{row:?}");
    // The statement itself never deletes a held row, whoever calls it.
    assert_eq!(admin::delete_tasks(&t.db, &[running.id]).await.unwrap(), 0);
    t
}

// ---- bgtasks dashboard --------------------------------------------------

/// One HTTP/1.1 request to `127.0.0.1:port` with `headers`: the status
/// code and the body.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

async fn dashboard_takes_its_password_from_a_file_and_answers_only_allowed_hosts(
    t: TestDb,
) -> TestDb {
    crate::cli::queue(&t)
        .enqueue::<builtin::Noop>(&())
        .await
        .unwrap();
    let (code, help) = {
        let output = bgtasks(&t).args(["dashboard", "--help"]).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0));
    assert!(
        help.contains("--password-file") && help.contains("ps"),
        "{help}"
    );
    assert!(
        help.contains("--allowed-host") && help.contains("--trusted-proxy"),
        "{help}"
    );

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path().join("missing");
    for (args, says) in [
        (
            vec!["--password-file".to_owned(), empty.display().to_string()],
            "empty",
        ),
        (
            vec!["--password-file".to_owned(), missing.display().to_string()],
            "cannot read",
        ),
        (
            vec![
                "--password-file".to_owned(),
                empty.display().to_string(),
                "--password".into(),
                "x".into(),
            ],
            "cannot be used with",
        ),
        (
            vec!["--allowed-host".to_owned(), "not a name".into()],
            "not a host name",
        ),
        (
            vec!["--trusted-proxy".to_owned(), "proxy.example".into()],
            "invalid",
        ),
    ] {
        let mut command = bgtasks(&t);
        command
            .arg("dashboard")
            .args(["--bind", "127.0.0.1:0"])
            .args(&args)
            .env_remove("BGTASKS_DASHBOARD_PASSWORD");
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = bgtasks(&t)
        .args(["dashboard", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--password-file")
        .arg(&password)
        .env_remove("BGTASKS_DASHBOARD_PASSWORD")
        .env(
            "BGTASKS_DASHBOARD_ALLOWED_HOSTS",
            "dash.example.com,ops.example.com",
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the dashboard to listen",
        Duration::from_secs(30),
        || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await;
    // ops:s3cret
    let auth = ("Authorization", "Basic b3BzOnMzY3JldA==");
    let here = format!("127.0.0.1:{port}");
    let (status, body) = http(port, "GET", "/api/overview", &[("Host", &here), auth]);
    assert_eq!(status, 200, "the password from the file lets it in: {body}");
    let (status, _) = http(
        port,
        "GET",
        "/api/overview",
        &[("Host", &here), ("Authorization", "Basic b3BzOnMzY3JldAo=")],
    );
    assert_eq!(
        status, 401,
        "the file's line ending is not part of the password"
    );
    for host in ["dash.example.com", "ops.example.com:8000", "localhost"] {
        let (status, body) = http(port, "GET", "/api/overview", &[("Host", host), auth]);
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, body) = http(
        port,
        "GET",
        "/api/overview",
        &[("Host", "evil.example"), auth],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--allowed-host"), "{body}");
    let (status, _) = http(
        port,
        "GET",
        "/api/overview",
        &[
            ("Host", "evil.example"),
            ("X-Forwarded-Host", "localhost"),
            auth,
        ],
    );
    assert_eq!(status, 403, "no proxy is trusted");
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(server.wait().unwrap().success());
    t
}

// ---- property tests -----------------------------------------------------

/// Runs `check` on generated values of `strategy`: 256 cases, or
/// `PROPTEST_CASES`. A failing value (an `Err`, or a panic) is shrunk
/// (proptest's simplify / complicate walk), and the simplest failure
/// panics with its reason. Returns how many cases ran.
async fn for_generated<S, F, Fut>(what: &str, strategy: S, mut check: F) -> u32
where
    S: Strategy,
    S::Value: Debug,
    F: FnMut(S::Value) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    use futures_util::FutureExt;
    let mut check = move |value| {
        std::panic::AssertUnwindSafe(check(value))
            .catch_unwind()
            .map(|outcome| {
                outcome.unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    Err(format!("panicked: {message}"))
                })
            })
    };
    let mut runner = TestRunner::new(proptest::test_runner::Config::default());
    let cases = runner.config().cases;
    for _ in 0..cases {
        let mut tree = strategy.new_tree(&mut runner).expect("a generated value");
        let Err(mut reason) = check(tree.current()).await else {
            continue;
        };
        let mut simplest = format!("{:?}", tree.current());
        let mut steps = 0;
        if tree.simplify() {
            while steps < 500 {
                steps += 1;
                match check(tree.current()).await {
                    Err(why) => {
                        simplest = format!("{:?}", tree.current());
                        reason = why;
                        if !tree.simplify() {
                            break;
                        }
                    }
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        panic!("{what}: {reason}\nsimplest failing input: {simplest}");
    }
    eprintln!("{what}: {cases} generated cases passed");
    cases
}

/// Every byte but the unreserved ones percent-encoded.
fn encode(text: &[u8]) -> String {
    text.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A value as people and attackers type them: near the syntax, or not.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<String>().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
        "[0-9]{0,25}[smhdé]?".prop_map(String::into_bytes),
        "-?[0-9]{1,20}_-?[0-9]{1,22}_-?[0-9]{1,12}".prop_map(String::into_bytes),
        // Control characters, slashes and dots: what breaks headers and paths.
        "[\\x00-\\x1f\\x7f/\\\\.a-z%]{0,12}".prop_map(String::into_bytes),
        "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(String::into_bytes),
        prop::sample::select(vec![
            "pending", "scheduled", "running", "failed", "completed", "(default)", "mail",
            "add", "%", "_", "\u{0}", "99999999d", "36525d", "9999-12-31T23:59:59Z",
            "run_now", "retry", "delete", "cancel",
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
        Just(vec![b'x'; 3_000]),
    ]
}

/// `text` as generated bytes.
fn bytes(text: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    text.prop_map(String::into_bytes)
}

/// A query string: each known key with values near its syntax or not,
/// unknown keys, or URI-legal junk.
fn query_string() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        (Just("state"), value()),
        (
            Just("done"),
            prop_oneof![bytes("(run_now|retry|delete|cancel|priority_up)"), value()]
        ),
        (
            Just("n"),
            prop_oneof![bytes(any::<i64>().prop_map(|n| n.to_string())), value()]
        ),
        (prop::sample::select(vec!["since", "until"]), value()),
        (Just("after"), value()),
        (
            Just("limit"),
            prop_oneof![bytes(any::<i128>().prop_map(|n| n.to_string())), value()]
        ),
        (prop::sample::select(vec!["queue", "name", "q"]), value()),
        (
            prop::sample::select(vec!["x", "", "state[]", "q%00"]),
            value()
        ),
    ];
    let join = |pairs: &[(&str, Vec<u8>)]| {
        pairs
            .iter()
            .map(|(key, value)| format!("{key}={}", encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    };
    prop_oneof![
        // Each key once, as forms and links send them (a repeated key is
        // refused before any handler runs, so it would hide the rest).
        6 => prop::collection::vec(pair.clone(), 0..8).prop_map(move |pairs| {
            let mut seen = std::collections::HashSet::new();
            let pairs: Vec<_> = pairs.into_iter().filter(|(key, _)| seen.insert(*key)).collect();
            join(&pairs)
        }),
        1 => prop::collection::vec(pair, 0..8).prop_map(move |pairs| join(&pairs)),
        1 => "[A-Za-z0-9%&=+;._~!$'()*,:@/?-]{0,60}",
    ]
}

/// A small queue in every state, and a schedule.
async fn populate(t: &TestDb, queue: &Queue) {
    enqueue(queue, 1).await;
    let running = enqueue(queue, 2).await;
    lock(t, running.id).await;
    queue.enqueue::<Add>(&(3, 1)).schedule(3_600).await.unwrap();
    History::of("add").insert(t).await;
    History {
        error: Some("boom".into()),
        ..History::of("add")
    }
    .insert(t)
    .await;
    cron::create(
        &t.db,
        cron::NewSchedule::call(
            "nightly",
            "add",
            "0 3 * * *",
            &[json!(1), json!(2)],
            &serde_json::Map::new(),
        ),
        Utc::now(),
    )
    .await
    .unwrap();
}

async fn generated_queries_never_get_a_500(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    populate(&t, &queue).await;
    let app = app(full(&queue)).await;
    let path = prop::sample::select(vec![
        "/api/tasks",
        "/tasks",
        "/api/tasks",
        "/tasks",
        "/api/tasks",
        "/tasks",
        "/api/overview",
        "/",
        "/runners",
        "/schedules",
        "/api/schedules",
        "/metrics",
        "/api/runners",
    ]);
    let strategy = prop_oneof![
        3 => (path, query_string()).prop_map(|(path, query)| format!("{path}?{query}")),
        1 => (
            prop::sample::select(vec![
                "/tasks/",
                "/completed/",
                "/api/tasks/",
                "/api/completed/",
                "/assets/"
            ]),
            value()
        )
            .prop_map(|(path, segment)| format!("{path}{}", encode(&segment))),
    ];
    let app = &app;
    let cases = for_generated(
        "GET with generated queries",
        strategy,
        move |uri| async move {
            let (status, body) = call(app, get(&uri).to_request()).await;
            if status.is_server_error() {
                return Err(format!("{uri} got {status}: {body}"));
            }
            if uri.starts_with("/api/") && serde_json::from_str::<Value>(&body).is_err() {
                return Err(format!("{uri} answered {status} without JSON: {body}"));
            }
            Ok(())
        },
    )
    .await;
    assert!(cases >= 1);
    t
}

async fn generated_forms_never_get_a_500_and_refusals_change_nothing(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    populate(&t, &queue).await;
    let ids: Vec<String> = task_row::Entity::find()
        .all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id.to_string())
        .chain(
            completed_task::Entity::find()
                .all(&t.db)
                .await
                .unwrap()
                .iter()
                .map(|row| row.id.to_string()),
        )
        .collect();
    let app = app(full(&queue)).await;
    let token = token(&app).await;
    let field = prop_oneof![
        prop::sample::select(vec![
            "run_now",
            "priority_up",
            "priority_down",
            "cancel",
            "delete",
            "retry",
            "delete_completed",
            "explode",
        ])
        .prop_map(|action| ("action".to_owned(), action.as_bytes().to_vec())),
        prop::sample::select(ids).prop_map(|id| ("id".to_owned(), id.into_bytes())),
        value().prop_map(|v| ("id".to_owned(), v)),
        prop_oneof![
            value(),
            value().prop_map(|v| [b"/dash/".as_slice(), &v].concat()),
            prop::sample::select(vec![
                "/dash/",
                "/dash/tasks?state=failed",
                "//evil",
                "/\\evil",
                "/dash/../x"
            ])
            .prop_map(|v| v.as_bytes().to_vec()),
        ]
        .prop_map(|v| ("back".to_owned(), v)),
        (prop::sample::select(vec!["x", "csrf", ""]), value()).prop_map(|(k, v)| (k.to_owned(), v)),
    ];
    let strategy = prop_oneof![
        4 => prop::collection::vec(field, 0..6).prop_map(|fields| {
            fields
                .iter()
                .map(|(key, value)| format!("{key}={}", encode(value)))
                .collect::<Vec<_>>()
                .join("&")
        }),
        1 => "[A-Za-z0-9%&=+;._~!$'()*,:@/?-]{0,60}",
    ];
    let (db, app, token) = (&t, &app, &token);
    let cases = for_generated("action forms", strategy, move |fields| async move {
        let before = snapshot(db).await;
        let body = if fields.is_empty() {
            format!("csrf={token}")
        } else {
            format!("csrf={token}&{fields}")
        };
        let request = test::TestRequest::post()
            .uri(&format!("{MOUNT}/actions"))
            .cookie(actix_web::cookie::Cookie::new(
                "bgtasks_csrf",
                token.clone(),
            ))
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
            .set_payload(body)
            .to_request();
        let (status, text) = call(app, request).await;
        if status.is_server_error() {
            return Err(format!("{status}: {text}"));
        }
        if status.is_client_error() && snapshot(db).await != before {
            return Err(format!(
                "refused with {status} ({text}) yet the database changed"
            ));
        }
        Ok(())
    })
    .await;
    assert!(cases >= 1);
    t
}

async fn generated_json_writes_never_get_a_500_and_refusals_change_nothing(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    populate(&t, &queue).await;
    let app = app(full(&queue)).await;
    let text = || value().prop_map(|v| Value::String(String::from_utf8_lossy(&v).into_owned()));
    let json_value = prop_oneof![
        text(),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(Value::Null),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| json!(v)),
    ];
    let action = (
        prop_oneof![
            prop::sample::select(vec![
                "run_now",
                "priority_up",
                "cancel",
                "delete",
                "retry",
                "delete_completed"
            ])
            .prop_map(Value::from),
            json_value.clone(),
        ],
        prop_oneof![
            prop::collection::vec(-3i64..20, 0..5).prop_map(|v| json!(v)),
            json_value.clone(),
        ],
    )
        .prop_map(|(action, ids)| {
            (
                "/api/actions".to_owned(),
                "POST",
                json!({"action": action, "ids": ids}).to_string(),
            )
        });
    let schedule = (prop::collection::vec(
        (
            prop::sample::select(vec![
                "name",
                "cron",
                "task",
                "args",
                "kwargs",
                "timezone",
                "queue",
                "priority",
                "verbose_name",
                "missed",
                "extra",
            ]),
            prop_oneof![
                json_value.clone(),
                prop::sample::select(vec![
                    "0 3 * * *",
                    "* * * * * *",
                    "@hourly",
                    "0 0 31 2 *",
                    "61 * * * *",
                    "Europe/Paris",
                    "Mars/Olympus",
                    "skip",
                    "run_once",
                    "add",
                ])
                .prop_map(Value::from),
            ],
        ),
        0..8,
    ),)
        .prop_map(|(fields,)| {
            let body: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            (
                "/api/schedules".to_owned(),
                "POST",
                Value::Object(body).to_string(),
            )
        });
    let change = (
        prop_oneof![value(), Just(b"nightly".to_vec())],
        prop::sample::select(vec!["pause", "resume", "explode", ""]),
        prop::bool::ANY,
    )
        .prop_map(|(name, change, delete)| {
            let name = encode(&name);
            if delete {
                (format!("/api/schedules/{name}"), "DELETE", String::new())
            } else {
                (
                    format!("/api/schedules/{name}/{change}"),
                    "POST",
                    String::new(),
                )
            }
        });
    let junk = "[ -~]{0,80}".prop_map(|body| ("/api/actions".to_owned(), "POST", body));
    let strategy = prop_oneof![action, schedule, change, junk];
    let (db, app) = (&t, &app);
    let cases = for_generated(
        "JSON writes",
        strategy,
        move |(path, method, body)| async move {
            let before = snapshot(db).await;
            let request = match method {
                "DELETE" => test::TestRequest::delete(),
                _ => test::TestRequest::post(),
            }
            .uri(&format!("{MOUNT}{path}"))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body.clone())
            .to_request();
            let (status, text) = call(app, request).await;
            if status.is_server_error() {
                return Err(format!("{method} {path} {body} got {status}: {text}"));
            }
            if serde_json::from_str::<Value>(&text).is_err() {
                return Err(format!(
                    "{method} {path} answered {status} without JSON: {text}"
                ));
            }
            if status.is_client_error() && snapshot(db).await != before {
                return Err(format!(
                    "{method} {path} {body} refused with {status} yet changed the database"
                ));
            }
            Ok(())
        },
    )
    .await;
    assert!(cases >= 1);
    t
}

/// One generated call for [`generated_bulk_enqueues_store_what_single_enqueues_store`]:
/// positional and keyword text, verbose name, queue, priority, creator.
type GeneratedCall = (
    Vec<String>,
    String,
    Option<String>,
    Option<String>,
    i32,
    Option<(i32, u32)>,
);

fn generated_spec(call: &GeneratedCall) -> TaskSpec {
    let (args, kwarg, verbose_name, queue, priority, creator) = call.clone();
    let mut spec = TaskSpec::call(
        "generated.task",
        &args,
        &json!({ "text": kwarg }),
        &Registry::new(),
    )
    .priority(priority);
    if let Some(name) = verbose_name {
        spec = spec.verbose_name(name);
    }
    if let Some(queue) = queue {
        spec = spec.queue(queue);
    }
    if let Some((content_type, object)) = creator {
        spec = spec.creator(Creator::new(content_type, object));
    }
    spec
}

/// What a stored row says of its call (all but the id and the times).
fn stored_call(row: &task_row::Model) -> impl PartialEq + Debug + use<> {
    (
        (
            row.task_name.clone(),
            row.task_params.clone(),
            row.task_hash.clone(),
            row.verbose_name.clone(),
            row.queue.clone(),
            row.priority,
        ),
        (
            row.creator_content_type_id,
            row.creator_object_id,
            row.attempts,
            row.last_error.clone(),
            row.locked_by.clone(),
            row.unique_key.clone(),
            row.policy.clone(),
        ),
    )
}

/// Bulk enqueue writes its rows its own way on each backend (on
/// PostgreSQL one array text per column, quoted and escaped by this
/// crate); whatever the text, the rows must be the ones single enqueues
/// write, in the order given. Text with quotes, backslashes, braces,
/// commas, `NULL`, whitespace and any Unicode but NUL (which no text
/// column of PostgreSQL holds).
async fn generated_bulk_enqueues_store_what_single_enqueues_store(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let text = r#"[^\x00]{0,12}|NULL|\{\}|"|\\|a,b| "#;
    let call = (
        proptest::collection::vec(proptest::string::string_regex(text).unwrap(), 0..3),
        proptest::string::string_regex(text).unwrap(),
        proptest::option::of(proptest::string::string_regex(text).unwrap()),
        proptest::option::of(proptest::string::string_regex(r#"[^\x00]{1,12}|NULL|"|\\"#).unwrap()),
        any::<i32>(),
        proptest::option::of((0..i32::MAX, 0..=i32::MAX as u32)),
    );
    let strategy = proptest::collection::vec(call, 1..6);
    let (queue, db) = (&queue, &t.db);
    let cases = for_generated("bulk enqueues", strategy, move |calls| async move {
        let read = || async {
            let mut rows = task_row::Entity::find().all(db).await.unwrap();
            rows.sort_by_key(|row| row.id);
            task_row::Entity::delete_many().exec(db).await.unwrap();
            rows.iter().map(stored_call).collect::<Vec<_>>()
        };
        for call in &calls {
            queue
                .enqueue_spec(db, generated_spec(call))
                .await
                .map_err(|err| format!("single enqueue: {err}"))?;
        }
        let single = read().await;
        let written = queue
            .enqueue_many(calls.iter().map(generated_spec))
            .await
            .map_err(|err| format!("bulk enqueue: {err}"))?;
        let bulk = read().await;
        if written != calls.len() as u64 || bulk != single {
            return Err(format!(
                "bulk wrote {written} rows {bulk:?}\nsingle enqueues wrote {single:?}"
            ));
        }
        Ok(())
    })
    .await;
    assert!(cases >= 1);
    t
}
