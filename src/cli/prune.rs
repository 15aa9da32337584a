//! `bgtasks prune`: deletes old history rows by a retention policy, in
//! bounded batches with progress, or counts them with `--dry-run`.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::output::{self, Progress, Table};
use super::{Context, Failure};
use crate::admin::{self, Pruned, Pruning};
use crate::clock::Clock;
use crate::config::Retention;
use crate::config::parse::duration;

/// Rows a `--dry-run` (and the progress bar's total) counts at most per
/// reason: beyond it, "at least" is said.
const PREVIEW_CAP: u64 = 1_000_000;

#[derive(Debug, Args)]
pub(super) struct PruneArgs {
    /// Delete succeeded history rows that finished longer ago than this:
    /// 7d, 12h, 90m, 30s, or a number of seconds.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    completed_older_than: Option<Duration>,
    /// Delete failed (and cancelled) history rows that failed longer ago
    /// than this: 30d, 12h, 90m, 30s, or a number of seconds.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    failed_older_than: Option<Duration>,
    /// Keep at most this many history rows, the newest; delete older ones
    /// whatever their age (0 deletes every history row).
    #[arg(long, value_name = "N")]
    keep_last: Option<u64>,
    /// Rows selected and deleted per statement, 1 to 10000. Smaller
    /// batches hold locks for less time; larger ones finish sooner.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(1..=admin::MAX_PRUNE_BATCH as u64)
    )]
    batch: u64,
    /// Count what would be deleted, and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report {
    /// Whether this only counted.
    dry_run: bool,
    /// Succeeded rows older than `--completed-older-than`.
    completed: u64,
    /// Failed rows older than `--failed-older-than`.
    failed: u64,
    /// Rows beyond the newest `--keep-last`.
    beyond_keep_last: u64,
    /// All of them.
    total: u64,
    /// A dry run stopped counting at its cap: the counts are lower bounds.
    at_least: bool,
}

pub(super) async fn run(ctx: &Context, args: PruneArgs) -> Result<(), Failure> {
    let retention = Retention {
        completed: args.completed_older_than,
        failed: args.failed_older_than,
        keep_last: args.keep_last,
    };
    if retention.is_empty() {
        return Err(Failure::BadInput(
            "say what to prune: give --completed-older-than, --failed-older-than or \
             --keep-last (or several); nothing was deleted"
                .into(),
        ));
    }
    let now = Clock::system().now();
    let batch = usize::try_from(args.batch).unwrap_or(admin::MAX_PRUNE_BATCH);
    let mut pruning = Pruning::new(&retention, now, batch)?;
    let conn = ctx.migrated_db().await?;
    let preview = admin::prune_preview(&conn, &retention, now, PREVIEW_CAP).await?;
    let capped =
        [preview.completed, preview.failed, preview.beyond_keep_last].contains(&PREVIEW_CAP);
    if args.dry_run || preview.total() == 0 {
        report(ctx, &retention, preview, args.dry_run, capped);
        return Ok(());
    }
    let mut progress = Progress::new("pruning", (!capped).then(|| preview.total()), ctx.json);
    while pruning.step(&conn).await? {
        progress.set(pruning.pruned().total());
    }
    progress.set(pruning.pruned().total());
    progress.finish();
    report(ctx, &retention, pruning.pruned(), false, false);
    Ok(())
}

/// Prints what was (or would be) deleted per reason.
fn report(ctx: &Context, retention: &Retention, pruned: Pruned, dry_run: bool, at_least: bool) {
    if ctx.json {
        output::json(&Report {
            dry_run,
            completed: pruned.completed,
            failed: pruned.failed,
            beyond_keep_last: pruned.beyond_keep_last,
            total: pruned.total(),
            at_least,
        });
        return;
    }
    if pruned.total() == 0 {
        println!(
            "nothing to prune: no history row is {}",
            policy(retention).join(", or ")
        );
        return;
    }
    let mut table = Table::new(&["REASON", if dry_run { "WOULD DELETE" } else { "DELETED" }]);
    let count = |n: u64| {
        if at_least && n == PREVIEW_CAP {
            format!("at least {n}")
        } else {
            n.to_string()
        }
    };
    if let Some(age) = retention.completed {
        table.row(vec![
            format!("succeeded, finished more than {} ago", age_text(age)),
            count(pruned.completed),
        ]);
    }
    if let Some(age) = retention.failed {
        table.row(vec![
            format!("failed, more than {} ago", age_text(age)),
            count(pruned.failed),
        ]);
    }
    if let Some(keep) = retention.keep_last {
        table.row(vec![
            format!("beyond the newest {keep}"),
            count(pruned.beyond_keep_last),
        ]);
    }
    table.row(vec!["total".into(), count(pruned.total())]);
    table.print();
    if dry_run {
        println!("dry run: nothing was deleted");
    }
}

/// The policy in words, one part per rule.
fn policy(retention: &Retention) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(age) = retention.completed {
        parts.push(format!("a success older than {}", age_text(age)));
    }
    if let Some(age) = retention.failed {
        parts.push(format!("a failure older than {}", age_text(age)));
    }
    if let Some(keep) = retention.keep_last {
        parts.push(format!("beyond the newest {keep}"));
    }
    parts
}

/// A duration as it is written on the command line: `7d`, `12h`, `90m`,
/// `30s`.
fn age_text(age: Duration) -> String {
    let secs = age.as_secs();
    if age.subsec_nanos() != 0 {
        format!("{}s", age.as_secs_f64())
    } else if secs != 0 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs != 0 && secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_written_back_as_typed() {
        for text in ["7d", "12h", "90m", "30s", "0s"] {
            assert_eq!(age_text(duration(text).unwrap()), text);
        }
        assert_eq!(age_text(Duration::from_secs(3_600 * 36)), "36h");
        assert_eq!(age_text(Duration::from_millis(1_500)), "1.5s");
    }

    mod properties {
        //! 256 cases each (`PROPTEST_CASES` asks for more).

        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn reading_never_panics(text in prop_oneof![any::<String>(), "[-+]?[0-9.e]{0,25}[smhdé]?"]) {
                if let Ok(age) = duration(&text) {
                    prop_assert!(age <= crate::MAX_DURATION, "{text:?}: {age:?}");
                }
            }

            #[test]
            fn whole_ages_read_back(n in prop_oneof![any::<u64>(), 0..=3_155_760_000u64], unit in prop::sample::select(vec![("s", 1u64), ("m", 60), ("h", 3_600), ("d", 86_400)])) {
                let (letter, seconds) = unit;
                let text = format!("{n}{letter}");
                match n.checked_mul(seconds).map(Duration::from_secs).filter(|d| *d <= crate::MAX_DURATION) {
                    Some(age) => {
                        prop_assert_eq!(duration(&text), Ok(age));
                        prop_assert_eq!(duration(&age_text(age)), Ok(age));
                    }
                    None => prop_assert!(duration(&text).unwrap_err().contains("100 years")),
                }
            }
        }
    }
}
