//! The dashboard, its JSON API and the metrics endpoint, through
//! `actix_web::test` on every backend: every page and action, keyset
//! pagination, authorization refused, read-only mode, CSRF failures, and
//! escaping of what tasks carry.

use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, test};
use background_tasks::web::{Access, Dashboard};
use background_tasks::{Config, Queue, Registry, completed_task, task_row};
use chrono::{TimeDelta, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::fixture::TestDb;
use crate::rows::History;
use crate::tasks::{Add, Mail};

on_all_backends!(
    overview_counts_every_state_and_queue,
    pages_show_counts_a_scaled_chart_and_live_regions,
    lists_filter_and_page_by_keyset,
    lists_page_backwards_as_well_as_forwards,
    details_show_params_error_and_chain,
    form_actions_change_the_database,
    json_actions_change_the_database,
    csrf_and_origin_failures_change_nothing,
    authorization_and_read_only_are_enforced,
    what_tasks_carry_is_escaped,
    metrics_and_runners_report_a_running_runner,
    bad_input_is_answered_clearly,
    schedules_are_managed_through_the_json_api,
    queues_pause_and_runners_drain_through_the_api_and_the_pages,
);

const MOUNT: &str = "/dash";

/// A history row, as a runner would have written it.
async fn history(
    t: &TestDb,
    name: &str,
    params: &str,
    error: Option<&str>,
    queue: Option<&str>,
) -> i32 {
    History {
        params: params.into(),
        error: error.map(str::to_owned),
        queue: queue.map(str::to_owned),
        ..History::of(name)
    }
    .insert(t)
    .await
}

/// Marks task `id` as locked by a runner.
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

fn full(queue: &Queue) -> Dashboard {
    Dashboard::new(queue.clone()).authorize(|_| Access::Full)
}

async fn app(
    dashboard: Dashboard,
) -> impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    test::init_service(App::new().service(dashboard.scope(MOUNT))).await
}

async fn get_json<S, B>(app: &S, path: &str) -> (StatusCode, Value)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let (status, body, _) = get_html(app, path).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// GETs `path` under the mount: status, body, and the CSRF cookie if set.
async fn get_html<S, B>(app: &S, path: &str) -> (StatusCode, String, Option<String>)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = test::TestRequest::get()
        .uri(&format!("{MOUNT}{path}"))
        .to_request();
    let response = test::call_service(app, request).await;
    let status = response.status();
    let cookie = response
        .response()
        .cookies()
        .find(|c| c.name() == "bgtasks_csrf")
        .map(|c| c.value().to_owned());
    let body = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    (status, body, cookie)
}

/// Posts an action form with `token` in both the cookie and the form.
async fn post_form<S, B>(app: &S, token: &str, form: &[(&str, String)]) -> ServiceResponse<B>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut fields: Vec<(&str, String)> = vec![("csrf", token.to_owned())];
    fields.extend(form.iter().cloned());
    let request = test::TestRequest::post()
        .uri(&format!("{MOUNT}/actions"))
        .cookie(actix_web::cookie::Cookie::new(
            "bgtasks_csrf",
            token.to_owned(),
        ))
        .set_form(fields)
        .to_request();
    test::call_service(app, request).await
}

async fn post_json<S, B>(app: &S, body: Value) -> (StatusCode, Value)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = test::TestRequest::post()
        .uri(&format!("{MOUNT}/api/actions"))
        .set_json(body)
        .to_request();
    let response = test::call_service(app, request).await;
    let status = response.status();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A token taken from a page, as a browser would.
async fn token<S, B>(app: &S) -> String
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let (_, body, cookie) = get_html(app, "/tasks?state=pending").await;
    let cookie = cookie.expect("the first page sets the CSRF cookie");
    assert!(
        body.contains(&format!("name=\"csrf\" value=\"{cookie}\"")),
        "{body}"
    );
    cookie
}

fn count(overview: &Value, queue: Option<&str>, state: &str) -> i64 {
    overview["counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["queue"].as_str() == queue && c["state"] == state)
        .map(|c| c["count"].as_i64().unwrap())
        .sum()
}

async fn overview_counts_every_state_and_queue(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    queue.enqueue::<Add>(&(1, 2)).await.unwrap();
    queue.enqueue::<Add>(&(2, 2)).queue("mail").await.unwrap();
    queue.enqueue::<Add>(&(3, 2)).schedule(3_600).await.unwrap();
    let running = queue
        .enqueue::<Add>(&(4, 2))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    lock(&t, running.id).await;
    history(&t, "add", "[[5, 2], {}]", Some("boom"), Some("mail")).await;
    history(&t, "add", "[[6, 2], {}]", None, None).await;

    let app = app(full(&queue)).await;
    let (status, overview) = get_json(&app, "/api/overview").await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    assert_eq!(count(&overview, None, "pending"), 1, "{overview}");
    assert_eq!(count(&overview, Some("mail"), "pending"), 1);
    assert_eq!(count(&overview, None, "scheduled"), 1);
    assert_eq!(count(&overview, None, "running"), 1);
    assert_eq!(count(&overview, Some("mail"), "failed"), 1);
    assert!(overview["oldest_due"]["id"].is_i64(), "{overview}");
    let throughput = &overview["throughput"];
    let sum = |series: &str| -> i64 {
        throughput[series]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum()
    };
    assert_eq!(throughput["succeeded"].as_array().unwrap().len(), 60);
    assert_eq!((sum("succeeded"), sum("failed")), (1, 1), "{throughput}");

    let (status, html, cookie) = get_html(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(cookie.is_some(), "the overview sets the CSRF cookie");
    assert!(html.contains("Oldest due task"), "{html}");
    assert!(html.contains("1 completed"), "{html}");
    assert!(html.contains("<svg"), "the chart is inline SVG");
    // The bare mount path redirects to the overview.
    let response = test::call_service(&app, test::TestRequest::get().uri(MOUNT).to_request()).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers().get(header::LOCATION).unwrap(), "/dash/");
    t
}

/// The text of the element of `html` that follows `marker` (up to its
/// closing tag).
fn text_after<'a>(html: &'a str, marker: &str) -> &'a str {
    html.split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("{marker} not in {html}"))
        .split('<')
        .next()
        .unwrap_or_default()
}

async fn pages_show_counts_a_scaled_chart_and_live_regions(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    for i in 0..3 {
        queue.enqueue::<Add>(&(i, 2)).await.unwrap();
    }
    queue.enqueue::<Add>(&(3, 2)).schedule(3_600).await.unwrap();
    for i in 0..7 {
        let error = (i == 0).then_some("boom");
        history(&t, "add", &format!("[[{i}, 2], {{}}]"), error, None).await;
    }
    background_tasks::cron::create(
        &t.db,
        background_tasks::cron::NewSchedule::call(
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
    let app = app(full(&queue)).await;
    for page in ["/", "/tasks?state=failed", "/runners", "/schedules"] {
        let (status, html, _) = get_html(&app, page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        // The navigation counts every state, on every page.
        for (state, count) in [
            ("pending", "3"),
            ("scheduled", "1"),
            ("running", "0"),
            ("completed", "6"),
            ("failed", "1"),
        ] {
            assert_eq!(
                text_after(&html, &format!("class=\"n\" data-state=\"{state}\">")),
                count,
                "{page}: {state}"
            );
        }
        assert!(
            html.contains("Schedules <span class=\"n\">1<"),
            "{page}: {html}"
        );
        assert!(
            html.contains("Runners <span class=\"n\">0<"),
            "{page}: {html}"
        );
        assert!(html.contains("data-live=\"nav\""), "{page}");
    }

    let (_, html, _) = get_html(&app, "/").await;
    for region in ["cards", "oldest", "chart", "queues"] {
        assert!(
            html.contains(&format!("data-live=\"{region}\"")),
            "{region}: {html}"
        );
    }
    // The chart: each minute's values on hover, a time axis, and a scale
    // from 0 by a round step to the first step at or above the busiest
    // minute (7 rows, unless a minute turned while they were written).
    let minutes: Vec<(i64, i64)> = html
        .split("</title>")
        .filter_map(|text| {
            let values = text.rsplit(" UTC: ").next()?;
            let (ok, failed) = values.split_once(" completed, ")?;
            Some((
                ok.parse().ok()?,
                failed.strip_suffix(" failed")?.parse().ok()?,
            ))
        })
        .collect();
    assert_eq!(minutes.len(), 60, "{html}");
    let sum = minutes
        .iter()
        .fold((0, 0), |(a, b), (ok, failed)| (a + ok, b + failed));
    assert_eq!(sum, (6, 1), "{minutes:?}");
    let peak = minutes
        .iter()
        .map(|(ok, failed)| ok + failed)
        .max()
        .unwrap();
    let scale: Vec<i64> = html
        .split("<g class=\"scale\">")
        .nth(1)
        .unwrap()
        .split("</g>")
        .next()
        .unwrap()
        .split("text-anchor=\"end\">")
        .skip(1)
        .map(|label| label.split('<').next().unwrap().parse().unwrap())
        .collect();
    let step = scale[1];
    assert_eq!(scale[0], 0, "{scale:?}");
    assert!(scale.windows(2).all(|w| w[1] - w[0] == step), "{scale:?}");
    assert!([1, 2, 5].contains(&step), "{scale:?}");
    let top = *scale.last().unwrap();
    assert!(top >= peak && top - step < peak, "{scale:?} for {peak}");
    let axis = html.split("<g class=\"axis\">").nth(1).unwrap();
    let labels = axis.matches("text-anchor=\"middle\"").count();
    assert!(
        (6..=7).contains(&labels),
        "a label every 10 minutes: {axis}"
    );
    assert_eq!(html.matches("<g class=\"bar\"").count(), 60);

    let (_, html, _) = get_html(&app, "/tasks?state=pending").await;
    for region in ["rows", "pages"] {
        assert!(
            html.contains(&format!("data-live=\"{region}\"")),
            "{region}: {html}"
        );
    }
    // The filters and the action buttons are no live region: what a person
    // types or picks is never replaced.
    let rows = html.split("data-live=\"rows\"").nth(1).unwrap();
    assert!(
        !rows.contains("<button") && !rows.contains("name=\"q\""),
        "{rows}"
    );

    // The page may fetch itself again (app.js does), and nothing else.
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/dash/").to_request()).await;
    let policy = response
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    t
}

async fn lists_filter_and_page_by_keyset(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    // Seven due tasks with priorities 0..7: claim order is highest first.
    for i in 0..7 {
        queue
            .enqueue::<Add>(&(i, 0))
            .priority(i as i32)
            .queue(if i % 2 == 0 { "even" } else { "odd" })
            .await
            .unwrap();
    }
    queue
        .enqueue_call(
            "mail",
            &(),
            &Mail {
                to: "ada@example.com".into(),
            },
        )
        .await
        .unwrap();
    queue.enqueue::<Add>(&(9, 9)).schedule(600).await.unwrap();
    let app = app(full(&queue)).await;

    let mut seen = Vec::new();
    let mut path = "/api/tasks?state=pending&name=add&limit=3".to_owned();
    loop {
        let (status, page) = get_json(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let rows = page["rows"].as_array().unwrap();
        assert!(rows.len() <= 3);
        seen.extend(rows.iter().map(|r| r["priority"].as_i64().unwrap()));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/tasks?state=pending&name=add&limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![6, 5, 4, 3, 2, 1, 0],
        "claim order across pages, nothing twice"
    );

    let (_, odd) = get_json(&app, "/api/tasks?state=pending&queue=odd").await;
    assert_eq!(odd["rows"].as_array().unwrap().len(), 3);
    let (_, default) = get_json(&app, "/api/tasks?state=pending&queue=(default)").await;
    assert_eq!(default["rows"].as_array().unwrap().len(), 1, "{default}");
    assert_eq!(default["rows"][0]["task_name"], "mail");
    let (_, searched) = get_json(&app, "/api/tasks?state=pending&q=ada%40example").await;
    assert_eq!(
        searched["rows"].as_array().unwrap().len(),
        1,
        "search over params"
    );
    let (_, scheduled) = get_json(&app, "/api/tasks?state=scheduled").await;
    assert_eq!(scheduled["rows"].as_array().unwrap().len(), 1);
    let until = (Utc::now() + TimeDelta::seconds(60)).format("%Y-%m-%dT%H:%M:%SZ");
    let (_, timed) = get_json(&app, &format!("/api/tasks?state=scheduled&until={until}")).await;
    assert_eq!(
        timed["rows"].as_array().unwrap().len(),
        0,
        "until excludes the later run"
    );
    let (_, recent) = get_json(&app, "/api/tasks?state=pending&since=1h").await;
    assert_eq!(recent["rows"].as_array().unwrap().len(), 8);

    // The HTML list pages the same way and links the next page.
    let (status, html, _) = get_html(&app, "/tasks?state=pending&limit=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("<tr data-id=").count(), 5);
    assert!(html.contains("next page"), "{html}");
    let next = html
        .split("class=\"next\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let next = next.strip_prefix(MOUNT).unwrap();
    let (_, second, _) = get_html(&app, next).await;
    assert_eq!(second.matches("<tr data-id=").count(), 3, "{second}");
    assert!(second.contains("first page"));
    assert!(!second.contains("next page"));

    // History states page newest first.
    for i in 0..4 {
        history(&t, "add", &format!("[[{i}, 0], {{}}]"), Some("boom"), None).await;
    }
    let (_, failed) = get_json(&app, "/api/tasks?state=failed&limit=3").await;
    let ids: Vec<i64> = failed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let (_, rest) = get_json(
        &app,
        &format!(
            "/api/tasks?state=failed&limit=3&after={}",
            failed["next"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(rest["rows"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
    t
}

/// The ids of a listing's rows.
fn ids(page: &Value) -> Vec<i64> {
    page["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {page}"))
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect()
}

/// Every page of `list` (a `/api/tasks?…` path), following `next` from
/// the first page: the pages' ids, and the last page's `prev`.
async fn pages_forward<S, B>(app: &S, list: &str) -> (Vec<Vec<i64>>, Value)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut pages = Vec::new();
    let mut path = list.to_owned();
    loop {
        let (status, page) = get_json(app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert_eq!(
            page["prev"].is_null(),
            pages.is_empty(),
            "only the first page has no previous page: {path}: {page}"
        );
        pages.push(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("{list}&after={next}"),
            None => return (pages, page["prev"].clone()),
        }
    }
}

async fn lists_page_backwards_as_well_as_forwards(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    for i in 0..7 {
        queue
            .enqueue::<Add>(&(i, 0))
            .priority(i as i32)
            .await
            .unwrap();
    }
    for i in 0..5 {
        History {
            params: format!("[[{i}, 0], {{}}]"),
            age: TimeDelta::minutes(10 - i),
            ..History::of("add")
        }
        .insert(&t)
        .await;
    }
    let app = app(full(&queue)).await;
    for (list, rows) in [
        ("/api/tasks?state=pending&limit=3", 7),
        ("/api/tasks?state=completed&limit=2", 5),
    ] {
        let (forward, mut prev) = pages_forward(&app, list).await;
        assert_eq!(forward.concat().len(), rows, "{list}: {forward:?}");
        // Back from the last page, page by page, to the first.
        let mut backward = vec![forward.last().unwrap().clone()];
        while let Some(before) = prev.as_str() {
            let (status, page) = get_json(&app, &format!("{list}&before={before}")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let next = page["next"]
                .as_str()
                .expect("a page before another has a next");
            let (_, again) = get_json(&app, &format!("{list}&after={next}")).await;
            assert_eq!(
                ids(&again),
                *backward.last().unwrap(),
                "{list}: the next page of a previous page is the page we came from"
            );
            backward.push(ids(&page));
            prev = page["prev"].clone();
        }
        backward.reverse();
        assert_eq!(backward, forward, "{list}: the same pages, both ways");
    }

    // Rows gone from the first page since: going back from the second
    // lands on a full first page, not a short one.
    let (_, first) = get_json(&app, "/api/tasks?state=pending&limit=3").await;
    let (_, second) = get_json(
        &app,
        &format!(
            "/api/tasks?state=pending&limit=3&after={}",
            first["next"].as_str().unwrap()
        ),
    )
    .await;
    let gone = ids(&first)[0];
    let (status, _) = post_json(&app, json!({"action": "delete", "ids": [gone]})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, back) = get_json(
        &app,
        &format!(
            "/api/tasks?state=pending&limit=3&before={}",
            second["prev"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        ids(&back),
        [&ids(&first)[1..], &ids(&second)[..1]].concat(),
        "{back}"
    );
    assert!(back["prev"].is_null(), "it is the first page: {back}");

    // The HTML list links both ways.
    let (_, html, _) = get_html(&app, "/tasks?state=pending&limit=2").await;
    assert!(!html.contains("previous page"), "{html}");
    let link = |html: &str, class: &str| {
        let href = html
            .split(&format!("class=\"{class}\" href=\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {class} link in {html}"))
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&");
        href.strip_prefix(MOUNT).unwrap().to_owned()
    };
    let (_, second, _) = get_html(&app, &link(&html, "next")).await;
    assert!(second.contains("first page"), "{second}");
    let (status, back, _) = get_html(&app, &link(&second, "prev")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(back.matches("<tr data-id=").count(), 2, "{back}");
    assert!(
        !back.contains("previous page"),
        "back on the first page: {back}"
    );

    let (status, body) = get_json(
        &app,
        &format!(
            "/api/tasks?state=pending&after={0}&before={0}",
            first["next"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("not both"),
        "{body}"
    );
    let (status, body) = get_json(&app, "/api/tasks?state=pending&before=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("`before`"),
        "{body}"
    );
    t
}

async fn details_show_params_error_and_chain(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let task = queue
        .enqueue::<Add>(&(1, 2))
        .repeat(60)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    // An earlier run of the same call, failed.
    let earlier = History {
        params: task.task_params.clone(),
        hash: Some(task.task_hash.clone()),
        error: Some("Traceback: ValueError: no".into()),
        repeat: 60,
        attempts: Some(3),
        creator: Some((7, 8)),
        ..History::of(&task.task_name)
    }
    .insert(&t)
    .await;
    let app = app(full(&queue)).await;

    let (status, detail) = get_json(&app, &format!("/api/tasks/{}", task.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["task"]["task_params"], "[[1, 2], {}]");
    assert_eq!(detail["chain"]["history"][0]["id"], earlier);
    let (status, html, _) = get_html(&app, &format!("/tasks/{}", task.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("every 60 s"), "{html}");
    assert!(
        html.contains(&format!("/dash/completed/{earlier}")),
        "the chain links the earlier run"
    );

    let (status, html, _) = get_html(&app, &format!("/completed/{earlier}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Traceback: ValueError: no"));
    assert!(html.contains("content type 7, object 8"));
    assert!(
        html.contains("value=\"retry\""),
        "a failed row offers retry"
    );
    let (_, json) = get_json(&app, &format!("/api/completed/{earlier}")).await;
    assert_eq!(json["completed"]["attempts"], 3);
    assert_eq!(json["chain"]["waiting"][0]["id"], task.id);

    let (status, missing) = get_json(&app, "/api/tasks/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["error"].as_str().unwrap().contains("999999"));
    let (status, _, _) = get_html(&app, "/completed/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t
}

fn location<B>(response: &ServiceResponse<B>) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

async fn form_actions_change_the_database(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let later = queue
        .enqueue::<Add>(&(1, 1))
        .schedule(3_600)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let other = queue
        .enqueue::<Add>(&(2, 1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let running = queue
        .enqueue::<Add>(&(3, 1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    lock(&t, running.id).await;
    let failed = history(&t, "add", "[[4, 1], {}]", Some("boom"), Some("q")).await;
    let done = history(&t, "add", "[[5, 1], {}]", None, None).await;
    let app = app(full(&queue)).await;
    let token = token(&app).await;
    let back = "/dash/tasks?state=scheduled".to_owned();

    // Run now: the scheduled task becomes due; the running one is untouched.
    let response = post_form(
        &app,
        &token,
        &[
            ("action", "run_now".into()),
            ("id", later.id.to_string()),
            ("id", running.id.to_string()),
            ("back", back.clone()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("{back}&done=run_now&n=1"));
    let row = task_row::Entity::find_by_id(later.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.run_at <= Utc::now());
    let (_, html, _) = get_html(&app, &location(&response)[MOUNT.len()..]).await;
    assert!(html.contains("1 task made due now."), "{html}");

    // Priority +1 twice, -1 once.
    for action in ["priority_up", "priority_up", "priority_down"] {
        post_form(
            &app,
            &token,
            &[("action", action.into()), ("id", other.id.to_string())],
        )
        .await;
    }
    let row = task_row::Entity::find_by_id(other.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.priority, other.priority + 1);

    // Cancel: the waiting task moves to the history as failed, on record;
    // the running one is asked to stop.
    let response = post_form(
        &app,
        &token,
        &[
            ("action", "cancel".into()),
            ("id", other.id.to_string()),
            ("id", running.id.to_string()),
        ],
    )
    .await;
    assert!(
        location(&response).ends_with("done=cancel&n=2"),
        "{}",
        location(&response)
    );
    assert!(
        task_row::Entity::find_by_id(other.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        task_row::Entity::find_by_id(running.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_some_and(|row| row.cancel_requested_at.is_some()),
        "a running task is asked to stop; its runner records it"
    );
    let cancelled = completed_task::Entity::find()
        .filter(completed_task::Column::LastError.eq(background_tasks::admin::CANCELLED_ERROR))
        .all(&t.db)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert!(cancelled[0].failed_at.is_some());

    // Retry: the failed history row becomes a due task again.
    let response = post_form(
        &app,
        &token,
        &[
            ("action", "retry".into()),
            ("id", failed.to_string()),
            ("id", done.to_string()),
        ],
    )
    .await;
    assert!(
        location(&response).ends_with("done=retry&n=1"),
        "a succeeded row is not retried"
    );
    assert!(
        completed_task::Entity::find_by_id(failed)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    let retried = task_row::Entity::find()
        .filter(task_row::Column::TaskParams.eq("[[4, 1], {}]"))
        .one(&t.db)
        .await
        .unwrap()
        .expect("the retried task waits again");
    assert_eq!(
        (
            retried.attempts,
            retried.queue.as_deref(),
            retried.last_error.as_str()
        ),
        (0, Some("q"), "boom")
    );
    assert!(retried.locked_by.is_none());

    // Delete a task, and a history row.
    post_form(
        &app,
        &token,
        &[("action", "delete".into()), ("id", later.id.to_string())],
    )
    .await;
    assert!(
        task_row::Entity::find_by_id(later.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    post_form(
        &app,
        &token,
        &[
            ("action", "delete_completed".into()),
            ("id", done.to_string()),
        ],
    )
    .await;
    assert!(
        completed_task::Entity::find_by_id(done)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );

    // A redirect never leaves the dashboard: such a form is refused
    // (boundaries.rs tries every kind of return address).
    let response = post_form(
        &app,
        &token,
        &[
            ("action", "run_now".into()),
            ("id", retried.id.to_string()),
            ("back", "https://evil.example/".into()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    t
}

async fn json_actions_change_the_database(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let failed = history(&t, "add", "[[1, 1], {}]", Some("boom"), None).await;
    let app = app(full(&queue)).await;
    let (status, body) = post_json(&app, json!({"action": "retry", "ids": [failed]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], 1);
    let new_id = body["ids"][0].as_i64().unwrap() as i32;
    assert!(
        task_row::Entity::find_by_id(new_id)
            .one(&t.db)
            .await
            .unwrap()
            .is_some()
    );
    let (status, body) = post_json(&app, json!({"action": "priority_up", "ids": [new_id]})).await;
    assert_eq!(
        (status, body["changed"].as_i64()),
        (StatusCode::OK, Some(1))
    );
    let (status, body) = post_json(&app, json!({"action": "delete", "ids": [new_id]})).await;
    assert_eq!(
        (status, body["changed"].as_i64()),
        (StatusCode::OK, Some(1))
    );
    assert!(
        task_row::Entity::find_by_id(new_id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    t
}

async fn csrf_and_origin_failures_change_nothing(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let task = queue
        .enqueue::<Add>(&(1, 1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let app = app(full(&queue)).await;
    let token = token(&app).await;
    let delete = |request: test::TestRequest| {
        request
            .uri(&format!("{MOUNT}/actions"))
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
    };
    // No cookie, no token.
    let request = delete(test::TestRequest::post())
        .set_payload(format!("action=delete&id={}", task.id))
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    assert!(body.contains("CSRF check failed"), "{body}");
    // A token that does not match the cookie.
    let request = delete(test::TestRequest::post())
        .cookie(actix_web::cookie::Cookie::new(
            "bgtasks_csrf",
            token.clone(),
        ))
        .set_payload(format!(
            "csrf={}&action=delete&id={}",
            "0".repeat(64),
            task.id
        ))
        .to_request();
    assert_eq!(
        test::call_service(&app, request).await.status(),
        StatusCode::FORBIDDEN
    );
    // The right token, from another site.
    let request = delete(test::TestRequest::post())
        .cookie(actix_web::cookie::Cookie::new(
            "bgtasks_csrf",
            token.clone(),
        ))
        .insert_header((header::ORIGIN, "https://evil.example"))
        .set_payload(format!("csrf={token}&action=delete&id={}", task.id))
        .to_request();
    assert_eq!(
        test::call_service(&app, request).await.status(),
        StatusCode::FORBIDDEN
    );
    // JSON actions must be JSON: a form post to the API is refused.
    let request = test::TestRequest::post()
        .uri(&format!("{MOUNT}/api/actions"))
        .insert_header((header::CONTENT_TYPE, "text/plain"))
        .set_payload(format!(
            "{{\"action\": \"delete\", \"ids\": [{}]}}",
            task.id
        ))
        .to_request();
    assert_eq!(
        test::call_service(&app, request).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert!(
        task_row::Entity::find_by_id(task.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_some(),
        "nothing was deleted"
    );
    t
}

async fn authorization_and_read_only_are_enforced(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let task = queue
        .enqueue::<Add>(&(1, 1))
        .await
        .unwrap()
        .into_task()
        .unwrap();

    // No hook: every request is refused, saying what to do.
    let closed = app(Dashboard::new(queue.clone())).await;
    let (status, html, _) = get_html(&closed, "/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("Dashboard::authorize"), "{html}");
    // A hook that denies: pages, API and metrics are refused.
    let denied = app(Dashboard::new(queue.clone()).authorize(|request| {
        if request.headers().contains_key("x-admin") {
            Access::Full
        } else {
            Access::Denied
        }
    }))
    .await;
    for path in ["/", "/tasks?state=pending", "/runners", "/metrics"] {
        assert_eq!(
            get_html(&denied, path).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let (status, body) = get_json(&denied, "/api/overview").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"].is_string(), "API errors are JSON: {body}");
    let request = test::TestRequest::get()
        .uri(&format!("{MOUNT}/"))
        .insert_header(("x-admin", "1"))
        .to_request();
    assert_eq!(
        test::call_service(&denied, request).await.status(),
        StatusCode::OK
    );

    // Read-only, by the hook or by the dashboard: pages show no buttons,
    // actions are refused.
    for dashboard in [
        Dashboard::new(queue.clone()).authorize(|_| Access::ReadOnly),
        full(&queue).read_only(true),
    ] {
        let app = app(dashboard).await;
        let (status, html, cookie) = get_html(&app, "/tasks?state=pending").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("read-only"));
        assert!(!html.contains("value=\"delete\""), "{html}");
        let response = post_form(
            &app,
            &cookie.unwrap(),
            &[("action", "delete".into()), ("id", task.id.to_string())],
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let (status, _) = post_json(&app, json!({"action": "delete", "ids": [task.id]})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert!(
        task_row::Entity::find_by_id(task.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_some()
    );
    t
}

async fn what_tasks_carry_is_escaped(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let evil = "<script>alert('x')</script>";
    let task = queue
        .enqueue_call("<b>bold</b>", &(evil,), &())
        .verbose_name("<img src=x onerror=alert(1)>")
        .queue("<i>q</i>")
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let failed = history(
        &t,
        "<b>bold</b>",
        "[[\"<script>x</script>\"], {}]",
        Some("<script>err</script>"),
        None,
    )
    .await;
    let app = app(full(&queue)).await;
    for path in [
        "/tasks?state=pending".to_owned(),
        format!("/tasks/{}", task.id),
        format!("/completed/{failed}"),
        "/tasks?state=failed".to_owned(),
        "/".to_owned(),
        format!("/tasks?state=pending&q={}", "%3Cscript%3E"),
    ] {
        let (status, html, _) = get_html(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!html.contains("<script>alert"), "{path}: {html}");
        assert!(!html.contains("<script>x"), "{path}");
        assert!(!html.contains("<script>err"), "{path}");
        assert!(!html.contains("<b>bold"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
    }
    let (_, html, _) = get_html(&app, &format!("/tasks/{}", task.id)).await;
    assert!(
        html.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    t
}

async fn metrics_and_runners_report_a_running_runner(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Add);
    let queue = t.queue(registry, Config::default());
    let runner = background_tasks::Runner::start(queue.clone()).unwrap();
    queue.enqueue::<Add>(&(1, 2)).await.unwrap();
    queue
        .enqueue::<Add>(&(1, 3))
        .schedule(600)
        .queue("later")
        .await
        .unwrap();
    let db = t.db.clone();
    crate::fixture::wait_for(
        "the task to complete",
        std::time::Duration::from_secs(20),
        || {
            let db = db.clone();
            async move { completed_task::Entity::find().all(&db).await.unwrap().len() == 1 }
        },
    )
    .await;
    // The runner registers itself beside its first claims: wait for its row.
    let lease = queue.config().lease();
    crate::fixture::wait_for(
        "the runner to register",
        std::time::Duration::from_secs(20),
        || {
            let db = db.clone();
            async move {
                background_tasks::admin::runners(&db, lease, Utc::now())
                    .await
                    .unwrap()
                    .iter()
                    .any(|r| r.alive)
            }
        },
    )
    .await;
    let app = app(full(&queue)).await;
    let response = test::call_service(
        &app,
        test::TestRequest::get().uri("/dash/metrics").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    for line in [
        "background_tasks_started_total{task=\"add\",queue=\"\"} 1",
        "background_tasks_succeeded_total{task=\"add\",queue=\"\"} 1",
        "background_tasks_execution_seconds_count{task=\"add\",queue=\"\"} 1",
        "background_tasks_pickup_latency_seconds_count{queue=\"\"} 1",
        "background_tasks_tasks{queue=\"later\",state=\"scheduled\"} 1",
        "background_tasks_tasks{queue=\"later\",state=\"pending\"} 0",
        "background_tasks_runners_alive 1",
        "background_tasks_oldest_due_age_seconds 0",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let (status, runners) = get_json(&app, "/api/runners").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runners[0]["alive"], true, "{runners}");
    assert_eq!(runners[0]["runner"]["runner_id"], queue.runner_id());
    // It finished one task within the minute it has run: one a minute.
    let throughput = &runners[0]["throughput"];
    assert_eq!(throughput["finished"], 1, "{runners}");
    assert_eq!(throughput["window_seconds"], 60, "{runners}");
    assert_eq!(throughput["per_minute"], 1.0, "{runners}");
    assert!(
        runners[0]["runner"]["executors"].as_i64().unwrap() >= 1,
        "{runners}"
    );
    let (_, html, _) = get_html(&app, "/runners").await;
    assert!(
        html.contains(queue.runner_id()) && html.contains("alive"),
        "{html}"
    );
    assert!(html.contains("<td class=\"num throughput\""), "{html}");
    assert!(html.contains(">1.0</td>"), "one task a minute: {html}");
    assert!(
        html.contains("in flight") && html.contains("<meter"),
        "{html}"
    );
    runner.shutdown(std::time::Duration::from_secs(5)).await;
    t
}

async fn bad_input_is_answered_clearly(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let app = app(full(&queue)).await;
    let (status, body) = get_json(&app, "/api/tasks?state=done").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("pending, scheduled"),
        "{body}"
    );
    let (status, body) = get_json(&app, "/api/tasks?state=pending&since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("30s, 15m"),
        "{body}"
    );
    let (status, body) = get_json(&app, "/api/tasks?state=pending&after=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, html, _) = get_html(&app, "/tasks?state=done").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the page shows the problem beside the filters"
    );
    assert!(html.contains("role=\"alert\""), "{html}");
    let (status, body) = post_json(&app, json!({"action": "explode", "ids": [1]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("run_now"),
        "{body}"
    );
    let (status, body) = post_json(&app, json!({"action": "retry", "ids": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing is selected"),
        "{body}"
    );
    let (status, _) = post_json(&app, json!({"action": "retry"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get_html(&app, "/tasks/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for (asset, kind) in [("style.css", "text/css"), ("app.js", "text/javascript")] {
        let request = test::TestRequest::get()
            .uri(&format!("{MOUNT}/assets/{asset}"))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let content_type = response.headers().get(header::CONTENT_TYPE).unwrap();
        assert!(content_type.to_str().unwrap().starts_with(kind), "{asset}");
    }
    let (status, _, _) = get_html(&app, "/assets/../../etc/passwd").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t
}

/// Sends `body` (JSON) with `method` to `path` under the mount.
async fn send_json<S, B>(
    app: &S,
    request: test::TestRequest,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = request.uri(&format!("{MOUNT}{path}"));
    let request = match body {
        Some(body) => request.set_json(body),
        None => request.insert_header((header::CONTENT_TYPE, "application/json")),
    };
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn schedules_are_managed_through_the_json_api(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let app = app(full(&queue)).await;
    // Bad input: 400 with what to give, nothing stored.
    let (status, body) = send_json(
        &app,
        test::TestRequest::post(),
        "/api/schedules",
        Some(json!({"name": "nightly", "cron": "at night", "task": "add"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("5 fields"),
        "{body}"
    );
    let (status, _) = send_json(
        &app,
        test::TestRequest::post(),
        "/api/schedules",
        Some(json!({"name": "nightly", "crontab": "0 3 * * *", "task": "add"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        background_tasks::cron::list(&t.db)
            .await
            .unwrap()
            .is_empty()
    );

    let (status, body) = send_json(
        &app,
        test::TestRequest::post(),
        "/api/schedules",
        Some(json!({
            "name": "nightly", "cron": "0 3 * * *", "task": "add", "args": [1, 2],
            "timezone": "Asia/Tokyo", "queue": "night", "priority": 4, "missed": "run_once"
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["task_params"], "[[1, 2], {}]");
    let stored = background_tasks::cron::get(&t.db, "nightly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            stored.timezone.as_str(),
            stored.queue.as_deref(),
            stored.priority
        ),
        ("Asia/Tokyo", Some("night"), 4)
    );
    let (status, body) = get_json(&app, "/api/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["name"], "nightly");
    assert_eq!(body[0]["upcoming"].as_array().unwrap().len(), 3);
    let (status, page, _) = get_html(&app, "/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("nightly") && page.contains("Asia/Tokyo"),
        "{page}"
    );

    let (status, _) = send_json(
        &app,
        test::TestRequest::post(),
        "/api/schedules/nightly/pause",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        background_tasks::cron::get(&t.db, "nightly")
            .await
            .unwrap()
            .unwrap()
            .paused
    );
    let (status, _) = send_json(
        &app,
        test::TestRequest::post(),
        "/api/schedules/nightly/resume",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !background_tasks::cron::get(&t.db, "nightly")
            .await
            .unwrap()
            .unwrap()
            .paused
    );
    let (status, _) = send_json(
        &app,
        test::TestRequest::delete(),
        "/api/schedules/nightly",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        background_tasks::cron::get(&t.db, "nightly")
            .await
            .unwrap()
            .is_none()
    );
    let (status, _) = send_json(
        &app,
        test::TestRequest::delete(),
        "/api/schedules/nightly",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Read-only dashboards cannot change schedules.
    let read_only = app_read_only(&queue).await;
    let (status, _) = send_json(
        &read_only,
        test::TestRequest::post(),
        "/api/schedules",
        Some(json!({"name": "x", "cron": "0 3 * * *", "task": "add"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        background_tasks::cron::list(&t.db)
            .await
            .unwrap()
            .is_empty()
    );
    t
}

async fn app_read_only(
    queue: &Queue,
) -> impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    app(full(queue).read_only(true)).await
}

async fn queues_pause_and_runners_drain_through_the_api_and_the_pages(t: TestDb) -> TestDb {
    // A one-second heartbeat.
    let config = Config::builder()
        .lease(std::time::Duration::from_secs(3))
        .build()
        .unwrap();
    let queue = t.queue(Registry::new(), config);
    queue.enqueue::<Add>(&(1, 2)).queue("mail").await.unwrap();
    let app = app(full(&queue)).await;
    let post = test::TestRequest::post;
    // Pause: a known queue, again (already), an unknown one (400, nothing
    // paused), an unknown one on purpose, the default queue.
    let (status, body) = send_json(
        &app,
        post(),
        "/api/queues/pause",
        Some(json!({"queue": "mail"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"queue": "mail", "paused": true, "already": false})
    );
    let (_, body) = send_json(
        &app,
        post(),
        "/api/queues/pause",
        Some(json!({"queue": "mail"})),
    )
    .await;
    assert_eq!(body["already"], true);
    let (status, body) = send_json(
        &app,
        post(),
        "/api/queues/pause",
        Some(json!({"queue": "mial"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"new\": true"),
        "{body}"
    );
    let (status, _) = send_json(
        &app,
        post(),
        "/api/queues/pause",
        Some(json!({"queue": "reports", "new": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send_json(
        &app,
        post(),
        "/api/queues/pause",
        Some(json!({"queue": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Hostile and malformed bodies: a clear 400, nothing changed.
    for bad in [
        json!({"queue": "x\u{0}y", "new": true}),
        json!({"queue": "q".repeat(191), "new": true}),
        json!({"queue": ""}),
        json!({"queue": 7}),
        json!({"queues": ["mail"]}),
    ] {
        let (status, body) = send_json(&app, post(), "/api/queues/pause", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let (status, body) = get_json(&app, "/api/queues/paused").await;
    assert_eq!(status, StatusCode::OK);
    let paused: Vec<Value> = body["paused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["queue"].clone())
        .collect();
    assert_eq!(paused, vec![Value::Null, json!("mail"), json!("reports")]);
    // The metrics say which queues are paused.
    let (_, text, _) = get_html(&app, "/metrics").await;
    assert!(
        text.contains("background_tasks_queue_paused{queue=\"mail\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("background_tasks_queue_paused{queue=\"\"} 1"),
        "{text}"
    );
    // The overview marks them and offers Resume.
    let (_, html, _) = get_html(&app, "/").await;
    assert!(html.contains("data-paused=\"true\""), "{html}");
    assert!(html.contains(">Resume<"), "{html}");
    // Resume: paused (200), not paused (404).
    let (status, body) = send_json(
        &app,
        post(),
        "/api/queues/resume",
        Some(json!({"queue": "reports"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send_json(
        &app,
        post(),
        "/api/queues/resume",
        Some(json!({"queue": "reports"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // The dashboard's form resumes the default queue, CSRF-checked.
    let token = token(&app).await;
    let request = test::TestRequest::post()
        .uri(&format!("{MOUNT}/controls"))
        .cookie(actix_web::cookie::Cookie::new(
            "bgtasks_csrf",
            token.clone(),
        ))
        .set_form(vec![
            ("csrf", token.clone()),
            ("control", "resume".to_owned()),
            ("queue", "(default)".to_owned()),
            ("back", format!("{MOUNT}/")),
        ])
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("{MOUNT}/?control=resumed"));
    let (_, html, _) = get_html(&app, "/?control=resumed").await;
    assert!(html.contains("Queue resumed"), "{html}");
    let paused = background_tasks::controls::paused(&t.db).await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].queue.as_deref(), Some("mail"));
    // Without the CSRF token: refused, nothing resumed.
    let request = test::TestRequest::post()
        .uri(&format!("{MOUNT}/controls"))
        .set_form(vec![
            ("control", "resume".to_owned()),
            ("queue", "mail".to_owned()),
        ])
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        background_tasks::controls::paused(&t.db)
            .await
            .unwrap()
            .len(),
        1
    );

    // Drain: an unknown runner is a 404; a registered one is asked once.
    let (status, body) = send_json(
        &app,
        post(),
        "/api/runners/drain",
        Some(json!({"runner": "nobody:1:0"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let runner = background_tasks::Runner::start(queue.clone()).unwrap();
    crate::fixture::wait_for(
        "the runner registered",
        std::time::Duration::from_secs(30),
        || async {
            background_tasks::runner_row::Entity::find()
                .one(&t.db)
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    let (_, html, _) = get_html(&app, "/runners").await;
    assert!(html.contains(">Drain<"), "{html}");
    let (status, body) = send_json(
        &app,
        post(),
        "/api/runners/drain",
        Some(json!({"runner": queue.runner_id()})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["already"], false);
    // The runner sees it at its next heartbeat.
    tokio::time::timeout(std::time::Duration::from_secs(30), runner.drain_requested())
        .await
        .expect("the runner saw the drain request at a heartbeat");
    assert!(runner.is_draining());
    let (_, html, _) = get_html(&app, "/runners").await;
    assert!(html.contains(">draining<"), "{html}");
    let (_, text, _) = get_html(&app, "/metrics").await;
    assert!(
        text.contains("background_tasks_runners_draining 1"),
        "{text}"
    );
    assert!(text.contains("background_tasks_draining 1"), "{text}");
    runner.shutdown(std::time::Duration::from_secs(5)).await;
    t
}
