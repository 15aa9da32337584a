//! Enqueue throughput: one task per call, and bulk enqueue in chunks, on
//! SQLite by default and on PostgreSQL / MySQL when
//! `BGTASKS_BENCH_POSTGRES_URL` / `BGTASKS_BENCH_MYSQL_URL` are set (each
//! run migrates that database and empties the queue's tables first).

use std::time::Duration;

use background_tasks::{Queue, TaskSpec};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{Noop, backends, open};

fn enqueue(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group("enqueue");
    group.measurement_time(Duration::from_secs(5));
    for (backend, url) in backends(&dir) {
        let queue = rt.block_on(async { Queue::new(open(&url).await) });
        let mut n = 0u64;
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("single", backend), |b| {
            b.to_async(&rt).iter(|| {
                n += 1;
                let queue = queue.clone();
                async move { queue.enqueue::<Noop>(&(n,)).await.expect("enqueue") }
            })
        });
        for size in [100u64, 1_000] {
            group.throughput(Throughput::Elements(size));
            group.bench_function(BenchmarkId::new(format!("bulk_{size}"), backend), |b| {
                b.to_async(&rt).iter(|| {
                    let queue = queue.clone();
                    let specs: Vec<TaskSpec> =
                        (0..size).map(|i| TaskSpec::new::<Noop>(&(i,))).collect();
                    async move { queue.enqueue_many(specs).await.expect("bulk enqueue") }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, enqueue);
criterion_main!(benches);
