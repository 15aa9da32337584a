//! Logging for the command line: tracing to stderr, or `--log-std`; and,
//! with feature `otel` and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans
//! exported over OTLP ([`crate::telemetry`]).

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What must outlive the command: the log's writer thread and the span
/// exporter, both flushed at the end.
pub(super) struct Guard {
    log: tracing_appender::non_blocking::WorkerGuard,
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Guard {
    /// Sends the spans still buffered, waiting at most the OTLP export
    /// timeout ([`crate::telemetry::export_timeout`], 10 s by default) for
    /// a collector that is slow; one that is away fails at once.
    pub(super) fn finish(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            let timeout = crate::telemetry::export_timeout() + std::time::Duration::from_secs(1);
            if let Err(err) = provider.shutdown_with_timeout(timeout) {
                let _ = std::io::Write::write_fmt(
                    &mut std::io::stderr(),
                    format_args!("bgtasks: the last spans were not exported: {err}\n"),
                );
            }
        }
        // Last, so what the exporter logs while it shuts down is written
        // too: every line logged so far is on stderr when this returns.
        drop(self.log);
    }
}

/// Logs to stderr through tracing; `RUST_LOG` filters (default `info`).
/// With `log_std`, what the process writes to stdout and stderr goes to the
/// log instead (info and error), as the seed's `--log-std` does.
pub(super) fn init(log_std: bool) -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in files or pipes.
    let mut ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut writer: Box<dyn std::io::Write + Send> = Box::new(std::io::stderr());
    #[cfg(unix)]
    if log_std && let Some(log_file) = std_redirect::start() {
        writer = Box::new(log_file);
        ansi = false;
    }
    #[cfg(not(unix))]
    let _ = log_std;
    // A runner logs two lines per task. Formatting stays on the task's
    // thread; writing goes to a thread of its own, which takes every line
    // queued meanwhile and writes them with one system call. Nothing is
    // dropped: a full queue (128,000 lines) makes the logging thread wait.
    let (writer, log) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("bgtasks-log")
        .finish(LineBuffer::new(writer));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer)
        .with_filter(filter);
    #[cfg(feature = "otel")]
    {
        let provider = otel_provider();
        let otel = provider.as_ref().map(|provider| {
            // Spans at info and above, whatever RUST_LOG says of the log.
            crate::telemetry::layer(provider)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        });
        tracing_subscriber::registry()
            .with(fmt)
            .with(otel)
            .try_init()
            .ok();
        Guard { log, provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        tracing_subscriber::registry().with(fmt).try_init().ok();
        Guard { log }
    }
}

/// The log's destination behind a buffer: the writer thread writes each
/// line into it and flushes it when no more lines are waiting
/// (tracing-appender flushes after each batch it takes), so a burst of
/// lines is one write and a lone line is written at once.
struct LineBuffer(std::io::BufWriter<Box<dyn std::io::Write + Send>>);

impl LineBuffer {
    fn new(out: Box<dyn std::io::Write + Send>) -> Self {
        Self(std::io::BufWriter::with_capacity(64 * 1024, out))
    }
}

impl std::io::Write for LineBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The OTLP exporter, when the environment asks for one.
#[cfg(feature = "otel")]
fn otel_provider() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    if !crate::telemetry::configured() {
        return None;
    }
    match crate::telemetry::exporter("bgtasks") {
        Ok(provider) => Some(provider),
        Err(err) => {
            // Not eprintln!: a closed stderr must not panic.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("bgtasks: spans are not exported: {err}\n"),
            );
            None
        }
    }
}

#[cfg(unix)]
mod std_redirect {
    //! `--log-std`: file descriptors 1 and 2 become pipes read by two
    //! threads that log each line; the log itself goes to a duplicate of the
    //! original stderr, so it does not loop back into the pipe.

    use std::fs::File;
    use std::io::{BufRead, BufReader};
    use std::os::fd::FromRawFd;

    /// Returns the log's destination (the original stderr), or `None` when
    /// the descriptors could not be redirected (logged, and stdout/stderr
    /// stay as they are).
    pub(super) fn start() -> Option<File> {
        // SAFETY: dup/pipe/dup2 on the process's own descriptors; each new
        // descriptor is owned by exactly one File created here.
        unsafe {
            let original = libc::dup(2);
            if original < 0 {
                return None;
            }
            for (fd, error_level) in [(1, false), (2, true)] {
                let mut ends = [0; 2];
                if libc::pipe(ends.as_mut_ptr()) != 0 || libc::dup2(ends[1], fd) < 0 {
                    return Some(File::from_raw_fd(original));
                }
                libc::close(ends[1]);
                let reader = File::from_raw_fd(ends[0]);
                std::thread::Builder::new()
                    .name(format!("log-std-{fd}"))
                    .spawn(move || {
                        for line in BufReader::new(reader).lines().map_while(Result::ok) {
                            if error_level {
                                tracing::error!(target: "stderr", "{line}");
                            } else {
                                tracing::info!(target: "stdout", "{line}");
                            }
                        }
                    })
                    .ok()?;
            }
            Some(File::from_raw_fd(original))
        }
    }
}
