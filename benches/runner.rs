//! Running tasks, on SQLite by default and on PostgreSQL / MySQL when
//! `BGTASKS_BENCH_POSTGRES_URL` / `BGTASKS_BENCH_MYSQL_URL` are set (each
//! benchmark migrates that database and empties the queue's tables first):
//!
//! - `claim_complete`: `Queue::run_next_task` on a queue already holding
//!   the tasks: claim, run a no-op body and record the outcome, one task
//!   per call, inline (no runner). Time per task.
//! - `throughput`: a runner (actor system, 2 executors × 64 tasks each)
//!   draining a bulk-enqueued batch of no-op tasks, from the enqueue's
//!   commit to the last `Finished` event. The runner is started and shut
//!   down once per sample, outside the measured time; so is the enqueue.
//! - `pickup_latency`: an idle runner; from the call that enqueues one
//!   task to that task's `Started` event (the enqueue's commit, the wake-up,
//!   the claim and the hand-over to an executor thread).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use background_tasks::{Config, Event, Queue, Registry, Runner, TaskSpec};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use tokio::sync::Notify;

mod common;
use common::{Noop, backends, open};

/// Tasks per `throughput` iteration.
const BATCH: u64 = 2_000;
/// Grace given to the runner's shutdown at the end of a sample (every task
/// has finished by then, so it returns at once).
const GRACE: Duration = Duration::from_secs(10);
/// Untimed pause after each `pickup_latency` task, so the runner's poll
/// that follows a finished task is over and the next enqueue meets an idle
/// runner.
const SETTLE: Duration = Duration::from_millis(5);

fn registry() -> Registry {
    let registry = Registry::new();
    registry.register(Noop);
    registry
}

fn specs(count: u64) -> Vec<TaskSpec> {
    (0..count).map(|i| TaskSpec::new::<Noop>(&(i,))).collect()
}

fn runner_config() -> Config {
    Config::builder()
        .run_async(true)
        .async_threads(2)
        .tasks_per_thread(64)
        .build()
        .expect("runner config")
}

/// Counts the events `pick` selects and wakes one waiter once `target` of
/// them were seen. The subscriber only bumps an atomic (and, at the target,
/// signals a `Notify`), so it stays quick on the runner's threads.
struct Counter {
    seen: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
}

impl Counter {
    fn subscribe(queue: &Queue, pick: fn(&Event) -> bool) -> Arc<Self> {
        let counter = Arc::new(Counter {
            seen: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            reached: Notify::new(),
        });
        let shared = Arc::clone(&counter);
        queue.events().subscribe(move |event| {
            if pick(event) {
                let seen = shared.seen.fetch_add(1, Ordering::AcqRel) + 1;
                if seen == shared.target.load(Ordering::Acquire) {
                    shared.reached.notify_one();
                }
            }
        });
        counter
    }

    /// Starts counting from zero towards `target` (call while no event of
    /// the kind can fire).
    fn arm(&self, target: u64) {
        self.target.store(usize::MAX, Ordering::Release);
        self.seen.store(0, Ordering::Release);
        self.target
            .store(usize::try_from(target).expect("target"), Ordering::Release);
    }

    /// Returns once the target is reached. `notify_one` keeps a permit when
    /// nobody waits yet, so no wake-up is lost; a stale permit only costs
    /// one more look at the count.
    async fn wait(&self) {
        while self.seen.load(Ordering::Acquire) < self.target.load(Ordering::Acquire) {
            self.reached.notified().await;
        }
    }
}

fn claim_complete(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group("claim_complete");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    for (backend, url) in backends(&dir) {
        let queue = rt
            .block_on(async { Queue::with_parts(open(&url).await, registry(), Config::default()) });
        group.bench_function(BenchmarkId::from_parameter(backend), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let queue = queue.clone();
                async move {
                    queue
                        .enqueue_many(specs(iters))
                        .await
                        .expect("bulk enqueue");
                    let start = Instant::now();
                    for _ in 0..iters {
                        assert!(queue.run_next_task().await, "no due task was run");
                    }
                    start.elapsed()
                }
            })
        });
        rt.block_on(queue.db().close_by_ref()).ok();
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group("throughput");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(BATCH));
    for (backend, url) in backends(&dir) {
        let system = actix_rt::System::new();
        let queue = system
            .block_on(async { Queue::with_parts(open(&url).await, registry(), runner_config()) });
        let finished = Counter::subscribe(&queue, |e| matches!(e, Event::Finished { .. }));
        group.bench_function(BenchmarkId::from_parameter(backend), |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let runner = Runner::start(queue.clone()).unwrap();
                    let mut drained = Duration::ZERO;
                    for _ in 0..iters {
                        finished.arm(BATCH);
                        queue
                            .enqueue_many(specs(BATCH))
                            .await
                            .expect("bulk enqueue");
                        // The poller runs on this thread: it cannot start
                        // before this future awaits, so the clock starts first.
                        let start = Instant::now();
                        finished.wait().await;
                        drained += start.elapsed();
                    }
                    runner.shutdown(GRACE).await;
                    drained
                })
            })
        });
        system.block_on(queue.db().close_by_ref()).ok();
    }
    group.finish();
}

fn pickup_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group("pickup_latency");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (backend, url) in backends(&dir) {
        let system = actix_rt::System::new();
        let queue = system
            .block_on(async { Queue::with_parts(open(&url).await, registry(), runner_config()) });
        let started = Counter::subscribe(&queue, |e| matches!(e, Event::Started { .. }));
        let finished = Counter::subscribe(&queue, |e| matches!(e, Event::Finished { .. }));
        let mut n = 0u64;
        group.bench_function(BenchmarkId::from_parameter(backend), |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let runner = Runner::start(queue.clone()).unwrap();
                    // Let its first poll (an empty queue) finish.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let mut latency = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        started.arm(1);
                        finished.arm(1);
                        let start = Instant::now();
                        queue.enqueue::<Noop>(&(n,)).await.expect("enqueue");
                        started.wait().await;
                        latency += start.elapsed();
                        finished.wait().await;
                        tokio::time::sleep(SETTLE).await;
                    }
                    runner.shutdown(GRACE).await;
                    latency
                })
            })
        });
        system.block_on(queue.db().close_by_ref()).ok();
    }
    group.finish();
}

criterion_group!(benches, claim_complete, throughput, pickup_latency);
criterion_main!(benches);
