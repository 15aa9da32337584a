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
