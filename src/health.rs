//! The server's health: whether it may take traffic (not draining, the
//! database answers, and ingest commits are not failing for a storage reason:
//! a full disk lets `select 1` through while every commit fails), reported to
//! grpc.health.v1 by `report` and read by `/readyz` (`http::probes`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::error::{self, Error};
use crate::store;
use crate::telemetry::Metrics;

/// How long after a storage failure readiness stays 503 unless a commit
/// succeeds first. Past it, the replica takes traffic again, which is how it
/// finds out whether storage is back.
const STORAGE_COOL_DOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct StorageHealth {
    last_failure: Mutex<Option<Instant>>,
}

impl StorageHealth {
    /// Records an ingest's outcome.
    pub fn record<T>(&self, outcome: &Result<T, Error>) {
        let mut last_failure = self.last_failure.lock().expect("not poisoned");
        match outcome {
            Ok(_) => {
                if last_failure.take().is_some() {
                    tracing::warn!("ingest commits succeed again");
                }
            }
            Err(error) if error::storage_failure(error) => {
                if last_failure.is_none() {
                    tracing::error!(
                        %error,
                        "ingest commits fail for a storage reason: not ready"
                    );
                }
                *last_failure = Some(Instant::now());
            }
            Err(_) => {}
        }
    }

    /// Whether recent commits failed for a storage reason and none succeeded since.
    pub fn failing(&self) -> bool {
        self.last_failure
            .lock()
            .expect("not poisoned")
            .is_some_and(|at| at.elapsed() < STORAGE_COOL_DOWN)
    }
}

/// grpc.health.v1: SERVING while the database answers; NOT_SERVING otherwise, and
/// from the moment the server starts draining. Also `hookrelay_database_up`.
pub async fn report(
    pool: PgPool,
    storage: Arc<StorageHealth>,
    reporter: tonic_health::server::HealthReporter,
    metrics: Arc<Metrics>,
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
            error::database_answered();
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
