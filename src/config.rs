//! Settings of the queue and its runner, with the seed's names and defaults.
//!
//! The library takes a [`Config`] built here and validated once, by
//! [`ConfigBuilder::build`]. It reads no environment variable on its own;
//! the one exception is explicit and opt-in: [`Config::from_env`], for an
//! app that embeds the runner and wants the settings `bgtasks process`
//! reads (`MAX_ATTEMPTS`, `MAX_RUN_TIME`, `BACKGROUND_TASK_RUN_ASYNC`, ...),
//! with the same names, parsing and errors, since `bgtasks process` builds
//! its config with the same code.

use std::ffi::OsString;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};

/// Default `MAX_ATTEMPTS`: a task fails permanently after this many attempts.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;
/// Default `MAX_RUN_TIME`: seconds one execution may take.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(3600);
/// Default `--sleep`: seconds an idle runner waits between polls.
pub const DEFAULT_SLEEP: Duration = Duration::from_secs(5);
/// Default lease: a runner that has not renewed its locks for this long is
/// taken for dead, and its tasks are run by others. Renewed every third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default cancel grace: how long a running task's body has, after an
/// operator cancelled it, to stop on its own before the runner stops it.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Default longest pause between two checks for new work where the database
/// cannot notify (MySQL/MariaDB, PostgreSQL behind a transaction pooler
/// without a listen URL): 4 ms, so a task enqueued by another process
/// starts within about 5 ms.
pub const DEFAULT_WAKE_PROBE: Duration = Duration::from_millis(4);

/// Default most tasks a runner claims ahead of its free slots: 64 (see
/// [`ConfigBuilder::prefetch`]).
pub const DEFAULT_PREFETCH: usize = 64;

/// Most outcomes a prefetching runner has computed and not yet written,
/// unless it runs more tasks at once (then that many): past it, a finished
/// body's slot waits for the database (an outage, a slow disk) instead of
/// the backlog growing. After a crash these tasks run again
/// (at-least-once), as tasks in flight do, so the bound also bounds how
/// many tasks a `kill -9` makes run twice: at most the concurrency plus
/// this. 128 lets a one-at-a-time runner of quick tasks write a batch of
/// outcomes while it runs the next ones, instead of stopping each time a
/// commit is slow.
pub const MAX_UNWRITTEN_OUTCOMES: usize = 128;
/// Longest allowed queue name (the column is `varchar(190)`).
pub const MAX_QUEUE_NAME_LEN: usize = 190;
/// Default interval between two rounds of a runner's history pruning (when
/// it has a [`Retention`]): 60 s. The first round runs a second after
/// start.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Longest duration a setting or an operator's input may give: 100 years
/// (36,525 days). Nothing a queue does waits or looks back that long, and
/// the cap keeps every time computed from a duration (now minus a lease,
/// now plus a delay) far inside the years every database stores.
pub const MAX_DURATION: Duration = Duration::from_secs(36_525 * 86_400);

/// How long the history (`background_task_completedtask`) is kept: which
/// rows [`crate::admin::prune`], `bgtasks prune` and a runner configured
/// with [`ConfigBuilder::retention`] delete. Every field left `None` keeps
/// those rows; the default keeps every row forever, as the seed does.
///
/// A row's age counts from when its task finished: `run_at` for a
/// succeeded row, `failed_at` for a failed one (the two are equal when
/// this crate or Django writes the row).
///
/// ```
/// use std::time::Duration;
/// use background_tasks::Retention;
///
/// // Successes for a week, failures for 30 days, and never more than
/// // 100,000 rows in all.
/// let retention = Retention {
///     completed: Some(Duration::from_secs(7 * 86_400)),
///     failed: Some(Duration::from_secs(30 * 86_400)),
///     keep_last: Some(100_000),
/// };
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete succeeded history rows (no `failed_at`) that finished longer
    /// ago than this (`BACKGROUND_TASK_KEEP_COMPLETED`, default: keep).
    pub completed: Option<Duration>,
    /// Delete failed history rows (`failed_at` set: failed permanently or
    /// cancelled) that failed longer ago than this
    /// (`BACKGROUND_TASK_KEEP_FAILED`, default: keep). Longer than
    /// `completed` is usual: failures are what people come back to read.
    pub failed: Option<Duration>,
    /// Keep at most this many history rows, succeeded and failed alike: the
    /// newest (by `run_at`, then id) stay, older ones are deleted whatever
    /// their age (`BACKGROUND_TASK_KEEP_LAST`, default: no limit).
    pub keep_last: Option<u64>,
}

impl Retention {
    /// Whether it deletes nothing (every field `None`).
    pub fn is_empty(&self) -> bool {
        self.completed.is_none() && self.failed.is_none() && self.keep_last.is_none()
    }

    /// The stricter rules of a runner's automatic retention: a zero age or
    /// `keep_last = 0` would delete each row as soon as it is written,
    /// which is more often a mistake for "off" than a wish.
    fn validate_for_runner(&self) -> Result<()> {
        let zero = |option: &'static str| {
            Error::invalid(
                option,
                "0 would delete every history row as soon as it is written; leave it unset to \
                 keep the history forever, or give the shortest age you want to keep (1s, 7d)",
            )
        };
        if self.completed.is_some_and(|age| age.is_zero()) {
            return Err(zero("BACKGROUND_TASK_KEEP_COMPLETED"));
        }
        if self.failed.is_some_and(|age| age.is_zero()) {
            return Err(zero("BACKGROUND_TASK_KEEP_FAILED"));
        }
        if self.keep_last == Some(0) {
            return Err(Error::invalid(
                "BACKGROUND_TASK_KEEP_LAST",
                "0 would delete every history row as soon as it is written; leave it unset for \
                 no limit, or give the number of newest rows to keep (at least 1)",
            ));
        }
        Ok(())
    }
}

/// Which priority runs first (`BACKGROUND_TASK_PRIORITY_ORDERING`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PriorityOrdering {
    /// Highest priority first (the default, the seed's "DESC").
    #[default]
    Desc,
    /// Lowest priority first: "niceness" order (the seed's exact string "ASC").
    Asc,
}

impl PriorityOrdering {
    /// Reads the seed's setting: exactly `"ASC"` means ascending, any other
    /// value (including `"asc"`) means descending, as in django-background-tasks.
    pub fn from_setting(value: &str) -> Self {
        if value == "ASC" {
            Self::Asc
        } else {
            Self::Desc
        }
    }
}

/// Settings of a queue and its runner. Build one with [`Config::builder`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) max_run_time: Duration,
    pub(crate) run_async: bool,
    pub(crate) async_threads: usize,
    pub(crate) tasks_per_thread: usize,
    pub(crate) prefetch: usize,
    pub(crate) priority_ordering: PriorityOrdering,
    pub(crate) sleep: Duration,
    pub(crate) queue: Option<String>,
    pub(crate) lease: Duration,
    pub(crate) retention: Option<Retention>,
    pub(crate) retention_interval: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) queue_limits: std::collections::BTreeMap<String, usize>,
    pub(crate) clock: Clock,
    pub(crate) listen_url: Option<String>,
    pub(crate) wake_probe: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_run_time: DEFAULT_MAX_RUN_TIME,
            run_async: false,
            async_threads: num_cpus::get().max(1),
            tasks_per_thread: 1,
            prefetch: DEFAULT_PREFETCH,
            priority_ordering: PriorityOrdering::Desc,
            sleep: DEFAULT_SLEEP,
            queue: None,
            lease: DEFAULT_LEASE,
            retention: None,
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            queue_limits: std::collections::BTreeMap::new(),
            clock: Clock::system(),
            listen_url: None,
            wake_probe: DEFAULT_WAKE_PROBE,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// A builder starting from the defaults and the settings in the
    /// environment, read as `bgtasks process` reads them (it calls the same
    /// code), so that an app embedding the runner is configured like the
    /// binary. Its setters then override what the environment says:
    ///
    /// ```no_run
    /// # fn demo() -> background_tasks::Result<()> {
    /// use background_tasks::Config;
    ///
    /// let config = Config::from_env()?     // MAX_ATTEMPTS, MAX_RUN_TIME, ...
    ///     .max_attempts(3)                 // this app's choice, whatever the environment says
    ///     .build()?;                       // checks every value once
    /// # Ok(()) }
    /// ```
    ///
    /// | variable | setter | value |
    /// |---|---|---|
    /// | `MAX_ATTEMPTS` | [`ConfigBuilder::max_attempts`] | whole number |
    /// | `MAX_RUN_TIME` | [`ConfigBuilder::max_run_time`] | seconds |
    /// | `BACKGROUND_TASK_RUN_ASYNC` | [`ConfigBuilder::run_async`] | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) |
    /// | `BACKGROUND_TASK_ASYNC_THREADS` | [`ConfigBuilder::async_threads`] | whole number |
    /// | `BACKGROUND_TASK_TASKS_PER_THREAD` | [`ConfigBuilder::tasks_per_thread`] | whole number |
    /// | `BACKGROUND_TASK_PRIORITY_ORDERING` | [`ConfigBuilder::priority_ordering`] | exactly `ASC`, or anything else for DESC |
    /// | `BACKGROUND_TASK_LEASE` | [`ConfigBuilder::lease`] | seconds |
    /// | `BACKGROUND_TASK_CANCEL_GRACE` | [`ConfigBuilder::cancel_grace`] | seconds |
    /// | `BACKGROUND_TASK_LISTEN_URL` | [`ConfigBuilder::listen_url`] | a `postgres://` URL |
    /// | `BACKGROUND_TASK_WAKE_PROBE` | [`ConfigBuilder::wake_probe`] | seconds, 0.002 to 60 |
    /// | `BACKGROUND_TASK_KEEP_COMPLETED` | [`Retention::completed`] | `7d`, `12h`, `90m`, `30s` or seconds, above 0 |
    /// | `BACKGROUND_TASK_KEEP_FAILED` | [`Retention::failed`] | the same |
    /// | `BACKGROUND_TASK_KEEP_LAST` | [`Retention::keep_last`] | whole number, at least 1 |
    /// | `BACKGROUND_TASK_DB_TIME_ZONE` | [`crate::db::set_time_zone`], called here | IANA zone name |
    ///
    /// An unset or blank variable keeps the default. `DATABASE_URL` is not
    /// a setting of the config: pass it to [`crate::db::open`]
    /// (`db::open(std::env::var("DATABASE_URL").ok().as_deref())`).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the variable, for a value that does
    /// not parse (or is not UTF-8), and for a time zone that is not one or
    /// differs from the zone this process already uses. Values that parse
    /// but are not allowed (`BACKGROUND_TASK_ASYNC_THREADS=0`) are refused
    /// by [`ConfigBuilder::build`], also by name.
    pub fn from_env() -> Result<ConfigBuilder> {
        time_zone_from_env()?;
        builder_from_env()
    }

    /// `MAX_ATTEMPTS` (default 25).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// `MAX_RUN_TIME` (default 3600 s).
    pub fn max_run_time(&self) -> Duration {
        self.max_run_time
    }

    /// `BACKGROUND_TASK_RUN_ASYNC` (default false).
    pub fn run_async(&self) -> bool {
        self.run_async
    }

    /// `BACKGROUND_TASK_ASYNC_THREADS` (default: the CPU count).
    pub fn async_threads(&self) -> usize {
        self.async_threads
    }

    /// Task bodies each executor thread runs at once in async mode
    /// (`BACKGROUND_TASK_TASKS_PER_THREAD`, default 1).
    pub fn tasks_per_thread(&self) -> usize {
        self.tasks_per_thread
    }

    /// Most tasks the runner claims ahead of its free slots
    /// (`BACKGROUND_TASK_PREFETCH`, default [`DEFAULT_PREFETCH`]); 0 is the
    /// seed's strict one claim per free slot. See [`ConfigBuilder::prefetch`].
    pub fn prefetch(&self) -> usize {
        self.prefetch
    }

    /// Executor threads: `async_threads` in async mode, else 1.
    pub fn executors(&self) -> usize {
        if self.run_async {
            self.async_threads
        } else {
            1
        }
    }

    /// How many tasks run at once: `async_threads × tasks_per_thread` in
    /// async mode, else 1 (the seed's one task at a time). A runner holds
    /// at most this many tasks plus its [prefetch](Config::prefetch).
    pub fn concurrency(&self) -> usize {
        if self.run_async {
            self.async_threads.saturating_mul(self.tasks_per_thread)
        } else {
            1
        }
    }

    /// `BACKGROUND_TASK_PRIORITY_ORDERING` (default DESC).
    pub fn priority_ordering(&self) -> PriorityOrdering {
        self.priority_ordering
    }

    /// Idle poll interval, `--sleep` (default 5 s).
    pub fn sleep(&self) -> Duration {
        self.sleep
    }

    /// Only run this named queue, `--queue` (default: every queue).
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The PostgreSQL URL the runner `LISTEN`s on for new tasks when its
    /// database URL names a transaction pooler (`pooler=transaction`),
    /// which cannot carry a `LISTEN` (`BACKGROUND_TASK_LISTEN_URL`,
    /// `--listen-url`; default none: such a runner checks the newest task
    /// id instead, every [`Config::wake_probe`] at most).
    pub fn listen_url(&self) -> Option<&str> {
        self.listen_url.as_deref()
    }

    /// Where the database cannot notify a runner of new work (MySQL and
    /// MariaDB; PostgreSQL behind a transaction pooler without a listen
    /// URL), the longest pause between two checks of the newest task id
    /// (`SELECT MAX(id)`, a one-row read of the primary key): 2 ms after a
    /// change, doubling up to this while nothing changes
    /// (`BACKGROUND_TASK_WAKE_PROBE`, default 4 ms). It bounds how long a
    /// task enqueued by another process waits for an idle runner; each
    /// idle runner makes about one such read per `wake_probe` (250/s at
    /// the default). A fleet of many idle runners may take 0.05 or 0.1
    /// (s): the read count falls by that factor, the wait grows to it.
    pub fn wake_probe(&self) -> Duration {
        self.wake_probe
    }

    /// How long a runner's locks last without renewal (default 30 s).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often a runner renews its locks and its registry row: a third
    /// of the lease, so two renewals may fail before the lease runs out.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease / 3
    }

    /// What the runner deletes from the history, on its own, every
    /// [`Config::retention_interval`] (default `None`: the history is kept
    /// forever, as in the seed).
    pub fn retention(&self) -> Option<&Retention> {
        self.retention.as_ref()
    }

    /// How often a runner with a [`Config::retention`] prunes the history
    /// (default 60 s, [`DEFAULT_RETENTION_INTERVAL`]).
    pub fn retention_interval(&self) -> Duration {
        self.retention_interval
    }

    /// How long a cancelled running task's body has to stop on its own
    /// before the runner stops it (default 10 s, [`DEFAULT_CANCEL_GRACE`]).
    pub fn cancel_grace(&self) -> Duration {
        self.cancel_grace
    }

    /// This runner's own per-queue concurrency limits: at most this many
    /// tasks of the queue run at once here (default: none).
    pub fn queue_limits(&self) -> &std::collections::BTreeMap<String, usize> {
        &self.queue_limits
    }

    /// The clock the queue and runner read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

/// Builder of [`Config`]; every setter documents its unit and default.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Attempts before a failing task is failed permanently (`MAX_ATTEMPTS`,
    /// default 25). 1 means no retry; 0 behaves like 1, as in the seed.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// Longest time one execution may take (`MAX_RUN_TIME`, default 3600 s).
    pub fn max_run_time(mut self, limit: Duration) -> Self {
        self.config.max_run_time = limit;
        self
    }

    /// Run several tasks at once (`BACKGROUND_TASK_RUN_ASYNC`, default false).
    pub fn run_async(mut self, on: bool) -> Self {
        self.config.run_async = on;
        self
    }

    /// Executors in async mode (`BACKGROUND_TASK_ASYNC_THREADS`, default CPU count).
    pub fn async_threads(mut self, threads: usize) -> Self {
        self.config.async_threads = threads;
        self
    }

    /// Task bodies each executor thread runs at once in async mode
    /// (`BACKGROUND_TASK_TASKS_PER_THREAD`, default 1, as in the seed: one
    /// body per thread). Async bodies that wait on I/O gain from more: with
    /// 2 threads × 50, up to 100 run at once, and claims and outcomes are
    /// written in batches of up to that many.
    pub fn tasks_per_thread(mut self, tasks: usize) -> Self {
        self.config.tasks_per_thread = tasks;
        self
    }

    /// Most tasks claimed ahead of the free slots
    /// (`BACKGROUND_TASK_PREFETCH`, default [`DEFAULT_PREFETCH`]).
    ///
    /// A runner that runs one task at a time (the default) would otherwise
    /// pay two database round trips per task, claiming only when a slot is
    /// free and freeing the slot only when the outcome is written. With
    /// prefetch it keeps claimed tasks ready (locked by it, their leases
    /// renewed, started strictly one after another in claim order) and
    /// frees a slot when the body returns, while outcomes are written by
    /// group commit behind it (at most [`MAX_UNWRITTEN_OUTCOMES`] ahead of
    /// the database). It claims ahead only as much work as it expects to
    /// start within 50 ms at the pace tasks have run so far, up to this
    /// many: slow tasks are not held back from other runners. Bodies never
    /// overlap more than [`Config::concurrency`] allows either way.
    ///
    /// `0` keeps the seed's exact rhythm: claim one task per free slot,
    /// run it, record its outcome, then claim the next.
    pub fn prefetch(mut self, tasks: usize) -> Self {
        self.config.prefetch = tasks;
        self
    }

    /// Priority order (`BACKGROUND_TASK_PRIORITY_ORDERING`, default DESC).
    pub fn priority_ordering(mut self, ordering: PriorityOrdering) -> Self {
        self.config.priority_ordering = ordering;
        self
    }

    /// Idle poll interval (`--sleep`, default 5 s).
    pub fn sleep(mut self, sleep: Duration) -> Self {
        self.config.sleep = sleep;
        self
    }

    /// Only run tasks of this queue (`--queue`, default: all queues).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.config.queue = Some(queue.into());
        self
    }

    /// How long locks last without renewal before other runners take the
    /// tasks back (default 30 s). Every runner on one database should use
    /// the same value. Locks written by Django's `process_tasks` (a bare
    /// PID, never renewed) still expire after `MAX_RUN_TIME`, as there.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// The longest pause between two checks for new work where the
    /// database cannot notify ([`Config::wake_probe`], default 4 ms); at
    /// least 2 ms, at most a minute.
    pub fn wake_probe(mut self, pause: Duration) -> Self {
        self.config.wake_probe = pause;
        self
    }

    /// Let the runner delete old history rows by `retention` (default:
    /// none, the history is kept forever, as in the seed). It prunes once
    /// a second after start and then every
    /// [`ConfigBuilder::retention_interval`], in bounded batches (at most
    /// 10 batches of 1,000 rows a round, sooner again while more is left),
    /// so a large backlog never holds the database for long. A zero age or
    /// `keep_last = 0` is refused by [`ConfigBuilder::build`]; an empty
    /// retention is the same as none. Runners sharing a database can all
    /// prune: they delete the same rows once. For a one-off cleanup use
    /// [`crate::admin::prune`] or `bgtasks prune`.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.config.retention = Some(retention);
        self
    }

    /// How often the runner prunes the history when it has a retention
    /// (default 60 s, [`DEFAULT_RETENTION_INTERVAL`]; more than zero).
    pub fn retention_interval(mut self, interval: Duration) -> Self {
        self.config.retention_interval = interval;
        self
    }

    /// How long the body of a running task an operator cancelled has to
    /// return on its own (it sees [`crate::TaskContext::cancelled`]) before
    /// the runner stops it (default 10 s, [`DEFAULT_CANCEL_GRACE`]).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// At most `max_running` tasks of `queue` run at once in this runner
    /// (at least 1), whatever its number of slots; `bgtasks --queue-limit
    /// queue=N`. For a limit across every runner sharing the database, see
    /// [`crate::admin::set_queue_limit`]; both apply when both are set.
    pub fn queue_limit(mut self, queue: impl Into<String>, max_running: usize) -> Self {
        self.config.queue_limits.insert(queue.into(), max_running);
        self
    }

    /// A direct PostgreSQL URL to `LISTEN` on for new tasks, for a runner
    /// whose database URL names a transaction pooler (`pooler=transaction`,
    /// where `LISTEN` cannot work): one more connection per runner, past the
    /// pooler, and new work starts within milliseconds. Without it such a
    /// runner checks the newest task id every 100 ms through the pooler.
    /// Ignored on other backends and on direct URLs, which listen on
    /// their own pool (`BACKGROUND_TASK_LISTEN_URL`).
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.config.listen_url = Some(url.into());
        self
    }

    /// The clock to read (default: the system clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.config.clock = clock;
        self
    }

    /// Changes one field of the retention (starting from none), keeping
    /// the others: a flag of `bgtasks process` overrides its own variable
    /// only.
    pub(crate) fn retention_field(mut self, set: impl FnOnce(&mut Retention)) -> Self {
        set(self.config.retention.get_or_insert_with(Retention::default));
        self
    }

    /// Checks every value once and returns the config. Every duration is
    /// at most [`MAX_DURATION`].
    pub fn build(self) -> Result<Config> {
        let c = &self.config;
        for (option, value) in [
            ("MAX_RUN_TIME", c.max_run_time),
            ("sleep", c.sleep),
            ("lease", c.lease),
            ("cancel grace", c.cancel_grace),
            ("retention interval", c.retention_interval),
        ] {
            check_duration(option, value)?;
        }
        if c.max_run_time.is_zero() {
            return Err(Error::invalid("MAX_RUN_TIME", "must be at least 1 second"));
        }
        if c.lease < Duration::from_millis(300) {
            return Err(Error::invalid(
                "lease",
                "must be at least 0.3 seconds (it is renewed every third of it)",
            ));
        }
        if c.async_threads == 0 {
            return Err(Error::invalid(
                "BACKGROUND_TASK_ASYNC_THREADS",
                "must be at least 1",
            ));
        }
        if c.tasks_per_thread == 0 {
            return Err(Error::invalid(
                "BACKGROUND_TASK_TASKS_PER_THREAD",
                "must be at least 1",
            ));
        }
        if let Some(queue) = &c.queue {
            validate_queue_name(queue)?;
        }
        if let Some(retention) = &c.retention {
            retention.validate_for_runner()?;
        }
        for (queue, max_running) in &c.queue_limits {
            validate_queue_name(queue)?;
            if *max_running == 0 {
                return Err(Error::invalid(
                    "queue limit",
                    format!(
                        "queue {queue:?} is limited to 0 tasks at once; give at least 1 (or no \
                         limit, or run no runner for it)"
                    ),
                ));
            }
        }
        if c.retention_interval.is_zero() {
            return Err(Error::invalid(
                "retention interval",
                "must be more than 0 seconds (the default is 60 s)",
            ));
        }
        let probe = self.config.wake_probe;
        if probe < Duration::from_millis(2) || probe > Duration::from_secs(60) {
            return Err(Error::invalid(
                "wake probe",
                format!(
                    "{} s is outside 0.002 to 60 s (the default is 0.004 s)",
                    probe.as_secs_f64()
                ),
            ));
        }
        let mut config = self.config;
        // Nothing to delete is the same as no retention: no timer at all.
        config.retention = config.retention.filter(|r| !r.is_empty());
        Ok(config)
    }
}

/// Refuses a duration longer than [`MAX_DURATION`].
pub(crate) fn check_duration(option: &'static str, value: Duration) -> Result<()> {
    if value > MAX_DURATION {
        return Err(Error::invalid(
            option,
            format!(
                "{} s is longer than the {} s (100 years) any duration may be",
                value.as_secs(),
                MAX_DURATION.as_secs()
            ),
        ));
    }
    Ok(())
}

/// The builder of [`Config::from_env`] without its time zone: what
/// `bgtasks process` starts from (the zone is set once for every command,
/// by `--db-time-zone` or [`time_zone_from_env`]).
pub(crate) fn builder_from_env() -> Result<ConfigBuilder> {
    builder_from_vars(&|name| std::env::var_os(name))
}

/// Sets the database time zone from `BACKGROUND_TASK_DB_TIME_ZONE`, when it
/// is set and not blank.
pub(crate) fn time_zone_from_env() -> Result<()> {
    time_zone_from_vars(&|name| std::env::var_os(name))
}

/// Reads a variable by name: the environment, or a test's map.
type Vars<'a> = &'a dyn Fn(&'static str) -> Option<OsString>;

/// The variable `name` through `parse`: `None` when unset or blank, an
/// error naming the variable when it does not parse.
fn var<T>(
    vars: Vars<'_>,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    let Some(value) = vars(name) else {
        return Ok(None);
    };
    let value = value
        .into_string()
        .map_err(|value| Error::invalid(name, format!("{value:?} is not valid UTF-8")))?;
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    parse(value)
        .map(Some)
        .map_err(|reason| Error::invalid(name, reason))
}

fn builder_from_vars(vars: Vars<'_>) -> Result<ConfigBuilder> {
    let mut builder = Config::builder();
    if let Some(attempts) = var(vars, "MAX_ATTEMPTS", parse::whole_number)? {
        builder = builder.max_attempts(attempts);
    }
    if let Some(limit) = var(vars, "MAX_RUN_TIME", parse::seconds)? {
        builder = builder.max_run_time(limit);
    }
    if let Some(on) = var(vars, "BACKGROUND_TASK_RUN_ASYNC", parse::boolean)? {
        builder = builder.run_async(on);
    }
    if let Some(threads) = var(vars, "BACKGROUND_TASK_ASYNC_THREADS", parse::whole_number)? {
        builder = builder.async_threads(threads);
    }
    if let Some(tasks) = var(
        vars,
        "BACKGROUND_TASK_TASKS_PER_THREAD",
        parse::whole_number,
    )? {
        builder = builder.tasks_per_thread(tasks);
    }
    if let Some(tasks) = var(vars, "BACKGROUND_TASK_PREFETCH", parse::whole_number)? {
        builder = builder.prefetch(tasks);
    }
    if let Some(ordering) = var(vars, "BACKGROUND_TASK_PRIORITY_ORDERING", parse::ordering)? {
        builder = builder.priority_ordering(ordering);
    }
    if let Some(lease) = var(vars, "BACKGROUND_TASK_LEASE", parse::seconds)? {
        builder = builder.lease(lease);
    }
    if let Some(pause) = var(vars, "BACKGROUND_TASK_WAKE_PROBE", parse::seconds)? {
        builder = builder.wake_probe(pause);
    }
    if let Some(url) = vars("BACKGROUND_TASK_LISTEN_URL") {
        let url = url
            .into_string()
            .map_err(|_| Error::invalid("BACKGROUND_TASK_LISTEN_URL", "is not valid UTF-8"))?;
        if !url.is_empty() {
            builder = builder.listen_url(url);
        }
    }
    if let Some(grace) = var(vars, "BACKGROUND_TASK_CANCEL_GRACE", parse::seconds)? {
        builder = builder.cancel_grace(grace);
    }
    if let Some(age) = var(vars, "BACKGROUND_TASK_KEEP_COMPLETED", parse::keep_age)? {
        builder = builder.retention_field(|r| r.completed = Some(age));
    }
    if let Some(age) = var(vars, "BACKGROUND_TASK_KEEP_FAILED", parse::keep_age)? {
        builder = builder.retention_field(|r| r.failed = Some(age));
    }
    if let Some(rows) = var(vars, "BACKGROUND_TASK_KEEP_LAST", parse::keep_last)? {
        builder = builder.retention_field(|r| r.keep_last = Some(rows));
    }
    Ok(builder)
}

fn time_zone_from_vars(vars: Vars<'_>) -> Result<()> {
    const NAME: &str = "BACKGROUND_TASK_DB_TIME_ZONE";
    let Some(zone) = var(vars, NAME, |zone| Ok(zone.to_owned()))? else {
        return Ok(());
    };
    crate::db::set_time_zone(&zone).map_err(|err| match err {
        Error::InvalidOption { reason, .. } => Error::invalid(NAME, reason),
        err => err,
    })
}

/// How settings are read from text, by [`Config::from_env`] and by the
/// flags of `bgtasks` alike (as clap value parsers): one parser per kind of
/// value, so a variable and its flag accept the same values. Each error
/// says what was given and what is accepted, and is shown after the name
/// of the variable or flag.
pub(crate) mod parse {
    use std::str::FromStr;
    use std::time::Duration;

    use super::PriorityOrdering;

    /// A whole number: `25`.
    pub(crate) fn whole_number<T: FromStr>(text: &str) -> Result<T, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number in range (such as 25)"))
    }

    /// A number of seconds, 0 or more, with a fraction if needed: `30`,
    /// `0.5`; at most [`super::MAX_DURATION`] (100 years).
    pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
        number_of_seconds(text).ok_or_else(|| {
            format!("{text:?} is not a number of seconds >= 0 (such as 30 or 0.5)")
        })?
    }

    /// `text` as a number of seconds from 0 to [`super::MAX_DURATION`]:
    /// `None` when it is no such number, an error when it is one but too
    /// long.
    fn number_of_seconds(text: &str) -> Option<Result<Duration, String>> {
        let seconds = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|secs| secs.is_finite() && *secs >= 0.0)?;
        if seconds > super::MAX_DURATION.as_secs_f64() {
            return Some(Err(format!(
                "{:?} seconds is longer than {} seconds (100 years), the longest a duration may be",
                text.trim(),
                super::MAX_DURATION.as_secs()
            )));
        }
        Duration::try_from_secs_f64(seconds).ok().map(Ok)
    }

    /// A boolean as settings write it: true/false, 1/0, yes/no, on/off.
    pub(crate) fn boolean(text: &str) -> Result<bool, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            _ => Err(format!("{text:?} is not a boolean; use true or false")),
        }
    }

    /// The seed's priority ordering: exactly `ASC`, or anything else for
    /// DESC ([`PriorityOrdering::from_setting`]).
    pub(crate) fn ordering(text: &str) -> Result<PriorityOrdering, String> {
        Ok(PriorityOrdering::from_setting(text.trim()))
    }

    /// A duration: a whole number with s, m, h or d (`30s`, `90m`, `12h`,
    /// `7d`), or a number of seconds (`3600`, `0.5`); at most
    /// [`super::MAX_DURATION`] (100 years).
    pub(crate) fn duration(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if text.ends_with(['s', 'm', 'h', 'd']) {
            return crate::inspect::parse_age(text)
                .map(|age| age.to_std().unwrap_or_default())
                .map_err(|err| match err {
                    crate::Error::InvalidOption { reason, .. } => reason,
                    err => err.to_string(),
                });
        }
        number_of_seconds(text).ok_or_else(|| {
            format!(
                "{text:?} is not a duration; use a number of seconds (3600) or a whole \
                 number with s, m, h or d (30s, 90m, 12h, 7d)"
            )
        })?
    }

    /// A retention age: a [`duration`] above zero. "Keep for 0 s" is more
    /// often a mistaken "off" than a wish to keep no history.
    pub(crate) fn keep_age(text: &str) -> Result<Duration, String> {
        let age = duration(text)?;
        if age.is_zero() {
            return Err(
                "0 would delete history rows as soon as they are written; leave it unset to keep \
                 them forever, or give the shortest age to keep (1s, 7d)"
                    .into(),
            );
        }
        Ok(age)
    }

    /// How many history rows to keep: at least 1.
    pub(crate) fn keep_last(text: &str) -> Result<u64, String> {
        match whole_number::<u64>(text)? {
            0 => Err(
                "0 would delete every history row as soon as it is written; leave it unset for \
                 no limit, or give the number of newest rows to keep (at least 1)"
                    .into(),
            ),
            rows => Ok(rows),
        }
    }
}

/// A queue name is 1 to 190 characters (`None` is the default queue).
pub(crate) fn validate_queue_name(queue: &str) -> Result<()> {
    if queue.is_empty() {
        return Err(Error::invalid(
            "queue",
            "an empty name is not a queue; leave the queue unset for the default queue",
        ));
    }
    let len = queue.chars().count();
    if len > MAX_QUEUE_NAME_LEN {
        return Err(Error::invalid(
            "queue",
            format!("{len} characters; at most {MAX_QUEUE_NAME_LEN} are allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_defaults() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.max_attempts(), 25);
        assert_eq!(c.max_run_time(), Duration::from_secs(3600));
        assert!(!c.run_async());
        assert_eq!(c.async_threads(), num_cpus::get());
        assert_eq!(c.priority_ordering(), PriorityOrdering::Desc);
        assert_eq!(c.concurrency(), 1);
        assert_eq!(c.tasks_per_thread(), 1);
    }

    #[test]
    fn async_concurrency_is_threads_times_tasks_per_thread() {
        let c = Config::builder()
            .run_async(true)
            .async_threads(3)
            .tasks_per_thread(4)
            .build()
            .unwrap();
        assert_eq!(c.executors(), 3);
        assert_eq!(c.concurrency(), 12);
        let sync = Config::builder().tasks_per_thread(4).build().unwrap();
        assert_eq!((sync.executors(), sync.concurrency()), (1, 1));
    }

    #[test]
    fn only_exact_asc_is_ascending() {
        assert_eq!(PriorityOrdering::from_setting("ASC"), PriorityOrdering::Asc);
        assert_eq!(
            PriorityOrdering::from_setting("asc"),
            PriorityOrdering::Desc
        );
        assert_eq!(
            PriorityOrdering::from_setting("DESC"),
            PriorityOrdering::Desc
        );
    }

    #[test]
    fn bad_values_are_refused_once_at_build() {
        assert!(Config::builder().async_threads(0).build().is_err());
        assert!(Config::builder().tasks_per_thread(0).build().is_err());
        assert!(
            Config::builder()
                .max_run_time(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(Config::builder().queue("").build().is_err());
        assert!(Config::builder().queue("q".repeat(191)).build().is_err());
        assert!(Config::builder().queue("q".repeat(190)).build().is_ok());
    }

    /// The variables of `pairs`, as the environment would give them.
    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&'static str) -> Option<OsString> {
        let map: std::collections::HashMap<String, OsString> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), OsString::from(value)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_environment_sets_every_seed_setting() {
        let env = vars(&[
            ("MAX_ATTEMPTS", "3"),
            ("MAX_RUN_TIME", "90"),
            ("BACKGROUND_TASK_RUN_ASYNC", "True"),
            ("BACKGROUND_TASK_ASYNC_THREADS", "2"),
            ("BACKGROUND_TASK_TASKS_PER_THREAD", " 5 "),
            ("BACKGROUND_TASK_PRIORITY_ORDERING", "ASC"),
            ("BACKGROUND_TASK_LEASE", "0.5"),
            ("BACKGROUND_TASK_CANCEL_GRACE", "4"),
            ("BACKGROUND_TASK_WAKE_PROBE", "0.05"),
            ("BACKGROUND_TASK_KEEP_COMPLETED", "7d"),
            ("BACKGROUND_TASK_KEEP_LAST", "100"),
        ]);
        let c = builder_from_vars(&env).unwrap().build().unwrap();
        assert_eq!(c.max_attempts(), 3);
        assert_eq!(c.max_run_time(), Duration::from_secs(90));
        assert!(c.run_async());
        assert_eq!((c.async_threads(), c.tasks_per_thread()), (2, 5));
        assert_eq!(c.priority_ordering(), PriorityOrdering::Asc);
        assert_eq!(c.lease(), Duration::from_millis(500));
        assert_eq!(c.cancel_grace(), Duration::from_secs(4));
        assert_eq!(c.wake_probe(), Duration::from_millis(50));
        assert_eq!(
            c.retention(),
            Some(&Retention {
                completed: Some(Duration::from_secs(7 * 86_400)),
                failed: None,
                keep_last: Some(100),
            })
        );
    }

    #[test]
    fn an_empty_environment_gives_the_defaults_and_setters_override_it() {
        let c = builder_from_vars(&vars(&[("MAX_ATTEMPTS", " ")]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.max_attempts(), DEFAULT_MAX_ATTEMPTS, "blank is unset");
        assert_eq!(c.retention(), None);
        let c = builder_from_vars(&vars(&[("MAX_ATTEMPTS", "9")]))
            .unwrap()
            .max_attempts(2)
            .build()
            .unwrap();
        assert_eq!(c.max_attempts(), 2);
    }

    #[test]
    fn a_bad_variable_is_refused_by_its_name() {
        for (name, value, says) in [
            ("MAX_ATTEMPTS", "x", "not a whole number"),
            ("MAX_ATTEMPTS", "-1", "not a whole number"),
            ("MAX_RUN_TIME", "-1", "not a number of seconds"),
            ("BACKGROUND_TASK_RUN_ASYNC", "maybe", "not a boolean"),
            ("BACKGROUND_TASK_ASYNC_THREADS", "two", "not a whole number"),
            (
                "BACKGROUND_TASK_TASKS_PER_THREAD",
                "1.5",
                "not a whole number",
            ),
            ("BACKGROUND_TASK_LEASE", "soon", "not a number of seconds"),
            (
                "BACKGROUND_TASK_CANCEL_GRACE",
                "NaN",
                "not a number of seconds",
            ),
            ("BACKGROUND_TASK_KEEP_COMPLETED", "0", "0 would delete"),
            ("BACKGROUND_TASK_KEEP_FAILED", "7x", "not a duration"),
            ("BACKGROUND_TASK_KEEP_LAST", "0", "0 would delete"),
        ] {
            let err = builder_from_vars(&vars(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(name) && err.contains(says),
                "{name}={value}: {err}"
            );
            assert!(err.contains(&format!("{value:?}")) || value == "0", "{err}");
        }
        // Values that parse but are not allowed: refused by build, by name.
        let err = builder_from_vars(&vars(&[("BACKGROUND_TASK_ASYNC_THREADS", "0")]))
            .unwrap()
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("BACKGROUND_TASK_ASYNC_THREADS"),
            "{err}"
        );
        let err = builder_from_vars(&vars(&[("MAX_RUN_TIME", "0")]))
            .unwrap()
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("MAX_RUN_TIME"), "{err}");
    }

    #[test]
    fn a_bad_time_zone_is_refused_by_its_name() {
        let err = time_zone_from_vars(&vars(&[("BACKGROUND_TASK_DB_TIME_ZONE", "Mars/Olympus")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("BACKGROUND_TASK_DB_TIME_ZONE"), "{err}");
        assert!(err.contains("Mars/Olympus"), "{err}");
        time_zone_from_vars(&vars(&[("BACKGROUND_TASK_DB_TIME_ZONE", "")])).unwrap();
    }

    #[test]
    fn durations_in_every_accepted_form() {
        use parse::duration;
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(duration("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("3600"), Ok(Duration::from_secs(3_600)));
        assert_eq!(duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        for bad in ["", "7x", "-1", "-1d", "d", "1.5h", "NaN", "inf"] {
            let err = duration(bad).unwrap_err();
            assert!(err.contains("not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn booleans_read_like_settings() {
        assert_eq!(parse::boolean("True"), Ok(true));
        assert_eq!(parse::boolean("1"), Ok(true));
        assert_eq!(parse::boolean("false"), Ok(false));
        assert!(parse::boolean("maybe").is_err());
    }

    #[test]
    fn retention_is_off_by_default_and_checked_at_build() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.retention(), None);
        assert_eq!(c.retention_interval(), Duration::from_secs(60));

        let week = Duration::from_secs(7 * 86_400);
        let kept = Retention {
            completed: Some(week),
            keep_last: Some(10),
            ..Retention::default()
        };
        let c = Config::builder().retention(kept.clone()).build().unwrap();
        assert_eq!(c.retention(), Some(&kept));

        let empty = Config::builder().retention(Retention::default()).build();
        assert_eq!(
            empty.unwrap().retention(),
            None,
            "nothing to delete is no retention"
        );

        for (zero, setting) in [
            (
                Retention {
                    completed: Some(Duration::ZERO),
                    ..Retention::default()
                },
                "BACKGROUND_TASK_KEEP_COMPLETED",
            ),
            (
                Retention {
                    failed: Some(Duration::ZERO),
                    ..Retention::default()
                },
                "BACKGROUND_TASK_KEEP_FAILED",
            ),
            (
                Retention {
                    keep_last: Some(0),
                    ..Retention::default()
                },
                "BACKGROUND_TASK_KEEP_LAST",
            ),
        ] {
            let err = Config::builder().retention(zero).build().unwrap_err();
            assert!(err.to_string().contains(setting), "{err}");
        }
        assert!(
            Config::builder()
                .retention_interval(Duration::ZERO)
                .build()
                .is_err()
        );
    }

    #[test]
    fn durations_longer_than_the_cap_are_refused() {
        let over = MAX_DURATION + Duration::from_secs(1);
        let cases: [(&str, ConfigBuilder); 5] = [
            ("MAX_RUN_TIME", Config::builder().max_run_time(over)),
            ("sleep", Config::builder().sleep(over)),
            ("lease", Config::builder().lease(over)),
            ("cancel grace", Config::builder().cancel_grace(over)),
            (
                "retention interval",
                Config::builder().retention_interval(over),
            ),
        ];
        for (option, builder) in cases {
            let err = builder.build().unwrap_err().to_string();
            assert!(err.contains(option) && err.contains("100 years"), "{err}");
        }
        assert!(Config::builder().lease(MAX_DURATION).build().is_ok());
    }

    #[test]
    fn a_wake_probe_outside_2_ms_to_60_s_is_refused_with_the_range() {
        for bad in ["0", "0.001", "61", "1e30", "-1", "soon"] {
            let pairs = [("BACKGROUND_TASK_WAKE_PROBE", bad)];
            let env = vars(&pairs);
            let err = builder_from_vars(&env)
                .and_then(ConfigBuilder::build)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("BACKGROUND_TASK_WAKE_PROBE") || err.contains("0.002 to 60"),
                "{bad}: {err}"
            );
        }
        for good in ["0.002", "0.1", "60"] {
            let pairs = [("BACKGROUND_TASK_WAKE_PROBE", good)];
            let env = vars(&pairs);
            assert!(builder_from_vars(&env).unwrap().build().is_ok(), "{good}");
        }
        assert_eq!(Config::default().wake_probe(), DEFAULT_WAKE_PROBE);
    }
}
