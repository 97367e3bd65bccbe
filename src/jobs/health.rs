use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::store;

/// grpc.health.v1: SERVING while the database answers; NOT_SERVING otherwise, and
/// from the moment the server starts draining. Also `hookrelay_database_up`.
pub async fn report_health(
    pool: PgPool,
    storage: Arc<crate::health::StorageHealth>,
    reporter: tonic_health::server::HealthReporter,
    metrics: Arc<crate::telemetry::Metrics>,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    const SERVICE: &str = "hookrelay.v1.EventService";
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = draining.cancelled(), if !draining.is_cancelled() => {}
            _ = interval.tick() => {}
        }
        let answered = store::ping(&pool).await;
        metrics.database_up.set(i64::from(answered));
        if answered {
            crate::error::database_answered();
        }
        let status = if !draining.is_cancelled() && answered && !storage.failing() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(SERVICE, status).await;
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(SERVICE, ServingStatus::NotServing)
        .await;
}
