//! The runner's hot paths one at a time, so a change that slows one is
//! seen: the claim of a batch, the outcome batch (delete, history rows),
//! and for reference the single and the bulk enqueue (`benches/enqueue.rs`
//! measures those at more sizes). SQLite by default, PostgreSQL / MySQL
//! with `BGTASKS_BENCH_POSTGRES_URL` / `BGTASKS_BENCH_MYSQL_URL` (each run
//! migrates that database and empties the queue's tables first).
//!
//! ```text
//! cargo bench --bench paths
//! ```

use std::time::{Duration, Instant};

use background_tasks::{Queue, TaskSpec, bench};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{Noop, backends, open};

/// Tasks per claim and per outcome batch: what a runner with 2 executors
/// of 64 slots takes at once.
const BATCH: u64 = 128;
const RUNNER: &str = "bench-host:1:paths";

fn specs(count: u64) -> Vec<TaskSpec> {
    (0..count).map(|i| TaskSpec::new::<Noop>(&(i,))).collect()
}

fn paths(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let names = vec!["noop".to_owned()];
    let mut group = c.benchmark_group("paths");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (backend, url) in backends(&dir) {
        let queue = rt.block_on(async { Queue::new(open(&url).await) });
        group.throughput(Throughput::Elements(BATCH));
        // The claim alone: rows enqueued and, after the clock stops,
        // completed, outside the measurement.
        group.bench_function(BenchmarkId::new(format!("claim_{BATCH}"), backend), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (queue, names) = (queue.clone(), names.clone());
                async move {
                    queue
                        .enqueue_many(specs(iters * BATCH))
                        .await
                        .expect("fill");
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let tasks = bench::claim(queue.db(), RUNNER, &names, BATCH as usize)
                            .await
                            .expect("claim");
                        elapsed += start.elapsed();
                        assert_eq!(tasks.len() as u64, BATCH, "a full batch was due");
                        bench::complete(queue.db(), RUNNER, &tasks)
                            .await
                            .expect("complete");
                    }
                    elapsed
                }
            })
        });
        // The outcome batch alone: claimed before the clock starts.
        group.bench_function(
            BenchmarkId::new(format!("outcomes_{BATCH}"), backend),
            |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (queue, names) = (queue.clone(), names.clone());
                    async move {
                        queue
                            .enqueue_many(specs(iters * BATCH))
                            .await
                            .expect("fill");
                        let mut elapsed = Duration::ZERO;
                        for _ in 0..iters {
                            let tasks = bench::claim(queue.db(), RUNNER, &names, BATCH as usize)
                                .await
                                .expect("claim");
                            let start = Instant::now();
                            let written = bench::complete(queue.db(), RUNNER, &tasks)
                                .await
                                .expect("complete");
                            elapsed += start.elapsed();
                            assert_eq!(written as u64, BATCH);
                        }
                        elapsed
                    }
                })
            },
        );
        group.bench_function(
            BenchmarkId::new(format!("bulk_enqueue_{BATCH}"), backend),
            |b| {
                b.to_async(&rt).iter(|| {
                    let queue = queue.clone();
                    async move {
                        queue
                            .enqueue_many(specs(BATCH))
                            .await
                            .expect("bulk enqueue")
                    }
                })
            },
        );
        group.throughput(Throughput::Elements(1));
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("single_enqueue", backend), |b| {
            b.to_async(&rt).iter(|| {
                n += 1;
                let queue = queue.clone();
                async move { queue.enqueue::<Noop>(&(n,)).await.expect("enqueue") }
            })
        });
        rt.block_on(queue.db().close_by_ref()).ok();
    }
    group.finish();
}

criterion_group!(benches, paths);
criterion_main!(benches);
