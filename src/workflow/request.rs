//! Workflows and batches written as JSON: the body of `POST
//! /api/workflows` and `POST /api/batches`, and the file `bgtasks workflow
//! create` and `bgtasks batch create` read. Both go through
//! [`WorkflowRequest`] and [`BatchRequest`], so they accept and refuse the
//! same things.
//!
//! ```json
//! {"name": "nightly-2026-12-03",
//!  "steps": [
//!    {"name": "eu", "task": "reports.fetch", "params": {"region": "eu"}},
//!    {"name": "us", "task": "reports.fetch", "params": [["us"], {}], "queue": "io"},
//!    {"name": "merge", "task": "reports.merge", "after": ["eu", "us"], "run_anyway": true}]}
//! ```
//!
//! ```json
//! {"name": "newsletter-42",
//!  "tasks": [{"task": "mail.send", "args": [1]}, {"task": "mail.send", "args": [2]}],
//!  "on_finish": {"task": "mail.report"}}
//! ```
//!
//! A task's arguments are `params` (an object: the keyword arguments; or
//! `[args, kwargs]`), or `args` (an array) and `kwargs` (an object), as
//! `bgtasks enqueue` takes them. Options: `queue`, `priority`, `schedule`
//! (seconds from now, or a time in UTC: `2026-12-03 18:00` or RFC 3339),
//! `verbose_name`, `max_attempts`, `key`. A task name this process has not
//! registered is refused unless the task says `"allow_unknown": true` (it
//! is then for a runner that has it). Anything else is refused with what
//! to fix, and nothing is written.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{Batch, Workflow};
use crate::error::{Error, Result};
use crate::queue::TaskSpec;
use crate::registry::Registry;

/// A workflow as JSON (see the [module](self)).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    /// The workflow's name.
    pub name: String,
    /// Its steps.
    pub steps: Vec<StepRequest>,
}

/// One step of a [`WorkflowRequest`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// The step's name, unique in its workflow.
    pub name: String,
    /// The steps it runs after.
    #[serde(default)]
    pub after: Vec<String>,
    /// Run even when one of them did not succeed.
    #[serde(default)]
    pub run_anyway: bool,
    /// The registered name of its task.
    pub task: String,
    /// Keyword arguments (an object), or `[args, kwargs]`.
    #[serde(default)]
    pub params: Option<Value>,
    /// Positional arguments.
    #[serde(default)]
    pub args: Option<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Option<Value>,
    /// The queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// The priority.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Seconds from now, or a time in UTC.
    #[serde(default)]
    pub schedule: Option<Value>,
    /// A label.
    #[serde(default)]
    pub verbose_name: Option<String>,
    /// Attempts before it fails permanently.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The task's key, instead of what its key function computes.
    #[serde(default)]
    pub key: Option<String>,
    /// Enqueue a task name this process has not registered.
    #[serde(default)]
    pub allow_unknown: bool,
}

/// One task of a [`BatchRequest`], or its callback.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// The registered name of the task.
    pub task: String,
    /// Keyword arguments (an object), or `[args, kwargs]`.
    #[serde(default)]
    pub params: Option<Value>,
    /// Positional arguments.
    #[serde(default)]
    pub args: Option<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Option<Value>,
    /// The queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// The priority.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Seconds from now, or a time in UTC.
    #[serde(default)]
    pub schedule: Option<Value>,
    /// A label.
    #[serde(default)]
    pub verbose_name: Option<String>,
    /// Attempts before it fails permanently.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The task's key, instead of what its key function computes.
    #[serde(default)]
    pub key: Option<String>,
    /// Enqueue a task name this process has not registered.
    #[serde(default)]
    pub allow_unknown: bool,
}

/// A batch as JSON (see the [module](self)).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The batch's name.
    pub name: String,
    /// Its tasks.
    pub tasks: Vec<TaskRequest>,
    /// A callback run once every task finished, however.
    #[serde(default)]
    pub on_finish: Option<TaskRequest>,
    /// A callback run only if every task succeeded.
    #[serde(default)]
    pub on_success: Option<TaskRequest>,
}

const WORKFLOW_EXAMPLE: &str = r#"{"name": "nightly-2026-12-03", "steps": [{"name": "fetch", "task": "reports.fetch", "params": {"region": "eu"}}, {"name": "merge", "task": "reports.merge", "after": ["fetch"]}]}"#;
const BATCH_EXAMPLE: &str = r#"{"name": "newsletter-42", "tasks": [{"task": "mail.send", "args": [1]}], "on_finish": {"task": "mail.report"}}"#;

impl WorkflowRequest {
    /// Reads `json`; what does not parse is bad input naming what to fix.
    pub fn parse(json: &[u8]) -> Result<Self> {
        serde_json::from_slice(json).map_err(|err| {
            Error::invalid(
                "workflow",
                format!(
                    "the workflow is not valid ({err}); send an object such as {WORKFLOW_EXAMPLE}"
                ),
            )
        })
    }

    /// The workflow to enqueue: each step's task checked against
    /// `registry`, its arguments and options read. The graph itself is
    /// checked by [`crate::Queue::enqueue_workflow`].
    pub fn into_workflow(self, registry: &Registry) -> Result<Workflow> {
        check_text("name", &self.name)?;
        let mut workflow = Workflow::new(self.name.clone());
        for step in self.steps {
            check_text("step name", &step.name)?;
            let len = step.name.chars().count();
            if len == 0 || len > 190 {
                return Err(Error::invalid(
                    "steps",
                    format!("a step name has {len} characters; give 1 to 190"),
                ));
            }
            for dep in &step.after {
                check_text("after", dep)?;
            }
            let call = TaskRequest {
                task: step.task,
                params: step.params,
                args: step.args,
                kwargs: step.kwargs,
                queue: step.queue,
                priority: step.priority,
                schedule: step.schedule,
                verbose_name: step.verbose_name,
                max_attempts: step.max_attempts,
                key: step.key,
                allow_unknown: step.allow_unknown,
            };
            let spec = call
                .spec(registry)
                .map_err(|reason| {
                    Error::invalid(
                        "steps",
                        format!("step {:?} of workflow {:?}: {reason}", step.name, self.name),
                    )
                })?
                .run_anyway(step.run_anyway);
            workflow = workflow.step_after(step.name, spec, step.after);
        }
        Ok(workflow)
    }
}

impl BatchRequest {
    /// Reads `json`; what does not parse is bad input naming what to fix.
    pub fn parse(json: &[u8]) -> Result<Self> {
        serde_json::from_slice(json).map_err(|err| {
            Error::invalid(
                "batch",
                format!("the batch is not valid ({err}); send an object such as {BATCH_EXAMPLE}"),
            )
        })
    }

    /// The batch to enqueue, each task checked against `registry`.
    pub fn into_batch(self, registry: &Registry) -> Result<Batch> {
        check_text("name", &self.name)?;
        if self.tasks.is_empty() {
            return Err(Error::invalid(
                "tasks",
                format!(
                    "batch {:?} has no task; give at least one in \"tasks\"",
                    self.name
                ),
            ));
        }
        let mut batch = Batch::new(self.name.clone());
        for (i, task) in self.tasks.into_iter().enumerate() {
            let spec = task.spec(registry).map_err(|reason| {
                Error::invalid(
                    "tasks",
                    format!("task {i} of batch {:?}: {reason}", self.name),
                )
            })?;
            batch = batch.task(spec);
        }
        let callback = |task: TaskRequest, key: &str| {
            task.spec(registry).map_err(|reason| {
                Error::invalid(
                    "callback",
                    format!("the {key} callback of batch {:?}: {reason}", self.name),
                )
            })
        };
        match (self.on_finish, self.on_success) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "callback",
                    "give on_finish (runs however the tasks end) or on_success (runs only if all \
                     succeed), not both",
                ));
            }
            (Some(task), None) => batch = batch.on_finish(callback(task, "on_finish")?),
            (None, Some(task)) => batch = batch.on_success(callback(task, "on_success")?),
            (None, None) => {}
        }
        Ok(batch)
    }
}

impl TaskRequest {
    /// The call this describes, or what is wrong with it.
    fn spec(self, registry: &Registry) -> Result<TaskSpec, String> {
        if self.task.contains('\0') {
            return Err("the task name holds a NUL byte; remove it".into());
        }
        if !self.allow_unknown && !registry.contains(&self.task) {
            let mut known = registry.names();
            known.sort();
            return Err(format!(
                "no task named {:?} is registered here (it knows: {}); check the name, or set \
                 \"allow_unknown\": true to enqueue it for a runner that has it",
                self.task,
                known.join(", ")
            ));
        }
        let (args, kwargs) = arguments(self.params, self.args, self.kwargs)?;
        let mut spec = TaskSpec::call(&self.task, &args, &kwargs, registry);
        if let Some(queue) = self.queue {
            if queue.contains('\0') {
                return Err("the queue name holds a NUL byte; remove it".into());
            }
            spec = spec.queue(queue);
        }
        if let Some(priority) = self.priority {
            spec = spec.priority(priority);
        }
        if let Some(label) = self.verbose_name {
            if label.contains('\0') {
                return Err("verbose_name holds a NUL byte; remove it".into());
            }
            spec = spec.verbose_name(label);
        }
        if let Some(attempts) = self.max_attempts {
            if attempts == 0 {
                return Err("max_attempts must be at least 1".into());
            }
            spec = spec.max_attempts(attempts);
        }
        if let Some(key) = self.key {
            crate::admin::validate_key(&key).map_err(|err| err.to_string())?;
            spec = spec.key(key);
        }
        match self.schedule {
            None | Some(Value::Null) => {}
            Some(Value::Number(seconds)) => {
                let seconds = seconds
                    .as_i64()
                    .filter(|s| s.unsigned_abs() <= crate::MAX_DURATION.as_secs())
                    .ok_or_else(|| {
                        format!(
                            "schedule {seconds} is not a whole number of seconds within 100 \
                             years"
                        )
                    })?;
                spec = spec.schedule(seconds);
            }
            Some(Value::String(text)) => spec = spec.schedule(time(&text)?),
            Some(other) => {
                return Err(format!(
                    "schedule is {other}: give seconds from now (a number) or a time in UTC \
                     (\"2026-12-03 18:00\")"
                ));
            }
        }
        Ok(spec)
    }
}

/// `(args, kwargs)` from `params` or from `args` and `kwargs`.
fn arguments(
    params: Option<Value>,
    args: Option<Value>,
    kwargs: Option<Value>,
) -> Result<(Value, Value), String> {
    let none = |value: &Option<Value>| matches!(value, None | Some(Value::Null));
    let shape = "give params as an object (keyword arguments) or as [args, kwargs], or args (an \
                 array) and kwargs (an object)";
    if !none(&params) {
        if !none(&args) || !none(&kwargs) {
            return Err(format!("params and args/kwargs are both given: {shape}"));
        }
        return match params {
            Some(Value::Object(map)) => Ok((Value::Array(Vec::new()), Value::Object(map))),
            Some(Value::Array(pair))
                if pair.len() == 2 && pair[0].is_array() && pair[1].is_object() =>
            {
                let mut pair = pair.into_iter();
                let args = pair.next().unwrap_or_default();
                let kwargs = pair.next().unwrap_or_default();
                Ok((args, kwargs))
            }
            _ => Err(format!(
                "params is neither an object nor [args, kwargs]: {shape}"
            )),
        };
    }
    let args = match args {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(array @ Value::Array(_)) => array,
        Some(_) => return Err(format!("args is not an array: {shape}")),
    };
    let kwargs = match kwargs {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(object @ Value::Object(_)) => object,
        Some(_) => return Err(format!("kwargs is not an object: {shape}")),
    };
    Ok((args, kwargs))
}

/// A time in UTC: RFC 3339, or `YYYY-MM-DD HH:MM[:SS]`.
fn time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(at.and_utc());
        }
    }
    Err(format!(
        "schedule {text:?} is not a time: give seconds from now (a number), \
         \"2026-12-03 18:00\" (UTC) or RFC 3339"
    ))
}

/// Refuses text with a NUL byte, which PostgreSQL cannot store.
fn check_text(field: &'static str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(
            field,
            "it holds a NUL byte (\\0), which the database cannot store; remove it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let registry = Registry::new();
        crate::builtin::register(&registry);
        registry
    }

    #[test]
    fn params_take_an_object_or_args_and_kwargs() {
        let (args, kwargs) = arguments(Some(serde_json::json!({"a": 1})), None, None).unwrap();
        assert_eq!(
            (args, kwargs),
            (serde_json::json!([]), serde_json::json!({"a": 1}))
        );
        let pair = serde_json::json!([[1], {"b": 2}]);
        let (args, kwargs) = arguments(Some(pair), None, None).unwrap();
        assert_eq!(
            (args, kwargs),
            (serde_json::json!([1]), serde_json::json!({"b": 2}))
        );
        assert!(arguments(Some(serde_json::json!([1, 2])), None, None).is_err());
        assert!(
            arguments(
                Some(serde_json::json!({})),
                Some(serde_json::json!([])),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_tasks_fields_and_empty_batches_are_refused() {
        let unknown =
            WorkflowRequest::parse(br#"{"name": "w", "steps": [{"name": "a", "task": "nope"}]}"#)
                .unwrap()
                .into_workflow(&registry())
                .unwrap_err()
                .to_string();
        assert!(
            unknown.contains("\"nope\"") && unknown.contains("allow_unknown"),
            "{unknown}"
        );
        let field = WorkflowRequest::parse(br#"{"name": "w", "steps": [], "extra": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(field.contains("extra"), "{field}");
        let empty = BatchRequest::parse(br#"{"name": "b", "tasks": []}"#)
            .unwrap()
            .into_batch(&registry())
            .unwrap_err()
            .to_string();
        assert!(empty.contains("no task"), "{empty}");
    }
}
