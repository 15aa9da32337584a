//! A runner that runs one task at a time (the default) keeps the database
//! busy: it claims tasks ahead of its free slot (the prefetch) and frees
//! the slot when the body returns, while outcomes are written by group
//! commit behind it. What must still hold: bodies never overlap beyond the
//! runner's concurrency, tasks start in claim order, slow tasks are not
//! held back from other runners, a shutdown hands unstarted tasks back,
//! and `prefetch(0)` keeps the seed's exact rhythm (each outcome written
//! before the next claim).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{
    Config, Queue, Registry, Runner, Task, TaskContext, TaskError, completed_task, task_row,
};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};

use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    a_one_at_a_time_runner_claims_ahead_and_never_overlaps,
    prefetch_zero_records_each_outcome_before_the_next_claim,
    slow_tasks_are_not_held_back_from_other_runners,
    a_shutdown_hands_tasks_claimed_ahead_back,
);

const WAIT: Duration = Duration::from_secs(60);

/// Records which task started when, and how many bodies ran at once.
#[derive(Clone, Default)]
struct Ledger {
    started: Arc<Mutex<Vec<i64>>>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    /// History rows seen by each body as it started (strict mode check).
    history_seen: Arc<Mutex<Vec<u64>>>,
    db: Option<DatabaseConnection>,
}

impl Task for Ledger {
    /// (sequence number, milliseconds to take)
    type Params = (i64, u64);
    type Output = ();
    fn name() -> &'static str {
        "test.ledger"
    }
    async fn run(&self, (n, millis): (i64, u64), _: TaskContext) -> Result<(), TaskError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.started.lock().unwrap().push(n);
        if let Some(db) = &self.db {
            let done = completed_task::Entity::find().count(db).await?;
            self.history_seen.lock().unwrap().push(done);
        }
        if millis > 0 {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

fn queue_of(t: &TestDb, ledger: &Ledger, config: background_tasks::ConfigBuilder) -> Queue {
    let registry = Registry::new();
    registry.register(ledger.clone());
    t.queue(
        registry,
        config.sleep(Duration::from_millis(100)).build().unwrap(),
    )
}

async fn history_count(t: &TestDb) -> u64 {
    completed_task::Entity::find().count(&t.db).await.unwrap()
}

async fn a_one_at_a_time_runner_claims_ahead_and_never_overlaps(t: TestDb) -> TestDb {
    let ledger = Ledger::default();
    let queue = queue_of(&t, &ledger, Config::builder());
    assert_eq!(queue.config().concurrency(), 1);
    assert!(queue.config().prefetch() > 0, "prefetch is on by default");
    // Three priorities, enqueued out of order: claim order is priority
    // (high first), then run_at, then id.
    let mut expected = Vec::new();
    let mut specs = Vec::new();
    for n in 0..300_i64 {
        let priority = [0, 5, 10][(n % 3) as usize];
        specs.push((n, priority));
    }
    for (n, priority) in &specs {
        queue
            .enqueue::<Ledger>(&(*n, 0))
            .priority(*priority)
            .schedule(chrono::Utc::now() - chrono::TimeDelta::seconds(1))
            .await
            .unwrap();
    }
    for priority in [10, 5, 0] {
        expected.extend(
            specs
                .iter()
                .filter(|(_, p)| *p == priority)
                .map(|(n, _)| *n),
        );
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("every task to run", WAIT, || async {
        history_count(&t).await == 300
    })
    .await;
    runner.shutdown(Duration::from_secs(10)).await;
    assert_eq!(ledger.most.load(Ordering::SeqCst), 1, "bodies overlapped");
    let started = ledger.started.lock().unwrap().clone();
    assert_eq!(started.len(), 300, "each task ran once");
    // Rows enqueued one by one have increasing run_at within a priority,
    // so claim order is exactly priority, then enqueue order.
    assert_eq!(started, expected, "tasks started in claim order");
    t
}

async fn prefetch_zero_records_each_outcome_before_the_next_claim(t: TestDb) -> TestDb {
    let ledger = Ledger {
        db: Some(t.db.clone()),
        ..Ledger::default()
    };
    let queue = queue_of(&t, &ledger, Config::builder().prefetch(0));
    for n in 0..20_i64 {
        queue.enqueue::<Ledger>(&(n, 0)).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("every task to run", WAIT, || async {
        history_count(&t).await == 20
    })
    .await;
    runner.shutdown(Duration::from_secs(10)).await;
    let seen = ledger.history_seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        (0..20).collect::<Vec<u64>>(),
        "each body saw every earlier task's history row"
    );
    t
}

/// Tasks that take 150 ms each are not claimed ahead: two runners share
/// them instead of the first one holding them all.
async fn slow_tasks_are_not_held_back_from_other_runners(t: TestDb) -> TestDb {
    let a = Ledger::default();
    let b = Ledger::default();
    let queue_a = queue_of(&t, &a, Config::builder());
    let queue_b = queue_of(&t, &b, Config::builder());
    for n in 0..10_i64 {
        queue_a.enqueue::<Ledger>(&(n, 150)).await.unwrap();
    }
    let runner_a = Runner::start(queue_a.clone()).unwrap();
    let runner_b = Runner::start(queue_b.clone()).unwrap();
    let most_held = Arc::new(AtomicUsize::new(0));
    wait_for("every task to run", WAIT, || async {
        // No runner holds more than the one task it runs plus, before it
        // has measured any, none ahead.
        for queue in [&queue_a, &queue_b] {
            let held = task_row::Entity::find()
                .filter(task_row::Column::LockedBy.eq(queue.runner_id()))
                .count(&t.db)
                .await
                .unwrap();
            most_held.fetch_max(held as usize, Ordering::SeqCst);
        }
        history_count(&t).await == 10
    })
    .await;
    runner_a.shutdown(Duration::from_secs(10)).await;
    runner_b.shutdown(Duration::from_secs(10)).await;
    let ran_a = a.started.lock().unwrap().len();
    let ran_b = b.started.lock().unwrap().len();
    assert_eq!(ran_a + ran_b, 10);
    assert!(ran_a >= 3 && ran_b >= 3, "shared: {ran_a} and {ran_b}");
    let most_held = most_held.load(Ordering::SeqCst);
    assert!(most_held <= 2, "a runner held {most_held} slow tasks");
    t
}

async fn a_shutdown_hands_tasks_claimed_ahead_back(t: TestDb) -> TestDb {
    let ledger = Ledger::default();
    let queue = queue_of(&t, &ledger, Config::builder());
    let specs: Vec<_> = (0..400_i64)
        .map(|n| background_tasks::TaskSpec::new::<Ledger>(&(n, 1)))
        .collect();
    queue.enqueue_many(specs).await.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("some tasks to run", WAIT, || async {
        history_count(&t).await >= 30
    })
    .await;
    runner.shutdown(Duration::from_secs(10)).await;
    let locked = task_row::Entity::find()
        .filter(task_row::Column::LockedBy.is_not_null())
        .count(&t.db)
        .await
        .unwrap();
    assert_eq!(locked, 0, "a stopped runner holds nothing");
    let left = task_row::Entity::find().count(&t.db).await.unwrap();
    let done = history_count(&t).await;
    assert_eq!(left + done, 400, "nothing lost");
    let started = ledger.started.lock().unwrap().clone();
    assert_eq!(
        started.len() as u64,
        done,
        "every started task was recorded"
    );
    let mut unique = started.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), started.len(), "no task ran twice");
    t
}
