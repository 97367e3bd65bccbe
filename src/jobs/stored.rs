//! Counts every tenant's stored event bytes, for the stored-bytes quota.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::server::StoredBytes;
use crate::store;

/// How often the event table is counted: one pass reading each row's body
/// size (not its body).
const COUNT_EVERY: Duration = Duration::from_secs(60);

pub async fn count_stored_bytes(pool: PgPool, stored: Arc<StoredBytes>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(COUNT_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        match store::quota::stored_event_bytes(&pool).await {
            Ok(counted) => stored.replace(
                counted
                    .into_iter()
                    .map(|(tenant, bytes)| (tenant, u64::try_from(bytes).unwrap_or(0))),
            ),
            Err(error) => tracing::warn!(%error, "cannot count the tenants' stored event bytes"),
        }
    }
}
