//! `bgtasks dashboard`: the web dashboard served on its own.

use clap::Args;

use super::{Context, Failure, seconds};
use crate::config::Config;
use crate::db;
use crate::error::Error;
use crate::queue::Queue;

#[derive(Debug, Args)]
pub(super) struct DashboardArgs {
    /// Address to listen on. Anything but a loopback address needs a password.
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: String,
    /// Show everything, change nothing: turn every action off.
    #[arg(long)]
    read_only: bool,
    /// HTTP Basic password (any user name) that every request must carry.
    #[arg(long, env = "BGTASKS_DASHBOARD_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Seconds after its last heartbeat a runner counts as gone.
    #[arg(long, env = "BACKGROUND_TASK_LEASE", default_value_t = 30.0)]
    lease: f64,
}

pub(super) async fn run(ctx: &Context, args: DashboardArgs) -> Result<(), Failure> {
    let url = ctx.url();
    let bind = args.bind.parse().map_err(|_| {
        Error::invalid(
            "--bind",
            format!(
                "{:?} is not an address; use IP:PORT, such as 127.0.0.1:8000",
                args.bind
            ),
        )
    })?;
    let config = Config::builder()
        .lease(seconds("--lease", args.lease)?)
        .build()?;
    let queue = Queue::with_parts(db::open(url).await?, ctx.registry.clone(), config);
    crate::web::serve(
        queue,
        crate::web::Standalone {
            bind,
            read_only: args.read_only,
            password: args.password,
        },
    )
    .await?;
    Ok(())
}
