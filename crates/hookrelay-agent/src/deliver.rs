//! Delivering to the local target: one attempt replays an event with its
//! original headers and the exact body bytes, so the target's own signature
//! check passes; `Deliverer` retries until the target takes or refuses it, then
//! queues the ack.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};

use crate::ack::{self, PendingAck};
use crate::{metrics, output};
use hookrelay_proto::{AckOutcome, Event};

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt {
    Delivered(StatusCode),
    /// Connection errors, 5xx, 408 and 429: try again, after `retry_after` if the target said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other 4xx: the target will never take it.
    Failed {
        status: StatusCode,
        reason: String,
    },
}

/// The longest Retry-After honoured, so a confused target cannot park the agent for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Replays `event` once; `traceparent` (from --send-traceparent) replaces any
/// the webhook carried.
pub async fn attempt(
    http: &reqwest::Client,
    target: &url::Url,
    event: &Event,
    traceparent: Option<&str>,
) -> Attempt {
    let mut request = http.post(target.clone()).body(event.body.clone());
    for header in &event.headers {
        if hookrelay_proto::rules::never_replayed(&header.name)
            || (traceparent.is_some() && header.name.eq_ignore_ascii_case("traceparent"))
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_str(&header.value),
        ) {
            request = request.header(name, value);
        }
    }
    if let Some(traceparent) = traceparent
        && let Ok(value) = HeaderValue::from_str(traceparent)
    {
        request = request.header("traceparent", value);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            return Attempt::Retry {
                reason: unreachable_reason(&error),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(parse_retry_after);
    if status.is_success() {
        Attempt::Delivered(status)
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Attempt::Retry {
            reason: format!("the target answered {status}"),
            retry_after,
        }
    } else {
        Attempt::Failed {
            status,
            reason: format!("the target answered {status}"),
        }
    }
}

/// Retry-After is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Why the target could not be reached, naming it, without reqwest's "error
/// sending request for url (…)" wrapper: the innermost cause says it best
/// ("Connection refused").
fn unreachable_reason(error: &reqwest::Error) -> String {
    let target = error
        .url()
        .map(|url| format!(" {}", url.as_str()))
        .unwrap_or_default();
    if error.is_timeout() {
        return format!("the target{target} did not answer in time");
    }
    format!(
        "cannot reach the target{target}: {}",
        hookrelay_telemetry::connection_failure(error)
    )
}

/// What every delivery lane shares.
pub(crate) struct Deliverer {
    pub(crate) http: reqwest::Client,
    pub(crate) target: url::Url,
    pub(crate) metrics: Arc<metrics::AgentMetrics>,
    pub(crate) acks: ack::AckSender,
    pub(crate) send_traceparent: bool,
    pub(crate) shutdown: CancellationToken,
}

impl Deliverer {
    /// Delivers one event until the target takes it or refuses it for good, then
    /// queues its ack. False if shutdown came while it was waiting to retry.
    ///
    /// The delivery is a span continuing the trace of the webhook's ingest (the
    /// event's `traceparent`), exported when OTLP is configured.
    pub(crate) async fn deliver(&self, event: Event) -> bool {
        let span = tracing::info_span!(
            "deliver",
            otel.name = format!("deliver {}", event.event_type),
            otel.kind = "client",
            event_id = event.id,
            repository_id = event.repository_id,
            consumer = tracing::field::Empty,
        );
        if let Some(parent) = &event.traceparent {
            hookrelay_telemetry::continue_trace(&span, parent);
        }
        // The target's trace continues this delivery's span, or the ingest's
        // when no traces are exported here.
        let traceparent = self
            .send_traceparent
            .then(|| hookrelay_telemetry::traceparent(&span).or_else(|| event.traceparent.clone()));
        self.deliver_in(event, traceparent.flatten())
            .instrument(span)
            .await
    }

    async fn deliver_in(&self, event: Event, traceparent: Option<String>) -> bool {
        let started = Instant::now();
        let mut backoff = delivery_backoff();
        let mut attempts = 0u32;
        let repository = if event.repository_name.is_empty() {
            event.repository_id.as_str()
        } else {
            event.repository_name.as_str()
        };
        let outcome = loop {
            attempts += 1;
            match attempt(&self.http, &self.target, &event, traceparent.as_deref()).await {
                Attempt::Delivered(status) => break Ok(status),
                Attempt::Failed { status, reason } => break Err((status, reason)),
                Attempt::Retry {
                    reason,
                    retry_after,
                } => {
                    self.metrics.retries.inc();
                    let delay = retry_after
                        .unwrap_or_else(|| backoff.next().unwrap_or(Duration::from_secs(30)));
                    tracing::warn!(
                        event_id = event.id,
                        repository,
                        event_type = event.event_type,
                        branch = event.branch,
                        tag = event.tag,
                        attempt = attempts,
                        reason,
                        delay_ms = delay.as_millis() as u64,
                        message = output::message::RETRYING,
                    );
                    tokio::select! {
                        () = self.shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.delivery_seconds.observe(elapsed_ms / 1000.0);
        self.metrics.done(&event);
        // The fields of a delivery's outcome line, at its level, plus `$extra`.
        macro_rules! outcome_line {
            ($level:expr, $status:expr, $($extra:tt)*) => {
                tracing::event!(
                    $level,
                    event_id = event.id,
                    repository,
                    repository_id = event.repository_id,
                    event_type = event.event_type,
                    branch = event.branch,
                    tag = event.tag,
                    delivery_id = event.delivery_id,
                    status = $status.as_u16(),
                    attempts,
                    redelivery = event.redelivery,
                    $($extra)*
                )
            };
        }
        let (outcome, failure_reason, status_code) = match outcome {
            Ok(status) => {
                self.metrics
                    .deliveries
                    .get_or_create(&metrics::OutcomeLabels {
                        outcome: "delivered",
                    })
                    .inc();
                outcome_line!(
                    tracing::Level::INFO,
                    status,
                    elapsed_ms,
                    message = output::message::DELIVERED
                );
                (AckOutcome::Delivered, String::new(), status)
            }
            Err((status, reason)) => {
                self.metrics
                    .deliveries
                    .get_or_create(&metrics::OutcomeLabels { outcome: "failed" })
                    .inc();
                outcome_line!(
                    tracing::Level::WARN,
                    status,
                    reason,
                    message = output::message::FAILED
                );
                (AckOutcome::Failed, reason, status)
            }
        };
        self.acks
            .push(PendingAck {
                repository_id: event.repository_id,
                event_id: event.id,
                outcome,
                failure_reason,
                redelivery_id: event.redelivery_id,
                status_code: status_code.as_u16(),
                attempts,
                duration_ms: elapsed_ms as u32,
            })
            .await;
        true
    }
}

fn delivery_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("99999")),
            Some(MAX_RETRY_AFTER)
        );
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let parsed = parse_retry_after(&HeaderValue::from_str(&soon).unwrap()).unwrap();
        assert!(
            parsed > Duration::from_secs(28) && parsed <= Duration::from_secs(30),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}
