//! Cron schedules in the database (issue 8): created, listed, paused and
//! removed; each occurrence enqueued exactly once with several runners
//! alive over simulated time; missed occurrences skipped or run once; a
//! schedule created or resumed elsewhere (another connection, the CLI)
//! while runners are up fires from its next occurrence, with no warning
//! (issue 15).

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::cron::{self, Missed, NewSchedule};
use background_tasks::{
    Clock, Config, Error, Registry, Runner, Task, TaskContext, TaskError, runner_row, task_row,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    schedules_are_created_listed_paused_and_removed,
    several_runners_enqueue_each_occurrence_once,
    concurrent_firing_enqueues_an_occurrence_once,
    missed_occurrences_are_skipped_or_run_once,
    a_schedule_made_elsewhere_fires_from_its_next_occurrence,
    a_schedule_added_and_resumed_by_the_cli_fires_from_its_next_occurrence,
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
        runners.push(Runner::start(t.queue(registry, config)).unwrap());
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

    // Run-once with an occurrence of the last minute due as well: that one
    // runs, the missed ones before it are skipped.
    cron::create(
        &t.db,
        report("minutely-catcher", "* * * * *").missed(Missed::RunOnce),
        at(6, 0, 20),
    )
    .await
    .unwrap();
    let fired = cron::enqueue_due(&t.db, at(6, 5, 30)).await.unwrap();
    let times: Vec<DateTime<Utc>> = fired.enqueued.iter().map(|t| t.run_at).collect();
    assert_eq!(times, vec![at(6, 5, 0)]);
    assert_eq!(fired.skipped, 4, "06:01 to 06:04");
    t
}

/// Every event logged on this thread (where a started runner's scheduler
/// runs), as `LEVEL field=value ...`.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields<'a>(&'a mut String);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                write!(self.0, " {}={value:?}", field.name()).unwrap();
            }
        }
        let mut line = event.metadata().level().to_string();
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
}

impl Logged {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// `at` plus `seconds` (fractions allowed).
fn plus(at: DateTime<Utc>, seconds: f64) -> DateTime<Utc> {
    at + TimeDelta::milliseconds((seconds * 1000.0) as i64)
}

/// Every second from `first` to `last`, both included.
fn seconds(first: DateTime<Utc>, last: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut times = vec![first];
    while *times.last().unwrap() < last {
        times.push(plus(*times.last().unwrap(), 1.0));
    }
    times
}

async fn occurrence_times(t: &TestDb) -> Vec<DateTime<Utc>> {
    occurrences(t)
        .await
        .iter()
        .map(|task| task.run_at)
        .collect()
}

/// Regression: runners read schedules made elsewhere only at their next
/// heartbeat, then enqueued only the latest of the occurrences since and
/// warned that the others were "missed while no runner was alive". The
/// runners here are up (simulated time); the schedule is created and
/// resumed from another connection, and the runners first see it 9.5 s of
/// simulated time after.
async fn a_schedule_made_elsewhere_fires_from_its_next_occurrence(t: TestDb) -> TestDb {
    use tracing_subscriber::layer::SubscriberExt;
    let logged = Logged::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
    let start = plus(at(9, 0, 0), 0.2);
    let clock = Clock::manual(start);
    let mut runners = Vec::new();
    for _ in 0..3 {
        let registry = Registry::new();
        registry.register(Other);
        let config = Config::builder()
            .clock(clock.clone())
            .lease(Duration::from_secs(3))
            .build()
            .unwrap();
        runners.push(Runner::start(t.queue(registry, config)).unwrap());
    }
    let db = t.db.clone();
    wait_for("three runners to register", Duration::from_secs(20), || {
        let db = db.clone();
        async move { runner_row::Entity::find().count(&db).await.unwrap() == 3 }
    })
    .await;

    let elsewhere = background_tasks::db::connect(Some(&t.url)).await.unwrap();
    let schedule = cron::create(&elsewhere, report("every-second", "* * * * * *"), start)
        .await
        .unwrap();
    assert_eq!(schedule.next_fire_at, at(9, 0, 1));
    clock.set(plus(start, 9.3));
    let created = seconds(at(9, 0, 1), at(9, 0, 9));
    wait_for_occurrence(&t, schedule.id, at(9, 0, 9)).await;
    // Each runner looks every second: still one task per occurrence.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(2_100) {
        assert_eq!(occurrence_times(&t).await, created);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Paused from 09:00:09.5 to 09:00:20.5, resumed elsewhere: its first
    // occurrence after the resume is 09:00:21.
    assert!(cron::pause(&elsewhere, "every-second").await.unwrap());
    let resumed_at = plus(at(9, 0, 20), 0.5);
    clock.set(resumed_at);
    assert!(
        cron::resume(&elsewhere, "every-second", resumed_at)
            .await
            .unwrap()
    );
    clock.set(plus(at(9, 0, 25), 0.5));
    let expected: Vec<DateTime<Utc>> = created
        .iter()
        .copied()
        .chain(seconds(at(9, 0, 21), at(9, 0, 25)))
        .collect();
    wait_for_occurrence(&t, schedule.id, at(9, 0, 25)).await;
    for runner in runners {
        runner.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(
        occurrence_times(&t).await,
        expected,
        "one task per occurrence, none for the pause"
    );
    let lines = logged.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("enqueued cron.report for the occurrence at 2026-03-02 09:00:01")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("missed")),
        "nothing was missed: {lines:#?}"
    );

    // Really missed (no runner up from 09:00:25 to 09:05:00.5): warned,
    // and skipped but for the last minute's, which are not missed.
    let fired = cron::enqueue_due(&t.db, plus(at(9, 5, 0), 0.5))
        .await
        .unwrap();
    assert_eq!(fired.skipped, 3 * 60 + 35, "09:00:26 to 09:04:00");
    assert_eq!(fired.enqueued.len(), 60, "09:04:01 to 09:05:00");
    let warned: Vec<String> = logged
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("WARN") && l.contains("missed"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].contains("missed=215"), "{warned:#?}");
    t
}

/// `bgtasks ARGS` on the test's database.
fn bgtasks(t: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bgtasks"));
    command.env("DATABASE_URL", &t.url).env("RUST_LOG", "info");
    command
}

fn cli(t: &TestDb, args: &[&str]) -> serde_json::Value {
    let output = bgtasks(t).arg("--json").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "bgtasks {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A `bgtasks process` runner, its log in a file.
struct Process {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Process {
    fn start(t: &TestDb) -> Process {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = bgtasks(t)
            .args(["process", "--sleep", "0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap();
        Process { child, log }
    }

    /// SIGTERM, a graceful exit; its log.
    fn stop(mut self) -> String {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(self.log.path()).unwrap();
        assert!(status.success(), "{log}");
        log
    }
}

/// Waits until the occurrence of `schedule_id` at `at` is enqueued.
async fn wait_for_occurrence(t: &TestDb, schedule_id: i32, at: DateTime<Utc>) {
    let key = cron::occurrence_key(schedule_id, at);
    wait_for(
        &format!("the occurrence at {at}"),
        Duration::from_secs(60),
        || {
            let (db, key) = (t.db.clone(), key.clone());
            async move {
                task_row::Entity::find()
                    .filter(task_row::Column::UniqueKey.eq(key))
                    .count(&db)
                    .await
                    .unwrap()
                    == 1
            }
        },
    )
    .await;
}

/// The same, from the user's side: three `bgtasks process` runners (which
/// read schedules made elsewhere at their next heartbeat, up to 10 s
/// later), a schedule added, paused and resumed with `bgtasks cron`.
async fn a_schedule_added_and_resumed_by_the_cli_fires_from_its_next_occurrence(
    t: TestDb,
) -> TestDb {
    let runners: Vec<Process> = (0..3).map(|_| Process::start(&t)).collect();
    wait_for(
        "three runners to register",
        Duration::from_secs(30),
        || async { runner_row::Entity::find().count(&t.db).await.unwrap() == 3 },
    )
    .await;

    let added = cli(
        &t,
        &[
            "cron",
            "add",
            "every-second",
            "--cron",
            "* * * * * *",
            "--task",
            "cron.report",
            "--allow-unknown",
        ],
    );
    let id = added["schedule"]["id"].as_i64().unwrap() as i32;
    let first: DateTime<Utc> =
        serde_json::from_value(added["schedule"]["next_fire_at"].clone()).unwrap();
    // Past every runner's next heartbeat.
    wait_for_occurrence(&t, id, plus(first, 11.0)).await;
    cli(&t, &["cron", "pause", "every-second"]);
    let before_pause = occurrence_times(&t).await;
    let last = *before_pause.last().unwrap();
    assert_eq!(
        before_pause,
        seconds(first, last),
        "every occurrence from the first after `cron add`, each once"
    );

    wait_for(
        "occurrences to pass while paused",
        Duration::from_secs(10),
        || async { Utc::now() > plus(last, 3.0) },
    )
    .await;
    cli(&t, &["cron", "resume", "every-second"]);
    let resumed = cron::get(&t.db, "every-second")
        .await
        .unwrap()
        .unwrap()
        .next_fire_at;
    assert!(resumed > plus(last, 3.0), "{resumed} after {last}");
    wait_for_occurrence(&t, id, plus(resumed, 11.0)).await;
    cli(&t, &["cron", "pause", "every-second"]);
    let all = occurrence_times(&t).await;
    let after_resume = &all[before_pause.len()..];
    assert_eq!(all[..before_pause.len()], before_pause[..]);
    assert_eq!(
        after_resume,
        seconds(resumed, *after_resume.last().unwrap()),
        "every occurrence from the first after `cron resume`, each once, none of the pause"
    );

    let logs: Vec<String> = runners.into_iter().map(Process::stop).collect();
    assert!(
        logs.iter().any(|log| log.contains("enqueued cron.report")),
        "{logs:#?}"
    );
    for log in &logs {
        assert!(!log.contains("missed"), "nothing was missed: {log}");
    }
    t
}
