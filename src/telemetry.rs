//! Logs, traces and metrics.
//!
//! - Logs: `tracing`, JSON when stdout is not a terminal, filtered by RUST_LOG
//!   (default `info`).
//! - Traces: exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set; the
//!   exporter reads the standard OTEL_* variables (endpoint, headers, service name).
//! - Metrics: a Prometheus registry per application, served at GET /metrics.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes exported traces when the process ends.
#[must_use]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("hookrelay: flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber. Call once, before the async runtime starts.
pub fn init() -> anyhow::Result<TelemetryGuard> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if std::io::stdout().is_terminal() {
        tracing_subscriber::fmt::layer()
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter())
            .boxed()
    };
    let tracer_provider = otlp_tracer_provider()?;
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("hookrelay"))
            .with_filter(filter())
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { tracer_provider })
}

fn otlp_tracer_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
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
        resource = resource.with_service_name("hookrelay");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
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
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// The application's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub webhooks_received: Family<ProviderLabels, Counter>,
    pub webhooks_rejected: Family<RejectionLabels, Counter>,
    pub ingest_seconds: Histogram,
    pub tokens_issued: Counter,
    /// Requests answered 429, by endpoint (`signup`, `token`).
    pub rate_limited: Family<EndpointLabels, Counter>,
    /// Event streams open on this server.
    pub streams_open: Gauge,
    pub stream_events_sent: Counter,
    /// Acks received, by outcome (`delivered`, `failed`).
    pub acks: Family<OutcomeLabels, Counter>,
    pub redeliveries: Counter,
    /// Refreshed periodically from the database (see `jobs::consumer_metrics`):
    /// the same figures on every replica, for every tenant together.
    pub consumers_stalled: Gauge,
    pub consumer_oldest_pending_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
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
        let rate_limited = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a per-source rate limit, by endpoint",
            rate_limited.clone(),
        );
        let streams_open = Gauge::default();
        registry.register(
            "streams_open",
            "Event streams open on this server",
            streams_open.clone(),
        );
        let stream_events_sent = Counter::default();
        registry.register(
            "stream_events_sent",
            "Events sent on event streams, redeliveries included",
            stream_events_sent.clone(),
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
        Self {
            streams_open,
            stream_events_sent,
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
        }
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
