//! Many runners, crashes and outages: nothing lost, nothing run twice.
//! Runner processes are real (the test binary re-run as `child_runner`),
//! killed with SIGKILL; databases lose their connections for real.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use background_tasks::{
    Config, Event, Queue, Registry, Runner, Task, TaskContext, TaskError, TaskSpec, admin,
    completed_task, task_row,
};
use chrono::{TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DbBackend, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, Statement,
};

use crate::child::{ChildRunner, create_ledger};
use crate::fixture::{Backend, TestDb, server_url, wait_for};
use crate::tasks::Nap;

const LONG_WAIT: Duration = Duration::from_secs(300);

fn lease_config(lease_ms: u64) -> background_tasks::ConfigBuilder {
    Config::builder()
        .run_async(true)
        .async_threads(2)
        .lease(Duration::from_millis(lease_ms))
        .sleep(Duration::from_millis(100))
}

async fn count_tasks(db: &DatabaseConnection) -> u64 {
    task_row::Entity::find().count(db).await.unwrap()
}

/// job → runners that executed it, from the ledger.
async fn ledger(db: &DatabaseConnection) -> HashMap<i64, Vec<String>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT job, runner FROM bgt_ledger",
        ))
        .await
        .unwrap();
    let mut runs: HashMap<i64, Vec<String>> = HashMap::new();
    for row in rows {
        let job: i64 = row.try_get_by_index(0).unwrap();
        let runner: String = row.try_get_by_index(1).unwrap();
        runs.entry(job).or_default().push(runner);
    }
    runs
}

/// job → history rows, from `background_task_completedtask`.
async fn history_per_job(db: &DatabaseConnection) -> HashMap<i64, usize> {
    let mut per_job = HashMap::new();
    for row in completed_task::Entity::find().all(db).await.unwrap() {
        let (args, _) = background_tasks::params::decode_call(&row.task_params).unwrap();
        *per_job.entry(args[0].as_i64().unwrap()).or_insert(0) += 1;
    }
    per_job
}

async fn enqueue_jobs(queue: &Queue, jobs: std::ops::Range<i64>, millis: u64) {
    let specs: Vec<TaskSpec> = jobs
        .map(|job| TaskSpec::call("ledger", &(job, millis), &(), queue.registry()))
        .collect();
    queue.enqueue_many(specs).await.unwrap();
}

on_server_backends!(
    many_runner_processes_drain_every_task_once,
    killed_runners_lose_nothing
);

// N runner processes on one database: every task ran, none twice.
async fn many_runner_processes_drain_every_task_once(t: TestDb) -> TestDb {
    const TASKS: i64 = 20_000;
    create_ledger(&t.db).await;
    let queue = t.queue(Registry::new(), Config::default());
    enqueue_jobs(&queue, 0..TASKS, 0).await;
    let started = Instant::now();
    let children: Vec<ChildRunner> = (0..4)
        .map(|_| ChildRunner::spawn(&t.url, 4, Duration::from_secs(5)))
        .collect();
    wait_for("4 runners to drain 20,000 tasks", LONG_WAIT, || async {
        count_tasks(&t.db).await == 0
    })
    .await;
    let elapsed = started.elapsed();
    for child in children {
        child.stop();
    }
    let runs = ledger(&t.db).await;
    assert_eq!(runs.len() as i64, TASKS, "every task ran");
    let twice: Vec<_> = runs.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "no task ran twice: {:?}",
        &twice[..twice.len().min(5)]
    );
    let history = history_per_job(&t.db).await;
    assert_eq!(history.len() as i64, TASKS);
    assert!(
        history.values().all(|n| *n == 1),
        "exactly one history row per task"
    );
    let by_runner: HashSet<&String> = runs.values().flatten().collect();
    eprintln!(
        "{:?}: 4 runner processes drained {TASKS} tasks in {:.1} s ({:.0} tasks/s), {} runners took part, 0 duplicates",
        t.backend,
        elapsed.as_secs_f64(),
        TASKS as f64 / elapsed.as_secs_f64(),
        by_runner.len()
    );
    t
}

// Chaos: kill -9 runners again and again while they drain. Every task ends
// with exactly one history row; a task ran twice only if it was in flight in
// a killed runner; the rescue comes within the lease, not MAX_RUN_TIME.
async fn killed_runners_lose_nothing(t: TestDb) -> TestDb {
    const TASKS: i64 = 3_000;
    const KILLS: usize = 4;
    // Short, but with room for heartbeats delayed by a busy machine.
    let lease = Duration::from_secs(2);
    create_ledger(&t.db).await;
    let queue = t.queue(Registry::new(), Config::default());
    enqueue_jobs(&queue, 0..TASKS, 20).await;
    let started = Instant::now();
    let mut children: Vec<ChildRunner> = (0..3)
        .map(|_| ChildRunner::spawn(&t.url, 4, lease))
        .collect();
    let mut killed: HashSet<String> = HashSet::new();
    for round in 0..KILLS {
        // Kill once the victim has surely started tasks.
        let victim_id = children[round % children.len()].runner_id.clone();
        wait_for("the victim to hold tasks", LONG_WAIT, || async {
            task_row::Entity::find()
                .filter(task_row::Column::LockedBy.eq(victim_id.as_str()))
                .count(&t.db)
                .await
                .unwrap()
                > 0
        })
        .await;
        let victim = children.remove(round % children.len());
        killed.insert(victim.runner_id.clone());
        victim.kill_hard();
        children.push(ChildRunner::spawn(&t.url, 4, lease));
    }
    let last_kill = Instant::now();
    wait_for("the survivors to drain every task", LONG_WAIT, || async {
        count_tasks(&t.db).await == 0
    })
    .await;
    let recovered_in = last_kill.elapsed();
    for child in children {
        child.stop();
    }
    let history = history_per_job(&t.db).await;
    assert_eq!(history.len() as i64, TASKS, "no task lost");
    assert!(
        history.values().all(|n| *n == 1),
        "exactly one history row per task"
    );
    let runs = ledger(&t.db).await;
    let twice: Vec<(&i64, &Vec<String>)> = runs.iter().filter(|(_, r)| r.len() > 1).collect();
    for (job, runners) in &twice {
        assert!(
            runners.iter().any(|r| killed.contains(r)),
            "job {job} ran twice without a kill: {runners:?}"
        );
    }
    assert!(
        // Per kill: the victim's 4 running tasks and the outcomes it had
        // computed and not yet written.
        twice.len() <= KILLS * (4 + background_tasks::MAX_UNWRITTEN_OUTCOMES),
        "at most the tasks in flight at the kills ran twice: {}",
        twice.len()
    );
    eprintln!(
        "{:?}: {TASKS} tasks, {KILLS} kill -9, {} ran twice (in flight at a kill), 0 lost; \
         drained {:.1} s after the last kill (lease {} s), {:.1} s in all",
        t.backend,
        twice.len(),
        recovered_in.as_secs_f64(),
        lease.as_secs(),
        started.elapsed().as_secs_f64()
    );
    t
}

on_all_backends!(
    a_dead_runners_tasks_come_back_within_the_lease,
    heartbeats_keep_long_tasks_from_being_taken,
    a_runner_whose_lease_was_stolen_cannot_complete,
    a_row_stolen_from_an_outcome_batch_leaves_the_rest_recorded,
    the_registry_shows_live_runners,
);

async fn a_dead_runners_tasks_come_back_within_the_lease(t: TestDb) -> TestDb {
    let nap = Nap::default();
    let registry = Registry::new();
    registry.register(nap.clone());
    let queue = t.queue(registry, lease_config(1_000).build().unwrap());
    let ours = queue
        .enqueue::<Nap>(&(0,))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let django = queue
        .enqueue::<Nap>(&(1,))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    for (row, locked_by) in [(ours, "dead-host:99:deadbeef"), (django, "4242")] {
        let mut am = row.into_active_model();
        am.locked_by = Set(Some(locked_by.to_owned()));
        am.locked_at = Set(Some(Utc::now() - TimeDelta::seconds(2)));
        am.update(&t.db).await.unwrap();
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for(
        "the dead runner's task to run again",
        Duration::from_secs(30),
        || async { nap.runs() == 1 },
    )
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let left = task_row::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].locked_by.as_deref(),
        Some("4242"),
        "a Django process_tasks lock (never renewed) still lasts MAX_RUN_TIME"
    );
    t
}

async fn heartbeats_keep_long_tasks_from_being_taken(t: TestDb) -> TestDb {
    let nap = Nap::default();
    let registry = Registry::new();
    registry.register(nap.clone());
    // A lease much shorter than the task: only renewal keeps it A's.
    let a = t.queue(registry.clone(), lease_config(1_500).build().unwrap());
    let b = t.queue(registry, lease_config(1_500).build().unwrap());
    a.enqueue::<Nap>(&(4_500,)).await.unwrap();
    let runner_a = Runner::start(a.clone()).unwrap();
    wait_for(
        "runner A to start the task",
        Duration::from_secs(30),
        || async { nap.runs() == 1 },
    )
    .await;
    let runner_b = Runner::start(b.clone()).unwrap();
    wait_for("the task to finish", Duration::from_secs(30), || async {
        count_tasks(&t.db).await == 0
    })
    .await;
    runner_b.shutdown(Duration::from_secs(5)).await;
    runner_a.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        nap.runs(),
        1,
        "runner B never took the task: A kept renewing its lease"
    );
    assert_eq!(
        completed_task::Entity::find().count(&t.db).await.unwrap(),
        1
    );
    t
}

/// What another runner taking the running task's row looks like: its
/// lock now names `thief:1:00000000`. The thief is the test's stand-in
/// for another process, so a database error on its side (a connection
/// refused under a loaded CI) is retried and printed rather than turned
/// into a failed attempt of the task it steals.
async fn hand_to_another_runner(
    db: &DatabaseConnection,
    ctx: &TaskContext,
) -> Result<(), TaskError> {
    let id = ctx.task_id().expect("a queued task has an id");
    let steal = task_row::Entity::update_many()
        .col_expr(
            task_row::Column::LockedBy,
            sea_orm::sea_query::Expr::value("thief:1:00000000"),
        )
        .filter(task_row::Column::Id.eq(id));
    let mut tries = 0;
    loop {
        match steal.clone().exec(db).await {
            Ok(done) if done.rows_affected == 1 => return Ok(()),
            Ok(done) => panic!("task {id}: {} rows stolen", done.rows_affected),
            Err(err) if tries < 20 => {
                tries += 1;
                eprintln!("the thief could not take task {id} yet ({err}); again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Simulates a pause long enough for the lease to pass: while it runs, it
/// hands its own row to another runner, as a rescue and a new claim would.
#[derive(Clone)]
struct PausedTooLong {
    db: DatabaseConnection,
    fail: bool,
}

impl Task for PausedTooLong {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "paused_too_long"
    }
    async fn run(&self, _: (), ctx: TaskContext) -> Result<(), TaskError> {
        hand_to_another_runner(&self.db, &ctx).await?;
        if self.fail {
            Err(TaskError::msg("too late anyway"))
        } else {
            Ok(())
        }
    }
}

async fn a_runner_whose_lease_was_stolen_cannot_complete(t: TestDb) -> TestDb {
    for fail in [false, true] {
        let registry = Registry::new();
        registry.register(PausedTooLong {
            db: t.db.clone(),
            fail,
        });
        let queue = t.queue(registry, Config::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        queue.events().subscribe(move |e| {
            let name = match e {
                Event::Successful { .. } => "successful",
                Event::Failed { .. } => "failed",
                Event::Rescheduled { .. } => "rescheduled",
                Event::Finished { .. } => "finished",
                _ => return,
            };
            sink.lock().unwrap().push(name);
        });
        let task = queue
            .enqueue::<PausedTooLong>(&())
            .await
            .unwrap()
            .into_task()
            .unwrap();
        assert!(queue.run_next_task().await);
        let row = task_row::Entity::find_by_id(task.id)
            .one(&t.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.locked_by.as_deref(),
            Some("thief:1:00000000"),
            "the new owner keeps it"
        );
        assert_eq!(row.attempts, 0, "no attempt recorded by the old owner");
        assert_eq!(row.last_error, "");
        assert_eq!(*seen.lock().unwrap(), vec!["finished"], "no outcome event");
        assert_eq!(
            completed_task::Entity::find().count(&t.db).await.unwrap(),
            0
        );
        admin::delete_tasks(&t.db, &[task.id]).await.unwrap();
    }
    t
}

/// Four bodies that end together; the one given `true` first hands its
/// row to another runner.
struct EndTogether {
    db: DatabaseConnection,
    gate: Arc<tokio::sync::Barrier>,
}

impl Task for EndTogether {
    type Params = bool;
    type Output = ();
    fn name() -> &'static str {
        "end_together"
    }
    async fn run(&self, steal: bool, ctx: TaskContext) -> Result<(), TaskError> {
        if steal {
            hand_to_another_runner(&self.db, &ctx).await?;
        }
        self.gate.wait().await;
        Ok(())
    }
}

/// The outcomes of tasks that end together are written as one batch; a
/// row of the batch another runner took meanwhile is left to it, and the
/// others are recorded (on MySQL the batch's delete finds one row fewer
/// than it was given, and the batch is written again, rows locked first).
async fn a_row_stolen_from_an_outcome_batch_leaves_the_rest_recorded(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(EndTogether {
        db: t.db.clone(),
        gate: Arc::new(tokio::sync::Barrier::new(4)),
    });
    let config = lease_config(30_000).tasks_per_thread(2).build().unwrap();
    assert_eq!(config.concurrency(), 4, "the four bodies run at once");
    let queue = t.queue(registry, config);
    let mut stolen_id = 0;
    for steal in [false, true, false, false] {
        let task = queue
            .enqueue::<EndTogether>(&steal)
            .await
            .unwrap()
            .into_task()
            .unwrap();
        if steal {
            stolen_id = task.id;
        }
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("the three held rows to be recorded", LONG_WAIT, || async {
        completed_task::Entity::find().count(&t.db).await.unwrap() == 3
    })
    .await;
    runner.shutdown(Duration::from_secs(10)).await;
    let left = task_row::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(left.len(), 1, "only the stolen row stays");
    assert_eq!(left[0].id, stolen_id);
    assert_eq!(left[0].locked_by.as_deref(), Some("thief:1:00000000"));
    assert_eq!(
        left[0].attempts, 0,
        "no attempt recorded by the old owner: {:?}",
        left[0]
    );
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert!(
        history.iter().all(|row| !row.task_params.contains("true")),
        "{history:?}"
    );
    t
}

async fn the_registry_shows_live_runners(t: TestDb) -> TestDb {
    let nap = Nap::default();
    let registry = Registry::new();
    registry.register(nap.clone());
    let queue = t.queue(registry, lease_config(1_500).queue("reg").build().unwrap());
    queue.enqueue::<Nap>(&(1_500,)).queue("reg").await.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for(
        "the registry to show the runner holding its task",
        Duration::from_secs(30),
        || async {
            let runners = admin::runners(&t.db, queue.config().lease(), Utc::now())
                .await
                .unwrap();
            runners
                .iter()
                .any(|r| r.runner.runner_id == queue.runner_id() && r.runner.running == 1)
        },
    )
    .await;
    let runners = admin::runners(&t.db, queue.config().lease(), Utc::now())
        .await
        .unwrap();
    let me = runners
        .iter()
        .find(|r| r.runner.runner_id == queue.runner_id())
        .unwrap();
    assert!(me.alive);
    assert_eq!(me.runner.pid as u32, std::process::id());
    assert_eq!(me.runner.executors, 2);
    assert_eq!(me.runner.queue.as_deref(), Some("reg"));
    assert!(me.runner.started_at <= me.runner.last_seen);
    runner.shutdown(Duration::from_secs(10)).await;
    let after = admin::runners(&t.db, queue.config().lease(), Utc::now())
        .await
        .unwrap();
    assert!(
        after
            .iter()
            .all(|r| r.runner.runner_id != queue.runner_id()),
        "a clean shutdown deregisters"
    );
    t
}

/// Cuts every connection to the test database and refuses new ones for
/// `outage`, then lets them in again (PostgreSQL).
async fn cut_postgres(t: &TestDb, outage: Duration) {
    let admin_url = server_url(Backend::Postgres).unwrap();
    let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
    let name = t
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    tokio::time::sleep(outage).await;
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    admin.close().await.ok();
}

on_server_backends!(the_runner_survives_a_database_outage);

// The database goes away mid-drain (connections cut, new ones refused);
// the runner logs warnings, keeps its outcomes, and finishes the drain
// within seconds of the database coming back.
async fn the_runner_survives_a_database_outage(t: TestDb) -> TestDb {
    const TASKS: i64 = 400;
    create_ledger(&t.db).await;
    let queue = t.queue(Registry::new(), Config::default());
    enqueue_jobs(&queue, 0..TASKS, 10).await;
    let child = ChildRunner::spawn(&t.url, 4, Duration::from_secs(5));
    wait_for("the drain to be under way", LONG_WAIT, || async {
        count_tasks(&t.db).await < TASKS as u64 - 50
    })
    .await;
    let outage = Duration::from_secs(3);
    match t.backend {
        Backend::Postgres => cut_postgres(&t, outage).await,
        _ => cut_mysql(&t, outage).await,
    }
    let back = Instant::now();
    // The test's own pool lost its connections too; it reconnects.
    wait_for(
        "the drain to finish after the outage",
        LONG_WAIT,
        || async {
            task_row::Entity::find()
                .count(&t.db)
                .await
                .is_ok_and(|n| n == 0)
        },
    )
    .await;
    let finished_after = back.elapsed();
    let log = child.stop();
    assert!(
        log.contains("WARN"),
        "the outage was logged as a warning: {log}"
    );
    let history = history_per_job(&t.db).await;
    assert_eq!(history.len() as i64, TASKS, "nothing lost");
    assert!(
        history.values().all(|n| *n == 1),
        "each task has exactly one history row"
    );
    eprintln!(
        "{:?}: {TASKS} tasks, {} s outage: drain finished {:.1} s after the database came back, 0 lost",
        t.backend,
        outage.as_secs(),
        finished_after.as_secs_f64()
    );
    t
}

/// Cuts every connection to the test database again and again for
/// `outage` (MySQL/MariaDB), so no query gets through meanwhile.
async fn cut_mysql(t: &TestDb, outage: Duration) {
    let admin = sea_orm::Database::connect(&server_url(Backend::MySql).unwrap())
        .await
        .unwrap();
    let name = t
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let until = Instant::now() + outage;
    while Instant::now() < until {
        let rows = admin
            .query_all_raw(Statement::from_string(
                DbBackend::MySql,
                format!(
                    "SELECT id FROM information_schema.processlist \
                     WHERE db = '{name}' AND id <> CONNECTION_ID()"
                ),
            ))
            .await
            .unwrap();
        for row in rows {
            let id: i64 = row.try_get_by_index(0).unwrap();
            admin.execute_unprepared(&format!("KILL {id}")).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.close().await.ok();
}

// SQLite: many writers in this process (8 concurrent enqueuers, as the
// workers of a web app) and a runner in another process: no "database is
// locked" anywhere, and every task is processed.
#[actix_rt::test]
async fn sqlite_many_writers_and_a_runner_process_never_see_locked() {
    const WRITERS: i64 = 8;
    const PER_WRITER: i64 = 10_000;
    let t = crate::fixture::fresh(Backend::Sqlite).await.unwrap();
    create_ledger(&t.db).await;
    let queue = t.queue(Registry::new(), Config::default());
    // The default lease: SQLite's lock is not fair, so under this flat-out
    // load (on a busy 2-core machine) the runner's heartbeat may wait
    // seconds for the write lock; that is slow, not lost.
    let runner = ChildRunner::spawn(&t.url, 4, background_tasks::DEFAULT_LEASE);
    let started = Instant::now();
    let writers = (0..WRITERS).map(|w| {
        let queue = queue.clone();
        async move {
            for job in w * PER_WRITER..(w + 1) * PER_WRITER {
                if let Err(err) = queue.enqueue_call("ledger", &(job, 0), &()).await {
                    panic!("enqueue failed: {err}");
                }
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let enqueued_in = started.elapsed();
    wait_for(
        "the runner process to drain every task",
        LONG_WAIT,
        || async { count_tasks(&t.db).await == 0 },
    )
    .await;
    let log = runner.stop();
    assert!(
        !log.to_lowercase().contains("database is locked"),
        "no 'database is locked' in the runner: {log}"
    );
    let runs = ledger(&t.db).await;
    assert_eq!(
        runs.len() as i64,
        WRITERS * PER_WRITER,
        "every task processed"
    );
    assert!(runs.values().all(|r| r.len() == 1));
    eprintln!(
        "SQLite: {WRITERS} writers enqueued {} tasks in {:.1} s while a runner process drained them; \
         all done in {:.1} s, 0 lock errors",
        WRITERS * PER_WRITER,
        enqueued_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
