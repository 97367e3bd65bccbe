//! Revocation: the open streams and watches of a deleted client or trusted
//! issuer (or of a suspended tenant) are cancelled within seconds.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::StreamHub;
use crate::auth::Principal;
use crate::store;

/// How often open streams' clients are checked for revocation.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(2);

impl StreamHub {
    /// Cancels the streams of deleted clients and trusted issuers (and of
    /// suspended tenants), every `REVOCATION_CHECK`, until `stop`.
    pub async fn check_revocations(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let mut interval = tokio::time::interval(REVOCATION_CHECK);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let (mut clients, mut issuers) = (Vec::new(), Vec::new());
            for entry in self.registry.lock().expect("stream registry").values() {
                match &entry.principal {
                    Principal::Client(id) => clients.push(id.as_str().to_owned()),
                    Principal::Workload { trusted_issuer, .. } => issuers.push(*trusted_issuer),
                }
            }
            clients.sort();
            clients.dedup();
            issuers.sort();
            issuers.dedup();
            if clients.is_empty() && issuers.is_empty() {
                continue;
            }
            let existing = async {
                let clients = if clients.is_empty() {
                    Default::default()
                } else {
                    store::client::existing(&pool, &clients).await?
                };
                let issuers = if issuers.is_empty() {
                    Default::default()
                } else {
                    store::trusted_issuer::existing(&pool, &issuers).await?
                };
                Ok::<_, crate::error::Error>((clients, issuers))
            };
            match existing.await {
                Ok((clients, issuers)) => {
                    let registry = self.registry.lock().expect("stream registry");
                    for entry in registry.values() {
                        let exists = match &entry.principal {
                            Principal::Client(id) => clients.contains(id.as_str()),
                            Principal::Workload { trusted_issuer, .. } => {
                                issuers.contains(trusted_issuer)
                            }
                        };
                        if !exists {
                            entry.revoked.cancel();
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot check open streams for revocations")
                }
            }
        }
    }
}
