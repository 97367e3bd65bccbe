//! Logs and traces, shared by the server (`hookrelay serve`) and the agent
//! (`hookrelay-agent`, `hookrelay relay`).
//!
//! - Logs: `tracing`, filtered by RUST_LOG when it is set, else by the
//!   caller's default. JSON (one object per line) for machines; the caller
//!   picks the human rendering for terminals.
//! - Traces: exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
//!   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; the exporter reads the
//!   standard OTEL_* variables (endpoint, headers, service name, batch delay).
//! - Trace context crosses the relay as a W3C `traceparent`: the server keeps
//!   the ingest span's with each event ([`traceparent`]), and the agent's
//!   delivery span continues it ([`continue_trace`]).

#![forbid(unsafe_code)]

mod process;
pub use process::{connection_failure, error_chain, shutdown_signal};

/// The release (the workspace's version: server, agent and their contract
/// are released together).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (`build.rs`), or `unknown`.
pub const COMMIT: &str = env!("HOOKRELAY_COMMIT");
/// What `--version` prints after the binary's name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HOOKRELAY_COMMIT"),
    ")"
);

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for a person when standard output is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Lines for a person.
    Text,
}

impl LogFormat {
    /// Auto, resolved against standard output: true for text.
    pub fn is_text(self) -> bool {
        match self {
            LogFormat::Auto => std::io::stdout().is_terminal(),
            LogFormat::Json => false,
            LogFormat::Text => true,
        }
    }
}

/// A boxed log layer for [`init`].
pub type LogLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// JSON lines, each with the fields of its event and of its innermost span,
/// written to `writer`.
pub fn json_logs<W>(writer: W) -> LogLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .boxed()
}

/// The writer [`stdout_queue`] returns; cheap to clone.
pub type LogWriter = tracing_appender::non_blocking::NonBlocking;

/// How many log lines [`stdout_queue`] may hold for its writer thread.
const QUEUED_LINES: usize = 16_384;

static DROPPED_LINES: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// How long the log writer's thread rests after each write-out. Lines logged
/// meanwhile wait in the queue and go out together at the next one, and none
/// of them wakes the thread: when each line woke it, that wake-up cost a
/// webhook 35–70 µs of its p50 at one webhook at a time (docs/benchmarks.md).
/// A line reaches standard output at most this much later.
const WRITE_OUT_REST: std::time::Duration = std::time::Duration::from_millis(20);

/// Standard output as the log writer's thread writes it: buffered, and
/// resting after each write-out. tracing-appender's worker writes every line
/// it finds queued, then flushes, then waits on its queue again; the rest is
/// in the flush, after the lines are out.
struct RestingStdout(std::io::BufWriter<std::io::Stdout>);

impl std::io::Write for RestingStdout {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.write(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        std::thread::sleep(WRITE_OUT_REST);
        Ok(())
    }
}

/// Standard output behind a bounded queue and a writer thread of its own: a
/// log line costs the request that logs it a copy into the queue, not a
/// `write` (the thread writes what has queued in one go, [`WRITE_OUT_REST`]
/// apart), and a slow reader of standard output (a stalled log collector, a
/// full pipe) never holds up a request. When the queue is full, lines are
/// dropped and counted ([`dropped_log_lines`]). Keep the guard until the
/// process ends: dropping it writes what is queued.
pub fn stdout_queue() -> (LogWriter, tracing_appender::non_blocking::WorkerGuard) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("log-writer")
        .finish(RestingStdout(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        )));
    let _ = DROPPED_LINES.set(writer.error_counter());
    (writer, guard)
}

/// Log lines [`stdout_queue`] dropped because its queue was full.
pub fn dropped_log_lines() -> u64 {
    DROPPED_LINES
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Flushes exported traces and queued log lines when the process ends.
#[must_use]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    log_writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl TelemetryGuard {
    /// Keeps the guard of [`stdout_queue`] until [`TelemetryGuard::shutdown`].
    pub fn with_log_writer(mut self, guard: tracing_appender::non_blocking::WorkerGuard) -> Self {
        self.log_writer = Some(guard);
        self
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
        drop(self.log_writer);
    }
}

static TRACES_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`init`] set up an exporter of traces: span fields that only
/// traces show need not be recorded otherwise.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global subscriber: `logs`, filtered by RUST_LOG or else
/// `default_filter` (an EnvFilter directive such as `info`), and the OTLP
/// exporter when one is configured. Call once, before the runtime starts.
pub fn init(
    service_name: &'static str,
    default_filter: &str,
    logs: LogLayer,
) -> anyhow::Result<TelemetryGuard> {
    let filter =
        || EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(default_filter));
    let tracer_provider = otlp_tracer_provider(service_name)?;
    TRACES_EXPORTED.store(
        tracer_provider.is_some(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let otel = match &tracer_provider {
        Some(provider) => Some(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service_name))
                .with_filter(filter()?),
        ),
        None => None,
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter()?))
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard {
        tracer_provider,
        log_writer: None,
    })
}

fn otlp_tracer_provider(service_name: &'static str) -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    // The default detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The W3C `traceparent` of `span`, when traces are exported (otherwise a
/// span has no trace context worth keeping).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` (not yet entered) a child of the span `traceparent` names.
/// A malformed value is ignored: the span then starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: nothing to continue.
        let _ = span.set_parent(parent);
    }
}
