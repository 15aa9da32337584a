//! # background-tasks
//!
//! A database-backed task queue for Rust services: what django-background-tasks
//! does for Django, as an actix actor system on SeaORM, on SQLite (the embedded
//! default), PostgreSQL and MySQL/MariaDB. The tables are the seed's own, so a
//! Django project and Rust runners can share one queue.
//!
//! ## Quick start
//!
//! Besides this crate, an app needs `serde` (with `derive`) for its
//! params types, and an actix runtime to run tasks in (`actix-web`, or
//! `actix-rt` alone). The crates that appear in this crate's API are
//! re-exported ([`sea_orm`], [`chrono`], [`serde_json`], [`serde`],
//! [`actix_rt`], and [`actix_web`] with the `web` feature): use them
//! through here, or depend on the same major versions.
//!
//! ```no_run
//! use background_tasks::{Queue, Registry, Config, Task, TaskContext, TaskError, db};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Greeting { name: String }
//!
//! struct Greet;
//!
//! impl Task for Greet {
//!     type Params = Greeting;
//!     type Output = String;
//!     fn name() -> &'static str { "greet" }
//!     async fn run(&self, p: Greeting, _: TaskContext) -> Result<String, TaskError> {
//!         Ok(format!("hello, {}", p.name))
//!     }
//! }
//!
//! # async fn demo() -> background_tasks::Result<()> {
//! // No URL: background_tasks.sqlite3 in the working directory, created and migrated.
//! let db = db::open(None).await?;
//! let registry = Registry::new();
//! registry.register(Greet);
//! let queue = Queue::with_parts(db, registry, Config::default());
//!
//! // Stores a row; a runner executes it later.
//! let stored = queue.enqueue::<Greet>(&Greeting { name: "Ada".into() }).schedule(60).await?;
//! // Or run the body inline, writing nothing:
//! assert_eq!(Greet.now(Greeting { name: "Ada".into() }).await.unwrap(), "hello, Ada");
//! # Ok(()) }
//! ```

mod actors;
pub mod admin;
#[doc(hidden)]
pub mod bench;
pub mod builtin;
mod cancel;
pub mod cli;
mod clock;
mod config;
pub mod controls;
pub mod cron;
pub mod db;
pub mod doctor;
pub mod entity;
mod error;
mod events;
pub mod inspect;
pub mod metrics;
pub mod params;
mod policy;
mod queries;
mod queue;
mod registry;
mod runner;
mod schedule;
mod state;
mod store;
mod task;
#[cfg(feature = "otel")]
pub mod telemetry;
#[cfg(feature = "web")]
pub mod web;
mod worker;
pub mod workflow;

// The crates whose types appear in this crate's API, re-exported so that an
// app uses the very versions (and features) this crate was built with:
// `background_tasks::sea_orm::DatabaseConnection` is the type `Queue::db`
// returns, whatever other sea-orm a dependency tree holds.
#[cfg(feature = "web")]
pub use actix_web;
pub use {actix_rt, chrono, sea_orm, serde, serde_json};

pub use clock::Clock;
pub use config::{
    Config, ConfigBuilder, DEFAULT_CANCEL_GRACE, DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_RUN_TIME, DEFAULT_PREFETCH, DEFAULT_RETENTION_INTERVAL, DEFAULT_SLEEP,
    MAX_DURATION, MAX_QUEUE_NAME_LEN, MAX_UNWRITTEN_OUTCOMES, PriorityOrdering, Retention,
};
pub use entity::{completed_task, runner as runner_row, task as task_row};
pub use error::{Error, Result, UnreadableRow};
pub use events::{Event, Events};
pub use queries::{CompletedTaskQuery, TaskQuery};
pub use queue::{
    Creator, Enqueue, Enqueued, MAX_TASK_NAME_LEN, MAX_VERBOSE_NAME_LEN, Queue, TaskSpec,
};
pub use registry::Registry;
pub use runner::{DEFAULT_SHUTDOWN_GRACE, Pace, Runner, RunnerHandle};
pub use schedule::{Action, RunAt, Schedule, repeat};
pub use state::{MissingState, Requires};
pub use task::{Backoff, KeepHistory, Task, TaskContext, TaskDefaults, TaskError};
pub use workflow::{
    Batch, BatchIds, Dependency, DependencyCounts, DependencyState, Workflow, WorkflowIds,
};

/// The README's Rust examples, compiled and run as doc tests so they stay
/// true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
