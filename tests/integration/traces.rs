//! OpenTelemetry traces across processes, checked at a real OTLP/HTTP
//! receiver: a small server in this test decoding the exporters' protobuf
//! with the official `opentelemetry-proto` definitions. `bgtasks enqueue`
//! (one process) stores its span's context with the task; `bgtasks
//! process` (another) runs it twice (a failure, then its retry), and both
//! execution spans link to the enqueue span. A collector that is down
//! costs the runner nothing and one warning.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use background_tasks::{completed_task, task_row};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sea_orm::{EntityTrait, PaginatorTrait};

use crate::cli::bgtasks;
use crate::fixture::{TestDb, wait_for};
use crate::fleet::{Process, free_port};

on_all_backends!(
    an_execution_links_to_the_enqueue_across_processes_and_retries,
    a_collector_that_is_down_costs_one_warning,
);

/// A span as received, with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        let value = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?
            .value
            .as_ref()?;
        Some(match value {
            AnyValue::StringValue(text) => text.clone(),
            AnyValue::IntValue(n) => n.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// An OTLP/HTTP receiver on a free loopback port: `POST /v1/traces` with
/// a protobuf `ExportTraceServiceRequest`.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Starts it and waits until it answers (the server starts when the
    /// test's runtime first polls it).
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let kept = Arc::clone(&spans);
        let server = HttpServer::new(move || {
            let kept = Arc::clone(&kept);
            App::new().route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                            return HttpResponse::BadRequest().finish();
                        };
                        let mut kept = kept.lock().unwrap();
                        for resource in request.resource_spans {
                            let service = resource
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| kv.value.as_ref()?.value.clone())
                                .map(|value| match value {
                                    AnyValue::StringValue(name) => name,
                                    other => format!("{other:?}"),
                                })
                                .unwrap_or_default();
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    kept.push(Received {
                                        service: service.clone(),
                                        span,
                                    });
                                }
                            }
                        }
                        HttpResponse::Ok()
                            .content_type("application/x-protobuf")
                            .finish()
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(addr)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        wait_for(
            "the OTLP receiver answers",
            Duration::from_secs(30),
            || async { crate::fleet::http_get(addr, "/").is_some() },
        )
        .await;
        Receiver {
            addr,
            spans,
            server: handle,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn an_execution_links_to_the_enqueue_across_processes_and_retries(t: TestDb) -> TestDb {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint();
    // Process 1: the enqueue.
    let output = bgtasks(&t)
        .args(["enqueue", "bgtasks.fail"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "shop-web")
        // A loaded CI machine: the exit waits for the last export this long.
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "60000")
        .env("RUST_LOG", "info,background_tasks::telemetry=debug")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let row = task_row::Entity::find().one(&t.db).await.unwrap().unwrap();
    let stored = row
        .trace_context
        .clone()
        .expect("the enqueue stored its trace context");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut enqueue = None;
    wait_for(
        &format!("the enqueue span reaches the receiver (enqueue's log: {stderr})"),
        Duration::from_secs(30),
        || {
            enqueue = receiver
                .spans()
                .into_iter()
                .find(|r| r.span.name == "enqueue");
            let found = enqueue.is_some();
            async move { found }
        },
    )
    .await;
    let enqueue = enqueue.unwrap();
    assert_eq!(enqueue.service, "shop-web");
    assert_eq!(enqueue.attribute("task").as_deref(), Some("bgtasks.fail"));
    let (trace_id, span_id) = (hex(&enqueue.span.trace_id), hex(&enqueue.span.span_id));
    assert_eq!(stored, format!("00-{trace_id}-{span_id}-01"));

    // Process 2: the runner, two attempts (the task always fails).
    let runner = Process::spawn_with(
        &t,
        &["--sleep", "0.1", "--max-attempts", "2"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "shop-worker"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
        ],
    );
    wait_for(
        "both attempts ran and the task failed for good",
        Duration::from_secs(60),
        || async { completed_task::Entity::find().count(&t.db).await.unwrap() == 1 },
    )
    .await;
    let log = runner.stop().await;
    let executions = || -> Vec<Received> {
        receiver
            .spans()
            .into_iter()
            .filter(|r| r.span.name == "task")
            .collect()
    };
    wait_for(
        &format!("both execution spans reach the receiver (runner's log: {log})"),
        Duration::from_secs(30),
        || {
            let both = executions().len() >= 2;
            async move { both }
        },
    )
    .await;
    let executions = executions();
    assert_eq!(executions.len(), 2, "{executions:#?}\n{log}");
    let mut attempts = Vec::new();
    for execution in &executions {
        assert_eq!(execution.service, "shop-worker");
        assert_eq!(execution.attribute("name").as_deref(), Some("bgtasks.fail"));
        assert_eq!(execution.span.kind, 5, "kind consumer");
        let links: Vec<(String, String)> = execution
            .span
            .links
            .iter()
            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
            .collect();
        assert_eq!(
            links,
            vec![(trace_id.clone(), span_id.clone())],
            "the execution links to the enqueue"
        );
        attempts.push(execution.attribute("attempt").unwrap());
    }
    attempts.sort();
    assert_eq!(attempts, ["1", "2"]);
    // The span tree, for the record.
    let mut tree = format!(
        "trace {trace_id} ({})\n  enqueue {span_id} [producer] task=bgtasks.fail\n",
        enqueue.service
    );
    for execution in &executions {
        tree.push_str(&format!(
            "trace {} ({})\n  task {} [consumer] attempt={} name=bgtasks.fail → link {trace_id}/{span_id}\n",
            hex(&execution.span.trace_id),
            execution.service,
            hex(&execution.span.span_id),
            execution.attribute("attempt").unwrap(),
        ));
    }
    eprintln!("span tree:\n{tree}");
    receiver.server.stop(true).await;
    t
}

async fn a_collector_that_is_down_costs_one_warning(t: TestDb) -> TestDb {
    let queue = crate::cli::queue(&t);
    for _ in 0..20 {
        queue
            .enqueue::<background_tasks::builtin::Noop>(&())
            .await
            .unwrap();
    }
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let runner = Process::spawn_with(
        &t,
        &["--sleep", "0.1"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Export often, so several batches fail while it runs.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    wait_for("every task ran", Duration::from_secs(60), || async {
        completed_task::Entity::find().count(&t.db).await.unwrap() == 20
    })
    .await;
    for _ in 0..20 {
        queue
            .enqueue::<background_tasks::builtin::Noop>(&())
            .await
            .unwrap();
    }
    wait_for("the later tasks ran", Duration::from_secs(60), || async {
        completed_task::Entity::find().count(&t.db).await.unwrap() == 40
    })
    .await;
    let log = runner.stop().await;
    let warnings = log.matches("cannot export spans over OTLP").count();
    assert_eq!(warnings, 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
    t
}
