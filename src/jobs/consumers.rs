//! The consumer gauges (stalled, oldest pending), refreshed for every tenant at once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store;
use crate::telemetry::Metrics;

/// How often the consumer gauges are refreshed.
pub const CONSUMER_METRICS_INTERVAL: Duration = Duration::from_secs(15);

/// Refreshes `hookrelay_consumers_stalled` and
/// `hookrelay_consumer_oldest_pending_seconds` with one query over every
/// tenant, until `stop`. The gauges carry no tenant or consumer label, so their
/// cardinality is bounded; GET /v1/consumers is the per-consumer view.
pub async fn consumer_metrics(
    pool: PgPool,
    metrics: Arc<Metrics>,
    stall_threshold: Duration,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(CONSUMER_METRICS_INTERVAL.min(stall_threshold));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        match store::consumer::pending_summary(&pool, stall_threshold).await {
            Ok((stalled, oldest_seconds)) => {
                metrics.consumers_stalled.set(stalled);
                metrics.consumer_oldest_pending_seconds.set(oldest_seconds);
            }
            Err(error) => tracing::warn!(%error, "cannot refresh the consumer metrics"),
        }
    }
}
