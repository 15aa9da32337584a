//! The dashboard's pages of workflows, batches and limits. Read through
//! the same functions as their JSON API ([`super::workflows`]); maud
//! escapes every value, and names in links are percent-encoded, so a
//! workflow or step named `<script>` shows as text.

use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};

use super::pages::{Nav, maybe_when, queue_name, respond};
use super::workflows::{self as data, ListQuery, StepsQuery};
use super::{Ctx, WebError};
use crate::workflow::view::{BatchView, StateCounts, StepState, StepView};

/// `name` as one path segment: every byte but the unreserved ones
/// percent-encoded, so `/`, `?`, `#` and `%` stay in the segment.
pub(super) fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `name` as a query value.
fn query_value(name: &str) -> String {
    segment(name)
}

fn state_class(state: StepState) -> &'static str {
    match state {
        StepState::Succeeded => "ok",
        StepState::Failed | StepState::Cancelled => "bad",
        _ => "",
    }
}

fn counts_cells(counts: &StateCounts) -> Markup {
    html! {
        td.num { (counts.waiting) }
        td.num { (counts.queued) }
        td.num { (counts.running) }
        td.num { span.ok { (counts.succeeded) } }
        td.num { span.bad { (counts.failed) } }
        td.num { span.bad { (counts.cancelled) } }
        td.num { (counts.unknown) }
    }
}

/// `GET /workflows`.
pub(crate) async fn list(
    ctx: Ctx,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, WebError> {
    let now = ctx.now();
    let page = data::page(&ctx, &query).await?;
    respond(&req, &ctx, "Workflows", Nav::Workflows, |view| {
        let ctx = view.ctx;
        html! {
            h1 { "Workflows" }
            p.muted { "Workflows and batches by name, with their steps per state. A name enqueued twice shows the steps of both runs: give each run its own name (a date suffix). Create them with bgtasks workflow create, bgtasks batch create, or POST /api/workflows and /api/batches." }
            div.scroll data-live="workflows" {
            table.grid #workflows {
                thead { tr { th { "name" } th { "kind" } th.num { "steps" } th.num { "waiting" } th.num { "queued" } th.num { "running" } th.num { "succeeded" } th.num { "failed" } th.num { "cancelled" } th.num { "unknown" } th.num { "first task" } th { "last finished" } } }
                tbody {
                    @for workflow in &page.workflows {
                        tr {
                            td.value {
                                @if let Some(batch) = workflow.name.strip_prefix(crate::store::steps::BATCH_PREFIX) {
                                    a href=(ctx.link(&format!("batches/{}", segment(batch)))) { (workflow.name) }
                                } @else {
                                    a href=(ctx.link(&format!("workflows/{}", segment(&workflow.name)))) { (workflow.name) }
                                }
                            }
                            td { @if workflow.batch { "batch" } @else { "workflow" } }
                            td.num { (workflow.steps) }
                            (counts_cells(&workflow.counts))
                            td.num { (workflow.first_task_id) }
                            td { (maybe_when(workflow.newest_activity, now)) }
                        }
                    }
                }
            }
            @if page.workflows.is_empty() { p.muted { "No workflow yet." } }
            @if let Some(next) = &page.next {
                p { a href=(ctx.link(&format!("workflows?after={}", query_value(next)))) { "Next page →" } }
            }
            }
        }
    })
    .await
}

fn steps_table(ctx: &Ctx, steps: &[StepView]) -> Markup {
    let now = ctx.now();
    html! {
        table.grid #steps {
            thead { tr { th { "step" } th.num { "task" } th { "task name" } th { "state" } th { "after" } th { "queue" } th { "run at" } th { "finished" } th.num { "attempts" } th { "last error" } } }
            tbody {
                @for step in steps {
                    tr {
                        td.value { (step.step) }
                        td.num {
                            @if step.state.is_finished() || step.state == StepState::Unknown {
                                (step.task_id)
                            } @else {
                                a href=(ctx.link(&format!("tasks/{}", step.task_id))) { (step.task_id) }
                            }
                        }
                        td.value { (step.task_name.as_deref().unwrap_or("—")) }
                        td {
                            span class=(state_class(step.state)) { (step.state.as_str()) }
                            @if step.state == StepState::Waiting {
                                " on " (step.waiting_on)
                            }
                            @if step.run_anyway { " " span.muted { "(runs anyway)" } }
                        }
                        td {
                            @for (i, dep) in step.after.iter().enumerate() {
                                @if i > 0 { ", " }
                                span.value { (dep.step.clone().unwrap_or_else(|| format!("task {}", dep.task_id))) }
                                @if let Some(ended) = &dep.ended { " " span.muted { "(" (ended) ")" } }
                            }
                        }
                        td { (queue_name(step.queue.as_deref())) }
                        td { (maybe_when(step.run_at.filter(|_| step.state != StepState::Running), now)) }
                        td { (maybe_when(step.finished_at, now)) }
                        td.num { (step.attempts) }
                        td.value { (step.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// `GET /workflows/{name}`.
pub(crate) async fn show(
    ctx: Ctx,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<StepsQuery>,
) -> Result<HttpResponse, WebError> {
    let workflow = data::workflow(&ctx, &name, &query).await?;
    let title = format!("Workflow {}", workflow.name);
    respond(&req, &ctx, &title, Nav::Workflows, |view| {
        let ctx = view.ctx;
        html! {
            h1 { "Workflow " span.value { (workflow.name) } }
            p.muted { (workflow.total) " steps. The steps of every run under this name are shown, in enqueue order." }
            div.scroll data-live="workflow" {
                table.grid #counts {
                    thead { tr { th.num { "waiting" } th.num { "queued" } th.num { "running" } th.num { "succeeded" } th.num { "failed" } th.num { "cancelled" } th.num { "unknown" } } }
                    tbody { tr { (counts_cells(&workflow.counts)) } }
                }
                (steps_table(ctx, &workflow.steps))
                @if let Some(next) = workflow.next {
                    p { a href=(ctx.link(&format!("workflows/{}?after={next}", segment(&workflow.name)))) { "Next steps →" } }
                }
            }
        }
    })
    .await
}

fn batch_body(ctx: &Ctx, batch: &BatchView) -> Markup {
    let finished = batch.finished();
    html! {
        p {
            progress #progress value=(finished) max=(batch.total.max(1)) {}
            " " strong { (finished) " / " (batch.total) } " finished"
        }
        table.grid #batch {
            thead { tr { th.num { "total" } th.num { "succeeded" } th.num { "failed" } th.num { "cancelled" } th.num { "pending" } th.num { "running" } th.num { "unknown" } th { "callback" } } }
            tbody { tr {
                td.num { (batch.total) }
                td.num { span.ok { (batch.succeeded) } }
                td.num { span.bad { (batch.failed) } }
                td.num { span.bad { (batch.cancelled) } }
                td.num { (batch.pending) }
                td.num { (batch.running) }
                td.num { (batch.unknown) }
                td {
                    @match (&batch.callback, batch.callback_kind) {
                        (Some(callback), Some(kind)) => {
                            span class=(state_class(callback.state)) { (callback.state.as_str()) }
                            " (" (match kind { crate::workflow::view::CallbackKind::OnFinish => "on_finish", crate::workflow::view::CallbackKind::OnSuccess => "on_success" }) ", task " (callback.task_id) ")"
                        }
                        _ => { span.muted { "none" } }
                    }
                }
            } }
        }
        p { a href=(ctx.link(&format!("workflows/{}", segment(&format!("{}{}", crate::store::steps::BATCH_PREFIX, batch.name))))) { "Every task of the batch →" } }
    }
}

/// `GET /batches/{name}`.
pub(crate) async fn batch(
    ctx: Ctx,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let batch = data::batch(&ctx, &name).await?;
    let title = format!("Batch {}", batch.name);
    respond(&req, &ctx, &title, Nav::Workflows, |view| {
        html! {
            h1 { "Batch " span.value { (batch.name) } }
            div data-live="batch" { (batch_body(view.ctx, &batch)) }
        }
    })
    .await
}

/// `GET /limits`.
pub(crate) async fn limits(ctx: Ctx, req: HttpRequest) -> Result<HttpResponse, WebError> {
    let data::LimitsInUse {
        concurrency,
        rates,
        keys,
    } = data::limits_in_use(&ctx).await?;
    respond(&req, &ctx, "Limits", Nav::Limits, |_| {
        html! {
            h1 { "Limits" }
            p.muted { "Set them with bgtasks limit; runners learn of a change at their next heartbeat." }
            div.scroll data-live="limits" {
                h2 { "Concurrency" }
                table.grid #concurrency {
                    thead { tr { th { "queue" } th.num { "running" } th.num { "at most" } th { "use" } } }
                    tbody {
                        @for limit in &concurrency {
                            tr {
                                td.value { (limit.queue) }
                                td.num { (limit.running) }
                                td.num { (limit.max_running) }
                                td { meter value=(limit.running) max=(limit.max_running.max(1)) {} }
                            }
                        }
                    }
                }
                @if concurrency.is_empty() { p.muted { "No concurrency limit." } }
                h2 { "Rate" }
                table.grid #rates {
                    thead { tr { th { "queue" } th.num { "started in window" } th.num { "at most" } th { "window" } th { "use" } } }
                    tbody {
                        @for rate in &rates {
                            tr {
                                td.value { (rate.queue) }
                                td.num { (rate.started_in_window) }
                                td.num { (rate.max_starts) }
                                td { (format!("{:?}", rate.period)) }
                                td { meter value=(rate.started_in_window) max=(rate.max_starts.max(1)) {} }
                            }
                        }
                    }
                }
                @if rates.is_empty() { p.muted { "No rate limit." } }
                h2 { "Per key" }
                @for policy in &keys {
                    h3 { "Queue " span.value { (policy.queue) } }
                    p.muted {
                        "Claimed key by key, a fair share each; per key: "
                        (policy.max_running.map_or("no running limit".to_owned(), |n| format!("at most {n} running")))
                        ", "
                        (match (policy.max_starts, policy.period) {
                            (Some(n), Some(period)) => format!("at most {n} starts per {period:?}"),
                            _ => "no rate limit".to_owned(),
                        })
                        "."
                    }
                    table.grid.keys {
                        thead { tr { th { "key" } th.num { "running" } th.num { "waiting" } th.num { "started in window" } } }
                        tbody {
                            @for key in &policy.keys {
                                tr {
                                    td.value { (key.key) }
                                    td.num { (key.running) }
                                    td.num { (key.waiting) }
                                    td.num { (key.started_in_window) }
                                }
                            }
                        }
                    }
                    @if policy.keys.is_empty() { p.muted { "No task of this queue has a key." } }
                }
                @if keys.is_empty() { p.muted { "No key policy." } }
            }
        }
    })
    .await
}
