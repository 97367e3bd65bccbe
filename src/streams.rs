//! What open event streams share on one server.
//!
//! - **Wake-ups.** One LISTEN connection per server receives the NOTIFY that
//!   every ingest commit sends (the newest event id) and publishes it on a
//!   `watch`. Streams wait on the watch and re-read from their cursor, so an
//!   event committed on any replica reaches every stream within milliseconds,
//!   with no polling. After the listener reconnects (notifications may have
//!   been lost meanwhile) every stream is woken to re-read.
//! - **A shared tail.** On each wake-up the listener reads the new events once,
//!   for every tenant, into a bounded in-memory tail. A stream whose cursor lies
//!   inside the tail filters it instead of querying the database, so one event
//!   reaching 10,000 streams costs one query, not 10,000. The tail holds exactly
//!   the committed events with ids in (low, high]: ids appear in commit order, so
//!   reading "after high" misses nothing. Older cursors read from the database.
//! - **Revocation.** Every open stream is registered with its client id. A
//!   background check looks up all of them in one query every two seconds and
//!   cancels the streams of deleted clients.
//! - **Signals.** Seeks, redeliveries and deleted consumers reach the open
//!   streams of that consumer on every server through a second NOTIFY channel
//!   (`store::consumer::CONTROL_CHANNEL`), sent by those rare operations only.
//!   If the LISTEN connection drops, every stream looks for pending
//!   redeliveries once it is back; a seek lost that way takes effect when the
//!   agent next reconnects (the cursor is in the database).
//! - **Connected streams** are rows in `consumer_stream`, written when a stream
//!   opens and closes and refreshed by a heartbeat, so every replica's API sees
//!   every replica's streams, and a crashed server's rows go stale.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use prometheus_client::metrics::gauge::Gauge;

use crate::domain::{ClientId, ConsumerName, EventId, TenantId};
use crate::store;
use crate::store::consumer::{CONTROL_CHANNEL, Change, STREAM_HEARTBEAT, Signal};
use crate::store::event::{NOTIFY_CHANNEL, StoredEvent};

/// The most events, and bytes of bodies, the shared tail keeps.
const TAIL_EVENTS: usize = 10_000;
const TAIL_BYTES: usize = 64 * 1024 * 1024;
const TAIL_FETCH: i64 = 1_000;

/// The committed events with ids in (low, high], in id order.
#[derive(Debug, Default)]
struct Tail {
    events: VecDeque<Arc<StoredEvent>>,
    low: EventId,
    high: EventId,
    bytes: usize,
}

/// How often the listener checks that no commit went by without a wake-up.
const BACKSTOP: Duration = Duration::from_secs(1);

/// How often open streams' clients are checked for revocation.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct StreamHub {
    latest: watch::Sender<EventId>,
    tail: std::sync::RwLock<Tail>,
    registry: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Names this server's rows in `consumer_stream`.
    server_id: uuid::Uuid,
    pool: PgPool,
    streams_open: Gauge,
}

#[derive(Debug)]
struct Entry {
    client: ClientId,
    tenant: TenantId,
    /// None for a watch (the console): it takes no signals.
    consumer: Option<ConsumerName>,
    revoked: CancellationToken,
    signals: Arc<Signals>,
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
        self.hub
            .registry
            .lock()
            .expect("stream registry")
            .remove(&self.id);
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
            latest: watch::channel(EventId::ZERO).0,
            // Covers nothing until the listener knows the newest id.
            tail: std::sync::RwLock::new(Tail {
                low: EventId::MAX,
                high: EventId::MAX,
                ..Tail::default()
            }),
            registry: Mutex::default(),
            next_id: AtomicU64::new(0),
            server_id: uuid::Uuid::new_v4(),
            pool,
            streams_open: metrics.streams_open.clone(),
        })
    }

    pub fn server_id(&self) -> uuid::Uuid {
        self.server_id
    }

    /// Changes whenever events may have committed.
    pub fn subscribe(&self) -> watch::Receiver<EventId> {
        self.latest.subscribe()
    }

    /// Registers an open stream; the caller records `stream_id` in the
    /// database (`store::consumer::open_stream`).
    pub fn register(
        self: &Arc<Self>,
        client: ClientId,
        tenant: TenantId,
        consumer: ConsumerName,
    ) -> StreamRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        let signals = Arc::new(Signals::default());
        self.registry.lock().expect("stream registry").insert(
            id,
            Entry {
                client,
                tenant,
                consumer: Some(consumer),
                revoked: revoked.clone(),
                signals: signals.clone(),
            },
        );
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
    /// when its client is deleted, but no consumer, no row, no signals.
    pub fn register_watch(
        self: &Arc<Self>,
        client: ClientId,
        tenant: TenantId,
    ) -> WatchRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        self.registry.lock().expect("stream registry").insert(
            id,
            Entry {
                client,
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
    fn dispatch(&self, signal: Option<Signal>) {
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

    /// The tail's events after `floor` and the id the tail is complete up to, if
    /// the tail covers everything after `floor`; None: read from the database.
    pub fn cached_after(&self, floor: EventId) -> Option<(Vec<Arc<StoredEvent>>, EventId)> {
        let tail = self.tail.read().expect("tail lock");
        if floor < tail.low || tail.high == EventId::MAX {
            return None;
        }
        let start = tail.events.partition_point(|e| e.event_id <= floor);
        Some((tail.events.range(start..).cloned().collect(), tail.high))
    }

    /// The id up to which every event has committed, as far as the tail knows (0
    /// when it knows nothing). Read before a database query: a complete answer
    /// to that query has seen everything up to here.
    pub fn committed_high(&self) -> EventId {
        let tail = self.tail.read().expect("tail lock");
        if tail.high == EventId::MAX {
            EventId::ZERO
        } else {
            tail.high
        }
    }

    /// Forgets the tail and restarts it after `newest` (after a (re)connect,
    /// notifications may have been lost).
    fn reset_tail(&self, newest: EventId) {
        *self.tail.write().expect("tail lock") = Tail {
            low: newest,
            high: newest,
            ..Tail::default()
        };
    }

    /// Reads every event committed after the tail's end into it; returns the new end.
    async fn extend_tail(
        &self,
        pool: &PgPool,
        notified: EventId,
    ) -> Result<EventId, crate::error::Error> {
        let mut high = self.tail.read().expect("tail lock").high;
        loop {
            let events = store::event::all_after(pool, high, TAIL_FETCH).await?;
            let complete = (events.len() as i64) < TAIL_FETCH;
            let mut tail = self.tail.write().expect("tail lock");
            if tail.high != high {
                // Reset meanwhile by a reconnect: start over from its end.
                return Ok(tail.high);
            }
            for event in events {
                tail.bytes += event.body.len();
                tail.high = event.event_id;
                tail.events.push_back(Arc::new(event));
            }
            if complete {
                // Everything committed up to the notified id has been read.
                tail.high = tail.high.max(notified);
            }
            while tail.events.len() > TAIL_EVENTS || tail.bytes > TAIL_BYTES {
                let Some(evicted) = tail.events.pop_front() else {
                    break;
                };
                tail.bytes -= evicted.body.len();
                tail.low = evicted.event_id;
            }
            high = tail.high;
            if complete {
                return Ok(high);
            }
        }
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

    /// Publishes committed event ids until `stop`.
    pub async fn listen(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener
                    .listen_all([NOTIFY_CHANNEL, CONTROL_CHANNEL])
                    .await?;
                // Signals sent while the listener was away are lost: every
                // stream looks for pending redeliveries once.
                self.dispatch(None);
                // Anything committed before LISTEN took effect is found by re-reading.
                let newest = store::event::newest_id(&pool)
                    .await
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                self.reset_tail(newest);
                self.latest
                    .send_modify(|latest| *latest = (*latest).max(newest));
                let mut backstop = tokio::time::interval(BACKSTOP);
                let mut stalled_at: Option<EventId> = None;
                loop {
                    let notification = tokio::select! {
                        // `recv` would reconnect silently, losing notifications
                        // without the tail knowing; end and start over instead.
                        notification = listener.try_recv() => Some(notification?.ok_or_else(|| {
                            sqlx::Error::Protocol("the LISTEN connection was lost".into())
                        })?),
                        _ = backstop.tick() => None,
                    };
                    let Some(notification) = notification else {
                        // A backstop, not the delivery path: under load commits are
                        // always a moment ahead of their NOTIFY, but if the announced
                        // id has not moved for a whole tick, a wake-up went missing.
                        let newest = store::event::newest_id(&pool)
                            .await
                            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                        let announced = *self.latest.borrow();
                        if newest > announced {
                            if stalled_at == Some(announced) {
                                tracing::warn!(
                                    newest = newest.get(),
                                    announced = announced.get(),
                                    "events committed without a wake-up; catching up"
                                );
                            }
                            let high = self
                                .extend_tail(&pool, newest)
                                .await
                                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                            self.latest
                                .send_modify(|latest| *latest = (*latest).max(high));
                        }
                        stalled_at = Some(*self.latest.borrow());
                        continue;
                    };
                    // Coalesce a burst of commits into one read.
                    let mut notified = EventId::ZERO;
                    let mut next = Some(notification);
                    while let Some(notification) = next {
                        if notification.channel() == CONTROL_CHANNEL {
                            match serde_json::from_str::<Signal>(notification.payload()) {
                                Ok(signal) => self.dispatch(Some(signal)),
                                Err(error) => {
                                    tracing::warn!(%error, "ignoring a malformed control signal")
                                }
                            }
                        } else {
                            notified = notified
                                .max(EventId::new(notification.payload().parse().unwrap_or(0)));
                        }
                        next = listener.next_buffered();
                    }
                    if notified == EventId::ZERO {
                        continue;
                    }
                    let high = if self.open_streams() == 0 {
                        // Nobody reads the tail: restart it after the newest id
                        // instead of reading bodies back. A stream that opens later
                        // reads from the database first (see `committed_high`).
                        self.reset_tail(notified);
                        notified
                    } else {
                        self.extend_tail(&pool, notified)
                            .await
                            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?
                    };
                    self.latest.send_if_modified(|latest| {
                        let newer = high > *latest;
                        *latest = (*latest).max(high);
                        newer
                    });
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = connected => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "event listener lost its connection; reconnecting");
                        // Until it is back, streams read from the database.
                        *self.tail.write().expect("tail lock") = Tail { low: EventId::MAX, high: EventId::MAX, ..Tail::default() };
                        self.latest.send_modify(|_| {});
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
                    .map(|entry| entry.client.as_str().to_owned())
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
                    for entry in registry.values() {
                        if !existing.contains(entry.client.as_str()) {
                            entry.revoked.cancel();
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
