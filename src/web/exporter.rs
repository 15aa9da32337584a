//! The runner's own metrics endpoint: `bgtasks process --metrics-addr
//! HOST:PORT` (or `BACKGROUND_TASK_METRICS_ADDR`) serves
//! [`crate::metrics::render`] at `GET /metrics`, and nothing else: no
//! dashboard, no actions, so it needs no password on any address.

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::error::{Error, Result};
use crate::queue::Queue;

/// A metrics endpoint bound and serving; [`Exporter::stop`] it at the end.
pub(crate) struct Exporter {
    handle: ServerHandle,
}

impl Exporter {
    /// Binds `addr` at once, so that a port that is taken or an address
    /// that is not this machine's fails before the runner claims a task,
    /// and serves `queue`'s metrics on the current actix `System`.
    pub(crate) fn start(queue: Queue, addr: &str) -> Result<Exporter> {
        let listener = TcpListener::bind(addr).map_err(|err| {
            Error::invalid(
                "--metrics-addr",
                format!(
                    "cannot listen on {addr}: {err}; choose a free port (or stop what listens \
                     there), or leave --metrics-addr and BACKGROUND_TASK_METRICS_ADDR unset"
                ),
            )
        })?;
        let bound = listener
            .local_addr()
            .map_err(|err| Error::invalid("--metrics-addr", format!("{addr}: {err}")))?;
        let server: Server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(queue.clone()))
                .route("/metrics", web::get().to(metrics))
                .default_service(web::to(elsewhere))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .map_err(|err| Error::invalid("--metrics-addr", format!("cannot serve on {bound}: {err}")))?
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!("metrics on http://{bound}/metrics");
        Ok(Exporter { handle })
    }

    /// Stops serving (after the runner stopped, so its last counts were
    /// there to scrape until then).
    pub(crate) async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn metrics(queue: web::Data<Queue>) -> HttpResponse {
    match crate::metrics::render(&queue).await {
        Ok(text) => HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(text),
        Err(err) => HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(format!("the metrics could not be encoded: {err}\n")),
    }
}

async fn elsewhere() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("this is a bgtasks runner's metrics endpoint: GET /metrics\n")
}
