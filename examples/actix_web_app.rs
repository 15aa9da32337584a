//! A small shop whose HTTP endpoints enqueue background tasks, with the
//! runner and the dashboard in the same process.
//!
//! ```text
//! cargo run --example actix_web_app
//! # then open http://127.0.0.1:8080/ and http://127.0.0.1:8080/dashboard/
//! ```
//!
//! - `POST /orders` stores an order and enqueues its receipt email in the
//!   same SeaORM transaction: both are written, or neither.
//! - `POST /inventory/sync` enqueues a sync with a flaky supplier: each SKU
//!   fails on its first try in this process, so the dashboard has a failed
//!   task to retry (run with `MAX_ATTEMPTS=1` to fail it permanently).
//! - `/dashboard/` is the dashboard, `/dashboard/metrics` the Prometheus
//!   endpoint, `/dashboard/api/...` the JSON API.
//!
//! Settings from the environment: `DATABASE_URL` (default: the SQLite file
//! `background_tasks.sqlite3` here), `BIND` (default `127.0.0.1:8080`),
//! `MAX_ATTEMPTS` (default 25), `DASHBOARD_READ_ONLY=true`,
//! `DASHBOARD_ALLOWED_HOSTS` (host names the dashboard answers to besides
//! localhost and IP addresses, comma-separated).
//! Ctrl-C stops the server, then lets running tasks finish.

use std::collections::HashSet;
use std::sync::Mutex;

use actix_web::{App, HttpResponse, HttpServer, web};
use background_tasks::web::{Access, Dashboard};
use background_tasks::{
    Config, DEFAULT_SHUTDOWN_GRACE, Queue, Registry, Runner, Task, TaskContext, TaskError, db,
};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use serde::{Deserialize, Serialize};

/// Emails the receipt of an order.
struct SendReceipt;

#[derive(Serialize, Deserialize)]
struct Receipt {
    order_id: i64,
    email: String,
}

impl Task for SendReceipt {
    type Params = Receipt;
    type Output = ();
    fn name() -> &'static str {
        "shop.send_receipt"
    }
    async fn run(&self, receipt: Receipt, _: TaskContext) -> Result<(), TaskError> {
        tracing::info!(receipt.order_id, "receipt sent to {}", receipt.email);
        Ok(())
    }
}

/// Pulls stock levels from a supplier whose API fails the first call for
/// each SKU (in this process): a failure to see, and retry, in the dashboard.
struct SyncInventory {
    seen: Mutex<HashSet<String>>,
}

impl Task for SyncInventory {
    type Params = String;
    type Output = ();
    fn name() -> &'static str {
        "shop.sync_inventory"
    }
    async fn run(&self, sku: String, _: TaskContext) -> Result<(), TaskError> {
        let first_try = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sku.clone());
        if first_try {
            return Err(TaskError::msg(format!(
                "the supplier's API answered 503 for {sku}; try again later"
            )));
        }
        tracing::info!("stock of {sku} synced");
        Ok(())
    }
}

#[derive(Deserialize)]
struct NewOrder {
    email: String,
}

/// Stores the order and enqueues its receipt in one transaction.
async fn place_order(
    queue: web::Data<Queue>,
    order: web::Form<NewOrder>,
) -> actix_web::Result<HttpResponse> {
    let fail = |err: &dyn std::fmt::Display| {
        actix_web::error::ErrorInternalServerError(format!("could not place the order: {err}"))
    };
    let txn = queue.db().begin().await.map_err(|e| fail(&e))?;
    let backend = txn.get_database_backend();
    let insert = match backend {
        DbBackend::Postgres => "INSERT INTO example_order (email) VALUES ($1) RETURNING id",
        _ => "INSERT INTO example_order (email) VALUES (?)",
    };
    let statement = Statement::from_sql_and_values(backend, insert, [order.email.clone().into()]);
    let order_id = if backend == DbBackend::Postgres {
        txn.query_one_raw(statement)
            .await
            .map_err(|e| fail(&e))?
            .and_then(|row| row.try_get::<i32>("", "id").ok())
            .map(i64::from)
            .unwrap_or_default()
    } else {
        txn.execute_raw(statement)
            .await
            .map_err(|e| fail(&e))?
            .last_insert_id() as i64
    };
    queue
        .enqueue_with::<SendReceipt, _>(
            &txn,
            &Receipt {
                order_id,
                email: order.email.clone(),
            },
        )
        .await
        .map_err(|e| fail(&e))?;
    txn.commit().await.map_err(|e| fail(&e))?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/?placed=1"))
        .finish())
}

#[derive(Deserialize)]
struct Sync {
    sku: String,
}

async fn sync_inventory(
    queue: web::Data<Queue>,
    form: web::Form<Sync>,
) -> actix_web::Result<HttpResponse> {
    queue
        .enqueue::<SyncInventory>(&form.sku)
        .verbose_name(format!("Sync stock of {}", form.sku))
        .queue("inventory")
        .await
        .map_err(actix_web::error::ErrorBadRequest)?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/?synced=1"))
        .finish())
}

async fn home() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(HOME)
}

const HOME: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Example shop</title></head>
<body>
<h1>Example shop</h1>
<form method="post" action="/orders">
  <input name="email" value="ada@example.com" aria-label="email">
  <button id="place-order" type="submit">Place an order</button>
</form>
<form method="post" action="/inventory/sync">
  <input name="sku" value="SKU-1" aria-label="sku">
  <button id="sync-inventory" type="submit">Sync inventory</button>
</form>
<p><a id="dashboard" href="/dashboard/">Open the dashboard</a></p>
</body></html>"#;

/// The example's own table, beside the queue's.
async fn create_orders_table(queue: &Queue) -> Result<(), sea_orm::DbErr> {
    let id = match queue.db().get_database_backend() {
        DbBackend::Postgres => "SERIAL PRIMARY KEY",
        DbBackend::MySql => "INTEGER AUTO_INCREMENT PRIMARY KEY",
        _ => "INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    queue
        .db()
        .execute_unprepared(&format!(
            "CREATE TABLE IF NOT EXISTS example_order (id {id}, email VARCHAR(255) NOT NULL)"
        ))
        .await
        .map(|_| ())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let bind = env("BIND").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let read_only = env("DASHBOARD_READ_ONLY").is_some_and(|v| v == "true");
    let max_attempts = env("MAX_ATTEMPTS")
        .map(|v| v.parse().expect("MAX_ATTEMPTS must be a whole number"))
        .unwrap_or(background_tasks::DEFAULT_MAX_ATTEMPTS);

    let db = db::open(env("DATABASE_URL").as_deref())
        .await
        .map_err(std::io::Error::other)?;
    let registry = Registry::new();
    registry.register(SendReceipt).register(SyncInventory {
        seen: Mutex::default(),
    });
    let config = Config::builder()
        .max_attempts(max_attempts)
        .build()
        .map_err(std::io::Error::other)?;
    let queue = Queue::with_parts(db, registry, config);
    create_orders_table(&queue)
        .await
        .map_err(std::io::Error::other)?;

    // The runner's actors run on this actix System, beside the server.
    let runner = Runner::start(queue.clone()).map_err(std::io::Error::other)?;
    // The dashboard answers to localhost and IP addresses; the names people
    // use to reach it go here (a request naming another host is refused,
    // which is what stops DNS rebinding).
    let allowed_hosts = env("DASHBOARD_ALLOWED_HOSTS").unwrap_or_default();
    let dashboard = Dashboard::new(queue.clone())
        .read_only(read_only)
        .allowed_hosts(allowed_hosts.split(',').filter(|host| !host.is_empty()))
        // Who may see and act is the app's call: check your session here.
        // This example listens on localhost and lets everyone in.
        .authorize(|_request| Access::Full);

    tracing::info!("listening on http://{bind}/ (dashboard: http://{bind}/dashboard/)");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(queue.clone()))
            .route("/", web::get().to(home))
            .route("/orders", web::post().to(place_order))
            .route("/inventory/sync", web::post().to(sync_inventory))
            .service(dashboard.scope("/dashboard"))
    })
    .bind(&bind)?
    .run()
    .await?;

    // The server stopped (Ctrl-C, SIGTERM): running tasks get to finish.
    runner.shutdown(DEFAULT_SHUTDOWN_GRACE).await;
    Ok(())
}
