//! The watch RPCs of `EventService` (WatchEvents, WatchDeliveries,
//! WatchConsumers): what the web console shows live, over gRPC-Web. They read
//! and never write: no consumer, no cursor.
//!
//! New events wake a watch through the same NOTIFY as the streams. A tenant's
//! delivery records and consumer status are polled (every `POLL`) once per
//! tenant, however many watches show them (`SharedPolls`): acks are far too
//! frequent to announce each, and one tenant's thousand console tabs must not
//! cost the database a thousand queries a second. One event's delivery
//! records (its page in the console) are polled per watch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::proto;
use crate::auth::Caller;
use crate::domain::{EventId, Horizon, RepositoryId, TenantId};
use crate::error::Error;
use crate::relay::{StreamHub, WatchRegistration};
use crate::store;
use crate::store::consumer::{ConsumerStatus, Delivery};
use crate::store::event::{EventSummary, WatchFrom};

/// How often delivery records and consumer status are read again.
const POLL: Duration = Duration::from_secs(1);
/// Delivery records can commit out of `completed_at` order (it is their
/// transaction's start): each poll looks back this far, and skips what it sent.
const LOOKBACK: Duration = Duration::from_secs(10);
const WATCH_BUFFER: usize = 64;
const EVENTS_PER_READ: i64 = 500;

pub type WatchStream<T> = ReceiverStream<Result<T, Status>>;

/// What every watch shares: it ends when the server shuts down, the token
/// expires, or the client is deleted, or when the watcher goes away.
struct Watch<T> {
    sender: mpsc::Sender<Result<T, Status>>,
    shutdown: CancellationToken,
    expires_at: tokio::time::Instant,
    registration: WatchRegistration,
}

impl<T: Send + 'static> Watch<T> {
    fn open(
        hub: &Arc<StreamHub>,
        caller: &Caller,
        shutdown: &CancellationToken,
    ) -> (Self, WatchStream<T>) {
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let watch = Self {
            sender,
            shutdown: shutdown.clone(),
            expires_at: tokio::time::Instant::now()
                + Duration::from_secs(caller.expires_at.saturating_sub(now)),
            registration: hub.register_watch(caller.tenant.principal.clone(), caller.tenant.id),
        };
        (watch, ReceiverStream::new(receiver))
    }

    /// Completes when the watch must end, with the status to end it with
    /// (None: the watcher went away).
    async fn ended(&self) -> Option<Status> {
        tokio::select! {
            () = self.sender.closed() => None,
            () = self.shutdown.cancelled() => Some(Status::unavailable("the server is shutting down; reconnect now")),
            () = self.registration.revoked.cancelled() => Some(Status::unauthenticated("the client of this token was deleted")),
            () = tokio::time::sleep_until(self.expires_at) => Some(Status::unauthenticated("the access token expired; reconnect with a new one")),
        }
    }

    /// Sends one message; false when the watch is over.
    async fn send(&self, message: T) -> bool {
        self.sender.send(Ok(message)).await.is_ok()
    }

    /// Ends the watch with `status`, if the watcher is still there to hear it.
    async fn end(&self, status: Option<Status>) {
        if let Some(status) = status {
            let _ = self.sender.send(Err(status)).await;
        }
    }
}

fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).unwrap_or_default(),
    }
}

impl From<EventSummary> for proto::EventSummary {
    fn from(e: EventSummary) -> Self {
        Self {
            id: e.event_id.get(),
            repository_id: e.repository_id.to_string(),
            provider: e.provider,
            event_type: e.event_type,
            delivery_id: e.delivery_id,
            received_at: Some(timestamp(e.received_at)),
            branch: e.branch,
            tag: e.tag,
            size: e.size,
        }
    }
}

impl From<Delivery> for proto::DeliveryRecord {
    fn from(d: Delivery) -> Self {
        Self {
            event_id: d.event_id.get(),
            consumer: d.consumer,
            redelivery_id: d.redelivery_id.map(|id| id.to_string()).unwrap_or_default(),
            outcome: d.outcome,
            status_code: d.status_code,
            attempts: d.attempts,
            duration_ms: d.duration_ms,
            error: d.error.unwrap_or_default(),
            completed_at: Some(timestamp(d.completed_at)),
        }
    }
}

fn consumer_status(status: ConsumerStatus, threshold: Duration) -> proto::ConsumerStatus {
    let filter: serde_json::Value = status.filter.clone();
    let list = |field: &str| -> Vec<String> {
        filter[field]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    proto::ConsumerStatus {
        stalled: status.stalled(threshold),
        event_types: list("event_types"),
        branches: list("branches"),
        tags: list("tags"),
        name: status.name,
        connected_streams: status.connected_streams,
        last_seen_at: status.last_seen_at.map(timestamp),
        repositories: status
            .repositories
            .into_iter()
            .map(|p| proto::ConsumerPosition {
                repository_id: p.repository_id.to_string(),
                acked_event_id: p.acked_event_id.map(EventId::get),
                pending_events: p.pending_events,
                oldest_pending_received_at: p.oldest_pending_received_at.map(timestamp),
            })
            .collect(),
    }
}

pub struct Watches {
    pub pool: sqlx::PgPool,
    pub hub: Arc<StreamHub>,
    pub shutdown: CancellationToken,
    pub stall_threshold: Duration,
    pub polls: Arc<SharedPolls>,
}

/// A tenant's consumers as its watches show them; None until the first poll.
type ConsumersUpdate = Option<Result<proto::ConsumersSnapshot, Status>>;
/// A tenant's delivery records as they complete.
type DeliveryUpdate = Result<proto::DeliveryRecord, Status>;

/// One poll per tenant of what all its watches show alike. The first watch
/// starts it; it stops at the first poll after the last watch left.
pub struct SharedPolls {
    consumers: Mutex<HashMap<TenantId, Arc<watch::Sender<ConsumersUpdate>>>>,
    deliveries: Mutex<HashMap<TenantId, broadcast::Sender<DeliveryUpdate>>>,
    /// `hookrelay_watch_polls`: how many polls run.
    running: prometheus_client::metrics::gauge::Gauge,
}

/// Delivery records buffered per watch before it counts as fallen behind.
const DELIVERY_BACKLOG: usize = 1024;

impl SharedPolls {
    pub fn new(running: prometheus_client::metrics::gauge::Gauge) -> Self {
        Self {
            consumers: Mutex::default(),
            deliveries: Mutex::default(),
            running,
        }
    }

    fn consumers(
        self: &Arc<Self>,
        pool: &sqlx::PgPool,
        tenant: TenantId,
        stall_threshold: Duration,
    ) -> watch::Receiver<ConsumersUpdate> {
        let mut polls = self.consumers.lock().expect("not poisoned");
        if let Some(sender) = polls.get(&tenant) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(None);
        let sender = Arc::new(sender);
        polls.insert(tenant, sender.clone());
        self.running.inc();
        tokio::spawn(poll_consumers(
            self.clone(),
            sender,
            pool.clone(),
            tenant,
            stall_threshold,
        ));
        receiver
    }

    fn deliveries(
        self: &Arc<Self>,
        pool: &sqlx::PgPool,
        tenant: TenantId,
    ) -> broadcast::Receiver<DeliveryUpdate> {
        let mut polls = self.deliveries.lock().expect("not poisoned");
        if let Some(sender) = polls.get(&tenant) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(DELIVERY_BACKLOG);
        polls.insert(tenant, sender.clone());
        self.running.inc();
        tokio::spawn(poll_deliveries(self.clone(), sender, pool.clone(), tenant));
        receiver
    }

    /// Whether a poll of `tenant` is over: no watch left (`watching`, counted
    /// under the lock; a failed poll says 0). Then it is forgotten, under the
    /// lock a new watch takes to join it: no watch joins a stopped poll.
    fn over<T>(
        &self,
        polls: &Mutex<HashMap<TenantId, T>>,
        tenant: TenantId,
        watching: impl Fn() -> usize,
    ) -> bool {
        let mut polls = polls.lock().expect("not poisoned");
        let over = watching() == 0;
        if over && polls.remove(&tenant).is_some() {
            self.running.dec();
        }
        over
    }
}

/// Reads the tenant's consumers every `POLL` while any watch shows them, and
/// publishes each change. An error is published and ends the poll.
async fn poll_consumers(
    polls: Arc<SharedPolls>,
    sender: Arc<watch::Sender<ConsumersUpdate>>,
    pool: sqlx::PgPool,
    tenant: TenantId,
    stall_threshold: Duration,
) {
    let mut interval = tokio::time::interval(POLL);
    loop {
        interval.tick().await;
        if polls.over(&polls.consumers, tenant, || sender.receiver_count()) {
            return;
        }
        let update = match store::consumer::status(&pool, tenant, None).await {
            Ok(consumers) => Ok(proto::ConsumersSnapshot {
                consumers: consumers
                    .into_iter()
                    .map(|c| consumer_status(c, stall_threshold))
                    .collect(),
            }),
            Err(error) => Err(Status::from(error)),
        };
        let failed = update.is_err();
        sender.send_if_modified(|current| {
            let changed = match (&*current, &update) {
                (Some(Ok(before)), Ok(now)) => before != now,
                _ => true,
            };
            if changed {
                *current = Some(update);
            }
            changed
        });
        if failed {
            polls.over(&polls.consumers, tenant, || 0);
            return;
        }
    }
}

/// Publishes the tenant's delivery records as they complete, polling every
/// `POLL` while any watch shows them. An error is published and ends the poll.
async fn poll_deliveries(
    polls: Arc<SharedPolls>,
    sender: broadcast::Sender<DeliveryUpdate>,
    pool: sqlx::PgPool,
    tenant: TenantId,
) {
    let mut since = OffsetDateTime::now_utc();
    let mut sent: HashSet<(i64, OffsetDateTime)> = HashSet::new();
    let mut interval = tokio::time::interval(POLL);
    loop {
        interval.tick().await;
        if polls.over(&polls.deliveries, tenant, || sender.receiver_count()) {
            return;
        }
        match store::consumer::deliveries_since(&pool, tenant, None, since - LOOKBACK).await {
            Ok(records) => {
                for record in records {
                    since = since.max(record.completed_at);
                    if sent.insert((record.delivery_pk, record.completed_at)) {
                        let _ = sender.send(Ok(record.into()));
                    }
                }
                let horizon = since - LOOKBACK;
                sent.retain(|(_, at)| *at > horizon);
            }
            Err(error) => {
                let _ = sender.send(Err(error.into()));
                polls.over(&polls.deliveries, tenant, || 0);
                return;
            }
        }
    }
}

impl Watches {
    pub async fn events(
        &self,
        caller: &Caller,
        request: proto::WatchEventsRequest,
        repositories: Vec<RepositoryId>,
    ) -> Result<WatchStream<proto::EventSummary>, Error> {
        if request.after_event_id.is_some_and(|after| after < 0) {
            return Err(Error::invalid("after_event_id", "must not be negative"));
        }
        // From the given id; else from now: everything below the current
        // horizon counts as seen.
        let from = match request.after_event_id {
            Some(after) => WatchFrom::Id(EventId::new(after)),
            None => WatchFrom::Position(store::event::horizon(&self.pool).await?, EventId::ZERO),
        };
        let (watch, stream) = Watch::open(&self.hub, caller, &self.shutdown);
        tokio::spawn(watch_events(
            watch,
            self.pool.clone(),
            self.hub.clone(),
            self.hub.subscribe(),
            caller.tenant.id,
            repositories,
            request.event_types,
            from,
        ));
        Ok(stream)
    }

    pub fn deliveries(
        &self,
        caller: &Caller,
        request: proto::WatchDeliveriesRequest,
    ) -> WatchStream<proto::DeliveryRecord> {
        let (watch, stream) = Watch::open(&self.hub, caller, &self.shutdown);
        match request.event_id.map(EventId::new) {
            // One event's records: all of them first, polled for this watch.
            Some(event) => {
                tokio::spawn(watch_event_deliveries(
                    watch,
                    self.pool.clone(),
                    caller.tenant.id,
                    event,
                ));
            }
            None => {
                let updates = self.polls.deliveries(&self.pool, caller.tenant.id);
                tokio::spawn(watch_deliveries(watch, updates));
            }
        }
        stream
    }

    pub fn consumers(&self, caller: &Caller) -> WatchStream<proto::ConsumersSnapshot> {
        let (watch, stream) = Watch::open(&self.hub, caller, &self.shutdown);
        let updates = self
            .polls
            .consumers(&self.pool, caller.tenant.id, self.stall_threshold);
        tokio::spawn(watch_consumers(watch, updates));
        stream
    }
}

/// Sends the tenant's events after `from`, then each new one as it commits.
#[allow(clippy::too_many_arguments)]
async fn watch_events(
    watch: Watch<proto::EventSummary>,
    pool: sqlx::PgPool,
    hub: Arc<StreamHub>,
    mut wakeups: tokio::sync::watch::Receiver<Horizon>,
    tenant: TenantId,
    repositories: Vec<RepositoryId>,
    event_types: Vec<String>,
    mut from: WatchFrom,
) {
    loop {
        // Seen before reading: a commit during the read wakes the wait below.
        wakeups.borrow_and_update();
        let read = async {
            // Below the tail's horizon (from an earlier snapshot), everything
            // is visible to this read.
            let upper = match hub.horizon() {
                Some(upper) => upper,
                None => store::event::horizon(&pool).await?,
            };
            loop {
                let events = store::event::summaries_after(
                    &pool,
                    tenant,
                    from,
                    upper,
                    &repositories,
                    &event_types,
                    EVENTS_PER_READ,
                )
                .await?;
                let full = events.len() as i64 == EVENTS_PER_READ;
                for (event, txid) in events {
                    from = match from {
                        WatchFrom::Id(_) => WatchFrom::Id(event.event_id),
                        WatchFrom::Position(..) => WatchFrom::Position(txid, event.event_id),
                    };
                    if !watch.send(event.into()).await {
                        return Ok(false);
                    }
                }
                if !full {
                    // Everything below `upper` has been seen: read on in
                    // commit order from there.
                    if !matches!(from, WatchFrom::Position(txid, _) if txid >= upper) {
                        from = WatchFrom::Position(upper, EventId::ZERO);
                    }
                    return Ok::<_, Error>(true);
                }
            }
        };
        let outcome = tokio::select! {
            ended = watch.ended() => return watch.end(ended).await,
            outcome = read => outcome,
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => return watch.end(Some(error.into())).await,
        }
        tokio::select! {
            ended = watch.ended() => return watch.end(ended).await,
            changed = wakeups.changed() => if changed.is_err() { return },
        }
    }
}

/// Sends the tenant's delivery records as they complete (from its shared poll).
async fn watch_deliveries(
    watch: Watch<proto::DeliveryRecord>,
    mut updates: broadcast::Receiver<DeliveryUpdate>,
) {
    loop {
        let update = tokio::select! {
            ended = watch.ended() => return watch.end(ended).await,
            update = updates.recv() => update,
        };
        match update {
            Ok(Ok(record)) => {
                if !watch.send(record).await {
                    return;
                }
            }
            Ok(Err(status)) => return watch.end(Some(status)).await,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                return watch
                    .end(Some(Status::unavailable(
                        "the watch fell behind the delivery records; reconnect now",
                    )))
                    .await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends one event's delivery records, all of them first, then as they
/// complete, polling every `POLL`.
async fn watch_event_deliveries(
    watch: Watch<proto::DeliveryRecord>,
    pool: sqlx::PgPool,
    tenant: TenantId,
    event: EventId,
) {
    let mut since = OffsetDateTime::UNIX_EPOCH;
    let mut sent: HashSet<(i64, OffsetDateTime)> = HashSet::new();
    let mut interval = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            ended = watch.ended() => return watch.end(ended).await,
            _ = interval.tick() => {}
        }
        let read = store::consumer::deliveries_since(&pool, tenant, Some(event), since - LOOKBACK);
        let records = tokio::select! {
            ended = watch.ended() => return watch.end(ended).await,
            records = read => match records {
                Ok(records) => records,
                Err(error) => return watch.end(Some(error.into())).await,
            },
        };
        for record in records {
            since = since.max(record.completed_at);
            if sent.insert((record.delivery_pk, record.completed_at))
                && !watch.send(record.into()).await
            {
                return;
            }
        }
        let horizon = since - LOOKBACK;
        sent.retain(|(_, at)| *at > horizon);
    }
}

/// Sends the tenant's consumers at once, then again whenever they change
/// (from its shared poll).
async fn watch_consumers(
    watch: Watch<proto::ConsumersSnapshot>,
    mut updates: watch::Receiver<ConsumersUpdate>,
) {
    loop {
        let update = updates.borrow_and_update().clone();
        let sent = match update {
            Some(Ok(snapshot)) => watch.send(snapshot).await,
            Some(Err(status)) => return watch.end(Some(status)).await,
            None => true,
        };
        if !sent {
            return;
        }
        tokio::select! {
            ended = watch.ended() => return watch.end(ended).await,
            changed = updates.changed() => if changed.is_err() { return },
        }
    }
}
