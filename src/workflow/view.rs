//! Reading workflows and batches back: what the dashboard's Workflows
//! page, `bgtasks workflow` / `bgtasks batch` and `/api/workflows` show.
//!
//! A workflow is found by its name, through its steps' rows: each step of
//! a workflow keeps its row (with the workflow's name, the step's name and
//! its dependencies) while the task waits or runs, and after it finished
//! for as long as its history row is kept; deleting the history row
//! (pruning, `delete_completed`) deletes it. A step whose task left
//! without a history row ([`crate::KeepHistory`]) is forgotten as it
//! finishes.
//!
//! **Names are not unique.** A workflow enqueued twice under one name
//! shows every step of both runs, side by side (the task ids tell them
//! apart), and a batch's counts add up both. Give each run its own name,
//! such as `nightly-report-2026-12-03`.
//!
//! Every read is bounded: the list is paged by name ([`list`]), a
//! workflow's steps are paged by task id ([`show`]); counts are computed
//! by the database over the steps of the workflows asked for.
//!
//! ```no_run
//! # async fn demo(db: background_tasks::sea_orm::DatabaseConnection) -> background_tasks::Result<()> {
//! use background_tasks::workflow::view;
//! let page = view::list(&db, None, 50).await?;
//! for workflow in &page.workflows {
//!     println!("{}: {} of {} steps succeeded", workflow.name, workflow.counts.succeeded, workflow.steps);
//! }
//! if let Some(report) = view::show(&db, "nightly-report-2026-12-03", None, 200).await? {
//!     for step in &report.steps {
//!         println!("{} (task {}): {}", step.step, step.task_id, step.state);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use serde::Serialize;

use crate::entity::{completed_task, step, task};
use crate::error::{Error, Result};
use crate::store::steps::{BATCH_CALLBACK, BATCH_PREFIX, Ended};
use crate::store::workflows::{self as sql, Tally};

/// Most workflows a page of [`list`] holds.
pub const MAX_WORKFLOWS_PAGE: u64 = 500;
/// Most steps a page of [`show`] holds.
pub const MAX_STEPS_PAGE: u64 = 1_000;

/// Where a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepState {
    /// Held until its dependencies finish ([`StepView::waiting_on`] of
    /// them have not).
    Waiting,
    /// Due (or scheduled, or waiting for a retry): a runner may take it.
    Queued,
    /// A runner holds it.
    Running,
    /// It succeeded.
    Succeeded,
    /// It failed permanently.
    Failed,
    /// It was cancelled: a dependency did not succeed, or an operator
    /// cancelled it.
    Cancelled,
    /// Its task row and its history row are both gone (deleted by an
    /// operator, or a Django runner wrote its history).
    Unknown,
}

impl StepState {
    /// The state as a word: `waiting`, `queued`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Waiting => "waiting",
            StepState::Queued => "queued",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Cancelled => "cancelled",
            StepState::Unknown => "unknown",
        }
    }

    /// Whether the step is done with (however it ended).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Cancelled
        )
    }
}

impl std::fmt::Display for StepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Steps per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Waiting for dependencies.
    pub waiting: u64,
    /// Queued.
    pub queued: u64,
    /// Running.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed permanently.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Row and history gone.
    pub unknown: u64,
}

impl StateCounts {
    fn of(tally: &Tally) -> Self {
        let n = |count: i64| u64::try_from(count).unwrap_or_default();
        StateCounts {
            waiting: n(tally.waiting),
            queued: n(tally.queued),
            running: n(tally.running),
            succeeded: n(tally.succeeded),
            failed: n(tally.failed),
            cancelled: n(tally.cancelled),
            unknown: n(tally.unknown),
        }
    }

    /// Steps that have not finished: waiting, queued or running.
    pub fn unfinished(&self) -> u64 {
        self.waiting + self.queued + self.running
    }
}

/// One workflow, as [`list`] shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkflowSummary {
    /// Its name (a batch's is `batch:NAME`).
    pub name: String,
    /// It is a [`crate::Batch`].
    pub batch: bool,
    /// How many steps it has (all runs under this name).
    pub steps: u64,
    /// Its steps per state.
    pub counts: StateCounts,
    /// Task id of its first step (enqueue order).
    pub first_task_id: i32,
    /// Task id of its newest step.
    pub newest_task_id: i32,
    /// When its most recently finished step finished; `None` while none
    /// has (or their history is gone).
    pub newest_activity: Option<DateTime<Utc>>,
}

/// A page of workflows, in name order.
#[derive(Clone, Debug, Serialize)]
pub struct WorkflowPage {
    /// The workflows.
    pub workflows: Vec<WorkflowSummary>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A dependency of a step.
#[derive(Clone, Debug, Serialize)]
pub struct DependencyView {
    /// The task it waits (or waited) for.
    pub task_id: i32,
    /// That task's step name, when it is a step of a workflow.
    pub step: Option<String>,
    /// How it ended, as the edge recorded it (`succeeded`, `failed`,
    /// `cancelled`); `None` while it has not.
    pub ended: Option<String>,
}

/// One step of a workflow and where it stands.
#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    /// The step's name.
    pub step: String,
    /// Its task's id.
    pub task_id: i32,
    /// Its task's name; `None` when its row and history are gone.
    pub task_name: Option<String>,
    /// Where it stands.
    pub state: StepState,
    /// Dependencies that have not finished (while it waits).
    pub waiting_on: u32,
    /// What it runs after.
    pub after: Vec<DependencyView>,
    /// It runs even when a dependency did not succeed.
    pub run_anyway: bool,
    /// When it runs (once released, while it waits); `None` once finished.
    pub run_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its queue.
    pub queue: Option<String>,
    /// Attempts so far.
    pub attempts: i32,
    /// The first line of its last error, if any.
    pub last_error: Option<String>,
}

/// A workflow with its steps, as [`show`] shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkflowView {
    /// Its name.
    pub name: String,
    /// It is a [`crate::Batch`].
    pub batch: bool,
    /// All its steps per state (not only this page's).
    pub counts: StateCounts,
    /// How many steps it has.
    pub total: u64,
    /// This page of its steps, in enqueue order.
    pub steps: Vec<StepView>,
    /// Pass as `after` for the next page of steps; `None` on the last.
    pub next: Option<i32>,
}

/// When a batch's callback runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    /// Once every task finished, however it ended.
    OnFinish,
    /// Only if every task succeeded.
    OnSuccess,
}

/// A batch's progress, as [`batch`] shows it.
#[derive(Clone, Debug, Serialize)]
pub struct BatchView {
    /// The batch's name (without `batch:`).
    pub name: String,
    /// Its tasks (the callback not counted).
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed permanently.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Not started: queued, or waiting.
    pub pending: u64,
    /// Running.
    pub running: u64,
    /// Row and history gone.
    pub unknown: u64,
    /// Its callback (the newest, when the name was used twice).
    pub callback: Option<StepView>,
    /// When the callback runs.
    pub callback_kind: Option<CallbackKind>,
}

impl BatchView {
    /// Tasks that finished, however.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// Up to `limit` (1 to [`MAX_WORKFLOWS_PAGE`]) workflows in name order,
/// after the name `after`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<WorkflowPage> {
    let limit = limit.clamp(1, MAX_WORKFLOWS_PAGE);
    let mut names = sql::names(conn, after, limit + 1).await?;
    let more = names.len() as u64 > limit;
    names.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let tallies = sql::tallies(conn, &names, None).await?;
    let newest: Vec<i32> = tallies
        .iter()
        .filter_map(|tally| tally.newest_history_id)
        .collect();
    let finished: BTreeMap<i32, DateTime<Utc>> = sql::history_by_id(conn, &newest)
        .await?
        .into_iter()
        .map(|row| (row.id, row.run_at))
        .collect();
    let workflows: Vec<WorkflowSummary> = tallies
        .iter()
        .map(|tally| WorkflowSummary {
            name: tally.workflow.clone(),
            batch: tally.workflow.starts_with(BATCH_PREFIX),
            steps: u64::try_from(tally.steps).unwrap_or_default(),
            counts: StateCounts::of(tally),
            first_task_id: tally.first_task_id,
            newest_task_id: tally.newest_task_id,
            newest_activity: tally
                .newest_history_id
                .and_then(|id| finished.get(&id).copied()),
        })
        .collect();
    let next = if more {
        workflows.last().map(|w| w.name.clone())
    } else {
        None
    };
    Ok(WorkflowPage { workflows, next })
}

/// The workflow `name` with up to `limit` (1 to [`MAX_STEPS_PAGE`]) of
/// its steps after the task id `after`; `None` when it has no step.
pub async fn show<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    after: Option<i32>,
    limit: u64,
) -> Result<Option<WorkflowView>> {
    check_name(name)?;
    let names = [name.to_owned()];
    let Some(tally) = sql::tallies(conn, &names, None).await?.pop() else {
        return Ok(None);
    };
    let limit = limit.clamp(1, MAX_STEPS_PAGE);
    let mut rows = sql::steps(conn, name, None, after, limit + 1).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let steps = views(conn, rows).await?;
    let next = if more {
        steps.last().map(|step| step.task_id)
    } else {
        None
    };
    Ok(Some(WorkflowView {
        name: name.to_owned(),
        batch: name.starts_with(BATCH_PREFIX),
        counts: StateCounts::of(&tally),
        total: u64::try_from(tally.steps).unwrap_or_default(),
        steps,
        next,
    }))
}

/// The progress of the batch `name` (as given to [`crate::Batch::new`]);
/// `None` when it has no task.
pub async fn batch<C: ConnectionTrait>(conn: &C, name: &str) -> Result<Option<BatchView>> {
    check_name(name)?;
    let workflow = format!("{BATCH_PREFIX}{name}");
    let names = [workflow.clone()];
    let Some(tally) = sql::tallies(conn, &names, Some(BATCH_CALLBACK))
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let counts = StateCounts::of(&tally);
    // The newest callback: walk the callbacks by id (there is one per run
    // of the name, so few).
    let mut callbacks = Vec::new();
    let mut after = None;
    loop {
        let page = sql::steps(conn, &workflow, Some(BATCH_CALLBACK), after, 100).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.task_id);
        let full = page.len() == 100;
        callbacks = page;
        if !full {
            break;
        }
    }
    let callback_row = callbacks.pop();
    let callback_kind = callback_row.as_ref().map(|row| {
        if row.run_anyway {
            CallbackKind::OnFinish
        } else {
            CallbackKind::OnSuccess
        }
    });
    let callback = match callback_row {
        Some(row) => views(conn, vec![row]).await?.pop(),
        None => None,
    };
    Ok(Some(BatchView {
        name: name.to_owned(),
        total: u64::try_from(tally.steps).unwrap_or_default(),
        succeeded: counts.succeeded,
        failed: counts.failed,
        cancelled: counts.cancelled,
        pending: counts.waiting + counts.queued,
        running: counts.running,
        unknown: counts.unknown,
        callback,
        callback_kind,
    }))
}

/// Refuses a name no workflow can have, before asking the database.
fn check_name(name: &str) -> Result<()> {
    let len = name.chars().count();
    if len == 0 || len > 190 || name.contains('\0') {
        return Err(Error::invalid(
            "workflow",
            format!(
                "a workflow's name has 1 to 190 characters and no NUL byte; this one has {len}"
            ),
        ));
    }
    Ok(())
}

/// The steps `rows` with their tasks, history and dependencies.
async fn views<C: ConnectionTrait>(conn: &C, rows: Vec<step::Model>) -> Result<Vec<StepView>> {
    let ids: Vec<i32> = rows.iter().map(|row| row.task_id).collect();
    let tasks: BTreeMap<i32, task::Model> = sql::tasks(conn, &ids)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let gone: Vec<i32> = ids
        .iter()
        .copied()
        .filter(|id| !tasks.contains_key(id))
        .collect();
    let history = sql::history(conn, &gone).await?;
    let mut edges: BTreeMap<i32, Vec<(i32, Option<String>)>> = BTreeMap::new();
    for edge in sql::edges(conn, &ids).await? {
        edges
            .entry(edge.task_id)
            .or_default()
            .push((edge.depends_on, edge.state));
    }
    // Dependencies by step name: those on this page are known; the others
    // (earlier pages, or tasks outside the workflow) are looked up.
    let mut step_names: BTreeMap<i32, Option<String>> = rows
        .iter()
        .map(|row| (row.task_id, row.name.clone()))
        .collect();
    let unnamed: BTreeSet<i32> = edges
        .values()
        .flatten()
        .map(|(dep, _)| *dep)
        .filter(|dep| !step_names.contains_key(dep))
        .collect();
    let unnamed: Vec<i32> = unnamed.into_iter().collect();
    for row in sql::steps_by_id(conn, &unnamed).await? {
        step_names.insert(row.task_id, row.name);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let after = edges
                .remove(&row.task_id)
                .unwrap_or_default()
                .into_iter()
                .map(|(dep, ended)| DependencyView {
                    task_id: dep,
                    step: step_names.get(&dep).cloned().flatten(),
                    ended,
                })
                .collect();
            let id = row.task_id;
            view(row, tasks.get(&id), history.get(&id), after)
        })
        .collect())
}

/// Where step `row` stands, from its task row or else its history row.
fn view(
    row: step::Model,
    task: Option<&task::Model>,
    history: Option<&completed_task::Model>,
    after: Vec<DependencyView>,
) -> StepView {
    let first_line = |error: &str| {
        error
            .lines()
            .find(|line| !line.trim().is_empty())
            .map(str::to_owned)
    };
    let mut view = StepView {
        step: row.name.clone().unwrap_or_default(),
        task_id: row.task_id,
        task_name: None,
        state: StepState::Unknown,
        waiting_on: 0,
        after,
        run_anyway: row.run_anyway,
        run_at: None,
        finished_at: None,
        queue: None,
        attempts: 0,
        last_error: None,
    };
    if let Some(task) = task {
        view.task_name = Some(task.task_name.clone());
        view.queue = task.queue.clone();
        view.attempts = task.attempts;
        view.last_error = first_line(&task.last_error);
        if row.released_at.is_none() {
            view.state = StepState::Waiting;
            view.waiting_on = u32::try_from(row.pending).unwrap_or_default();
            view.run_at = Some(row.run_at);
        } else {
            view.state = if task.locked_by.is_some() {
                StepState::Running
            } else {
                StepState::Queued
            };
            view.run_at = Some(task.run_at);
        }
    } else if let Some(done) = history {
        view.task_name = Some(done.task_name.clone());
        view.queue = done.queue.clone();
        view.attempts = done.attempts;
        view.last_error = first_line(&done.last_error);
        view.finished_at = Some(done.run_at);
        view.state = match Ended::of(done) {
            Ended::Succeeded => StepState::Succeeded,
            Ended::Failed => StepState::Failed,
            Ended::Cancelled | Ended::Vanished => StepState::Cancelled,
        };
    }
    view
}
