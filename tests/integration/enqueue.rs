//! The enqueue API: rows column for column as the seed writes them, the
//! scheduling options and actions, transactions, bulk, and bad input.
//! Ports TestSchedulingTasks, TestTasks (scheduling parts), TestTaskModel,
//! TestBackgroundDecorator.test_launch_sync and ArgumentsWithDictTestCase.

use std::sync::{Arc, Mutex};

use background_tasks::{
    Action, Config, Creator, Enqueued, Error, Event, Registry, Schedule, Task, TaskSpec,
    completed_task, repeat, task_row,
};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel, PaginatorTrait,
    TransactionTrait,
};
use serde_json::json;

use crate::fixture::TestDb;
use crate::tasks::*;

fn queue(t: &TestDb) -> background_tasks::Queue {
    t.queue(Registry::new(), Config::default())
}

async fn rows(t: &TestDb) -> Vec<task_row::Model> {
    task_row::Entity::find().all(&t.db).await.unwrap()
}

fn assert_about(actual: DateTime<Utc>, expected: DateTime<Utc>) {
    let gap = (actual - expected).abs();
    assert!(
        gap <= TimeDelta::seconds(1),
        "{actual} is not within 1 s of {expected}"
    );
}

on_all_backends!(
    background_gets_scheduled,
    rows_match_the_python_vectors_column_for_column,
    run_task_return_value,
    schedule_forms,
    default_schedule_used_for_run_at,
    default_schedule_used_for_priority_and_queue,
    non_default_schedule_used,
    zero_schedule_falls_back_to_the_default,
    verbose_name_creator_and_repeat_are_stored,
    reschedule_existing,
    reschedule_existing_respects_locks_and_queue,
    check_existing,
    remove_existing_tasks,
    arguments_with_int_keyed_dict,
    launch_sync_writes_nothing,
    enqueue_with_follows_the_callers_transaction,
    bulk_enqueue,
    bad_input_writes_nothing,
    created_event_once_per_insert,
    get_and_drop_task,
);

// TestSchedulingTasks.test_background_gets_scheduled
async fn background_gets_scheduled(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let before = Utc::now();
    let stored = queue.enqueue::<Scheduled>(&(1,)).await.unwrap();
    let all = rows(&t).await;
    assert_eq!(all.len(), 1);
    let row = &all[0];
    assert_eq!(row.task_name, "test_background_gets_scheduled");
    assert_eq!(row.task_params, "[[1], {}]");
    assert_eq!(row.task_hash, "e34cb140774b599c32e2c256b9c47001cff167d8");
    assert_eq!(row.priority, 0);
    assert_eq!(row.repeat, 0);
    assert_eq!(row.attempts, 0);
    assert_eq!(row.last_error, "");
    assert!(!row.has_error());
    assert_eq!(row.queue, None);
    assert_eq!(row.verbose_name, None);
    assert_eq!(row.repeat_until, None);
    assert_eq!(row.failed_at, None);
    assert_eq!(row.locked_by, None);
    assert_eq!(row.locked_at, None);
    assert_eq!(row.creator_content_type_id, None);
    assert_eq!(row.creator_object_id, None);
    assert_about(row.run_at, before);
    assert_eq!(stored.task(), Some(row));
    t
}

// §2.5: all six vectors through the API, and every column of the stored row.
async fn rows_match_the_python_vectors_column_for_column(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let vectors = [
        (
            "mytask",
            json!([]),
            json!({}),
            "[[], {}]",
            "5cacd7d4f2c0115060ced6538a800cf0eb0bd0d1",
        ),
        (
            "test_background_gets_scheduled",
            json!([1]),
            json!({}),
            "[[1], {}]",
            "e34cb140774b599c32e2c256b9c47001cff167d8",
        ),
        (
            "mytask",
            json!([1, "é"]),
            json!({"b": 2, "a": {"z": 1, "y": 2}}),
            r#"[[1, "\u00e9"], {"a": {"y": 2, "z": 1}, "b": 2}]"#,
            "a642c3045f5b5c283081651418d872f74aad6e3e",
        ),
        (
            "send",
            json!(["a@b.c"]),
            json!({"n": 1.5, "ok": true, "x": null}),
            r#"[["a@b.c"], {"n": 1.5, "ok": true, "x": null}]"#,
            "b13d70dae85a84d640c9f2d4c88b8843f6d276fa",
        ),
        (
            "k",
            json!([{"22222": 2, "11111": 1}]),
            json!({}),
            r#"[[{"11111": 1, "22222": 2}], {}]"#,
            "b2eab0915d72f2527fe1102e2807d0b7379592ab",
        ),
        (
            "u",
            json!(["日本"]),
            json!({"emoji": "😀"}),
            r#"[["\u65e5\u672c"], {"emoji": "\ud83d\ude00"}]"#,
            "1972653ac92a1a21f2ad63bae0e59aa9b3d9483f",
        ),
    ];
    for (name, args, kwargs, params, hash) in vectors {
        let run_at = DateTime::parse_from_rfc3339("2031-05-06T07:08:09.123456Z")
            .unwrap()
            .to_utc();
        let stored = queue
            .enqueue_call(name, &args, &kwargs)
            .schedule(run_at)
            .await
            .unwrap()
            .into_task()
            .unwrap();
        let read = task_row::Entity::find_by_id(stored.id)
            .one(&t.db)
            .await
            .unwrap()
            .unwrap();
        let expected = task_row::Model {
            id: stored.id,
            task_name: name.to_owned(),
            task_params: params.to_owned(),
            task_hash: hash.to_owned(),
            verbose_name: None,
            priority: 0,
            run_at,
            repeat: 0,
            repeat_until: None,
            queue: None,
            attempts: 0,
            failed_at: None,
            last_error: String::new(),
            locked_by: None,
            locked_at: None,
            creator_content_type_id: None,
            creator_object_id: None,
            unique_key: None,
            policy: None,
            cancel_requested_at: None,
            trace_context: None,
            limit_key: None,
        };
        assert_eq!(read, expected, "vector {name}");
        assert_eq!(stored, expected, "returned row of vector {name}");
    }
    // Typed params produce the same text as the explicit call.
    let stored = queue
        .enqueue::<WithDict>(&([(22222, 2), (11111, 1)].into(),))
        .await
        .unwrap();
    assert_eq!(
        stored.task().unwrap().task_hash,
        "b2eab0915d72f2527fe1102e2807d0b7379592ab"
    );
    t
}

// TestTasks.test_run_task_return_value
async fn run_task_return_value(t: TestDb) -> TestDb {
    let stored = queue(&t)
        .enqueue::<Add>(&(2, 3))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let read = task_row::Entity::find_by_id(stored.id)
        .one(&t.db)
        .await
        .unwrap();
    assert_eq!(Some(stored), read);
    t
}

// TestTaskSchedule.test_run_at, through the database.
async fn schedule_forms(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let now = Utc::now();
    let in_90 = queue
        .enqueue::<Add>(&(1, 1))
        .schedule(90)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_about(in_90.run_at, now + TimeDelta::seconds(90));
    let in_35 = queue
        .enqueue::<Add>(&(1, 2))
        .schedule(std::time::Duration::from_secs(35))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_about(in_35.run_at, now + TimeDelta::seconds(35));
    let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.678901Z")
        .unwrap()
        .to_utc();
    let exact = queue
        .enqueue::<Add>(&(1, 3))
        .schedule(at)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(exact.run_at, at);
    let read = task_row::Entity::find_by_id(exact.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.run_at, at, "an absolute time is stored exactly");
    let unset = queue
        .enqueue::<Add>(&(1, 4))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_about(unset.run_at, now);
    t
}

// TestTasks.test_default_schedule_used_for_run_at
async fn default_schedule_used_for_run_at(t: TestDb) -> TestDb {
    let now = Utc::now();
    let stored = queue(&t)
        .enqueue::<Delayed>(&Mail { to: "a@b.c".into() })
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_about(stored.run_at, now + TimeDelta::seconds(60));
    assert_eq!(stored.task_params, r#"[[], {"to": "a@b.c"}]"#);
    t
}

// TestTasks.test_default_schedule_used_for_priority, and the decorator queue
// (checklist 16, 19): call-time values override field by field.
async fn default_schedule_used_for_priority_and_queue(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let mail = Mail { to: "x".into() };
    let stored = queue
        .enqueue::<Prioritized>(&mail)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(stored.priority, 2);
    assert_eq!(stored.queue.as_deref(), Some("mail"));

    let overridden = queue
        .enqueue::<Prioritized>(&mail)
        .queue("urgent")
        .schedule(Schedule::new().priority(4))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(
        overridden.priority, 4,
        "a call-time schedule priority beats the default"
    );
    assert_eq!(overridden.queue.as_deref(), Some("urgent"));

    let call_priority = queue
        .enqueue::<Prioritized>(&mail)
        .schedule(Schedule::new().priority(4))
        .priority(9)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(
        call_priority.priority, 9,
        "call-time priority beats both schedules"
    );
    t
}

// TestTasks.test_non_default_schedule_used
async fn non_default_schedule_used(t: TestDb) -> TestDb {
    let at = DateTime::parse_from_rfc3339("2029-12-31T23:59:58Z")
        .unwrap()
        .to_utc();
    let stored = queue(&t)
        .enqueue::<Delayed>(&Mail { to: "x".into() })
        .schedule(at)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(stored.run_at, at);
    t
}

// Checklist 17, the seed's quirk kept: a call-time 0 or zero duration falls
// back to the decorator's run_at.
async fn zero_schedule_falls_back_to_the_default(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let now = Utc::now();
    let mail = Mail { to: "x".into() };
    for stored in [
        queue.enqueue::<Delayed>(&mail).schedule(0).await.unwrap(),
        queue
            .enqueue::<Delayed>(&mail)
            .schedule(TimeDelta::zero())
            .await
            .unwrap(),
    ] {
        assert_about(stored.task().unwrap().run_at, now + TimeDelta::seconds(60));
    }
    let no_default = queue.enqueue::<Add>(&(0, 0)).schedule(0).await.unwrap();
    assert_about(no_default.task().unwrap().run_at, now);
    t
}

// TestTasks.test_verbose_name_param, test_creator_param; TestTaskModel.test_repeat,
// test_str, test_creator.
async fn verbose_name_creator_and_repeat_are_stored(t: TestDb) -> TestDb {
    let until = Utc::now() + TimeDelta::weeks(1);
    let until = DateTime::from_timestamp_micros(until.timestamp_micros()).unwrap();
    let stored = queue(&t)
        .enqueue::<Add>(&(1, 2))
        .verbose_name("My Task")
        .creator(Creator::new(4, 17))
        .repeat(repeat::HOURLY)
        .repeat_until(until)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let read = task_row::Entity::find_by_id(stored.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.verbose_name.as_deref(), Some("My Task"));
    assert_eq!(read.creator_content_type_id, Some(4));
    assert_eq!(read.creator_object_id, Some(17));
    assert_eq!(read.repeat, 3600);
    assert_eq!(read.repeat_until, Some(until));
    assert!(read.is_repeating());
    assert_eq!(read.to_string(), "My Task");
    let unnamed = queue(&t)
        .enqueue::<Add>(&(5, 5))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(unnamed.to_string(), "add");
    t
}

// TestSchedulingTasks.test_reschedule_existing
async fn reschedule_existing(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let now = Utc::now();
    let first = queue.enqueue::<Rescheduling>(&()).await.unwrap();
    assert!(
        first.task().is_some(),
        "nothing to reschedule yet: inserted"
    );
    let second = queue
        .enqueue::<Rescheduling>(&())
        .schedule(90)
        .await
        .unwrap();
    assert_eq!(second, Enqueued::Rescheduled { count: 1 });
    let all = rows(&t).await;
    assert_eq!(all.len(), 1);
    assert_about(all[0].run_at, now + TimeDelta::seconds(90));
    let third = queue
        .enqueue::<Rescheduling>(&())
        .schedule(Schedule::new().priority(8))
        .await
        .unwrap();
    assert_eq!(third, Enqueued::Rescheduled { count: 1 });
    let all = rows(&t).await;
    assert_eq!(all[0].priority, 8);
    assert_about(all[0].run_at, now);
    t
}

// RESCHEDULE_EXISTING only touches unlocked rows (or locks older than
// MAX_RUN_TIME) in the given queue.
async fn reschedule_existing_respects_locks_and_queue(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let stored = queue
        .enqueue::<Rescheduling>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let mut locked = stored.clone().into_active_model();
    locked.locked_by = Set(Some("4242".into()));
    locked.locked_at = Set(Some(Utc::now()));
    locked.update(&t.db).await.unwrap();

    let inserted = queue
        .enqueue::<Rescheduling>(&())
        .schedule(30)
        .await
        .unwrap();
    assert!(
        inserted.task().is_some(),
        "a freshly locked row is not rescheduled"
    );

    let mut expired = stored.into_active_model();
    expired.locked_at = Set(Some(Utc::now() - TimeDelta::seconds(3602)));
    expired.update(&t.db).await.unwrap();
    let moved = queue
        .enqueue::<Rescheduling>(&())
        .schedule(30)
        .await
        .unwrap();
    assert_eq!(
        moved,
        Enqueued::Rescheduled { count: 2 },
        "an expired lock counts as unlocked"
    );

    let other_queue = queue
        .enqueue::<Rescheduling>(&())
        .queue("other")
        .await
        .unwrap();
    assert!(
        other_queue.task().is_some(),
        "rows of other queues are not existing ones"
    );
    assert_eq!(rows(&t).await.len(), 3);
    t
}

// TestSchedulingTasks.test_check_existing
async fn check_existing(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let now = Utc::now();
    let first = queue
        .enqueue::<Checking>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let second = queue.enqueue::<Checking>(&()).schedule(90).await.unwrap();
    assert_eq!(second, Enqueued::AlreadyExists { id: first.id });
    let all = rows(&t).await;
    assert_eq!(all.len(), 1);
    assert_about(all[0].run_at, now);
    // The action may also come from the call.
    let call = queue
        .enqueue::<Add>(&(1, 1))
        .schedule(Schedule::new().action(Action::CheckExisting))
        .await
        .unwrap();
    assert!(call.task().is_some());
    let again = queue
        .enqueue::<Add>(&(1, 1))
        .schedule(Schedule::new().action(Action::CheckExisting))
        .await
        .unwrap();
    assert!(matches!(again, Enqueued::AlreadyExists { .. }));
    t
}

// Checklist 20: same-hash rows with locked_at NULL go, in any queue; locked rows stay.
async fn remove_existing_tasks(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let p = ("x".to_owned(),);
    let waiting = queue
        .enqueue::<Replacing>(&p)
        .queue("a")
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let other = queue
        .enqueue::<Replacing>(&("y".to_owned(),))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let locked = queue
        .enqueue::<Replacing>(&p)
        .queue("b")
        .await
        .unwrap()
        .into_task()
        .unwrap();
    // The third call already removed `waiting`; lock the row it inserted.
    assert!(
        task_row::Entity::find_by_id(waiting.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none()
    );
    let mut am = locked.clone().into_active_model();
    am.locked_by = Set(Some("1".into()));
    am.locked_at = Set(Some(Utc::now() - TimeDelta::days(2)));
    am.update(&t.db).await.unwrap();

    let newest = queue
        .enqueue::<Replacing>(&p)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let ids: Vec<i32> = rows(&t).await.iter().map(|r| r.id).collect();
    assert!(ids.contains(&locked.id), "a row with locked_at set is kept");
    assert!(ids.contains(&other.id), "other params are untouched");
    assert!(ids.contains(&newest.id));
    assert_eq!(ids.len(), 3);

    // The call can switch it off.
    let kept = queue
        .enqueue::<Replacing>(&p)
        .remove_existing_tasks(false)
        .await
        .unwrap();
    assert!(kept.task().is_some());
    assert_eq!(rows(&t).await.len(), 4);
    t
}

// ArgumentsWithDictTestCase (enqueue part): int keys become sorted strings.
async fn arguments_with_int_keyed_dict(t: TestDb) -> TestDb {
    let params = ([(22222u32, 2), (11111, 1), (3, 0)].into(),);
    let stored = queue(&t)
        .enqueue::<WithDict>(&params)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(
        stored.task_params,
        r#"[[{"3": 0, "11111": 1, "22222": 2}], {}]"#
    );
    let decoded = WithDict::decode(&stored.task_params).unwrap();
    assert_eq!(decoded, params);
    assert_eq!(rows(&t).await.len(), 1);
    t
}

// TestBackgroundDecorator.test_launch_sync
async fn launch_sync_writes_nothing(t: TestDb) -> TestDb {
    assert_eq!(Add.now((2, 3)).await.unwrap(), 5);
    assert_eq!(task_row::Entity::find().count(&t.db).await.unwrap(), 0);
    assert_eq!(
        completed_task::Entity::find().count(&t.db).await.unwrap(),
        0
    );
    t
}

async fn enqueue_with_follows_the_callers_transaction(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let txn = t.db.begin().await.unwrap();
    queue.enqueue_with::<Add, _>(&txn, &(1, 1)).await.unwrap();
    queue
        .enqueue_with::<Rescheduling, _>(&txn, &())
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    assert!(
        rows(&t).await.is_empty(),
        "rolled back with the caller's transaction"
    );

    let txn = t.db.begin().await.unwrap();
    queue.enqueue_with::<Add, _>(&txn, &(1, 1)).await.unwrap();
    queue.enqueue_with::<Checking, _>(&txn, &()).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(rows(&t).await.len(), 2);
    t
}

async fn bulk_enqueue(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let specs: Vec<TaskSpec> = (0..2_500)
        .map(|i| {
            TaskSpec::new::<Add>(&(i, i))
                .priority((i % 7) as i32)
                .queue("bulk")
        })
        .collect();
    assert_eq!(queue.enqueue_many(specs).await.unwrap(), 2_500);
    let all = rows(&t).await;
    assert_eq!(all.len(), 2_500);
    let row = all
        .iter()
        .find(|r| r.task_params == "[[7, 7], {}]")
        .unwrap();
    assert_eq!(row.priority, 0);
    assert_eq!(row.queue.as_deref(), Some("bulk"));
    assert_eq!(
        row.task_hash,
        background_tasks::params::task_hash("add", "[[7, 7], {}]")
    );

    // remove_existing_tasks in bulk: one DELETE for all hashes.
    let replace = vec![
        TaskSpec::new::<Add>(&(1, 1)).remove_existing_tasks(true),
        TaskSpec::new::<Add>(&(2, 2)).remove_existing_tasks(true),
    ];
    assert_eq!(queue.enqueue_many(replace).await.unwrap(), 2);
    assert_eq!(rows(&t).await.len(), 2_500);

    // Actions that need a look first are refused, and nothing is written.
    let mixed = vec![
        TaskSpec::new::<Add>(&(9_999, 1)),
        TaskSpec::new::<Checking>(&()),
    ];
    let err = queue.enqueue_many(mixed).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "action",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(rows(&t).await.len(), 2_500);
    t
}

// "Bad input": each gives an error naming the problem; nothing is written
// and nothing already there is removed.
async fn bad_input_writes_nothing(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let kept = queue
        .enqueue::<Replacing>(&("k".to_owned(),))
        .await
        .unwrap()
        .into_task()
        .unwrap();

    let err = queue.enqueue::<Measure>(&(f64::NAN,)).await.unwrap_err();
    assert!(matches!(err, Error::Params(_)), "{err}");
    assert!(err.to_string().contains("NaN"), "{err}");

    let mixed = json!([{"1": 1}]);
    let err = queue
        .enqueue_call("x", &mixed, &json!("not a map"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Params(_)), "{err}");

    let past = Utc::now() - TimeDelta::seconds(5);
    let err = queue
        .enqueue::<Replacing>(&("k".to_owned(),))
        .repeat(repeat::DAILY)
        .repeat_until(past)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "repeat_until",
                ..
            }
        ),
        "{err}"
    );

    let err = queue
        .enqueue::<Add>(&(1, 1))
        .queue("q".repeat(191))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("191 characters"), "{err}");
    let err = queue.enqueue::<Add>(&(1, 1)).queue("").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "queue",
                ..
            }
        ),
        "{err}"
    );
    let err = queue
        .enqueue::<Add>(&(1, 1))
        .verbose_name("v".repeat(256))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "verbose_name",
                ..
            }
        ),
        "{err}"
    );
    let err = queue.enqueue::<Add>(&(1, 1)).repeat(-1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "repeat",
                ..
            }
        ),
        "{err}"
    );
    // Django's PositiveIntegerField holds up to 2147483647 on PostgreSQL
    // and SQLite (4294967295 on MySQL, where this enqueue is valid).
    if t.backend != crate::fixture::Backend::MySql {
        let err = queue
            .enqueue::<Add>(&(1, 1))
            .creator(Creator::new(1, 3_000_000_000))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    option: "creator",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = queue
        .enqueue_call(&"n".repeat(191), &(), &())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "task_name",
                ..
            }
        ),
        "{err}"
    );

    let all = rows(&t).await;
    assert_eq!(all, vec![kept], "nothing written, nothing removed");
    t
}

// Checklist 23: task_created once per inserted row from the enqueue path only.
async fn created_event_once_per_insert(t: TestDb) -> TestDb {
    let queue = queue(&t);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    queue.events().subscribe(move |event| {
        if let Event::Created { task } = event {
            sink.lock().unwrap().push(task.id);
        }
    });
    let a = queue
        .enqueue::<Checking>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let _ = queue.enqueue::<Checking>(&()).await.unwrap();
    let b = queue
        .enqueue::<Rescheduling>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let _ = queue.enqueue::<Rescheduling>(&()).await.unwrap();
    queue
        .enqueue_many(vec![TaskSpec::new::<Add>(&(1, 1))])
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![a.id, b.id]);
    t
}

// Task.objects.get_task / drop_task.
async fn get_and_drop_task(t: TestDb) -> TestDb {
    let queue = queue(&t);
    queue.enqueue::<Add>(&(1, 2)).await.unwrap();
    queue.enqueue::<Add>(&(1, 2)).queue("other").await.unwrap();
    queue.enqueue::<Add>(&(2, 1)).await.unwrap();
    assert_eq!(queue.get_task::<Add>(&(1, 2)).await.unwrap().len(), 2);
    assert_eq!(queue.drop_task::<Add>(&(1, 2)).await.unwrap(), 2);
    assert!(queue.get_task::<Add>(&(1, 2)).await.unwrap().is_empty());
    assert_eq!(rows(&t).await.len(), 1);
    t
}
