//! Retention: deletes events older than HOOKRELAY_RETENTION, device
//! authorizations a day after they expired, and records of deleted event bytes
//! (`store::quota`) after a day.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store;

/// Deletes events older than `retention`, every quarter of it (at most every minute).
pub async fn retention_job(pool: PgPool, retention: Duration, stop: CancellationToken) {
    let every = (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let cutoff = time::OffsetDateTime::now_utc() - retention;
        match store::event::delete_expired(&pool, cutoff, 10_000).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "retention deleted expired events"),
            Err(error) => tracing::warn!(%error, "retention job failed"),
        }
        if let Err(error) = store::device::delete_expired(&pool).await {
            tracing::warn!(%error, "deleting expired device authorizations failed");
        }
        if let Err(error) = store::quota::forget_old_deletions(&pool).await {
            tracing::warn!(%error, "forgetting old records of deleted event bytes failed");
        }
    }
}
