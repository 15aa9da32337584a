//! The actix-web parts: a dashboard [`Scope`] your app mounts where it
//! likes, the JSON API behind it, and the Prometheus metrics endpoint.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use background_tasks::web::{Access, Dashboard};
//! use background_tasks::{Queue, Runner, DEFAULT_SHUTDOWN_GRACE, db};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let queue = Queue::new(db::open(None).await.expect("database"));
//!     // The runner's actors, on this actix System, beside the HTTP server.
//!     let runner = Runner::start(queue.clone()).map_err(std::io::Error::other)?;
//!     let dashboard = Dashboard::new(queue.clone())
//!         // Your app decides who may see and act: here, everyone (a demo).
//!         .authorize(|_request| Access::Full);
//!     HttpServer::new(move || {
//!         App::new()
//!             .app_data(web::Data::new(queue.clone()))
//!             .service(dashboard.scope("/dashboard"))
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//!     // The server stopped (SIGINT, SIGTERM): let running tasks finish.
//!     runner.shutdown(DEFAULT_SHUTDOWN_GRACE).await;
//!     Ok(())
//! }
//! ```
//!
//! ## Routes, under the mount path
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | overview: tasks per state and queue, the oldest due task, completions and failures per minute over the last hour, runners |
//! | GET | `/tasks?state=…` | one state's tasks, filtered and paginated (see [`crate::inspect`]) |
//! | GET | `/tasks/{id}` | a waiting or running task, with its repeat chain |
//! | GET | `/completed/{id}` | a history row, with its repeat chain |
//! | GET | `/runners` | runners: host, pid, tasks in flight of its slots, tasks finished per minute, since, alive |
//! | POST | `/actions` | an action over a selection (HTML form, CSRF-checked) |
//! | POST | `/controls` | pause or resume a queue, drain a runner (HTML form, CSRF-checked) |
//! | GET | `/schedules` | the cron schedules ([`crate::cron`]) |
//! | GET | `/workflows` | workflows by name, with their steps per state ([`crate::workflow::view`]) |
//! | GET | `/workflows/{name}` | a workflow's steps: state, what each waits for, run_at, attempts, last error |
//! | GET | `/batches/{name}` | a batch's progress: counts, a bar, its callback |
//! | GET | `/limits` | each queue's concurrency limit with its running tasks, each rate limit with its starts in the current window |
//! | GET | `/metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | GET | `/api/…` | the JSON API, see [`api`](self#json-api) |
//!
//! Every page updates itself while its tab is visible: `app.js` fetches it
//! again every 2 seconds and swaps in the regions that change (the
//! navigation's counts, the overview's cards and chart, lists, details),
//! without a reload and without touching a region in use (focused, with
//! selected text, or the chart under the pointer). The Content-Security-
//! Policy allows exactly that: `connect-src 'self'`.
//!
//! List filters (query parameters, on `/tasks` and `/api/tasks`): `state`
//! (`pending`, `scheduled`, `running`, `failed`, `completed`), `queue`
//! (`(default)` for the unnamed queue), `name` (exact task name), `q`
//! (text in the name or params, case-insensitive on every backend), `since`
//! and `until` (times in UTC, see [`crate::inspect::parse_time`]), `limit`
//! (1 to 500, default 50), and `after` (the `next` cursor of the previous
//! page) or `before` (the `prev` cursor of the next page: the page before
//! it; going back past the start gives the first page). A filter that does not parse answers a 400 (the page shows what
//! is wrong beside the filters).
//!
//! ## JSON API
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/overview` | `{now, counts: [{queue, state, count}], oldest_due, oldest_due_age_seconds, throughput: {start, bucket_seconds, succeeded: […], failed: […]}, runners_alive}` |
//! | GET | `/api/tasks?state=…&…` | `{state, rows: [task or history row], next, prev}`; pass `next` as `after` for the next page, `prev` as `before` for the previous one (each `null` at its end) |
//! | GET | `/api/tasks/{id}` | `{task, chain: {waiting, history}}` |
//! | GET | `/api/completed/{id}` | `{completed, chain: {waiting, history}}` |
//! | GET | `/api/runners` | `[{runner: {runner_id, host, pid, queue, executors, running, started_at, last_seen}, alive, throughput: {finished, window_seconds, per_minute}}]`: `executors` are its slots, `running` its tasks in flight at its last heartbeat, `throughput` what it finished over the last 5 minutes ([`crate::admin::runner_throughput`]) |
//! | POST | `/api/actions` | body `{"action": "retry", "ids": [1, 2]}`; answers `{action, changed, ids}` |
//! | GET | `/api/schedules` | `[{…schedule, upcoming: [3 next occurrences]}]` |
//! | POST | `/api/schedules` | body `{name, cron, task, args?, kwargs?, timezone?, queue?, priority?, verbose_name?, missed?}`; answers 201 and the schedule |
//! | POST | `/api/schedules/{name}/pause`, `…/resume` | pauses or resumes it |
//! | DELETE | `/api/schedules/{name}` | removes it |
//! | GET | `/api/workflows?after=&limit=` | `{workflows: [{name, batch, steps, counts: {waiting, queued, running, succeeded, failed, cancelled, unknown}, first_task_id, newest_task_id, newest_activity}], next}`: by name, 50 a page (at most 500); pass `next` as `after` |
//! | GET | `/api/workflows/{name}?after=&limit=` | `{name, batch, counts, total, steps: [{step, task_id, task_name, state, waiting_on, after: [{task_id, step, ended}], run_anyway, run_at, finished_at, queue, attempts, last_error}], next}`: 200 steps a page (at most 1,000); 404 for no such workflow |
//! | POST | `/api/workflows` | body `{name, steps: [{name, task, params?, args?, kwargs?, after?, run_anyway?, queue?, priority?, schedule?, verbose_name?, max_attempts?, allow_unknown?}]}` ([`crate::workflow::request`]); answers 201 `{workflow, ids: {step: id}}`; a bad graph or value answers 400 and writes nothing |
//! | GET | `/api/batches/{name}` | `{name, total, succeeded, failed, cancelled, pending, running, unknown, callback: step or null, callback_kind: "on_finish" or "on_success" or null}` |
//! | POST | `/api/batches` | body `{name, tasks: [{task, params?, ...}], on_finish? or on_success?: {task, ...}}`; answers 201 `{batch, tasks: [ids], callback}` |
//! | GET | `/api/limits` | `{concurrency: [{queue, max_running, running}], rate: [{queue, max_starts, period_seconds, started_in_window}]}` |
//! | GET | `/api/queues/paused` | `{paused: [{queue, paused_at}]}` |
//! | POST | `/api/queues/pause` | body `{"queue": "mail", "new": false}` (`null`: the default queue; `new`: pause a queue nothing names yet); answers `{queue, paused, already}`; an unknown queue answers 400 |
//! | POST | `/api/queues/resume` | body `{"queue": "mail"}`; answers `{queue, resumed}`, or 404 when it was not paused |
//! | POST | `/api/runners/drain` | body `{"runner": "host:pid:random"}`; answers `{runner, draining, already}`, or 404 for no such runner |
//!
//! Actions: `run_now`, `priority_up`, `priority_down`, `cancel` and
//! `delete` take task ids; `retry` and `delete_completed` take history
//! ids. `delete` takes waiting tasks only: a selection with a running task
//! answers 409 and deletes nothing (its runner holds the row; `cancel` it).
//! An error answers `{"error": "…"}` with a 4xx or 5xx status, and so does
//! a path under `/api/` that is no route (404).
//!
//! ## Safety
//!
//! - **Who may look and act** is the embedding app's decision: the
//!   [`Dashboard::authorize`] hook sees each request and answers
//!   [`Access::Full`], [`Access::ReadOnly`] or [`Access::Denied`]. A
//!   dashboard built without a hook refuses every request, so forgetting
//!   it fails closed. [`Dashboard::read_only`] turns every action off.
//! - **Which names it answers to** (DNS rebinding): a page on
//!   `evil.example` can make its name resolve to this server and then read
//!   and drive the dashboard as its own site; only the `Host` header tells.
//!   Every request must name `localhost`, an IP address (a page whose
//!   origin is an IP address was served by that address, not by a rebound
//!   name), or a name given to [`Dashboard::allowed_hosts`]; any other gets
//!   a 403 before the authorization hook runs. `Forwarded` and
//!   `X-Forwarded-Host` / `-Proto` count only from
//!   [`Dashboard::trusted_proxies`].
//! - **Actions are POST only**, from this origin: an `Origin` header that
//!   differs in scheme, host or port (default ports made explicit) is
//!   refused. HTML forms carry a CSRF token checked against a
//!   `SameSite=Strict` cookie (double submit), and their return address
//!   must be a page of this dashboard (checked before the action runs).
//!   JSON actions must be sent as exactly `application/json` (parameters
//!   allowed), which a browser sends cross-site only after a CORS preflight
//!   that this scope never approves.
//! - **Bad input answers a 4xx, never a 500**: query strings and forms
//!   that do not decode, times out of range, text with a NUL byte. A
//!   database error is logged and answered without its text: 400 when the
//!   database refused a value, 500 otherwise.
//! - **Output is escaped** (maud templates), pages are served with a
//!   strict Content-Security-Policy, and every statement binds its values.
//! - Assets (CSS, a few lines of JavaScript) are compiled into the binary:
//!   no CDN, no request leaves your network.

mod actions;
mod api;
mod controls;
mod csrf;
mod exporter;
mod host;
mod pages;
mod standalone;
mod workflow_pages;
mod workflows;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, Scope, web};

use crate::queue::Queue;

pub use actions::Action;
pub(crate) use exporter::Exporter;
pub use standalone::{Standalone, serve};

/// What a request may do, as the embedding app's authorization hook says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Refused: the request gets a 403.
    Denied,
    /// May look, not act.
    ReadOnly,
    /// May look and act.
    Full,
}

type Authorize = Arc<dyn Fn(&HttpRequest) -> Access + Send + Sync>;

/// The dashboard, its JSON API and its metrics endpoint, as an actix-web
/// [`Scope`]. Cheap to clone: build it once and call [`Dashboard::scope`]
/// in the `HttpServer::new` factory.
#[derive(Clone)]
pub struct Dashboard {
    queue: Queue,
    authorize: Option<Authorize>,
    read_only: bool,
    hosts: host::HostPolicy,
}

impl Dashboard {
    /// A dashboard over `queue`. It refuses every request until
    /// [`Dashboard::authorize`] is called.
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            authorize: None,
            read_only: false,
            hosts: host::HostPolicy::default(),
        }
    }

    /// The hook that decides, per request, what it may do: check your
    /// app's session, a header set by your proxy, the peer address.
    pub fn authorize(
        mut self,
        hook: impl Fn(&HttpRequest) -> Access + Send + Sync + 'static,
    ) -> Self {
        self.authorize = Some(Arc::new(hook));
        self
    }

    /// Turns every action off, whatever the hook says: a dashboard to
    /// look at only.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Host names the dashboard answers to, besides `localhost` and IP
    /// addresses (`127.0.0.1`, `[::1]`, `10.0.0.5`), which it always
    /// answers to. A request whose `Host` is none of them gets a 403: this
    /// is what stops DNS rebinding (see [Safety](self#safety)). Give the names people
    /// and proxies use to reach it (`"dash.example.com"`; a port, if
    /// given, is dropped: every port matches). `"*"` answers to every
    /// name: only for an app that checks `Host` itself, or behind a proxy
    /// that does. Adds to the names given before; an entry that is not a
    /// host name matches nothing and is logged.
    pub fn allowed_hosts<I>(mut self, hosts: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for entry in hosts {
            match host::allowed_entry(entry.as_ref()) {
                Some(name) => self.hosts.allowed.push(name),
                None => tracing::warn!(
                    entry = entry.as_ref(),
                    "Dashboard::allowed_hosts: not a host name; it matches nothing"
                ),
            }
        }
        self
    }

    /// Peers (reverse proxies) whose `Forwarded`, `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` headers say where a request was sent. From any
    /// other peer those headers are ignored, and the request's own `Host`
    /// counts. The forwarded host must be allowed too
    /// ([`Dashboard::allowed_hosts`]). Adds to the peers given before.
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        self.hosts.trusted_proxies.extend(proxies);
        self
    }

    /// The scope, mounted at `path` (`"/dashboard"`, or `""` for the root
    /// of its app). It can sit inside your own scopes: its links are
    /// resolved from the request, not from `path`.
    pub fn scope(&self, path: &str) -> Scope {
        web::scope(path)
            .app_data(web::Data::new(self.clone()))
            // Query strings and forms that do not decode answer a 400 in
            // the dashboard's own words (JSON under /api/).
            .app_data(web::QueryConfig::default().error_handler(|err, req| {
                WebError::bad_request(format!(
                    "the query string does not decode ({err}); check the parameters"
                ))
                .json(is_api(req))
                .into()
            }))
            .app_data(web::FormConfig::default().error_handler(|err, req| {
                WebError::bad_request(format!("the form does not decode ({err})"))
                    .json(is_api(req))
                    .into()
            }))
            .service(
                web::resource("/")
                    .name(OVERVIEW_ROUTE)
                    .route(web::get().to(pages::overview)),
            )
            .route("", web::get().to(pages::to_overview))
            .route("/tasks", web::get().to(pages::tasks))
            .route("/tasks/{id}", web::get().to(pages::task))
            .route("/completed/{id}", web::get().to(pages::completed))
            .route("/runners", web::get().to(pages::runners))
            .route("/schedules", web::get().to(pages::schedules))
            .route("/actions", web::post().to(pages::act))
            .route("/controls", web::post().to(controls::act))
            .route("/assets/{file}", web::get().to(pages::asset))
            .route("/metrics", web::get().to(api::metrics))
            .route("/api/overview", web::get().to(api::overview))
            .route("/api/tasks", web::get().to(api::tasks))
            .route("/api/tasks/{id}", web::get().to(api::task))
            .route("/api/completed/{id}", web::get().to(api::completed))
            .route("/api/runners", web::get().to(api::runners))
            .route("/api/actions", web::post().to(api::act))
            .route("/api/queues/paused", web::get().to(controls::paused))
            .route("/api/queues/pause", web::post().to(controls::pause))
            .route("/api/queues/resume", web::post().to(controls::resume))
            .route("/api/runners/drain", web::post().to(controls::drain))
            .route("/workflows", web::get().to(workflow_pages::list))
            .route("/workflows/{name}", web::get().to(workflow_pages::show))
            .route("/batches/{name}", web::get().to(workflow_pages::batch))
            .route("/limits", web::get().to(workflow_pages::limits))
            .route("/api/workflows", web::get().to(workflows::list))
            .route("/api/workflows", web::post().to(workflows::create))
            .route("/api/workflows/{name}", web::get().to(workflows::show))
            .route("/api/batches", web::post().to(workflows::create_batch))
            .route("/api/batches/{name}", web::get().to(workflows::show_batch))
            .route("/api/limits", web::get().to(workflows::limits))
            .route("/api/schedules", web::get().to(api::schedules))
            .route("/api/schedules", web::post().to(api::create_schedule))
            .route(
                "/api/schedules/{name}",
                web::delete().to(api::remove_schedule),
            )
            .route(
                "/api/schedules/{name}/{change}",
                web::post().to(api::change_schedule),
            )
            .default_service(web::to(no_such_page))
    }
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("authorize", &self.authorize.is_some())
            .field("read_only", &self.read_only)
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// What a path that is no route answers: a 404 in words (JSON under
/// `/api/`).
async fn no_such_page(req: HttpRequest) -> HttpResponse {
    WebError::not_found(format!(
        "there is no {} {} in this dashboard; see the routes in its documentation",
        req.method(),
        req.path()
    ))
    .json(is_api(&req))
    .error_response()
}

/// Name of the overview route: its URL is the base of every link.
const OVERVIEW_ROUTE: &str = "background_tasks_dashboard";

/// An authorized request: what every handler starts from.
pub(crate) struct Ctx {
    dashboard: web::Data<Dashboard>,
    access: Access,
    /// Path of the overview, ending in `/`: links are this plus a route.
    base: String,
    /// Where the request was sent (an allowed host).
    authority: host::Authority,
}

impl Ctx {
    pub(crate) fn queue(&self) -> &Queue {
        &self.dashboard.queue
    }

    /// Whether this request may act.
    pub(crate) fn can_act(&self) -> bool {
        self.access == Access::Full && !self.dashboard.read_only
    }

    /// Refuses an action when the request may only look.
    pub(crate) fn check_can_act(&self) -> Result<(), WebError> {
        if self.dashboard.read_only {
            return Err(WebError::forbidden(
                "this dashboard is read-only: actions are turned off",
            ));
        }
        if self.access != Access::Full {
            return Err(WebError::forbidden(
                "you may look at this dashboard but not act on it",
            ));
        }
        Ok(())
    }

    pub(crate) fn link(&self, route: &str) -> String {
        format!("{}{}", self.base, route)
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.queue().config().clock().now()
    }

    /// Whether the request came over HTTPS (directly, or as a trusted
    /// proxy says).
    pub(crate) fn is_https(&self) -> bool {
        self.authority.scheme == "https"
    }

    /// Refuses a write whose `Origin` is another site.
    pub(crate) fn check_origin(&self, req: &HttpRequest) -> Result<(), WebError> {
        self.dashboard.hosts.check_origin(req)
    }
}

impl FromRequest for Ctx {
    type Error = WebError;
    type Future = std::future::Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ctx::of(req))
    }
}

impl Ctx {
    fn of(req: &HttpRequest) -> Result<Self, WebError> {
        let json = is_api(req);
        let dashboard = req
            .app_data::<web::Data<Dashboard>>()
            .cloned()
            .ok_or_else(|| WebError::internal("the dashboard's state is missing"))?;
        // Before anything else: a request sent to another name may come
        // from a page that rebound its name to this server.
        let authority = dashboard.hosts.check(req).map_err(|err| err.json(json))?;
        let access = match &dashboard.authorize {
            Some(hook) => hook(req),
            None => {
                return Err(WebError::forbidden(
                    "this dashboard has no authorization hook: the app must call \
                     Dashboard::authorize to let requests in",
                )
                .json(json));
            }
        };
        if access == Access::Denied {
            return Err(
                WebError::forbidden("you are not allowed to see this dashboard").json(json),
            );
        }
        let base = req
            .url_for_static(OVERVIEW_ROUTE)
            .map(|url| url.path().to_owned())
            .unwrap_or_else(|_| "/".to_owned());
        Ok(Ctx {
            dashboard,
            access,
            base,
            authority,
        })
    }
}

fn is_api(req: &HttpRequest) -> bool {
    req.path().contains("/api/")
}

/// An error answered to a request: a status and a message saying what to
/// do, as text on pages and as `{"error": ...}` on the API.
#[derive(Debug)]
pub(crate) struct WebError {
    status: StatusCode,
    message: String,
    json: bool,
}

impl WebError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            json: false,
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Answers as JSON.
    pub(crate) fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header(("X-Content-Type-Options", "nosniff"));
        if self.json {
            response.json(serde_json::json!({ "error": self.message }))
        } else {
            response
                .content_type("text/plain; charset=utf-8")
                .body(format!("{}\n", self.message))
        }
    }
}

impl From<crate::Error> for WebError {
    /// Bad input answers a 400 with what is wrong. A database error is
    /// logged, and answered without its text (which can show statements,
    /// table names and values): a 400 when the database refused a value
    /// of the request, else a 500.
    fn from(err: crate::Error) -> Self {
        match err {
            crate::Error::InvalidOption { .. } | crate::Error::Params(_) => {
                WebError::bad_request(err.to_string())
            }
            err if err.is_refused_value() => {
                tracing::info!("dashboard: the database refused a value of a request: {err}");
                WebError::bad_request(
                    "the database cannot store a value of this request: it is too long, out of \
                     range, or holds a character the database refuses (such as a NUL byte); \
                     change it and try again",
                )
            }
            err => {
                tracing::warn!("dashboard: {err}");
                WebError::internal(
                    "the queue's database could not answer (the server's log says why); check \
                     that it is reachable and try again",
                )
            }
        }
    }
}
