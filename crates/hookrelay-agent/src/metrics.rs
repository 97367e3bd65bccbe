//! What the agent knows about itself: counters for its summary line, and, with
//! --metrics-addr, Prometheus metrics and the probes Kubernetes needs:
//! `/healthz` (the process answers) and `/readyz` (a stream is connected and
//! the oldest event not yet delivered is younger than --ready-max-lag).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use hookrelay_proto::Event;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

pub struct AgentMetrics {
    registry: Registry,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub delivery_seconds: Histogram,
    pub retries: Counter,
    pub reconnects: Counter,
    pub connected: Gauge,
    pending: Gauge,
    oldest_pending_seconds: Gauge<f64, AtomicU64>,
    /// Events received and not yet delivered (or failed): (repository, id) →
    /// when they were received by hookrelay, in ms since the epoch. A
    /// redelivery counts from when the agent got it: it is not lag.
    pending_events: Mutex<HashMap<(String, i64), i64>>,
    /// When the stream connected or last brought an event, in ms since the epoch.
    last_activity_ms: std::sync::atomic::AtomicI64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookrelay_agent");
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Events delivered or failed for good, by outcome",
            deliveries.clone(),
        );
        let delivery_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "delivery_duration_seconds",
            "Time from the first attempt to the outcome, retries included",
            delivery_seconds.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Delivery attempts that will be retried",
            retries.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "reconnects",
            "Streams reopened after a failure or loss",
            reconnects.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "stream_connected",
            "1 while the event stream is open",
            connected.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "pending",
            "Events received and not yet delivered",
            pending.clone(),
        );
        let oldest_pending_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest event received and not yet delivered (0 when none)",
            oldest_pending_seconds.clone(),
        );
        // At 0 from the start, so that rates over them exist before the first delivery.
        for outcome in ["delivered", "failed"] {
            let _ = deliveries.get_or_create(&OutcomeLabels { outcome });
        }
        Self {
            registry,
            deliveries,
            delivery_seconds,
            retries,
            reconnects,
            connected,
            pending,
            oldest_pending_seconds,
            pending_events: Mutex::default(),
            last_activity_ms: Default::default(),
        }
    }
}

impl AgentMetrics {
    /// The stream is open (or, with false, closed).
    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
        self.touch();
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the stream connected or last brought an event.
    pub fn idle_for(&self) -> Duration {
        let last = self
            .last_activity_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(last).max(0) as u64)
    }

    pub fn received(&self, event: &Event) {
        self.touch();
        let received = match &event.received_at {
            Some(at) if !event.redelivery => at.seconds * 1000 + i64::from(at.nanos / 1_000_000),
            _ => now_ms(),
        };
        self.pending_events
            .lock()
            .expect("pending events")
            .insert((event.repository_id.clone(), event.id), received);
    }

    pub fn done(&self, event: &Event) {
        self.pending_events
            .lock()
            .expect("pending events")
            .remove(&(event.repository_id.clone(), event.id));
    }

    /// (pending events, age of the oldest).
    pub fn pending(&self) -> (usize, Duration) {
        let pending = self.pending_events.lock().expect("pending events");
        let oldest = pending.values().min().copied();
        let age = oldest.map_or(Duration::ZERO, |at| {
            Duration::from_millis(now_ms().saturating_sub(at).max(0) as u64)
        });
        (pending.len(), age)
    }

    pub fn count(&self, outcome: &'static str) -> u64 {
        self.deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    fn render(&self) -> String {
        let (pending, age) = self.pending();
        self.pending.set(pending as i64);
        self.oldest_pending_seconds.set(age.as_secs_f64());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Ready: a stream is open and nothing has waited longer than `max_lag`.
    fn ready(&self, max_lag: Duration) -> Result<(), String> {
        if self.connected.get() == 0 {
            return Err("no stream is connected".into());
        }
        let (pending, age) = self.pending();
        if age > max_lag {
            return Err(format!(
                "{pending} pending, the oldest for {} s",
                age.as_secs()
            ));
        }
        Ok(())
    }
}

/// Serves /metrics, /healthz and /readyz on `address` until `stop`.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<AgentMetrics>,
    max_lag: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-addr {address}: {e}"))?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let metrics = metrics.clone();
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let (status, body) = match request.uri().path() {
                            "/metrics" => (StatusCode::OK, metrics.render()),
                            "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
                            "/readyz" => match metrics.ready(max_lag) {
                                Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                                Err(why) => (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    format!("not ready: {why}\n"),
                                ),
                            },
                            _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .body(Full::new(Bytes::from(body)))
                                .expect("a valid response"),
                        )
                    }
                });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(io, service);
                let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
            });
        }
    });
    Ok(())
}
