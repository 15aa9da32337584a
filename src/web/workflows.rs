//! The JSON API of workflows, batches and limits: read through
//! [`crate::workflow::view`] and [`crate::admin`], create through
//! [`crate::workflow::request`], the same format `bgtasks workflow create`
//! reads. Writes are checked as every API write is ([`check_write`]).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::api::{api, check_text, check_write};
use super::{Ctx, WebError};
use crate::workflow::request::{BatchRequest, WorkflowRequest};
use crate::workflow::view;

/// Workflows a page lists when no limit is asked for.
pub(crate) const DEFAULT_WORKFLOWS: u64 = 50;
/// Steps a workflow's page shows when no limit is asked for.
pub(crate) const DEFAULT_STEPS: u64 = 200;

/// Query of `/api/workflows` and `/workflows`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    pub(crate) after: Option<String>,
    #[serde(default)]
    pub(crate) limit: Option<u64>,
}

/// Query of `/api/workflows/{name}` and `/workflows/{name}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StepsQuery {
    #[serde(default)]
    pub(crate) after: Option<i32>,
    #[serde(default)]
    pub(crate) limit: Option<u64>,
}

/// The page of workflows `query` asks for.
pub(crate) async fn page(ctx: &Ctx, query: &ListQuery) -> crate::Result<view::WorkflowPage> {
    let after = query.after.as_deref().filter(|after| !after.is_empty());
    check_text("after", after.unwrap_or_default())?;
    view::list(
        ctx.queue().db(),
        after,
        query.limit.unwrap_or(DEFAULT_WORKFLOWS),
    )
    .await
}

/// The workflow `name`, or a 404 saying so.
pub(crate) async fn workflow(
    ctx: &Ctx,
    name: &str,
    query: &StepsQuery,
) -> Result<view::WorkflowView, WebError> {
    view::show(
        ctx.queue().db(),
        name,
        query.after,
        query.limit.unwrap_or(DEFAULT_STEPS),
    )
    .await?
    .ok_or_else(|| {
        WebError::not_found(format!(
            "there is no workflow named {name:?}: no step of that name is waiting, running or \
             in the history (it may have been pruned); check the name"
        ))
    })
}

/// The batch `name`, or a 404 saying so.
pub(crate) async fn batch(ctx: &Ctx, name: &str) -> Result<view::BatchView, WebError> {
    view::batch(ctx.queue().db(), name).await?.ok_or_else(|| {
        WebError::not_found(format!(
            "there is no batch named {name:?}: none of its tasks is waiting, running or in \
                 the history (it may have been pruned); check the name"
        ))
    })
}

/// `GET /api/workflows`.
pub(crate) async fn list(ctx: Ctx, query: web::Query<ListQuery>) -> Result<HttpResponse, WebError> {
    let page = page(&ctx, &query).await.map_err(api)?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /api/workflows/{name}`.
pub(crate) async fn show(
    ctx: Ctx,
    name: web::Path<String>,
    query: web::Query<StepsQuery>,
) -> Result<HttpResponse, WebError> {
    let found = workflow(&ctx, &name, &query).await.map_err(api)?;
    Ok(HttpResponse::Ok().json(found))
}

/// `GET /api/batches/{name}`.
pub(crate) async fn show_batch(
    ctx: Ctx,
    name: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let found = batch(&ctx, &name).await.map_err(api)?;
    Ok(HttpResponse::Ok().json(found))
}

/// `POST /api/workflows`: enqueues a workflow; 201 with the ids by step.
pub(crate) async fn create(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let queue = ctx.queue();
    let workflow = WorkflowRequest::parse(&body)
        .and_then(|request| request.into_workflow(queue.registry()))
        .map_err(api)?;
    let name = workflow.name().to_owned();
    let ids = queue.enqueue_workflow(workflow).await.map_err(api)?;
    tracing::info!(
        workflow = name,
        steps = ids.len(),
        "workflow created through the API"
    );
    Ok(HttpResponse::Created().json(serde_json::json!({ "workflow": name, "ids": ids })))
}

/// `POST /api/batches`: enqueues a batch; 201 with its ids.
pub(crate) async fn create_batch(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let queue = ctx.queue();
    let request = BatchRequest::parse(&body).map_err(api)?;
    let name = request.name.clone();
    let batch = request.into_batch(queue.registry()).map_err(api)?;
    let ids = queue.enqueue_batch(batch).await.map_err(api)?;
    tracing::info!(
        batch = name,
        tasks = ids.tasks.len(),
        "batch created through the API"
    );
    Ok(HttpResponse::Created().json(serde_json::json!({
        "batch": name,
        "tasks": ids.tasks,
        "callback": ids.callback,
    })))
}

/// A queue's concurrency limit and its current use.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct ConcurrencyUse {
    pub(crate) queue: String,
    pub(crate) max_running: i32,
    pub(crate) running: i64,
}

/// Every limit with its current use.
pub(crate) struct LimitsInUse {
    /// Concurrency limits with their running counts.
    pub(crate) concurrency: Vec<ConcurrencyUse>,
    /// Rate limits with the starts in their current windows.
    pub(crate) rates: Vec<crate::admin::RateLimitUse>,
    /// Key policies with their busiest keys.
    pub(crate) keys: Vec<crate::admin::KeyLimitUse>,
}

/// Keys shown per key policy, busiest first.
const KEYS_SHOWN: usize = 20;

/// Every concurrency limit with its running count, every rate limit with
/// the starts in its current window, and every key policy with its
/// busiest keys.
pub(crate) async fn limits_in_use(ctx: &Ctx) -> crate::Result<LimitsInUse> {
    let db = ctx.queue().db();
    let mut concurrency = Vec::new();
    for limit in crate::admin::queue_limits(db).await? {
        let running = crate::store::limits::running(db, &limit.queue).await?;
        concurrency.push(ConcurrencyUse {
            queue: limit.queue,
            max_running: limit.max_running,
            running,
        });
    }
    let rates = crate::admin::rate_limits(db, ctx.now()).await?;
    let keys = crate::admin::key_limits(db, ctx.now(), KEYS_SHOWN).await?;
    Ok(LimitsInUse {
        concurrency,
        rates,
        keys,
    })
}

/// `GET /api/limits`: `{concurrency: [{queue, max_running, running}],
/// rate: [{queue, max_starts, period_seconds, started_in_window}], keys:
/// [{queue, max_running, max_starts, period_seconds, keys: [{key, running,
/// waiting, started_in_window}]}]}` (the 20 busiest keys of each policy).
pub(crate) async fn limits(ctx: Ctx) -> Result<HttpResponse, WebError> {
    let LimitsInUse {
        concurrency,
        rates,
        keys,
    } = limits_in_use(&ctx).await.map_err(api)?;
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|policy| {
            serde_json::json!({
                "queue": policy.queue,
                "max_running": policy.max_running,
                "max_starts": policy.max_starts,
                "period_seconds": policy.period.map(|period| period.as_secs_f64()),
                "keys": policy.keys,
            })
        })
        .collect();
    let rate: Vec<serde_json::Value> = rates
        .iter()
        .map(|rate| {
            serde_json::json!({
                "queue": rate.queue,
                "max_starts": rate.max_starts,
                "period_seconds": rate.period.as_secs_f64(),
                "started_in_window": rate.started_in_window,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "concurrency": concurrency,
        "rate": rate,
        "keys": keys,
    })))
}
