//! `bgtasks limit ...`: the limits every runner keeps, enforced in the
//! claim: a queue's global concurrency, its rate, and its key policy
//! (fair claims by task key, per-key concurrency and rate).

use clap::Subcommand;
use serde_json::json;

use super::output::{self, Table};
use super::{Context, Failure};
use crate::admin::{self, KeyLimit};

#[derive(Debug, Subcommand)]
pub(super) enum LimitCommand {
    /// Set a queue's global limit: at most N of its tasks run at once,
    /// across every runner sharing the database.
    Set {
        /// The queue's name.
        queue: String,
        /// Most tasks of the queue running at once.
        max_running: u32,
    },
    /// Remove a queue's global limit.
    Remove {
        /// The queue's name.
        queue: String,
    },
    /// Set a queue's rate limit: at most N of its tasks start in any
    /// window of PERIOD seconds, across every runner sharing the database.
    Rate {
        /// The queue's name.
        queue: String,
        /// Most starts in one window (at least 1).
        max_starts: u32,
        /// The window, in seconds (0.001 to 30 days; a fraction is fine).
        #[arg(value_parser = crate::config::parse::seconds)]
        period: std::time::Duration,
    },
    /// Remove a queue's rate limit.
    RemoveRate {
        /// The queue's name.
        queue: String,
    },
    /// Set a queue's key policy: its claims take a fair share of each task
    /// key's due tasks in turn (one key's backlog never holds the others
    /// back) and, with --running or --rate, keep every key within those
    /// limits across all runners. Keys come from the task's key function
    /// or `bgtasks enqueue --key`.
    Key {
        /// The queue's name.
        queue: String,
        /// Most tasks of one key running at once (at least 1).
        #[arg(long, value_name = "N")]
        running: Option<u32>,
        /// Most starts of one key in any window of --per seconds (at
        /// least 1).
        #[arg(long, value_name = "N", requires = "per")]
        rate: Option<u32>,
        /// The window of --rate, in seconds (0.001 to 30 days; a fraction
        /// is fine).
        #[arg(long, value_name = "SECONDS", requires = "rate",
              value_parser = crate::config::parse::seconds)]
        per: Option<std::time::Duration>,
    },
    /// Remove a queue's key policy: its claims go in plain claim order
    /// again.
    RemoveKey {
        /// The queue's name.
        queue: String,
    },
    /// List the global limits, the rate limits with their starts in the
    /// current window, and the key policies with their busiest keys.
    List {
        /// Keys shown per key policy, busiest first.
        #[arg(long, default_value_t = 10)]
        keys: usize,
    },
}

pub(super) async fn limit(ctx: &Context, command: LimitCommand) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    match command {
        LimitCommand::Set { queue, max_running } => {
            if max_running == 0 {
                return Err(Failure::BadInput(
                    "a limit of 0 would stop the queue for good; give at least 1 (pause its \
                     runners, or cancel its tasks, to stop it)"
                        .into(),
                ));
            }
            admin::set_queue_limit(&conn, &queue, max_running).await?;
            if ctx.json {
                output::json(&json!({"action": "set", "queue": queue, "max_running": max_running}));
            } else {
                println!(
                    "queue {queue}: at most {max_running} task(s) at once across all runners (runners \
                     apply it at their next heartbeat)"
                );
            }
            Ok(())
        }
        LimitCommand::Remove { queue } => {
            if !admin::remove_queue_limit(&conn, &queue).await? {
                return Err(Failure::NothingMatched(format!(
                    "queue {queue:?} has no global limit; nothing was changed"
                )));
            }
            if ctx.json {
                output::json(&json!({"action": "removed", "queue": queue}));
            } else {
                println!("queue {queue}: no global limit any more");
            }
            Ok(())
        }
        LimitCommand::Rate {
            queue,
            max_starts,
            period,
        } => {
            admin::set_rate_limit(&conn, &queue, max_starts, period).await?;
            if ctx.json {
                output::json(&json!({
                    "action": "set",
                    "queue": queue,
                    "max_starts": max_starts,
                    "period_ms": period.as_millis(),
                }));
            } else {
                println!(
                    "queue {queue}: at most {max_starts} start(s) in any {} s across all runners \
                     (runners apply it at their next heartbeat)",
                    period.as_secs_f64()
                );
            }
            Ok(())
        }
        LimitCommand::RemoveRate { queue } => {
            if !admin::remove_rate_limit(&conn, &queue).await? {
                return Err(Failure::NothingMatched(format!(
                    "queue {queue:?} has no rate limit; nothing was changed"
                )));
            }
            if ctx.json {
                output::json(&json!({"action": "removed", "queue": queue, "kind": "rate"}));
            } else {
                println!("queue {queue}: no rate limit any more");
            }
            Ok(())
        }
        LimitCommand::Key {
            queue,
            running,
            rate,
            per,
        } => {
            let policy = KeyLimit {
                max_running: running,
                rate: rate.zip(per),
            };
            admin::set_key_limit(&conn, &queue, policy).await?;
            if ctx.json {
                output::json(&json!({
                    "action": "set",
                    "queue": queue,
                    "kind": "key",
                    "max_running_per_key": running,
                    "max_starts_per_key": rate,
                    "period_ms": per.map(|per| per.as_millis()),
                }));
            } else {
                println!(
                    "queue {queue}: claimed key by key, a fair share each{}{} (runners apply it \
                     at their next heartbeat)",
                    running.map_or(String::new(), |n| format!("; at most {n} running per key")),
                    rate.zip(per).map_or(String::new(), |(n, per)| format!(
                        "; at most {n} start(s) per key in any {} s",
                        per.as_secs_f64()
                    )),
                );
            }
            Ok(())
        }
        LimitCommand::RemoveKey { queue } => {
            if !admin::remove_key_limit(&conn, &queue).await? {
                return Err(Failure::NothingMatched(format!(
                    "queue {queue:?} has no key policy; nothing was changed"
                )));
            }
            if ctx.json {
                output::json(&json!({"action": "removed", "queue": queue, "kind": "key"}));
            } else {
                println!("queue {queue}: no key policy any more (plain claim order)");
            }
            Ok(())
        }
        LimitCommand::List { keys } => {
            let now = chrono::Utc::now();
            let limits = admin::queue_limits(&conn).await?;
            let rates = admin::rate_limits(&conn, now).await?;
            let key_limits = admin::key_limits(&conn, now, keys).await?;
            if ctx.json {
                let rates: Vec<_> = rates
                    .iter()
                    .map(|rate| {
                        json!({
                            "queue": rate.queue,
                            "max_starts": rate.max_starts,
                            "period_ms": rate.period.as_millis(),
                            "started_in_window": rate.started_in_window,
                        })
                    })
                    .collect();
                output::json(&json!({
                    "limits": limits,
                    "rate_limits": rates,
                    "key_limits": key_limits,
                }));
                return Ok(());
            }
            if limits.is_empty() {
                println!("no queue has a global limit");
            } else {
                let mut table = Table::new(&["queue", "max running"]);
                for limit in limits {
                    table.row(vec![limit.queue, limit.max_running.to_string()]);
                }
                table.print();
            }
            if rates.is_empty() {
                println!("no queue has a rate limit");
            } else {
                let mut table = Table::new(&["queue", "max starts", "per (s)", "started now"]);
                for rate in rates {
                    table.row(vec![
                        rate.queue,
                        rate.max_starts.to_string(),
                        rate.period.as_secs_f64().to_string(),
                        rate.started_in_window.to_string(),
                    ]);
                }
                table.print();
            }
            print_key_limits(&key_limits);
            Ok(())
        }
    }
}

fn print_key_limits(key_limits: &[admin::KeyLimitUse]) {
    if key_limits.is_empty() {
        println!("no queue has a key policy");
        return;
    }
    for policy in key_limits {
        let running = policy
            .max_running
            .map_or("no limit".to_owned(), |n| n.to_string());
        let rate = match (policy.max_starts, policy.period) {
            (Some(n), Some(per)) => format!("{n} per {} s", per.as_secs_f64()),
            _ => "no limit".to_owned(),
        };
        println!(
            "queue {}: claimed key by key; per key: running {running}, starts {rate}",
            policy.queue
        );
        if policy.keys.is_empty() {
            println!("  no task of this queue has a key");
            continue;
        }
        let mut table = Table::new(&["key", "running", "waiting", "started now"]);
        for key in &policy.keys {
            table.row(vec![
                key.key.clone(),
                key.running.to_string(),
                key.waiting.to_string(),
                key.started_in_window.to_string(),
            ]);
        }
        table.print();
    }
}
