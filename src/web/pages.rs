//! The dashboard's HTML pages, rendered on the server with maud (which
//! escapes every value it writes). Handlers are thin: parse, call
//! [`crate::inspect`] / [`crate::admin`], render.
//!
//! Live updates: what changes while a page is open sits in elements marked
//! `data-live="<name>"` (unique per page). `app.js` fetches the page again
//! every few seconds while the tab is visible, and puts each marked
//! element of the new copy in place of the old one, so a page is rendered
//! by the same code whether it is loaded or refreshed. Filters and form
//! buttons stay outside the marked elements, so what a person is typing
//! or choosing is never replaced.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::actions::{self, Action};
use super::api::{CHAIN_LIMIT, CHART_BUCKET, CHART_BUCKETS, ListQuery};
use super::{Ctx, WebError, csrf};
use crate::admin::{self, RunnerStatus};
use crate::entity::{completed_task, task};
use crate::inspect::{self, Chain, Cursor, Overview, Page, Row, State, Throughput, Totals};

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// Headers every page carries: no framing, no sniffing, nothing but this
/// origin's own assets.
/// `connect-src 'self'` lets `app.js` fetch the page it is on again.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// What a page needs besides its data: the request's context and the
/// token its forms carry.
pub(super) struct View<'a> {
    pub(super) ctx: &'a Ctx,
    token: String,
}

/// Renders `body` in the layout, setting the CSRF cookie when it is new.
pub(super) async fn respond(
    req: &HttpRequest,
    ctx: &Ctx,
    title: &str,
    nav: Nav,
    body: impl FnOnce(&View<'_>) -> Markup,
) -> Result<HttpResponse, WebError> {
    let counts = NavCounts::of(ctx).await?;
    let (token, fresh) = csrf::token(req)?;
    let view = View { ctx, token };
    // After a pause, resume or drain button: what it did.
    let control = web::Query::<ControlNotice>::from_query(req.query_string())
        .ok()
        .and_then(|query| super::controls::notice(query.control.as_deref()));
    let markup = layout(
        &view,
        title,
        nav,
        &counts,
        html! { (control.unwrap_or_default()) (body(&view)) },
    );
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if fresh {
        response.cookie(csrf::cookie(ctx, &view.token));
    }
    Ok(response.body(markup.into_string()))
}

/// The `control` query parameter of a page a control redirected to.
#[derive(Deserialize)]
struct ControlNotice {
    #[serde(default)]
    control: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Overview,
    State(State),
    Schedules,
    Workflows,
    Limits,
    Runners,
}

/// What the navigation shows beside its links, on every page.
struct NavCounts {
    totals: Totals,
    schedules: usize,
    runners_alive: usize,
}

impl NavCounts {
    async fn of(ctx: &Ctx) -> Result<Self, WebError> {
        let (db, now) = (ctx.queue().db(), ctx.now());
        let runners = admin::runners(db, ctx.queue().config().lease(), now).await?;
        Ok(NavCounts {
            totals: inspect::totals(db, now).await?,
            schedules: crate::cron::list(db).await?.len(),
            runners_alive: runners.iter().filter(|r| r.alive).count(),
        })
    }

    /// `state`'s count as the navigation shows it: `100000+` when capped.
    fn of_state(&self, state: State) -> String {
        let count = self.totals.get(state);
        if self.totals.capped(state) {
            format!("{count}+")
        } else {
            count.to_string()
        }
    }
}

fn layout(view: &View<'_>, title: &str, nav: Nav, counts: &NavCounts, body: Markup) -> Markup {
    let ctx = view.ctx;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · background tasks" }
                link rel="stylesheet" href=(ctx.link("assets/style.css"));
                script src=(ctx.link("assets/app.js")) defer {}
            }
            body {
                header.top {
                    a.brand href=(ctx.base) { "background tasks" }
                    nav data-live="nav" {
                        a href=(ctx.base) class=[(nav == Nav::Overview).then_some("current")] { "Overview" }
                        @for state in State::ALL {
                            a href=(ctx.link(&format!("tasks?state={state}")))
                                class=[(nav == Nav::State(state)).then_some("current")] {
                                (title_case(state.as_str())) " " span.n data-state=(state) { (counts.of_state(state)) }
                            }
                        }
                        a href=(ctx.link("schedules")) class=[(nav == Nav::Schedules).then_some("current")] {
                            "Schedules " span.n { (counts.schedules) }
                        }
                        a href=(ctx.link("workflows")) class=[(nav == Nav::Workflows).then_some("current")] { "Workflows" }
                        a href=(ctx.link("limits")) class=[(nav == Nav::Limits).then_some("current")] { "Limits" }
                        a href=(ctx.link("runners")) class=[(nav == Nav::Runners).then_some("current")]
                            title="runners alive" {
                            "Runners " span.n { (counts.runners_alive) }
                        }
                    }
                    @if !ctx.can_act() {
                        span.badge { "read-only" }
                    }
                    // Filled by app.js: whether the page is updating itself.
                    span #live.live role="status" {}
                }
                main { (body) }
            }
        }
    }
}

fn title_case(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// A time as "3 min ago" / "in 2 h", with the exact UTC time on hover.
pub(super) fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S%.6f UTC")) {
            (relative(at - now))
        }
    }
}

pub(super) fn maybe_when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { span.muted { "—" } },
    }
}

fn relative(delta: TimeDelta) -> String {
    let seconds = delta.num_seconds();
    let span = seconds.unsigned_abs();
    let text = match span {
        0..=59 => format!("{span} s"),
        60..=3_599 => format!("{} min", span / 60),
        3_600..=86_399 => format!("{} h", span / 3_600),
        _ => format!("{} d", span / 86_400),
    };
    if seconds < 0 {
        format!("{text} ago")
    } else if seconds == 0 {
        "now".to_owned()
    } else {
        format!("in {text}")
    }
}

fn duration(delta: TimeDelta) -> String {
    relative(delta).trim_start_matches("in ").to_owned()
}

pub(super) fn queue_name(queue: Option<&str>) -> Markup {
    match queue {
        Some(queue) => html! { span.value { (queue) } },
        None => html! { span.muted { "(default)" } },
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `task_params` indented, when it is JSON, numbers exactly as stored
/// (an integer past 64 bits stays an integer); otherwise as stored.
fn pretty_params(params: &str) -> String {
    crate::params::pretty(params).unwrap_or_else(|_| params.to_owned())
}

fn lock_state(locked_by: Option<&str>) -> Markup {
    match admin::locked_by_pid_running(locked_by) {
        Some(true) => html! { span.ok { "alive" } },
        Some(false) => html! { span.bad { "not running" } },
        None if locked_by.is_some_and(|l| !l.is_empty()) => {
            html! { span.muted title="held on another host: not checkable from here" { "other host" } }
        }
        None => html! { span.muted { "—" } },
    }
}

// ---- overview ---------------------------------------------------------

pub(crate) async fn to_overview(ctx: Ctx) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, ctx.base.clone()))
        .finish()
}

pub(crate) async fn overview(ctx: Ctx, req: HttpRequest) -> Result<HttpResponse, WebError> {
    let (db, now) = (ctx.queue().db(), ctx.now());
    let overview = inspect::overview(db, now).await?;
    let throughput = inspect::throughput(db, now, CHART_BUCKET, CHART_BUCKETS).await?;
    let runners = admin::runners(db, ctx.queue().config().lease(), now).await?;
    let paused = crate::controls::paused(db).await?;
    respond(&req, &ctx, "Overview", Nav::Overview, |view| {
        overview_page(view, &overview, &throughput, &runners, &paused)
    })
    .await
}

fn overview_page(
    view: &View<'_>,
    overview: &Overview,
    throughput: &Throughput,
    runners: &[RunnerStatus],
    paused: &[crate::controls::Paused],
) -> Markup {
    let ctx = view.ctx;
    let is_paused = |queue: &Option<String>| paused.iter().any(|p| &p.queue == queue);
    // Paused queues show even with no task left.
    let mut queues = overview.queues();
    for pause in paused {
        if !queues.contains(&pause.queue) {
            queues.push(pause.queue.clone());
        }
    }
    let alive = runners.iter().filter(|r| r.alive).count();
    let states = [
        State::Pending,
        State::Scheduled,
        State::Running,
        State::Failed,
        State::SetAside,
    ];
    html! {
        h1 { "Overview" }
        section.cards data-live="cards" {
            // Set-aside rows are rare: their card shows only when there are some.
            @for state in states.into_iter().filter(|s| *s != State::SetAside || overview.total(*s) > 0) {
                a.card href=(ctx.link(&format!("tasks?state={state}"))) data-state=(state) {
                    span.count { (overview.total(state)) }
                    span.label { (state) }
                }
            }
            a.card href=(ctx.link("runners")) {
                span.count { (alive) }
                span.label { "runners alive" }
            }
        }
        section data-live="oldest" {
            h2 { "Oldest due task" }
            @match &overview.oldest_due {
                Some(task) => p {
                    a.value href=(ctx.link(&format!("tasks/{}", task.id))) { "#" (task.id) " " (task.task_name) }
                    " has been due for "
                    strong { (overview.oldest_due_age().map(duration).unwrap_or_default()) }
                    "."
                },
                None => p.muted { "Nothing is due: every due task has been picked up." },
            }
        }
        // Held while the pointer is on it, so a bar's values stay up.
        section data-live="chart" data-live-hold="hover" {
            h2 { "Last hour, per minute" }
            (chart(throughput))
        }
        section data-live="queues" {
            h2 { "Per queue" }
            @if !queues.is_empty() {
            div.scroll {
            table.grid #queues {
                thead { tr { th { "queue" } @for state in states { th.num { (state) } } th { "claims" } } }
                tbody {
                    @for queue in &queues {
                        tr data-paused=(is_paused(queue)) {
                            td { (queue_name(queue.as_deref())) }
                            @for state in states {
                                @let count: i64 = overview.counts.iter()
                                    .filter(|c| c.queue == *queue && c.state == state)
                                    .map(|c| c.count).sum();
                                @let token = queue.as_deref().unwrap_or(inspect::QueueFilter::DEFAULT_TOKEN);
                                td.num {
                                    a href=(ctx.link(&format!("tasks?state={state}&queue={}", encode(token)))) { (count) }
                                }
                            }
                            td {
                                @if is_paused(queue) { span.bad { "paused" } " " } @else { span.ok { "running" } " " }
                                @if ctx.can_act() {
                                    (super::controls::queue_button(ctx, &view.token, &ctx.base, queue.as_deref(), is_paused(queue)))
                                }
                            }
                        }
                    }
                }
            }
            }
            }
            @if queues.is_empty() { p.muted { "The queue is empty." } }
        }
    }
}

/// A round step for a scale reaching `peak` in about `ticks` steps: 1, 2
/// or 5 times a power of ten, at least 1 (counts are whole).
fn scale_step(peak: i64, ticks: i64) -> i64 {
    let ticks = ticks.max(1);
    let rough = peak.max(0).saturating_add(ticks - 1) / ticks;
    let mut magnitude = 1_i64;
    while magnitude.saturating_mul(10) <= rough {
        magnitude = magnitude.saturating_mul(10);
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|factor| magnitude.saturating_mul(factor))
        .find(|step| *step >= rough)
        .unwrap_or(rough)
        .max(1)
}

/// A round span of seconds between time-axis labels: about `labels`
/// labels over `seconds`.
fn label_every(seconds: i64, labels: i64) -> i64 {
    let rough = seconds / labels.max(1);
    [
        60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 21_600, 43_200, 86_400,
    ]
    .into_iter()
    .find(|span| *span >= rough)
    .unwrap_or(86_400)
}

/// Completions (green) and permanent failures (red) per bucket, as bars
/// over a time axis (UTC), against a scale; each bar's values show on
/// hover (an SVG `<title>`, over the bucket's whole height, so an empty
/// bucket says so too).
fn chart(throughput: &Throughput) -> Markup {
    // The plot, inside the drawing: room on the left for the scale and
    // below for the time axis.
    let (left, top, plot_width, plot_height) = (52.0, 10.0, 700.0, 140.0);
    let (width, height) = (left + plot_width + 32.0, top + plot_height + 28.0);
    let buckets = throughput.succeeded.len().max(1);
    let bar = plot_width / buckets as f64;
    let seconds = throughput.bucket_seconds.max(1);
    let totals: Vec<(i64, i64)> = throughput
        .succeeded
        .iter()
        .copied()
        .zip(throughput.failed.iter().copied())
        .collect();
    let peak = totals
        .iter()
        .map(|(ok, failed)| ok + failed)
        .max()
        .unwrap_or(0);
    let step = scale_step(peak, 4);
    let top_of_scale = step.saturating_mul((peak.saturating_add(step - 1) / step).max(1));
    let y = |count: i64| top + plot_height - count as f64 / top_of_scale as f64 * plot_height;
    let ticks: Vec<i64> = (0..=top_of_scale / step).map(|i| i * step).collect();
    let every = label_every(seconds * buckets as i64, 6);
    let total_ok: i64 = throughput.succeeded.iter().sum();
    let total_failed: i64 = throughput.failed.iter().sum();
    let per = if seconds == 60 {
        "minute".to_owned()
    } else {
        format!("{seconds} s")
    };
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {width} {height}")) role="img"
                aria-label=(format!("{total_ok} completed and {total_failed} failed in the last hour; scale 0 to {top_of_scale} per {per}")) {
                g.scale {
                    @for tick in &ticks {
                        line x1=(left) y1=(y(*tick)) x2=(left + plot_width) y2=(y(*tick)) {}
                        text x=(left - 6.0) y=(y(*tick) + 4.0) text-anchor="end" { (tick) }
                    }
                }
                @for (i, (ok, failed)) in totals.iter().enumerate() {
                    @let x = left + i as f64 * bar;
                    @let start = throughput.start + TimeDelta::seconds(seconds * i as i64);
                    @let end = start + TimeDelta::seconds(seconds);
                    g.bar data-start=(start.to_rfc3339()) data-completed=(ok) data-failed=(failed) {
                        title {
                            (start.format("%H:%M")) "–" (end.format("%H:%M")) " UTC: "
                            (ok) " completed, " (failed) " failed"
                        }
                        rect.hit x=(x) y=(top) width=(bar) height=(plot_height) {}
                        rect.ok x=(x + 0.5) y=(y(*ok)) width=(bar - 1.0) height=(y(0) - y(*ok)) {}
                        rect.failed x=(x + 0.5) y=(y(ok + failed)) width=(bar - 1.0) height=(y(0) - y(*failed)) {}
                    }
                }
                g.axis {
                    line x1=(left) y1=(y(0)) x2=(left + plot_width) y2=(y(0)) {}
                    @for i in 0..=buckets {
                        @let at = throughput.start + TimeDelta::seconds(seconds * i as i64);
                        @if at.timestamp().rem_euclid(every) == 0 {
                            @let x = left + i as f64 * bar;
                            line x1=(x) y1=(y(0)) x2=(x) y2=(y(0) + 4.0) {}
                            text x=(x) y=(y(0) + 19.0) text-anchor="middle" { (at.format("%H:%M")) }
                        }
                    }
                }
            }
            figcaption {
                span.ok { (total_ok) " completed" } " · " span.bad { (total_failed) " failed" }
                " · peak " (peak) " per " (per) " · times in UTC; hover over a bar for its values"
            }
        }
    }
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---- lists ------------------------------------------------------------

/// What the last action did, carried in the redirect's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Notice {
    #[serde(default)]
    done: Option<String>,
    /// Text, read leniently: a mangled notice is not shown, rather than
    /// refusing the page under it.
    #[serde(default)]
    n: Option<String>,
}

impl Notice {
    fn render(&self) -> Option<Markup> {
        let action: Action = self.done.as_deref()?.parse().ok()?;
        let n: u64 = self.n.as_deref().unwrap_or("0").parse().ok()?;
        let noun = if n == 1 { "task" } else { "tasks" };
        Some(html! { p.notice role="status" { (n) " " (noun) " " (action.done()) "." } })
    }
}

pub(crate) async fn tasks(
    ctx: Ctx,
    req: HttpRequest,
    query: web::Query<ListQuery>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, WebError> {
    let now = ctx.now();
    let listing = query.parse(now);
    let state = listing.as_ref().map_or(State::Pending, |l| l.state);
    let page = match &listing {
        Ok(listing) => Some(listing.page(ctx.queue().db(), now).await?),
        Err(_) => None,
    };
    let problem = listing.err().map(|err| err.to_string());
    let here = format!("{}?{}", req.path(), req.query_string());
    let mut response = respond(
        &req,
        &ctx,
        &title_case(state.as_str()),
        Nav::State(state),
        |view| {
            html! {
                h1 { (title_case(state.as_str())) }
                @if let Some(notice) = notice.render() { (notice) }
                @if let Some(problem) = &problem { p.problem role="alert" { (problem) } }
                (filter_form(view, state, &query))
                @if let Some(page) = &page { (list(view, page, &query, &here)) }
            }
        },
    )
    .await?;
    // The page shows what is wrong with the filters, under a 400.
    if problem.is_some() {
        *response.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

fn filter_form(view: &View<'_>, state: State, query: &ListQuery) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.filters method="get" action=(view.ctx.link("tasks")) {
            input type="hidden" name="state" value=(state);
            label { "queue " input type="text" name="queue" value=(value(&query.queue)) placeholder="any; (default) for none"; }
            label { "task " input type="text" name="name" value=(value(&query.name)) placeholder="exact name"; }
            label { "search " input type="search" name="q" value=(value(&query.q)) placeholder="text in name or params"; }
            label { "since " input type="text" name="since" value=(value(&query.since)) placeholder="2026-11-27 10:00 or 2h"; }
            label { "until " input type="text" name="until" value=(value(&query.until)) placeholder="UTC"; }
            button type="submit" { "Filter" }
            a href=(view.ctx.link(&format!("tasks?state={state}"))) { "clear" }
        }
    }
}

/// The actions offered for rows in `state`.
fn actions_for(state: State) -> &'static [Action] {
    match state {
        State::Pending | State::Scheduled => &[
            Action::RunNow,
            Action::PriorityUp,
            Action::PriorityDown,
            Action::Cancel,
            Action::Delete,
        ],
        State::Running => &[Action::Cancel],
        State::Failed => &[Action::Retry, Action::DeleteCompleted],
        State::SetAside => &[Action::RunNow, Action::Delete],
        State::Completed => &[Action::DeleteCompleted],
    }
}

fn action_form(view: &View<'_>, back: &str, actions: &[Action], inner: Markup) -> Markup {
    let can_act = view.ctx.can_act() && !actions.is_empty();
    html! {
        form.actions method="post" action=(view.ctx.link("actions")) {
            input type="hidden" name="csrf" value=(view.token);
            input type="hidden" name="back" value=(back);
            @if can_act {
                div.buttons {
                    @for action in actions {
                        button type="submit" name="action" value=(action.as_str())
                            data-confirm=[action.destructive().then(|| format!("{} the selected tasks?", action.label()))] {
                            (action.label())
                        }
                    }
                }
            }
            (inner)
        }
    }
}

fn list(view: &View<'_>, page: &Page, query: &ListQuery, here: &str) -> Markup {
    let ctx = view.ctx;
    let now = ctx.now();
    let actions = actions_for(page.state);
    let selectable = ctx.can_act() && !actions.is_empty();
    let table = html! {
        div data-live="rows" {
        div.scroll {
        table.grid #tasks data-state=(page.state) {
            thead {
                tr {
                    @if selectable { th { input type="checkbox" .select-all aria-label="select all"; } }
                    th.num { "id" }
                    th { "task" }
                    th { "params" }
                    th { @if page.state.in_history() { "finished" } @else { "run at" } }
                    th.num { "priority" }
                    th.num { "attempts" }
                    th { "error" }
                    th { "locked by" }
                    th { "process" }
                    th { "queue" }
                }
            }
            tbody {
                @for row in &page.rows {
                    (list_row(view, row, selectable, now))
                }
            }
        }
        }
        @if page.rows.is_empty() { p.muted.empty { "No " (page.state) " tasks match." } }
        }
    };
    // The same filters, at another cursor.
    let at = |after: Option<Cursor>, before: Option<Cursor>| {
        let mut query = query.clone();
        query.after = after.map(|cursor| cursor.to_string());
        query.before = before.map(|cursor| cursor.to_string());
        ctx.link(&format!("tasks?{}", query_string(&query)))
    };
    html! {
        (action_form(view, here, actions, table))
        nav.pages data-live="pages" {
            @if page.prev.is_some() {
                a.first href=(at(None, None)) { "⇤ first page" }
                a.prev href=(at(None, page.prev)) { "← previous page" }
            }
            @if page.next.is_some() {
                a.next href=(at(page.next, None)) { "next page →" }
            }
        }
    }
}

fn query_string(query: &ListQuery) -> String {
    let pairs = [
        ("state", &query.state),
        ("queue", &query.queue),
        ("name", &query.name),
        ("q", &query.q),
        ("since", &query.since),
        ("until", &query.until),
        ("after", &query.after),
        ("before", &query.before),
    ];
    let mut out: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{key}={}", encode(v)))
        })
        .collect();
    if let Some(limit) = query.limit {
        out.push(format!("limit={limit}"));
    }
    out.join("&")
}

fn list_row(view: &View<'_>, row: &Row, selectable: bool, now: DateTime<Utc>) -> Markup {
    let ctx = view.ctx;
    match row {
        Row::Task(task) => html! {
            tr data-id=(task.id) {
                @if selectable { td { input type="checkbox" name="id" value=(task.id) aria-label=(format!("select task {}", task.id)); } }
                td.num { a href=(ctx.link(&format!("tasks/{}", task.id))) { (task.id) } }
                td.task-name {
                    a href=(ctx.link(&format!("tasks/{}", task.id))) { (task.task_name) }
                    @if let Some(verbose) = &task.verbose_name { br; span.muted { (verbose) } }
                }
                td.params { code { (clip(&task.task_params, 80)) } }
                td { (when(task.run_at, now)) }
                td.num { (task.priority) }
                td.num { (task.attempts) }
                td { @if task.has_error() { span.bad title=(clip(&task.last_error, 300)) { "yes" } } @else { span.muted { "no" } } }
                td { @if let Some(by) = &task.locked_by { code.value { (by) } } }
                td { (lock_state(task.locked_by.as_deref())) }
                td { (queue_name(task.queue.as_deref())) }
            }
        },
        Row::Completed(done) => html! {
            tr data-id=(done.id) {
                @if selectable { td { input type="checkbox" name="id" value=(done.id) aria-label=(format!("select history row {}", done.id)); } }
                td.num { a href=(ctx.link(&format!("completed/{}", done.id))) { (done.id) } }
                td.task-name {
                    a href=(ctx.link(&format!("completed/{}", done.id))) { (done.task_name) }
                    @if let Some(verbose) = &done.verbose_name { br; span.muted { (verbose) } }
                }
                td.params { code { (clip(&done.task_params, 80)) } }
                td { (when(done.run_at, now)) }
                td.num { (done.priority) }
                td.num { (done.attempts) }
                td {
                    @if done.failed() {
                        span.bad title=(clip(&done.last_error, 300)) { (clip(first_line(&done.last_error), 60)) }
                    } @else if done.has_error() {
                        // Succeeded after an earlier attempt failed.
                        span.muted title=(clip(&done.last_error, 300)) { "earlier attempt failed" }
                    } @else {
                        span.muted { "no" }
                    }
                }
                td { @if let Some(by) = &done.locked_by { code.value { (by) } } }
                td { span.muted { "—" } }
                td { (queue_name(done.queue.as_deref())) }
            }
        },
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
}

// ---- details ----------------------------------------------------------

fn parse_id(text: &str) -> Result<i32, WebError> {
    text.parse()
        .map_err(|_| WebError::bad_request(format!("{text:?} is not a task id")))
}

pub(crate) async fn task(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let db = ctx.queue().db();
    let task = inspect::task(db, id).await?.ok_or_else(|| {
        WebError::not_found(format!(
            "There is no waiting or running task {id}: it may have finished or been deleted. \
             Look for it in the completed or failed history."
        ))
    })?;
    let chain = inspect::chain(db, &task.task_name, &task.task_hash, CHAIN_LIMIT).await?;
    let title = format!("Task {id}");
    respond(
        &req,
        &ctx,
        &title,
        Nav::State(State::of_task(&task, ctx.now())),
        |view| task_page(view, &task, &chain, notice.render(), req.path()),
    )
    .await
}

fn task_page(
    view: &View<'_>,
    task: &task::Model,
    chain: &Chain,
    notice: Option<Markup>,
    here: &str,
) -> Markup {
    let now = view.ctx.now();
    let state = State::of_task(task, now);
    let actions = actions_for(state);
    html! {
        h1 { "Task " (task.id) ": " (task.task_name) }
        @if let Some(notice) = notice { (notice) }
        // All of it is live: a task moves through states (and its actions
        // change with them) while the page is open.
        div data-live="task" {
        p { span.state data-state=(state) { (state) } }
        (action_form(view, here, actions, html! { input type="hidden" name="id" value=(task.id); }))
        table.fields {
            tr { th { "name" } td { (task.task_name) } }
            tr { th { "verbose name" } td { (task.verbose_name.as_deref().unwrap_or("—")) } }
            tr { th { "queue" } td { (queue_name(task.queue.as_deref())) } }
            tr { th { "priority" } td { (task.priority) } }
            tr { th { "run at" } td { (when(task.run_at, now)) " · " (task.run_at.format("%Y-%m-%d %H:%M:%S%.6f UTC")) } }
            tr { th { "attempts" } td { (task.attempts) } }
            tr { th { "repeat" } td { @if task.repeat > 0 { "every " (task.repeat) " s" @if let Some(until) = task.repeat_until { " until " (when(until, now)) } } @else { "never" } } }
            tr { th { "locked by" } td { (task.locked_by.as_deref().unwrap_or("—")) " " (lock_state(task.locked_by.as_deref())) } }
            tr { th { "locked at" } td { (maybe_when(task.locked_at, now)) } }
            @if let Some(asked) = task.cancel_requested_at {
                tr { th { "cancel requested" } td { (when(asked, now)) } }
            }
            @if let Some(policy) = &task.policy {
                tr { th { "policy" } td { code { (policy) } } }
            }
            tr { th { "creator" } td { (creator(task.creator_content_type_id, task.creator_object_id)) } }
            tr { th { "hash" } td { code { (task.task_hash) } } }
        }
        h2 { "Params" }
        pre.params { (pretty_params(&task.task_params)) }
        h2 { "Last error" }
        @if task.last_error.is_empty() { p.muted { "None." } } @else { pre.error { (task.last_error) } }
        (chain_view(view, chain, Some(task.id), None))
        }
    }
}

fn creator(content_type: Option<i32>, object: Option<u32>) -> Markup {
    match (content_type, object) {
        (Some(kind), Some(id)) => html! { "content type " (kind) ", object " (id) },
        _ => html! { span.muted { "—" } },
    }
}

pub(crate) async fn completed(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let db = ctx.queue().db();
    let done = inspect::completed(db, id).await?.ok_or_else(|| {
        WebError::not_found(format!(
            "There is no history row {id}: it may have been retried, pruned or deleted."
        ))
    })?;
    let chain = inspect::chain(db, &done.task_name, &done.task_hash, CHAIN_LIMIT).await?;
    let state = State::of_completed(&done);
    let title = format!("History {id}");
    respond(&req, &ctx, &title, Nav::State(state), |view| {
        completed_page(view, &done, state, &chain, notice.render(), req.path())
    })
    .await
}

fn completed_page(
    view: &View<'_>,
    done: &completed_task::Model,
    state: State,
    chain: &Chain,
    notice: Option<Markup>,
    here: &str,
) -> Markup {
    let now = view.ctx.now();
    let back = view.ctx.link(&format!("tasks?state={state}"));
    html! {
        h1 { (title_case(state.as_str())) " " (done.id) ": " (done.task_name) }
        @if let Some(notice) = notice { (notice) }
        div data-live="completed" {
        p {
            span.state data-state=(state) { (state) }
            @if done.cancelled_at.is_some() { " " span.state data-state="cancelled" { "cancelled" } }
        }
        (action_form(view, if state == State::Failed { &back } else { here }, actions_for(state),
            html! { input type="hidden" name="id" value=(done.id); }))
        table.fields {
            tr { th { "name" } td { (done.task_name) } }
            tr { th { "verbose name" } td { (done.verbose_name.as_deref().unwrap_or("—")) } }
            tr { th { "queue" } td { (queue_name(done.queue.as_deref())) } }
            tr { th { "priority" } td { (done.priority) } }
            tr { th { "finished" } td { (when(done.run_at, now)) " · " (done.run_at.format("%Y-%m-%d %H:%M:%S%.6f UTC")) } }
            tr { th { "failed at" } td { (maybe_when(done.failed_at, now)) } }
            @if let Some(cancelled) = done.cancelled_at {
                tr { th { "cancelled at" } td { (when(cancelled, now)) } }
            }
            tr { th { "attempts" } td { (done.attempts) } }
            tr { th { "repeat" } td { @if done.repeat > 0 { "every " (done.repeat) " s" } @else { "never" } } }
            tr { th { "ran on" } td { (done.locked_by.as_deref().unwrap_or("—")) } }
            tr { th { "started" } td { (maybe_when(done.locked_at, now)) } }
            tr { th { "creator" } td { (creator(done.creator_content_type_id, done.creator_object_id)) } }
            tr { th { "hash" } td { code { (done.task_hash) } } }
        }
        h2 { "Params" }
        pre.params { (pretty_params(&done.task_params)) }
        @if let Some(result) = &done.result {
            h2 { "Result" }
            pre.result { (pretty_params(result)) }
        }
        h2 { "Last error" }
        @if done.last_error.is_empty() { p.muted { "None." } } @else { pre.error { (done.last_error) } }
        (chain_view(view, chain, None, Some(done.id)))
        }
    }
}

/// The other runs of the same task and params: its repeat chain.
fn chain_view(
    view: &View<'_>,
    chain: &Chain,
    task_id: Option<i32>,
    completed_id: Option<i32>,
) -> Markup {
    let ctx = view.ctx;
    let now = ctx.now();
    html! {
        h2 { "Runs of this task with the same params" }
        @if chain.waiting.len() + chain.history.len() <= 1 {
            p.muted { "No other run." }
        } @else {
            div.scroll {
            table.grid.chain {
                thead { tr { th.num { "id" } th { "state" } th { "when" } th.num { "attempts" } th { "error" } } }
                tbody {
                    @for task in &chain.waiting {
                        tr class=[(Some(task.id) == task_id).then_some("current")] {
                            td.num { a href=(ctx.link(&format!("tasks/{}", task.id))) { (task.id) } }
                            td { (State::of_task(task, now)) }
                            td { (when(task.run_at, now)) }
                            td.num { (task.attempts) }
                            td { @if task.has_error() { span.bad { "yes" } } }
                        }
                    }
                    @for done in &chain.history {
                        tr class=[(Some(done.id) == completed_id).then_some("current")] {
                            td.num { a href=(ctx.link(&format!("completed/{}", done.id))) { (done.id) } }
                            td { @if done.failed() { "failed" } @else { "completed" } }
                            td { (when(done.run_at, now)) }
                            td.num { (done.attempts) }
                            td { @if done.has_error() { span.bad { (clip(first_line(&done.last_error), 60)) } } }
                        }
                    }
                }
            }
            }
        }
    }
}

// ---- runners ----------------------------------------------------------

pub(crate) async fn runners(ctx: Ctx, req: HttpRequest) -> Result<HttpResponse, WebError> {
    let (db, now) = (ctx.queue().db(), ctx.now());
    let runners = admin::runners(db, ctx.queue().config().lease(), now).await?;
    let throughput = admin::runner_throughput(db, &runners, now).await?;
    respond(&req, &ctx, "Runners", Nav::Runners, |view| {
        html! {
            h1 { "Runners" }
            p.muted {
                "Runners register themselves when they start and beat every few seconds; one whose \
                 last beat is older than its lease is shown as gone. In flight: the tasks it held \
                 at its last beat, of its slots (executors). Throughput: the tasks it finished, \
                 succeeded or failed, per minute over the last "
                (admin::THROUGHPUT_WINDOW.num_minutes()) " minutes."
            }
            div.scroll data-live="runners" {
            table.grid #runners {
                thead { tr { th { "host" } th.num { "pid" } th { "identity" } th { "queue" } th.num { "in flight" } th.num { "slots" } th.num { "finished / min" } th { "since" } th { "last seen" } th { "alive" } th { "drain" } } }
                tbody {
                    @for (status, throughput) in runners.iter().zip(&throughput) {
                        @let runner = &status.runner;
                        tr data-runner=(runner.runner_id) {
                            td.value { (runner.host) }
                            td.num { (runner.pid) }
                            td { code.value { (runner.runner_id) } }
                            td { @match &runner.queue { Some(q) => (q), None => span.muted { "every queue" } } }
                            td.num.in-flight {
                                (runner.running)
                                meter min="0" max=(runner.executors.max(1)) value=(runner.running)
                                    title=(format!("{} of {} slots busy", runner.running, runner.executors)) {}
                            }
                            td.num.slots { (runner.executors) }
                            td.num.throughput title=(format!(
                                "{} finished in the last {} s", throughput.finished, throughput.window_seconds
                            )) {
                                (format!("{:.1}", throughput.per_minute))
                            }
                            td { (when(runner.started_at, now)) }
                            td { (when(runner.last_seen, now)) }
                            td { @if status.alive { span.ok { "alive" } } @else { span.bad { "gone" } } }
                            td {
                                @if runner.drain_requested_at.is_some() {
                                    span.bad { "draining" }
                                } @else if status.alive && ctx.can_act() {
                                    (super::controls::drain_button(&ctx, &view.token, &ctx.link("runners"), &runner.runner_id))
                                }
                            }
                        }
                    }
                }
            }
            @if runners.is_empty() { p.muted { "No runner has registered with this database." } }
            }
        }
    })
    .await
}

pub(crate) async fn schedules(ctx: Ctx, req: HttpRequest) -> Result<HttpResponse, WebError> {
    let now = ctx.now();
    let schedules = crate::cron::list(ctx.queue().db()).await?;
    respond(&req, &ctx, "Schedules", Nav::Schedules, |_| {
        html! {
            h1 { "Schedules" }
            p.muted { "Cron schedules enqueue their task at every occurrence, once across all runners. Create, pause, resume and remove them with bgtasks cron or the JSON API (/api/schedules)." }
            div.scroll data-live="schedules" {
            table.grid #schedules {
                thead { tr { th { "name" } th { "cron" } th { "time zone" } th { "task" } th { "queue" } th.num { "priority" } th { "missed" } th { "state" } th { "next" } th { "last" } } }
                tbody {
                    @for schedule in &schedules {
                        tr {
                            td.value { (schedule.name) }
                            td { code.value { (schedule.cron) } }
                            td { (schedule.timezone) }
                            td.value { (schedule.task_name) }
                            td { (queue_name(schedule.queue.as_deref())) }
                            td.num { (schedule.priority) }
                            td { (schedule.missed) }
                            td { @if schedule.paused { span.bad { "paused" } } @else { span.ok { "active" } } }
                            td { @if schedule.paused { "—" } @else { (when(schedule.next_fire_at, now)) } }
                            td { (maybe_when(schedule.last_fired_at, now)) }
                        }
                    }
                }
            }
            @if schedules.is_empty() { p.muted { "No schedule yet." } }
            }
        }
    })
    .await
}

// ---- actions ----------------------------------------------------------

pub(crate) async fn act(
    ctx: Ctx,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let field = |name: &str| form_field(&form, name);
    csrf::check(&ctx, &req, field("csrf"))?;
    ctx.check_can_act()?;
    let action: Action = field("action")
        .ok_or_else(|| WebError::bad_request("the form names no action"))?
        .parse()?;
    let ids = form
        .iter()
        .filter(|(key, _)| key == "id")
        .map(|(_, value)| value.parse::<i32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| WebError::bad_request("a selected id is not a number"))?;
    // Checked before the action runs, so a refused one changes nothing.
    let mut back = back_to(&ctx, field("back"))?;
    let outcome = actions::apply(ctx.queue(), action, &ids).await?;
    // A detail page whose row the action removed goes back to its list.
    let gone = matches!(
        action,
        Action::Retry | Action::Cancel | Action::Delete | Action::DeleteCompleted
    );
    if gone && (back.contains("/tasks/") || back.contains("/completed/")) {
        back = ctx.base.clone();
    }
    let separator = if back.contains('?') { '&' } else { '?' };
    let location = format!(
        "{back}{separator}done={}&n={}",
        action.as_str(),
        outcome.changed
    );
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish())
}

/// The first value of field `name` in a posted form.
pub(crate) fn form_field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Where a form goes back to after its action: the page it was on
/// (`back`), inside this dashboard only, else the overview.
pub(crate) fn back_to(ctx: &Ctx, back: Option<&str>) -> Result<String, WebError> {
    match back {
        None => Ok(ctx.base.clone()),
        Some(back) if is_local_path(back, &ctx.base) => Ok(back.to_owned()),
        Some(back) => Err(WebError::bad_request(format!(
            "the form's return address {back:?} is not a page of this dashboard; nothing was \
             done. Reload the page and try again"
        ))),
    }
}

/// Whether `back` is a path of a page under `base` that a browser follows
/// as such: visible ASCII only (a header value, nothing a browser strips),
/// no backslash (browsers read `/\\host` as `//host`, another site), not
/// `//` (another site), and no `.` or `..` segment (leaving `base`).
fn is_local_path(back: &str, base: &str) -> bool {
    let visible = back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    let path = back.split(['?', '#']).next().unwrap_or_default();
    let no_dot_segment = path.split('/').all(|segment| {
        let segment = segment.to_ascii_lowercase().replace("%2e", ".");
        segment != "." && segment != ".."
    });
    visible && back.starts_with(base) && !back.starts_with("//") && no_dot_segment
}

// ---- assets -----------------------------------------------------------

pub(crate) async fn asset(file: web::Path<String>) -> Result<HttpResponse, WebError> {
    let (body, content_type) = match file.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        other => {
            return Err(WebError::not_found(format!("no asset named {other:?}")));
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_show_wide_integers_exactly() {
        assert_eq!(
            pretty_params(r#"[[18446744073709551616], {}]"#),
            "[\n  [\n    18446744073709551616\n  ],\n  {}\n]"
        );
        assert_eq!(pretty_params("not json"), "not json");
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(TimeDelta::seconds(-5)), "5 s ago");
        assert_eq!(relative(TimeDelta::minutes(3)), "in 3 min");
        assert_eq!(relative(TimeDelta::hours(-25)), "1 d ago");
        assert_eq!(relative(TimeDelta::zero()), "now");
    }

    #[test]
    fn only_paths_inside_the_dashboard_are_return_addresses() {
        for good in [
            "/dash/",
            "/dash/tasks?state=failed&q=a%20b",
            "/dash/tasks/3",
        ] {
            assert!(is_local_path(good, "/dash/"), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example/",
            "/dash/\\x",
            "/dash/../admin",
            "/dash/%2E%2e/admin",
            "/dash/./x",
            "/dash/x\r\nSet-Cookie: a=b",
            "/dash/\tx",
            "/dash/é",
            "/other/",
            "",
        ] {
            assert!(!is_local_path(bad, "/dash/"), "{bad:?}");
        }
        assert!(is_local_path("/tasks", "/"));
        assert!(!is_local_path("//evil.example", "/"));
        assert!(!is_local_path("/\\evil.example", "/"));
    }

    #[test]
    fn scales_step_by_round_numbers() {
        for (peak, step) in [
            (0, 1),
            (1, 1),
            (4, 1),
            (7, 2),
            (40, 10),
            (41, 20),
            (130, 50),
            (9_000, 5_000),
        ] {
            assert_eq!(scale_step(peak, 4), step, "{peak}");
        }
        assert!(scale_step(i64::MAX, 4) > 0);
    }

    #[test]
    fn time_labels_fall_on_round_spans() {
        assert_eq!(label_every(3_600, 6), 600);
        assert_eq!(label_every(60, 6), 60);
        assert_eq!(label_every(86_400, 6), 21_600);
        assert_eq!(label_every(i64::MAX, 6), 86_400);
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hi", 5), "hi");
    }

    #[test]
    fn urls_encode_every_reserved_byte() {
        assert_eq!(
            encode("a b&c=(default)/é"),
            "a%20b%26c%3D%28default%29%2F%C3%A9"
        );
    }

    #[test]
    fn templates_escape_what_they_show() {
        let markup = html! { td { (clip("<script>alert(1)</script>", 80)) } };
        assert_eq!(
            markup.into_string(),
            "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"
        );
    }
}
