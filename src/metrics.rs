//! Prometheus metrics, in the OpenMetrics text format
//! ([prometheus-client](https://docs.rs/prometheus-client)).
//!
//! Two kinds:
//! - **Counted by this process's runner** as tasks run: tasks started,
//!   succeeded, retried and failed (per task name and queue), execution
//!   time and pickup latency histograms. They start at zero with the
//!   process, as Prometheus expects of counters; scrape every runner
//!   process for the whole picture.
//! - **Read from the database at each scrape**: tasks per queue and state,
//!   the age of the oldest due task, and the runners alive. Every process
//!   that serves metrics reports the same values for these, so aggregate
//!   them with `max`, not `sum`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `background_tasks_started_total` | counter | `task`, `queue` |
//! | `background_tasks_succeeded_total` | counter | `task`, `queue` |
//! | `background_tasks_retried_total` | counter | `task`, `queue` |
//! | `background_tasks_failed_total` | counter | `task`, `queue` |
//! | `background_tasks_execution_seconds` | histogram | `task`, `queue` |
//! | `background_tasks_pickup_latency_seconds` | histogram | `queue` |
//! | `background_tasks_tasks` | gauge | `queue`, `state` |
//! | `background_tasks_oldest_due_age_seconds` | gauge | |
//! | `background_tasks_runners_alive` | gauge | |
//!
//! `queue` is empty for the default (unnamed) queue. Pickup latency is the
//! time from a task's `run_at` (when it became due) to its claim.

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

/// The queue's metrics. One per [`crate::Queue`] (shared by its clones).
pub(crate) struct Metrics {
    registry: Registry,
    started: Family<TaskLabels, Counter>,
    succeeded: Family<TaskLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    failed: Family<TaskLabels, Counter>,
    execution: HistogramFamily<TaskLabels>,
    pickup: HistogramFamily<QueueLabels>,
    depth: Family<DepthLabels, Gauge>,
    oldest_due: Gauge<f64, std::sync::atomic::AtomicU64>,
    runners_alive: Gauge,
    /// One scrape at a time: each sets the database gauges, then encodes.
    scrape: tokio::sync::Mutex<()>,
}

fn labels(task: &task::Model) -> TaskLabels {
    TaskLabels {
        task: task.task_name.clone(),
        queue: task.queue.clone().unwrap_or_default(),
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("background_tasks");
        let metrics = Metrics {
            started: Family::default(),
            succeeded: Family::default(),
            retried: Family::default(),
            failed: Family::default(),
            execution: Family::new_with_constructor(execution_histogram),
            pickup: Family::new_with_constructor(pickup_histogram),
            depth: Family::default(),
            oldest_due: Gauge::default(),
            runners_alive: Gauge::default(),
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
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A claimed task starts: counts it and its pickup latency.
    pub(crate) fn started(&self, task: &task::Model, now: DateTime<Utc>) {
        let labels = labels(task);
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
        self.execution
            .get_or_create(&labels(task))
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn succeeded(&self, task: &task::Model) {
        self.succeeded.get_or_create(&labels(task)).inc();
    }

    pub(crate) fn retried(&self, task: &task::Model) {
        self.retried.get_or_create(&labels(task)).inc();
    }

    pub(crate) fn failed(&self, task: &task::Model) {
        self.failed.get_or_create(&labels(task)).inc();
    }

    /// Reads the database gauges at `now` and encodes every metric.
    pub(crate) async fn render<C: ConnectionTrait>(
        &self,
        conn: &C,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let _one_at_a_time = self.scrape.lock().await;
        let overview = inspect::overview(conn, now).await?;
        let runners = crate::admin::runners(conn, lease, now).await?;
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
    queue
        .metrics()
        .render(
            queue.db(),
            queue.config().lease(),
            queue.config().clock().now(),
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
        }
    }

    #[test]
    fn counters_and_histograms_encode_with_their_labels() {
        let metrics = Metrics::new();
        let mail = task("send_mail", Some("mail"));
        metrics.started(&mail, Utc::now());
        metrics.executed(&mail, Duration::from_millis(3));
        metrics.succeeded(&mail);
        metrics.retried(&task("charge", None));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(
            text.contains("background_tasks_started_total{task=\"send_mail\",queue=\"mail\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("background_tasks_retried_total{task=\"charge\",queue=\"\"} 1"),
            "{text}"
        );
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
