//! What open event streams share on one server.
//!
//! - **Wake-ups.** One LISTEN connection per server receives the NOTIFY that
//!   every ingest commit sends (the newest event id) and publishes it on a
//!   `watch`. Streams wait on the watch and re-read from their cursor, so an
//!   event committed on any replica reaches every stream within milliseconds,
//!   with no polling. After the listener reconnects (notifications may have
//!   been lost meanwhile) every stream is woken to re-read.
//! - **Revocation.** Every open stream is registered with its client id. A
//!   background check looks up all of them in one query every two seconds and
//!   cancels the streams of deleted clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::ClientId;
use crate::store;
use crate::store::event::NOTIFY_CHANNEL;

/// How often open streams' clients are checked for revocation.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct StreamHub {
    latest: watch::Sender<i64>,
    registry: Mutex<HashMap<u64, (ClientId, CancellationToken)>>,
    next_id: AtomicU64,
}

/// An open stream's registration; dropping it unregisters the stream.
#[derive(Debug)]
pub struct StreamRegistration {
    hub: Arc<StreamHub>,
    id: u64,
    /// Cancelled when the stream's client is deleted.
    pub revoked: CancellationToken,
}

impl Drop for StreamRegistration {
    fn drop(&mut self) {
        self.hub
            .registry
            .lock()
            .expect("stream registry")
            .remove(&self.id);
    }
}

impl StreamHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            latest: watch::channel(0).0,
            registry: Mutex::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// Changes whenever events may have committed.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.latest.subscribe()
    }

    pub fn register(self: &Arc<Self>, client_id: ClientId) -> StreamRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        self.registry
            .lock()
            .expect("stream registry")
            .insert(id, (client_id, revoked.clone()));
        StreamRegistration {
            hub: self.clone(),
            id,
            revoked,
        }
    }

    pub fn open_streams(&self) -> usize {
        self.registry.lock().expect("stream registry").len()
    }

    /// Publishes committed event ids until `stop`.
    pub async fn listen(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(NOTIFY_CHANNEL).await?;
                // Anything committed before LISTEN took effect is found by re-reading.
                let newest = store::event::newest_id(&pool)
                    .await
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                self.latest
                    .send_modify(|latest| *latest = (*latest).max(newest));
                loop {
                    let notification = listener.recv().await?;
                    if let Ok(id) = notification.payload().parse::<i64>() {
                        self.latest.send_if_modified(|latest| {
                            let newer = id > *latest;
                            *latest = (*latest).max(id);
                            newer
                        });
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = connected => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "event listener lost its connection; reconnecting");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Cancels the streams of deleted clients, every `REVOCATION_CHECK`, until `stop`.
    pub async fn check_revocations(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let mut interval = tokio::time::interval(REVOCATION_CHECK);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let clients: Vec<String> = {
                let registry = self.registry.lock().expect("stream registry");
                let mut ids: Vec<String> = registry
                    .values()
                    .map(|(c, _)| c.as_str().to_owned())
                    .collect();
                ids.sort();
                ids.dedup();
                ids
            };
            if clients.is_empty() {
                continue;
            }
            match store::client::existing(&pool, &clients).await {
                Ok(existing) => {
                    let registry = self.registry.lock().expect("stream registry");
                    for (client, token) in registry.values() {
                        if !existing.contains(client.as_str()) {
                            token.cancel();
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot check open streams for revoked clients")
                }
            }
        }
    }
}
