//! `bgtasks dashboard`: the web dashboard served on its own.

use std::net::IpAddr;
use std::path::PathBuf;

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
    /// A password on the command line is visible to every user of the
    /// machine (`ps`): prefer --password-file or the environment.
    #[arg(
        long,
        env = "BGTASKS_DASHBOARD_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    password: Option<String>,
    /// File holding the HTTP Basic password (its first line), kept out of
    /// `ps` and the environment.
    #[arg(long, env = "BGTASKS_DASHBOARD_PASSWORD_FILE", value_name = "PATH")]
    password_file: Option<PathBuf>,
    /// A host name the dashboard answers to (repeat it, or separate names
    /// with commas), besides localhost and IP addresses, which it always
    /// answers to: the name people (or your proxy) use to reach it.
    /// Requests naming any other host are refused, so that a web page
    /// cannot reach the dashboard through DNS rebinding. `*` allows any
    /// name.
    #[arg(
        long = "allowed-host",
        env = "BGTASKS_DASHBOARD_ALLOWED_HOSTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// IP address of a reverse proxy whose Forwarded / X-Forwarded-Host /
    /// X-Forwarded-Proto headers are believed (repeat it, or separate
    /// addresses with commas); from anyone else they are ignored.
    #[arg(
        long = "trusted-proxy",
        env = "BGTASKS_DASHBOARD_TRUSTED_PROXIES",
        value_name = "IP",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpAddr>,
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
    let password = match &args.password_file {
        Some(path) => Some(read_password(path)?),
        None => args.password,
    };
    let config = Config::builder()
        .lease(seconds("--lease", args.lease)?)
        .build()?;
    let queue = Queue::with_parts(db::open(url).await?, ctx.registry.clone(), config);
    crate::web::serve(
        queue,
        crate::web::Standalone {
            bind,
            read_only: args.read_only,
            password,
            allowed_hosts: args.allowed_hosts,
            trusted_proxies: args.trusted_proxies,
        },
    )
    .await?;
    Ok(())
}

/// The password in `path`: its first line, without the line ending.
fn read_password(path: &std::path::Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Failure::BadInput(format!(
            "--password-file: cannot read {}: {err}",
            path.display()
        ))
    })?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(Failure::BadInput(format!(
            "--password-file: {} is empty; write the password on its first line",
            path.display()
        )));
    }
    Ok(password.to_owned())
}
