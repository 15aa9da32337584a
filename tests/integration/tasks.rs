//! Task definitions shared by the tests.

use background_tasks::{Action, Schedule, Task, TaskContext, TaskDefaults, TaskError};
use serde::{Deserialize, Serialize};

/// Positional args, no defaults: named like the seed test's task.
pub struct Scheduled;

impl Task for Scheduled {
    type Params = (i64,);
    type Output = ();
    fn name() -> &'static str {
        "test_background_gets_scheduled"
    }
    async fn run(&self, _: (i64,), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The seed's `add.now(2, 3) == 5`.
pub struct Add;

impl Task for Add {
    type Params = (i64, i64);
    type Output = i64;
    fn name() -> &'static str {
        "add"
    }
    async fn run(&self, (a, b): (i64, i64), _: TaskContext) -> Result<i64, TaskError> {
        Ok(a + b)
    }
}

/// Keyword params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
}

/// Decorator default `schedule=60`.
pub struct Delayed;

impl Task for Delayed {
    type Params = Mail;
    type Output = ();
    fn name() -> &'static str {
        "delayed"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().schedule(60)
    }
    async fn run(&self, _: Mail, _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Decorator default `schedule={'priority': 2}` and a queue.
pub struct Prioritized;

impl Task for Prioritized {
    type Params = Mail;
    type Output = ();
    fn name() -> &'static str {
        "prioritized"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new()
            .schedule(Schedule::new().priority(2))
            .queue("mail")
    }
    async fn run(&self, _: Mail, _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Decorator default action RESCHEDULE_EXISTING.
pub struct Rescheduling;

impl Task for Rescheduling {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "rescheduling"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().schedule(Schedule::new().action(Action::RescheduleExisting))
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Decorator default action CHECK_EXISTING.
pub struct Checking;

impl Task for Checking {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "checking"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().schedule(Schedule::new().action(Action::CheckExisting))
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Decorator default remove_existing_tasks=True.
pub struct Replacing;

impl Task for Replacing {
    type Params = (String,);
    type Output = ();
    fn name() -> &'static str {
        "replacing"
    }
    fn defaults() -> TaskDefaults {
        TaskDefaults::new().remove_existing_tasks(true)
    }
    async fn run(&self, _: (String,), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Params a dictionary with integer keys (ArgumentsWithDictTestCase).
pub struct WithDict;

impl Task for WithDict {
    type Params = (std::collections::HashMap<u32, i32>,);
    type Output = ();
    fn name() -> &'static str {
        "k"
    }
    async fn run(&self, _: Self::Params, _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Params that may not encode (floats).
pub struct Measure;

impl Task for Measure {
    type Params = (f64,);
    type Output = ();
    fn name() -> &'static str {
        "measure"
    }
    async fn run(&self, _: (f64,), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::params::{self, ParamsError};
use serde_json::{Map, Value};

/// The arguments a task received: positional and keyword.
pub type Call = (Vec<Value>, Map<String, Value>);

/// The seed tests' `record_task`: keeps every (args, kwargs) it receives.
/// Takes both positional and keyword arguments, like a Python function.
#[derive(Clone, Default)]
pub struct Record {
    pub calls: Arc<Mutex<Vec<Call>>>,
}

impl Record {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Task for Record {
    type Params = Call;
    type Output = ();
    fn name() -> &'static str {
        "record"
    }
    fn encode((args, kwargs): &Call) -> Result<String, ParamsError> {
        params::encode_call(args, kwargs)
    }
    fn decode(text: &str) -> Result<Call, ParamsError> {
        params::decode_call(text)
    }
    async fn run(&self, call: Call, _: TaskContext) -> Result<(), TaskError> {
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
}

/// Always fails with a retryable error (the seed's `0/0`).
pub struct Fail;

impl Task for Fail {
    type Params = (i64,);
    type Output = ();
    fn name() -> &'static str {
        "fail"
    }
    async fn run(&self, (n,): (i64,), _: TaskContext) -> Result<(), TaskError> {
        n.checked_div(0)
            .ok_or_else(|| TaskError::msg("ZeroDivisionError: division by zero"))?;
        Ok(())
    }
}

/// Fails with an invalid-task error (a subclass of InvalidTaskError).
pub struct Invalid;

impl Task for Invalid {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "invalid"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::invalid(
            "MyInvalidTaskError: this task can never succeed",
        ))
    }
}

/// Panics.
pub struct Panics;

impl Task for Panics {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "panics"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        panic!("the handler blew up")
    }
}

/// Counts executions; sleeps (asynchronously) for the given milliseconds.
#[derive(Clone, Default)]
pub struct Nap {
    pub runs: Arc<AtomicUsize>,
}

impl Nap {
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Task for Nap {
    type Params = (u64,);
    type Output = ();
    fn name() -> &'static str {
        "nap"
    }
    async fn run(&self, (millis,): (u64,), _: TaskContext) -> Result<(), TaskError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(())
    }
}

/// Blocks its thread (a CPU-bound or badly written body).
pub struct Blocking;

impl Task for Blocking {
    type Params = (u64,);
    type Output = ();
    fn name() -> &'static str {
        "blocking"
    }
    async fn run(&self, (millis,): (u64,), _: TaskContext) -> Result<(), TaskError> {
        std::thread::sleep(Duration::from_millis(millis));
        Ok(())
    }
}

/// Reads its own row while running: what the runner wrote into it.
#[derive(Clone)]
pub struct Probe {
    pub db: sea_orm::DatabaseConnection,
    pub seen: Arc<Mutex<Vec<background_tasks::task_row::Model>>>,
}

impl Task for Probe {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "probe"
    }
    async fn run(&self, _: (), ctx: TaskContext) -> Result<(), TaskError> {
        use sea_orm::EntityTrait;
        let id = ctx.task_id().expect("a stored task has an id");
        let row = background_tasks::task_row::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .expect("the row exists while the task runs");
        self.seen.lock().unwrap().push(row);
        Ok(())
    }
}

/// Ledger of overlapping executions: how many ran at the same time, at most.
#[derive(Clone, Default)]
pub struct Overlap {
    pub current: Arc<AtomicUsize>,
    pub most: Arc<AtomicUsize>,
    pub runs: Arc<AtomicUsize>,
}

impl Task for Overlap {
    type Params = (u64,);
    type Output = ();
    fn name() -> &'static str {
        "overlap"
    }
    async fn run(&self, (millis,): (u64,), _: TaskContext) -> Result<(), TaskError> {
        let now_running = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now_running, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.current.fetch_sub(1, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
