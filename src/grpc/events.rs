//! `hookrelay.v1.EventService`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use prometheus_client::metrics::counter::Counter;

use super::proto::event_service_server::EventService;
use super::proto::{self, AckOutcome};
use super::watch::{WatchStream, Watches};
use crate::auth::caller;
use crate::domain::{ConsumerName, EventFilter, EventId, Horizon, RepositoryId, TenantId};
use crate::error::Error;
use crate::secrets::SecretKey;
use crate::store;
use crate::store::consumer::Ack;
use crate::store::consumer::Change;
use crate::store::event::{StreamPage, StreamScope};
use crate::streams::{StreamHub, StreamRegistration};
use crate::telemetry::{Metrics, OutcomeLabels};
use crate::webhook;

/// Events read per query while catching up.
const STREAM_BATCH: i64 = 1000;
/// Bytes of bodies read per query, at most (a page holds at least one event).
const STREAM_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Events buffered per stream ahead of the client: the stream's backpressure.
const STREAM_BUFFER: usize = 128;
const MAX_PAGE_SIZE: i32 = 1000;
const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_ACKS: usize = 10_000;
/// Redeliveries a stream remembers having sent (so as not to send them twice
/// while their acks are under way); past this, it forgets and may resend.
const MAX_SENT_REDELIVERIES: usize = 10_000;

#[derive(Clone)]
pub struct EventsService {
    pool: sqlx::PgPool,
    hub: Arc<StreamHub>,
    metrics: Arc<Metrics>,
    /// Opens the sealed headers of events (GitLab's token) for the agent.
    secret_key: Arc<SecretKey>,
    max_stream_age: Duration,
    /// Cancelled when the server shuts down: streams end with UNAVAILABLE.
    shutdown: CancellationToken,
    watches: Arc<Watches>,
}

impl EventsService {
    pub fn new(
        pool: sqlx::PgPool,
        hub: Arc<StreamHub>,
        metrics: Arc<Metrics>,
        secret_key: Arc<SecretKey>,
        shutdown: CancellationToken,
        stall_threshold: Duration,
        max_stream_age: Duration,
    ) -> Self {
        Self {
            watches: Arc::new(Watches {
                pool: pool.clone(),
                hub: hub.clone(),
                shutdown: shutdown.clone(),
                stall_threshold,
            }),
            pool,
            hub,
            metrics,
            secret_key,
            max_stream_age,
            shutdown,
        }
    }
}

fn parse_repository(id: &str) -> Result<RepositoryId, Error> {
    RepositoryId::parse(id).ok_or(Error::NotFound("repository"))
}

fn parse_consumer(name: &str) -> Result<ConsumerName, Error> {
    ConsumerName::parse(name).map_err(|reason| Error::invalid("consumer", reason))
}

/// Every id must name one of the tenant's repositories; otherwise NOT_FOUND.
async fn owned_repositories(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    ids: &[String],
) -> Result<Vec<RepositoryId>, Error> {
    let ids = ids
        .iter()
        .map(|id| parse_repository(id))
        .collect::<Result<Vec<_>, _>>()?;
    let owned = store::repository::owned(pool, tenant, &ids).await?;
    if ids.iter().any(|id| !owned.contains(id)) {
        return Err(Error::NotFound("repository"));
    }
    Ok(ids)
}

/// Why a stream stopped early.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Revoked,
    Expired,
    /// HOOKRELAY_MAX_STREAM_AGE: ended before any proxy's timeout can cut it.
    MaxAge,
    ShuttingDown,
    ConsumerDeleted,
}

/// This stream's maximum age: `max_age` less up to 10%, so that streams opened
/// together (after a deploy) do not all reconnect together. None: no maximum.
fn stream_age(max_age: Duration) -> Option<Duration> {
    (!max_age.is_zero()).then(|| max_age.mul_f64(1.0 - rand::random::<f64>() * 0.1))
}

impl From<Stop> for Status {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Revoked => Status::unauthenticated(
                "the client or trusted issuer of this token was deleted, or its tenant suspended",
            ),
            Stop::Expired => {
                Status::unauthenticated("the access token expired; reconnect with a new one")
            }
            Stop::MaxAge => Status::unavailable(
                "the stream reached its maximum age (HOOKRELAY_MAX_STREAM_AGE); reconnect now",
            ),
            Stop::ShuttingDown => Status::unavailable("the server is shutting down; reconnect now"),
            Stop::ConsumerDeleted => Status::not_found("the consumer was deleted"),
        }
    }
}

struct OpenStream {
    pool: sqlx::PgPool,
    hub: Arc<StreamHub>,
    tenant: TenantId,
    consumer: ConsumerName,
    scope: StreamScope,
    sent_redeliveries: Vec<uuid::Uuid>,
    events_sent: Counter,
    registration: StreamRegistration,
    shutdown: CancellationToken,
    expires_at: tokio::time::Instant,
    /// Why the stream ends at `expires_at`: its token expires, or its maximum age.
    ending: Stop,
    secret_key: Arc<SecretKey>,
    sender: mpsc::Sender<Result<proto::Event, Status>>,
}

/// A database page read ahead while the previous one is being sent; aborted
/// when the stream ends first.
struct Prefetch(tokio::task::JoinHandle<Result<(Horizon, StreamPage), Error>>);

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl OpenStream {
    async fn stopped(&self) -> Stop {
        tokio::select! {
            () = self.registration.revoked.cancelled() => Stop::Revoked,
            () = self.shutdown.cancelled() => Stop::ShuttingDown,
            () = tokio::time::sleep_until(self.expires_at) => self.ending,
        }
    }

    /// `stopped`, without waiting: checked before every event.
    fn stop_now(&self) -> Option<Stop> {
        if self.registration.revoked.is_cancelled() {
            Some(Stop::Revoked)
        } else if self.shutdown.is_cancelled() {
            Some(Stop::ShuttingDown)
        } else if tokio::time::Instant::now() >= self.expires_at {
            Some(self.ending)
        } else {
            None
        }
    }

    /// Queues one event for the client. Err: the stream ends, with a status to
    /// send, or None when the client went away.
    async fn send(&self, mut event: proto::Event) -> Result<(), Option<Stop>> {
        if let Some(stop) = self.stop_now() {
            return Err(Some(stop));
        }
        // Only this stream, to the tenant's agent, carries a secret header in clear.
        if !webhook::secret_headers(&event.provider).is_empty() {
            let dropped = webhook::unseal_secret_headers(
                &event.provider,
                &event.repository_id,
                &self.secret_key,
                &mut event.headers,
            );
            if dropped > 0 {
                tracing::warn!(
                    event_id = event.id,
                    "a sealed header of the event does not open with this server's key; sent without it"
                );
            }
        }
        // The common case, a client that keeps up, costs no timer and no select.
        match self.sender.try_send(Ok(event)) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Err(None),
            Err(TrySendError::Full(item)) => tokio::select! {
                biased;
                stop = self.stopped() => return Err(Some(stop)),
                sent = self.sender.send(item) => sent.map_err(|_| None)?,
            },
        }
        self.events_sent.inc();
        Ok(())
    }

    /// Waits for the next wake-up. Err as for `send`.
    async fn wait(
        &self,
        wakeups: &mut tokio::sync::watch::Receiver<Horizon>,
    ) -> Result<(), Option<Stop>> {
        tokio::select! {
            biased;
            stop = self.stopped() => Err(Some(stop)),
            () = self.sender.closed() => Err(None),
            () = self.registration.signals.arrived() => Ok(()),
            changed = wakeups.changed() => changed.map_err(|_| None),
        }
    }

    /// Sends the consumer's pending redeliveries this stream has not sent
    /// yet, marked as such. A failed read is retried at the next signal or
    /// reconnect: redeliveries wait in the database.
    async fn redeliver(&mut self) -> Result<(), Option<Stop>> {
        if self.sent_redeliveries.len() > MAX_SENT_REDELIVERIES {
            self.sent_redeliveries.clear();
        }
        let pending = match store::consumer::pending_redeliveries(
            &self.pool,
            self.tenant,
            &self.consumer,
            &self.sent_redeliveries,
        )
        .await
        {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, "cannot read pending redeliveries");
                return Ok(());
            }
        };
        for (redelivery_id, event) in pending {
            self.sent_redeliveries.push(redelivery_id);
            let streamed = self.scope.repositories.as_ref().is_none_or(|repositories| {
                repositories
                    .iter()
                    .any(|r| r.as_uuid() == event.repository_id)
            });
            if streamed {
                let mut event = proto::Event::from(event);
                event.redelivery = true;
                event.redelivery_id = redelivery_id.to_string();
                self.send(event).await?;
            }
        }
        Ok(())
    }

    /// Acts on the signals that arrived. True when a seek moved a cursor: the
    /// stream then reads again from the database.
    async fn apply_signals(&mut self) -> Result<bool, Option<Stop>> {
        let (mut moved, mut redeliver) = (false, false);
        for change in self.registration.signals.take() {
            match change {
                Change::Deleted => return Err(Some(Stop::ConsumerDeleted)),
                Change::Redeliver => redeliver = true,
                Change::Seek {
                    repository_id,
                    after_event_id,
                } => {
                    // What was sent stays sent (each repository's cursor moved
                    // on with it); this repository reads on after the seek.
                    self.scope.cursors.insert(repository_id, after_event_id);
                    moved = true;
                }
            }
        }
        if redeliver {
            self.redeliver().await?;
        }
        Ok(moved)
    }

    /// Starts reading a page from the database: the next one of `window`
    /// (its horizon and the last id read), or a first one below the horizon
    /// the tail has reached (or, when it knows none, the database's).
    fn prefetch(&self, window: Option<(Horizon, EventId)>) -> Prefetch {
        let (pool, hub, tenant, scope) = (
            self.pool.clone(),
            self.hub.clone(),
            self.tenant,
            self.scope.clone(),
        );
        Prefetch(tokio::spawn(async move {
            let (upper, after) = match window {
                Some(window) => window,
                None => match hub.horizon() {
                    Some(upper) => (upper, EventId::ZERO),
                    None => (store::event::horizon(&pool).await?, EventId::ZERO),
                },
            };
            let page = store::event::stream_batch(
                &pool,
                tenant,
                &scope,
                upper,
                after,
                STREAM_BATCH,
                STREAM_BATCH_BYTES,
            )
            .await?;
            Ok((upper, page))
        }))
    }

    /// Sends one event and moves its repository's cursor past it.
    async fn send_next(&mut self, event: proto::Event) -> Result<(), Option<Stop>> {
        if let Some(repository) = RepositoryId::parse(&event.repository_id) {
            self.scope
                .cursors
                .insert(repository, EventId::new(event.id));
        }
        self.send(event).await
    }

    /// Backlog in id order per repository, then live events as they commit,
    /// until the client goes away or the stream must stop.
    async fn run(mut self, wakeups: tokio::sync::watch::Receiver<Horizon>) {
        if let Err(Some(stop)) = self.stream(wakeups).await {
            let _ = self.sender.send(Err(stop.into())).await;
        }
    }

    async fn stream(
        &mut self,
        mut wakeups: tokio::sync::watch::Receiver<Horizon>,
    ) -> Result<(), Option<Stop>> {
        // Every event whose transaction lies below this horizon has been
        // considered: sent, or not wanted.
        let mut considered = Horizon::ZERO;
        // The first read always goes to the database: the tail may still hold
        // events that retention or a repository deletion removed since. Later
        // reads only take events that committed after the stream caught up.
        let mut caught_up_once = false;
        // While catching up, the next page is read while this one is sent.
        let mut next_page: Option<Prefetch> = None;
        // Redeliveries wait in the database: they survive restarts of either end.
        self.redeliver().await?;
        loop {
            // Signals (a seek, a redelivery, a deletion) are checked before
            // every event; the read-ahead is dropped, as a seek makes it stale.
            if self.registration.signals.waiting() {
                next_page = None;
                if self.apply_signals().await? {
                    caught_up_once = false;
                }
            }
            // Mark the current wake-up seen *before* reading, so a commit that
            // lands during the read wakes the wait below.
            wakeups.borrow_and_update();
            // Live: the shared tail holds everything from `considered` on.
            if next_page.is_none()
                && caught_up_once
                && let Some((events, high)) = self.hub.cached_after(self.tenant, considered)
            {
                let mut interrupted = false;
                for event in events {
                    if self.registration.signals.waiting() {
                        interrupted = true;
                        break;
                    }
                    if self.scope.wants(self.tenant, &event) {
                        self.send_next(event.as_ref().into()).await?;
                    }
                }
                if !interrupted {
                    considered = considered.max(high);
                    self.wait(&mut wakeups).await?;
                }
                continue;
            }
            let page = next_page.take().unwrap_or_else(|| self.prefetch(None));
            let read = async move {
                let mut page = page;
                (&mut page.0).await
            };
            let outcome = tokio::select! {
                biased;
                stop = self.stopped() => return Err(Some(stop)),
                outcome = read => outcome,
            };
            let (upper, batch, caught_up) = match outcome {
                Ok(Ok((upper, page))) => (upper, page.events, page.complete),
                Ok(Err(error)) => {
                    let _ = self.sender.send(Err(error.into())).await;
                    return Ok(());
                }
                Err(error) => {
                    let _ = self
                        .sender
                        .send(Err(Status::internal(error.to_string())))
                        .await;
                    return Ok(());
                }
            };
            if let (false, Some(last)) = (caught_up, batch.last()) {
                next_page = Some(self.prefetch(Some((upper, last.event_id))));
            }
            let mut interrupted = false;
            for event in batch {
                if self.registration.signals.waiting() {
                    interrupted = true;
                    break;
                }
                self.send_next(event.into()).await?;
            }
            if interrupted {
                continue;
            }
            if caught_up {
                caught_up_once = true;
                // Everything below `upper` was visible to that read.
                considered = considered.max(upper);
                self.wait(&mut wakeups).await?;
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl EventService for EventsService {
    type StreamEventsStream = ReceiverStream<Result<proto::Event, Status>>;
    type WatchEventsStream = WatchStream<proto::EventSummary>;
    type WatchDeliveriesStream = WatchStream<proto::DeliveryRecord>;
    type WatchConsumersStream = WatchStream<proto::ConsumersSnapshot>;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let repositories = if request.repository_ids.is_empty() {
            Vec::new()
        } else {
            owned_repositories(&self.pool, caller.tenant.id, &request.repository_ids).await?
        };
        Ok(Response::new(
            self.watches.events(&caller, request, repositories).await?,
        ))
    }

    async fn watch_deliveries(
        &self,
        request: Request<proto::WatchDeliveriesRequest>,
    ) -> Result<Response<Self::WatchDeliveriesStream>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.watches.deliveries(&caller, request.into_inner()),
        ))
    }

    async fn watch_consumers(
        &self,
        request: Request<proto::WatchConsumersRequest>,
    ) -> Result<Response<Self::WatchConsumersStream>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.watches.consumers(&caller)))
    }

    async fn stream_events(
        &self,
        request: Request<proto::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let caller = caller(&request)?;
        let tenant = caller.tenant.id;
        let request = request.into_inner();
        let consumer = parse_consumer(&request.consumer)?;
        let repositories = if request.repository_ids.is_empty() {
            None
        } else {
            Some(owned_repositories(&self.pool, tenant, &request.repository_ids).await?)
        };
        if request.after_event_id.is_some_and(|after| after < 0) {
            return Err(Error::invalid("after_event_id", "must not be negative").into());
        }
        let filter = EventFilter::parse(request.event_types, request.branches, request.tags)
            .map_err(|(field, reason)| Error::invalid(field, reason))?;

        // Where each repository resumes: after_event_id for all, else the acks.
        let after_event_id = request.after_event_id.map(EventId::new);
        let (cursors, default_cursor): (HashMap<RepositoryId, EventId>, _) = match after_event_id {
            Some(after) => (HashMap::new(), after),
            None => (
                store::consumer::cursors(&self.pool, tenant, &consumer)
                    .await?
                    .into_iter()
                    .collect(),
                EventId::ZERO,
            ),
        };
        // A cursor older than what retention deleted has lost events: refuse
        // rather than skip them. (0 and a new consumer mean "oldest retained".)
        let in_scope = |repository: &RepositoryId| {
            repositories.as_ref().is_none_or(|r| r.contains(repository))
        };
        for (repository, deleted_through) in
            store::consumer::retention_horizons(&self.pool, tenant).await?
        {
            let cursor = cursors
                .get(&repository)
                .copied()
                .or(after_event_id.filter(|after| *after > EventId::ZERO));
            if in_scope(&repository) && cursor.is_some_and(|cursor| cursor < deleted_through) {
                return Err(Error::BehindRetention(format!(
                    "consumer `{}` is behind retention in repository {repository}: events up to {deleted_through} \
                     were deleted; reconnect with after_event_id >= {deleted_through} to skip them",
                    consumer.as_str()
                ))
                .into());
            }
        }

        // Registered before it is recorded, so that no signal sent once the
        // consumer exists can miss this stream.
        let registration =
            self.hub
                .register(caller.tenant.principal.clone(), tenant, consumer.clone());
        store::consumer::open_stream(
            &self.pool,
            tenant,
            &consumer,
            &filter,
            repositories.as_deref(),
            registration.stream_id,
            self.hub.server_id(),
        )
        .await?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let expires_in = Duration::from_secs(caller.expires_at.saturating_sub(unix_now()));
        // The token's expiry, or the stream's maximum age if that comes first.
        let (lifetime, ending) = match stream_age(self.max_stream_age) {
            Some(age) if age < expires_in => (age, Stop::MaxAge),
            _ => (expires_in, Stop::Expired),
        };
        let stream = OpenStream {
            pool: self.pool.clone(),
            hub: self.hub.clone(),
            tenant,
            consumer: consumer.clone(),
            scope: StreamScope {
                repositories,
                cursors,
                default_cursor,
                filter,
            },
            sent_redeliveries: Vec::new(),
            events_sent: self.metrics.stream_events_sent.clone(),
            registration,
            secret_key: self.secret_key.clone(),
            shutdown: self.shutdown.clone(),
            expires_at: tokio::time::Instant::now() + lifetime,
            ending,
            sender,
        };
        tracing::info!(tenant_id = %tenant, consumer = consumer.as_str(), "stream opened");
        tokio::spawn(stream.run(self.hub.subscribe()));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn ack_events(
        &self,
        request: Request<proto::AckEventsRequest>,
    ) -> Result<Response<proto::AckEventsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let consumer = parse_consumer(&request.consumer)?;
        if request.acks.is_empty() || request.acks.len() > MAX_ACKS {
            return Err(Error::invalid("acks", format!("send 1 to {MAX_ACKS} acks")).into());
        }
        let acks = request
            .acks
            .into_iter()
            .map(|ack| {
                let failure = match AckOutcome::try_from(ack.outcome) {
                    Ok(AckOutcome::Delivered) => None,
                    Ok(AckOutcome::Failed) => Some(if ack.failure_reason.is_empty() {
                        "delivery failed".to_owned()
                    } else {
                        ack.failure_reason.chars().take(1000).collect()
                    }),
                    _ => return Err(Error::invalid("outcome", "must be DELIVERED or FAILED")),
                };
                if ack.event_id <= 0 {
                    return Err(Error::invalid("event_id", "must be positive"));
                }
                let redelivery_id = match ack.redelivery_id.as_str() {
                    "" => None,
                    id => Some(
                        uuid::Uuid::parse_str(id)
                            .map_err(|_| Error::invalid("redelivery_id", "must be a UUID"))?,
                    ),
                };
                Ok(Ack {
                    repository_id: parse_repository(&ack.repository_id)?,
                    event_id: EventId::new(ack.event_id),
                    failure,
                    redelivery_id,
                    status_code: ack.status_code.filter(|code| (100..=999).contains(code)),
                    attempts: ack.attempts.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    duration_ms: ack.duration_ms.map(i64::from),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let skipped = store::consumer::ack(&self.pool, caller.tenant.id, &consumer, &acks).await?;
        for ack in &acks {
            let outcome = if ack.failure.is_some() {
                "failed"
            } else {
                "delivered"
            };
            self.metrics
                .acks
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
        Ok(Response::new(proto::AckEventsResponse {
            skipped_repository_ids: skipped.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let repository =
            owned_repositories(&self.pool, caller.tenant.id, &[request.repository_id]).await?[0];
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                return Err(Error::invalid("page_size", "must not be negative").into());
            }
            size => size.min(MAX_PAGE_SIZE),
        };
        // One more than asked tells whether another page follows.
        let mut events = store::event::list(
            &self.pool,
            caller.tenant.id,
            repository,
            EventId::new(request.after_event_id.max(0)),
            i64::from(page_size) + 1,
        )
        .await?;
        let more = events.len() > page_size as usize;
        events.truncate(page_size as usize);
        let next_after_event_id = more
            .then(|| events.last().map(|e| e.event_id.get()))
            .flatten();
        Ok(Response::new(proto::ListEventsResponse {
            events: events
                .into_iter()
                .map(|event| {
                    let mut event = proto::Event::from(event);
                    webhook::redact_secret_headers(&event.provider, &mut event.headers);
                    event
                })
                .collect(),
            next_after_event_id,
        }))
    }
}
