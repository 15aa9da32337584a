//! The JSON API behind the dashboard, and the metrics endpoint. Handlers
//! are thin: parse, call [`crate::inspect`] / [`crate::admin`], answer.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::actions::{self, Action};
use super::{Ctx, WebError};
use crate::inspect::{self, Cursor, Filter, QueueFilter, State};

/// Page size when none is asked for.
pub(crate) const DEFAULT_LIMIT: u64 = 50;

/// The list filters, as query parameters (shared by `/tasks` and
/// `/api/tasks`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    pub(crate) state: Option<String>,
    #[serde(default)]
    pub(crate) queue: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) q: Option<String>,
    #[serde(default)]
    pub(crate) since: Option<String>,
    #[serde(default)]
    pub(crate) until: Option<String>,
    #[serde(default)]
    pub(crate) after: Option<String>,
    #[serde(default)]
    pub(crate) before: Option<String>,
    #[serde(default)]
    pub(crate) limit: Option<u64>,
}

/// A parsed listing request.
pub(crate) struct Listing {
    pub(crate) state: State,
    pub(crate) filter: Filter,
    /// The page after this cursor (a `next`)...
    pub(crate) after: Option<Cursor>,
    /// ...or the page before this one (a `prev`); never both.
    pub(crate) before: Option<Cursor>,
    pub(crate) limit: u64,
}

impl Listing {
    /// The page asked for.
    pub(crate) async fn page(
        &self,
        db: &sea_orm::DatabaseConnection,
        now: chrono::DateTime<chrono::Utc>,
    ) -> crate::Result<inspect::Page> {
        match &self.before {
            Some(before) => {
                inspect::list_before(db, self.state, &self.filter, before, self.limit, now).await
            }
            None => {
                inspect::list(
                    db,
                    self.state,
                    &self.filter,
                    self.after.as_ref(),
                    self.limit,
                    now,
                )
                .await
            }
        }
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Refuses text no database stores or compares: a NUL byte (PostgreSQL
/// refuses it in any text).
pub(crate) fn check_text(field: &'static str, value: &str) -> crate::Result<()> {
    if value.contains('\0') {
        return Err(crate::Error::invalid(
            field,
            "it holds a NUL byte (\\0), which the database cannot store or compare; remove it",
        ));
    }
    Ok(())
}

/// `err`, said of the parameter `field`.
fn about(field: &'static str, err: crate::Error) -> crate::Error {
    match err {
        crate::Error::InvalidOption { reason, .. } => crate::Error::invalid(field, reason),
        err => err,
    }
}

impl ListQuery {
    pub(crate) fn parse(&self, now: chrono::DateTime<chrono::Utc>) -> crate::Result<Listing> {
        for (field, value) in [
            ("state", &self.state),
            ("queue", &self.queue),
            ("name", &self.name),
            ("q", &self.q),
            ("since", &self.since),
            ("until", &self.until),
            ("after", &self.after),
            ("before", &self.before),
        ] {
            check_text(field, value.as_deref().unwrap_or_default())?;
        }
        let state = match non_empty(&self.state) {
            Some(state) => state.parse()?,
            None => State::Pending,
        };
        let time = |field: &'static str, value: &Option<String>| {
            non_empty(value)
                .map(|text| inspect::parse_time(text, now).map_err(|err| about(field, err)))
                .transpose()
        };
        let cursor = |field: &'static str, value: &Option<String>| {
            non_empty(value)
                .map(|text| text.parse().map_err(|err| about(field, err)))
                .transpose()
        };
        let (after, before) = (
            cursor("after", &self.after)?,
            cursor("before", &self.before)?,
        );
        if after.is_some() && before.is_some() {
            return Err(crate::Error::invalid(
                "before",
                "give `after` (the next page) or `before` (the previous page), not both",
            ));
        }
        Ok(Listing {
            state,
            filter: Filter {
                queue: QueueFilter::parse(non_empty(&self.queue).unwrap_or_default()),
                name: non_empty(&self.name).map(str::to_owned),
                search: non_empty(&self.q).map(str::to_owned),
                since: time("since", &self.since)?,
                until: time("until", &self.until)?,
            },
            after,
            before,
            limit: self
                .limit
                .unwrap_or(DEFAULT_LIMIT)
                .clamp(1, inspect::MAX_PAGE),
        })
    }
}

pub(super) fn api(err: impl Into<WebError>) -> WebError {
    err.into().json(true)
}

/// The overview's throughput chart: the last hour, per minute.
pub(crate) const CHART_BUCKET: TimeDelta = TimeDelta::minutes(1);
/// Buckets in the overview's chart.
pub(crate) const CHART_BUCKETS: u32 = 60;

pub(crate) async fn overview(ctx: Ctx) -> Result<HttpResponse, WebError> {
    let (db, now) = (ctx.queue().db(), ctx.now());
    let overview = inspect::overview(db, now).await.map_err(api)?;
    let throughput = inspect::throughput(db, now, CHART_BUCKET, CHART_BUCKETS)
        .await
        .map_err(api)?;
    let runners = crate::admin::runners(db, ctx.queue().config().lease(), now)
        .await
        .map_err(api)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "now": overview.now,
        "counts": overview.counts,
        "oldest_due": overview.oldest_due,
        "oldest_due_age_seconds": overview.oldest_due_age().map(|age| age.as_seconds_f64()),
        "throughput": throughput,
        "runners_alive": runners.iter().filter(|r| r.alive).count(),
    })))
}

pub(crate) async fn tasks(
    ctx: Ctx,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, WebError> {
    let listing = query.parse(ctx.now()).map_err(api)?;
    let page = listing
        .page(ctx.queue().db(), ctx.now())
        .await
        .map_err(api)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "state": page.state,
        "rows": page.rows,
        "next": page.next.map(|cursor| cursor.to_string()),
        "prev": page.prev.map(|cursor| cursor.to_string()),
    })))
}

fn id_of(path: &str) -> Result<i32, WebError> {
    path.parse()
        .map_err(|_| WebError::bad_request(format!("{path:?} is not a task id")))
}

/// How many runs of a chain a detail shows.
pub(crate) const CHAIN_LIMIT: u64 = 20;

pub(crate) async fn task(ctx: Ctx, id: web::Path<String>) -> Result<HttpResponse, WebError> {
    let id = id_of(&id).map_err(api)?;
    let db = ctx.queue().db();
    let task = inspect::task(db, id).await.map_err(api)?.ok_or_else(|| {
        api(WebError::not_found(format!(
            "there is no waiting or running task {id}: it may have finished; look in the history"
        )))
    })?;
    let chain = inspect::chain(db, &task.task_name, &task.task_hash, CHAIN_LIMIT)
        .await
        .map_err(api)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "task": task, "chain": chain })))
}

pub(crate) async fn completed(ctx: Ctx, id: web::Path<String>) -> Result<HttpResponse, WebError> {
    let id = id_of(&id).map_err(api)?;
    let db = ctx.queue().db();
    let completed = inspect::completed(db, id)
        .await
        .map_err(api)?
        .ok_or_else(|| api(WebError::not_found(format!("there is no history row {id}"))))?;
    let chain = inspect::chain(db, &completed.task_name, &completed.task_hash, CHAIN_LIMIT)
        .await
        .map_err(api)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "completed": completed, "chain": chain })))
}

#[derive(Serialize)]
struct RunnerJson {
    /// Its registry row: `running` is its tasks in flight, `executors` its
    /// slots.
    runner: crate::entity::runner::Model,
    alive: bool,
    throughput: crate::admin::RunnerThroughput,
}

pub(crate) async fn runners(ctx: Ctx) -> Result<HttpResponse, WebError> {
    let (db, now) = (ctx.queue().db(), ctx.now());
    let runners = crate::admin::runners(db, ctx.queue().config().lease(), now)
        .await
        .map_err(api)?;
    let throughput = crate::admin::runner_throughput(db, &runners, now)
        .await
        .map_err(api)?;
    let runners: Vec<RunnerJson> = runners
        .into_iter()
        .zip(throughput)
        .map(|(status, throughput)| RunnerJson {
            runner: status.runner,
            alive: status.alive,
            throughput,
        })
        .collect();
    Ok(HttpResponse::Ok().json(runners))
}

/// Body of `POST /api/actions`.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionRequest {
    action: String,
    ids: Vec<i32>,
}

/// A write through the API: allowed by the access hook, same-origin, and
/// sent as JSON (a cross-site form cannot send JSON without a CORS
/// preflight). The media type must be exactly `application/json`, with or
/// without parameters (`; charset=utf-8`): not a type that merely starts
/// so (`application/jsonx`), which a form cannot send either, but which
/// says the body is something else.
pub(super) fn check_write(ctx: &Ctx, req: &HttpRequest) -> Result<(), WebError> {
    ctx.check_can_act().map_err(api)?;
    ctx.check_origin(req).map_err(api)?;
    let is_json = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|mime| mime.essence_str() == "application/json");
    if !is_json {
        return Err(api(WebError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send writes as JSON, with Content-Type: application/json",
        )));
    }
    Ok(())
}

pub(crate) async fn act(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let request: ActionRequest = serde_json::from_slice(&body).map_err(|err| {
        api(WebError::bad_request(format!(
            "the body is not an action ({err}); send {{\"action\": \"retry\", \"ids\": [1, 2]}}"
        )))
    })?;
    let action: Action = request.action.parse().map_err(api)?;
    let outcome = actions::apply(ctx.queue(), action, &request.ids)
        .await
        .map_err(api)?;
    Ok(HttpResponse::Ok().json(outcome))
}

pub(crate) async fn metrics(ctx: Ctx) -> Result<HttpResponse, WebError> {
    let text = crate::metrics::render(ctx.queue()).await?;
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}

/// A schedule with its next occurrences.
#[derive(Serialize)]
struct ScheduleJson {
    #[serde(flatten)]
    schedule: crate::entity::schedule::Model,
    upcoming: Vec<chrono::DateTime<chrono::Utc>>,
}

/// `GET /api/schedules`: every cron schedule, with its next 3 occurrences.
pub(crate) async fn schedules(ctx: Ctx) -> Result<HttpResponse, WebError> {
    let now = ctx.now();
    let schedules = crate::cron::list(ctx.queue().db()).await.map_err(api)?;
    let schedules: Vec<ScheduleJson> = schedules
        .into_iter()
        .map(|schedule| ScheduleJson {
            upcoming: if schedule.paused {
                Vec::new()
            } else {
                crate::cron::upcoming(&schedule, now, 3).unwrap_or_default()
            },
            schedule,
        })
        .collect();
    Ok(HttpResponse::Ok().json(schedules))
}

/// Longest cron expression a schedule stores (`varchar(255)`).
const MAX_CRON_LEN: usize = 255;

/// Body of `POST /api/schedules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewScheduleRequest {
    name: String,
    cron: String,
    task: String,
    #[serde(default)]
    args: Vec<serde_json::Value>,
    #[serde(default)]
    kwargs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    verbose_name: Option<String>,
    #[serde(default)]
    missed: Option<String>,
}

/// `POST /api/schedules`: creates a schedule; 201 with it.
pub(crate) async fn create_schedule(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let request: NewScheduleRequest = serde_json::from_slice(&body).map_err(|err| {
        api(WebError::bad_request(format!(
            "the body is not a schedule ({err}); send {{\"name\": \"nightly\", \"cron\": \"0 3 * * *\", \
             \"task\": \"reports.build\"}} and optionally args, kwargs, timezone, queue, priority, \
             verbose_name, missed (skip or run_once)"
        )))
    })?;
    for (field, value) in [
        ("name", Some(&request.name)),
        ("cron", Some(&request.cron)),
        ("task", Some(&request.task)),
        ("timezone", request.timezone.as_ref()),
        ("queue", request.queue.as_ref()),
        ("verbose_name", request.verbose_name.as_ref()),
        ("missed", request.missed.as_ref()),
    ] {
        check_text(field, value.map_or("", String::as_str)).map_err(api)?;
    }
    // The column holds 255 characters: refused here on every backend,
    // rather than by some databases only.
    if request.cron.chars().count() > MAX_CRON_LEN {
        return Err(api(WebError::bad_request(format!(
            "invalid value for `cron`: at most {MAX_CRON_LEN} characters are allowed"
        ))));
    }
    let mut new = crate::cron::NewSchedule::call(
        &request.name,
        &request.task,
        &request.cron,
        &request.args,
        &request.kwargs,
    )
    .priority(request.priority);
    if let Some(timezone) = request.timezone {
        new = new.timezone(timezone);
    }
    if let Some(queue) = request.queue {
        new = new.queue(queue);
    }
    if let Some(label) = request.verbose_name {
        new = new.verbose_name(label);
    }
    if let Some(missed) = request.missed {
        new = new.missed(missed.parse().map_err(api)?);
    }
    let created = crate::cron::create(ctx.queue().db(), new, ctx.now())
        .await
        .map_err(api)?;
    tracing::info!(schedule = created.name, "schedule created through the API");
    Ok(HttpResponse::Created().json(created))
}

/// `POST /api/schedules/{name}/{pause|resume}` and
/// `DELETE /api/schedules/{name}`.
pub(crate) async fn change_schedule(
    ctx: Ctx,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let (name, change) = path.into_inner();
    check_text("name", &name).map_err(api)?;
    let db = ctx.queue().db();
    let found = match change.as_str() {
        "pause" => crate::cron::pause(db, &name).await,
        "resume" => crate::cron::resume(db, &name, ctx.now()).await,
        other => {
            return Err(api(WebError::not_found(format!(
                "{other:?} is not a schedule change; use pause or resume (or DELETE the schedule)"
            ))));
        }
    }
    .map_err(api)?;
    schedule_changed(&name, &change, found)
}

/// `DELETE /api/schedules/{name}`.
pub(crate) async fn remove_schedule(
    ctx: Ctx,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    check_text("name", &name).map_err(api)?;
    let found = crate::cron::remove(ctx.queue().db(), &name)
        .await
        .map_err(api)?;
    schedule_changed(&name, "remove", found)
}

fn schedule_changed(name: &str, change: &str, found: bool) -> Result<HttpResponse, WebError> {
    if !found {
        return Err(api(WebError::not_found(format!(
            "there is no schedule named {name:?}"
        ))));
    }
    tracing::info!(schedule = name, change, "schedule changed through the API");
    Ok(HttpResponse::Ok().json(serde_json::json!({"schedule": name, "change": change})))
}
