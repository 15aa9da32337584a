//! Per-queue concurrency limits (issue 8): one runner's own, and a global
//! one enforced in the claim across every runner, checked by a ledger of
//! the executions' overlaps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use background_tasks::{
    Config, Registry, Runner, Task, TaskContext, TaskError, admin, completed_task,
};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    a_global_limit_is_never_exceeded_by_several_runners,
    a_runner_limit_caps_its_own_queue_only,
    a_rate_limit_is_never_exceeded_in_any_window_by_three_runners,
    bad_rate_limits_are_refused_and_nothing_is_written,
);

/// When each execution of a queue ran: (queue, start, end).
pub(crate) type Ledger = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// Works a little, and writes when it ran into the ledger.
#[derive(Clone, Default)]
struct Ledgered {
    ledger: Ledger,
}

impl Task for Ledgered {
    type Params = (String,);
    type Output = ();
    fn name() -> &'static str {
        "limits.ledgered"
    }
    async fn run(&self, (queue,): (String,), _: TaskContext) -> Result<(), TaskError> {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(40)).await;
        self.ledger
            .lock()
            .unwrap()
            .push((queue, start, Instant::now()));
        Ok(())
    }
}

/// Most executions of `label` (a queue, a key; `None`: of all) that
/// overlapped at any instant.
pub(crate) fn most_at_once(ledger: &Ledger, label: Option<&str>) -> usize {
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for (q, start, end) in ledger.lock().unwrap().iter() {
        if label.is_none_or(|label| label == q) {
            edges.push((*start, 1));
            edges.push((*end, -1));
        }
    }
    // At equal instants, ends before starts.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

async fn enqueue(queue: &background_tasks::Queue, name: &str, count: usize) {
    for _ in 0..count {
        queue
            .enqueue::<Ledgered>(&(name.to_owned(),))
            .queue(name)
            .await
            .unwrap();
    }
}

async fn wait_done(t: &TestDb, count: u64) {
    let db = t.db.clone();
    wait_for("every task to finish", Duration::from_secs(60), || {
        let db = db.clone();
        async move { completed_task::Entity::find().count(&db).await.unwrap() == count }
    })
    .await;
}

fn wide() -> Config {
    Config::builder()
        .run_async(true)
        .async_threads(2)
        .tasks_per_thread(3)
        .build()
        .unwrap()
}

async fn a_global_limit_is_never_exceeded_by_several_runners(t: TestDb) -> TestDb {
    admin::set_queue_limit(&t.db, "scarce", 2).await.unwrap();
    let limits = admin::queue_limits(&t.db).await.unwrap();
    assert_eq!(
        (limits[0].queue.as_str(), limits[0].max_running),
        ("scarce", 2)
    );
    assert!(admin::set_queue_limit(&t.db, "", 2).await.is_err());

    let ledgered = Ledgered::default();
    let mut runners = Vec::new();
    let mut first = None;
    for _ in 0..3 {
        let registry = Registry::new();
        registry.register(ledgered.clone());
        let queue = t.queue(registry, wide());
        first.get_or_insert_with(|| queue.clone());
        runners.push(Runner::start(queue).unwrap());
    }
    let queue = first.unwrap();
    enqueue(&queue, "scarce", 24).await;
    enqueue(&queue, "plenty", 24).await;
    wait_done(&t, 48).await;
    for runner in runners {
        runner.shutdown(Duration::from_secs(5)).await;
    }
    let scarce = most_at_once(&ledgered.ledger, Some("scarce"));
    assert!(
        (1..=2).contains(&scarce),
        "at most 2 of the limited queue at once across 3 runners of 6 slots: {scarce}"
    );
    let plenty = most_at_once(&ledgered.ledger, Some("plenty"));
    assert!(
        plenty > 2,
        "the other queue is not held back: {plenty} at once"
    );
    assert!(admin::remove_queue_limit(&t.db, "scarce").await.unwrap());
    assert!(!admin::remove_queue_limit(&t.db, "scarce").await.unwrap());
    t
}

async fn a_runner_limit_caps_its_own_queue_only(t: TestDb) -> TestDb {
    let ledgered = Ledgered::default();
    let registry = Registry::new();
    registry.register(ledgered.clone());
    let config = Config::builder()
        .run_async(true)
        .async_threads(2)
        .tasks_per_thread(3)
        .queue_limit("scarce", 1)
        .build()
        .unwrap();
    let queue = t.queue(registry, config);
    enqueue(&queue, "scarce", 10).await;
    enqueue(&queue, "plenty", 20).await;
    let runner = Runner::start(queue.clone()).unwrap();
    wait_done(&t, 30).await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(most_at_once(&ledgered.ledger, Some("scarce")), 1);
    let plenty = most_at_once(&ledgered.ledger, Some("plenty"));
    assert!(
        plenty > 1,
        "the other queue uses the free slots: {plenty} at once"
    );
    assert!(
        Config::builder().queue_limit("scarce", 0).build().is_err(),
        "a limit of 0 is refused"
    );
    t
}

/// Most of `starts` (sorted) in any half-open window `[t, t + period)`.
pub(crate) fn most_in_a_window(
    starts: &[chrono::DateTime<chrono::Utc>],
    period: Duration,
) -> usize {
    let period = chrono::TimeDelta::from_std(period).unwrap();
    let mut most = 0;
    for (i, start) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|later| **later < *start + period)
            .count();
        most = most.max(within);
    }
    most
}

async fn a_rate_limit_is_never_exceeded_in_any_window_by_three_runners(t: TestDb) -> TestDb {
    const PERIOD: Duration = Duration::from_millis(400);
    admin::set_rate_limit(&t.db, "metered", 4, PERIOD)
        .await
        .unwrap();
    let ledgered = Ledgered::default();
    let mut runners = Vec::new();
    let mut first = None;
    // Polling every 100 ms: a window that opens is claimed at the next
    // poll (or when a task of the runner ends).
    let config = || {
        Config::builder()
            .run_async(true)
            .async_threads(2)
            .tasks_per_thread(3)
            .sleep(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    for _ in 0..3 {
        let registry = Registry::new();
        registry.register(ledgered.clone());
        let queue = t.queue(registry, config());
        first.get_or_insert_with(|| queue.clone());
        runners.push(Runner::start(queue).unwrap());
    }
    let queue = first.unwrap();
    enqueue(&queue, "metered", 24).await;
    enqueue(&queue, "free", 24).await;
    wait_done(&t, 48).await;
    let limits = admin::rate_limits(&t.db, chrono::Utc::now()).await.unwrap();
    for runner in runners {
        runner.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(
        (
            limits[0].queue.as_str(),
            limits[0].max_starts,
            limits[0].period
        ),
        ("metered", 4, PERIOD)
    );
    assert!(
        (0..=4).contains(&limits[0].started_in_window),
        "{:?}",
        limits[0]
    );

    // The ledger: when each task was claimed (its start), from the history.
    let mut starts: Vec<chrono::DateTime<chrono::Utc>> = completed_task::Entity::find()
        .filter(completed_task::Column::Queue.eq("metered"))
        .all(&t.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.locked_at.expect("the history keeps the claim time"))
        .collect();
    assert_eq!(starts.len(), 24);
    starts.sort_unstable();
    let most = most_in_a_window(&starts, PERIOD);
    assert!(
        most <= 4,
        "at most 4 starts in any {PERIOD:?} across 3 runners: {most} in one window ({starts:?})"
    );
    assert!(
        starts[23] - starts[0] >= chrono::TimeDelta::from_std(PERIOD * 5).unwrap(),
        "24 starts at 4 a window span at least 5 periods: {:?}",
        starts[23] - starts[0]
    );
    // The other queue was not held back.
    let free = completed_task::Entity::find()
        .filter(completed_task::Column::Queue.eq("free"))
        .all(&t.db)
        .await
        .unwrap();
    let mut free: Vec<_> = free.into_iter().filter_map(|row| row.locked_at).collect();
    free.sort_unstable();
    assert!(
        most_in_a_window(&free, PERIOD) > 4,
        "the queue without a limit ran more than 4 a window"
    );
    assert!(admin::remove_rate_limit(&t.db, "metered").await.unwrap());
    assert!(!admin::remove_rate_limit(&t.db, "metered").await.unwrap());
    t
}

async fn bad_rate_limits_are_refused_and_nothing_is_written(t: TestDb) -> TestDb {
    for (max, period, says) in [
        (0, Duration::from_secs(1), "rate limit of 0"),
        (5, Duration::ZERO, "period"),
        (5, Duration::from_micros(10), "period"),
        (5, admin::MAX_RATE_PERIOD * 2, "period"),
    ] {
        let err = admin::set_rate_limit(&t.db, "q", max, period)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{max} per {period:?}: {err}");
    }
    let err = admin::set_rate_limit(&t.db, "", 5, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, background_tasks::Error::InvalidOption { .. }),
        "{err}"
    );
    assert!(
        admin::rate_limits(&t.db, chrono::Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );
    t
}
