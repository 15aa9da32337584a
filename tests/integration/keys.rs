//! Task keys (issue 20): per-key rate limits and per-key concurrency kept
//! by three runners, checked on ledgers of starts and of overlaps; a claim
//! order that lets a key enqueued late through before an earlier key's
//! backlog; keys from a task's key function, the enqueue and the command
//! line; bad keys and bad policies refused with nothing written.

use std::process::Output;
use std::time::{Duration, Instant};

use background_tasks::admin::{self, KeyLimit};
use background_tasks::{
    Config, Registry, Runner, RunnerHandle, Task, TaskContext, TaskError, TaskSpec, completed_task,
    task_row,
};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::bgtasks;
use crate::fixture::{TestDb, wait_for};
use crate::limits::{Ledger, most_at_once, most_in_a_window};

on_all_backends!(
    a_per_key_rate_limit_is_never_exceeded_in_any_window_by_three_runners,
    at_most_k_tasks_of_a_key_run_at_once_across_three_runners,
    a_key_enqueued_after_a_backlog_finishes_long_before_it,
    keys_come_from_the_key_function_the_enqueue_and_the_command_line,
    bad_keys_and_bad_policies_are_refused_and_nothing_is_written,
);

/// A tenant's work: the params name the tenant, the key function makes it
/// the task's key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Work {
    tenant: String,
    millis: u64,
}

#[derive(Clone, Default)]
struct Tenanted {
    ledger: Ledger,
}

impl Task for Tenanted {
    type Params = Work;
    type Output = ();
    fn name() -> &'static str {
        "keys.tenanted"
    }
    fn key(work: &Work) -> Result<Option<String>, String> {
        match work.tenant.as_str() {
            "" => Err("the work names no tenant".into()),
            "boom" => panic!("no tenant called boom"),
            tenant => Ok(Some(format!("tenant:{tenant}"))),
        }
    }
    async fn run(&self, work: Work, _: TaskContext) -> Result<(), TaskError> {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(work.millis)).await;
        self.ledger
            .lock()
            .unwrap()
            .push((work.tenant, start, Instant::now()));
        Ok(())
    }
}

/// The same work without a key function: its tasks have no key.
#[derive(Clone, Default)]
struct Plain {
    ledger: Ledger,
}

impl Task for Plain {
    type Params = Work;
    type Output = ();
    fn name() -> &'static str {
        "keys.plain"
    }
    async fn run(&self, work: Work, ctx: TaskContext) -> Result<(), TaskError> {
        Tenanted {
            ledger: self.ledger.clone(),
        }
        .run(work, ctx)
        .await
    }
}

fn work(tenant: &str, millis: u64) -> Work {
    Work {
        tenant: tenant.to_owned(),
        millis,
    }
}

/// Three runners of 6 slots each, polling every 100 ms.
fn start_runners(t: &TestDb, task: &Tenanted) -> (background_tasks::Queue, Vec<RunnerHandle>) {
    let mut runners = Vec::new();
    let mut first = None;
    for _ in 0..3 {
        let registry = Registry::new();
        registry.register(task.clone());
        let config = Config::builder()
            .run_async(true)
            .async_threads(2)
            .tasks_per_thread(3)
            .sleep(Duration::from_millis(100))
            .build()
            .unwrap();
        let queue = t.queue(registry, config);
        first.get_or_insert_with(|| queue.clone());
        runners.push(Runner::start(queue).unwrap());
    }
    (first.unwrap(), runners)
}

async fn enqueue(queue: &background_tasks::Queue, tenant: &str, count: usize, millis: u64) {
    let specs = (0..count).map(|_| {
        TaskSpec::new::<Tenanted>(&work(tenant, millis))
            .queue("tenants")
            .verbose_name(tenant)
    });
    queue.enqueue_many(specs).await.unwrap();
}

async fn wait_done(t: &TestDb, count: u64) {
    let db = t.db.clone();
    wait_for("every task to finish", Duration::from_secs(90), || {
        let db = db.clone();
        async move { completed_task::Entity::find().count(&db).await.unwrap() == count }
    })
    .await;
}

/// When the tasks labelled `tenant` were claimed, from the history.
async fn claim_times(t: &TestDb, tenant: Option<&str>) -> Vec<chrono::DateTime<chrono::Utc>> {
    let mut select = completed_task::Entity::find();
    if let Some(tenant) = tenant {
        select = select.filter(completed_task::Column::VerboseName.eq(tenant));
    }
    let mut starts: Vec<_> = select
        .all(&t.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.locked_at.expect("the history keeps the claim time"))
        .collect();
    starts.sort_unstable();
    starts
}

async fn a_per_key_rate_limit_is_never_exceeded_in_any_window_by_three_runners(
    t: TestDb,
) -> TestDb {
    const PERIOD: Duration = Duration::from_millis(400);
    admin::set_key_limit(&t.db, "tenants", KeyLimit::fair().rate(3, PERIOD))
        .await
        .unwrap();
    let task = Tenanted::default();
    let (queue, runners) = start_runners(&t, &task);
    for tenant in ["a", "b", "c"] {
        enqueue(&queue, tenant, 15, 5).await;
    }
    wait_done(&t, 45).await;
    let listed = admin::key_limits(&t.db, chrono::Utc::now(), 10)
        .await
        .unwrap();
    for runner in runners {
        runner.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].queue.as_str(),
            listed[0].max_starts,
            listed[0].period
        ),
        ("tenants", Some(3), Some(PERIOD))
    );
    for tenant in ["a", "b", "c"] {
        let starts = claim_times(&t, Some(tenant)).await;
        assert_eq!(starts.len(), 15);
        let most = most_in_a_window(&starts, PERIOD);
        assert!(
            most <= 3,
            "tenant {tenant}: at most 3 starts in any {PERIOD:?} across 3 runners, {most} in \
             one window ({starts:?})"
        );
        assert!(
            starts[14] - starts[0] >= chrono::TimeDelta::from_std(PERIOD * 4).unwrap(),
            "15 starts at 3 a window span at least 4 periods: {:?}",
            starts[14] - starts[0]
        );
    }
    // The limit is per key: the queue as a whole started more.
    let all = claim_times(&t, None).await;
    assert!(
        most_in_a_window(&all, PERIOD) > 3,
        "keys are limited one by one, not the queue"
    );
    assert!(admin::remove_key_limit(&t.db, "tenants").await.unwrap());
    assert!(!admin::remove_key_limit(&t.db, "tenants").await.unwrap());
    t
}

async fn at_most_k_tasks_of_a_key_run_at_once_across_three_runners(t: TestDb) -> TestDb {
    admin::set_key_limit(&t.db, "tenants", KeyLimit::fair().max_running(2))
        .await
        .unwrap();
    let task = Tenanted::default();
    let (queue, runners) = start_runners(&t, &task);
    for tenant in ["a", "b", "c"] {
        enqueue(&queue, tenant, 10, 40).await;
    }
    wait_done(&t, 30).await;
    for runner in runners {
        runner.shutdown(Duration::from_secs(5)).await;
    }
    for tenant in ["a", "b", "c"] {
        let most = most_at_once(&task.ledger, Some(tenant));
        assert!(
            (1..=2).contains(&most),
            "tenant {tenant}: at most 2 at once across 3 runners of 6 slots: {most}"
        );
    }
    let most = most_at_once(&task.ledger, None);
    assert!(most > 2, "the limit is per key: {most} at once in all");
    t
}

async fn a_key_enqueued_after_a_backlog_finishes_long_before_it(t: TestDb) -> TestDb {
    admin::set_key_limit(&t.db, "tenants", KeyLimit::fair())
        .await
        .unwrap();
    let task = Tenanted::default();
    let registry = Registry::new();
    registry.register(task.clone());
    registry.register(Plain {
        ledger: task.ledger.clone(),
    });
    let config = Config::builder()
        .run_async(true)
        .async_threads(2)
        .tasks_per_thread(2)
        .build()
        .unwrap();
    let queue = t.queue(registry, config);
    // Tenant a's backlog, then tenant b's few, and a few tasks without a
    // key (they share out as one more key): in plain claim order (no key
    // policy) they would all run after every one of a's.
    enqueue(&queue, "a", 1_000, 2).await;
    enqueue(&queue, "b", 20, 2).await;
    let unkeyed = (0..10).map(|_| {
        TaskSpec::new::<Plain>(&work("none", 2))
            .queue("tenants")
            .verbose_name("none")
    });
    queue.enqueue_many(unkeyed).await.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    let db = t.db.clone();
    wait_for(
        "tenant b's tasks and the unkeyed ones to finish",
        Duration::from_secs(60),
        || {
            let db = db.clone();
            async move {
                completed_task::Entity::find()
                    .filter(completed_task::Column::VerboseName.is_in(["b", "none"]))
                    .count(&db)
                    .await
                    .unwrap()
                    == 30
            }
        },
    )
    .await;
    let a_left = task_row::Entity::find()
        .filter(task_row::Column::VerboseName.eq("a"))
        .count(&t.db)
        .await
        .unwrap();
    runner.shutdown(Duration::from_secs(5)).await;
    assert!(
        a_left >= 800,
        "tenant b finished while most of tenant a's backlog waited: {a_left} of 1000 left"
    );
    t
}

fn run(t: &TestDb, args: &[&str]) -> Output {
    bgtasks(t).args(args).output().unwrap()
}

fn run_json(t: &TestDb, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = run(t, &all);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn keys_come_from_the_key_function_the_enqueue_and_the_command_line(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Tenanted::default());
    let queue = t.queue(registry.clone(), Config::default());
    let from_function = queue
        .enqueue::<Tenanted>(&work("acme", 1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(from_function.limit_key.as_deref(), Some("tenant:acme"));
    let given = queue
        .enqueue::<Tenanted>(&work("acme", 1))
        .key("account-7")
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(given.limit_key.as_deref(), Some("account-7"));
    // By name, with the registry: the key function runs on the stored params.
    let by_name = queue
        .enqueue_call("keys.tenanted", &(), &work("globex", 1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    assert_eq!(by_name.limit_key.as_deref(), Some("tenant:globex"));

    // The command line: --key, and a line's "key".
    let out = run_json(
        &t,
        &[
            "enqueue",
            "bgtasks.noop",
            "--queue",
            "tenants",
            "--key",
            "tenant:initech",
        ],
    );
    assert_eq!(out["task"]["limit_key"], "tenant:initech");
    assert_eq!(
        run(&t, &["enqueue", "bgtasks.noop", "--key", ""])
            .status
            .code(),
        Some(2)
    );
    let refused = run(&t, &["enqueue", "bgtasks.noop", "--key", &"k".repeat(191)]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("190"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A workflow's steps take a key from the same JSON as the API.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.json");
    let flow = |key: &str| {
        serde_json::json!({"name": "keyed", "steps": [
            {"name": "a", "task": "bgtasks.noop", "queue": "tenants", "key": key},
            {"name": "b", "task": "bgtasks.noop", "after": ["a"]},
        ]})
        .to_string()
    };
    std::fs::write(&file, flow("")).unwrap();
    let before = task_row::Entity::find().count(&t.db).await.unwrap();
    let refused = run(&t, &["workflow", "create", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        task_row::Entity::find().count(&t.db).await.unwrap(),
        before,
        "a bad key writes nothing"
    );
    std::fs::write(&file, flow("tenant:umbrella")).unwrap();
    let created = run_json(&t, &["workflow", "create", file.to_str().unwrap()]);
    let step =
        task_row::Entity::find_by_id(i32::try_from(created["ids"]["a"].as_i64().unwrap()).unwrap())
            .one(&t.db)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(step.limit_key.as_deref(), Some("tenant:umbrella"));

    // Policies from the command line, listed with each key's use.
    let set = run_json(
        &t,
        &[
            "limit",
            "key",
            "tenants",
            "--running",
            "2",
            "--rate",
            "5",
            "--per",
            "0.5",
        ],
    );
    assert_eq!(set["max_running_per_key"], 2);
    assert_eq!(set["period_ms"], 500);
    let listed = run_json(&t, &["limit", "list"]);
    let policy = &listed["key_limits"][0];
    assert_eq!(policy["queue"], "tenants");
    assert_eq!(policy["max_running"], 2);
    assert_eq!(policy["max_starts"], 5);
    let listed_keys: Vec<(&str, i64)> = policy["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            (
                key["key"].as_str().unwrap(),
                key["waiting"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        listed_keys.contains(&("tenant:initech", 1))
            && listed_keys.contains(&("tenant:umbrella", 1)),
        "{listed_keys:?}"
    );
    for bad in [
        vec!["limit", "key", "tenants", "--running", "0"],
        vec!["limit", "key", "tenants", "--rate", "0", "--per", "1"],
        vec!["limit", "key", "tenants", "--rate", "3", "--per", "0"],
        vec!["limit", "key", "tenants", "--rate", "3"],
        vec!["limit", "key", "", "--running", "1"],
    ] {
        assert_eq!(run(&t, &bad).status.code(), Some(2), "{bad:?}");
    }
    let listed = run_json(&t, &["limit", "list"]);
    assert_eq!(
        listed["key_limits"][0]["max_running"], 2,
        "refused changes wrote nothing"
    );
    run_json(&t, &["limit", "remove-key", "tenants"]);
    assert_eq!(
        run(&t, &["limit", "remove-key", "tenants"]).status.code(),
        Some(3)
    );
    t
}

async fn bad_keys_and_bad_policies_are_refused_and_nothing_is_written(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Tenanted::default());
    let queue = t.queue(registry, Config::default());
    let failing = queue.enqueue::<Tenanted>(&work("", 1)).await.unwrap_err();
    assert!(
        matches!(failing, background_tasks::Error::InvalidOption { .. }),
        "{failing}"
    );
    let message = failing.to_string();
    assert!(
        message.contains("key function") && message.contains("names no tenant"),
        "{message}"
    );
    let panicking = queue
        .enqueue::<Tenanted>(&work("boom", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        panicking.contains("panicked") && panicking.contains("no tenant called boom"),
        "{panicking}"
    );
    for key in [
        String::new(),
        "k".repeat(191),
        "a\u{0}b".into(),
        "a\nb".into(),
    ] {
        let err = queue
            .enqueue::<Tenanted>(&work("acme", 1))
            .key(key.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, background_tasks::Error::InvalidOption { .. }),
            "{key:?}: {err}"
        );
    }
    // A bad key in a bulk enqueue refuses the whole batch.
    let batch = [
        TaskSpec::new::<Tenanted>(&work("acme", 1)),
        TaskSpec::new::<Tenanted>(&work("", 1)),
    ];
    assert!(queue.enqueue_many(batch).await.is_err());
    // And in a workflow, every step.
    let workflow = background_tasks::Workflow::new("w")
        .step("a", TaskSpec::new::<Tenanted>(&work("acme", 1)))
        .step_after("b", TaskSpec::new::<Tenanted>(&work("boom", 1)), ["a"]);
    assert!(queue.enqueue_workflow(workflow).await.is_err());
    assert_eq!(task_row::Entity::find().count(&t.db).await.unwrap(), 0);

    for (policy, says) in [
        (KeyLimit::fair().max_running(0), "0 running"),
        (KeyLimit::fair().rate(0, Duration::from_secs(1)), "0 starts"),
        (KeyLimit::fair().rate(3, Duration::ZERO), "period"),
        (
            KeyLimit::fair().rate(3, admin::MAX_RATE_PERIOD * 2),
            "period",
        ),
    ] {
        let err = admin::set_key_limit(&t.db, "tenants", policy)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{policy:?}: {err}");
    }
    assert!(
        admin::set_key_limit(&t.db, "", KeyLimit::fair())
            .await
            .is_err()
    );
    assert!(
        admin::key_limits(&t.db, chrono::Utc::now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );
    t
}
