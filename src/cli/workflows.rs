//! `bgtasks workflow ...` and `bgtasks batch ...`: list and show workflows
//! and batches ([`crate::workflow::view`]), and create them from a JSON
//! file in the format of `POST /api/workflows` and `POST /api/batches`
//! ([`crate::workflow::request`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;

use super::output::{self, Table};
use super::{Context, Failure};
use crate::config::Config;
use crate::queue::Queue;
use crate::workflow::request::{BatchRequest, WorkflowRequest};
use crate::workflow::view::{self, StepView};

#[derive(Debug, Subcommand)]
pub(super) enum WorkflowCommand {
    /// Workflows and batches by name, with their steps per state.
    List {
        /// The page after this name (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Workflows a page (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// One workflow's steps: state, what each waits for, run_at, attempts,
    /// last error. A name enqueued twice shows the steps of both runs.
    Show {
        /// The workflow's name (a batch's is `batch:NAME`).
        name: String,
        /// The steps after this task id (the last one of the previous page).
        #[arg(long)]
        after: Option<i32>,
        /// Steps a page (1 to 1,000).
        #[arg(long, default_value_t = 200)]
        limit: u64,
    },
    /// Enqueues a workflow from FILE ('-' reads stdin), the JSON of POST
    /// /api/workflows: {"name": "nightly-2026-12-03", "steps": [{"name":
    /// "fetch", "task": "reports.fetch", "params": {"region": "eu"}},
    /// {"name": "merge", "task": "reports.merge", "after": ["fetch"]}]}.
    /// A step takes task, params (an object, or [args, kwargs]) or args
    /// and kwargs, after, run_anyway, queue, priority, schedule (seconds,
    /// or a UTC time), verbose_name, max_attempts, allow_unknown. A bad
    /// graph or value writes nothing and exits with 2.
    Create {
        /// The JSON file; '-' reads stdin.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum BatchCommand {
    /// A batch's progress: its tasks per state, and its callback.
    Show {
        /// The batch's name (without `batch:`).
        name: String,
    },
    /// Enqueues a batch from FILE ('-' reads stdin), the JSON of POST
    /// /api/batches: {"name": "newsletter-42", "tasks": [{"task":
    /// "mail.send", "args": [1]}], "on_finish": {"task": "mail.report"}}
    /// (or "on_success"). An empty or bad batch writes nothing and exits
    /// with 2.
    Create {
        /// The JSON file; '-' reads stdin.
        file: PathBuf,
    },
}

pub(super) async fn workflow(ctx: &Context, command: WorkflowCommand) -> Result<(), Failure> {
    match command {
        WorkflowCommand::List { after, limit } => list(ctx, after.as_deref(), limit).await,
        WorkflowCommand::Show { name, after, limit } => show(ctx, &name, after, limit).await,
        WorkflowCommand::Create { file } => create(ctx, &file).await,
    }
}

pub(super) async fn batch(ctx: &Context, command: BatchCommand) -> Result<(), Failure> {
    match command {
        BatchCommand::Show { name } => show_batch(ctx, &name).await,
        BatchCommand::Create { file } => create_batch(ctx, &file).await,
    }
}

/// The bytes of `file`, or of stdin for `-`.
fn read(file: &Path) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|err| {
        Failure::BadInput(format!(
            "cannot read {}: {err}; give a JSON file, or - for stdin",
            file.display()
        ))
    })?;
    Ok(bytes)
}

async fn list(ctx: &Context, after: Option<&str>, limit: u64) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let page = view::list(&conn, after, limit).await?;
    if ctx.json {
        output::json(&page);
        return Ok(());
    }
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "STEPS",
        "WAITING",
        "QUEUED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "UNKNOWN",
        "FIRST TASK",
        "LAST FINISHED",
    ]);
    for w in &page.workflows {
        let c = &w.counts;
        table.row(vec![
            w.name.clone(),
            if w.batch { "batch" } else { "workflow" }.to_owned(),
            w.steps.to_string(),
            c.waiting.to_string(),
            c.queued.to_string(),
            c.running.to_string(),
            c.succeeded.to_string(),
            c.failed.to_string(),
            c.cancelled.to_string(),
            c.unknown.to_string(),
            w.first_task_id.to_string(),
            output::maybe_time(w.newest_activity),
        ]);
    }
    if table.is_empty() {
        println!("no workflow");
    } else {
        table.print();
    }
    if let Some(next) = page.next {
        println!("more: --after {next:?}");
    }
    Ok(())
}

fn state_text(step: &StepView) -> String {
    match step.state {
        view::StepState::Waiting => format!("waiting on {}", step.waiting_on),
        state => state.to_string(),
    }
}

fn steps_table(steps: &[StepView]) {
    let mut table = Table::new(&[
        "STEP",
        "TASK",
        "NAME",
        "STATE",
        "AFTER",
        "RUN AT",
        "ATTEMPTS",
        "LAST ERROR",
    ]);
    for step in steps {
        let after: Vec<String> = step
            .after
            .iter()
            .map(|dep| {
                dep.step
                    .clone()
                    .unwrap_or_else(|| format!("task {}", dep.task_id))
            })
            .collect();
        table.row(vec![
            step.step.clone(),
            step.task_id.to_string(),
            step.task_name.clone().unwrap_or_else(|| "-".into()),
            state_text(step),
            after.join(","),
            output::maybe_time(step.run_at.or(step.finished_at)),
            step.attempts.to_string(),
            output::error_line(step.last_error.as_deref().unwrap_or(""), 60),
        ]);
    }
    table.print();
}

async fn show(ctx: &Context, name: &str, after: Option<i32>, limit: u64) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let Some(found) = view::show(&conn, name, after, limit).await? else {
        return Err(Failure::NothingMatched(format!(
            "there is no workflow named {name:?} (no step of it is waiting, running or in the \
             history); `bgtasks workflow list` shows the names"
        )));
    };
    if ctx.json {
        output::json(&found);
        return Ok(());
    }
    let c = &found.counts;
    println!(
        "workflow {:?}: {} steps: {} waiting, {} queued, {} running, {} succeeded, {} failed, {} \
         cancelled, {} unknown",
        found.name,
        found.total,
        c.waiting,
        c.queued,
        c.running,
        c.succeeded,
        c.failed,
        c.cancelled,
        c.unknown
    );
    steps_table(&found.steps);
    if let Some(next) = found.next {
        println!("more: --after {next}");
    }
    Ok(())
}

async fn show_batch(ctx: &Context, name: &str) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let Some(batch) = view::batch(&conn, name).await? else {
        return Err(Failure::NothingMatched(format!(
            "there is no batch named {name:?} (none of its tasks is waiting, running or in the \
             history); `bgtasks workflow list` shows the names"
        )));
    };
    if ctx.json {
        output::json(&batch);
        return Ok(());
    }
    println!(
        "batch {:?}: {}/{} finished: {} succeeded, {} failed, {} cancelled, {} pending, {} \
         running, {} unknown",
        batch.name,
        batch.finished(),
        batch.total,
        batch.succeeded,
        batch.failed,
        batch.cancelled,
        batch.pending,
        batch.running,
        batch.unknown
    );
    match (&batch.callback, batch.callback_kind) {
        (Some(callback), Some(kind)) => println!(
            "callback ({}): task {} {}",
            match kind {
                view::CallbackKind::OnFinish => "on_finish",
                view::CallbackKind::OnSuccess => "on_success",
            },
            callback.task_id,
            state_text(callback)
        ),
        _ => println!("no callback"),
    }
    Ok(())
}

async fn create(ctx: &Context, file: &Path) -> Result<(), Failure> {
    let bytes = read(file)?;
    // Read and checked before the database is opened: bad input writes
    // nothing.
    let request = WorkflowRequest::parse(&bytes)?;
    let workflow = request.into_workflow(&ctx.registry)?;
    let conn = ctx.migrated_db().await?;
    let queue = Queue::with_parts(conn, ctx.registry.clone(), Config::default());
    let name = workflow.name().to_owned();
    let ids = queue.enqueue_workflow(workflow).await?;
    if ctx.json {
        output::json(&json!({"workflow": name, "ids": ids}));
    } else {
        println!("enqueued workflow {name:?}: {} steps", ids.len());
        let mut table = Table::new(&["STEP", "TASK"]);
        for (step, id) in &ids {
            table.row(vec![step.clone(), id.to_string()]);
        }
        table.print();
    }
    Ok(())
}

async fn create_batch(ctx: &Context, file: &Path) -> Result<(), Failure> {
    let bytes = read(file)?;
    let request = BatchRequest::parse(&bytes)?;
    let name = request.name.clone();
    let batch = request.into_batch(&ctx.registry)?;
    let conn = ctx.migrated_db().await?;
    let queue = Queue::with_parts(conn, ctx.registry.clone(), Config::default());
    let ids = queue.enqueue_batch(batch).await?;
    if ctx.json {
        output::json(&json!({"batch": name, "tasks": ids.tasks, "callback": ids.callback}));
    } else {
        println!(
            "enqueued batch {name:?}: {} tasks (ids {}..{}){}",
            ids.tasks.len(),
            ids.tasks.first().copied().unwrap_or_default(),
            ids.tasks.last().copied().unwrap_or_default(),
            ids.callback
                .map(|id| format!(", callback task {id}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
