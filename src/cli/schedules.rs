//! `bgtasks cron ...`: cron schedules.

use clap::{Args, Subcommand};
use serde_json::json;

use super::enqueue::json_arg;
use super::output::{self, Table};
use super::{Context, Failure};
use crate::cron::{self, Missed, NewSchedule};
use crate::entity::schedule;

#[derive(Debug, Subcommand)]
pub(super) enum CronCommand {
    /// Create a schedule: enqueue a task at every occurrence of a cron
    /// expression.
    Add(AddArgs),
    /// List the schedules with their next occurrences.
    List,
    /// Stop a schedule from enqueueing until it is resumed.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resume a paused schedule from its next occurrence (the occurrences
    /// of the pause are skipped).
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Remove a schedule (tasks it enqueued stay).
    Remove {
        /// The schedule's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// The schedule's own name (unique).
    name: String,
    /// Cron expression: 5 fields (minute hour day-of-month month
    /// day-of-week), 6 with seconds first, or an alias such as @hourly.
    #[arg(long)]
    cron: String,
    /// Registered name of the task to enqueue.
    #[arg(long)]
    task: String,
    /// Positional arguments, as a JSON array.
    #[arg(long, default_value = "[]")]
    args: String,
    /// Keyword arguments, as a JSON object.
    #[arg(long, default_value = "{}")]
    kwargs: String,
    /// IANA time zone of the expression.
    #[arg(long, default_value = "UTC")]
    timezone: String,
    /// Queue of the enqueued tasks.
    #[arg(long)]
    queue: Option<String>,
    /// Priority of the enqueued tasks.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Verbose name of the enqueued tasks.
    #[arg(long)]
    verbose_name: Option<String>,
    /// Occurrences missed (no runner enqueued them within 60 s of their
    /// time: all were down): skip them, or run the latest once (skip,
    /// run-once).
    #[arg(long, default_value = "skip")]
    missed: String,
    /// Schedule a name this binary has no handler for.
    #[arg(long)]
    allow_unknown: bool,
}

pub(super) async fn cron(ctx: &Context, command: CronCommand) -> Result<(), Failure> {
    let now = chrono::Utc::now();
    match command {
        CronCommand::Add(args) => {
            let positional = json_arg("--args", &args.args, false)?;
            let keywords = json_arg("--kwargs", &args.kwargs, true)?;
            let missed: Missed = args.missed.parse()?;
            if !args.allow_unknown && !ctx.registry.contains(&args.task) {
                return Err(Failure::BadInput(format!(
                    "no task named {:?} is registered in this binary; check the name, or pass \
                     --allow-unknown to schedule it for another runner",
                    args.task
                )));
            }
            let mut new =
                NewSchedule::call(&args.name, &args.task, &args.cron, &positional, &keywords)
                    .timezone(args.timezone)
                    .priority(args.priority)
                    .missed(missed);
            if let Some(queue) = args.queue {
                new = new.queue(queue);
            }
            if let Some(label) = args.verbose_name {
                new = new.verbose_name(label);
            }
            let conn = ctx.migrated_db().await?;
            let created = cron::create(&conn, new, now).await?;
            if ctx.json {
                output::json(&json!({"result": "created", "schedule": created}));
            } else {
                println!(
                    "created schedule {} ({} {}): next enqueues {} at {} UTC",
                    created.name,
                    created.cron,
                    created.timezone,
                    created.task_name,
                    output::time(created.next_fire_at)
                );
            }
            Ok(())
        }
        CronCommand::List => {
            let conn = ctx.migrated_db().await?;
            let schedules = cron::list(&conn).await?;
            if ctx.json {
                output::json(&json!({"schedules": schedules}));
                return Ok(());
            }
            if schedules.is_empty() {
                println!("no schedules; create one with `bgtasks cron add`");
                return Ok(());
            }
            let mut table = Table::new(&[
                "name", "cron", "timezone", "task", "queue", "missed", "state", "next", "last",
            ]);
            for schedule in &schedules {
                table.row(row(schedule));
            }
            table.print();
            Ok(())
        }
        CronCommand::Pause { name } => {
            let conn = ctx.migrated_db().await?;
            changed(ctx, "paused", &name, cron::pause(&conn, &name).await?)
        }
        CronCommand::Resume { name } => {
            let conn = ctx.migrated_db().await?;
            changed(
                ctx,
                "resumed",
                &name,
                cron::resume(&conn, &name, now).await?,
            )
        }
        CronCommand::Remove { name } => {
            let conn = ctx.migrated_db().await?;
            changed(ctx, "removed", &name, cron::remove(&conn, &name).await?)
        }
    }
}

fn row(schedule: &schedule::Model) -> Vec<String> {
    vec![
        schedule.name.clone(),
        schedule.cron.clone(),
        schedule.timezone.clone(),
        schedule.task_name.clone(),
        schedule.queue.clone().unwrap_or_default(),
        schedule.missed.clone(),
        if schedule.paused { "paused" } else { "active" }.to_owned(),
        if schedule.paused {
            "-".to_owned()
        } else {
            output::time(schedule.next_fire_at)
        },
        output::maybe_time(schedule.last_fired_at),
    ]
}

fn changed(ctx: &Context, action: &str, name: &str, found: bool) -> Result<(), Failure> {
    if !found {
        return Err(Failure::NothingMatched(format!(
            "there is no schedule named {name:?} (see `bgtasks cron list`); nothing was changed"
        )));
    }
    if ctx.json {
        output::json(&json!({"action": action, "schedule": name}));
    } else {
        println!("{action} schedule {name}");
    }
    Ok(())
}
