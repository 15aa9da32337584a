//! The fleet controls ([`crate::controls`]) in the dashboard and the JSON
//! API: pause and resume a queue, drain a runner. Handlers are thin: parse,
//! call [`crate::controls`], answer.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/api/queues/paused` | | `{"paused": [{"queue", "paused_at"}]}` |
//! | POST | `/api/queues/pause` | `{"queue": "mail", "new": false}` | `{"queue", "paused": true, "already"}` |
//! | POST | `/api/queues/resume` | `{"queue": "mail"}` | `{"queue", "resumed": true}`; 404 when not paused |
//! | POST | `/api/runners/drain` | `{"runner": "host:pid:random"}` | `{"runner", "draining": true, "already"}`; 404 for no such runner |
//! | POST | `/controls` | form: `csrf`, `control` (pause, resume, drain), `queue` or `runner`, `back` | 303 to `back` |
//!
//! `"queue": null` (or the form's `(default)`) is the default queue.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::api::{api, check_text, check_write};
use super::{Ctx, WebError, csrf};
use crate::controls;
use crate::inspect::QueueFilter;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueRequest {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    new: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    runner: String,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], example: &str) -> Result<T, WebError> {
    serde_json::from_slice(body).map_err(|err| {
        api(WebError::bad_request(format!(
            "the body does not decode ({err}); send {example}"
        )))
    })
}

/// `GET /api/queues/paused`.
pub(crate) async fn paused(ctx: Ctx) -> Result<HttpResponse, WebError> {
    let paused = controls::paused(ctx.queue().db()).await.map_err(api)?;
    Ok(HttpResponse::Ok().json(json!({ "paused": paused })))
}

/// `POST /api/queues/pause`.
pub(crate) async fn pause(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let request: QueueRequest = parse(&body, r#"{"queue": "mail"} (null: the default queue)"#)?;
    let queue = request.queue.as_deref();
    check_text("queue", queue.unwrap_or_default()).map_err(api)?;
    let newly = controls::pause(ctx.queue().db(), queue, request.new, ctx.now())
        .await
        .map_err(api)?;
    tracing::info!(queue = queue.unwrap_or_default(), "dashboard: queue paused");
    Ok(HttpResponse::Ok().json(json!({"queue": queue, "paused": true, "already": !newly})))
}

/// `POST /api/queues/resume`.
pub(crate) async fn resume(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let request: QueueRequest = parse(&body, r#"{"queue": "mail"} (null: the default queue)"#)?;
    let queue = request.queue.as_deref();
    check_text("queue", queue.unwrap_or_default()).map_err(api)?;
    if !controls::resume(ctx.queue().db(), queue)
        .await
        .map_err(api)?
    {
        return Err(api(WebError::not_found(format!(
            "queue {:?} is not paused; nothing was changed",
            queue.unwrap_or(QueueFilter::DEFAULT_TOKEN)
        ))));
    }
    tracing::info!(
        queue = queue.unwrap_or_default(),
        "dashboard: queue resumed"
    );
    Ok(HttpResponse::Ok().json(json!({"queue": queue, "resumed": true})))
}

/// `POST /api/runners/drain`.
pub(crate) async fn drain(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    check_write(&ctx, &req)?;
    let request: DrainRequest = parse(&body, r#"{"runner": "host:1234:0badcafe"}"#)?;
    check_text("runner", &request.runner).map_err(api)?;
    let asked = drain_runner(&ctx, &request.runner).await.map_err(api)?;
    Ok(HttpResponse::Ok().json(json!({
        "runner": request.runner,
        "draining": true,
        "already": !asked,
    })))
}

/// Asks `runner` to drain; an unknown one is a 404.
async fn drain_runner(ctx: &Ctx, runner: &str) -> Result<bool, WebError> {
    match controls::drain(ctx.queue().db(), runner, ctx.now()).await {
        Ok(asked) => {
            tracing::info!(runner, "dashboard: runner asked to drain");
            Ok(asked)
        }
        Err(err @ crate::Error::InvalidOption { .. }) => Err(WebError::not_found(err.to_string())),
        Err(err) => Err(err.into()),
    }
}

/// `POST /controls`: the dashboard's pause, resume and drain buttons.
pub(crate) async fn act(
    ctx: Ctx,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let field = |name: &str| super::pages::form_field(&form, name);
    csrf::check(&ctx, &req, field("csrf"))?;
    ctx.check_can_act()?;
    let back = super::pages::back_to(&ctx, field("back"))?;
    let control = field("control").unwrap_or_default();
    let done = match control {
        "pause" | "resume" => {
            let text =
                field("queue").ok_or_else(|| WebError::bad_request("the form names no queue"))?;
            check_text("queue", text)?;
            let queue = match QueueFilter::parse(text) {
                QueueFilter::Default => None,
                QueueFilter::Any => {
                    return Err(WebError::bad_request("the form names no queue"));
                }
                QueueFilter::Named(_) => Some(text),
            };
            if control == "pause" {
                // The button is shown next to a queue the page listed.
                controls::pause(ctx.queue().db(), queue, true, ctx.now()).await?;
                "paused"
            } else {
                controls::resume(ctx.queue().db(), queue).await?;
                "resumed"
            }
        }
        "drain" => {
            let runner =
                field("runner").ok_or_else(|| WebError::bad_request("the form names no runner"))?;
            check_text("runner", runner)?;
            drain_runner(&ctx, runner).await?;
            "draining"
        }
        other => {
            return Err(WebError::bad_request(format!(
                "{other:?} is not a control; use pause, resume or drain"
            )));
        }
    };
    let separator = if back.contains('?') { '&' } else { '?' };
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("{back}{separator}control={done}")))
        .finish())
}

/// The notice after a control ran, from the `control` query parameter.
pub(crate) fn notice(control: Option<&str>) -> Option<Markup> {
    let text = match control? {
        "paused" => "Queue paused: runners claim none of its tasks from their next heartbeat.",
        "resumed" => "Queue resumed: runners claim its tasks again from their next heartbeat.",
        "draining" => {
            "Runner asked to drain: at its next heartbeat it stops claiming, finishes what it \
             holds and exits."
        }
        _ => return None,
    };
    Some(html! { p.notice role="status" { (text) } })
}

/// A pause or resume button for `queue` (`None`: the default queue).
/// `token` is the page's CSRF token.
pub(crate) fn queue_button(
    ctx: &Ctx,
    token: &str,
    back: &str,
    queue: Option<&str>,
    paused: bool,
) -> Markup {
    let (control, label) = if paused {
        ("resume", "Resume")
    } else {
        ("pause", "Pause")
    };
    html! {
        form.inline method="post" action=(ctx.link("controls")) {
            input type="hidden" name="csrf" value=(token);
            input type="hidden" name="back" value=(back);
            input type="hidden" name="control" value=(control);
            input type="hidden" name="queue" value=(queue.unwrap_or(QueueFilter::DEFAULT_TOKEN));
            button type="submit" { (label) }
        }
    }
}

/// A drain button for `runner`.
/// `token` is the page's CSRF token.
pub(crate) fn drain_button(ctx: &Ctx, token: &str, back: &str, runner: &str) -> Markup {
    html! {
        form.inline method="post" action=(ctx.link("controls")) {
            input type="hidden" name="csrf" value=(token);
            input type="hidden" name="back" value=(back);
            input type="hidden" name="control" value="drain";
            input type="hidden" name="runner" value=(runner);
            button type="submit" data-confirm="Drain this runner? It stops claiming, finishes the tasks it holds and exits." { "Drain" }
        }
    }
}
