//! Cron schedules in the database (issue 8): created, listed, paused and
//! removed; each occurrence enqueued exactly once with several runners
//! alive over simulated time; missed occurrences skipped or run once.

use std::time::Duration;

use background_tasks::cron::{self, Missed, NewSchedule};
use background_tasks::{
    Clock, Config, Error, Registry, Runner, Task, TaskContext, TaskError, task_row,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    schedules_are_created_listed_paused_and_removed,
    several_runners_enqueue_each_occurrence_once,
    concurrent_firing_enqueues_an_occurrence_once,
    missed_occurrences_are_skipped_or_run_once,
);

/// The scheduled task; no runner in these tests has a handler for it, so
/// every enqueued occurrence stays in the table to be counted.
struct Report;

impl Task for Report {
    type Params = (String,);
    type Output = ();
    fn name() -> &'static str {
        "cron.report"
    }
    async fn run(&self, _: (String,), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Something for the runners to know, so they start claiming.
struct Other;

impl Task for Other {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "cron.other"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, s).unwrap()
}

fn report(name: &str, cron: &str) -> NewSchedule {
    NewSchedule::new::<Report>(name, cron, &("sales".to_owned(),))
}

async fn occurrences(t: &TestDb) -> Vec<task_row::Model> {
    task_row::Entity::find()
        .filter(task_row::Column::TaskName.eq("cron.report"))
        .order_by_asc(task_row::Column::RunAt)
        .all(&t.db)
        .await
        .unwrap()
}

async fn schedules_are_created_listed_paused_and_removed(t: TestDb) -> TestDb {
    let now = at(9, 0, 30);
    // Bad input is refused with what to give, and nothing is stored.
    let err = cron::create(&t.db, report("r", "every day"), now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { option: "cron", .. }),
        "{err}"
    );
    let err = cron::create(
        &t.db,
        report("r", "0 7 * * *").timezone("Europe/Pariss"),
        now,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("IANA"), "{err}");
    let err = cron::create(&t.db, report("r", "0 7 * * *").queue(""), now)
        .await
        .unwrap_err();
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
    assert!(cron::list(&t.db).await.unwrap().is_empty());

    let created = cron::create(
        &t.db,
        report("morning", "30 7 * * MON-FRI")
            .timezone("Europe/Paris")
            .queue("reports")
            .priority(3)
            .verbose_name("Morning sales")
            .missed(Missed::RunOnce),
        now,
    )
    .await
    .unwrap();
    // Monday 2 March 2026, 09:00 UTC: Paris is UTC+1, so 07:30 Paris is
    // 06:30 UTC, already past; the next is Tuesday's.
    assert_eq!(
        created.next_fire_at,
        Utc.with_ymd_and_hms(2026, 3, 3, 6, 30, 0).unwrap()
    );
    assert_eq!(
        (
            created.timezone.as_str(),
            created.queue.as_deref(),
            created.priority
        ),
        ("Europe/Paris", Some("reports"), 3)
    );
    assert_eq!(created.task_params, r#"[["sales"], {}]"#);
    assert_eq!(created.missed, "run_once");
    let err = cron::create(&t.db, report("morning", "* * * * *"), now)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");
    cron::create(&t.db, report("hourly", "@hourly"), now)
        .await
        .unwrap();
    let names: Vec<String> = cron::list(&t.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["hourly", "morning"]);
    let upcoming = cron::upcoming(&created, now, 3).unwrap();
    assert_eq!(upcoming.len(), 3);
    assert_eq!(
        upcoming[2],
        Utc.with_ymd_and_hms(2026, 3, 5, 6, 30, 0).unwrap()
    );

    // Paused: nothing fires.
    assert!(cron::pause(&t.db, "hourly").await.unwrap());
    let fired = cron::enqueue_due(&t.db, at(11, 0, 1)).await.unwrap();
    assert!(fired.enqueued.is_empty());
    assert!(occurrences(&t).await.is_empty());
    // Resumed: from the first occurrence after the resume, the pause's
    // occurrences skipped.
    assert!(cron::resume(&t.db, "hourly", at(11, 30, 0)).await.unwrap());
    let hourly = cron::get(&t.db, "hourly").await.unwrap().unwrap();
    assert!(!hourly.paused);
    assert_eq!(hourly.next_fire_at, at(12, 0, 0));
    let fired = cron::enqueue_due(&t.db, at(12, 0, 2)).await.unwrap();
    assert_eq!(fired.enqueued.len(), 1);
    let task = &fired.enqueued[0];
    assert_eq!(task.run_at, at(12, 0, 0));
    assert_eq!(task.task_params, r#"[["sales"], {}]"#);

    // Removed: gone, and what it enqueued stays.
    assert!(cron::remove(&t.db, "hourly").await.unwrap());
    assert!(!cron::remove(&t.db, "hourly").await.unwrap());
    assert!(!cron::pause(&t.db, "hourly").await.unwrap());
    assert_eq!(occurrences(&t).await.len(), 1);
    t
}

async fn several_runners_enqueue_each_occurrence_once(t: TestDb) -> TestDb {
    let start = at(10, 0, 30);
    let clock = Clock::manual(start);
    let schedule = cron::create(&t.db, report("minutely", "* * * * *"), start)
        .await
        .unwrap();
    let mut runners = Vec::new();
    for _ in 0..3 {
        let registry = Registry::new();
        registry.register(Other);
        let config = Config::builder().clock(clock.clone()).build().unwrap();
        runners.push(Runner::start(t.queue(registry, config)));
    }
    // Five minutes of simulated time, a few seconds past each minute; the
    // runners look every second of real time, all of them each time.
    for minute in 1..=5u32 {
        clock.set(at(10, minute, 3));
        let db = t.db.clone();
        let key = cron::occurrence_key(schedule.id, at(10, minute, 0));
        wait_for("the occurrence's task", Duration::from_secs(20), || {
            let (db, key) = (db.clone(), key.clone());
            async move {
                task_row::Entity::find()
                    .filter(task_row::Column::UniqueKey.eq(key))
                    .count(&db)
                    .await
                    .unwrap()
                    == 1
            }
        })
        .await;
        // And it stays one while every runner looks again (each looks every
        // second): no second task for the same occurrence.
        let watched = std::time::Instant::now();
        while watched.elapsed() < Duration::from_millis(2_100) {
            let count = task_row::Entity::find()
                .filter(task_row::Column::UniqueKey.eq(key.clone()))
                .count(&t.db)
                .await
                .unwrap();
            assert_eq!(count, 1, "minute {minute}");
            assert_eq!(occurrences(&t).await.len(), minute as usize);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for runner in runners {
        runner.shutdown(Duration::from_secs(5)).await;
    }
    let tasks = occurrences(&t).await;
    let times: Vec<DateTime<Utc>> = tasks.iter().map(|task| task.run_at).collect();
    assert_eq!(
        times,
        (1..=5).map(|m| at(10, m, 0)).collect::<Vec<_>>(),
        "exactly one task per occurrence"
    );
    let stored = cron::get(&t.db, "minutely").await.unwrap().unwrap();
    assert_eq!(stored.last_fired_at, Some(at(10, 5, 0)));
    assert_eq!(stored.next_fire_at, at(10, 6, 0));
    t
}

async fn concurrent_firing_enqueues_an_occurrence_once(t: TestDb) -> TestDb {
    cron::create(&t.db, report("every-10-s", "*/10 * * * * *"), at(8, 0, 0))
        .await
        .unwrap();
    for round in 1..=3u32 {
        let now = at(8, 0, 10 * round) + TimeDelta::milliseconds(500);
        let firing = (0..8).map(|_| {
            let db = t.db.clone();
            async move { cron::enqueue_due(&db, now).await.unwrap() }
        });
        let fired = futures_util::future::join_all(firing).await;
        let enqueued: usize = fired.iter().map(|f| f.enqueued.len()).sum();
        assert_eq!(enqueued, 1, "round {round}: one of eight callers enqueues");
    }
    assert_eq!(occurrences(&t).await.len(), 3);
    t
}

async fn missed_occurrences_are_skipped_or_run_once(t: TestDb) -> TestDb {
    let created = at(0, 10, 0);
    cron::create(
        &t.db,
        report("skipper", "0 * * * *").missed(Missed::Skip),
        created,
    )
    .await
    .unwrap();
    cron::create(
        &t.db,
        report("catcher", "0 * * * *").missed(Missed::RunOnce),
        created,
    )
    .await
    .unwrap();
    // Every runner was down from 00:10 to 05:10: five occurrences missed.
    let fired = cron::enqueue_due(&t.db, at(5, 10, 0)).await.unwrap();
    assert_eq!(
        fired.enqueued.len(),
        1,
        "only the run-once schedule enqueues"
    );
    assert_eq!(
        fired.enqueued[0].run_at,
        at(5, 0, 0),
        "for the latest occurrence"
    );
    assert_eq!(fired.skipped, 4 + 5);
    for name in ["skipper", "catcher"] {
        let schedule = cron::get(&t.db, name).await.unwrap().unwrap();
        assert_eq!(schedule.next_fire_at, at(6, 0, 0), "{name} waits for 06:00");
    }
    // Back to normal: both fire on time.
    let fired = cron::enqueue_due(&t.db, at(6, 0, 20)).await.unwrap();
    assert_eq!(fired.enqueued.len(), 2);
    assert_eq!(fired.skipped, 0);
    let times: Vec<DateTime<Utc>> = occurrences(&t).await.iter().map(|t| t.run_at).collect();
    assert_eq!(times, vec![at(5, 0, 0), at(6, 0, 0), at(6, 0, 0)]);
    t
}
