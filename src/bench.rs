//! The runner's hot statements, one call each, for the criterion benches
//! of `benches/paths.rs`: the claim and the outcome batch, which the
//! public API only reaches through a running runner. Not a stable API:
//! hidden from the docs, it may change with any release.

use chrono::Utc;
use sea_orm::DatabaseConnection;

use crate::config::PriorityOrdering;
use crate::entity::task;
use crate::error::Result;
use crate::store::claim::{self, ClaimFilter, Queues};
use crate::store::outcome::{self, Ending};

/// Claims up to `limit` due tasks named `names` for `runner`, in every
/// queue, as the Poller does (one statement on PostgreSQL and SQLite).
pub async fn claim(
    db: &DatabaseConnection,
    runner: &str,
    names: &[String],
    limit: usize,
) -> Result<Vec<task::Model>> {
    let filter = ClaimFilter {
        names,
        queues: Queues::All,
        ordering: PriorityOrdering::Desc,
    };
    Ok(claim::claim(db, runner, Utc::now(), limit, &filter, false)
        .await?
        .tasks)
}

/// Records every task of `tasks` (claimed by `runner`) as succeeded, with
/// a history row each, in one transaction, as the Scheduler's outcome batch
/// does; returns how many were written.
pub async fn complete(
    db: &DatabaseConnection,
    runner: &str,
    tasks: &[task::Model],
) -> Result<usize> {
    let endings: Vec<(&task::Model, Ending<'_>)> = tasks
        .iter()
        .map(|task| {
            (
                task,
                Ending::Succeeded {
                    result: None,
                    keep: true,
                },
            )
        })
        .collect();
    Ok(outcome::record(db, runner, &endings, 25, Utc::now())
        .await?
        .0
        .len())
}
