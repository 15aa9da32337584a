//! `bgtasks demo`: a first look at the queue with the built-in tasks.

use std::time::{Duration, Instant};

use clap::Args;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;

use super::output::{self, Progress};
use super::{Context, Failure};
use crate::builtin;
use crate::config::Config;
use crate::db;
use crate::entity::{completed_task, task};
use crate::queue::{Queue, TaskSpec};
use crate::registry::Registry;
use crate::runner::Runner;
use crate::task::Task;

#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// How many no-op tasks to enqueue besides the others.
    #[arg(long, default_value_t = 200)]
    tasks: u32,
    /// Give up after this many seconds (at most 100 years).
    #[arg(
        long,
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(0..=crate::MAX_DURATION.as_secs())
    )]
    duration: u64,
}

/// Enqueues the built-in tasks and runs them with a pool until they are
/// done, then prints what happened.
pub(super) async fn run(ctx: &Context, args: DemoArgs) -> Result<(), Failure> {
    let url = ctx.url();
    let registry = Registry::new();
    builtin::register(&registry);
    let config = Config::builder()
        .run_async(true)
        .max_attempts(2)
        .sleep(Duration::from_millis(200))
        .build()?;
    let queue = Queue::with_parts(db::open(url).await?, registry, config);
    let now = queue.config().clock().now();
    let mut specs: Vec<TaskSpec> = (0..args.tasks)
        .map(|_| TaskSpec::new::<builtin::Noop>(&()).queue("demo"))
        .collect();
    specs.extend(
        (0..8).map(|i| TaskSpec::new::<builtin::Sleep>(&(0.1 * f64::from(i))).queue("demo")),
    );
    specs.push(
        TaskSpec::new::<builtin::Fail>(&())
            .queue("demo")
            .verbose_name("retried once, then failed"),
    );
    specs.push(
        TaskSpec::new::<builtin::Reject>(&())
            .queue("demo")
            .verbose_name("fails at once"),
    );
    // The repeating task prints its params on stdout; with --json, stdout
    // carries the JSON report alone, so a silent task repeats instead.
    let (repeating, params, kwargs) = if ctx.json {
        (builtin::Noop::name(), json!([]), json!({}))
    } else {
        (
            builtin::Echo::name(),
            json!(["hello"]),
            json!({"from": "demo"}),
        )
    };
    specs.push(
        TaskSpec::call(repeating, &params, &kwargs, queue.registry())
            .queue("demo")
            .repeat(2)
            .repeat_until(now + chrono::TimeDelta::seconds(5)),
    );
    let total = queue.enqueue_many(specs).await?;
    if !ctx.json {
        println!("enqueued {total} demo tasks on queue \"demo\"; running them");
    }
    let started = Instant::now();
    let runner = Runner::start(queue.clone())?;
    let deadline = started + Duration::from_secs(args.duration);
    let mut progress = Progress::new("running the demo", Some(total), ctx.json);
    loop {
        let left = task::Entity::find()
            .filter(task::Column::Queue.eq("demo"))
            .count(queue.db())
            .await?;
        progress.set(total.saturating_sub(left));
        if left == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress.finish();
    runner.shutdown(Duration::from_secs(10)).await;
    let history = completed_task::Entity::find()
        .filter(completed_task::Column::Queue.eq("demo"))
        .filter(completed_task::Column::RunAt.gte(now.naive_utc()))
        .all(queue.db())
        .await?;
    let succeeded = history.iter().filter(|c| c.failed_at.is_none()).count();
    let failed: Vec<_> = history.iter().filter(|c| c.failed_at.is_some()).collect();
    let seconds = started.elapsed().as_secs_f64();
    if ctx.json {
        output::json(&json!({
            "enqueued": total,
            "seconds": seconds,
            "succeeded": succeeded,
            "failed": failed,
        }));
        return Ok(());
    }
    println!(
        "done in {seconds:.1} s: {succeeded} succeeded, {} failed permanently",
        failed.len()
    );
    for row in failed {
        println!(
            "  failed: {row} after {} attempt(s): {}",
            row.attempts, row.last_error
        );
    }
    Ok(())
}
