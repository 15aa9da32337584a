//! The measurements behind `benches/compare.sh`: a plain program (no
//! criterion) that prints one JSON line per measurement, through the
//! public API only.
//!
//! ```text
//! cargo bench --bench measure -- <command> --url URL [options]
//!   enqueue --n N [--keep]                 one-at-a-time and bulk enqueue rates
//!                                          (--keep: one-at-a-time only, tables
//!                                          left as they are, for several at once)
//!   process --n N [--backlog B] [--windows W] [--tasks-per-thread T]
//!                                          in-process runner throughput
//!   latency --reps R [--cross-process]     pickup latency of an idle runner
//!   rss --n N                              a child runner's memory while it drains N tasks
//!   idle --secs S                          queries/s of an idle child runner
//!   floor --n N [--runs R]                 bare-SQL floor on MariaDB/MySQL
//!   fairness --n N [--b B] [--plain]       a key enqueued after another key's backlog of
//!                                          N: when its B tasks finish, and how much of
//!                                          the backlog is left then (--plain: no key
//!                                          policy, plain claim order, to compare)
//! ```
//!
//! `--url` is a SeaORM URL (`sqlite://FILE?mode=rwc`, `postgres://...`,
//! `mysql://...`). Every command but `floor` migrates that database and
//! empties the queue's tables first. `--django-indexes` measures with
//! Django's full index set (`bgtasks migrate --django-indexes`); without it
//! the tables carry the lean set a database without Django gets. Each line
//! says which (`"indexes": "lean"` or `"django"`). Child runners are the bundled
//! `bgtasks` binary, which runs the built-in tasks (`bgtasks.noop`).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use background_tasks::{
    Config, Event, Queue, Registry, Runner, TaskSpec, builtin, completed_task, db,
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    Statement, TransactionTrait,
};
use serde_json::{Value, json};

const PEER: &str = "background-tasks";
/// Specs per `enqueue_many` call when filling big backlogs (bounds memory).
const FILL_CHUNK: u64 = 100_000;
/// A measurement that makes no progress for this long is abandoned.
const STALL: Duration = Duration::from_secs(120);

mod common;
use common::Noop;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `--name value` options and bare `--flag`s after the command.
struct Opts {
    cmd: String,
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Opts {
    fn parse() -> AnyResult<Self> {
        let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
        let cmd = args
            .next()
            .ok_or("usage: measure <command> --url URL [options]")?;
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let rest: Vec<String> = args.collect();
        let mut i = 0;
        while i < rest.len() {
            let name = rest[i]
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {:?}", rest[i]))?;
            match rest.get(i + 1) {
                Some(value) if !value.starts_with("--") => {
                    values.insert(name.to_owned(), value.clone());
                    i += 2;
                }
                _ => {
                    flags.push(name.to_owned());
                    i += 1;
                }
            }
        }
        Ok(Self { cmd, values, flags })
    }

    fn url(&self) -> AnyResult<String> {
        self.values
            .get("url")
            .cloned()
            .ok_or_else(|| "--url is required".into())
    }

    fn num(&self, name: &str, default: u64) -> AnyResult<u64> {
        match self.values.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v:?} is not a number").into()),
            None => Ok(default),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

fn emit(mut line: Value) {
    if let Value::Object(map) = &mut line
        && !map.contains_key("floor")
    {
        map.entry("peer").or_insert_with(|| PEER.into());
        if let Some(indexes) = INDEXES.get() {
            map.entry("indexes").or_insert_with(|| (*indexes).into());
        }
    }
    println!("{line}");
}

/// The index set of this measurement (`lean` or `django`).
static INDEXES: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Puts the tables on Django's index set (`django`), or back on the lean
/// set a database without Django gets: migration 12 rolled back (which
/// recreates Django's indexes) and applied again (which drops them).
async fn index_set(conn: &DatabaseConnection, django: bool) -> AnyResult<&'static str> {
    use migration::MigratorTrait;
    if django {
        db::migrate_with_django_indexes(conn).await?;
        return Ok("django");
    }
    let lean_kept = if conn.get_database_backend() == DbBackend::MySql {
        5
    } else {
        3
    };
    let sql = match conn.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT COUNT(*) FROM pg_indexes WHERE tablename IN \
             ('background_task', 'background_task_completedtask') \
             AND indexname ~ '_[0-9a-f]{8}$'"
        }
        DbBackend::MySql => {
            "SELECT COUNT(DISTINCT index_name) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name IN \
             ('background_task', 'background_task_completedtask') \
             AND index_name REGEXP '_[0-9a-f]{8}$'"
        }
        _ => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name IN \
             ('background_task', 'background_task_completedtask') \
             AND name GLOB '*_[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'"
        }
    };
    let djangos: i64 = query_scalar(conn, sql).await?;
    if djangos > lean_kept {
        migration::Migrator::down(conn, Some(1)).await?;
        db::migrate(conn).await?;
    }
    Ok("lean")
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn main() -> std::process::ExitCode {
    let opts = match Opts::parse() {
        Ok(opts) => opts,
        Err(err) => {
            eprintln!("measure: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let system = actix_rt::System::new();
    match system.block_on(run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("measure: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(opts: Opts) -> AnyResult<()> {
    let url = opts.url()?;
    if opts.cmd == "floor" {
        return floor(&opts, &url).await;
    }
    let conn = db::open(Some(&url)).await?;
    let indexes = index_set(&conn, opts.flag("django-indexes")).await?;
    INDEXES.set(indexes).ok();
    let backend = backend_label(&conn).await?;
    // --keep: leave the tables as they are (several enqueuers at once).
    if !opts.flag("keep") {
        empty_tables(&conn).await?;
    }
    match opts.cmd.as_str() {
        "enqueue" => enqueue(&opts, conn, &backend).await,
        "process" => process(&opts, conn, &backend).await,
        "latency" => latency(&opts, conn, &backend, &url).await,
        "rss" => rss(&opts, conn, &backend, &url).await,
        "idle" => idle(&opts, conn, &backend, &url).await,
        "fairness" => fairness(&opts, conn, &backend).await,
        other => Err(format!("unknown command {other:?}").into()),
    }
}

/// `sqlite`, `postgres`, `mariadb` or `mysql` (asked from the server).
async fn backend_label(conn: &DatabaseConnection) -> AnyResult<String> {
    Ok(match conn.get_database_backend() {
        DbBackend::Postgres => "postgres".into(),
        DbBackend::Sqlite => "sqlite".into(),
        _ => {
            let version: String = query_scalar(conn, "SELECT VERSION()").await?;
            if version.to_ascii_lowercase().contains("mariadb") {
                "mariadb".into()
            } else {
                "mysql".into()
            }
        }
    })
}

async fn query_scalar<T: sea_orm::TryGetable>(
    conn: &impl ConnectionTrait,
    sql: &str,
) -> AnyResult<T> {
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await?
        .ok_or_else(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index(0)?)
}

async fn empty_tables(conn: &DatabaseConnection) -> AnyResult<()> {
    for table in ["background_task", "background_task_completedtask"] {
        // TRUNCATE also drops the dead rows of earlier runs, so every run
        // starts from the same table.
        let sql = match conn.get_database_backend() {
            DbBackend::Sqlite => format!("DELETE FROM {table}"),
            _ => format!("TRUNCATE TABLE {table}"),
        };
        conn.execute_unprepared(&sql).await?;
    }
    Ok(())
}

async fn count_pending(conn: &DatabaseConnection) -> AnyResult<i64> {
    query_scalar(conn, "SELECT COUNT(*) FROM background_task").await
}

/// Bulk-enqueues `n` due tasks built by `spec`, in chunks.
async fn fill(queue: &Queue, n: u64, spec: impl Fn(u64) -> TaskSpec) -> AnyResult<()> {
    let mut start = 0;
    while start < n {
        let end = (start + FILL_CHUNK).min(n);
        queue.enqueue_many((start..end).map(&spec)).await?;
        start = end;
    }
    if queue.db().get_database_backend() == DbBackend::Postgres {
        // What autovacuum's analyze does for a table that grew this much;
        // the PostgreSQL floor analyzes its table too.
        queue
            .db()
            .execute_unprepared("ANALYZE background_task")
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- enqueue

async fn enqueue(opts: &Opts, conn: DatabaseConnection, backend: &str) -> AnyResult<()> {
    let n = opts.num("n", 10_000)?;
    let queue = Queue::new(conn.clone());
    let t = Instant::now();
    for i in 0..n {
        queue.enqueue::<Noop>(&(i,)).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    emit(json!({"backend": backend, "metric": "enqueue", "n": n,
        "rate": round(n as f64 / secs, 1), "secs": round(secs, 3)}));
    if opts.flag("keep") {
        return Ok(());
    }

    empty_tables(&conn).await?;
    let specs: Vec<TaskSpec> = (0..n).map(|i| TaskSpec::new::<Noop>(&(i,))).collect();
    let t = Instant::now();
    let written = queue.enqueue_many(specs).await?;
    let secs = t.elapsed().as_secs_f64();
    emit(
        json!({"backend": backend, "metric": "enqueue_bulk", "n": n, "written": written,
        "rate": round(n as f64 / secs, 1), "secs": round(secs, 3)}),
    );
    empty_tables(&conn).await
}

// ---------------------------------------------------------------- process

async fn process(opts: &Opts, conn: DatabaseConnection, backend: &str) -> AnyResult<()> {
    let n = opts.num("n", 10_000)?;
    let backlog = opts.num("backlog", 0)?;
    let windows = opts.num("windows", 1)?.max(1);
    let per_thread = opts.num("tasks-per-thread", 64)? as usize;
    let total = n + backlog;
    if n * windows > total {
        return Err(format!(
            "{windows} windows of {n} need --backlog of at least {}",
            n * (windows - 1)
        )
        .into());
    }
    let threads = num_cpus::get().max(1);
    let config = Config::builder()
        .run_async(true)
        .async_threads(threads)
        .tasks_per_thread(per_thread)
        .build()?;
    let registry = Registry::new();
    registry.register(Noop);
    let queue = Queue::with_parts(conn, registry, config);
    fill(&queue, total, |i| TaskSpec::new::<Noop>(&(i,))).await?;
    let depth0 = count_pending(queue.db()).await? as u64;

    // Counted on the executors' threads: an atomic add, and a wake-up of
    // this task when a window's mark is reached.
    let finished = Arc::new(AtomicU64::new(0));
    let mark = Arc::new(AtomicU64::new(n));
    let notify = Arc::new(tokio::sync::Notify::new());
    {
        let (finished, mark, notify) = (finished.clone(), mark.clone(), notify.clone());
        queue.events().subscribe(move |event| {
            if let Event::Finished { .. } = event {
                let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if done >= mark.load(Ordering::Relaxed) {
                    notify.notify_one();
                }
            }
        });
    }

    let start = Instant::now();
    let handle = Runner::start(queue.clone()).unwrap();
    let mut window_start = start;
    let mut outcome = Ok(());
    for w in 1..=windows {
        let target = n * w;
        mark.store(target, Ordering::Relaxed);
        let mut last = (finished.load(Ordering::Relaxed), Instant::now());
        while finished.load(Ordering::Relaxed) < target {
            let _ = tokio::time::timeout(Duration::from_millis(500), notify.notified()).await;
            let done = finished.load(Ordering::Relaxed);
            if done != last.0 {
                last = (done, Instant::now());
            } else if last.1.elapsed() > STALL {
                outcome = Err(format!("stalled at {done} of {target} finished tasks").into());
                break;
            }
        }
        if outcome.is_err() {
            break;
        }
        let now = Instant::now();
        let secs = (now - window_start).as_secs_f64();
        emit(
            json!({"backend": backend, "metric": "process", "n": n, "window": w,
            "depth": depth0 - n * (w - 1), "threads": threads, "tasks_per_thread": per_thread,
            "rate": round(n as f64 / secs, 1), "secs": round(secs, 3)}),
        );
        window_start = now;
    }
    handle.shutdown(Duration::from_secs(10)).await;
    outcome
}

// ---------------------------------------------------------------- fairness

/// Key A's backlog of `--n` tasks in queue `fair`; once the runner has
/// finished 1,000 of them, `--b` tasks of key B are enqueued. Prints when
/// the last of B finished (from B's enqueue), how many of A were left
/// then, and when A's backlog was done. With a key policy (the default)
/// B's tasks share every claim with A's; with `--plain` the queue has no
/// policy and B waits behind A in claim order.
async fn fairness(opts: &Opts, conn: DatabaseConnection, backend: &str) -> AnyResult<()> {
    let n = opts.num("n", 100_000)?;
    let b = opts.num("b", 100)?;
    let plain = opts.flags.iter().any(|flag| flag == "plain");
    let threads = num_cpus::get().max(1);
    let config = Config::builder()
        .run_async(true)
        .async_threads(threads)
        .tasks_per_thread(64)
        .build()?;
    let registry = Registry::new();
    registry.register(Noop);
    let queue = Queue::with_parts(conn, registry, config);
    if plain {
        background_tasks::admin::remove_key_limit(queue.db(), "fair").await?;
    } else {
        background_tasks::admin::set_key_limit(
            queue.db(),
            "fair",
            background_tasks::admin::KeyLimit::fair(),
        )
        .await?;
    }
    fill(&queue, n, |i| {
        TaskSpec::new::<Noop>(&(i,)).queue("fair").key("tenant-a")
    })
    .await?;
    let max_id = match queue.db().get_database_backend() {
        DbBackend::MySql => "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM background_task",
        _ => "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM background_task",
    };
    // Key B's tasks are enqueued after every one of A's: higher ids.
    let last_a: i64 = query_scalar(queue.db(), max_id).await?;
    let finished_a = Arc::new(AtomicU64::new(0));
    let finished_b = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    {
        let (finished_a, finished_b, notify) =
            (finished_a.clone(), finished_b.clone(), notify.clone());
        queue.events().subscribe(move |event| {
            if let Event::Finished { task_id } = event {
                if i64::from(*task_id) > last_a {
                    finished_b.fetch_add(1, Ordering::Relaxed);
                } else {
                    finished_a.fetch_add(1, Ordering::Relaxed);
                }
                notify.notify_one();
            }
        });
    }
    let start = Instant::now();
    let handle = Runner::start(queue.clone()).unwrap();
    let tick = || {
        let notify = notify.clone();
        async move {
            let _ = tokio::time::timeout(Duration::from_millis(200), notify.notified()).await;
        }
    };
    let mut outcome: AnyResult<()> = Ok(());
    let stalled = |since: Instant| since.elapsed() > STALL;
    let began = Instant::now();
    while finished_a.load(Ordering::Relaxed) < 1_000.min(n) {
        tick().await;
        if stalled(began) {
            outcome = Err("stalled before key B was enqueued".into());
            break;
        }
    }
    let mut b_secs = None;
    let mut a_left_then = None;
    if outcome.is_ok() {
        let enqueued_at = Instant::now();
        queue
            .enqueue_many((0..b).map(|i| {
                TaskSpec::new::<Noop>(&(1_000_000_000 + i,))
                    .queue("fair")
                    .key("tenant-b")
            }))
            .await?;
        while finished_b.load(Ordering::Relaxed) < b {
            tick().await;
            if stalled(enqueued_at) {
                outcome = Err("stalled before key B finished".into());
                break;
            }
        }
        b_secs = Some(enqueued_at.elapsed().as_secs_f64());
        a_left_then = Some(n - finished_a.load(Ordering::Relaxed).min(n));
    }
    let mut last = (finished_a.load(Ordering::Relaxed), Instant::now());
    while outcome.is_ok() && finished_a.load(Ordering::Relaxed) < n {
        tick().await;
        let done = finished_a.load(Ordering::Relaxed);
        if done != last.0 {
            last = (done, Instant::now());
        } else if stalled(last.1) {
            outcome = Err("stalled draining key A".into());
        }
    }
    let a_secs = start.elapsed().as_secs_f64();
    handle.shutdown(Duration::from_secs(10)).await;
    outcome?;
    emit(
        json!({"backend": backend, "metric": "fairness", "policy": if plain { "none" } else { "fair" },
        "n": n, "b": b, "b_finished_secs": b_secs.map(|secs| round(secs, 3)),
        "a_left_when_b_finished": a_left_then, "a_drained_secs": round(a_secs, 3)}),
    );
    Ok(())
}

// ---------------------------------------------------------------- latency

/// The sleep before repetition `i`: 50 to 250 ms, varying so the enqueue
/// falls at every phase of any poll loop.
fn pause(i: u64) -> Duration {
    Duration::from_millis(50 + (i * 37) % 200)
}

fn stats_ms(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({"median_ms": round(at(0.5), 3), "p90_ms": round(at(0.9), 3),
        "min_ms": round(v[0], 3), "max_ms": round(v[v.len() - 1], 3)})
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

async fn latency(opts: &Opts, conn: DatabaseConnection, backend: &str, url: &str) -> AnyResult<()> {
    let reps = opts.num("reps", 100)?.max(1);
    let cross = opts.flag("cross-process");
    let Timings {
        pickups,
        done,
        enqueues,
    } = if cross {
        latency_cross(conn, url, reps).await?
    } else {
        latency_same(conn, reps).await?
    };
    let mut line = json!({"backend": backend, "metric": "latency",
        "mode": if cross { "cross-process" } else { "same-process" }, "reps": reps});
    let done_median = stats_ms(done)["median_ms"].clone();
    // The enqueue call's own time (its commit included) is part of the
    // pickup: what is left is the wake-up and the claim.
    let enqueue_median = stats_ms(enqueues)["median_ms"].clone();
    if let (Value::Object(line), Value::Object(stats)) = (&mut line, stats_ms(pickups)) {
        line.extend(stats);
        line.insert("done_median_ms".into(), done_median);
        line.insert("enqueue_median_ms".into(), enqueue_median);
    }
    emit(line);
    Ok(())
}

/// Per repetition, in ms: from the enqueue call to the claim's `locked_at`
/// (the pickup), to the task's success event or history row (done), and
/// the enqueue call alone.
#[derive(Default)]
struct Timings {
    pickups: Vec<f64>,
    done: Vec<f64>,
    enqueues: Vec<f64>,
}

/// An in-process runner; pickups come from the `Successful` events.
async fn latency_same(conn: DatabaseConnection, reps: u64) -> AnyResult<Timings> {
    let registry = Registry::new();
    builtin::register(&registry);
    let config = Config::builder().run_async(true).async_threads(2).build()?;
    let queue = Queue::with_parts(conn, registry, config);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    queue.events().subscribe(move |event| {
        if let Event::Successful { completed, .. } = event {
            let _ = tx.send((completed.verbose_name.clone(), completed.locked_at));
        }
    });
    let handle = Runner::start(queue.clone()).unwrap();
    let mut timings = Timings::default();
    let mut outcome = Ok(());
    for i in 0..=reps {
        // Repetition 0 is a warm-up that shows the runner is up; then it idles.
        tokio::time::sleep(if i == 0 { Duration::ZERO } else { pause(i) }).await;
        let tag = format!("lat-{i}");
        let t0 = Utc::now();
        let started = Instant::now();
        queue
            .enqueue::<builtin::Noop>(&())
            .verbose_name(tag.clone())
            .await?;
        let enqueued = started.elapsed().as_secs_f64() * 1e3;
        let locked_at = loop {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some((Some(name), locked_at))) if name == tag => break locked_at,
                Ok(Some(_)) => continue,
                _ => {
                    outcome = Err(format!("task {tag} did not finish within 30 s").into());
                    break None;
                }
            }
        };
        if outcome.is_err() {
            break;
        }
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        timings.enqueues.push(enqueued);
        timings.done.push(started.elapsed().as_secs_f64() * 1e3);
        timings.pickups.push(ms_between(
            t0,
            locked_at.ok_or("history row without locked_at")?,
        ));
    }
    handle.shutdown(Duration::from_secs(10)).await;
    outcome.map(|()| timings)
}

/// A child `bgtasks process`; pickups come from polling the history table.
async fn latency_cross(conn: DatabaseConnection, url: &str, reps: u64) -> AnyResult<Timings> {
    let queue = Queue::new(conn.clone());
    let _child = ChildRunner::spawn(url, &["--sleep", "5", "--threads", "2"])?;
    let mut timings = Timings::default();
    for i in 0..=reps {
        tokio::time::sleep(if i == 0 { Duration::ZERO } else { pause(i) }).await;
        let tag = format!("lat-{i}");
        let t0 = Utc::now();
        let started = Instant::now();
        queue
            .enqueue::<builtin::Noop>(&())
            .verbose_name(tag.clone())
            .await?;
        let enqueued = started.elapsed().as_secs_f64() * 1e3;
        // The warm-up waits for the child to start and migrate.
        let limit = Duration::from_secs(if i == 0 { 60 } else { 30 });
        let row = loop {
            let row = completed_task::Entity::find()
                .filter(completed_task::Column::VerboseName.eq(tag.as_str()))
                .one(&conn)
                .await?;
            if let Some(row) = row {
                break row;
            }
            if started.elapsed() > limit {
                return Err(format!("task {tag} did not finish within {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        timings.enqueues.push(enqueued);
        timings.done.push(started.elapsed().as_secs_f64() * 1e3);
        timings.pickups.push(ms_between(
            t0,
            row.locked_at.ok_or("history row without locked_at")?,
        ));
    }
    Ok(timings)
}

// ---------------------------------------------------------------- child runner

/// A `bgtasks process` child, stopped (SIGTERM, then SIGKILL) when dropped.
struct ChildRunner {
    child: Child,
}

impl ChildRunner {
    fn spawn(url: &str, args: &[&str]) -> AnyResult<Self> {
        let log = match std::env::var_os("MEASURE_CHILD_LOG") {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_bgtasks"))
            .arg("process")
            .arg("--database-url")
            .arg(url)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `bgtasks process --help` lists `flag`.
    fn supports(flag: &str) -> bool {
        Command::new(env!("CARGO_BIN_EXE_bgtasks"))
            .args(["process", "--help"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
            .unwrap_or(false)
    }
}

impl Drop for ChildRunner {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

// ---------------------------------------------------------------- rss

async fn rss(opts: &Opts, conn: DatabaseConnection, backend: &str, url: &str) -> AnyResult<()> {
    let n = opts.num("n", 1_000_000)?;
    let queue = Queue::new(conn.clone());
    fill(&queue, n, |_| TaskSpec::new::<builtin::Noop>(&())).await?;
    let mut args = vec!["--threads", "2", "--sleep", "1"];
    let per_thread = ChildRunner::supports("--tasks-per-thread");
    if per_thread {
        args.extend(["--tasks-per-thread", "64"]);
    }
    let start = Instant::now();
    let child = ChildRunner::spawn(url, &args)?;
    let mut max_rss: f64 = 0.0;
    let mut at: [Option<f64>; 3] = [None; 3];
    let marks = [0.1, 0.5, 0.9];
    let mut samples = 0u64;
    let mut last = (n as i64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = vm_rss_mb(child.pid()).ok_or("the child runner exited")?;
        max_rss = max_rss.max(rss);
        samples += 1;
        // Counting a big table costs; do it once a second, not per sample,
        // to leave the runner the machine.
        if !samples.is_multiple_of(5) {
            continue;
        }
        let left = count_pending(&conn).await?;
        let progress = 1.0 - left as f64 / n as f64;
        for (slot, mark) in at.iter_mut().zip(marks) {
            if slot.is_none() && progress >= mark {
                *slot = Some(rss);
            }
        }
        if left == 0 {
            break;
        }
        if left != last.0 {
            last = (left, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(format!("the child runner stalled with {left} tasks left").into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = |x: Option<f64>| x.map(|x| round(x, 1));
    emit(
        json!({"backend": backend, "metric": "rss", "n": n, "max_mb": round(max_rss, 1),
        "at10_mb": mb(at[0]), "at50_mb": mb(at[1]), "at90_mb": mb(at[2]), "samples": samples,
        "threads": 2, "tasks_per_thread": if per_thread { Some(64) } else { None },
        "rate": round(n as f64 / secs, 1), "secs": round(secs, 3)}),
    );
    drop(child);
    Ok(())
}

// ---------------------------------------------------------------- idle

async fn idle(opts: &Opts, conn: DatabaseConnection, backend: &str, url: &str) -> AnyResult<()> {
    let secs = opts.num("secs", 30)?.max(1);
    let window = Duration::from_secs(secs);
    let (label, baseline) = match conn.get_database_backend() {
        DbBackend::Postgres => (
            "transactions/s (pg_stat_database xact_commit + xact_rollback)",
            None,
        ),
        DbBackend::MySql => {
            // Questions is server-wide: first count what the server does
            // without the runner, over the same window.
            let (delta, own) = questions_delta(&conn, window).await?;
            (
                "statements/s (global status Questions, less the probes and the baseline without runner)",
                Some((delta - own).max(0) as f64 / secs as f64),
            )
        }
        _ => {
            emit(
                json!({"backend": backend, "metric": "idle_qps", "measured": false,
                "note": "SQLite keeps no statement counters"}),
            );
            return Ok(());
        }
    };
    let child = ChildRunner::spawn(url, &["--threads", "2"])?;
    // Let it start, migrate and settle into its idle loop.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (delta, own) = match conn.get_database_backend() {
        DbBackend::Postgres => {
            // Probe from the `postgres` database so the probes themselves
            // are not counted in the queue's database.
            let dbname: String = query_scalar(&conn, "SELECT current_database()").await?;
            let probe_url = replace_db_in_url(url, "postgres");
            let probe = sea_orm::Database::connect(probe_url.as_str()).await?;
            let sql = format!(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = '{}'",
                dbname.replace('\'', "''")
            );
            let a: i64 = query_scalar(&probe, &sql).await?;
            tokio::time::sleep(window).await;
            let b: i64 = query_scalar(&probe, &sql).await?;
            (b - a, 0)
        }
        _ => questions_delta(&conn, window).await?,
    };
    drop(child);
    let gross = (delta - own).max(0) as f64 / secs as f64;
    let rate = (gross - baseline.unwrap_or(0.0)).max(0.0);
    emit(
        json!({"backend": backend, "metric": "idle_qps", "measured": true, "secs": secs,
        "rate": round(rate, 2), "gross_rate": round(gross, 2),
        "baseline_rate": baseline.map(|b| round(b, 2)), "counter": label}),
    );
    Ok(())
}

/// How much MariaDB/MySQL's global `Questions` grows over `window`, and
/// how much of that one probe adds by itself.
async fn questions_delta(conn: &DatabaseConnection, window: Duration) -> AnyResult<(i64, i64)> {
    let q = || async {
        let row = conn
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                "SHOW GLOBAL STATUS LIKE 'Questions'",
            ))
            .await?
            .ok_or("no Questions status")?;
        let value: String = row.try_get_by_index(1)?;
        AnyResult::Ok(value.parse::<i64>()?)
    };
    // Two probes back to back: what one probe adds by itself.
    let p0 = q().await?;
    let p1 = q().await?;
    let a = q().await?;
    tokio::time::sleep(window).await;
    let b = q().await?;
    Ok((b - a, p1 - p0))
}

/// `url` with its database (path) replaced by `db`.
fn replace_db_in_url(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, query) = match rest.find('/') {
        Some(slash) => {
            let after = &rest[slash..];
            (
                &rest[..slash],
                after.find('?').map(|q| &after[q..]).unwrap_or(""),
            )
        }
        None => (rest, ""),
    };
    format!("{scheme}://{authority}/{db}{query}")
}

// ---------------------------------------------------------------- floor

/// The bare-SQL floor on MariaDB/MySQL, shaped like the peers' PostgreSQL
/// floor (`floor_pg.sh`): insert; claim with `FOR UPDATE SKIP LOCKED`;
/// delete; one task per statement and batches of 100, one client.
async fn floor(opts: &Opts, url: &str) -> AnyResult<()> {
    let n = opts.num("n", 10_000)?;
    let runs = opts.num("runs", 1)?.max(1);
    let mut options = sea_orm::ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    let conn = sea_orm::Database::connect(options).await?;
    if conn.get_database_backend() != DbBackend::MySql {
        return Err("floor measures MariaDB/MySQL: give a mysql:// URL".into());
    }
    let label = backend_label(&conn).await?;
    for run in 1..=runs {
        for k in [1u64, 100] {
            let (enq, proc, left) = floor_run(&conn, n, k).await?;
            emit(json!({"floor": label, "run": run, "k": k, "clients": 1,
                "enqueue_per_s": enq.round(), "process_per_s": proc.round(), "left": left}));
        }
    }
    conn.execute_unprepared("DROP TABLE IF EXISTS q").await?;
    Ok(())
}

async fn floor_run(conn: &DatabaseConnection, n: u64, k: u64) -> AnyResult<(f64, f64, i64)> {
    let mysql = DbBackend::MySql;
    conn.execute_unprepared("DROP TABLE IF EXISTS q").await?;
    conn.execute_unprepared(
        "CREATE TABLE q (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            queue VARCHAR(100) NOT NULL DEFAULT 'default',
            payload LONGTEXT NOT NULL DEFAULT '{}',
            run_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            locked_at DATETIME(6) NULL,
            locked_by INT NULL,
            attempts INT NOT NULL DEFAULT 0,
            INDEX q_ready (queue, locked_at, run_at, id)
        ) ENGINE = InnoDB",
    )
    .await?;
    let values = vec!["('{}')"; k as usize].join(", ");
    let insert = format!("INSERT INTO q (payload) VALUES {values}");
    let t = Instant::now();
    for _ in 0..n / k {
        conn.execute_raw(Statement::from_string(mysql, insert.clone()))
            .await?;
    }
    let enqueue = n as f64 / t.elapsed().as_secs_f64();
    conn.execute_unprepared("ANALYZE TABLE q").await?;

    let select = format!(
        "SELECT id FROM q WHERE queue = 'default' AND locked_at IS NULL AND run_at <= NOW(6) \
         ORDER BY run_at, id LIMIT {k} FOR UPDATE SKIP LOCKED"
    );
    let marks = vec!["?"; k as usize].join(", ");
    let update = format!(
        "UPDATE q SET locked_at = NOW(6), locked_by = 1, attempts = attempts + 1 WHERE id IN ({marks})"
    );
    let delete = format!("DELETE FROM q WHERE id IN ({marks})");
    let mut done = 0u64;
    let t = Instant::now();
    loop {
        let txn = conn.begin().await?;
        let ids: Vec<i64> = txn
            .query_all_raw(Statement::from_string(mysql, select.clone()))
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<i64>(0))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            txn.commit().await?;
            break;
        }
        // A short last batch gets its own placeholder list.
        let (update, delete) = if ids.len() as u64 == k {
            (update.clone(), delete.clone())
        } else {
            let marks = vec!["?"; ids.len()].join(", ");
            (
                format!(
                    "UPDATE q SET locked_at = NOW(6), locked_by = 1, attempts = attempts + 1 WHERE id IN ({marks})"
                ),
                format!("DELETE FROM q WHERE id IN ({marks})"),
            )
        };
        let bind = || {
            ids.iter()
                .map(|&id| id.into())
                .collect::<Vec<sea_orm::Value>>()
        };
        txn.execute_raw(Statement::from_sql_and_values(mysql, update, bind()))
            .await?;
        txn.commit().await?;
        conn.execute_raw(Statement::from_sql_and_values(mysql, delete, bind()))
            .await?;
        done += ids.len() as u64;
        if done >= n {
            break;
        }
    }
    let process = done as f64 / t.elapsed().as_secs_f64();
    let left: i64 = query_scalar(conn, "SELECT COUNT(*) FROM q").await?;
    Ok((enqueue, process, left))
}
