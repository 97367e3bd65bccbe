//! Logs, traces and metrics.
//!
//! - Logs and traces: see `hookrelay_telemetry` (shared with the agent). Logs
//!   are JSON when stdout is not a terminal (HOOKRELAY_LOG_FORMAT), filtered
//!   by RUST_LOG (default `info`, PostgreSQL notices from `warn`), written by
//!   a thread of their own (`hookrelay_telemetry::stdout_queue`); the access
//!   log's lines (target `hookrelay::access`) by HOOKRELAY_ACCESS_LOG as
//!   well. Traces go over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
//! - Metrics: a Prometheus registry per application, served at GET /metrics.

pub mod access;

use hookrelay_telemetry::{LogFormat, TelemetryGuard};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::Layer;

/// Whether logs are lines for a person (set once by `init`): request lines
/// are then debug lines, not the access log they are in JSON.
static TEXT_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn text_logs() -> bool {
    TEXT_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Which requests the access log records (HOOKRELAY_ACCESS_LOG): a line per
/// request costs 2–5 µs of CPU (docs/benchmarks.md), under a tenth of what a
/// webhook costs in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    /// Every request (the default).
    All,
    /// Requests answered 4xx or 5xx.
    Failures,
    /// None.
    Off,
}

impl AccessLog {
    fn parse(value: &str) -> anyhow::Result<Self> {
        match value {
            "all" => Ok(Self::All),
            "failures" => Ok(Self::Failures),
            "off" => Ok(Self::Off),
            other => anyhow::bail!("HOOKRELAY_ACCESS_LOG={other}: use all, failures or off"),
        }
    }

    /// Whether a request answered `status` gets a line.
    pub fn records(self, status: u16) -> bool {
        match self {
            Self::All => true,
            Self::Failures => status >= 400,
            Self::Off => false,
        }
    }
}

/// The writer of the JSON log lines, for lines written without tracing's
/// formatter (`access`); unset until `init`, and in tests that run the
/// server in-process.
static LOG_WRITER: std::sync::OnceLock<hookrelay_telemetry::LogWriter> = std::sync::OnceLock::new();

/// Writes one log line that `fill` serialises, as one write to the log
/// writer's queue.
fn write_log_line(fill: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
    use std::io::Write;
    let Some(writer) = LOG_WRITER.get() else {
        return;
    };
    let mut line = Vec::with_capacity(512);
    if fill(&mut line).is_ok() {
        line.push(b'\n');
        let _ = writer.clone().write_all(&line);
    }
}

static ACCESS_LOG: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The access log's setting (set once by `init`).
pub fn access_log() -> AccessLog {
    match ACCESS_LOG.load(std::sync::atomic::Ordering::Relaxed) {
        0 => AccessLog::All,
        1 => AccessLog::Failures,
        _ => AccessLog::Off,
    }
}

/// Installs the global subscriber. Call once, before the async runtime starts.
/// HOOKRELAY_LOG_FORMAT: `auto` (text on a terminal, JSON otherwise; the
/// default), `json` or `text`. PostgreSQL's notices (sqlx logs each at info,
/// `relation "_sqlx_migrations" already exists` at every start) only from warn.
pub fn init() -> anyhow::Result<TelemetryGuard> {
    let format = match std::env::var("HOOKRELAY_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        Ok("auto") | Err(_) => LogFormat::Auto,
        Ok(other) => anyhow::bail!("HOOKRELAY_LOG_FORMAT={other}: use auto, json or text"),
    };
    let access = match std::env::var("HOOKRELAY_ACCESS_LOG") {
        Ok(value) => AccessLog::parse(&value)?,
        Err(_) => AccessLog::All,
    };
    ACCESS_LOG.store(access as u8, std::sync::atomic::Ordering::Relaxed);
    let text = format.is_text();
    TEXT_LOGS.store(text, std::sync::atomic::Ordering::Relaxed);
    let (writer, guard) = hookrelay_telemetry::stdout_queue();
    let _ = LOG_WRITER.set(writer.clone());
    let logs = if text {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    } else {
        hookrelay_telemetry::json_logs(writer)
    };
    Ok(
        hookrelay_telemetry::init("hookrelay", "info,sqlx::postgres::notice=warn", logs)?
            .with_log_writer(guard),
    )
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

/// The application's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub webhooks_received: Family<ProviderLabels, Counter>,
    pub webhooks_rejected: Family<RejectionLabels, Counter>,
    pub ingest_seconds: Histogram,
    pub tokens_issued: Counter,
    /// Token requests refused, by RFC 6749 error code (invalid_client, …).
    pub token_errors: Family<ErrorLabels, Counter>,
    /// 1 while the database answers this replica (checked every second).
    pub database_up: Gauge,
    /// Requests answered 429, by endpoint (`signup`, `token`).
    pub rate_limited: Family<EndpointLabels, Counter>,
    /// Event streams open on this server.
    pub streams_open: Gauge,
    /// The watches' shared polls running on this server: one per tenant and
    /// kind, however many watches show it.
    pub watch_polls: Gauge,
    pub stream_events_sent: Counter,
    /// Events added to the streams' shared tail: `commit` straight from this
    /// server's own commits, `read` read back from the database.
    pub tail_events: Family<SourceLabels, Counter>,
    /// Acks received, by outcome (`delivered`, `failed`).
    pub acks: Family<OutcomeLabels, Counter>,
    pub redeliveries: Counter,
    /// Refreshed periodically from the database (see `jobs::consumer_metrics`):
    /// the same figures on every replica, for every tenant together.
    pub consumers_stalled: Gauge,
    pub consumer_oldest_pending_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Recovery runs ended on this replica, by outcome (`ok`, `error`).
    pub recovery_runs: Family<OutcomeLabels, Counter>,
    pub recovery_redeliveries_requested: Counter,
    /// Missing deliveries the latest run of each repository (on this
    /// replica) found and did not get redelivered.
    pub recovery_missing_events: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookrelay");
        let webhooks_received = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "webhooks_received",
            "Webhooks accepted and committed",
            webhooks_received.clone(),
        );
        let webhooks_rejected = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "webhooks_rejected",
            "Webhooks refused, by reason",
            webhooks_rejected.clone(),
        );
        let ingest_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        registry.register(
            "ingest_duration_seconds",
            "Time from a webhook's arrival to its committed answer",
            ingest_seconds.clone(),
        );
        let tokens_issued = Counter::default();
        registry.register(
            "tokens_issued",
            "Access tokens issued by the token endpoint",
            tokens_issued.clone(),
        );
        let token_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "token_errors",
            "Token requests refused, by OAuth2 error code",
            token_errors.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 while the database answers this replica, checked every second",
            database_up.clone(),
        );
        let rate_limited = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit (per source address, or per tenant for stream_setup, webhook and provider_api), by endpoint",
            rate_limited.clone(),
        );
        let streams_open = Gauge::default();
        registry.register(
            "streams_open",
            "Event streams open on this server",
            streams_open.clone(),
        );
        let watch_polls = Gauge::default();
        registry.register(
            "watch_polls",
            "Shared polls of the console's watches running on this server (one per tenant and kind)",
            watch_polls.clone(),
        );
        let stream_events_sent = Counter::default();
        registry.register(
            "stream_events_sent",
            "Events sent on event streams, redeliveries included",
            stream_events_sent.clone(),
        );
        let tail_events = Family::<SourceLabels, Counter>::default();
        registry.register(
            "tail_events",
            "Events added to the streams' shared tail, by source: commit (handed over by this server's own commit) or read (read back from the database)",
            tail_events.clone(),
        );
        let acks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "acks",
            "Event acknowledgements received, by outcome",
            acks.clone(),
        );
        let redeliveries = Counter::default();
        registry.register(
            "redeliveries",
            "Redeliveries requested through the API",
            redeliveries.clone(),
        );
        let consumers_stalled = Gauge::default();
        registry.register(
            "consumers_stalled",
            "Consumers with a connected stream whose oldest pending event is older than the stall threshold",
            consumers_stalled.clone(),
        );
        let consumer_oldest_pending_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "consumer_oldest_pending_seconds",
            "Age of the oldest event any consumer has yet to acknowledge",
            consumer_oldest_pending_seconds.clone(),
        );
        // Which release serves: 1, labelled (Prometheus' build_info convention).
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: hookrelay_telemetry::VERSION,
                commit: hookrelay_telemetry::COMMIT,
            })
            .set(1);
        registry.register(
            "build_info",
            "The release and commit of this server (always 1)",
            build_info,
        );
        let recovery_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "recovery_runs",
            "Reads of providers' delivery logs for missed deliveries, by outcome",
            recovery_runs.clone(),
        );
        let recovery_redeliveries_requested = Counter::default();
        registry.register(
            "recovery_redeliveries_requested",
            "Redeliveries of missed deliveries asked of providers",
            recovery_redeliveries_requested.clone(),
        );
        let recovery_missing_events = Gauge::default();
        registry.register(
            "recovery_missing_events",
            "Missed deliveries the latest recovery runs found and could not have redelivered",
            recovery_missing_events.clone(),
        );
        registry.register_collector(Box::new(DroppedLogLines));
        // Series that alerts and dashboards rate() over exist from the start, at 0,
        // rather than appearing with their first event.
        for provider in crate::domain::Provider::ALL {
            let _ = webhooks_received.get_or_create(&ProviderLabels {
                provider: provider.as_str(),
            });
        }
        for reason in [
            "database_unavailable",
            "unavailable",
            "internal",
            "signature",
        ] {
            let _ = webhooks_rejected.get_or_create(&RejectionLabels { reason });
        }
        for endpoint in ["signup", "token", "stream_setup", "webhook", "provider_api"] {
            let _ = rate_limited.get_or_create(&EndpointLabels { endpoint });
        }
        let _ = token_errors.get_or_create(&ErrorLabels {
            error: "invalid_client",
        });
        for outcome in ["delivered", "failed"] {
            let _ = acks.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["ok", "error"] {
            let _ = recovery_runs.get_or_create(&OutcomeLabels { outcome });
        }
        Self {
            recovery_runs,
            recovery_redeliveries_requested,
            recovery_missing_events,
            streams_open,
            watch_polls,
            stream_events_sent,
            tail_events,
            acks,
            redeliveries,
            consumers_stalled,
            consumer_oldest_pending_seconds,
            rate_limited,
            registry,
            webhooks_received,
            webhooks_rejected,
            ingest_seconds,
            tokens_issued,
            token_errors,
            database_up,
        }
    }
}

/// `hookrelay_log_lines_dropped_total`: log lines the full queue of the log
/// writer dropped (`hookrelay_telemetry::stdout_queue`), read at each scrape.
#[derive(Debug)]
struct DroppedLogLines;

impl prometheus_client::collector::Collector for DroppedLogLines {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let counter = prometheus_client::metrics::counter::ConstCounter::new(
            hookrelay_telemetry::dropped_log_lines(),
        );
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the log writer's queue was full",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

impl Metrics {
    pub fn reject(&self, reason: &'static str) {
        self.webhooks_rejected
            .get_or_create(&RejectionLabels { reason })
            .inc();
    }

    pub fn limited(&self, endpoint: &'static str) {
        self.rate_limited
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
