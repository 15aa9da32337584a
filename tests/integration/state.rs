//! App state for task bodies (`Registry::data`, `TaskContext::data`,
//! `Task::requires`) and the settings an embedded app reads from the
//! environment (`Config::from_env`): bodies read the state on every
//! backend; a task whose state is missing keeps the runner (and `bgtasks
//! process` in an app's own binary) from starting, with the task and the
//! type named.
//!
//! The app's binary is this test binary run again with `state::app_binary`
//! (ignored in normal runs) and `BGT_APP_*` variables; see there.

use std::process::{Command, Output};
use std::time::Duration;

use background_tasks::{
    Config, Error, Registry, Requires, Runner, Task, TaskContext, TaskError, builtin,
    completed_task, runner_row, task_row,
};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};

use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    a_runner_gives_bodies_the_registry_state,
    a_runner_refuses_to_start_without_a_required_state,
    a_body_reading_an_undeclared_state_fails_permanently,
    process_in_an_apps_binary_runs_bodies_with_its_state,
    process_refuses_to_start_without_a_required_state,
    an_embedded_app_reads_the_seed_settings_from_the_environment,
);

const WAIT: Duration = Duration::from_secs(30);

/// App state: the greeting of the app's settings.
pub struct Greeting(pub String);

/// Reads two kinds of state: settings, and a database pool.
pub struct Greet;

impl Task for Greet {
    type Params = String;
    type Output = String;
    fn name() -> &'static str {
        "state.greet"
    }
    fn requires() -> Requires {
        Requires::new()
            .data::<Greeting>()
            .data::<DatabaseConnection>()
    }
    async fn run(&self, who: String, ctx: TaskContext) -> Result<String, TaskError> {
        let greeting = ctx.data::<Greeting>()?;
        let db = ctx.data::<DatabaseConnection>()?;
        // The pool works: the body counts the task rows through it.
        let rows = task_row::Entity::find().count(db).await?;
        Ok(format!(
            "{}, {who} ({:?}, {rows} in the queue)",
            greeting.0,
            db.get_database_backend()
        ))
    }
}

/// Reads state it does not list in `requires`.
struct Sneaky;

impl Task for Sneaky {
    type Params = ();
    type Output = String;
    fn name() -> &'static str {
        "state.sneaky"
    }
    async fn run(&self, (): (), ctx: TaskContext) -> Result<String, TaskError> {
        Ok(ctx.data::<Greeting>()?.0.clone())
    }
}

fn registry_with_state(t: &TestDb) -> Registry {
    let registry = Registry::new();
    registry
        .data(Greeting("hello".into()))
        .data(t.db.clone())
        .register(Greet);
    registry
}

async fn history(t: &TestDb) -> Vec<completed_task::Model> {
    completed_task::Entity::find().all(&t.db).await.unwrap()
}

async fn a_runner_gives_bodies_the_registry_state(t: TestDb) -> TestDb {
    let config = Config::builder()
        .sleep(Duration::from_millis(50))
        .run_async(true)
        .async_threads(2)
        .build()
        .unwrap();
    let queue = t.queue(registry_with_state(&t), config);
    queue.enqueue::<Greet>(&"Ada".into()).await.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("the greeting ran", WAIT, || async {
        !history(&t).await.is_empty()
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    let done = history(&t).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].failed_at, None, "{}", done[0].last_error);
    let expected = format!(
        "hello, Ada ({:?}, 1 in the queue)",
        t.db.get_database_backend()
    );
    assert_eq!(
        done[0].result.as_deref(),
        Some(serde_json::Value::String(expected).to_string().as_str())
    );
    t
}

async fn a_runner_refuses_to_start_without_a_required_state(t: TestDb) -> TestDb {
    let registry = Registry::new();
    // The pool is given, the greeting is not.
    registry.data(t.db.clone()).register(Greet);
    builtin::register(&registry);
    let queue = t.queue(registry.clone(), Config::default());
    queue.enqueue::<Greet>(&"Ada".into()).await.unwrap();
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();

    let err = Runner::start(queue.clone()).unwrap_err();
    let Error::MissingState { missing } = &err else {
        panic!("not MissingState: {err}");
    };
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].task, "state.greet");
    assert_eq!(missing[0].type_name, std::any::type_name::<Greeting>());
    let text = err.to_string();
    assert!(
        text.contains("state.greet") && text.contains("state::Greeting"),
        "{text}"
    );
    assert!(text.contains("registry.data("), "says what to do: {text}");
    assert_eq!(registry.check().unwrap_err().to_string(), text);
    // Nothing started: no runner row, no task claimed or run.
    assert_eq!(runner_row::Entity::find().count(&t.db).await.unwrap(), 0);
    let rows = task_row::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row.locked_by.is_none()), "{rows:?}");

    // Given the state, the same queue starts and runs both.
    registry.data(Greeting("hi".into()));
    registry.check().unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("both tasks ran", WAIT, || async {
        history(&t).await.len() == 2
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    t
}

async fn a_body_reading_an_undeclared_state_fails_permanently(t: TestDb) -> TestDb {
    let registry = registry_with_state(&t);
    registry.register(Sneaky);
    let config = Config::builder()
        .sleep(Duration::from_millis(50))
        .build()
        .unwrap();
    let queue = t.queue(registry, config);
    queue.enqueue::<Sneaky>(&()).await.unwrap();
    // The check at start cannot see reads it was not told about ...
    let runner = Runner::start(queue.clone()).unwrap();
    wait_for("the sneaky task finished", WAIT, || async {
        !history(&t).await.is_empty()
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    // ... so the read itself fails, at once and for good, even though the
    // value is there: every read is one the start checked.
    let done = history(&t).await;
    assert!(done[0].failed_at.is_some(), "{done:?}");
    assert_eq!(done[0].attempts, 1, "permanent: no retry");
    assert!(
        done[0].last_error.contains("without requiring it")
            && done[0].last_error.contains("Task::requires"),
        "{}",
        done[0].last_error
    );
    t
}

#[actix_rt::test]
async fn inline_runs_get_the_state_of_the_registry_they_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("inline.sqlite3").display());
    let db = background_tasks::db::open(Some(&url)).await.unwrap();
    let registry = Registry::new();
    registry.data(db);

    // Missing a type: the body does not run, and the error names it.
    let err = Greet.now_with("Ada".into(), &registry).await.unwrap_err();
    assert!(err.is_permanent());
    assert!(err.to_string().contains("state::Greeting"), "{err}");

    registry.data(Greeting("hello".into()));
    assert_eq!(
        Greet.now_with("Ada".into(), &registry).await.unwrap(),
        "hello, Ada (Sqlite, 0 in the queue)"
    );
    // A bare `now` has no state, and says how to give it.
    let err = Greet.now("Ada".into()).await.unwrap_err();
    assert!(err.to_string().contains("now_with"), "{err}");
    // An undeclared read fails inline too: found by the first test.
    let err = Sneaky.now_with((), &registry).await.unwrap_err();
    assert!(err.to_string().contains("without requiring it"), "{err}");
}

/// Runs this test binary as an app's own binary (see `app_binary`).
fn app(t: &TestDb, mode: &str, args: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "state::app_binary",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BGT_APP_MODE", mode)
        .env("BGT_APP_ARGS", args)
        .env("DATABASE_URL", &t.url)
        .env("RUST_LOG", "info");
    command
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn process_in_an_apps_binary_runs_bodies_with_its_state(t: TestDb) -> TestDb {
    let queue = t.queue(registry_with_state(&t), Config::default());
    queue.enqueue::<Greet>(&"Ada".into()).await.unwrap();
    let output = app(&t, "cli-with-state", "process --duration 3 --sleep 0.1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let done = history(&t).await;
    assert_eq!(done.len(), 1, "{}", text(&output));
    let result = done[0].result.as_deref().unwrap_or_default();
    assert!(result.contains("hello from the app, Ada"), "{result}");
    t
}

async fn process_refuses_to_start_without_a_required_state(t: TestDb) -> TestDb {
    let queue = t.queue(registry_with_state(&t), Config::default());
    queue.enqueue::<Greet>(&"Ada".into()).await.unwrap();
    let output = app(&t, "cli-without-state", "process --duration 3 --sleep 0.1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"state.greet\"") && stderr.contains("state::Greeting"),
        "{}",
        text(&output)
    );
    assert_eq!(runner_row::Entity::find().count(&t.db).await.unwrap(), 0);
    assert!(history(&t).await.is_empty());
    let rows = task_row::Entity::find().all(&t.db).await.unwrap();
    assert!(rows.iter().all(|row| row.locked_by.is_none()), "{rows:?}");

    // Commands that run no task do not need the state.
    let output = app(&t, "cli-without-state", "--json list")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    t
}

async fn an_embedded_app_reads_the_seed_settings_from_the_environment(t: TestDb) -> TestDb {
    let registry = Registry::new();
    builtin::register(&registry);
    let queue = t.queue(registry, Config::default());
    queue.enqueue::<builtin::Fail>(&()).await.unwrap();
    // With the default MAX_ATTEMPTS (25) the failed task would wait 6 s
    // for its retry and the app would time out; 1 fails it for good.
    let output = app(&t, "embedded", "")
        .env("MAX_ATTEMPTS", "1")
        .env("BACKGROUND_TASK_RUN_ASYNC", "true")
        .env("BACKGROUND_TASK_ASYNC_THREADS", "3")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("CONFIG attempts=1 executors=3"),
        "{}",
        text(&output)
    );
    let done = history(&t).await;
    assert_eq!(done.len(), 1);
    assert!(done[0].failed_at.is_some());
    assert_eq!(done[0].attempts, 1);

    // A bad value is an error naming the variable; nothing runs.
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    let output = app(&t, "embedded", "")
        .env("BACKGROUND_TASK_TASKS_PER_THREAD", "many")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("BACKGROUND_TASK_TASKS_PER_THREAD") && stderr.contains("\"many\""),
        "{}",
        text(&output)
    );
    assert_eq!(task_row::Entity::find().count(&t.db).await.unwrap(), 1);
    t
}

/// An app's own binary, run by the tests above through `app`:
/// `BGT_APP_MODE` is
/// - `cli-with-state` / `cli-without-state`: `cli::run` with the command
///   line `BGT_APP_ARGS`, a registry holding `Greet` and, in the first mode,
///   its state, made with `await` as an app would;
/// - `embedded`: a runner started with `Config::from_env()` (and a short
///   poll), which prints its settings and stops once no task is left.
///
/// It exits with the exit code of the command.
#[test]
#[ignore = "entry point of the app binaries started by other tests"]
fn app_binary() {
    let Ok(mode) = std::env::var("BGT_APP_MODE") else {
        return;
    };
    let args = std::env::var("BGT_APP_ARGS").unwrap_or_default();
    let url = std::env::var("DATABASE_URL").unwrap();
    let code = actix_rt::System::new().block_on(async move {
        let registry = Registry::new();
        builtin::register(&registry);
        match mode.as_str() {
            "cli-with-state" | "cli-without-state" => {
                registry.register(Greet);
                if mode == "cli-with-state" {
                    let db = background_tasks::db::connect(Some(&url)).await.unwrap();
                    registry
                        .data(Greeting("hello from the app".into()))
                        .data(db);
                }
                let args = std::iter::once("my-app").chain(args.split_whitespace());
                let code = background_tasks::cli::run(registry, args).await;
                (0..=5u8)
                    .find(|n| code == std::process::ExitCode::from(*n))
                    .map_or(101, i32::from)
            }
            "embedded" => embedded(registry, &url).await,
            other => panic!("unknown BGT_APP_MODE {other}"),
        }
    });
    std::process::exit(code);
}

/// The `embedded` mode of `app_binary`; returns the exit code.
async fn embedded(registry: Registry, url: &str) -> i32 {
    let config = match Config::from_env().and_then(|builder| {
        builder
            .sleep(Duration::from_millis(50)) // the app's own choice
            .build()
    }) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("app: {err}");
            return 2;
        }
    };
    println!(
        "CONFIG attempts={} executors={}",
        config.max_attempts(),
        config.executors()
    );
    let db = background_tasks::db::connect(Some(url)).await.unwrap();
    let queue = background_tasks::Queue::with_parts(db.clone(), registry, config);
    let runner = Runner::start(queue).unwrap();
    wait_for("no task left", WAIT, || async {
        task_row::Entity::find().count(&db).await.unwrap() == 0
    })
    .await;
    runner.shutdown(Duration::from_secs(5)).await;
    0
}
