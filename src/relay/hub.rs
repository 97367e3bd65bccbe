//! The hub of one server's open streams and watches: the registry (who is
//! connected, for which consumer, under which client or trusted issuer), the
//! signals (seeks, redeliveries, deletions) handed to them, and the
//! `consumer_stream` rows other replicas read. The shared tail (`super::tail`),
//! the wake-ups (`super::wakeups`) and revocation (`super::revocation`) are its
//! other parts; `super` describes how they fit together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::tail::Tail;
use super::wakeups::OthersQuiet;
use crate::auth::Principal;
use crate::domain::{ConsumerName, Horizon, TenantId};
use crate::store;
use crate::store::consumer::{Change, STREAM_HEARTBEAT, Signal};
use crate::telemetry::SourceLabels;

#[derive(Debug)]
pub struct StreamHub {
    /// The tail's horizon, published whenever it moves: streams and watches
    /// wait on it.
    pub(super) latest: watch::Sender<Horizon>,
    /// This server committed events: wake the listener.
    pub(super) local_commits: tokio::sync::Notify,
    /// This server committed events: tell the other servers.
    pub(super) to_announce: tokio::sync::Notify,
    pub(super) others_quiet: OthersQuiet,
    pub(super) tail: std::sync::RwLock<Tail>,
    pub(super) registry: Mutex<HashMap<u64, Entry>>,
    pub(super) next_id: AtomicU64,
    /// Names this server's rows in `consumer_stream`.
    pub(super) server_id: uuid::Uuid,
    pub(super) pool: PgPool,
    pub(super) streams_open: Gauge,
    pub(super) tail_events: Family<SourceLabels, Counter>,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) principal: Principal,
    pub(super) tenant: TenantId,
    /// None for a watch (the console): it takes no signals.
    pub(super) consumer: Option<ConsumerName>,
    pub(super) revoked: CancellationToken,
    pub(super) signals: Arc<Signals>,
}

/// Changes waiting for one stream to act on them.
#[derive(Debug, Default)]
pub struct Signals {
    changes: Mutex<Vec<Change>>,
    waiting: std::sync::atomic::AtomicBool,
    arrived: tokio::sync::Notify,
}

impl Signals {
    fn push(&self, change: Change) {
        self.changes.lock().expect("signals").push(change);
        self.waiting.store(true, Ordering::Release);
        self.arrived.notify_one();
    }

    /// Whether a change waits: checked before every event sent.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn take(&self) -> Vec<Change> {
        self.waiting.store(false, Ordering::Release);
        std::mem::take(&mut *self.changes.lock().expect("signals"))
    }

    /// Completes once a change was pushed since the last wait.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }
}

/// An open stream's registration; dropping it unregisters the stream.
#[derive(Debug)]
pub struct StreamRegistration {
    hub: Arc<StreamHub>,
    id: u64,
    /// This stream's row in `consumer_stream`.
    pub stream_id: uuid::Uuid,
    /// Cancelled when the stream's client is deleted.
    pub revoked: CancellationToken,
    pub signals: Arc<Signals>,
}

impl Drop for StreamRegistration {
    fn drop(&mut self) {
        let entry = self
            .hub
            .registry
            .lock()
            .expect("stream registry")
            .remove(&self.id);
        if let Some(entry) = entry {
            self.hub.stop_reading(entry.tenant);
        }
        self.hub.streams_open.dec();
        let (pool, stream_id) = (self.hub.pool.clone(), self.stream_id);
        tokio::spawn(async move {
            if let Err(error) = store::consumer::close_stream(&pool, stream_id).await {
                // Its row goes stale without heartbeats; it stops counting then.
                tracing::warn!(%error, "cannot record a closed stream");
            }
        });
    }
}

/// A watch's registration; dropping it unregisters the watch.
#[derive(Debug)]
pub struct WatchRegistration {
    hub: Arc<StreamHub>,
    id: u64,
    /// Cancelled when the watch's client is deleted.
    pub revoked: CancellationToken,
}

impl Drop for WatchRegistration {
    fn drop(&mut self) {
        self.hub
            .registry
            .lock()
            .expect("stream registry")
            .remove(&self.id);
    }
}

impl StreamHub {
    pub fn new(pool: PgPool, metrics: &crate::telemetry::Metrics) -> Arc<Self> {
        Arc::new(Self {
            latest: watch::channel(Horizon::ZERO).0,
            local_commits: tokio::sync::Notify::new(),
            to_announce: tokio::sync::Notify::new(),
            others_quiet: OthersQuiet::default(),
            // Covers nothing until the listener knows a horizon.
            tail: std::sync::RwLock::default(),
            registry: Mutex::default(),
            next_id: AtomicU64::new(0),
            server_id: uuid::Uuid::new_v4(),
            pool,
            streams_open: metrics.streams_open.clone(),
            tail_events: metrics.tail_events.clone(),
        })
    }

    pub fn server_id(&self) -> uuid::Uuid {
        self.server_id
    }

    /// Registers an open stream; the caller records `stream_id` in the
    /// database (`store::consumer::open_stream`).
    pub fn register(
        self: &Arc<Self>,
        principal: Principal,
        tenant: TenantId,
        consumer: ConsumerName,
    ) -> StreamRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        let signals = Arc::new(Signals::default());
        self.registry.lock().expect("stream registry").insert(
            id,
            Entry {
                principal,
                tenant,
                consumer: Some(consumer),
                revoked: revoked.clone(),
                signals: signals.clone(),
            },
        );
        self.start_reading(tenant);
        self.streams_open.inc();
        StreamRegistration {
            hub: self.clone(),
            id,
            stream_id: uuid::Uuid::new_v4(),
            revoked,
            signals,
        }
    }

    /// Registers a watch (WatchEvents and the like): cancelled like a stream
    /// when its client or trusted issuer is deleted, but no consumer, no row, no signals.
    pub fn register_watch(
        self: &Arc<Self>,
        principal: Principal,
        tenant: TenantId,
    ) -> WatchRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        self.registry.lock().expect("stream registry").insert(
            id,
            Entry {
                principal,
                tenant,
                consumer: None,
                revoked: revoked.clone(),
                signals: Arc::default(),
            },
        );
        WatchRegistration {
            hub: self.clone(),
            id,
            revoked,
        }
    }

    /// Hands a signal to the open streams of its consumer; None: to every stream.
    pub(super) fn dispatch(&self, signal: Option<Signal>) {
        let registry = self.registry.lock().expect("stream registry");
        for entry in registry.values() {
            let Some(consumer) = &entry.consumer else {
                continue;
            };
            match &signal {
                Some(signal)
                    if entry.tenant == signal.tenant_id && consumer.as_str() == signal.consumer =>
                {
                    entry.signals.push(signal.change.clone());
                }
                Some(_) => {}
                None => entry.signals.push(Change::Redeliver),
            }
        }
    }

    /// Refreshes this server's rows in `consumer_stream` every
    /// `STREAM_HEARTBEAT`, until `stop`.
    pub async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let mut interval = tokio::time::interval(STREAM_HEARTBEAT);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            if let Err(error) = store::consumer::heartbeat(&self.pool, self.server_id).await {
                tracing::warn!(%error, "cannot refresh the open streams' heartbeat");
            }
        }
    }

    /// The watches `tenant` holds open on this server.
    pub fn watches_of(&self, tenant: TenantId) -> usize {
        self.registry
            .lock()
            .expect("stream registry")
            .values()
            .filter(|entry| entry.consumer.is_none() && entry.tenant == tenant)
            .count()
    }

    /// Open event streams (watches not counted: they do not read the tail).
    pub fn open_streams(&self) -> usize {
        self.registry
            .lock()
            .expect("stream registry")
            .values()
            .filter(|entry| entry.consumer.is_some())
            .count()
    }
}
