//! Task features beyond the seed (issue 8): results stored with the
//! history row, and snoozing without using an attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{
    Backoff, Config, Enqueued, Event, KeepHistory, Queue, Registry, Runner, Task, TaskContext,
    TaskDefaults, TaskError, TaskSpec, admin, completed_task, db, inspect, task_row,
};
use chrono::{TimeDelta, Utc};
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};

use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    results_are_stored_with_the_history_row,
    a_runner_stores_results_too,
    a_snoozed_task_runs_again_without_using_an_attempt,
    a_repeat_chain_can_survive_a_permanent_failure,
    attempts_and_backoff_are_set_per_task,
    a_task_keeps_only_the_history_it_asks_for,
    the_time_limit_is_set_per_task,
    a_unique_task_has_one_live_row,
    concurrent_enqueues_of_a_unique_task_insert_one_row,
    policies_are_overridden_per_enqueue,
);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sum {
    sum: i64,
    note: String,
}

/// Returns a value worth keeping.
struct Adder;

impl Task for Adder {
    type Params = (i64, i64);
    type Output = Sum;
    fn name() -> &'static str {
        "features.add"
    }
    async fn run(&self, (a, b): (i64, i64), _: TaskContext) -> Result<Sum, TaskError> {
        Ok(Sum {
            sum: a + b,
            note: "\u{e9}t\u{e9}".into(),
        })
    }
}

/// Returns nothing.
struct Quiet;

impl Task for Quiet {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "features.quiet"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

async fn results_are_stored_with_the_history_row(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Adder).register(Quiet);
    let queue = t.queue(registry, Config::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    queue.events().subscribe(move |event| {
        if let Event::Successful { completed, .. } = event {
            seen.lock().unwrap().push(completed.clone());
        }
    });
    queue.enqueue::<Adder>(&(2, 3)).await.unwrap();
    queue.enqueue::<Quiet>(&()).await.unwrap();
    while queue.run_next_task().await {}

    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    let added = history
        .iter()
        .find(|r| r.task_name == "features.add")
        .unwrap();
    let stored: Sum = serde_json::from_str(added.result.as_deref().unwrap()).unwrap();
    assert_eq!(
        stored,
        Sum {
            sum: 5,
            note: "\u{e9}t\u{e9}".into()
        }
    );
    let quiet = history
        .iter()
        .find(|r| r.task_name == "features.quiet")
        .unwrap();
    assert_eq!(quiet.result, None, "() stores nothing");
    let carried = events.lock().unwrap().contains(added);
    assert!(carried, "the event carries the stored row with its result");
    // Readable through the inspection API (and so the JSON API and CLI).
    let read = inspect::completed(&t.db, added.id).await.unwrap().unwrap();
    assert_eq!(read.result, added.result);
    t
}

async fn a_runner_stores_results_too(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Adder);
    let queue = t.queue(registry, Config::builder().run_async(true).build().unwrap());
    for i in 0..5 {
        queue.enqueue::<Adder>(&(i, 10)).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    let db = t.db.clone();
    wait_for("five results", Duration::from_secs(20), || {
        let db = db.clone();
        async move { completed_task::Entity::find().all(&db).await.unwrap().len() == 5 }
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let mut sums: Vec<i64> = completed_task::Entity::find()
        .all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_str::<Sum>(r.result.as_deref().unwrap())
                .unwrap()
                .sum
        })
        .collect();
    sums.sort_unstable();
    assert_eq!(sums, vec![10, 11, 12, 13, 14]);
    t
}

/// Snoozes for an hour on its first run, succeeds on the next.
#[derive(Clone, Default)]
struct Patient {
    runs: Arc<Mutex<u32>>,
}

impl Task for Patient {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "features.patient"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        let mut runs = self.runs.lock().unwrap();
        *runs += 1;
        if *runs == 1 {
            return Err(TaskError::snooze(Duration::from_secs(3_600)));
        }
        Ok(())
    }
}

async fn a_snoozed_task_runs_again_without_using_an_attempt(t: TestDb) -> TestDb {
    let registry = Registry::new();
    let patient = Patient::default();
    registry.register(patient.clone());
    let queue = t.queue(registry, Config::default());
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&order);
    queue.events().subscribe(move |event| {
        let name = match event {
            Event::Started { .. } => "started",
            Event::Snoozed { .. } => "snoozed",
            Event::Error { .. } => "error",
            Event::Successful { .. } => "successful",
            Event::Finished { .. } => "finished",
            Event::Created { .. } => "created",
            _ => "other",
        };
        seen.lock().unwrap().push(name);
    });
    let task = queue
        .enqueue::<Patient>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let before = Utc::now();
    assert!(queue.run_next_task().await);
    let row = task_row::Entity::find_by_id(task.id)
        .one(&t.db)
        .await
        .unwrap()
        .expect("a snoozed task stays in the queue");
    assert_eq!(row.attempts, 0, "a snooze uses no attempt");
    assert_eq!(row.last_error, "", "and is not an error");
    assert!(row.locked_by.is_none() && row.locked_at.is_none());
    let due_in = row.run_at - before;
    assert!(
        due_in > TimeDelta::minutes(59) && due_in < TimeDelta::minutes(61),
        "{due_in}"
    );
    assert!(!queue.run_next_task().await, "not due for an hour");
    assert_eq!(
        *order.lock().unwrap(),
        vec!["created", "started", "snoozed", "finished"]
    );

    // Made due now (an operator's "run now"), it runs and succeeds.
    admin::run_now(&t.db, &[task.id], Utc::now()).await.unwrap();
    assert!(queue.run_next_task().await);
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].attempts, 1, "only the real run counts");
    assert!(history[0].failed_at.is_none());
    t
}

/// A nightly report that fails on one night; the next night still runs.
struct Nightly;

impl Task for Nightly {
    type Params = (i64,);
    type Output = ();
    fn name() -> &'static str {
        "features.nightly"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().repeat_after_failure(true)
    }
    async fn run(&self, _: (i64,), _: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::invalid("the source was empty tonight"))
    }
}

/// The same failure without the option: the seed's behaviour, the chain ends.
struct Fragile;

impl Task for Fragile {
    type Params = (i64,);
    type Output = ();
    fn name() -> &'static str {
        "features.fragile"
    }
    async fn run(&self, _: (i64,), _: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::invalid("the source was empty tonight"))
    }
}

async fn a_repeat_chain_can_survive_a_permanent_failure(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Nightly).register(Fragile);
    let queue = t.queue(registry, Config::default());
    let nightly = queue
        .enqueue::<Nightly>(&(1,))
        .repeat(86_400)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    queue
        .enqueue::<Fragile>(&(1,))
        .repeat(86_400)
        .await
        .unwrap();
    while queue.run_next_task().await {}

    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|row| row.failed_at.is_some()));
    let waiting = task_row::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(
        waiting.len(),
        1,
        "only the chain that asked goes on: {waiting:?}"
    );
    let next = &waiting[0];
    assert_eq!(next.task_name, "features.nightly");
    assert_eq!(next.task_params, nightly.task_params);
    assert_eq!(
        (next.attempts, next.last_error.as_str()),
        (0, ""),
        "a fresh occurrence"
    );
    assert_eq!(next.run_at, nightly.run_at + TimeDelta::days(1));
    t
}

/// Always fails (retryably), with its own attempts and backoff.
struct Picky;

impl Task for Picky {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "features.picky"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new()
            .max_attempts(2)
            .backoff(Backoff::Fixed(Duration::from_secs(600)))
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::msg("not today"))
    }
}

async fn attempts_and_backoff_are_set_per_task(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Picky);
    // The runner's own setting would allow 25 attempts.
    let queue = t.queue(registry, Config::default());
    let task = queue
        .enqueue::<Picky>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let before = Utc::now();
    assert!(queue.run_next_task().await);
    let row = task_row::Entity::find_by_id(task.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.attempts, 1);
    let wait = row.run_at - before;
    assert!(
        wait > TimeDelta::seconds(590) && wait < TimeDelta::seconds(610),
        "the task's fixed 600 s, not the seed's 6 s: {wait}"
    );
    admin::run_now(&t.db, &[task.id], Utc::now()).await.unwrap();
    assert!(queue.run_next_task().await);
    assert!(
        task_row::Entity::find_by_id(task.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none(),
        "the second attempt was its last"
    );
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].attempts, history[0].failed_at.is_some()),
        (2, true)
    );
    t
}

/// Succeeds or fails as asked, keeping only failures in the history.
struct Tidy;

impl Task for Tidy {
    type Params = bool;
    type Output = ();
    fn name() -> &'static str {
        "features.tidy"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().keep_history(KeepHistory::FailuresOnly)
    }
    async fn run(&self, fail: bool, _: TaskContext) -> Result<(), TaskError> {
        if fail {
            return Err(TaskError::invalid("asked to fail"));
        }
        Ok(())
    }
}

/// Keeps no history at all.
struct Silent;

impl Task for Silent {
    type Params = bool;
    type Output = ();
    fn name() -> &'static str {
        "features.silent"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().keep_history(KeepHistory::Never)
    }
    async fn run(&self, fail: bool, _: TaskContext) -> Result<(), TaskError> {
        if fail {
            return Err(TaskError::invalid("asked to fail"));
        }
        Ok(())
    }
}

async fn a_task_keeps_only_the_history_it_asks_for(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Tidy).register(Silent);
    let queue = t.queue(registry, Config::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    queue.events().subscribe(move |event| match event {
        Event::Successful { completed, .. } | Event::Failed { completed, .. } => {
            seen.lock()
                .unwrap()
                .push((completed.task_name.clone(), completed.id));
        }
        _ => {}
    });
    for fail in [false, true] {
        queue.enqueue::<Tidy>(&fail).await.unwrap();
        queue.enqueue::<Silent>(&fail).await.unwrap();
    }
    while queue.run_next_task().await {}
    assert!(
        task_row::Entity::find()
            .all(&t.db)
            .await
            .unwrap()
            .is_empty()
    );
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(history.len(), 1, "only Tidy's failure is kept: {history:?}");
    assert_eq!(history[0].task_name, "features.tidy");
    assert!(history[0].failed_at.is_some());
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events.len(),
        4,
        "every outcome still has its event: {events:?}"
    );
    assert_eq!(
        events.iter().filter(|(_, id)| *id == 0).count(),
        3,
        "rows not kept carry id 0"
    );
    t
}

/// Sleeps far longer than its own time limit.
struct Slow;

impl Task for Slow {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "features.slow"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().max_run_time(Duration::from_millis(200))
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
}

async fn the_time_limit_is_set_per_task(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Slow);
    let queue = t.queue(registry, Config::default());
    let task = queue
        .enqueue::<Slow>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let started = std::time::Instant::now();
    assert!(queue.run_next_task().await);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped at its own limit, not the runner's hour"
    );
    let row = task_row::Entity::find_by_id(task.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.attempts, 1);
    assert!(
        row.last_error.contains("MAX_RUN_TIME (0.2 s)"),
        "{}",
        row.last_error
    );
    t
}

async fn a_unique_task_has_one_live_row(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Adder);
    let queue = t.queue(registry, Config::default());
    let first = queue.enqueue::<Adder>(&(1, 1)).unique(true).await.unwrap();
    let Enqueued::Created(row) = first else {
        panic!("{first:?}")
    };
    assert_eq!(row.unique_key.as_deref(), Some(row.task_hash.as_str()));
    let again = queue.enqueue::<Adder>(&(1, 1)).unique(true).await.unwrap();
    assert_eq!(again, Enqueued::AlreadyExists { id: row.id });
    // Other params are another task; a plain enqueue (or Django's insert,
    // which never sets the key) is never refused.
    assert!(matches!(
        queue.enqueue::<Adder>(&(2, 2)).unique(true).await.unwrap(),
        Enqueued::Created(_)
    ));
    assert!(matches!(
        queue.enqueue::<Adder>(&(1, 1)).await.unwrap(),
        Enqueued::Created(_)
    ));
    // Bulk: duplicates of live rows and of each other are skipped.
    let inserted = queue
        .enqueue_many(
            [(1, 1), (3, 3), (3, 3), (2, 2)].map(|p| TaskSpec::new::<Adder>(&p).unique(true)),
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1, "only (3, 3), once");
    assert_eq!(task_row::Entity::find().all(&t.db).await.unwrap().len(), 4);
    // Live rows only: once it has run, the key is free again.
    while queue.run_next_task().await {}
    assert!(matches!(
        queue.enqueue::<Adder>(&(1, 1)).unique(true).await.unwrap(),
        Enqueued::Created(_)
    ));
    t
}

async fn concurrent_enqueues_of_a_unique_task_insert_one_row(t: TestDb) -> TestDb {
    // Eight connections of their own, enqueueing the same unique task at once.
    let mut queues = Vec::new();
    for _ in 0..8 {
        let conn = db::connect(Some(&t.url)).await.unwrap();
        queues.push(Queue::new(conn));
    }
    let enqueues = queues.iter().map(|queue| async move {
        queue
            .enqueue_call("features.once", &(42,), &())
            .unique(true)
            .await
            .unwrap()
    });
    let results = futures_util::future::join_all(enqueues).await;
    let rows = task_row::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(rows.len(), 1, "exactly one row: {rows:?}");
    let id = rows[0].id;
    let created = results
        .iter()
        .filter(|r| matches!(r, Enqueued::Created(task) if task.id == id))
        .count();
    let found = results
        .iter()
        .filter(|r| **r == Enqueued::AlreadyExists { id })
        .count();
    assert_eq!((created, found), (1, 7), "{results:?}");
    t
}

async fn policies_are_overridden_per_enqueue(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Picky).register(Slow).register(Quiet);
    let queue = t.queue(registry, Config::default());

    // Picky's definition allows 2 attempts with a fixed 600 s backoff; this
    // enqueue allows 5 with a 30 s one.
    let patient = queue
        .enqueue::<Picky>(&())
        .max_attempts(5)
        .backoff(Backoff::Fixed(Duration::from_secs(30)))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(
        patient.policy.as_deref(),
        Some(r#"{"max_attempts":5,"backoff":{"kind":"fixed","delay_ms":30000}}"#),
        "stored with the row, for any runner"
    );
    let before = Utc::now();
    assert!(queue.run_next_task().await);
    let row = task_row::Entity::find_by_id(patient.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    let wait = row.run_at - before;
    assert!(
        wait > TimeDelta::seconds(25) && wait < TimeDelta::seconds(35),
        "the enqueue's 30 s, not the definition's 600 s: {wait}"
    );
    admin::run_now(&t.db, &[patient.id], Utc::now())
        .await
        .unwrap();
    assert!(queue.run_next_task().await);
    assert!(
        task_row::Entity::find_by_id(patient.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_some(),
        "a second failure is not the last under the enqueue's 5 attempts"
    );
    task_row::Entity::delete_by_id(patient.id)
        .exec(&t.db)
        .await
        .unwrap();

    // One attempt only: the first failure is permanent.
    let once = queue
        .enqueue::<Picky>(&())
        .max_attempts(1)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert!(queue.run_next_task().await);
    assert!(
        task_row::Entity::find_by_id(once.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert_eq!((history.len(), history[0].attempts), (1, 1));

    // A time limit for this enqueue only.
    let quick = queue
        .enqueue::<Slow>(&())
        .max_run_time(Duration::from_millis(100))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert!(queue.run_next_task().await);
    let row = task_row::Entity::find_by_id(quick.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.last_error.contains("MAX_RUN_TIME (0.1 s)"),
        "{}",
        row.last_error
    );
    task_row::Entity::delete_by_id(quick.id)
        .exec(&t.db)
        .await
        .unwrap();

    // No history for this one.
    queue
        .enqueue::<Quiet>(&())
        .keep_history(KeepHistory::Never)
        .await
        .unwrap();
    assert!(queue.run_next_task().await);
    assert_eq!(
        completed_task::Entity::find()
            .all(&t.db)
            .await
            .unwrap()
            .len(),
        1
    );

    // A custom function cannot be stored with a row: refused, nothing written.
    let err = queue
        .enqueue::<Quiet>(&())
        .backoff(Backoff::Custom(Arc::new(|_| Duration::ZERO)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TaskDefaults::backoff"), "{err}");
    assert!(
        task_row::Entity::find()
            .all(&t.db)
            .await
            .unwrap()
            .is_empty()
    );
    t
}
