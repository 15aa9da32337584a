//! Defining a task: the [`Task`] trait, its definition-time defaults, the
//! context a running task sees, and the error a task body returns.
//!
//! A task is a type implementing [`Task`]: a name, a serde `Params` type, an
//! async body, and the defaults the seed's `@background(...)` decorator sets
//! (schedule, queue, remove_existing_tasks).
//!
//! ```
//! use background_tasks::{Task, TaskContext, TaskDefaults, TaskError, Schedule};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Email { to: String, subject: String }
//!
//! struct SendEmail;
//!
//! impl Task for SendEmail {
//!     type Params = Email;            // stored as kwargs: [[], {"subject": .., "to": ..}]
//!     type Output = ();
//!
//!     fn name() -> &'static str { "mail.send" }   // default: the type's path
//!
//!     fn defaults() -> TaskDefaults {
//!         TaskDefaults::new().queue("mail").schedule(Schedule::new().priority(5))
//!     }
//!
//!     async fn run(&self, email: Email, _ctx: TaskContext) -> Result<(), TaskError> {
//!         if email.to.is_empty() {
//!             return Err(TaskError::invalid("no recipient")); // fails at once, no retry
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::params::{self, ParamsError};
use crate::schedule::Schedule;
use crate::state::{Requires, RunState};

/// A background task: a name, typed params, and an async body.
///
/// Params are stored as the seed's `[args, kwargs]` (see [`crate::params`]):
/// a struct or map becomes keyword arguments, a tuple or sequence positional
/// arguments, `()` no arguments, any other value one positional argument.
/// A task that needs both positional and keyword arguments (for example to
/// run tasks enqueued by Python code) overrides [`Task::encode`] and
/// [`Task::decode`] with [`params::encode_call`] and [`params::decode_call`].
///
/// # App state
///
/// What bodies share (a database pool, an HTTP client, settings) is given
/// once to the registry with [`crate::Registry::data`] and read by type
/// with [`TaskContext::data`]. A task lists the types it reads in
/// [`Task::requires`], so that [`crate::Runner::start`] (and `bgtasks
/// process`) refuses to start while one is missing, naming the task and
/// the type:
///
/// ```no_run
/// use background_tasks::sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
/// use background_tasks::{Config, Queue, Registry, Requires, Runner, Task, TaskContext, TaskError, db};
///
/// /// The app's settings, shared by every body.
/// struct Settings { from: String }
///
/// struct Welcome;
///
/// impl Task for Welcome {
///     type Params = i64; // a user id
///     type Output = ();
///     fn name() -> &'static str { "users.welcome" }
///     fn requires() -> Requires {
///         Requires::new().data::<DatabaseConnection>().data::<Settings>()
///     }
///     async fn run(&self, user: i64, ctx: TaskContext) -> Result<(), TaskError> {
///         let db = ctx.data::<DatabaseConnection>()?;
///         let settings = ctx.data::<Settings>()?;
///         let sql = "UPDATE users SET welcomed_by = $1 WHERE id = $2"; // PostgreSQL
///         let values = [settings.from.clone().into(), user.into()];
///         db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values))
///             .await?;
///         Ok(())
///     }
/// }
///
/// # async fn demo() -> background_tasks::Result<()> {
/// let db = db::open(None).await?;
/// let registry = Registry::new();
/// registry
///     .data(db.clone()) // the app's own pool (here the queue's)
///     .data(Settings { from: "the team".into() })
///     .register(Welcome);
/// let queue = Queue::with_parts(db, registry.clone(), Config::default());
/// // Without one of the two `data` calls this is an `Error::MissingState`
/// // naming "users.welcome" and the type, and nothing starts.
/// let runner = Runner::start(queue)?;
/// // Inline, with the same state:
/// Welcome.now_with(7, &registry).await.ok();
/// # Ok(()) }
/// ```
pub trait Task: Send + Sync + 'static {
    /// The task's parameters.
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// What the body returns on success: returned by [`Task::now`]; a
    /// runner stores it as JSON in the history row's `result` (the seed
    /// discarded it). `()` stores nothing.
    type Output: Serialize + Send + 'static;

    /// The name rows are stored and looked up under (at most 190 characters).
    ///
    /// Defaults to the type's path, e.g. `my_app::tasks::SendEmail`, the
    /// Rust counterpart of the seed's `"<module>.<function>"`. Give an
    /// explicit name for anything long-lived: it survives moving the type to
    /// another module, and Django code can share it.
    fn name() -> &'static str
    where
        Self: Sized,
    {
        std::any::type_name::<Self>()
    }

    /// Definition-time defaults (the seed's decorator arguments).
    fn defaults() -> TaskDefaults
    where
        Self: Sized,
    {
        TaskDefaults::default()
    }

    /// The app state the body reads with [`TaskContext::data`] (default:
    /// none). A runner refuses to start while the registry has no value of
    /// one of these types ([`crate::Registry::data`],
    /// [`crate::Registry::check`]), and a body that reads a type not listed
    /// here gets an error, so a missing value is found at start, never at
    /// the first task. See [`Task`] for an example.
    fn requires() -> Requires
    where
        Self: Sized,
    {
        Requires::new()
    }

    /// The task's key: a tenant, an API account, whatever its per-key
    /// limits and fair claims count by (default: none). A queue with a key
    /// policy ([`crate::admin::set_key_limit`]) claims its tasks key by key,
    /// a fair share each, and keeps every key within the policy's per-key
    /// concurrency and rate limits. Computed once at enqueue from the
    /// params and stored with the row (at most 190 characters); an error
    /// (or a panic) refuses the enqueue, and nothing is written.
    /// [`crate::Enqueue::key`] sets a key for one enqueue instead.
    ///
    /// ```
    /// # use background_tasks::{Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Export { tenant: String }
    /// struct ExportReport;
    ///
    /// impl Task for ExportReport {
    ///     type Params = Export;
    ///     type Output = ();
    ///     fn name() -> &'static str { "reports.export" }
    ///     fn key(params: &Export) -> Result<Option<String>, String> {
    ///         if params.tenant.is_empty() {
    ///             return Err("an export names its tenant".into());
    ///         }
    ///         Ok(Some(format!("tenant:{}", params.tenant)))
    ///     }
    ///     async fn run(&self, _: Export, _: TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    /// ```
    fn key(params: &Self::Params) -> Result<Option<String>, String>
    where
        Self: Sized,
    {
        let _ = params;
        Ok(None)
    }

    /// Encodes params into the stored `task_params` text.
    fn encode(params: &Self::Params) -> Result<String, ParamsError>
    where
        Self: Sized,
    {
        params::encode_params(params)
    }

    /// Decodes the stored `task_params` text into params.
    fn decode(task_params: &str) -> Result<Self::Params, ParamsError>
    where
        Self: Sized,
    {
        params::decode_params(task_params)
    }

    /// The task body. Return [`TaskError::invalid`] for an error retrying
    /// cannot fix; any other error is retried with backoff.
    fn run(
        &self,
        params: Self::Params,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;

    /// Runs the body right here and returns its result, writing no row (the
    /// seed's `task.now(...)`). Handy in tests and for synchronous paths.
    /// The body has no app state: a task that reads some runs inline with
    /// [`Task::now_with`].
    fn now(
        &self,
        params: Self::Params,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send
    where
        Self: Sized,
    {
        self.run(params, TaskContext::inline(Self::name()))
    }

    /// [`Task::now`] with the app state of `registry`: the body reads what
    /// was given with [`crate::Registry::data`]. When a type the task
    /// requires has no value there, the body does not run and the error
    /// (permanent) names it.
    fn now_with(
        &self,
        params: Self::Params,
        registry: &crate::Registry,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send
    where
        Self: Sized,
    {
        let requires = Self::requires();
        let values = registry.state();
        let missing: Vec<_> = requires
            .types()
            .iter()
            .filter(|ty| !values.contains(**ty))
            .map(|ty| crate::state::MissingState {
                task: Self::name().to_owned(),
                type_name: ty.name,
            })
            .collect();
        let ctx = TaskContext::inline(Self::name()).with_state(RunState {
            values,
            requires: std::sync::Arc::new(requires),
        });
        async move {
            if !missing.is_empty() {
                return Err(TaskError::invalid(crate::state::missing_text(&missing)));
            }
            self.run(params, ctx).await
        }
    }
}

/// Definition-time defaults of a task: what the seed's
/// `@background(schedule=..., queue=..., remove_existing_tasks=...)` sets.
/// Values given when enqueueing win over these, field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskDefaults {
    /// Default run_at, priority and action.
    pub schedule: Schedule,
    /// Default queue (`None`: the default queue).
    pub queue: Option<String>,
    /// Delete waiting identical tasks before inserting a new one.
    pub remove_existing_tasks: bool,
    /// A repeating task schedules its next occurrence even when this one
    /// failed permanently (the seed stops the chain at the first permanent
    /// failure; its issues #296 and #277). Default: false, as in the seed.
    pub repeat_after_failure: bool,
    /// Attempts before this task fails permanently; `None`: the runner's
    /// `MAX_ATTEMPTS` (default 25).
    pub max_attempts: Option<u32>,
    /// How long one execution may run before it is stopped and counted as
    /// a failed attempt; `None`: the runner's `MAX_RUN_TIME` (default 1 h).
    pub max_run_time: Option<std::time::Duration>,
    /// How long to wait before retrying; `None`: the seed's
    /// `attempts^4 + 5` seconds.
    pub backoff: Option<Backoff>,
    /// Which of its history rows are kept (default: all, as in the seed).
    pub keep_history: KeepHistory,
    /// Enqueue it as a unique task by default (see `Enqueue::unique`).
    pub unique: bool,
}

/// How long a failed task waits before its next attempt.
#[derive(Clone)]
pub enum Backoff {
    /// The seed's `attempts^4 + 5` seconds: 6 s, 21 s, 86 s, 261 s, ...
    Seed,
    /// `base × 2^(attempts − 1)`, at most `max`, minus a random part of up
    /// to `jitter` (0 to 1) of it, so that tasks failing together do not
    /// all come back at the same instant.
    Exponential {
        /// Delay after the first failure.
        base: std::time::Duration,
        /// Longest delay.
        max: std::time::Duration,
        /// Share of the delay that is random, from 0 (none) to 1.
        jitter: f64,
    },
    /// Always the same delay.
    Fixed(std::time::Duration),
    /// Your own function of the number of attempts so far (1 after the
    /// first failure).
    Custom(std::sync::Arc<dyn Fn(u32) -> std::time::Duration + Send + Sync>),
}

impl Backoff {
    /// The delay after `attempts` attempts (1 after the first failure).
    pub fn delay(&self, attempts: u32) -> std::time::Duration {
        use std::time::Duration;
        match self {
            Backoff::Seed => {
                Duration::from_secs(u64::from(attempts).saturating_pow(4).saturating_add(5))
            }
            Backoff::Exponential { base, max, jitter } => {
                let doublings = attempts.saturating_sub(1).min(63);
                let full = base
                    .checked_mul(1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX))
                    .unwrap_or(*max)
                    .min(*max);
                let jitter = jitter.clamp(0.0, 1.0);
                full.mul_f64(1.0 - jitter * random_fraction())
            }
            Backoff::Fixed(delay) => *delay,
            Backoff::Custom(delay) => delay(attempts),
        }
    }
}

/// A number in `[0, 1)` from the OS's randomness (through `RandomState`,
/// which is seeded from it).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Seed => f.write_str("Seed"),
            Backoff::Exponential { base, max, jitter } => f
                .debug_struct("Exponential")
                .field("base", base)
                .field("max", max)
                .field("jitter", jitter)
                .finish(),
            Backoff::Fixed(delay) => f.debug_tuple("Fixed").field(delay).finish(),
            Backoff::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PartialEq for Backoff {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Backoff::Seed, Backoff::Seed) => true,
            (
                Backoff::Exponential { base, max, jitter },
                Backoff::Exponential {
                    base: b,
                    max: m,
                    jitter: j,
                },
            ) => base == b && max == m && jitter.to_bits() == j.to_bits(),
            (Backoff::Fixed(a), Backoff::Fixed(b)) => a == b,
            (Backoff::Custom(a), Backoff::Custom(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

// Equality above compares jitter by its bits, so it is reflexive.
impl Eq for Backoff {}

/// Which history rows (`background_task_completedtask`) a task keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepHistory {
    /// Every finished run (the seed's behaviour).
    #[default]
    Always,
    /// Only permanent failures: successes leave no row.
    FailuresOnly,
    /// None: a finished run leaves no row (its events still fire, with a
    /// history row of id 0 that was never stored).
    Never,
}

impl TaskDefaults {
    /// No defaults: run now, priority 0, default queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the default schedule.
    pub fn schedule(mut self, schedule: impl Into<Schedule>) -> Self {
        self.schedule = schedule.into();
        self
    }

    /// Sets the default queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets whether enqueueing first removes waiting identical tasks.
    pub fn remove_existing_tasks(mut self, remove: bool) -> Self {
        self.remove_existing_tasks = remove;
        self
    }

    /// Sets whether a repeating task's chain goes on after a permanent
    /// failure ([`TaskDefaults::repeat_after_failure`]).
    pub fn repeat_after_failure(mut self, repeat: bool) -> Self {
        self.repeat_after_failure = repeat;
        self
    }

    /// Sets this task's attempts before it fails permanently (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Sets how long one execution of this task may run.
    pub fn max_run_time(mut self, limit: std::time::Duration) -> Self {
        self.max_run_time = Some(limit);
        self
    }

    /// Sets how long this task waits before a retry.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets which of this task's history rows are kept.
    pub fn keep_history(mut self, keep: KeepHistory) -> Self {
        self.keep_history = keep;
        self
    }

    /// Makes every enqueue of this task a unique one by default: at most one
    /// live row with the same name and params.
    pub fn unique(mut self, unique: bool) -> Self {
        self.unique = unique;
        self
    }
}

/// What a running task knows about its own execution.
#[derive(Clone, Debug)]
pub struct TaskContext {
    task_id: Option<i32>,
    task_name: String,
    attempts: i32,
    /// Says when an operator cancels the task.
    cancel: Option<crate::cancel::CancelSignal>,
    /// The app state it may read; `None` for a bare inline run.
    state: Option<RunState>,
    /// How the tasks it ran after ended, for a step; empty otherwise.
    dependencies: Vec<crate::workflow::Dependency>,
}

impl TaskContext {
    /// The context of a run from a stored row.
    pub(crate) fn for_row(
        task_id: i32,
        task_name: String,
        attempts: i32,
        cancel: Option<crate::cancel::CancelSignal>,
    ) -> Self {
        Self {
            task_id: Some(task_id),
            task_name,
            attempts,
            cancel,
            state: None,
            dependencies: Vec::new(),
        }
    }

    /// The context of an inline run ([`Task::now`]): no row.
    pub fn inline(task_name: &str) -> Self {
        Self {
            task_id: None,
            task_name: task_name.to_owned(),
            attempts: 0,
            cancel: None,
            state: None,
            dependencies: Vec::new(),
        }
    }

    /// This context with the app state of its run.
    pub(crate) fn with_state(mut self, state: RunState) -> Self {
        self.state = Some(state);
        self
    }

    /// This context with the outcomes of the tasks it ran after.
    pub(crate) fn with_dependencies(
        mut self,
        edges: Vec<crate::entity::dependency::Model>,
    ) -> Self {
        self.dependencies = edges
            .into_iter()
            .map(crate::workflow::Dependency::from)
            .collect();
        self
    }

    /// The tasks this one was enqueued to run after
    /// ([`crate::Enqueue::after`], a [`crate::Workflow`] step), in id
    /// order, with how each ended and what it returned. Empty for a task
    /// that waited for nothing, and for an inline run.
    pub fn dependencies(&self) -> &[crate::workflow::Dependency] {
        &self.dependencies
    }

    /// How the tasks this one ran after ended, counted (a batch's callback
    /// reads how many of the batch's tasks succeeded, failed or were
    /// cancelled).
    pub fn dependency_counts(&self) -> crate::workflow::DependencyCounts {
        crate::workflow::DependencyCounts::of(&self.dependencies)
    }

    /// What dependency `task_id` returned, decoded as `T` (its task's
    /// `Output`). An error when this task did not run after `task_id`,
    /// when `task_id` did not succeed (a step that runs anyway), or when
    /// the stored result does not decode as `T`; each is permanent, as
    /// retrying cannot change it.
    pub fn dependency_result<T: serde::de::DeserializeOwned>(
        &self,
        task_id: i32,
    ) -> Result<T, TaskError> {
        let Some(dep) = self.dependencies.iter().find(|dep| dep.task_id == task_id) else {
            return Err(TaskError::invalid(format!(
                "task {:?} reads the result of task {task_id}, but it was not enqueued to run                  after it (its dependencies: {:?})",
                self.task_name,
                self.dependencies
                    .iter()
                    .map(|dep| dep.task_id)
                    .collect::<Vec<_>>()
            )));
        };
        dep.result()
    }

    /// Id of the task's row; `None` for an inline run.
    pub fn task_id(&self) -> Option<i32> {
        self.task_id
    }

    /// The task's name.
    pub fn task_name(&self) -> &str {
        &self.task_name
    }

    /// Attempts made before this one (0 on the first run).
    pub fn attempts(&self) -> i32 {
        self.attempts
    }

    /// True once an operator cancelled this task (`bgtasks cancel`, the
    /// dashboard, [`crate::admin::cancel`]). A long body checks it between
    /// steps and returns early; one that does not is stopped after the
    /// runner's cancel grace period. Always false for an inline run.
    pub fn is_cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(crate::cancel::CancelSignal::is_cancelled)
    }

    /// The app state of type `D` given with [`crate::Registry::data`]: a
    /// database pool, an HTTP client, settings. `D` must be listed in the
    /// task's [`Task::requires`]; reading a type that is not is an error
    /// even when the value is there, so that the check at start covers
    /// every read. The error is permanent ([`TaskError::invalid`]: retrying
    /// the same code cannot fix it) and says what to change; with `?` the
    /// body returns it:
    ///
    /// ```
    /// # use background_tasks::{TaskContext, TaskError};
    /// # struct HttpClient; impl HttpClient { async fn get(&self, _: &str) {} }
    /// async fn body(ctx: TaskContext) -> Result<(), TaskError> {
    ///     let http = ctx.data::<HttpClient>()?;
    ///     http.get("https://example.com/").await;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// A run by a runner, or by [`Task::now_with`], sees the registry's
    /// values as they were when it started; a bare [`Task::now`] has none.
    pub fn data<D: Send + Sync + 'static>(&self) -> Result<&D, TaskError> {
        let wanted = crate::state::StateType::of::<D>();
        let Some(state) = &self.state else {
            return Err(TaskError::invalid(format!(
                "task {:?} reads app state of type `{}`, but an inline run by `Task::now` has \
                 no app state: run it with `task.now_with(params, &registry)`",
                self.task_name, wanted.name
            )));
        };
        if !state.requires.types().contains(&wanted) {
            return Err(TaskError::invalid(format!(
                "task {:?} reads app state of type `{}` without requiring it: add \
                 `.data::<{}>()` to its `Task::requires`, so that a runner refuses to start \
                 without it",
                self.task_name, wanted.name, wanted.name
            )));
        }
        state.values.get::<D>().ok_or_else(|| {
            TaskError::invalid(crate::state::missing_text(&[crate::state::MissingState {
                task: self.task_name.clone(),
                type_name: wanted.name,
            }]))
        })
    }

    /// Resolves when an operator cancels this task; never, for an inline
    /// run. For `tokio::select!` against the body's own work:
    ///
    /// ```
    /// # use background_tasks::{TaskContext, TaskError};
    /// # async fn copy_next_chunk() -> bool { false }
    /// async fn body(ctx: TaskContext) -> Result<(), TaskError> {
    ///     loop {
    ///         tokio::select! {
    ///             () = ctx.cancelled() => return Err(TaskError::msg("cancelled; stopped cleanly")),
    ///             more = copy_next_chunk() => if !more { return Ok(()) },
    ///         }
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(cancel) => cancel.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

/// Why a task body failed, and whether retrying can help.
///
/// Any `std::error::Error` converts into a retryable `TaskError`, so `?`
/// works in a task body. [`TaskError::invalid`] marks an error retrying
/// cannot fix (the seed's `InvalidTaskError`): the task fails permanently on
/// the first occurrence, whatever `MAX_ATTEMPTS` says.
pub struct TaskError {
    permanent: bool,
    /// Set by [`TaskError::snooze`]: run again after this long, without
    /// counting an attempt.
    snooze: Option<std::time::Duration>,
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl TaskError {
    /// A retryable error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            snooze: None,
            error: message.into().into(),
        }
    }

    /// Not a failure: run this task again after `delay`, without counting
    /// an attempt and without touching its last error (a body that waits
    /// for something outside, say a rate limit, returns
    /// `Err(TaskError::snooze(..))`). The task keeps its params, priority and
    /// queue; run inline with [`Task::now`], it is just an `Err`.
    pub fn snooze(delay: std::time::Duration) -> Self {
        Self {
            permanent: false,
            snooze: Some(delay),
            error: format!("snoozed for {} s", delay.as_secs_f64()).into(),
        }
    }

    /// The delay of a [`TaskError::snooze`].
    pub fn snoozed_for(&self) -> Option<std::time::Duration> {
        self.snooze
    }

    /// A retryable error wrapping `error`.
    pub fn retryable(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            permanent: false,
            snooze: None,
            error: error.into(),
        }
    }

    /// An error retrying cannot fix (the seed's `InvalidTaskError`).
    pub fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            permanent: true,
            snooze: None,
            error: error.into(),
        }
    }

    /// True for [`TaskError::invalid`] errors.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The full text stored in `last_error`: the error and every cause,
    /// one per line.
    pub fn full_text(&self) -> String {
        let mut text = self.error.to_string();
        let mut source = self.error.source();
        while let Some(cause) = source {
            text.push_str("\nCaused by: ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        Self::retryable(error)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("permanent", &self.permanent)
            .field("snooze", &self.snooze)
            .field("error", &self.error)
            .finish()
    }
}

/// [`Task::key`] of `params`, a panic in it reported as its error: the
/// enqueue is refused either way.
pub(crate) fn key_of<T: Task>(params: &T::Params) -> Result<Option<String>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::key(params))).unwrap_or_else(
        |payload| {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_owned())
                })
                .unwrap_or_else(|| "(a non-text panic payload)".to_owned());
            Err(format!("it panicked: {message}"))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn full_text_lists_every_cause() {
        let err = TaskError::from(Outer(std::io::Error::other("disk full")));
        assert!(!err.is_permanent());
        assert_eq!(err.full_text(), "outer\nCaused by: disk full");
    }

    #[test]
    fn backoffs_give_their_delays() {
        use std::time::Duration;
        assert_eq!(Backoff::Seed.delay(1), Duration::from_secs(6));
        assert_eq!(Backoff::Seed.delay(4), Duration::from_secs(261));
        assert_eq!(
            Backoff::Fixed(Duration::from_secs(9)).delay(7),
            Duration::from_secs(9)
        );
        let exact = Backoff::Exponential {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            jitter: 0.0,
        };
        assert_eq!(exact.delay(1), Duration::from_secs(2));
        assert_eq!(exact.delay(3), Duration::from_secs(8));
        assert_eq!(exact.delay(50), Duration::from_secs(60), "capped");
        let jittered = Backoff::Exponential {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            jitter: 0.5,
        };
        for _ in 0..100 {
            let delay = jittered.delay(1);
            assert!(delay > Duration::from_secs(5) && delay <= Duration::from_secs(10));
        }
        let custom = Backoff::Custom(std::sync::Arc::new(|n| Duration::from_secs(u64::from(n))));
        assert_eq!(custom.delay(5), Duration::from_secs(5));
        assert_eq!(custom.clone(), custom);
    }

    #[test]
    fn invalid_is_permanent() {
        assert!(TaskError::invalid("bad input").is_permanent());
        assert!(!TaskError::msg("try later").is_permanent());
    }
}
