//! `bgtasks pause`, `resume`, `paused` and `drain`: the fleet controls of
//! [`crate::controls`] from the command line.

use clap::Args;
use serde_json::json;

use super::output::{self, Table};
use super::{Context, Failure};
use crate::controls;
use crate::inspect::QueueFilter;

#[derive(Debug, Args)]
pub(super) struct PauseArgs {
    /// The queues to pause; `(default)` is the default (unnamed) queue.
    #[arg(required = true, value_name = "QUEUE")]
    queues: Vec<String>,
    /// Pause a queue nothing names yet (no task, history row, schedule,
    /// limit or runner), before its first task; without it such a name is
    /// refused as a likely typo.
    #[arg(long)]
    new: bool,
}

#[derive(Debug, Args)]
pub(super) struct ResumeArgs {
    /// The queues to resume; `(default)` is the default (unnamed) queue.
    #[arg(required = true, value_name = "QUEUE")]
    queues: Vec<String>,
}

#[derive(Debug, Args)]
pub(super) struct DrainArgs {
    /// The runner's id, as `bgtasks stats` and the dashboard's runners page
    /// show it (host:pid:random).
    runner: String,
}

/// `(default)` → the default queue; anything else, the named queue.
fn queue(text: &str) -> Option<&str> {
    match QueueFilter::parse(text) {
        QueueFilter::Default => None,
        _ => Some(text),
    }
}

/// Shows a queue as the command line names it.
fn shown(queue: Option<&str>) -> &str {
    queue.unwrap_or(QueueFilter::DEFAULT_TOKEN)
}

pub(super) async fn pause(ctx: &Context, args: PauseArgs) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let now = chrono::Utc::now();
    // Every name is checked before any is paused: a typo pauses nothing.
    if !args.new {
        for name in &args.queues {
            controls::check_known(&conn, queue(name)).await?;
        }
    }
    let mut paused = Vec::new();
    for name in &args.queues {
        let newly = controls::pause(&conn, queue(name), true, now).await?;
        paused.push(json!({"queue": queue(name), "paused": true, "already": !newly}));
        if !ctx.json {
            let already = if newly { "" } else { " (it was already)" };
            println!(
                "queue {}: paused{already}; runners claim none of its tasks from their next \
                 heartbeat, and its tasks still enqueue",
                shown(queue(name))
            );
        }
    }
    if ctx.json {
        output::json(&json!({"action": "pause", "queues": paused}));
    }
    Ok(())
}

pub(super) async fn resume(ctx: &Context, args: ResumeArgs) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let mut resumed = Vec::new();
    let mut not_paused = Vec::new();
    for name in &args.queues {
        if controls::resume(&conn, queue(name)).await? {
            resumed.push(queue(name));
        } else {
            not_paused.push(shown(queue(name)).to_owned());
        }
    }
    if ctx.json {
        output::json(&json!({"action": "resume", "resumed": resumed, "not_paused": not_paused}));
    } else {
        for name in &resumed {
            println!(
                "queue {}: resumed; runners claim its tasks again from their next heartbeat",
                shown(*name)
            );
        }
    }
    if resumed.is_empty() {
        return Err(Failure::NothingMatched(format!(
            "no queue of {} was paused; nothing was changed (`bgtasks paused` lists the paused \
             queues)",
            not_paused.join(", ")
        )));
    }
    if !not_paused.is_empty() && !ctx.json {
        println!("not paused, left as they were: {}", not_paused.join(", "));
    }
    Ok(())
}

pub(super) async fn paused(ctx: &Context) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let paused = controls::paused(&conn).await?;
    if ctx.json {
        output::json(&json!({"paused": paused}));
    } else if paused.is_empty() {
        println!("no queue is paused");
    } else {
        let mut table = Table::new(&["queue", "paused at"]);
        for row in paused {
            table.row(vec![
                shown(row.queue.as_deref()).to_owned(),
                row.paused_at.to_rfc3339(),
            ]);
        }
        table.print();
    }
    Ok(())
}

pub(super) async fn drain(ctx: &Context, args: DrainArgs) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let asked = match controls::drain(&conn, &args.runner, chrono::Utc::now()).await {
        Ok(asked) => asked,
        Err(err @ crate::Error::InvalidOption { .. }) => {
            return Err(Failure::NothingMatched(err.to_string()));
        }
        Err(err) => return Err(err.into()),
    };
    if ctx.json {
        output::json(&json!({"action": "drain", "runner": args.runner, "already": !asked}));
    } else {
        let already = if asked { "" } else { " (it was already)" };
        println!(
            "runner {}: asked to drain{already}; at its next heartbeat it stops claiming, \
             finishes the tasks it holds and exits",
            args.runner
        );
    }
    Ok(())
}
