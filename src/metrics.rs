//! Prometheus metrics, in the OpenMetrics text format
//! ([prometheus-client](https://docs.rs/prometheus-client)).
//!
//! Served by `bgtasks process --metrics-addr HOST:PORT` (or
//! `BACKGROUND_TASK_METRICS_ADDR`) at `/metrics`, by `bgtasks dashboard`,
//! and by an app that mounts the dashboard scope (its embedded runner's
//! counters included). Two kinds:
//! - **Counted by this process's runner** as tasks run. They start at zero
//!   with the process, as Prometheus expects of counters; scrape every
//!   runner process and `sum` them for the fleet.
//! - **Read from the database at each scrape**: tasks per queue and state,
//!   the age of the oldest due task, runners alive and draining, paused
//!   queues, stale locks. Every process that serves metrics reports the
//!   same values for these, so aggregate them with `max`, not `sum`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `background_tasks_started_total` | counter | `task`, `queue` |
//! | `background_tasks_succeeded_total` | counter | `task`, `queue` |
//! | `background_tasks_retried_total` | counter | `task`, `queue` |
//! | `background_tasks_failed_total` | counter | `task`, `queue` |
//! | `background_tasks_cancelled_total` | counter | `task`, `queue` |
//! | `background_tasks_snoozed_total` | counter | `task`, `queue` |
//! | `background_tasks_execution_seconds` | histogram | `task`, `queue` |
//! | `background_tasks_pickup_latency_seconds` | histogram | `queue` |
//! | `background_tasks_in_flight` | gauge | |
//! | `background_tasks_slots` | gauge | |
//! | `background_tasks_claimed` | gauge | |
//! | `background_tasks_claim_batch_size` | histogram | |
//! | `background_tasks_claim_seconds` | histogram | |
//! | `background_tasks_outcome_batch_size` | histogram | |
//! | `background_tasks_outcome_write_seconds` | histogram | |
//! | `background_tasks_database_errors_total` | counter | `operation`, `kind` |
//! | `background_tasks_cron_fired_total` | counter | `task` |
//! | `background_tasks_draining` | gauge | |
//! | `background_tasks_tasks` | gauge (database) | `queue`, `state` |
//! | `background_tasks_oldest_due_age_seconds` | gauge (database) | |
//! | `background_tasks_runners_alive` | gauge (database) | |
//! | `background_tasks_runners_draining` | gauge (database) | |
//! | `background_tasks_queue_paused` | gauge (database) | `queue` |
//! | `background_tasks_stale_locks` | gauge (database) | |
//! | `background_tasks_database_readable` | gauge | |
//!
//! `queue` is empty for the default (unnamed) queue. Pickup latency is the
//! time from a task's `run_at` (when it became due) to its claim.
//! `in_flight` counts task bodies running now, `slots` how many this
//! process's runner runs at once (0 without a runner), `claimed` the tasks
//! it holds locked (running, or claimed ahead of a free slot). A claim
//! that took nothing counts in the batch-size histogram as 0. Database
//! errors count the runner's steps that failed (`operation`: `claim`,
//! `outcome`, `heartbeat`, `cron`) by kind (`unreachable`, `conflict`,
//! `constraint`, `decode`, `other`); a lock conflict retried at once and
//! then won does not count. `stale_locks` counts what `bgtasks doctor`
//! reports as stale: tasks locked for longer than the lease by a runner
//! that is gone.
//!
//! Label values are bounded: `task` only takes the names in the runner's
//! registry (any other name counts as `(unregistered)`), `queue` the
//! queues tasks were enqueued to, `operation` and `kind` the lists above.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sea_orm::ConnectionTrait;

use crate::entity::task;
use crate::error::Result;
use crate::inspect::{self, State};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CronLabels {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    queue: String,
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Execution time buckets: 1 ms to about 4.4 min, ×4 apart.
fn execution_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Pickup latency buckets: 0.25 ms to about 65 s, ×4 apart.
fn pickup_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 4.0, 10))
}

/// Batch size buckets: 0, 1, 2, 4, … 512 tasks.
fn batch_histogram() -> Histogram {
    Histogram::new(std::iter::once(0.0).chain(exponential_buckets(1.0, 2.0, 10)))
}

/// Database statement buckets: 0.1 ms to about 26 s, ×4 apart.
fn statement_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
}

/// Most task × queue label sets each outcome counter is created with at
/// zero before its first task ([`Metrics::initialize`]).
const MAX_INITIALIZED: usize = 2_000;

/// The runner steps whose database errors are counted.
const OPERATIONS: [&str; 4] = ["claim", "outcome", "heartbeat", "cron"];

/// The label of a task name outside the registry.
const UNREGISTERED: &str = "(unregistered)";

/// The queue's metrics. One per [`crate::Queue`] (shared by its clones).
pub(crate) struct Metrics {
    registry: Registry,
    /// The task names labels may take.
    tasks: crate::Registry,
    started: Family<TaskLabels, Counter>,
    succeeded: Family<TaskLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    failed: Family<TaskLabels, Counter>,
    cancelled: Family<TaskLabels, Counter>,
    snoozed: Family<TaskLabels, Counter>,
    execution: HistogramFamily<TaskLabels>,
    pickup: HistogramFamily<QueueLabels>,
    in_flight: Gauge,
    slots: Gauge,
    claimed: Gauge,
    claim_batch: Histogram,
    claim_seconds: Histogram,
    outcome_batch: Histogram,
    outcome_seconds: Histogram,
    database_errors: Family<ErrorLabels, Counter>,
    cron_fired: Family<CronLabels, Counter>,
    draining: Gauge,
    depth: Family<DepthLabels, Gauge>,
    oldest_due: Gauge<f64, std::sync::atomic::AtomicU64>,
    runners_alive: Gauge,
    runners_draining: Gauge,
    queue_paused: Family<QueueLabels, Gauge>,
    stale_locks: Gauge,
    database_readable: Gauge,
    /// One scrape at a time: each sets the database gauges, then encodes.
    scrape: tokio::sync::Mutex<()>,
}

impl Metrics {
    pub(crate) fn new(tasks: crate::Registry) -> Self {
        let mut registry = Registry::with_prefix("background_tasks");
        let metrics = Metrics {
            tasks,
            started: Family::default(),
            succeeded: Family::default(),
            retried: Family::default(),
            failed: Family::default(),
            cancelled: Family::default(),
            snoozed: Family::default(),
            execution: Family::new_with_constructor(execution_histogram),
            pickup: Family::new_with_constructor(pickup_histogram),
            in_flight: Gauge::default(),
            slots: Gauge::default(),
            claimed: Gauge::default(),
            claim_batch: batch_histogram(),
            claim_seconds: statement_histogram(),
            outcome_batch: batch_histogram(),
            outcome_seconds: statement_histogram(),
            database_errors: Family::default(),
            cron_fired: Family::default(),
            draining: Gauge::default(),
            depth: Family::default(),
            oldest_due: Gauge::default(),
            runners_alive: Gauge::default(),
            runners_draining: Gauge::default(),
            queue_paused: Family::default(),
            stale_locks: Gauge::default(),
            database_readable: Gauge::default(),
            registry: Registry::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        registry.register(
            "started",
            "Task executions started by this process",
            metrics.started.clone(),
        );
        registry.register(
            "succeeded",
            "Task executions that succeeded in this process",
            metrics.succeeded.clone(),
        );
        registry.register(
            "retried",
            "Task executions that failed in this process and were rescheduled",
            metrics.retried.clone(),
        );
        registry.register(
            "failed",
            "Task executions that failed permanently in this process",
            metrics.failed.clone(),
        );
        registry.register(
            "cancelled",
            "Task executions an operator cancelled, in this process",
            metrics.cancelled.clone(),
        );
        registry.register(
            "snoozed",
            "Task executions that snoozed (asked to run again later) in this process",
            metrics.snoozed.clone(),
        );
        registry.register(
            "execution_seconds",
            "Time task bodies ran in this process",
            metrics.execution.clone(),
        );
        registry.register(
            "pickup_latency_seconds",
            "Time from a task's run_at to its claim by this process",
            metrics.pickup.clone(),
        );
        registry.register(
            "in_flight",
            "Task bodies running now in this process",
            metrics.in_flight.clone(),
        );
        registry.register(
            "slots",
            "Tasks this process's runner runs at once (0 without a runner)",
            metrics.slots.clone(),
        );
        registry.register(
            "claimed",
            "Tasks this process's runner holds locked: running, or claimed ahead of a free slot",
            metrics.claimed.clone(),
        );
        registry.register(
            "claim_batch_size",
            "Tasks taken by each claim of this process's runner",
            metrics.claim_batch.clone(),
        );
        registry.register(
            "claim_seconds",
            "Time each claim of this process's runner took",
            metrics.claim_seconds.clone(),
        );
        registry.register(
            "outcome_batch_size",
            "Outcomes written by each outcome write of this process's runner",
            metrics.outcome_batch.clone(),
        );
        registry.register(
            "outcome_write_seconds",
            "Time each outcome write of this process's runner took",
            metrics.outcome_seconds.clone(),
        );
        registry.register(
            "database_errors",
            "Runner steps in this process that failed on a database error, by step and kind",
            metrics.database_errors.clone(),
        );
        registry.register(
            "cron_fired",
            "Tasks enqueued by cron schedules in this process",
            metrics.cron_fired.clone(),
        );
        registry.register(
            "draining",
            "1 while this process's runner drains (claims nothing, finishes what it holds)",
            metrics.draining.clone(),
        );
        registry.register(
            "tasks",
            "Tasks per queue and state (failed: history rows, counted up to a cap)",
            metrics.depth.clone(),
        );
        registry.register(
            "oldest_due_age_seconds",
            "How long the oldest due task has waited (0 when none is due)",
            metrics.oldest_due.clone(),
        );
        registry.register(
            "runners_alive",
            "Runners whose heartbeat is younger than their lease",
            metrics.runners_alive.clone(),
        );
        registry.register(
            "runners_draining",
            "Live runners asked to drain",
            metrics.runners_draining.clone(),
        );
        registry.register(
            "queue_paused",
            "1 for a paused queue, 0 for a queue that runs",
            metrics.queue_paused.clone(),
        );
        registry.register(
            "stale_locks",
            "Tasks locked for longer than the lease by a runner that is gone (as bgtasks doctor counts them)",
            metrics.stale_locks.clone(),
        );
        registry.register(
            "database_readable",
            "1 when this scrape read the database gauges; 0 when the database could not be read",
            metrics.database_readable.clone(),
        );
        // Every step and kind from zero, so the first error is an increase.
        for operation in OPERATIONS {
            for kind in crate::store::DbErrorKind::ALL {
                drop(metrics.database_errors.get_or_create(&ErrorLabels {
                    operation: operation.to_owned(),
                    kind: kind.as_str().to_owned(),
                }));
            }
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The labels of `task`: its name if the registry has it.
    fn labels(&self, task: &task::Model) -> TaskLabels {
        TaskLabels {
            task: self.task_label(&task.task_name),
            queue: task.queue.clone().unwrap_or_default(),
        }
    }

    fn task_label(&self, name: &str) -> String {
        if self.tasks.handler(name).is_some() {
            name.to_owned()
        } else {
            UNREGISTERED.to_owned()
        }
    }

    /// A claimed task starts: counts it and its pickup latency; its body
    /// is in flight until [`Metrics::executed`] or [`Metrics::not_run`].
    pub(crate) fn started(&self, task: &task::Model, now: DateTime<Utc>) {
        let labels = self.labels(task);
        self.in_flight.inc();
        let claimed = task.locked_at.unwrap_or(now);
        let latency = (claimed - task.run_at).to_std().unwrap_or_default();
        self.pickup
            .get_or_create(&QueueLabels {
                queue: labels.queue.clone(),
            })
            .observe(latency.as_secs_f64());
        self.started.get_or_create(&labels).inc();
    }

    /// A task body ran for `elapsed`.
    pub(crate) fn executed(&self, task: &task::Model, elapsed: Duration) {
        self.in_flight.dec();
        self.execution
            .get_or_create(&self.labels(task))
            .observe(elapsed.as_secs_f64());
    }

    /// A started task ended before its body ran (no handler, or cancelled
    /// while handed back).
    pub(crate) fn not_run(&self) {
        self.in_flight.dec();
    }

    pub(crate) fn succeeded(&self, task: &task::Model) {
        self.succeeded.get_or_create(&self.labels(task)).inc();
    }

    pub(crate) fn retried(&self, task: &task::Model) {
        self.retried.get_or_create(&self.labels(task)).inc();
    }

    pub(crate) fn failed(&self, task: &task::Model) {
        self.failed.get_or_create(&self.labels(task)).inc();
    }

    pub(crate) fn cancelled(&self, task: &task::Model) {
        self.cancelled.get_or_create(&self.labels(task)).inc();
    }

    pub(crate) fn snoozed(&self, task: &task::Model) {
        self.snoozed.get_or_create(&self.labels(task)).inc();
    }

    /// A claim took `tasks` tasks in `took`.
    pub(crate) fn claimed(&self, tasks: usize, took: Duration) {
        self.claim_batch.observe(tasks as f64);
        self.claim_seconds.observe(took.as_secs_f64());
    }

    /// An outcome write recorded `outcomes` outcomes in `took`.
    pub(crate) fn outcomes_written(&self, outcomes: usize, took: Duration) {
        self.outcome_batch.observe(outcomes as f64);
        self.outcome_seconds.observe(took.as_secs_f64());
    }

    /// A runner step (`claim`, `outcome`, `heartbeat`, `cron`) failed.
    pub(crate) fn database_error(&self, operation: &'static str, err: &crate::Error) {
        self.database_errors
            .get_or_create(&ErrorLabels {
                operation: operation.to_owned(),
                kind: crate::store::classify(err).as_str().to_owned(),
            })
            .inc();
    }

    /// A cron schedule enqueued a task named `name`.
    pub(crate) fn cron_fired(&self, name: &str) {
        self.cron_fired
            .get_or_create(&CronLabels {
                task: self.task_label(name),
            })
            .inc();
    }

    /// Creates, at zero, the outcome counters of every registered task in
    /// each of `queues` (`None`: the default queue) that do not exist yet,
    /// so that a counter's first increase is seen: Prometheus' `rate` and
    /// `increase` count nothing before a series' first sample, and a task
    /// that ran between two scrapes would otherwise be missed. Skipped
    /// beyond [`MAX_INITIALIZED`] series per counter.
    fn initialize(&self, queues: &[Option<String>]) {
        let names = self.tasks.names();
        if names.len().saturating_mul(queues.len()) > MAX_INITIALIZED {
            return;
        }
        for name in &names {
            drop(
                self.cron_fired
                    .get_or_create(&CronLabels { task: name.clone() }),
            );
            for queue in queues {
                let labels = TaskLabels {
                    task: name.clone(),
                    queue: queue.clone().unwrap_or_default(),
                };
                for family in [
                    &self.started,
                    &self.succeeded,
                    &self.retried,
                    &self.failed,
                    &self.cancelled,
                    &self.snoozed,
                ] {
                    drop(family.get_or_create(&labels));
                }
            }
        }
    }

    /// How many tasks this process's runner runs at once (0: none runs).
    pub(crate) fn set_slots(&self, slots: usize) {
        self.slots.set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    /// Reads the database gauges at `now`.
    async fn read_database<C: ConnectionTrait>(
        &self,
        conn: &C,
        lease: Duration,
        now: DateTime<Utc>,
        runner_queue: Option<&str>,
    ) -> Result<()> {
        let overview = inspect::overview(conn, now).await?;
        if self.slots.get() > 0 {
            let queues = match runner_queue {
                Some(only) => vec![Some(only.to_owned())],
                None => std::iter::once(None).chain(overview.queues()).collect(),
            };
            self.initialize(&queues);
        }
        let runners = crate::admin::runners(conn, lease, now).await?;
        let paused = crate::controls::paused(conn).await?;
        let stale_before = chrono::TimeDelta::from_std(lease)
            .ok()
            .and_then(|lease| now.checked_sub_signed(lease));
        let stale = match stale_before {
            Some(cutoff) => {
                let alive = runners
                    .iter()
                    .filter(|r| r.alive)
                    .map(|r| r.runner.runner_id.clone())
                    .collect();
                crate::doctor::stale_lock_owners(conn, &alive, cutoff)
                    .await?
                    .iter()
                    .map(|(_, count)| count)
                    .sum()
            }
            None => 0,
        };
        self.depth.clear();
        // Every state of every queue seen, zero included, so a drained
        // queue reads 0 rather than disappearing.
        let mut queues = overview.queues();
        if !queues.contains(&None) {
            queues.insert(0, None);
        }
        for queue in queues {
            for state in [
                State::Pending,
                State::Scheduled,
                State::Running,
                State::Failed,
                State::SetAside,
            ] {
                let count = overview
                    .counts
                    .iter()
                    .filter(|c| c.queue == queue && c.state == state)
                    .map(|c| c.count)
                    .sum();
                self.depth
                    .get_or_create(&DepthLabels {
                        queue: queue.clone().unwrap_or_default(),
                        state: state.as_str().to_owned(),
                    })
                    .set(count);
            }
        }
        self.oldest_due.set(
            overview
                .oldest_due_age()
                .map_or(0.0, |age| age.as_seconds_f64()),
        );
        self.runners_alive
            .set(runners.iter().filter(|r| r.alive).count() as i64);
        self.runners_draining.set(
            runners
                .iter()
                .filter(|r| r.alive && r.runner.drain_requested_at.is_some())
                .count() as i64,
        );
        self.queue_paused.clear();
        for queue in std::iter::once(None).chain(overview.queues()) {
            self.queue_paused
                .get_or_create(&QueueLabels {
                    queue: queue.unwrap_or_default(),
                })
                .set(0);
        }
        for pause in paused {
            self.queue_paused
                .get_or_create(&QueueLabels {
                    queue: pause.queue.unwrap_or_default(),
                })
                .set(1);
        }
        self.stale_locks.set(stale);
        Ok(())
    }

    /// Reads the database gauges at `now` and encodes every metric. When
    /// the database cannot be read, the process's own metrics are still
    /// served (they matter most then), the database gauges are left out,
    /// and `background_tasks_database_readable` is 0.
    async fn render<C: ConnectionTrait>(
        &self,
        conn: &C,
        lease: Duration,
        now: DateTime<Utc>,
        runner_queue: Option<&str>,
    ) -> Result<String> {
        let _one_at_a_time = self.scrape.lock().await;
        let read = self.read_database(conn, lease, now, runner_queue).await;
        self.database_readable.set(i64::from(read.is_ok()));
        if let Err(err) = read {
            tracing::warn!(
                "{}",
                crate::store::failure(
                    "Could not read the metrics' database gauges; serving this process's own",
                    &err
                )
            );
            self.depth.clear();
            self.queue_paused.clear();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|_| crate::Error::invalid("metrics", "encoding the metrics failed"))?;
        Ok(text)
    }
}

/// Every metric of `queue` as OpenMetrics text: this process's counters
/// and histograms, and the database gauges read now. Serve it with the
/// content type [`CONTENT_TYPE`] (the dashboard's `/metrics` does).
pub async fn render(queue: &crate::Queue) -> Result<String> {
    let metrics = queue.metrics();
    metrics
        .claimed
        .set(i64::try_from(queue.running_ids().len()).unwrap_or(i64::MAX));
    metrics.draining.set(i64::from(queue.controls().draining()));
    metrics
        .render(
            queue.db(),
            queue.config().lease(),
            queue.config().clock().now(),
            queue.config().queue(),
        )
        .await
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, queue: Option<&str>) -> task::Model {
        let now = Utc::now();
        task::Model {
            id: 1,
            task_name: name.into(),
            task_params: "[[], {}]".into(),
            task_hash: String::new(),
            verbose_name: None,
            priority: 0,
            run_at: now - chrono::TimeDelta::milliseconds(5),
            repeat: 0,
            repeat_until: None,
            queue: queue.map(str::to_owned),
            attempts: 0,
            failed_at: None,
            last_error: String::new(),
            locked_by: Some("me".into()),
            locked_at: Some(now),
            creator_content_type_id: None,
            creator_object_id: None,
            unique_key: None,
            policy: None,
            cancel_requested_at: None,
            trace_context: None,
            limit_key: None,
        }
    }

    struct SendMail;

    impl crate::Task for SendMail {
        type Params = ();
        type Output = ();
        fn name() -> &'static str {
            "send_mail"
        }
        async fn run(&self, (): (), _: crate::TaskContext) -> Result<(), crate::TaskError> {
            Ok(())
        }
    }

    #[test]
    fn counters_and_histograms_encode_with_their_labels() {
        let registry = crate::Registry::new();
        registry.register(SendMail);
        let metrics = Metrics::new(registry);
        let mail = task("send_mail", Some("mail"));
        metrics.started(&mail, Utc::now());
        metrics.executed(&mail, Duration::from_millis(3));
        metrics.succeeded(&mail);
        metrics.retried(&task("charge", None));
        metrics.claimed(3, Duration::from_millis(2));
        metrics.cron_fired("send_mail");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(
            text.contains("background_tasks_started_total{task=\"send_mail\",queue=\"mail\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("background_tasks_retried_total{task=\"(unregistered)\",queue=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("background_tasks_claim_batch_size_bucket{le=\"4.0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("background_tasks_cron_fired_total{task=\"send_mail\"} 1"),
            "{text}"
        );
        // Started, then executed: nothing in flight.
        assert!(text.contains("background_tasks_in_flight 0"), "{text}");
        assert!(
            text.contains(
                "background_tasks_execution_seconds_count{task=\"send_mail\",queue=\"mail\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "background_tasks_pickup_latency_seconds_bucket{le=\"0.016\",queue=\"mail\"} 1"
            ),
            "{text}"
        );
    }
}
