//! The runner, against django-background-tasks' own test scenarios
//! (seed-behaviour.md §7: TestTaskRunner, TestTaskModel locking, TestTasks,
//! MaxAttempts, InvalidTask, ArgumentsWithDict, NamedQueue, Repetition,
//! Priority, QuerySetManager, Logging, DatabaseOutage), each on every
//! backend, inline (`run_next_task`) and with a pool of executors; plus what
//! the seed gets wrong (panics, MAX_RUN_TIME, shutdown, its async-slot bug).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{
    CompletedTaskQuery, Config, ConfigBuilder, Creator, Event, PriorityOrdering, Queue, Registry,
    Runner, TaskQuery, completed_task, repeat, task_row,
};
use chrono::{TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter,
};
use serde_json::{Map, Value, json};

use crate::fixture::{Mode, TestDb, wait_for};
use crate::tasks::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(mode: Mode) -> ConfigBuilder {
    let builder = Config::builder().sleep(Duration::from_millis(50));
    match mode {
        Mode::Sequential => builder,
        Mode::Pool => builder.run_async(true).async_threads(4),
    }
}

fn queue_with(t: &TestDb, registry: Registry, config: ConfigBuilder) -> Queue {
    t.queue(registry, config.build().unwrap())
}

fn kwargs(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

async fn tasks(t: &TestDb) -> Vec<task_row::Model> {
    task_row::Entity::find().all(&t.db).await.unwrap()
}

async fn history(t: &TestDb) -> Vec<completed_task::Model> {
    completed_task::Entity::find().all(&t.db).await.unwrap()
}

/// Due rows this runner could take (unlocked, or locked longer than
/// MAX_RUN_TIME ago), plus rows it holds: one statement, so a claim that
/// commits between two reads cannot hide a task.
async fn pending_work(queue: &Queue) -> u64 {
    let names = queue.registry().names();
    // Naive UTC: on SQLite it binds as Django's text, the stored format.
    let now = Utc::now().naive_utc();
    let expired = now - TimeDelta::from_std(queue.config().max_run_time()).unwrap();

    let mut due = sea_orm::Condition::all()
        .add(task_row::Column::TaskName.is_in(names))
        .add(task_row::Column::RunAt.lte(now))
        .add(task_row::Column::FailedAt.is_null())
        .add(
            sea_orm::Condition::any()
                .add(task_row::Column::LockedBy.is_null())
                .add(task_row::Column::LockedAt.lt(expired)),
        );
    if let Some(name) = queue.config().queue() {
        due = due.add(task_row::Column::Queue.eq(name));
    }
    task_row::Entity::find()
        .filter(
            sea_orm::Condition::any()
                .add(due)
                .add(task_row::Column::LockedBy.eq(queue.runner_id())),
        )
        .count(queue.db())
        .await
        .unwrap()
}

/// Runs every task that is due now, in the test's mode; returns how many
/// executions finished.
async fn drain(queue: &Queue, mode: Mode) -> usize {
    match mode {
        Mode::Sequential => {
            let mut ran = 0;
            while queue.run_next_task().await {
                ran += 1;
            }
            ran
        }
        Mode::Pool => {
            let finished = Arc::new(Mutex::new(0usize));
            let counter = Arc::clone(&finished);
            queue.events().subscribe(move |event| {
                if matches!(event, Event::Finished { .. }) {
                    *counter.lock().unwrap() += 1;
                }
            });
            let runner = Runner::start(queue.clone()).unwrap();
            wait_for("the runner to drain the due tasks", WAIT, || async {
                pending_work(queue).await == 0
            })
            .await;
            runner.shutdown(Duration::from_secs(10)).await;
            *finished.lock().unwrap()
        }
    }
}

on_all_backends_and_modes!(
    nothing_scheduled,
    one_task_scheduled,
    several_tasks_scheduled,
    error_handling,
    does_not_run_locked,
    unlocks_after_max_run_time,
    failed_at_set_after_max_attempts,
    max_attempts_one,
    max_attempts_two,
    invalid_task,
    task_with_dictionary_in_args,
    named_queue,
    repeat_hourly,
    repetition_in_future,
    repeat_chain_ends_at_repeat_until,
    task_manager,
    completed_task_manager,
    events_in_the_seeds_order,
    panicking_handler_is_a_failed_attempt,
    params_that_no_longer_decode_fail_permanently,
    unregistered_names_are_left_alone,
    future_tasks_wait,
    completed_row_copies_the_task,
    priority_order,
    logging_levels,
    database_outage_logs_a_warning,
);

// TestTasks.test_run_next_task_nothing_scheduled; TestTaskRunner.test_get_task_to_run_no_tasks
async fn nothing_scheduled(t: TestDb, mode: Mode) -> TestDb {
    let queue = queue_with(&t, Registry::new(), config(mode));
    queue.registry().register(Record::default());
    assert!(!queue.run_next_task().await);
    assert_eq!(drain(&queue, mode).await, 0);
    t
}

// TestTasks.test_run_next_task_one_task_scheduled; TestTaskRunner.test_get_task_to_run
// (the lock carries the runner's worker name).
async fn one_task_scheduled(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let probe = Probe {
        db: t.db.clone(),
        seen: Arc::default(),
    };
    let registry = Registry::new();
    registry.register(record.clone()).register(probe.clone());
    let queue = queue_with(&t, registry, config(mode));
    queue
        .enqueue::<Record>(&(vec![json!("hi")], kwargs(json!({"kw": 1}))))
        .await
        .unwrap();
    queue.enqueue::<Probe>(&()).await.unwrap();
    assert!(
        record.calls().is_empty(),
        "enqueueing does not run the task"
    );
    assert_eq!(drain(&queue, mode).await, 2);
    assert_eq!(
        record.calls(),
        vec![(vec![json!("hi")], kwargs(json!({"kw": 1})))]
    );
    let seen = probe.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].locked_by.as_deref(), Some(queue.runner_id()));
    assert!(seen[0].locked_at.is_some());
    assert_eq!(seen[0].task_name, "probe");
    assert!(tasks(&t).await.is_empty());
    t
}

// TestTasks.test_run_next_task_several_tasks_scheduled
async fn several_tasks_scheduled(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(&t, registry, config(mode));
    for i in 0..3 {
        queue
            .enqueue::<Record>(&(vec![json!(i)], Map::new()))
            .await
            .unwrap();
    }
    if mode == Mode::Sequential {
        for _ in 0..3 {
            assert!(queue.run_next_task().await);
        }
        assert!(!queue.run_next_task().await);
    } else {
        assert_eq!(drain(&queue, mode).await, 3);
    }
    let mut seen: Vec<i64> = record
        .calls()
        .iter()
        .map(|c| c.0[0].as_i64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(history(&t).await.len(), 3);
    t
}

// TestTasks.test_run_next_task_error_handling
async fn error_handling(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Fail);
    let queue = queue_with(&t, registry, config(mode));
    let original = queue
        .enqueue::<Fail>(&(1,))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    let all = tasks(&t).await;
    assert_eq!(all.len(), 1, "the failed task is still there");
    let row = &all[0];
    assert!(row.has_error());
    assert!(
        row.last_error.contains("ZeroDivisionError"),
        "{}",
        row.last_error
    );
    assert_eq!(row.failed_at, None);
    assert_eq!(row.attempts, 1);
    assert!(row.run_at > original.run_at);
    let backoff = row.run_at - Utc::now();
    assert!(
        backoff > TimeDelta::seconds(3) && backoff <= TimeDelta::seconds(6),
        "first retry after 6 s: {backoff}"
    );
    assert_eq!(row.locked_by, None);
    assert_eq!(row.locked_at, None);
    assert!(history(&t).await.is_empty());
    t
}

// TestTasks.test_run_next_task_does_not_run_locked
async fn does_not_run_locked(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default());
    let queue = queue_with(&t, registry, config(mode));
    let row = queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let mut locked = row.into_active_model();
    locked.locked_by = Set(Some("another-host:4242:deadbeef".into()));
    locked.locked_at = Set(Some(Utc::now()));
    locked.update(&t.db).await.unwrap();
    assert!(!queue.run_next_task().await);
    assert_eq!(drain(&queue, mode).await, 0);
    assert_eq!(tasks(&t).await.len(), 1);
    t
}

// TestTasks.test_run_next_task_unlocks_after_MAX_RUN_TIME; TestTaskModel.test_lock_expired
async fn unlocks_after_max_run_time(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(&t, registry, config(mode));
    let row = queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let mut locked = row.clone().into_active_model();
    locked.locked_by = Set(Some("dead-host:1:00000000".into()));
    locked.locked_at = Set(Some(Utc::now()));
    locked.update(&t.db).await.unwrap();
    assert!(!queue.run_next_task().await, "a fresh lock is respected");

    let mut expired = row.into_active_model();
    expired.locked_at = Set(Some(Utc::now() - TimeDelta::seconds(3600 + 2)));
    expired.update(&t.db).await.unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    assert!(tasks(&t).await.is_empty());
    assert_eq!(record.calls().len(), 1);
    t
}

// TestTasks.test_failed_at_set_after_MAX_ATTEMPTS
async fn failed_at_set_after_max_attempts(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Fail);
    let queue = queue_with(&t, registry, config(mode));
    let row = queue
        .enqueue::<Fail>(&(1,))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let mut at_max = row.into_active_model();
    at_max.attempts = Set(25);
    at_max.update(&t.db).await.unwrap();
    assert_eq!(
        drain(&queue, mode).await,
        1,
        "a task already at the max still runs once more"
    );
    assert!(tasks(&t).await.is_empty());
    let done = history(&t).await;
    assert_eq!(done.len(), 1);
    assert!(done[0].failed_at.is_some());
    assert_eq!(done[0].attempts, 26);
    t
}

// MaxAttemptsTestCase.test_max_attempts_one
async fn max_attempts_one(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Fail);
    let queue = queue_with(&t, registry, config(mode).max_attempts(1));
    let first = queue
        .enqueue::<Fail>(&(1,))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    queue.enqueue::<Fail>(&(2,)).await.unwrap();
    if mode == Mode::Sequential {
        assert!(queue.run_next_task().await);
        assert_eq!(tasks(&t).await.len(), 1);
        let done = history(&t).await;
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].attempts, 1);
        assert_eq!(done[0].task_name, first.task_name);
        assert_eq!(done[0].task_params, first.task_params);
        assert!(done[0].has_error());
        assert!(done[0].failed_at.is_some());
    }
    drain(&queue, mode).await;
    assert!(tasks(&t).await.is_empty());
    let done = history(&t).await;
    assert_eq!(done.len(), 2);
    assert!(
        done.iter()
            .all(|c| c.attempts == 1 && c.failed_at.is_some() && c.has_error())
    );
    t
}

// MaxAttemptsTestCase.test_max_attempts_two
async fn max_attempts_two(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Fail);
    let queue = queue_with(&t, registry, config(mode).max_attempts(2));
    queue.enqueue::<Fail>(&(1,)).await.unwrap();
    queue.enqueue::<Fail>(&(2,)).await.unwrap();
    assert_eq!(drain(&queue, mode).await, 2);
    assert_eq!(tasks(&t).await.len(), 2, "retried, not failed");
    assert!(history(&t).await.is_empty());
    t
}

// InvalidTaskTestCase.test_invalid_task
async fn invalid_task(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Invalid);
    let queue = queue_with(&t, registry, config(mode).max_attempts(2));
    queue.enqueue::<Invalid>(&()).await.unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    assert!(tasks(&t).await.is_empty());
    let done = history(&t).await;
    assert_eq!(done.len(), 1);
    assert!(done[0].failed_at.is_some());
    assert!(done[0].last_error.contains("MyInvalidTaskError"));
    t
}

// ArgumentsWithDictTestCase.test_task_with_dictionary_in_args
async fn task_with_dictionary_in_args(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(&t, registry, config(mode));
    let args = background_tasks::params::encode_call(
        &([(22222u32, 2), (11111u32, 1)]
            .into_iter()
            .collect::<std::collections::BTreeMap<u32, i32>>(),),
        &(),
    )
    .unwrap();
    assert_eq!(args, r#"[[{"11111": 1, "22222": 2}], {}]"#);
    let (positional, _) = background_tasks::params::decode_call(&args).unwrap();
    queue
        .enqueue::<Record>(&(positional, Map::new()))
        .await
        .unwrap();
    assert_eq!(tasks(&t).await.len(), 1);
    assert_eq!(drain(&queue, mode).await, 1);
    assert!(tasks(&t).await.is_empty(), "not stuck");
    assert_eq!(
        record.calls()[0].0[0],
        json!({"11111": 1, "22222": 2}),
        "keys arrive as strings"
    );
    t
}

// NamedQueueTestCase: process_queue, process_all_tasks, process_other_queue
async fn named_queue(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let enqueue = |queue: Queue| async move {
        queue
            .enqueue::<Record>(&(vec![], Map::new()))
            .queue("named_queue")
            .await
            .unwrap();
    };
    let other = queue_with(
        &t,
        registry.clone(),
        config(mode).queue("other_named_queue"),
    );
    enqueue(other.clone()).await;
    assert_eq!(
        drain(&other, mode).await,
        0,
        "another queue's runner leaves it"
    );
    assert_eq!(tasks(&t).await.len(), 1);

    let named = queue_with(&t, registry.clone(), config(mode).queue("named_queue"));
    assert_eq!(drain(&named, mode).await, 1);
    assert!(tasks(&t).await.is_empty());

    let all = queue_with(&t, registry, config(mode));
    enqueue(all.clone()).await;
    all.enqueue::<Record>(&(vec![], Map::new())).await.unwrap();
    assert_eq!(
        drain(&all, mode).await,
        2,
        "no filter: every queue, named or not"
    );
    assert_eq!(record.calls().len(), 3);
    t
}

// RepetitionTestCase.test_repeat
async fn repeat_hourly(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default());
    let queue = queue_with(&t, registry, config(mode));
    let until = Utc::now() + TimeDelta::weeks(1);
    let until = chrono::DateTime::from_timestamp_micros(until.timestamp_micros()).unwrap();
    let old = queue
        .enqueue::<Record>(&(vec![json!(1)], Map::new()))
        .repeat(repeat::HOURLY)
        .repeat_until(until)
        .verbose_name("hourly")
        .priority(3)
        .queue("q")
        .creator(Creator::new(2, 9))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    let all = tasks(&t).await;
    assert_eq!(all.len(), 1, "exactly one repetition");
    let new = &all[0];
    assert_ne!(new.id, old.id);
    assert_eq!(new.task_name, old.task_name);
    assert_eq!(new.task_params, old.task_params);
    assert_eq!(new.task_hash, old.task_hash);
    assert_eq!(new.verbose_name, old.verbose_name);
    assert_eq!(new.priority, 3);
    assert_eq!(new.queue.as_deref(), Some("q"));
    assert_eq!(new.creator_object_id, Some(9));
    assert_eq!(new.repeat, repeat::HOURLY);
    assert_eq!(new.repeat_until, Some(until));
    assert_eq!(new.attempts, 0);
    assert_eq!(new.locked_by, None);
    assert_eq!(new.run_at - old.run_at, TimeDelta::hours(1));
    t
}

// RepetitionTestCase.test_repetition_in_future
async fn repetition_in_future(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default());
    let queue = queue_with(&t, registry, config(mode));
    let old = queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .repeat(repeat::HOURLY)
        .repeat_until(Utc::now() + TimeDelta::weeks(2))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let week_ago = old.run_at - TimeDelta::weeks(1);
    let mut am = old.into_active_model();
    am.run_at = Set(week_ago);
    am.update(&t.db).await.unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    let new = tasks(&t).await.remove(0);
    assert_eq!(
        new.run_at,
        week_ago + TimeDelta::weeks(1) + TimeDelta::hours(1)
    );
    assert!(new.run_at > Utc::now());
    assert!(new.run_at - Utc::now() <= TimeDelta::hours(1));
    t
}

// Checklist 40: no repetition once repeat_until has passed.
async fn repeat_chain_ends_at_repeat_until(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default());
    let queue = queue_with(&t, registry, config(mode));
    let row = queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .repeat(repeat::HOURLY)
        .repeat_until(Utc::now() + TimeDelta::hours(1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let mut ended = row.into_active_model();
    ended.repeat_until = Set(Some(Utc::now() - TimeDelta::seconds(1)));
    ended.update(&t.db).await.unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    assert!(tasks(&t).await.is_empty());
    assert_eq!(history(&t).await.len(), 1);
    t
}

// QuerySetManagerTestCase.test_task_manager
async fn task_manager(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default()).register(Fail);
    let queue = queue_with(&t, registry, config(mode).max_attempts(1));
    let user1 = Creator::new(3, 1);
    let user2 = Creator::new(3, 2);
    queue
        .enqueue::<Record>(&(vec![json!(1)], Map::new()))
        .creator(user1)
        .await
        .unwrap();
    queue.enqueue::<Fail>(&(1,)).creator(user1).await.unwrap();
    queue
        .enqueue::<Record>(&(vec![json!(2)], Map::new()))
        .await
        .unwrap();
    queue.enqueue::<Fail>(&(2,)).await.unwrap();
    let count = |c| task_row::Entity::find().created_by(c).count(&t.db);
    assert_eq!(count(user1).await.unwrap(), 2);
    assert_eq!(count(user2).await.unwrap(), 0);
    assert_eq!(drain(&queue, mode).await, 4);
    assert_eq!(count(user1).await.unwrap(), 0);
    assert_eq!(task_row::Entity::find().count(&t.db).await.unwrap(), 0);
    t
}

// QuerySetManagerTestCase.test_completed_task_manager
async fn completed_task_manager(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default()).register(Fail);
    let queue = queue_with(&t, registry, config(mode).max_attempts(1));
    let user1 = Creator::new(3, 1);
    let find = completed_task::Entity::find;
    assert_eq!(find().created_by(user1).count(&t.db).await.unwrap(), 0);
    assert_eq!(find().failed(None).count(&t.db).await.unwrap(), 0);
    assert_eq!(find().succeeded(None).count(&t.db).await.unwrap(), 0);
    queue
        .enqueue::<Record>(&(vec![json!(1)], Map::new()))
        .creator(user1)
        .await
        .unwrap();
    queue.enqueue::<Fail>(&(1,)).creator(user1).await.unwrap();
    queue
        .enqueue::<Record>(&(vec![json!(2)], Map::new()))
        .await
        .unwrap();
    queue.enqueue::<Fail>(&(2,)).await.unwrap();
    assert_eq!(drain(&queue, mode).await, 4);
    let hour = Some(TimeDelta::hours(1));
    assert_eq!(find().created_by(user1).count(&t.db).await.unwrap(), 2);
    assert_eq!(find().failed(None).count(&t.db).await.unwrap(), 2);
    assert_eq!(
        find()
            .created_by(user1)
            .failed(None)
            .count(&t.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(find().failed(hour).count(&t.db).await.unwrap(), 2);
    assert_eq!(find().succeeded(None).count(&t.db).await.unwrap(), 2);
    assert_eq!(
        find()
            .created_by(user1)
            .succeeded(None)
            .count(&t.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(find().succeeded(hour).count(&t.db).await.unwrap(), 2);
    // Checklist 32: copied fields, completion time, lock fields kept.
    let ok = find()
        .succeeded(None)
        .created_by(user1)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.attempts, 1);
    assert_eq!(ok.failed_at, None);
    assert_eq!(ok.last_error, "");
    assert_eq!(ok.locked_by.as_deref(), Some(queue.runner_id()));
    assert!(ok.locked_at.unwrap() <= ok.run_at);
    assert!(
        Utc::now() - ok.run_at < TimeDelta::seconds(30),
        "run_at is the completion time"
    );
    t
}

// §5: created → started → successful → finished; started → error →
// rescheduled → finished; started → error → failed → finished.
async fn events_in_the_seeds_order(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry
        .register(Record::default())
        .register(Fail)
        .register(Invalid);
    let queue = queue_with(&t, registry, config(mode));
    let log: Arc<Mutex<Vec<(i32, &'static str)>>> = Arc::default();
    let sink = Arc::clone(&log);
    queue.events().subscribe(move |event| {
        let entry = match event {
            Event::Created { task } => (task.id, "created"),
            Event::Started { task } => (task.id, "started"),
            Event::Successful { task_id, .. } => (*task_id, "successful"),
            Event::Error { task, .. } => (task.id, "error"),
            Event::Rescheduled { task } => (task.id, "rescheduled"),
            Event::Failed { task_id, .. } => (*task_id, "failed"),
            Event::Finished { task_id } => (*task_id, "finished"),
            _ => return,
        };
        sink.lock().unwrap().push(entry);
    });
    let ok = queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    let retry = queue
        .enqueue::<Fail>(&(1,))
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    let fail = queue
        .enqueue::<Invalid>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap()
        .id;
    drain(&queue, mode).await;
    let of = |id: i32| -> Vec<&'static str> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == id)
            .map(|e| e.1)
            .collect()
    };
    assert_eq!(of(ok), ["created", "started", "successful", "finished"]);
    assert_eq!(
        of(retry),
        ["created", "started", "error", "rescheduled", "finished"]
    );
    assert_eq!(
        of(fail),
        ["created", "started", "error", "failed", "finished"]
    );
    t
}

async fn panicking_handler_is_a_failed_attempt(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(Panics).register(record.clone());
    let queue = queue_with(&t, registry, config(mode));
    queue.enqueue::<Panics>(&()).await.unwrap();
    queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .await
        .unwrap();
    assert_eq!(drain(&queue, mode).await, 2);
    let row = tasks(&t).await.remove(0);
    assert_eq!(row.task_name, "panics");
    assert_eq!(row.attempts, 1);
    assert!(
        row.last_error.contains("the handler blew up"),
        "{}",
        row.last_error
    );
    assert_eq!(record.calls().len(), 1, "the runner lives on");
    t
}

async fn params_that_no_longer_decode_fail_permanently(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Fail);
    let queue = queue_with(&t, registry, config(mode));
    // A row written when `fail` took a string, say.
    queue
        .enqueue_call("fail", &("not a number",), &())
        .await
        .unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    assert!(tasks(&t).await.is_empty());
    let done = history(&t).await.remove(0);
    assert_eq!(done.attempts, 1, "no retry: the same text can never decode");
    assert!(done.failed_at.is_some());
    assert!(
        done.last_error.contains("no longer decode"),
        "{}",
        done.last_error
    );
    t
}

// Checklist 25: a task whose run_at is in the future is not run.
async fn future_tasks_wait(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(&t, registry, config(mode));
    queue
        .enqueue::<Record>(&(vec![json!("later")], Map::new()))
        .schedule(60)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&(vec![json!("now")], Map::new()))
        .await
        .unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    assert_eq!(record.calls(), vec![(vec![json!("now")], Map::new())]);
    assert_eq!(tasks(&t).await.len(), 1);
    t
}

// TestTaskModel.test_create_completed_task, checklist 32: the history row
// copies the task's fields; run_at is the completion time; attempts + 1.
async fn completed_row_copies_the_task(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default());
    let queue = queue_with(&t, registry, config(mode));
    let until = Utc::now() + TimeDelta::days(2);
    let until = chrono::DateTime::from_timestamp_micros(until.timestamp_micros()).unwrap();
    let task = queue
        .enqueue::<Record>(&(vec![json!(1)], kwargs(json!({"a": "b"}))))
        .priority(7)
        .queue("copies")
        .verbose_name("Copied")
        .creator(Creator::new(5, 6))
        .repeat(repeat::NEVER)
        .repeat_until(until)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let before = Utc::now();
    assert_eq!(drain(&queue, mode).await, 1);
    let done = history(&t).await.remove(0);
    assert_eq!(done.task_name, task.task_name);
    assert_eq!(done.task_params, task.task_params);
    assert_eq!(done.task_hash, task.task_hash);
    assert_eq!(done.priority, 7);
    assert_eq!(done.queue.as_deref(), Some("copies"));
    assert_eq!(done.verbose_name.as_deref(), Some("Copied"));
    assert_eq!(
        (done.creator_content_type_id, done.creator_object_id),
        (Some(5), Some(6))
    );
    assert_eq!(done.repeat, 0);
    assert_eq!(done.repeat_until, Some(until));
    assert_eq!(done.attempts, 1, "a first-try success records attempts = 1");
    assert_eq!(done.failed_at, None);
    assert_eq!(done.locked_by.as_deref(), Some(queue.runner_id()));
    assert!(
        done.run_at >= before - TimeDelta::seconds(1),
        "run_at is the completion time"
    );
    assert!(done.to_string().starts_with("Copied - "));
    t
}

// Checklist 26: rows of names this runner has no handler for stay untouched.
async fn unregistered_names_are_left_alone(t: TestDb, mode: Mode) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default());
    let queue = queue_with(&t, registry, config(mode));
    let stranger = queue
        .enqueue_call("someone.elses.task", &(1,), &())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .await
        .unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    assert_eq!(tasks(&t).await, vec![stranger]);
    t
}

on_all_backends!(
    pool_runs_up_to_async_threads_at_once,
    sync_mode_runs_one_task_at_a_time,
    ascending_priority_order,
    contested_claim_goes_to_one_runner,
    a_task_past_max_run_time_is_stopped_and_failed,
    graceful_shutdown_lets_running_tasks_finish,
    shutdown_after_the_grace_period_hands_tasks_back,
    locks_held_elsewhere_do_not_take_executor_slots,
    a_blocking_task_does_not_stall_the_others,
    enqueue_wakes_the_runner,
    outcomes_written_together_match_their_events,
    an_enqueue_from_another_process_wakes_an_idle_runner,
);

// Checklist 42/43: async mode runs up to ASYNC_THREADS at once, never more.
async fn pool_runs_up_to_async_threads_at_once(t: TestDb) -> TestDb {
    let ledger = Overlap::default();
    let registry = Registry::new();
    registry.register(ledger.clone());
    let queue = queue_with(&t, registry, config(Mode::Pool).async_threads(4));
    for _ in 0..12 {
        queue.enqueue::<Overlap>(&(300,)).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("all twelve to run", WAIT, || async {
        ledger.runs.load(std::sync::atomic::Ordering::SeqCst) == 12
    })
    .await;
    runner.shutdown(Duration::from_secs(10)).await;
    assert_eq!(ledger.most.load(std::sync::atomic::Ordering::SeqCst), 4);
    t
}

// Several bodies per executor thread: the 20 slots take all 20 tasks in one
// claim, their outcomes are written in batches (successes, retries and
// permanent failures in one transaction), and every history row an event
// carries is the row in the database, id included.
async fn outcomes_written_together_match_their_events(t: TestDb) -> TestDb {
    let ledger = Overlap::default();
    let registry = Registry::new();
    registry
        .register(ledger.clone())
        .register(Fail)
        .register(Invalid);
    let config = config(Mode::Pool).async_threads(2).tasks_per_thread(10);
    let queue = queue_with(&t, registry, config);
    assert_eq!(queue.config().concurrency(), 20);
    for _ in 0..10 {
        queue.enqueue::<Overlap>(&(300,)).await.unwrap();
    }
    for n in 0..5 {
        queue.enqueue::<Fail>(&(n,)).await.unwrap();
        queue.enqueue::<Invalid>(&()).await.unwrap();
    }
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = Arc::clone(&seen);
    queue.events().subscribe(move |event| {
        if matches!(
            event,
            Event::Successful { .. } | Event::Failed { .. } | Event::Rescheduled { .. }
        ) {
            sink.lock().unwrap().push(event.clone());
        }
    });
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("twenty outcomes", WAIT, || async {
        seen.lock().unwrap().len() == 20
    })
    .await;
    runner.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        ledger.most.load(std::sync::atomic::Ordering::SeqCst),
        10,
        "ten bodies at once on two threads"
    );
    let events = seen.lock().unwrap().clone();
    let (mut succeeded, mut failed, mut retried) = (0, 0, 0);
    for event in events {
        match event {
            Event::Successful { completed, .. } | Event::Failed { completed, .. } => {
                let stored = completed_task::Entity::find_by_id(completed.id)
                    .one(&t.db)
                    .await
                    .unwrap()
                    .expect("the event's history row is in the database");
                assert_eq!(stored, completed);
                if completed.failed_at.is_some() {
                    assert!(completed.last_error.contains("MyInvalidTaskError"));
                    failed += 1;
                } else {
                    assert_eq!(completed.task_name, "overlap");
                    succeeded += 1;
                }
            }
            Event::Rescheduled { task } => {
                let stored = task_row::Entity::find_by_id(task.id)
                    .one(&t.db)
                    .await
                    .unwrap()
                    .expect("a retried task stays");
                assert_eq!(stored, task);
                assert_eq!((stored.attempts, stored.locked_by), (1, None));
                retried += 1;
            }
            _ => unreachable!(),
        }
    }
    assert_eq!((succeeded, failed, retried), (10, 5, 5));
    assert_eq!(history(&t).await.len(), 15);
    assert_eq!(tasks(&t).await.len(), 5);
    t
}

// Checklist 43: RUN_ASYNC false (the default) means one task at a time.
async fn sync_mode_runs_one_task_at_a_time(t: TestDb) -> TestDb {
    let ledger = Overlap::default();
    let registry = Registry::new();
    registry.register(ledger.clone());
    let queue = queue_with(&t, registry, config(Mode::Sequential).async_threads(4));
    assert_eq!(queue.config().concurrency(), 1);
    for _ in 0..3 {
        queue.enqueue::<Overlap>(&(100,)).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("all three to run", WAIT, || async {
        ledger.runs.load(std::sync::atomic::Ordering::SeqCst) == 3
    })
    .await;
    runner.shutdown(Duration::from_secs(10)).await;
    assert_eq!(ledger.most.load(std::sync::atomic::Ordering::SeqCst), 1);
    t
}

// PriorityTestCase.test_priority, and checklist 24's tie order. In pool
// mode one executor, so the order of execution is the claim order.
async fn priority_order(t: TestDb, mode: Mode) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(&t, registry, config(mode).async_threads(1));
    let call = |n: i64| (vec![json!(n)], Map::new());
    queue
        .enqueue::<Record>(&call(-1))
        .priority(-1)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&call(99))
        .priority(99)
        .await
        .unwrap();
    if mode == Mode::Sequential {
        assert!(queue.run_next_task().await);
        assert_eq!(
            record.calls(),
            vec![call(99)],
            "the first run takes priority 99 only"
        );
        assert!(queue.run_next_task().await);
    } else {
        assert_eq!(drain(&queue, mode).await, 2);
    }
    assert_eq!(record.calls(), vec![call(99), call(-1)]);

    // Same priority: the older run_at first.
    queue
        .enqueue::<Record>(&call(1))
        .priority(5)
        .schedule(-10)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&call(2))
        .priority(5)
        .schedule(-20)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&call(3))
        .priority(1)
        .schedule(-30)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&call(4))
        .priority(-3)
        .schedule(-40)
        .await
        .unwrap();
    drain(&queue, mode).await;
    let order: Vec<i64> = record.calls()[2..]
        .iter()
        .map(|c| c.0[0].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![2, 1, 3, 4]);
    t
}

// BACKGROUND_TASK_PRIORITY_ORDERING = "ASC": niceness order, ties still oldest first.
async fn ascending_priority_order(t: TestDb) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(
        &t,
        registry,
        config(Mode::Sequential).priority_ordering(PriorityOrdering::from_setting("ASC")),
    );
    let call = |n: i64| (vec![json!(n)], Map::new());
    queue
        .enqueue::<Record>(&call(1))
        .priority(5)
        .schedule(-10)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&call(2))
        .priority(5)
        .schedule(-20)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&call(3))
        .priority(1)
        .schedule(-30)
        .await
        .unwrap();
    queue
        .enqueue::<Record>(&call(4))
        .priority(-3)
        .schedule(-40)
        .await
        .unwrap();
    while queue.run_next_task().await {}
    let order: Vec<i64> = record
        .calls()
        .iter()
        .map(|c| c.0[0].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![4, 3, 2, 1]);
    t
}

// TestTaskModel.test_lock_contested: two runners, one row: one gets it.
async fn contested_claim_goes_to_one_runner(t: TestDb) -> TestDb {
    let nap = Nap::default();
    let registry = Registry::new();
    registry.register(nap.clone());
    let a = queue_with(&t, registry.clone(), config(Mode::Sequential));
    let b = queue_with(&t, registry, config(Mode::Sequential));
    assert_ne!(a.runner_id(), b.runner_id());
    a.enqueue::<Nap>(&(200,)).await.unwrap();
    let (ran_a, ran_b) = tokio::join!(a.run_next_task(), b.run_next_task());
    assert!(ran_a ^ ran_b, "exactly one runner took it: {ran_a} {ran_b}");
    assert_eq!(nap.runs(), 1);
    assert!(tasks(&t).await.is_empty());
    t
}

// The seed runs a long task a second time in parallel once its lock
// expires; here MAX_RUN_TIME stops it and counts a failed attempt.
async fn a_task_past_max_run_time_is_stopped_and_failed(t: TestDb) -> TestDb {
    let nap = Nap::default();
    let registry = Registry::new();
    registry.register(nap.clone());
    let queue = queue_with(
        &t,
        registry,
        config(Mode::Pool).max_run_time(Duration::from_secs(1)),
    );
    queue.enqueue::<Nap>(&(60_000,)).await.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("the overrunning task to be failed", WAIT, || async {
        tasks(&t)
            .await
            .first()
            .is_some_and(|row| row.attempts == 1 && row.locked_by.is_none())
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let row = tasks(&t).await.remove(0);
    assert!(
        row.last_error.contains("MAX_RUN_TIME"),
        "{}",
        row.last_error
    );
    assert_eq!(nap.runs(), 1, "never run twice at the same time");
    t
}

// Graceful shutdown with tasks in flight: they finish, nothing stays locked.
async fn graceful_shutdown_lets_running_tasks_finish(t: TestDb) -> TestDb {
    let nap = Nap::default();
    let registry = Registry::new();
    registry.register(nap.clone());
    let queue = queue_with(&t, registry, config(Mode::Pool));
    for _ in 0..4 {
        queue.enqueue::<Nap>(&(400,)).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("all four to start", WAIT, || async { nap.runs() == 4 }).await;
    runner.shutdown(Duration::from_secs(20)).await;
    assert!(tasks(&t).await.is_empty(), "all four finished");
    assert_eq!(history(&t).await.len(), 4);
    t
}

// Past the grace period, running tasks are stopped and handed back unlocked,
// without counting an attempt (the seed leaves them locked for an hour).
async fn shutdown_after_the_grace_period_hands_tasks_back(t: TestDb) -> TestDb {
    let nap = Nap::default();
    let registry = Registry::new();
    registry.register(nap.clone());
    let queue = queue_with(&t, registry, config(Mode::Pool));
    for _ in 0..2 {
        queue.enqueue::<Nap>(&(60_000,)).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("both to start", WAIT, || async { nap.runs() == 2 }).await;
    runner.shutdown(Duration::from_millis(200)).await;
    let rows = tasks(&t).await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.locked_by, None);
        assert_eq!(row.locked_at, None);
        assert_eq!(row.attempts, 0);
        assert_eq!(row.last_error, "");
    }
    assert!(history(&t).await.is_empty());
    t
}

// Seed bug §8.1: locks of other (or dead) runners consumed async slots, and
// with as many of them as threads processing stopped. Here a runner's
// capacity is its own executors.
async fn locks_held_elsewhere_do_not_take_executor_slots(t: TestDb) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(&t, registry, config(Mode::Pool).async_threads(2));
    for (i, age) in [(0, 0), (1, 7200)] {
        let row = queue
            .enqueue::<Record>(&(vec![json!(i)], Map::new()))
            .await
            .unwrap()
            .into_task()
            .unwrap();
        let mut am = row.into_active_model();
        am.locked_by = Set(Some("dead-host:1:00000000".into()));
        am.locked_at = Set(Some(Utc::now() - TimeDelta::seconds(age)));
        am.update(&t.db).await.unwrap();
    }
    for i in 10..14 {
        queue
            .enqueue::<Record>(&(vec![json!(i)], Map::new()))
            .await
            .unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for(
        "the four new tasks and the expired one to run",
        WAIT,
        || async { record.calls().len() == 5 },
    )
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let left = tasks(&t).await;
    assert_eq!(
        left.len(),
        1,
        "only the freshly locked row of the other runner remains"
    );
    assert_eq!(left[0].locked_by.as_deref(), Some("dead-host:1:00000000"));
    t
}

// Executors live on their own threads: a body that blocks its thread does
// not hold up the others.
async fn a_blocking_task_does_not_stall_the_others(t: TestDb) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone()).register(Blocking);
    let queue = queue_with(&t, registry, config(Mode::Pool).async_threads(2));
    queue
        .enqueue::<Blocking>(&(3_000,))
        .priority(10)
        .await
        .unwrap();
    for i in 0..5 {
        queue
            .enqueue::<Record>(&(vec![json!(i)], Map::new()))
            .await
            .unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("the quick tasks to finish", WAIT, || async {
        record.calls().len() == 5
    })
    .await;
    let blocking_still_running = task_row::Entity::find()
        .filter(task_row::Column::TaskName.eq("blocking"))
        .count(&t.db)
        .await
        .unwrap();
    assert_eq!(
        blocking_still_running, 1,
        "the quick tasks finished while the blocking one ran"
    );
    runner.shutdown(Duration::from_secs(20)).await;
    assert!(tasks(&t).await.is_empty());
    t
}

// An enqueue in the same process wakes the poller: with a 1-hour poll
// interval the task still runs.
async fn enqueue_wakes_the_runner(t: TestDb) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(
        &t,
        registry,
        config(Mode::Pool).sleep(Duration::from_secs(3600)),
    );
    let runner = Runner::start(queue.clone()).unwrap();
    tokio::task::yield_now().await;
    for i in 0..3 {
        queue
            .enqueue::<Record>(&(vec![json!(i)], Map::new()))
            .await
            .unwrap();
        wait_for("the enqueued task to run", WAIT, || async {
            record.calls().len() == i as usize + 1
        })
        .await;
    }
    runner.shutdown(Duration::from_secs(5)).await;
    t
}

// Another process's enqueue (here: another connection, with its own
// queue) wakes an idle runner whose poll is an hour away: LISTEN/NOTIFY on
// PostgreSQL, the watch on SQLite and MySQL.
async fn an_enqueue_from_another_process_wakes_an_idle_runner(t: TestDb) -> TestDb {
    let record = Record::default();
    let registry = Registry::new();
    registry.register(record.clone());
    let queue = queue_with(
        &t,
        registry,
        config(Mode::Pool).sleep(Duration::from_secs(3600)),
    );
    let runner = Runner::start(queue.clone()).unwrap();
    let elsewhere = Queue::new(background_tasks::db::connect(Some(&t.url)).await.unwrap());
    for i in 0..3 {
        // Let the runner go idle (and its watch back off) first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        elsewhere
            .enqueue::<Record>(&(vec![json!(i)], Map::new()))
            .await
            .unwrap();
        wait_for("the task enqueued elsewhere to run", WAIT, || async {
            record.calls().len() == i as usize + 1
        })
        .await;
    }
    runner.shutdown(Duration::from_secs(5)).await;
    t
}

/// Collects (level, target) of every event logged on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((*meta.level(), meta.target().to_owned()));
    }
}

impl Captured {
    fn take(&self) -> Vec<tracing::Level> {
        self.0
            .lock()
            .unwrap()
            .drain(..)
            .filter(|(_, target)| target.starts_with("background_tasks"))
            .map(|(level, _)| level)
            .collect()
    }
}

// LoggingTestCase: a success logs nothing above info; a failure logs an
// error and no warning. (Outcomes are logged by the Scheduler, which runs on
// the test's thread in pool mode too, so a thread-local subscriber sees them.)
async fn logging_levels(t: TestDb, mode: Mode) -> TestDb {
    use tracing_subscriber::layer::SubscriberExt;
    let registry = Registry::new();
    registry.register(Record::default()).register(Fail);
    let queue = queue_with(&t, registry, config(mode));
    queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .await
        .unwrap();
    let captured = Captured::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    assert_eq!(drain(&queue, mode).await, 1);
    let levels = captured.take();
    assert!(!levels.is_empty());
    assert!(
        levels.iter().all(|l| *l >= tracing::Level::INFO),
        "success: {levels:?}"
    );

    queue.enqueue::<Fail>(&(1,)).await.unwrap();
    assert_eq!(drain(&queue, mode).await, 1);
    let levels = captured.take();
    assert!(
        levels.contains(&tracing::Level::ERROR),
        "failure: {levels:?}"
    );
    assert!(
        !levels.contains(&tracing::Level::WARN),
        "failure: {levels:?}"
    );
    t
}

// DatabaseOutageTestCase.test_dropped_db_connection: a warning, no error,
// no crash; a runner keeps running.
async fn database_outage_logs_a_warning(t: TestDb, mode: Mode) -> TestDb {
    use tracing_subscriber::layer::SubscriberExt;
    let registry = Registry::new();
    registry.register(Record::default());
    let broken = sea_orm::Database::connect(&t.url).await.unwrap();
    let queue = Queue::with_parts(broken.clone(), registry, config(mode).build().unwrap());
    queue
        .enqueue::<Record>(&(vec![], Map::new()))
        .await
        .unwrap();
    broken.close_by_ref().await.unwrap();
    let captured = Captured::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    match mode {
        Mode::Sequential => assert!(!queue.run_next_task().await),
        Mode::Pool => {
            // The runner's first poll fails at start; shutdown waits for it.
            let runner = Runner::start(queue.clone()).unwrap();
            runner.shutdown(Duration::from_secs(5)).await;
        }
    }
    let levels = captured.take();
    assert!(levels.contains(&tracing::Level::WARN), "{levels:?}");
    assert!(!levels.contains(&tracing::Level::ERROR), "{levels:?}");
    assert_eq!(tasks(&t).await.len(), 1, "nothing lost");
    t
}
