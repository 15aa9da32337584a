//! The queue handle and the enqueue API.
//!
//! [`Queue`] is cheap to clone (put it in `web::Data`). Enqueueing a task
//! stores a row; a runner executes it later. Options follow the seed's
//! call-time keywords (`schedule`, `priority`, `queue`, `verbose_name`,
//! `creator`, `repeat`, `repeat_until`, `remove_existing_tasks`), and
//! call-time values win over the task's [`TaskDefaults`] field by field.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionSession,
    TransactionTrait,
};
use serde::Serialize;

use crate::config::{Config, validate_queue_name};
use crate::entity::task;
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::params::{self, ParamsError};
use crate::registry::Registry;
use crate::schedule::{Action, Schedule};
use crate::store::{self, enqueue};
use crate::task::{Task, TaskDefaults};
use crate::worker;

/// Longest task name (the column is `varchar(190)`).
pub const MAX_TASK_NAME_LEN: usize = 190;
/// Longest verbose name (the column is `varchar(255)`).
pub const MAX_VERBOSE_NAME_LEN: usize = 255;

/// Who created a task: the seed's generic foreign key (a Django content type
/// id and an object id). Outside Django, any pair of ids the application
/// gives meaning to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Creator {
    /// Kind of the creating object (Django: `django_content_type.id`).
    pub content_type_id: i32,
    /// Id of the creating object (Django's `PositiveIntegerField`: at most
    /// 2147483647 on PostgreSQL and SQLite, 4294967295 on MySQL).
    pub object_id: u32,
}

impl Creator {
    /// A creator from its two ids.
    pub fn new(content_type_id: i32, object_id: u32) -> Self {
        Self {
            content_type_id,
            object_id,
        }
    }
}

/// What an enqueue call did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per call and matched right away; a Box would only add an allocation"
)]
pub enum Enqueued {
    /// A row was inserted; here it is as stored.
    Created(task::Model),
    /// RESCHEDULE_EXISTING moved this many existing rows; nothing was inserted.
    Rescheduled {
        /// Rows moved to the new run_at and priority.
        count: u64,
    },
    /// CHECK_EXISTING found this waiting row; nothing was inserted.
    AlreadyExists {
        /// Id of the existing row.
        id: i32,
    },
}

impl Enqueued {
    /// The inserted row, or `None` when nothing was inserted (the seed returns `None`).
    pub fn task(&self) -> Option<&task::Model> {
        match self {
            Enqueued::Created(task) => Some(task),
            _ => None,
        }
    }

    /// The inserted row, by value.
    pub fn into_task(self) -> Option<task::Model> {
        match self {
            Enqueued::Created(task) => Some(task),
            _ => None,
        }
    }
}

/// One task to enqueue, with its options: what [`Queue::enqueue`] builds, and
/// what [`Queue::enqueue_many`] takes a list of.
#[derive(Debug)]
pub struct TaskSpec {
    name: String,
    params: Result<String, ParamsError>,
    defaults: TaskDefaults,
    schedule: Schedule,
    priority: Option<i32>,
    queue: Option<String>,
    verbose_name: Option<String>,
    creator: Option<Creator>,
    repeat: i64,
    repeat_until: Option<DateTime<Utc>>,
    remove_existing_tasks: Option<bool>,
    unique: Option<bool>,
    max_attempts: Option<u32>,
    max_run_time: Option<std::time::Duration>,
    backoff: Option<crate::task::Backoff>,
    keep_history: Option<crate::task::KeepHistory>,
    /// Ids of the tasks it runs after.
    after: Vec<i32>,
    run_anyway: bool,
    /// Its workflow and step name, when a [`crate::Workflow`] enqueues it.
    step: Option<(String, String)>,
    /// Its key ([`crate::Task::key`] or [`Enqueue::key`]), or why the key
    /// function failed.
    key: std::result::Result<Option<String>, String>,
}

/// The setters shared by [`TaskSpec`] and [`Enqueue`].
macro_rules! option_setters {
    () => {
        /// When to run: seconds from now (`i64`), a `Duration`/`TimeDelta`
        /// from now, a `DateTime<Utc>`, or a full [`Schedule`] (run_at,
        /// priority, action). Unset fields fall back to the task's defaults.
        pub fn schedule(mut self, schedule: impl Into<Schedule>) -> Self {
            self.spec_mut().schedule = schedule.into();
            self
        }

        /// Priority; beats the priority of any schedule.
        pub fn priority(mut self, priority: i32) -> Self {
            self.spec_mut().priority = Some(priority);
            self
        }

        /// Named queue (1 to 190 characters); overrides the task's default queue.
        pub fn queue(mut self, queue: impl Into<String>) -> Self {
            self.spec_mut().queue = Some(queue.into());
            self
        }

        /// Human label (at most 255 characters).
        pub fn verbose_name(mut self, name: impl Into<String>) -> Self {
            self.spec_mut().verbose_name = Some(name.into());
            self
        }

        /// Who created the task.
        pub fn creator(mut self, creator: Creator) -> Self {
            self.spec_mut().creator = Some(creator);
            self
        }

        /// Repeat period in seconds (see [`crate::repeat`]); 0 means never.
        pub fn repeat(mut self, seconds: i64) -> Self {
            self.spec_mut().repeat = seconds;
            self
        }

        /// Last time a repetition may be created; must be in the future.
        pub fn repeat_until(mut self, until: DateTime<Utc>) -> Self {
            self.spec_mut().repeat_until = Some(until);
            self
        }

        /// Delete waiting identical tasks (same name and params, any queue)
        /// before inserting; overrides the task's default.
        pub fn remove_existing_tasks(mut self, remove: bool) -> Self {
            self.spec_mut().remove_existing_tasks = Some(remove);
            self
        }

        /// A unique task: at most one live row (waiting or running) with
        /// this name and params, enforced by a unique index in the
        /// database, so concurrent enqueues from any number of processes
        /// insert it once. When one is already there, the enqueue inserts
        /// nothing and returns [`Enqueued::AlreadyExists`] with its id.
        /// Overrides the task's default.
        pub fn unique(mut self, unique: bool) -> Self {
            self.spec_mut().unique = Some(unique);
            self
        }

        /// Attempts before this task fails permanently (at least 1), for
        /// this enqueue only; overrides the task's definition and the
        /// runner's `MAX_ATTEMPTS`. Stored with the row, so any runner
        /// honours it, and kept by a repeat chain.
        pub fn max_attempts(mut self, attempts: u32) -> Self {
            self.spec_mut().max_attempts = Some(attempts.max(1));
            self
        }

        /// How long one execution may run, for this enqueue only;
        /// overrides the definition and `MAX_RUN_TIME`.
        pub fn max_run_time(mut self, limit: std::time::Duration) -> Self {
            self.spec_mut().max_run_time = Some(limit);
            self
        }

        /// The wait before each retry, for this enqueue only. A
        /// [`Backoff::Custom`](crate::Backoff::Custom) function cannot be
        /// stored with a row: the enqueue fails with
        /// [`Error::InvalidOption`] (set it in the task's definition).
        pub fn backoff(mut self, backoff: crate::task::Backoff) -> Self {
            self.spec_mut().backoff = Some(backoff);
            self
        }

        /// Which of this task's history rows are kept, for this enqueue
        /// only.
        pub fn keep_history(mut self, keep: crate::task::KeepHistory) -> Self {
            self.spec_mut().keep_history = Some(keep);
            self
        }

        /// Run only after the tasks `ids` (waiting, running, or finished
        /// with a history row) have all succeeded; see
        /// [`crate::workflow`]. Stored at once, held until then; cancelled
        /// when one of them fails permanently or is cancelled, unless
        /// [`run_anyway`](Self::run_anyway). Adds to ids given before.
        pub fn after(mut self, ids: impl IntoIterator<Item = i32>) -> Self {
            self.spec_mut().after.extend(ids);
            self
        }

        /// The task's key for this enqueue (a tenant, an API account; 1 to
        /// 190 characters), instead of what its task's
        /// [`crate::Task::key`] computes: in a queue with a key policy
        /// ([`crate::admin::set_key_limit`]) claims share out by key and
        /// keep each key within its limits.
        pub fn key(mut self, key: impl Into<String>) -> Self {
            self.spec_mut().key = Ok(Some(key.into()));
            self
        }

        /// With [`after`](Self::after) or in a [`crate::Workflow`]: run once
        /// the dependencies have finished, however they ended, instead of
        /// being cancelled when one does not succeed.
        pub fn run_anyway(mut self, run_anyway: bool) -> Self {
            self.spec_mut().run_anyway = run_anyway;
            self
        }
    };
}

impl TaskSpec {
    /// A call of task `T` with `params`.
    pub fn new<T: Task>(params: &T::Params) -> Self {
        let mut spec = Self::with_params(T::name(), T::encode(params), T::defaults());
        spec.key = crate::task::key_of::<T>(params);
        spec
    }

    /// A call of the task named `name` with explicit positional and keyword
    /// arguments (e.g. from the command line, or of a task this process does
    /// not define). `args` must serialize to a sequence or `()`, `kwargs` to
    /// a map, a struct or `()`. Definition-time defaults come from `registry`
    /// when the name is registered there.
    pub fn call<A, K>(name: &str, args: &A, kwargs: &K, registry: &Registry) -> Self
    where
        A: Serialize + ?Sized,
        K: Serialize + ?Sized,
    {
        let mut spec = Self::with_params(
            name,
            params::encode_call(args, kwargs),
            registry.defaults(name).unwrap_or_default(),
        );
        if let Ok(task_params) = &spec.params {
            spec.key = registry.key(name, task_params);
        }
        spec
    }

    fn with_params(
        name: &str,
        params: Result<String, ParamsError>,
        defaults: TaskDefaults,
    ) -> Self {
        Self {
            name: name.to_owned(),
            params,
            defaults,
            schedule: Schedule::new(),
            priority: None,
            queue: None,
            verbose_name: None,
            creator: None,
            repeat: 0,
            repeat_until: None,
            remove_existing_tasks: None,
            unique: None,
            max_attempts: None,
            max_run_time: None,
            backoff: None,
            keep_history: None,
            after: Vec::new(),
            run_anyway: false,
            step: None,
            key: Ok(None),
        }
    }

    /// This spec as step `name` of `workflow`, after the tasks `after`.
    pub(crate) fn in_workflow(mut self, workflow: &str, name: &str, after: Vec<i32>) -> Self {
        self.step = Some((workflow.to_owned(), name.to_owned()));
        self.after.extend(after);
        self
    }

    option_setters!();

    fn spec_mut(&mut self) -> &mut TaskSpec {
        self
    }

    /// Applies the seed's resolution rules and checks every value, at `now`.
    pub(crate) fn resolve(self, now: DateTime<Utc>) -> Result<Resolved> {
        let task_params = self.params?;
        let name_len = self.name.chars().count();
        if name_len == 0 || name_len > MAX_TASK_NAME_LEN {
            return Err(Error::invalid(
                "task_name",
                format!("{name_len} characters; a task name has 1 to {MAX_TASK_NAME_LEN}"),
            ));
        }
        let schedule = self.schedule.merge(self.defaults.schedule);
        let queue = self.queue.or(self.defaults.queue);
        if let Some(queue) = &queue {
            validate_queue_name(queue)?;
        }
        if let Some(verbose_name) = &self.verbose_name {
            let len = verbose_name.chars().count();
            if len > MAX_VERBOSE_NAME_LEN {
                return Err(Error::invalid(
                    "verbose_name",
                    format!("{len} characters; at most {MAX_VERBOSE_NAME_LEN} are allowed"),
                ));
            }
        }
        if self.repeat < 0 {
            return Err(Error::invalid(
                "repeat",
                format!(
                    "{} seconds; a repeat period is 0 (never) or more",
                    self.repeat
                ),
            ));
        }
        let run_at = schedule.resolve_run_at(now);
        for (option, at) in [
            ("schedule", Some(run_at)),
            ("repeat_until", self.repeat_until),
        ] {
            if let Some(at) = at
                && !(1..=9999).contains(&at.year())
            {
                return Err(Error::invalid(
                    option,
                    format!(
                        "{at} is outside the years 1 to 9999, the times a database stores; give a \
                         nearer time"
                    ),
                ));
            }
        }
        if let Some(until) = self.repeat_until
            && until <= now
        {
            return Err(Error::invalid(
                "repeat_until",
                format!("{until} is not in the future (now is {now})"),
            ));
        }
        let step = if self.after.is_empty() && self.step.is_none() {
            None
        } else {
            if self.repeat > 0 {
                return Err(Error::invalid(
                    "after",
                    "a task that runs after others cannot repeat: enqueue each run as a task of \
                     its own",
                ));
            }
            if schedule.resolved_action() != Action::Schedule {
                return Err(Error::invalid(
                    "after",
                    format!(
                        "a task that runs after others is always inserted, but this one asks for \
                         {:?}",
                        schedule.resolved_action()
                    ),
                ));
            }
            let mut after = self.after;
            after.sort_unstable();
            after.dedup();
            let (workflow, name) = self.step.unzip();
            Some(StepPlan {
                after,
                options: crate::store::steps::StepOptions {
                    run_anyway: self.run_anyway,
                    workflow,
                    name,
                },
            })
        };
        let overrides = crate::policy::Overrides {
            max_attempts: self.max_attempts,
            max_run_time_ms: self
                .max_run_time
                .map(|limit| u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)),
            backoff: self
                .backoff
                .as_ref()
                .map(crate::policy::StoredBackoff::of)
                .transpose()?,
            keep_history: self.keep_history,
            step: step.is_some(),
        };
        let limit_key = match self.key {
            Ok(key) => key,
            Err(why) => {
                return Err(Error::invalid(
                    "key",
                    format!(
                        "the key function of task {:?} failed: {why}; fix the params or the \
                         key function (nothing was written)",
                        self.name
                    ),
                ));
            }
        };
        if let Some(key) = &limit_key {
            crate::admin::validate_key(key)?;
        }
        let task_hash = params::task_hash(&self.name, &task_params);
        // A unique task's key: its name and params, as the hash says them.
        let unique_key = self
            .unique
            .unwrap_or(self.defaults.unique)
            .then(|| task_hash.clone());
        let row = task::Model {
            id: 0,
            task_name: self.name,
            task_params,
            task_hash,
            verbose_name: self.verbose_name,
            priority: self.priority.unwrap_or(schedule.resolved_priority()),
            run_at: crate::clock::to_db_precision(run_at),
            repeat: self.repeat,
            repeat_until: self.repeat_until.map(crate::clock::to_db_precision),
            queue,
            attempts: 0,
            failed_at: None,
            last_error: String::new(),
            locked_by: None,
            locked_at: None,
            creator_content_type_id: self.creator.map(|c| c.content_type_id),
            creator_object_id: self.creator.map(|c| c.object_id),
            unique_key,
            policy: overrides.to_column(),
            cancel_requested_at: None,
            trace_context: trace_context(),
            limit_key,
        };
        Ok(Resolved {
            row,
            action: schedule.resolved_action(),
            remove_existing: self
                .remove_existing_tasks
                .unwrap_or(self.defaults.remove_existing_tasks),
            step,
        })
    }
}

/// A task resolved at one instant: the row to insert and what to do first.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub(crate) row: task::Model,
    pub(crate) action: Action,
    pub(crate) remove_existing: bool,
    /// What it waits for, when it runs after other tasks.
    pub(crate) step: Option<StepPlan>,
}

/// The dependencies of a task being enqueued, and how it waits.
#[derive(Clone, Debug)]
pub(crate) struct StepPlan {
    /// Distinct ids, ascending.
    pub(crate) after: Vec<i32>,
    pub(crate) options: crate::store::steps::StepOptions,
}

/// An enqueue call being built; `.await` it to write the row.
#[must_use = "an enqueue does nothing until it is awaited"]
pub struct Enqueue<'a, C> {
    queue: &'a Queue,
    conn: &'a C,
    spec: TaskSpec,
    /// `conn` is the queue's own pool, not a transaction of the caller's.
    on_pool: bool,
}

impl<C> Enqueue<'_, C> {
    option_setters!();

    fn spec_mut(&mut self) -> &mut TaskSpec {
        &mut self.spec
    }

    /// The resolved spec, for [`Queue::enqueue_many`].
    pub fn into_spec(self) -> TaskSpec {
        self.spec
    }
}

impl<'a, C> IntoFuture for Enqueue<'a, C>
where
    C: ConnectionTrait + TransactionTrait + Sync,
{
    type Output = Result<Enqueued>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Enqueued>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            if self.on_pool {
                // Its own statement (or transaction) on the pool: a lock
                // race lost to a runner's claim (a MySQL deadlock, seen
                // under load) rolled all of it back, so it is tried again.
                // Inside a caller's transaction the caller decides.
                let (queue, conn) = (self.queue, self.conn);
                let now = queue.config().clock().now();
                let resolved = self.spec.resolve(now)?;
                let write = crate::store::retry_conflicts("enqueue", || {
                    queue.store_resolved(conn, resolved.clone(), now)
                });
                crate::db::outside_own_transaction(queue.db(), write).await
            } else {
                self.queue.enqueue_spec(self.conn, self.spec).await
            }
        })
    }
}

struct Inner {
    db: DatabaseConnection,
    registry: Registry,
    events: Events,
    config: Config,
    runner_id: String,
    wake: Arc<tokio::sync::Notify>,
    /// Tasks this queue's runner claimed and has not recorded yet: the
    /// locks its heartbeat renews.
    running: std::sync::Mutex<std::collections::HashMap<i32, Option<String>>>,
    /// Which of them an operator cancelled.
    cancels: Arc<crate::cancel::Cancels>,
    /// Global limits, paused queues and drain requests, as last read at
    /// a heartbeat.
    controls: crate::controls::Controls,
    metrics: crate::metrics::Metrics,
}

/// Handle on the queue: enqueue tasks, query them, share the registry and
/// the lifecycle events. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// A queue on `db` with an empty registry and the default [`Config`].
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_parts(db, Registry::new(), Config::default())
    }

    /// A queue on `db` sharing `registry`, with `config`.
    pub fn with_parts(db: DatabaseConnection, registry: Registry, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                metrics: crate::metrics::Metrics::new(registry.clone()),
                db,
                registry,
                events: Events::default(),
                config,
                runner_id: worker::runner_identity(),
                wake: Arc::new(tokio::sync::Notify::new()),
                running: std::sync::Mutex::default(),
                cancels: Arc::default(),
                controls: crate::controls::Controls::default(),
            }),
        }
    }

    /// The database connection (pool).
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// The task registry shared with the runner.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Lifecycle events: subscribe here.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Identity this queue's runner writes into `locked_by` (the seed's
    /// "worker name"): `host:pid:random`, unique across hosts and restarts.
    pub fn runner_id(&self) -> &str {
        &self.inner.runner_id
    }

    /// The seed's `run_next_task`: takes back locks older than
    /// `MAX_RUN_TIME`, claims the next due task this queue has a handler
    /// for, runs it here, and records the outcome. Returns true when a task
    /// was run; false when none was due or the database is unreachable
    /// (logged as a warning, as the seed does). A runner
    /// ([`crate::Runner`]) does the same continuously, several at a time.
    pub async fn run_next_task(&self) -> bool {
        worker::run_next_task(self).await
    }

    /// This queue's metrics (see [`crate::metrics`]).
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    fn running(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<i32, Option<String>>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ids of the tasks claimed here and not yet recorded.
    pub(crate) fn running_ids(&self) -> Vec<i32> {
        self.running().keys().copied().collect()
    }

    /// How many tasks of `queue` (one with a limit in this runner) are
    /// claimed here and not yet recorded.
    pub(crate) fn running_in(&self, queue: &str) -> usize {
        self.running()
            .values()
            .filter(|running| running.as_deref() == Some(queue))
            .count()
    }

    /// Tracks claimed tasks. Only the queues this runner limits are
    /// remembered (for [`Queue::running_in`]).
    pub(crate) fn track_running(&self, tasks: &[task::Model]) {
        let limits = self.config().queue_limits();
        let mut running = self.running();
        for task in tasks {
            let queue = task
                .queue
                .as_ref()
                .filter(|queue| limits.contains_key(queue.as_str()))
                .cloned();
            running.insert(task.id, queue);
        }
    }

    pub(crate) fn untrack_running(&self, id: i32) {
        self.running().remove(&id);
        self.inner.cancels.forget(id);
    }

    /// The cancellation signal of task `id`, for its body.
    pub(crate) fn cancel_signal(&self, id: i32) -> crate::cancel::CancelSignal {
        crate::cancel::CancelSignal::new(Arc::clone(&self.inner.cancels), id)
    }

    /// Signals the bodies of the tasks `ids` (claimed here) that an
    /// operator cancelled them.
    pub(crate) fn signal_cancelled(&self, ids: &[i32]) {
        let running: Vec<i32> = {
            let tracked = self.running();
            ids.iter()
                .copied()
                .filter(|id| tracked.contains_key(id))
                .collect()
        };
        self.inner.cancels.cancel(running);
    }

    /// What the runner's claims obey, as read at its heartbeat.
    pub(crate) fn controls(&self) -> &crate::controls::Controls {
        &self.inner.controls
    }

    /// Tells a runner of this queue in this process to look for work now.
    pub(crate) fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.wake)
    }

    /// Enqueues task `T` with `params` on the queue's own connection. Add
    /// options, then `.await`:
    ///
    /// ```no_run
    /// # use background_tasks::{Queue, Task, TaskContext, TaskError};
    /// # struct Resize;
    /// # impl Task for Resize { type Params = (String, u32); type Output = ();
    /// #   async fn run(&self, _: (String, u32), _: TaskContext) -> Result<(), TaskError> { Ok(()) } }
    /// # async fn demo(queue: Queue) -> background_tasks::Result<()> {
    /// let stored = queue
    ///     .enqueue::<Resize>(&("cat.png".into(), 512))
    ///     .schedule(60) // seconds from now
    ///     .priority(10)
    ///     .queue("images")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// On SQLite the process has one connection: inside a transaction of
    /// your own, enqueue with [`Queue::enqueue_with`]. Called by the task
    /// that holds that transaction, this is refused within 100 ms with
    /// [`Error::OwnTransaction`] instead of waiting for it forever.
    pub fn enqueue<T: Task>(&self, params: &T::Params) -> Enqueue<'_, DatabaseConnection> {
        Enqueue {
            queue: self,
            conn: self.db(),
            spec: TaskSpec::new::<T>(params),
            on_pool: true,
        }
    }

    /// Like [`Queue::enqueue`], on `conn`: any SeaORM connection or
    /// transaction, so the task commits or rolls back with the caller's own
    /// writes.
    pub fn enqueue_with<'a, T: Task, C>(
        &'a self,
        conn: &'a C,
        params: &T::Params,
    ) -> Enqueue<'a, C> {
        Enqueue {
            queue: self,
            conn,
            spec: TaskSpec::new::<T>(params),
            on_pool: false,
        }
    }

    /// Enqueues the task named `name` with explicit args and kwargs (see
    /// [`TaskSpec::call`]).
    pub fn enqueue_call<A, K>(
        &self,
        name: &str,
        args: &A,
        kwargs: &K,
    ) -> Enqueue<'_, DatabaseConnection>
    where
        A: Serialize + ?Sized,
        K: Serialize + ?Sized,
    {
        Enqueue {
            queue: self,
            conn: self.db(),
            spec: TaskSpec::call(name, args, kwargs, self.registry()),
            on_pool: true,
        }
    }

    /// Enqueues `spec` on `conn`.
    pub async fn enqueue_spec<C>(&self, conn: &C, spec: TaskSpec) -> Result<Enqueued>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let now = self.config().clock().now();
        self.store_resolved(conn, spec.resolve(now)?, now).await
    }

    /// Stores a resolved spec on `conn`: one insert, or the seed's
    /// remove / reschedule / check and insert in one transaction.
    async fn store_resolved<C>(
        &self,
        conn: &C,
        resolved: Resolved,
        now: DateTime<Utc>,
    ) -> Result<Enqueued>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let single_statement = !resolved.remove_existing
            && resolved.action == Action::Schedule
            && resolved.step.is_none();
        let enqueued = if single_statement {
            insert_row(conn, resolved.row).await?
        } else {
            // Several statements: one transaction (a savepoint inside the
            // caller's), so nothing is half-done if one of them fails.
            let txn = store::begin_write(conn).await?;
            let enqueued = self.write(&txn, resolved, now).await?;
            txn.commit().await?;
            enqueued
        };
        if let Enqueued::Created(task) = &enqueued {
            self.events().emit(Event::Created { task: task.clone() });
            // Wake this process's runner at once instead of at its next
            // poll. Inside a caller's transaction the row may not be visible
            // yet; the runner then finds it at its next poll.
            self.inner.wake.notify_one();
        }
        Ok(enqueued)
    }

    /// The seed's `DBTaskRunner.schedule`: remove, then reschedule or check,
    /// then insert.
    pub(crate) async fn write<C: ConnectionTrait>(
        &self,
        conn: &C,
        resolved: Resolved,
        now: DateTime<Utc>,
    ) -> Result<Enqueued> {
        let Resolved {
            mut row,
            action,
            remove_existing,
            step,
        } = resolved;
        // A step's dependencies are looked up (and the live ones locked)
        // before anything is written; it is held while one is unfinished.
        let step = match step {
            Some(plan) => {
                let found =
                    crate::store::steps::dependencies(conn, &plan.after, plan.options.run_anyway)
                        .await?;
                let run_at = row.run_at;
                if found.iter().any(|dep| dep.ended.is_none()) {
                    row.run_at = crate::store::steps::held();
                }
                Some((plan, found, run_at))
            }
            None => None,
        };
        if remove_existing {
            enqueue::delete_waiting_with_hash(conn, &row.task_hash).await?;
        }
        // As in the seed, existing rows are looked for in the task's queue
        // when it has one, and in every queue when it has none.
        let queue = row.queue.as_deref();
        let expiry = self.max_run_time();
        match action {
            Action::Schedule => {}
            Action::RescheduleExisting => {
                let count = enqueue::reschedule_existing(
                    conn,
                    &row.task_hash,
                    queue,
                    row.run_at,
                    row.priority,
                    now,
                    expiry,
                )
                .await?;
                if count > 0 {
                    return Ok(Enqueued::Rescheduled { count });
                }
            }
            Action::CheckExisting => {
                if let Some(id) =
                    enqueue::find_existing(conn, &row.task_hash, queue, now, expiry).await?
                {
                    return Ok(Enqueued::AlreadyExists { id });
                }
            }
        }
        let enqueued = insert_row(conn, row).await?;
        if let (Some((plan, found, run_at)), Enqueued::Created(task)) = (&step, &enqueued) {
            crate::store::steps::hold(conn, task.id, *run_at, found, &plan.options, now).await?;
        }
        Ok(enqueued)
    }

    /// Writes many tasks with one INSERT per chunk of rows, in one
    /// transaction, and returns how many rows were written.
    ///
    /// Every spec is checked before anything is written. Bulk enqueue only
    /// inserts: a spec whose action is RESCHEDULE_EXISTING or CHECK_EXISTING
    /// is refused (enqueue those one by one); `remove_existing_tasks` is
    /// honoured with one DELETE for all of them. No `Created` events fire.
    pub async fn enqueue_many(&self, specs: impl IntoIterator<Item = TaskSpec>) -> Result<u64> {
        crate::db::outside_own_transaction(self.db(), self.enqueue_many_with(self.db(), specs))
            .await
    }

    /// Like [`Queue::enqueue_many`], on `conn` (a connection or transaction).
    pub async fn enqueue_many_with<C>(
        &self,
        conn: &C,
        specs: impl IntoIterator<Item = TaskSpec>,
    ) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let now = self.config().clock().now();
        let mut rows = Vec::new();
        let mut remove = Vec::new();
        for spec in specs {
            let resolved = spec.resolve(now)?;
            if resolved.action != Action::Schedule {
                return Err(Error::invalid(
                    "action",
                    format!(
                        "bulk enqueue only inserts, but task {} asks for {:?}; enqueue it on its own",
                        resolved.row.task_name, resolved.action
                    ),
                ));
            }
            if resolved.step.is_some() {
                return Err(Error::invalid(
                    "after",
                    format!(
                        "bulk enqueue only inserts tasks that wait for nothing, but task {} runs \
                         after others; enqueue it on its own or in a workflow",
                        resolved.row.task_name
                    ),
                ));
            }
            if resolved.remove_existing {
                remove.push(resolved.row.task_hash.clone());
            }
            rows.push(resolved.row);
        }
        if rows.is_empty() {
            return Ok(0);
        }
        let txn = store::begin_write(conn).await?;
        for hashes in remove.chunks(enqueue::INSERT_CHUNK) {
            enqueue::delete_waiting_with_hashes(&txn, hashes).await?;
        }
        let inserted = enqueue::insert_many(&txn, rows).await?;
        txn.commit().await?;
        self.inner.wake.notify_one();
        Ok(inserted)
    }

    /// Waiting or running tasks of `T` with exactly these params (the
    /// seed's `Task.objects.get_task`).
    pub async fn get_task<T: Task>(&self, params: &T::Params) -> Result<Vec<task::Model>> {
        let hash = params::task_hash(T::name(), &T::encode(params)?);
        let select = task::Entity::find().filter(task::Column::TaskHash.eq(hash));
        crate::store::rows::select_all(self.db(), select).await
    }

    /// Deletes the waiting or running tasks of `T` with exactly these params
    /// (the seed's `drop_task`) and returns how many were deleted.
    pub async fn drop_task<T: Task>(&self, params: &T::Params) -> Result<u64> {
        let hash = params::task_hash(T::name(), &T::encode(params)?);
        let result = task::Entity::delete_many()
            .filter(task::Column::TaskHash.eq(hash))
            .exec(self.db())
            .await?;
        Ok(result.rows_affected)
    }

    fn max_run_time(&self) -> TimeDelta {
        TimeDelta::from_std(self.config().max_run_time()).unwrap_or(TimeDelta::MAX)
    }
}

/// Inserts `row`. A unique task whose key a live row already holds inserts
/// nothing and answers that row's id.
async fn insert_row<C: ConnectionTrait>(conn: &C, row: task::Model) -> Result<Enqueued> {
    let Some(key) = row.unique_key.clone() else {
        return Ok(Enqueued::Created(enqueue::insert(conn, row).await?));
    };
    // The row holding the key can finish (and leave) between the insert
    // that found it and the look-up: then the next insert succeeds.
    for _ in 0..3 {
        if let Some(task) = enqueue::insert_unique(conn, row.clone()).await? {
            return Ok(Enqueued::Created(task));
        }
        if let Some(id) = enqueue::id_with_unique_key(conn, &key).await? {
            return Ok(Enqueued::AlreadyExists { id });
        }
    }
    Err(Error::invalid(
        "unique",
        format!(
            "the unique task {} kept being inserted and finished by others while this \
             enqueue looked; try again",
            row.task_name
        ),
    ))
}

/// The trace context of the enqueuing code (feature `otel`).
fn trace_context() -> Option<String> {
    #[cfg(feature = "otel")]
    return crate::telemetry::current_traceparent();
    #[cfg(not(feature = "otel"))]
    None
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("backend", &self.db().get_database_backend())
            .field("registry", self.registry())
            .field("config", self.config())
            .finish()
    }
}
