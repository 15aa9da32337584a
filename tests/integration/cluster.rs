//! The queue on the set-ups teams scale out with, each started for real by
//! the project's scripts (`scripts/cluster/`): PgBouncer in transaction and
//! session mode, a PostgreSQL primary with a synchronous streaming standby
//! that takes over, and a three-node MariaDB Galera cluster. Runners are
//! separate processes ([`ChildRunner`]); every execution lands in a ledger,
//! so a task lost or run twice shows.
//!
//! They need root, Debian's pgbouncer and galera-4 (`scripts/cluster/
//! install.sh`), and take minutes: they run when `BGTASKS_CLUSTER_TESTS=1`,
//! which `.ci/run` sets in its cluster stage, one at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use background_tasks::{Config, Queue, Registry, TaskSpec, completed_task, db, task_row};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, Statement, TransactionTrait,
};

use crate::child::{ChildRunner, create_ledger};
use crate::fixture::{Backend, fresh_with, wait_for};

const LONG_WAIT: Duration = Duration::from_secs(600);

/// One cluster test at a time: they share ports and the machine's cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn enabled(test: &str) -> bool {
    let on = std::env::var("BGTASKS_CLUSTER_TESTS").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "{test}: skipped; set BGTASKS_CLUSTER_TESTS=1 to run it (as root; .ci/run does, in \
             its cluster stage)"
        );
    }
    on
}

/// A set-up started by `scripts/cluster/NAME.sh start`, stopped on drop.
struct SetUp {
    script: PathBuf,
    urls: HashMap<String, String>,
}

impl SetUp {
    fn start(name: &str) -> SetUp {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster");
        let install = Command::new("bash")
            .arg(dir.join("install.sh"))
            .status()
            .unwrap();
        assert!(install.success(), "scripts/cluster/install.sh failed");
        let script = dir.join(format!("{name}.sh"));
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/cluster/{name}.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let urls = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        SetUp { script, urls }
    }

    fn url(&self, name: &str) -> &str {
        self.urls
            .get(name)
            .unwrap_or_else(|| panic!("the script printed no {name}: {:?}", self.urls))
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}",
            self.script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SetUp {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(&self.script).arg("stop").status();
    }
}

/// `url` with its database name replaced by `name` and `params` appended.
fn on_database(url: &str, name: &str, params: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (server, _) = base.rsplit_once('/').unwrap();
    let query: Vec<&str> = [query, params]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect();
    if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{}", query.join("&"))
    }
}

/// `bgtasks ARGS` with `DATABASE_URL=url`, as an operator runs it; its
/// output, after checking it exited 0.
fn bgtasks(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bgtasks"))
        .env("DATABASE_URL", url)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bgtasks {args:?} failed:\n{text}");
    text
}

fn database_name(url: &str) -> String {
    let base = url.split('?').next().unwrap();
    base.rsplit('/').next().unwrap().to_owned()
}

async fn enqueue_jobs(queue: &Queue, jobs: std::ops::Range<i64>, millis: u64) {
    for chunk in jobs.collect::<Vec<_>>().chunks(1_000) {
        let specs: Vec<TaskSpec> = chunk
            .iter()
            .map(|job| TaskSpec::call("ledger", &(*job, millis), &(), queue.registry()))
            .collect();
        queue.enqueue_many(specs).await.unwrap();
    }
}

fn queue_on(db: &DatabaseConnection) -> Queue {
    Queue::with_parts(db.clone(), Registry::new(), Config::default())
}

/// A statement that reads what every node has committed (Galera applies
/// other nodes' writes a moment later; `wsrep_sync_wait` waits for them).
async fn read_all(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    let backend = db.get_database_backend();
    let txn = db.begin().await.unwrap();
    if backend == sea_orm::DbBackend::MySql {
        txn.execute_unprepared("SET SESSION wsrep_sync_wait = 1")
            .await
            .unwrap();
    }
    let rows = txn
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    rows
}

/// job → number of executions, from the ledger.
async fn runs_per_job(db: &DatabaseConnection) -> BTreeMap<i64, usize> {
    let mut runs = BTreeMap::new();
    for row in read_all(db, "SELECT job FROM bgt_ledger").await {
        *runs
            .entry(row.try_get_by_index::<i64>(0).unwrap())
            .or_insert(0) += 1;
    }
    runs
}

async fn history_count(db: &DatabaseConnection) -> u64 {
    completed_task::Entity::find().count(db).await.unwrap_or(0)
}

async fn pending(db: &DatabaseConnection) -> Option<u64> {
    task_row::Entity::find().count(db).await.ok()
}

/// What a drain came to: every job of `expected` ran (`lost` lists those
/// that did not), and which ran more than once.
struct Tally {
    lost: Vec<i64>,
    twice: Vec<i64>,
    runs: usize,
}

async fn tally(db: &DatabaseConnection, expected: impl IntoIterator<Item = i64>) -> Tally {
    let runs = runs_per_job(db).await;
    Tally {
        lost: expected
            .into_iter()
            .filter(|job| !runs.contains_key(job))
            .collect(),
        twice: runs
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(job, _)| *job)
            .collect(),
        runs: runs.values().sum(),
    }
}

// 1. PgBouncer 1.18 in transaction mode: 4 runners × 20,000 tasks, enqueued
// and migrated through the pooler; the server connections of the pooled
// clients never exceed the pool size.
#[actix_rt::test]
async fn pgbouncer_transaction_pooling_runs_every_task_once() {
    if !enabled("pgbouncer_transaction_pooling_runs_every_task_once") {
        return;
    }
    let _serial = SERIAL.lock().await;
    const TASKS: i64 = 20_000;
    const POOL_SIZE: i64 = 8;
    let bouncer = SetUp::start("pgbouncer");
    let t = fresh_with(Backend::Postgres, false).await.unwrap();
    let name = database_name(&t.url);
    let pooled = on_database(
        bouncer.url("BGTASKS_TEST_PGBOUNCER_URL"),
        &name,
        "application_name=bgt-pooled&pooler=transaction",
    );
    let direct_listen = on_database(&t.url, &name, "application_name=bgt-listen");
    // Migrations through the pooler (a transaction-scoped advisory lock).
    let db = db::open(Some(&pooled)).await.unwrap();
    create_ledger(&db).await;
    enqueue_jobs(&queue_on(&db), 0..TASKS, 0).await;

    let started = Instant::now();
    // Two runners poll the newest id through the pooler, two LISTEN on a
    // direct connection.
    let runners: Vec<ChildRunner> = (0..4)
        .map(|i| {
            let listen = (i % 2 == 1).then_some(direct_listen.as_str());
            ChildRunner::spawn_listening(&pooled, 4, Duration::from_secs(10), listen)
        })
        .collect();
    let count_servers = format!(
        "SELECT COUNT(*)::bigint FROM pg_stat_activity WHERE datname = '{name}' AND \
         application_name = 'bgt-pooled'"
    );
    let most_servers = std::cell::Cell::new(0i64);
    let samples = std::cell::Cell::new(0u32);
    wait_for(
        "4 runners to drain 20,000 tasks through PgBouncer",
        LONG_WAIT,
        || {
            let (t, count_servers) = (&t, &count_servers);
            let (most_servers, samples) = (&most_servers, &samples);
            async move {
                let servers: i64 =
                    t.db.query_one_raw(Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        count_servers.clone(),
                    ))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get_by_index(0)
                    .unwrap();
                most_servers.set(most_servers.get().max(servers));
                samples.set(samples.get() + 1);
                pending(&t.db).await == Some(0)
            }
        },
    )
    .await;
    let elapsed = started.elapsed();
    let (most_servers, samples) = (most_servers.get(), samples.get());
    let logs: Vec<String> = runners.into_iter().map(ChildRunner::stop).collect();
    let tally = tally(&t.db, 0..TASKS).await;
    eprintln!(
        "PgBouncer transaction mode: 4 runners drained {TASKS} tasks in {:.1} s ({:.0} tasks/s); \
         lost {}, run twice {}, executions {}; server connections of the pooled clients at most \
         {most_servers} over {samples} samples (pool size {POOL_SIZE})",
        elapsed.as_secs_f64(),
        TASKS as f64 / elapsed.as_secs_f64(),
        tally.lost.len(),
        tally.twice.len(),
        tally.runs,
    );
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(10)]
    );
    assert!(tally.twice.is_empty(), "run twice: {:?}", tally.twice);
    assert_eq!(tally.runs as i64, TASKS);
    assert_eq!(history_count(&t.db).await as i64, TASKS);
    assert!(
        most_servers > 0,
        "the pooled clients were seen on the server"
    );
    assert!(
        most_servers <= POOL_SIZE,
        "PgBouncer's pool of {POOL_SIZE} held: {most_servers} server connections"
    );
    for log in &logs {
        assert!(
            !log.contains("prepared statement"),
            "no prepared statement went missing:\n{log}"
        );
    }
    // The binary, through the pooler: an enqueue and a runner.
    bgtasks(&pooled, &["enqueue", "bgtasks.noop"]);
    bgtasks(&pooled, &["process", "--duration", "3", "--sleep", "0.2"]);
    assert_eq!(history_count(&t.db).await as i64, TASKS + 1);
}

// Bad input: a transaction pooler the URL does not announce fails with the
// fix in the message; a session pooler needs nothing, and
// `pooler=transaction` is harmless there.
#[actix_rt::test]
async fn a_pooler_in_each_mode_gets_a_clear_answer() {
    if !enabled("a_pooler_in_each_mode_gets_a_clear_answer") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let bouncer = SetUp::start("pgbouncer");
    let t = fresh_with(Backend::Postgres, true).await.unwrap();
    let name = database_name(&t.url);

    // Transaction mode without pooler=transaction: two clients take turns
    // on the pooler's server connections with sqlx's named statements.
    let unannounced = on_database(bouncer.url("BGTASKS_TEST_PGBOUNCER_URL"), &name, "");
    let unannounced_a = db::connect(Some(&unannounced)).await.unwrap();
    let unannounced_b = db::connect(Some(&unannounced)).await.unwrap();
    let mut failure = None;
    for round in 0..50i64 {
        for db in [&unannounced_a, &unannounced_b] {
            let stmt = Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                format!("SELECT $1::bigint + {round}"),
                [round.into()],
            );
            if let Err(err) = db.query_one_raw(stmt).await {
                failure = Some(background_tasks::Error::from(err).to_string());
            }
        }
        if failure.is_some() {
            break;
        }
    }
    let failure = failure.expect("named statements through a transaction pooler fail");
    eprintln!("transaction pooler without pooler=transaction: {failure}");
    assert!(failure.contains("pooler=transaction"), "{failure}");

    // The same statements with pooler=transaction: none fails.
    let announced = on_database(
        bouncer.url("BGTASKS_TEST_PGBOUNCER_URL"),
        &name,
        "pooler=transaction",
    );
    let (a, b) = (
        db::connect(Some(&announced)).await.unwrap(),
        db::connect(Some(&announced)).await.unwrap(),
    );
    for round in 0..200i64 {
        for db in [&a, &b] {
            let stmt = Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                format!("SELECT $1::bigint + {round}"),
                [round.into()],
            );
            db.query_one_raw(stmt).await.unwrap();
        }
    }

    for pool in [unannounced_a, unannounced_b, a, b] {
        pool.close().await.unwrap();
    }

    // Session mode, with and without the parameter: a runner drains. A
    // session pooler gives each client connection a server connection for
    // as long as it lives, so the test's own pool closes before the runner
    // starts (the pool holds 8).
    for params in ["", "pooler=transaction"] {
        let url = on_database(
            bouncer.url("BGTASKS_TEST_PGBOUNCER_SESSION_URL"),
            &name,
            params,
        );
        let db = db::open(Some(&url)).await.unwrap();
        if params.is_empty() {
            create_ledger(&db).await;
        }
        let first = if params.is_empty() { 0 } else { 500 };
        enqueue_jobs(&queue_on(&db), first..first + 500, 0).await;
        db.close().await.unwrap();
        let runner = ChildRunner::spawn(&url, 2, Duration::from_secs(10));
        wait_for(
            "a runner behind the session pooler to drain",
            LONG_WAIT,
            || async { pending(&t.db).await == Some(0) },
        )
        .await;
        runner.stop();
    }
    let tally = tally(&t.db, 0..1_000).await;
    assert!(tally.lost.is_empty() && tally.twice.is_empty());
    assert_eq!(tally.runs, 1_000);
}

// 2. A primary killed mid-drain, its synchronous standby promoted: runners
// and the enqueuer move to it without a restart; no acknowledged enqueue
// is lost.
#[actix_rt::test]
async fn a_promoted_standby_takes_over_without_a_restart() {
    if !enabled("a_promoted_standby_takes_over_without_a_restart") {
        return;
    }
    let _serial = SERIAL.lock().await;
    const BEFORE: i64 = 6_000;
    const RUNNERS: usize = 2;
    const THREADS: usize = 4;
    let pair = SetUp::start("pg-standby");
    let url = pair.url("BGTASKS_TEST_PG_FAILOVER_URL").to_owned();
    let standby = pair.url("BGTASKS_TEST_PG_STANDBY_URL").to_owned();

    // Bad input: a list where no host takes writes.
    let only_standby = format!(
        "{}?target_session_attrs=read-write",
        standby.replace("127.0.0.1:5442", "127.0.0.1:5442,127.0.0.1:1")
    );
    let refused = Instant::now();
    let err = db::connect(Some(&only_standby))
        .await
        .unwrap_err()
        .to_string();
    eprintln!(
        "no writable host, refused after {:.1} s: {err}",
        refused.elapsed().as_secs_f64()
    );
    assert!(
        err.contains("a standby (in recovery)") && err.contains("127.0.0.1:1 is unreachable"),
        "{err}"
    );

    let db = db::open(Some(&url)).await.unwrap();
    create_ledger(&db).await;
    let queue = queue_on(&db);
    enqueue_jobs(&queue, 0..BEFORE, 20).await;
    let runners: Vec<ChildRunner> = (0..RUNNERS)
        .map(|_| ChildRunner::spawn(&url, THREADS, Duration::from_secs(5)))
        .collect();
    wait_for("a third of the tasks to run", LONG_WAIT, || async {
        history_count(&db).await >= (BEFORE / 3) as u64
    })
    .await;

    // An enqueuer that goes on through the failover: one task at a time,
    // a new job number per attempt; acknowledged ones must all run.
    let enqueuer = {
        let queue = queue.clone();
        actix_rt::spawn(async move {
            let (mut acknowledged, mut failed) = (Vec::new(), 0usize);
            let mut job = 1_000_000i64;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                let spec = TaskSpec::call("ledger", &(job, 5u64), &(), queue.registry());
                match queue.enqueue_many(vec![spec]).await {
                    Ok(_) => acknowledged.push(job),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                job += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acknowledged, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    pair.run(&["kill-primary"]);
    let killed = Instant::now();
    pair.run(&["promote"]);
    let promoted = Instant::now();
    // The test's own pool moves too (it watches the same URL).
    let reached = std::cell::Cell::new(None);
    wait_for("the promoted standby to answer", LONG_WAIT, || {
        let (reached, db) = (&reached, &db);
        async move {
            reached.set(completed_task::Entity::find().count(db).await.ok());
            reached.get().is_some()
        }
    })
    .await;
    let reached = reached.get().unwrap();
    wait_for(
        "a completion on the promoted standby",
        LONG_WAIT,
        || async { history_count(&db).await > reached },
    )
    .await;
    let first_completion = promoted.elapsed();
    let (acknowledged, failed) = enqueuer.await.unwrap();
    wait_for(
        "the drain to finish on the new primary",
        LONG_WAIT,
        || async { pending(&db).await == Some(0) },
    )
    .await;
    for runner in runners {
        runner.stop();
    }
    // The binary with the same URL, its first host dead: it finds the new
    // primary.
    let stats = bgtasks(&url, &["stats", "--json"]);
    assert!(stats.contains("\"succeeded\""), "{stats}");
    let expected: Vec<i64> = (0..BEFORE).chain(acknowledged.iter().copied()).collect();
    let tally = tally(&db, expected.iter().copied()).await;
    eprintln!(
        "PostgreSQL failover: primary killed, standby promoted {:.2} s later; first completion \
         {:.2} s after promotion; enqueues acknowledged {} (failed and retried {failed}), lost {}; \
         tasks run twice {} (slots in flight: {})",
        (promoted - killed).as_secs_f64(),
        first_completion.as_secs_f64(),
        acknowledged.len(),
        tally.lost.len(),
        tally.twice.len(),
        RUNNERS * THREADS,
    );
    assert!(tally.lost.is_empty(), "lost: {:?}", tally.lost);
    assert!(
        tally.twice.len() <= RUNNERS * THREADS * 2,
        "only tasks in flight at the failover may run twice: {:?}",
        tally.twice
    );
}

// 3. Galera: three runners on three nodes, one node killed mid-drain. The
// claims of different nodes collide at commit (certification failure,
// 1213) and are retried as lost races, never run twice.
#[actix_rt::test]
async fn three_runners_on_three_galera_nodes_survive_a_dead_node() {
    if !enabled("three_runners_on_three_galera_nodes_survive_a_dead_node") {
        return;
    }
    let _serial = SERIAL.lock().await;
    const TASKS: i64 = 20_000;
    const THREADS: usize = 4;
    let cluster = SetUp::start("galera");
    let nodes: Vec<String> = cluster
        .url("BGTASKS_TEST_GALERA_URLS")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(nodes.len(), 3);
    let hosts: Vec<String> = nodes
        .iter()
        .map(|url| {
            url.split('@')
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Runner i lists its own node first, then the others.
    let url_from = |first: usize| {
        let order: Vec<&str> = (0..3).map(|k| hosts[(first + k) % 3].as_str()).collect();
        format!("mysql://root@{}/test", order.join(","))
    };

    // Bad input: a node that is not Synced is passed over, with a reason.
    let desync = db::connect(Some(&nodes[0])).await.unwrap();
    desync
        .execute_unprepared("SET GLOBAL wsrep_desync = ON")
        .await
        .unwrap();
    let lone = format!("{}?target_session_attrs=read-write", nodes[0]);
    let err = db::connect(Some(&lone)).await.unwrap_err().to_string();
    eprintln!("a desynced node alone: {err}");
    assert!(err.contains("not Synced"), "{err}");
    let passed_over = db::connect(Some(&url_from(0))).await.unwrap();
    let port: i64 = passed_over
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SELECT CAST(@@port AS SIGNED)",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_ne!(port.to_string(), hosts[0].split(':').nth(1).unwrap());
    desync
        .execute_unprepared("SET GLOBAL wsrep_desync = OFF")
        .await
        .unwrap();

    let db = db::open(Some(&nodes[0])).await.unwrap();
    create_ledger(&db).await;
    enqueue_jobs(&queue_on(&db), 0..TASKS, 0).await;
    let started = Instant::now();
    let runners: Vec<ChildRunner> = (0..3)
        .map(|i| ChildRunner::spawn(&url_from(i), THREADS, Duration::from_secs(10)))
        .collect();
    wait_for("a third of the tasks to run", LONG_WAIT, || async {
        history_count(&db).await >= (TASKS / 3) as u64
    })
    .await;
    cluster.run(&["kill", "3"]);
    let killed_at = history_count(&db).await;
    wait_for("the drain to finish on two nodes", LONG_WAIT, || async {
        pending(&db).await == Some(0)
    })
    .await;
    let elapsed = started.elapsed();
    let logs: Vec<String> = runners.into_iter().map(ChildRunner::stop).collect();
    let tally = tally(&db, 0..TASKS).await;
    let moved = logs.iter().filter(|log| log.contains("moving to")).count();
    if !tally.twice.is_empty() {
        for job in tally.twice.iter().take(4) {
            let rows = read_all(
                &db,
                &format!("SELECT id, runner FROM bgt_ledger WHERE job = {job}"),
            )
            .await;
            let runs: Vec<(i64, String)> = rows
                .iter()
                .map(|r| {
                    (
                        r.try_get_by_index(0).unwrap(),
                        r.try_get_by_index(1).unwrap(),
                    )
                })
                .collect();
            eprintln!("job {job} ran: {runs:?}");
        }
        for (i, log) in logs.iter().enumerate() {
            let warnings: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN"))
                .take(15)
                .collect();
            eprintln!("runner {i} warnings:\n{}", warnings.join("\n"));
        }
    }
    eprintln!(
        "Galera: 3 runners on 3 nodes drained {TASKS} tasks in {:.1} s ({:.0} tasks/s); node 3 \
         killed after {killed_at} completions; runners that moved to another node {moved}; lost \
         {}, run twice {} (slots per runner {THREADS})",
        elapsed.as_secs_f64(),
        TASKS as f64 / elapsed.as_secs_f64(),
        tally.lost.len(),
        tally.twice.len(),
    );
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(10)]
    );
    assert!(moved >= 1, "the runner on node 3 moved:\n{}", logs[2]);
    assert!(
        tally.twice.len() <= THREADS * 2,
        "only tasks in flight on the dead node may run twice: {:?}",
        tally.twice
    );
}
