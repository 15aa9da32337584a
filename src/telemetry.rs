//! OpenTelemetry traces (feature `otel`, on by default).
//!
//! - **At enqueue**, the trace context of the calling code (the current
//!   `tracing` span, through a `tracing-opentelemetry` layer, else the
//!   current OpenTelemetry context) is stored with the task, as a W3C
//!   `traceparent`, in the nullable column `background_task.trace_context`.
//!   Outside a trace it stays null and costs nothing.
//! - **At each execution**, the runner's span `task` (one per attempt; the
//!   body's own spans are its children) carries a link to that context, so
//!   a trace viewer goes from the request that enqueued a task to every
//!   attempt that ran it, in whatever process, and back. The span is of kind
//!   `consumer`; its attributes are the task's id, name, attempt and queue.
//! - **Export.** `bgtasks` (every command) exports its spans over OTLP/HTTP
//!   when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `_TRACES_ENDPOINT`) is set, with
//!   the standard `OTEL_SERVICE_NAME` (default `bgtasks`) and
//!   `OTEL_RESOURCE_ATTRIBUTES`; `bgtasks enqueue` runs in a span
//!   `enqueue` (kind `producer`) that the tasks it writes link to. An
//!   embedding app installs its own pipeline ([`exporter`] builds this
//!   crate's, with its once-per-outage warning) and a `tracing-opentelemetry`
//!   layer of the version this crate uses (0.34, OpenTelemetry 0.33).
//!
//! A collector that is down costs the runner nothing: spans are exported in
//! batches off the task path, dropped while it is away, with one warning
//! when the export starts failing and one line when it works again.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the calling code's trace, if it runs in one.
pub(crate) fn current_traceparent() -> Option<String> {
    let from_tracing = tracing::Span::current().context();
    let span = from_tracing.span();
    let context = span.span_context();
    if context.is_valid() {
        return Some(traceparent(context));
    }
    let current = opentelemetry::Context::current();
    let context = current.span().span_context().clone();
    context.is_valid().then(|| traceparent(&context))
}

/// `00-{trace id}-{span id}-{flags}`.
fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The span context a stored `traceparent` names; `None` for anything that
/// is not one (a hand-edited row is ignored, not an error).
pub(crate) fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Links the execution span `span` to the trace that enqueued its task.
pub(crate) fn link(span: &tracing::Span, trace_context: Option<&str>) {
    if let Some(context) = trace_context.and_then(parse_traceparent) {
        span.add_link(context);
    }
}

/// A span exporter that says once when exports start failing (and once
/// when they work again) instead of once per batch, and drops the spans of
/// a failed batch: the runner never waits for a collector.
#[derive(Debug)]
pub struct Reported<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> Reported<E> {
    /// Wraps `inner`.
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        match self.inner.export(batch).await {
            Ok(()) => {
                tracing::debug!(spans, "spans exported over OTLP");
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the OTLP endpoint answers again: exporting spans");
                }
            }
            Err(err) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        dropped = spans,
                        "cannot export spans over OTLP ({err}): they are dropped until the \
                         endpoint answers (OTEL_EXPORTER_OTLP_ENDPOINT); tasks run on. Said once \
                         until it answers again"
                    );
                }
            }
        }
        // The batch is dealt with: the SDK has nothing more to report.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// How long one OTLP export may take: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`
/// or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s, as the
/// exporter reads them.
pub fn export_timeout() -> std::time::Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok()?.trim().parse::<u64>().ok())
    .map_or(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis,
    )
}

/// Whether the environment asks for an OTLP export.
pub fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|value| !value.trim().is_empty()))
}

/// A tracer provider exporting over OTLP/HTTP (protobuf) in batches, to the
/// endpoint the standard `OTEL_EXPORTER_OTLP_*` variables name, as service
/// `OTEL_SERVICE_NAME` (else `default_service`). Shut it down at exit so
/// the last batch goes out.
///
/// # Errors
/// When the exporter cannot be built (a malformed endpoint).
pub fn exporter(default_service: &str) -> crate::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|err| {
            crate::Error::invalid(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!(
                    "cannot export spans over OTLP: {err}; give a URL such as http://127.0.0.1:4318"
                ),
            )
        })?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(default_service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Reported::new(exporter))
        .with_resource(resource.build())
        .build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of
/// `provider`.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("background-tasks"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_junk_is_ignored() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse_traceparent(text).unwrap();
        assert_eq!(traceparent(&context), text);
        assert!(context.is_remote());
        for junk in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zz-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(junk).is_none(), "{junk}");
        }
        assert!(current_traceparent().is_none());
    }
}
