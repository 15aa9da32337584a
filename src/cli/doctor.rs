//! `bgtasks doctor`: checks the database and its surroundings (see
//! [`crate::doctor`]) and prints one line per check. Exits 0 when every
//! check is ok, 4 otherwise. Works on a database that is not migrated,
//! to say so, and never changes the schema or a row.

use clap::Args;

use super::output::{self, Table};
use super::{Context, Failure, seconds};
use crate::db;
use crate::doctor::{self, Finding, Options, Status};

#[derive(Debug, Args)]
pub(super) struct DoctorArgs {
    /// Seconds the runners' lease lasts (give the value your runners use):
    /// a runner silent for that long is dead, a lock older than that whose
    /// runner is gone is stale, a due task waiting longer is overdue.
    #[arg(long, env = "BACKGROUND_TASK_LEASE", default_value_t = 30.0)]
    lease: f64,
    /// Largest difference, in seconds, between this host's clock and the
    /// database server's that is not reported.
    #[arg(long, default_value_t = 2.0)]
    max_clock_skew: f64,
}

pub(super) async fn run(ctx: &Context, args: DoctorArgs) -> Result<(), Failure> {
    let options = Options {
        lease: seconds("--lease", args.lease)?,
        max_clock_skew: seconds("--max-clock-skew", args.max_clock_skew)?,
    };
    let findings = match db::sqlite_file(ctx.url()) {
        // Connecting would create the file: report it missing instead.
        Some(file) if !file.exists() => vec![Finding::new(
            "schema",
            Status::Fail,
            format!(
                "no database at {}: run `bgtasks migrate` to create it (or start `bgtasks \
                 process`, which creates it), or point DATABASE_URL at the queue's database",
                file.display()
            ),
        )],
        _ => {
            let conn = db::connect_for_command(ctx.url()).await?;
            let findings = doctor::check(&conn, &ctx.registry, &options).await;
            conn.close().await.ok();
            findings
        }
    };
    if ctx.json {
        output::json(&findings);
    } else {
        let mut table = Table::new(&["STATUS", "CHECK", "DETAIL"]);
        for finding in &findings {
            table.row(vec![
                finding.status.as_str().to_owned(),
                finding.check.to_owned(),
                finding.detail.clone(),
            ]);
        }
        table.print();
    }
    let problems = findings.iter().filter(|f| f.is_problem()).count();
    if problems == 0 {
        return Ok(());
    }
    Err(Failure::Problems(format!(
        "{problems} of {} checks need attention (see above)",
        findings.len()
    )))
}
