//! What open event streams share on one server.
//!
//! - **Wake-ups.** A server that commits events wakes its own streams at once
//!   (`committed`) and tells the other servers with a NOTIFY sent *after* the
//!   commit, from a connection of its own (`announce`): at most one in flight,
//!   so a burst of commits costs one NOTIFY, and no ingest transaction takes
//!   PostgreSQL's database-wide notification lock. One LISTEN connection per
//!   server receives the other servers' wake-ups, so an event committed on any
//!   replica reaches every stream within milliseconds, with no polling. After
//!   the listener reconnects (wake-ups may have been lost meanwhile) every
//!   stream is woken to re-read, and a backstop re-reads every second.
//! - **A shared tail.** On each wake-up the listener reads the new events of
//!   the tenants with open streams on this server, once, into a bounded
//!   in-memory tail; other tenants' events are not read. A stream whose place
//!   lies inside the tail filters it instead of querying the database, so one
//!   event reaching 10,000 streams costs one query, not 10,000. The tail holds
//!   exactly the committed events of its tenants with transactions in
//!   [low, high), where high is a snapshot horizon (see `crate::store::event`):
//!   reading on from high misses nothing. A tenant's events are held from the
//!   first read after its first stream opened; until then, and for older
//!   places, streams read from the database.
//! - **Held back.** An event can commit while an older transaction is still
//!   running; it is read once that one ends. Until then the listener re-reads
//!   after a few milliseconds (doubling up to `HELD_BACK_MAX`), and it warns
//!   when one transaction holds delivery back for long.
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

use crate::auth::Principal;
use crate::domain::{ConsumerName, EventId, Horizon, TenantId};
use crate::store;
use crate::store::consumer::{CONTROL_CHANNEL, Change, STREAM_HEARTBEAT, Signal};
use crate::store::event::{NOTIFY_CHANNEL, StoredEvent};

/// The most events, and bytes of bodies, the shared tail keeps.
const TAIL_EVENTS: usize = 10_000;
const TAIL_BYTES: usize = 64 * 1024 * 1024;
const TAIL_FETCH: i64 = 1_000;

/// The committed events of `tenants` with transactions in [low, high), in
/// commit order: (transaction, id).
#[derive(Debug, Default)]
struct Tail {
    events: VecDeque<Arc<StoredEvent>>,
    low: Horizon,
    high: Horizon,
    /// False until the listener has read a horizon, and while it reconnects.
    known: bool,
    bytes: usize,
    /// Bumped whenever the tail restarts: a read begun before is dropped.
    generation: u64,
    tenants: HashMap<TenantId, Covered>,
}

/// A tenant the tail reads.
#[derive(Debug, Default)]
struct Covered {
    streams: usize,
    /// The tail holds the tenant's events with transactions at or above this;
    /// None until a read that included the tenant has completed.
    from: Option<Horizon>,
}

impl Tail {
    fn restart(&mut self, horizon: Option<Horizon>) {
        self.events.clear();
        self.bytes = 0;
        self.generation += 1;
        self.known = horizon.is_some();
        let horizon = horizon.unwrap_or_default();
        (self.low, self.high) = (horizon, horizon);
        for covered in self.tenants.values_mut() {
            covered.from = Some(horizon);
        }
    }
}

/// The longest wait before re-reading events that an older transaction holds back.
const HELD_BACK_MAX: Duration = Duration::from_millis(64);
/// How long one transaction may hold delivery back before the listener warns.
const HELD_BACK_WARNING: Duration = Duration::from_secs(10);

/// How often a server looks for open streams on the other servers, to know
/// whether its commits need announcing.
const ANNOUNCE_CHECK: Duration = Duration::from_secs(1);

/// How often the listener checks that no commit went by without a wake-up.
const BACKSTOP: Duration = Duration::from_secs(1);

/// How often open streams' clients are checked for revocation.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct StreamHub {
    /// The tail's horizon, published whenever it moves: streams and watches
    /// wait on it.
    latest: watch::Sender<Horizon>,
    /// This server committed events: wake the listener.
    local_commits: tokio::sync::Notify,
    /// This server committed events: tell the other servers.
    to_announce: tokio::sync::Notify,
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
    principal: Principal,
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
            // Covers nothing until the listener knows a horizon.
            tail: std::sync::RwLock::default(),
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
    pub fn subscribe(&self) -> watch::Receiver<Horizon> {
        self.latest.subscribe()
    }

    /// This server has committed events: its streams are woken now, the
    /// other servers' by `announce`.
    pub fn committed(&self) {
        self.local_commits.notify_one();
        self.to_announce.notify_one();
    }

    /// The tail starts reading the tenant's events (one more open stream).
    fn start_reading(&self, tenant: TenantId) {
        let mut tail = self.tail.write().expect("tail lock");
        tail.tenants.entry(tenant).or_default().streams += 1;
    }

    /// One stream of the tenant closed; the tail stops reading its events
    /// after its last.
    fn stop_reading(&self, tenant: TenantId) {
        let mut tail = self.tail.write().expect("tail lock");
        if let Some(covered) = tail.tenants.get_mut(&tenant) {
            covered.streams -= 1;
            if covered.streams == 0 {
                tail.tenants.remove(&tenant);
            }
        }
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

    /// The tenant's events in the tail from horizon `floor` on, and the
    /// horizon the tail is complete up to, if the tail holds everything of the
    /// tenant from `floor`; None: read from the database.
    pub fn cached_after(
        &self,
        tenant: TenantId,
        floor: Horizon,
    ) -> Option<(Vec<Arc<StoredEvent>>, Horizon)> {
        let tail = self.tail.read().expect("tail lock");
        let from = tail.tenants.get(&tenant)?.from?;
        if !tail.known || floor < tail.low.max(from) {
            return None;
        }
        let start = tail.events.partition_point(|e| e.txid < floor);
        let tenant = tenant.as_uuid();
        let events = tail
            .events
            .range(start..)
            .filter(|e| e.tenant_id == tenant)
            .cloned()
            .collect();
        Some((events, tail.high))
    }

    /// The horizon the tail has read up to, once it knows one: a database
    /// query bounded by it sees everything below it.
    pub fn horizon(&self) -> Option<Horizon> {
        let tail = self.tail.read().expect("tail lock");
        tail.known.then_some(tail.high)
    }

    /// Forgets the tail and restarts it at `horizon` (None: unknown).
    fn reset_tail(&self, horizon: Option<Horizon>) {
        self.tail.write().expect("tail lock").restart(horizon);
    }

    /// Reads the tail's tenants' events committed since the tail's end into
    /// it; returns the new end (None: the tail rests, no stream reads it) and
    /// what is held back (see `TailRead`).
    async fn extend_tail(
        &self,
        pool: &PgPool,
    ) -> Result<(Option<Horizon>, Option<Horizon>), crate::error::Error> {
        let (generation, known, start, tenants) = {
            let tail = self.tail.read().expect("tail lock");
            let tenants: Vec<uuid::Uuid> = tail.tenants.keys().map(TenantId::as_uuid).collect();
            (tail.generation, tail.known, tail.high, tenants)
        };
        if tenants.is_empty() {
            // Nobody reads the tail: forget it rather than query anything. A
            // stream that opens later reads from the database first, and the
            // next wake-up starts the tail again at the horizon of the moment.
            let mut tail = self.tail.write().expect("tail lock");
            if tail.generation == generation {
                tail.restart(None);
            }
            return Ok((None, None));
        }
        if !known {
            let horizon = store::event::horizon(pool).await?;
            let mut tail = self.tail.write().expect("tail lock");
            if tail.generation == generation {
                tail.restart(Some(horizon));
            }
            return Ok((Some(horizon), None));
        }
        let mut position = (start, EventId::ZERO);
        let mut read_events = Vec::new();
        let (horizon, held_back) = loop {
            let read = store::event::tail_after(pool, position, &tenants, TAIL_FETCH).await?;
            let complete = (read.events.len() as i64) < TAIL_FETCH;
            if let Some(last) = read.events.last() {
                position = (last.txid, last.event_id);
            }
            read_events.extend(read.events);
            if complete {
                break (read.horizon, read.held_back);
            }
        };
        let mut tail = self.tail.write().expect("tail lock");
        if tail.generation != generation {
            // Restarted meanwhile by a reconnect: this read is stale.
            return Ok((tail.known.then_some(tail.high), None));
        }
        for event in read_events {
            tail.bytes += event.body.len();
            tail.events.push_back(Arc::new(event));
        }
        // Every event of these tenants below the horizon has been read.
        tail.high = tail.high.max(horizon);
        for tenant in &tenants {
            if let Some(covered) = tail.tenants.get_mut(&TenantId::from_uuid(*tenant))
                && covered.from.is_none()
            {
                covered.from = Some(start);
            }
        }
        while tail.events.len() > TAIL_EVENTS || tail.bytes > TAIL_BYTES {
            let Some(evicted) = tail.events.pop_front() else {
                break;
            };
            tail.bytes -= evicted.body.len();
            tail.low = tail.low.max(Horizon::new(evicted.txid.get() + 1));
        }
        Ok((Some(tail.high), held_back))
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

    /// Tells the other servers, after this one's commits, that events
    /// committed, until `stop`. At most one NOTIFY is in flight; commits
    /// meanwhile share the next. It commits asynchronously (a lost wake-up is
    /// caught by the backstop), so it never waits for a WAL flush or a standby.
    /// Nothing is sent while no other server holds an open stream (checked at
    /// most every `ANNOUNCE_CHECK`): a NOTIFY is a small transaction of its
    /// own. A stream opened meanwhile elsewhere, and watches (which keep no
    /// row), get those events from the backstop, within a second.
    pub async fn announce(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let server = self.server_id.to_string();
        let mut others: Option<(bool, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.to_announce.notified() => {}
            }
            if others.is_none_or(|(_, at)| at.elapsed() >= ANNOUNCE_CHECK) {
                let streaming = store::consumer::streams_elsewhere(&pool, self.server_id)
                    .await
                    .unwrap_or(true);
                others = Some((streaming, tokio::time::Instant::now()));
            }
            if others.is_some_and(|(streaming, _)| !streaming) {
                continue;
            }
            let sent = sqlx::query(
                "select set_config('synchronous_commit', 'off', true), pg_notify($1, $2)",
            )
            .bind(NOTIFY_CHANNEL)
            .bind(&server)
            .execute(&pool)
            .await;
            if let Err(error) = sent {
                tracing::warn!(%error, "cannot announce committed events to the other servers");
            }
        }
    }

    /// Acts on one notification; true when it asks for a re-read (events
    /// committed on another server).
    fn take(&self, notification: &sqlx::postgres::PgNotification, own: &str) -> bool {
        if notification.channel() == CONTROL_CHANNEL {
            match serde_json::from_str::<Signal>(notification.payload()) {
                Ok(signal) => self.dispatch(Some(signal)),
                Err(error) => tracing::warn!(%error, "ignoring a malformed control signal"),
            }
            false
        } else {
            notification.payload() != own
        }
    }

    /// Keeps the tail and the published horizon up to date, until `stop`.
    pub async fn listen(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let own = self.server_id.to_string();
        let protocol = |e: crate::error::Error| sqlx::Error::Protocol(e.to_string());
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener
                    .listen_all([NOTIFY_CHANNEL, CONTROL_CHANNEL])
                    .await?;
                // Signals sent while the listener was away are lost: every
                // stream looks for pending redeliveries once.
                self.dispatch(None);
                // Anything committed before LISTEN took effect lies below this
                // horizon: streams read it from the database.
                let horizon = store::event::horizon(&pool).await.map_err(protocol)?;
                self.reset_tail(Some(horizon));
                self.latest
                    .send_modify(|latest| *latest = (*latest).max(horizon));
                let mut backstop = tokio::time::interval(BACKSTOP);
                let mut held = HeldBack::default();
                loop {
                    let wake = tokio::select! {
                        // `recv` would reconnect silently, losing wake-ups
                        // without the tail knowing; end and start over instead.
                        notification = listener.try_recv() => {
                            let notification = notification?.ok_or_else(|| {
                                sqlx::Error::Protocol("the LISTEN connection was lost".into())
                            })?;
                            // Coalesce a burst of wake-ups into one read.
                            let mut wake = self.take(&notification, &own);
                            while let Some(notification) = listener.next_buffered() {
                                wake |= self.take(&notification, &own);
                            }
                            wake
                        }
                        () = self.local_commits.notified() => true,
                        // A backstop, not the delivery path.
                        _ = backstop.tick() => true,
                        () = held.wait() => true,
                    };
                    if !wake {
                        continue;
                    }
                    match self.extend_tail(&pool).await.map_err(protocol)? {
                        (Some(high), held_back) => {
                            held.update(&pool, high, held_back).await;
                            self.latest.send_if_modified(|latest| {
                                let newer = high > *latest;
                                *latest = (*latest).max(high);
                                newer
                            });
                        }
                        // No stream here: wake the watches, which read on
                        // from the database.
                        (None, _) => {
                            held = HeldBack::default();
                            self.latest.send_modify(|_| {});
                        }
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
                        // Until it is back, streams read from the database.
                        self.reset_tail(None);
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

/// Re-reads events that committed while an older transaction was running.
#[derive(Debug, Default)]
struct HeldBack {
    /// When to re-read: None while nothing is held back.
    delay: Option<Duration>,
    /// The horizon delivery waits at, and since when.
    stuck: Option<(Horizon, tokio::time::Instant)>,
    warned: bool,
}

impl HeldBack {
    async fn wait(&self) {
        match self.delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
    }

    async fn update(&mut self, pool: &PgPool, high: Horizon, held_back: Option<Horizon>) {
        if held_back.is_none() {
            *self = Self::default();
            return;
        }
        match self.stuck {
            Some((at, since)) if at == high => {
                self.delay = Some(
                    self.delay
                        .map_or(Duration::from_millis(1), |delay| delay * 2)
                        .min(HELD_BACK_MAX),
                );
                if !self.warned && since.elapsed() > HELD_BACK_WARNING {
                    self.warned = true;
                    let holder = store::event::horizon_holder(pool, high)
                        .await
                        .unwrap_or_default()
                        .unwrap_or_else(|| "not found in pg_stat_activity".into());
                    tracing::warn!(
                        transaction = high.get(),
                        %holder,
                        seconds = since.elapsed().as_secs(),
                        "committed events wait for an older transaction to end before they are delivered"
                    );
                }
            }
            _ => {
                self.stuck = Some((high, tokio::time::Instant::now()));
                self.delay = Some(Duration::from_millis(1));
                self.warned = false;
            }
        }
    }
}
