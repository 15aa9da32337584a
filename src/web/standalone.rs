//! `bgtasks dashboard`: the dashboard served on its own, at the root of a
//! small HTTP server, for teams whose app is not an actix-web app.
//!
//! Access: with a password, every request must carry it by HTTP Basic
//! authentication (any user name), and the browser asks for it; without
//! one, the server only listens on a loopback address, so only people on
//! the machine (or tunnelled to it) can reach it. Either way it answers
//! only to `localhost`, IP addresses and the names in
//! [`Standalone::allowed_hosts`], so that a web page on another name cannot
//! reach it through DNS rebinding (see [`Dashboard::allowed_hosts`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;

use super::{Access, Dashboard};
use crate::error::{Error, Result};
use crate::queue::Queue;

/// How `bgtasks dashboard` serves.
#[derive(Clone, Debug)]
pub struct Standalone {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Actions turned off.
    pub read_only: bool,
    /// HTTP Basic password; required unless `bind` is a loopback address.
    pub password: Option<String>,
    /// Host names it answers to besides `localhost` and IP addresses
    /// ([`Dashboard::allowed_hosts`]); `*` for any.
    pub allowed_hosts: Vec<String>,
    /// Proxies whose forwarded headers it believes
    /// ([`Dashboard::trusted_proxies`]).
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Clone)]
struct Password(Arc<str>);

/// Serves the dashboard of `queue` until SIGINT or SIGTERM.
pub async fn serve(queue: Queue, options: Standalone) -> Result<()> {
    let password = options.password.filter(|p| !p.is_empty());
    if password.is_none() && !options.bind.ip().is_loopback() {
        return Err(Error::invalid(
            "--bind",
            format!(
                "{} is reachable from other machines, and the dashboard can delete and \
                 retry tasks: set a password with BGTASKS_DASHBOARD_PASSWORD (or \
                 --password), or listen on 127.0.0.1",
                options.bind
            ),
        ));
    }
    if let Some(bad) = options
        .allowed_hosts
        .iter()
        .find(|entry| super::host::allowed_entry(entry).is_none())
    {
        return Err(Error::invalid(
            "--allowed-host",
            format!("{bad:?} is not a host name; give a name such as dash.example.com, or *"),
        ));
    }
    let dashboard = Dashboard::new(queue)
        .read_only(options.read_only)
        .allowed_hosts(&options.allowed_hosts)
        .trusted_proxies(options.trusted_proxies)
        // The password (or the loopback address) has already let the
        // request in.
        .authorize(|_| Access::Full);
    let password = password.map(|p| Password(Arc::from(p)));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(password.clone()))
            .wrap(from_fn(basic_auth))
            .service(dashboard.scope(""))
    })
    .workers(2)
    .bind(options.bind)
    .map_err(|err| {
        Error::invalid(
            "--bind",
            format!("cannot listen on {}: {err}", options.bind),
        )
    })?;
    tracing::info!("dashboard on http://{}/", options.bind);
    server
        .run()
        .await
        .map_err(|err| Error::invalid("--bind", format!("the server stopped: {err}")))
}

/// Lets a request in when no password is set, or when it carries it.
async fn basic_auth(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<Option<Password>>>()
        .and_then(|data| data.as_ref().as_ref().map(|p| Arc::clone(&p.0)));
    let allowed = match expected {
        None => true,
        Some(expected) => given_password(&req)
            .is_some_and(|given| super::csrf::constant_time_eq(&given, &expected)),
    };
    if allowed {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let refused = HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Basic realm=\"bgtasks dashboard\""))
        .body("this dashboard needs its password (HTTP Basic, any user name)\n");
    Ok(req.into_response(refused).map_into_right_body())
}

fn given_password(req: &ServiceRequest) -> Option<String> {
    let header = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}
