//! Tasks the bundled `bgtasks` binary can run out of the box, so a first
//! command shows real work: `bgtasks demo` enqueues them, and they are handy
//! for smoke tests of a deployment (`bgtasks.noop` measures the queue
//! itself). Register them in your own binary with [`register`].

use std::time::Duration;

use serde_json::{Map, Value};

use crate::params::{self, ParamsError};
use crate::registry::Registry;
use crate::task::{Task, TaskContext, TaskError};

/// Registers every built-in task.
pub fn register(registry: &Registry) {
    registry
        .register(Noop)
        .register(Sleep)
        .register(Fail)
        .register(Reject)
        .register(Echo);
}

/// `bgtasks.noop`: does nothing, successfully.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

impl Task for Noop {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "bgtasks.noop"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// `bgtasks.sleep(seconds)`: waits that long (without blocking a thread).
#[derive(Debug, Clone, Copy)]
pub struct Sleep;

impl Task for Sleep {
    type Params = f64;
    type Output = ();
    fn name() -> &'static str {
        "bgtasks.sleep"
    }
    async fn run(&self, seconds: f64, _: TaskContext) -> Result<(), TaskError> {
        let duration = Duration::try_from_secs_f64(seconds)
            .map_err(|err| TaskError::invalid(format!("cannot sleep {seconds} seconds: {err}")))?;
        tokio::time::sleep(duration).await;
        Ok(())
    }
}

/// `bgtasks.fail`: always fails with a retryable error, to watch retries
/// and backoff.
#[derive(Debug, Clone, Copy)]
pub struct Fail;

impl Task for Fail {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "bgtasks.fail"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::msg("bgtasks.fail always fails"))
    }
}

/// `bgtasks.reject`: fails with an invalid-task error: no retry.
#[derive(Debug, Clone, Copy)]
pub struct Reject;

impl Task for Reject {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "bgtasks.reject"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::invalid(
            "bgtasks.reject always fails permanently",
        ))
    }
}

/// `bgtasks.echo(*args, **kwargs)`: prints its arguments on stdout, one
/// line of JSON (with `--log-std` that line goes to the log).
#[derive(Debug, Clone, Copy)]
pub struct Echo;

impl Task for Echo {
    type Params = (Vec<Value>, Map<String, Value>);
    type Output = ();
    fn name() -> &'static str {
        "bgtasks.echo"
    }
    fn encode((args, kwargs): &Self::Params) -> Result<String, ParamsError> {
        params::encode_call(args, kwargs)
    }
    fn decode(text: &str) -> Result<Self::Params, ParamsError> {
        params::decode_call(text)
    }
    async fn run(&self, (args, kwargs): Self::Params, _: TaskContext) -> Result<(), TaskError> {
        use std::io::Write;
        // Printing is this task's job: it shows what a task's output does.
        let line = serde_json::json!({ "args": args, "kwargs": kwargs });
        writeln!(std::io::stdout().lock(), "{line}")?;
        Ok(())
    }
}
