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
//! | GET | `/runners` | runners: host, pid, since, tasks held, alive |
//! | POST | `/actions` | an action over a selection (HTML form, CSRF-checked) |
//! | GET | `/schedules` | the cron schedules ([`crate::cron`]) |
//! | GET | `/metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | GET | `/api/…` | the JSON API, see [`api`](self#json-api) |
//!
//! List filters (query parameters, on `/tasks` and `/api/tasks`): `state`
//! (`pending`, `scheduled`, `running`, `failed`, `completed`), `queue`
//! (`(default)` for the unnamed queue), `name` (exact task name), `q`
//! (text in the name or params), `since` and `until` (times in UTC, see
//! [`crate::inspect::parse_time`]), `limit` (1 to 500, default 50), and
//! `after` (the `next` cursor of the previous page).
//!
//! ## JSON API
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/overview` | `{now, counts: [{queue, state, count}], oldest_due, oldest_due_age_seconds, throughput: {start, bucket_seconds, succeeded: […], failed: […]}, runners_alive}` |
//! | GET | `/api/tasks?state=…&…` | `{state, rows: [task or history row], next}`; pass `next` as `after` for the next page |
//! | GET | `/api/tasks/{id}` | `{task, chain: {waiting, history}}` |
//! | GET | `/api/completed/{id}` | `{completed, chain: {waiting, history}}` |
//! | GET | `/api/runners` | `[{runner: {runner_id, host, pid, queue, executors, running, started_at, last_seen}, alive}]` |
//! | POST | `/api/actions` | body `{"action": "retry", "ids": [1, 2]}`; answers `{action, changed, ids}` |
//! | GET | `/api/schedules` | `[{…schedule, upcoming: [3 next occurrences]}]` |
//! | POST | `/api/schedules` | body `{name, cron, task, args?, kwargs?, timezone?, queue?, priority?, verbose_name?, missed?}`; answers 201 and the schedule |
//! | POST | `/api/schedules/{name}/pause`, `…/resume` | pauses or resumes it |
//! | DELETE | `/api/schedules/{name}` | removes it |
//!
//! Actions: `run_now`, `priority_up`, `priority_down`, `cancel` and
//! `delete` take task ids; `retry` and `delete_completed` take history
//! ids. An error answers `{"error": "…"}` with a 4xx or 5xx status.
//!
//! ## Safety
//!
//! - **Who may look and act** is the embedding app's decision: the
//!   [`Dashboard::authorize`] hook sees each request and answers
//!   [`Access::Full`], [`Access::ReadOnly`] or [`Access::Denied`]. A
//!   dashboard built without a hook refuses every request, so forgetting
//!   it fails closed. [`Dashboard::read_only`] turns every action off.
//! - **Actions are POST only.** HTML forms carry a CSRF token checked
//!   against a `SameSite=Strict` cookie (double submit), and a cross-site
//!   `Origin` is refused. JSON actions must be sent as `application/json`,
//!   which a browser sends cross-site only after a CORS preflight that
//!   this scope never approves.
//! - **Output is escaped** (maud templates), pages are served with a
//!   strict Content-Security-Policy, and every statement binds its values.
//! - Assets (CSS, a few lines of JavaScript) are compiled into the binary:
//!   no CDN, no request leaves your network.

mod actions;
mod api;
mod csrf;
mod pages;
mod standalone;

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, Scope, web};

use crate::queue::Queue;

pub use actions::Action;
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
}

impl Dashboard {
    /// A dashboard over `queue`. It refuses every request until
    /// [`Dashboard::authorize`] is called.
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            authorize: None,
            read_only: false,
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

    /// The scope, mounted at `path` (`"/dashboard"`, or `""` for the root
    /// of its app). It can sit inside your own scopes: its links are
    /// resolved from the request, not from `path`.
    pub fn scope(&self, path: &str) -> Scope {
        web::scope(path)
            .app_data(web::Data::new(self.clone()))
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
            .route("/assets/{file}", web::get().to(pages::asset))
            .route("/metrics", web::get().to(api::metrics))
            .route("/api/overview", web::get().to(api::overview))
            .route("/api/tasks", web::get().to(api::tasks))
            .route("/api/tasks/{id}", web::get().to(api::task))
            .route("/api/completed/{id}", web::get().to(api::completed))
            .route("/api/runners", web::get().to(api::runners))
            .route("/api/actions", web::post().to(api::act))
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
    }
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("authorize", &self.authorize.is_some())
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Name of the overview route: its URL is the base of every link.
const OVERVIEW_ROUTE: &str = "background_tasks_dashboard";

/// An authorized request: what every handler starts from.
pub(crate) struct Ctx {
    dashboard: web::Data<Dashboard>,
    access: Access,
    /// Path of the overview, ending in `/`: links are this plus a route.
    base: String,
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
    fn from(err: crate::Error) -> Self {
        match err {
            crate::Error::InvalidOption { .. } | crate::Error::Params(_) => {
                WebError::bad_request(err.to_string())
            }
            err => {
                tracing::warn!("dashboard: {err}");
                WebError::internal(format!(
                    "{err}. The queue's database could not answer; check that it is reachable \
                     and try again"
                ))
            }
        }
    }
}
