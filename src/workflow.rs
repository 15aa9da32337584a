//! Tasks that run after other tasks: [`crate::Enqueue::after`] for one
//! task, and [`Workflow`] for a graph of named steps (fan-out, fan-in),
//! enqueued in one transaction.
//!
//! A task that waits is stored at once, held: its row's `run_at` is the
//! far future (`9999-01-01`), so no runner takes it, not even a Django
//! `process_tasks` sharing the tables. The transaction that records the
//! outcome of its last dependency releases it (sets its `run_at` to its
//! own schedule, or now), exactly once with any number of runners. When a
//! dependency fails permanently or is cancelled, the tasks after it are
//! cancelled (a history row marked cancelled, and `Cancelled` events),
//! and theirs in turn, unless a step asked to [`run_anyway`]. A step reads
//! its dependencies' outcomes and results from its context
//! ([`crate::TaskContext::dependencies`],
//! [`crate::TaskContext::dependency_result`]).
//!
//! Refused at enqueue, with nothing written: a dependency that is neither
//! waiting, running nor in the history (by the id it had), one that
//! already failed or was cancelled (unless `run_anyway`), a workflow with
//! a cycle, a repeated step name or a dependency on a step it does not
//! have, and a step that repeats (each run of a chain is its own task).
//!
//! Dependencies are settled by this crate's runners. A Django runner that
//! runs a task a step waits for writes its history without settling the
//! step, which then waits for ever: run the tasks of a workflow on
//! `bgtasks` runners (a queue of their own does it).
//!
//! [`run_anyway`]: crate::Enqueue::run_anyway

pub mod request;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use crate::entity::dependency;
use crate::error::{Error, Result};
use crate::queue::TaskSpec;
use crate::store::steps::{BATCH_CALLBACK, BATCH_PREFIX};
use crate::task::TaskError;

/// How a dependency of a running step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DependencyState {
    /// It succeeded.
    Succeeded,
    /// It failed permanently (a step that runs anyway).
    Failed,
    /// It was cancelled (a step that runs anyway).
    Cancelled,
    /// It has not finished (not seen by a running step).
    Pending,
}

/// One task a step ran after, as [`crate::TaskContext::dependencies`]
/// lists it.
#[derive(Clone, Debug)]
pub struct Dependency {
    /// Id the dependency had.
    pub task_id: i32,
    /// How it ended.
    pub state: DependencyState,
    result: Option<String>,
}

impl Dependency {
    /// What the dependency returned, as stored (JSON); `None` when it
    /// returned nothing or did not succeed.
    pub fn result_json(&self) -> Option<&str> {
        self.result.as_deref()
    }

    /// What the dependency returned, decoded as `T` (its task's `Output`).
    /// A permanent error when it did not succeed or the result does not
    /// decode as `T`.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        if self.state != DependencyState::Succeeded {
            return Err(TaskError::invalid(format!(
                "task {} did not succeed ({:?}): it has no result",
                self.task_id, self.state
            )));
        }
        serde_json::from_str(self.result.as_deref().unwrap_or("null")).map_err(|err| {
            TaskError::invalid(format!(
                "the result of task {} does not decode as {}: {err}",
                self.task_id,
                std::any::type_name::<T>()
            ))
        })
    }
}

/// How the tasks a step ran after ended, counted: what a batch's
/// callback reads ([`crate::TaskContext::dependency_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DependencyCounts {
    /// Succeeded.
    pub succeeded: usize,
    /// Failed permanently.
    pub failed: usize,
    /// Cancelled.
    pub cancelled: usize,
}

impl DependencyCounts {
    pub(crate) fn of(dependencies: &[Dependency]) -> Self {
        let mut counts = Self::default();
        for dep in dependencies {
            match dep.state {
                DependencyState::Succeeded => counts.succeeded += 1,
                DependencyState::Failed => counts.failed += 1,
                DependencyState::Cancelled => counts.cancelled += 1,
                DependencyState::Pending => {}
            }
        }
        counts
    }
}

impl From<dependency::Model> for Dependency {
    fn from(edge: dependency::Model) -> Self {
        let state = match edge.state.as_deref() {
            Some("succeeded") => DependencyState::Succeeded,
            Some("failed") => DependencyState::Failed,
            Some("cancelled") => DependencyState::Cancelled,
            _ => DependencyState::Pending,
        };
        Self {
            task_id: edge.depends_on,
            state,
            result: edge.result,
        }
    }
}

/// A graph of named steps, each a task, enqueued together by
/// [`crate::Queue::enqueue_workflow`]: a step runs once every step it is
/// after has succeeded.
///
/// ```no_run
/// # use background_tasks::{Queue, TaskSpec, Workflow, Task, TaskContext, TaskError};
/// # struct Fetch; impl Task for Fetch { type Params = String; type Output = String;
/// #   fn name() -> &'static str { "fetch" }
/// #   async fn run(&self, p: String, _: TaskContext) -> Result<String, TaskError> { Ok(p) } }
/// # struct Merge; impl Task for Merge { type Params = (); type Output = ();
/// #   fn name() -> &'static str { "merge" }
/// #   async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> { Ok(()) } }
/// # async fn demo(queue: Queue) -> background_tasks::Result<()> {
/// let workflow = Workflow::new("nightly-report")
///     .step("eu", TaskSpec::new::<Fetch>(&"eu".to_owned()))
///     .step("us", TaskSpec::new::<Fetch>(&"us".to_owned()))
///     .step_after("merge", TaskSpec::new::<Merge>(&()), ["eu", "us"]);
/// let ids = queue.enqueue_workflow(workflow).await?;
/// println!("merge is task {}", ids["merge"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Workflow {
    name: String,
    steps: Vec<(String, TaskSpec, Vec<String>)>,
    /// Built by [`Batch`]: its name carries [`BATCH_PREFIX`].
    batch: bool,
}

/// The ids of a workflow's tasks, by step name.
pub type WorkflowIds = BTreeMap<String, i32>;

impl Workflow {
    /// An empty workflow; `name` labels its steps in the dashboard and the
    /// CLI (at most 190 characters).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
            batch: false,
        }
    }

    /// Adds a step that waits for no other step.
    #[must_use]
    pub fn step(self, name: impl Into<String>, spec: TaskSpec) -> Self {
        self.step_after(name, spec, std::iter::empty::<String>())
    }

    /// Adds a step that runs after the steps named in `after` (added
    /// before or after it).
    #[must_use]
    pub fn step_after<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        spec: TaskSpec,
        after: impl IntoIterator<Item = S>,
    ) -> Self {
        self.steps.push((
            name.into(),
            spec,
            after.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps in an order where each comes after the steps it waits
    /// for, with the positions (in that order) of those steps; or why the
    /// graph cannot run.
    pub(crate) fn into_ordered(self) -> Result<(String, Vec<Ordered>)> {
        let invalid = |why: String| Error::invalid("workflow", why);
        let name_len = self.name.chars().count();
        if name_len == 0 || name_len > 190 {
            return Err(invalid(format!(
                "the workflow's name has {name_len} characters; give 1 to 190"
            )));
        }
        if self.steps.is_empty() {
            return Err(invalid(format!("workflow {:?} has no step", self.name)));
        }
        if self.name.starts_with(BATCH_PREFIX) && !self.batch {
            return Err(invalid(format!(
                "workflow names starting with {BATCH_PREFIX:?} are the batches' own; name \
                 workflow {:?} otherwise",
                self.name
            )));
        }
        let mut index = BTreeMap::new();
        for (i, (step, _, _)) in self.steps.iter().enumerate() {
            let len = step.chars().count();
            if len == 0 || len > 190 {
                return Err(invalid(format!(
                    "a step name of workflow {:?} has {len} characters; give 1 to 190",
                    self.name
                )));
            }
            if index.insert(step.clone(), i).is_some() {
                return Err(invalid(format!(
                    "workflow {:?} has two steps named {step:?}; step names are unique",
                    self.name
                )));
            }
        }
        let mut waits_for: Vec<BTreeSet<usize>> = Vec::with_capacity(self.steps.len());
        for (step, _, after) in &self.steps {
            let mut deps = BTreeSet::new();
            for dep in after {
                let Some(&at) = index.get(dep) else {
                    return Err(invalid(format!(
                        "step {step:?} of workflow {:?} runs after {dep:?}, which is not one of \
                         its steps",
                        self.name
                    )));
                };
                deps.insert(at);
            }
            waits_for.push(deps);
        }
        // Kahn's order; what is left over lies on a cycle.
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        let mut left: Vec<usize> = waits_for.iter().map(BTreeSet::len).collect();
        for (i, deps) in waits_for.iter().enumerate() {
            for dep in deps {
                dependents[*dep].push(i);
            }
        }
        let mut ready: Vec<usize> = (0..self.steps.len()).filter(|i| left[*i] == 0).collect();
        ready.reverse();
        let mut order = Vec::with_capacity(self.steps.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for next in &dependents[i] {
                left[*next] -= 1;
                if left[*next] == 0 {
                    ready.push(*next);
                }
            }
        }
        if order.len() < self.steps.len() {
            let stuck: Vec<&str> = (0..self.steps.len())
                .filter(|i| left[*i] > 0)
                .map(|i| self.steps[i].0.as_str())
                .collect();
            return Err(invalid(format!(
                "workflow {:?} has a cycle: steps {stuck:?} wait for each other, so none of them \
                 could ever run",
                self.name
            )));
        }
        let mut position = vec![0; self.steps.len()];
        for (at, i) in order.iter().enumerate() {
            position[*i] = at;
        }
        let mut steps: Vec<Option<(String, TaskSpec)>> = self
            .steps
            .into_iter()
            .map(|(step, spec, _)| Some((step, spec)))
            .collect();
        let ordered = order
            .iter()
            .map(|i| {
                let (name, spec) = steps[*i].take().expect("each step is taken once");
                Ordered {
                    name,
                    spec,
                    after: waits_for[*i].iter().map(|dep| position[*dep]).collect(),
                }
            })
            .collect();
        Ok((self.name, ordered))
    }
}

/// A group of tasks enqueued together, with a callback task that runs
/// once when all of them have finished ([`Batch::on_finish`]: whatever
/// their outcomes, which it counts with
/// [`crate::TaskContext::dependency_counts`]) or only when all succeeded
/// ([`Batch::on_success`]: cancelled at the first permanent failure).
/// Enqueued in one transaction by [`crate::Queue::enqueue_batch`]; built
/// on [`Workflow`] (the batch is a workflow named `batch:NAME` whose
/// callback waits for every task), so the callback is released exactly
/// once with any number of runners. [`crate::Event::BatchFinished`] fires
/// where its callback is released or cancelled.
///
/// ```no_run
/// # use background_tasks::{Batch, Queue, Task, TaskContext, TaskError, TaskSpec};
/// # struct Send; impl Task for Send { type Params = u32; type Output = ();
/// #   fn name() -> &'static str { "send" }
/// #   async fn run(&self, _: u32, _: TaskContext) -> Result<(), TaskError> { Ok(()) } }
/// # struct Report; impl Task for Report { type Params = (); type Output = ();
/// #   fn name() -> &'static str { "report" }
/// #   async fn run(&self, _: (), ctx: TaskContext) -> Result<(), TaskError> {
/// #     let counts = ctx.dependency_counts(); println!("{} sent, {} failed", counts.succeeded, counts.failed); Ok(()) } }
/// # async fn demo(queue: Queue) -> background_tasks::Result<()> {
/// let batch = Batch::new("newsletter-42")
///     .tasks((0..100).map(|user| TaskSpec::new::<Send>(&user)))
///     .on_finish(TaskSpec::new::<Report>(&()));
/// let ids = queue.enqueue_batch(batch).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Batch {
    name: String,
    tasks: Vec<TaskSpec>,
    callback: Option<(TaskSpec, bool)>,
}

/// The ids of a batch's tasks, in the order given, and of its callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchIds {
    /// The tasks.
    pub tasks: Vec<i32>,
    /// The callback, when the batch has one.
    pub callback: Option<i32>,
}

impl Batch {
    /// An empty batch; `name` labels it (at most 184 characters).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tasks: Vec::new(),
            callback: None,
        }
    }

    /// Adds a task.
    #[must_use]
    pub fn task(mut self, spec: TaskSpec) -> Self {
        self.tasks.push(spec);
        self
    }

    /// Adds tasks.
    #[must_use]
    pub fn tasks(mut self, specs: impl IntoIterator<Item = TaskSpec>) -> Self {
        self.tasks.extend(specs);
        self
    }

    /// The callback runs once every task has finished, however each ended.
    #[must_use]
    pub fn on_finish(mut self, callback: TaskSpec) -> Self {
        self.callback = Some((callback.run_anyway(true), true));
        self
    }

    /// The callback runs only if every task succeeded; it is cancelled at
    /// the first task that fails permanently or is cancelled.
    #[must_use]
    pub fn on_success(mut self, callback: TaskSpec) -> Self {
        self.callback = Some((callback.run_anyway(false), false));
        self
    }

    /// The batch as the workflow that runs it.
    fn into_workflow(self) -> Result<(Workflow, usize, bool)> {
        let name_len = self.name.chars().count();
        if name_len == 0 || name_len > 184 {
            return Err(Error::invalid(
                "batch",
                format!("the batch's name has {name_len} characters; give 1 to 184"),
            ));
        }
        if self.tasks.is_empty() {
            return Err(Error::invalid(
                "batch",
                format!("batch {:?} has no task", self.name),
            ));
        }
        let count = self.tasks.len();
        let mut workflow = Workflow::new(format!("{BATCH_PREFIX}{}", self.name));
        workflow.batch = true;
        let names: Vec<String> = (0..count).map(|i| format!("task-{i}")).collect();
        for (name, spec) in names.iter().zip(self.tasks) {
            workflow = workflow.step(name.clone(), spec);
        }
        let has_callback = self.callback.is_some();
        if let Some((callback, _)) = self.callback {
            workflow = workflow.step_after(BATCH_CALLBACK, callback, names);
        }
        Ok((workflow, count, has_callback))
    }
}

/// A step in enqueue order.
#[derive(Debug)]
pub(crate) struct Ordered {
    pub name: String,
    pub spec: TaskSpec,
    /// Positions (in enqueue order, all before this one) of the steps it
    /// waits for.
    pub after: Vec<usize>,
}

impl crate::Queue {
    /// Enqueues `batch` in one transaction: its tasks (due at once, or at
    /// their schedules) and its callback, held until they have finished.
    pub async fn enqueue_batch(&self, batch: Batch) -> Result<BatchIds> {
        crate::db::outside_own_transaction(self.db(), self.enqueue_batch_with(self.db(), batch))
            .await
    }

    /// Like [`crate::Queue::enqueue_batch`], on `conn` (a connection, or a
    /// transaction of the caller's).
    pub async fn enqueue_batch_with<C>(&self, conn: &C, batch: Batch) -> Result<BatchIds>
    where
        C: sea_orm::ConnectionTrait + sea_orm::TransactionTrait,
        C::Transaction: sea_orm::ConnectionTrait + sea_orm::TransactionSession,
    {
        let (workflow, count, has_callback) = batch.into_workflow()?;
        let ids = self.enqueue_workflow_with(conn, workflow).await?;
        Ok(BatchIds {
            tasks: (0..count).map(|i| ids[&format!("task-{i}")]).collect(),
            callback: has_callback.then(|| ids[BATCH_CALLBACK]),
        })
    }

    /// Enqueues every step of `workflow` in one transaction and returns
    /// their task ids by step name. The steps that wait for nothing are
    /// due at once (or at their schedule); the others are held until the
    /// steps they wait for have succeeded. Nothing is written when a step
    /// is refused (see [`crate::workflow`]).
    pub async fn enqueue_workflow(&self, workflow: Workflow) -> Result<WorkflowIds> {
        crate::db::outside_own_transaction(
            self.db(),
            self.enqueue_workflow_with(self.db(), workflow),
        )
        .await
    }

    /// Like [`crate::Queue::enqueue_workflow`], on `conn` (a connection,
    /// or a transaction of the caller's, where the steps commit with it).
    pub async fn enqueue_workflow_with<C>(
        &self,
        conn: &C,
        workflow: Workflow,
    ) -> Result<WorkflowIds>
    where
        C: sea_orm::ConnectionTrait + sea_orm::TransactionTrait,
        C::Transaction: sea_orm::ConnectionTrait + sea_orm::TransactionSession,
    {
        let (name, ordered) = workflow.into_ordered()?;
        let now = self.config().clock().now();
        let txn = crate::store::begin_write(conn).await?;
        let mut ids: Vec<i32> = Vec::with_capacity(ordered.len());
        let mut created = Vec::with_capacity(ordered.len());
        let mut by_name = WorkflowIds::new();
        for step in ordered {
            let after = step.after.iter().map(|at| ids[*at]).collect();
            let resolved = step
                .spec
                .in_workflow(&name, &step.name, after)
                .resolve(now)?;
            let task = match self.write(&txn, resolved, now).await? {
                crate::Enqueued::Created(task) => task,
                _ => {
                    return Err(Error::invalid(
                        "workflow",
                        format!(
                            "step {:?} of workflow {name:?} is a unique task that is already \
                             waiting or running: a workflow's steps are new tasks; enqueue it \
                             without unique",
                            step.name
                        ),
                    ));
                }
            };
            ids.push(task.id);
            by_name.insert(step.name, task.id);
            created.push(task);
        }
        sea_orm::TransactionSession::commit(txn).await?;
        for task in created {
            self.events().emit(crate::Event::Created { task });
        }
        self.wake_handle().notify_one();
        Ok(by_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec::call("noop", &(), &(), &crate::Registry::new())
    }

    #[test]
    fn steps_come_after_what_they_wait_for() {
        let (_, ordered) = Workflow::new("w")
            .step_after("c", spec(), ["a", "b"])
            .step_after("b", spec(), ["a"])
            .step("a", spec())
            .into_ordered()
            .unwrap();
        let names: Vec<&str> = ordered.iter().map(|step| step.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let mut after = ordered[2].after.clone();
        after.sort_unstable();
        assert_eq!(after, [0, 1]);
    }

    #[test]
    fn a_cycle_is_refused_naming_its_steps() {
        let err = Workflow::new("w")
            .step("a", spec())
            .step_after("b", spec(), ["c"])
            .step_after("c", spec(), ["b"])
            .into_ordered()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cycle") && err.contains("\"b\"") && err.contains("\"c\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_and_repeated_steps_are_refused() {
        let unknown = Workflow::new("w")
            .step_after("a", spec(), ["nope"])
            .into_ordered()
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("\"nope\""), "{unknown}");
        let twice = Workflow::new("w")
            .step("a", spec())
            .step("a", spec())
            .into_ordered()
            .unwrap_err()
            .to_string();
        assert!(twice.contains("two steps named"), "{twice}");
        let itself = Workflow::new("w")
            .step_after("a", spec(), ["a"])
            .into_ordered()
            .unwrap_err()
            .to_string();
        assert!(itself.contains("cycle"), "{itself}");
    }
}
