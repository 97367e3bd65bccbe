//! Follows every tenant's stored event bytes, for the stored-bytes quota.
//!
//! A whole count of the event table grows with every tenant's retained events,
//! so it runs only at start and every `WHOLE_COUNT_EVERY`. In between,
//! each read takes what changed since the last one's snapshot: the events of
//! the transactions it did not see, less the bytes the deletions among them
//! recorded (`store::quota::stored_event_bytes_since`). The whole count puts
//! right what changes cannot show: a release that does not record its
//! deletions (N-1 during an upgrade), a repository deleted before its last
//! events were read.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::server::StoredBytes;
use crate::store;

/// How often the whole table is counted, whatever the interval of reads.
const WHOLE_COUNT_EVERY: Duration = Duration::from_secs(3600);

pub async fn count_stored_bytes(
    pool: PgPool,
    stored: Arc<StoredBytes>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    // The snapshot of the last read, and when the last whole count ran.
    let mut last: Option<(String, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        stored.reading();
        let read = match &last {
            Some((since, counted)) if counted.elapsed() < WHOLE_COUNT_EVERY => {
                store::quota::stored_event_bytes_since(&pool, since)
                    .await
                    .map(|read| {
                        stored.change(read.tenants);
                        (read.snapshot, *counted)
                    })
            }
            _ => store::quota::stored_event_bytes(&pool).await.map(|read| {
                stored.replace(
                    read.tenants
                        .into_iter()
                        .map(|(tenant, bytes)| (tenant, u64::try_from(bytes).unwrap_or(0))),
                );
                (read.snapshot, tokio::time::Instant::now())
            }),
        };
        match read {
            Ok(read) => last = Some(read),
            Err(error) => tracing::warn!(%error, "cannot read the tenants' stored event bytes"),
        }
    }
}
