//! `hookrelay.v1.EventService`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::proto::event_service_server::EventService;
use super::proto::{self, AckOutcome};
use crate::auth::caller;
use crate::domain::{ConsumerName, EventId, RepositoryId, TenantId};
use crate::error::Error;
use crate::store;
use crate::store::consumer::Ack;
use crate::store::event::{StreamPage, StreamScope};
use crate::streams::{StreamHub, StreamRegistration};

/// Events read per query while catching up.
const STREAM_BATCH: i64 = 1000;
/// Bytes of bodies read per query, at most (a page holds at least one event).
const STREAM_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Events buffered per stream ahead of the client: the stream's backpressure.
const STREAM_BUFFER: usize = 128;
const MAX_PAGE_SIZE: i32 = 1000;
const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_ACKS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct EventsService {
    pool: sqlx::PgPool,
    hub: Arc<StreamHub>,
    /// Cancelled when the server shuts down: streams end with UNAVAILABLE.
    shutdown: CancellationToken,
}

impl EventsService {
    pub fn new(pool: sqlx::PgPool, hub: Arc<StreamHub>, shutdown: CancellationToken) -> Self {
        Self {
            pool,
            hub,
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
enum Stop {
    Revoked,
    Expired,
    ShuttingDown,
}

impl From<Stop> for Status {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Revoked => Status::unauthenticated("the client of this token was deleted"),
            Stop::Expired => {
                Status::unauthenticated("the access token expired; reconnect with a new one")
            }
            Stop::ShuttingDown => Status::unavailable("the server is shutting down; reconnect now"),
        }
    }
}

struct OpenStream {
    pool: sqlx::PgPool,
    hub: Arc<StreamHub>,
    tenant: TenantId,
    scope: StreamScope,
    registration: StreamRegistration,
    shutdown: CancellationToken,
    expires_at: tokio::time::Instant,
    sender: mpsc::Sender<Result<proto::Event, Status>>,
}

/// A database page read ahead while the previous one is being sent; aborted
/// when the stream ends first.
struct Prefetch(tokio::task::JoinHandle<(EventId, Result<StreamPage, Error>)>);

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
            () = tokio::time::sleep_until(self.expires_at) => Stop::Expired,
        }
    }

    /// `stopped`, without waiting: checked before every event.
    fn stop_now(&self) -> Option<Stop> {
        if self.registration.revoked.is_cancelled() {
            Some(Stop::Revoked)
        } else if self.shutdown.is_cancelled() {
            Some(Stop::ShuttingDown)
        } else if tokio::time::Instant::now() >= self.expires_at {
            Some(Stop::Expired)
        } else {
            None
        }
    }

    /// Queues one event for the client. Err: the stream ends, with a status to
    /// send, or None when the client went away.
    async fn send(&self, event: proto::Event) -> Result<(), Option<Stop>> {
        if let Some(stop) = self.stop_now() {
            return Err(Some(stop));
        }
        // The common case, a client that keeps up, costs no timer and no select.
        match self.sender.try_send(Ok(event)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(None),
            Err(TrySendError::Full(item)) => tokio::select! {
                biased;
                stop = self.stopped() => Err(Some(stop)),
                sent = self.sender.send(item) => sent.map_err(|_| None),
            },
        }
    }

    /// Waits for the next wake-up. Err as for `send`.
    async fn wait(
        &self,
        wakeups: &mut tokio::sync::watch::Receiver<EventId>,
    ) -> Result<(), Option<Stop>> {
        tokio::select! {
            biased;
            stop = self.stopped() => Err(Some(stop)),
            () = self.sender.closed() => Err(None),
            changed = wakeups.changed() => changed.map_err(|_| None),
        }
    }

    /// Starts reading the page after `floor`, noting first what the tail knows
    /// is committed (see `StreamHub::committed_high`).
    fn prefetch(&self, floor: EventId) -> Prefetch {
        let (pool, hub, tenant, scope) = (
            self.pool.clone(),
            self.hub.clone(),
            self.tenant,
            self.scope.clone(),
        );
        Prefetch(tokio::spawn(async move {
            let known = hub.committed_high();
            let batch = store::event::stream_batch(
                &pool,
                tenant,
                &scope,
                floor,
                STREAM_BATCH,
                STREAM_BATCH_BYTES,
            )
            .await;
            (known, batch)
        }))
    }

    /// Backlog in id order, then live events as they commit, until the client
    /// goes away or the stream must stop.
    async fn run(self, wakeups: tokio::sync::watch::Receiver<EventId>) {
        if let Err(Some(stop)) = self.stream(wakeups).await {
            let _ = self.sender.send(Err(stop.into())).await;
        }
    }

    async fn stream(
        &self,
        mut wakeups: tokio::sync::watch::Receiver<EventId>,
    ) -> Result<(), Option<Stop>> {
        let mut floor = EventId::ZERO;
        // The first read always goes to the database: the tail may still hold
        // events that retention or a repository deletion removed since. Later
        // reads only take events that committed after the stream caught up.
        let mut caught_up_once = false;
        // While catching up, the next page is read while this one is sent.
        let mut next_page: Option<Prefetch> = None;
        loop {
            // Mark the current wake-up seen *before* reading, so a commit that
            // lands during the read wakes the wait below.
            wakeups.borrow_and_update();
            // Live: the shared tail covers everything after the floor.
            if next_page.is_none()
                && caught_up_once
                && let Some((events, high)) = self.hub.cached_after(floor)
            {
                for event in events {
                    if self.scope.wants(self.tenant, floor, &event) {
                        self.send(event.as_ref().into()).await?;
                    }
                }
                floor = floor.max(high);
                self.wait(&mut wakeups).await?;
                continue;
            }
            let page = next_page.take().unwrap_or_else(|| self.prefetch(floor));
            let read = async move {
                let mut page = page;
                (&mut page.0).await
            };
            let outcome = tokio::select! {
                biased;
                stop = self.stopped() => return Err(Some(stop)),
                outcome = read => outcome,
            };
            let (known, batch, caught_up) = match outcome {
                Ok((known, Ok(page))) => (known, page.events, page.complete),
                Ok((_, Err(error))) => {
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
                next_page = Some(self.prefetch(last.event_id));
            }
            for event in batch {
                floor = event.event_id;
                self.send(event.into()).await?;
            }
            if caught_up {
                caught_up_once = true;
                // Everything committed up to `known` was visible to that read.
                floor = floor.max(known);
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

        // Where each repository resumes: after_event_id for all, else the acks.
        let after_event_id = request.after_event_id.map(EventId::new);
        let (cursors, default_cursor) = match after_event_id {
            Some(after) => (Vec::new(), after),
            None => (
                store::consumer::cursors(&self.pool, tenant, &consumer).await?,
                EventId::ZERO,
            ),
        };
        // A cursor older than what retention deleted has lost events: refuse
        // rather than skip them. (0 and a new consumer mean "oldest retained".)
        let in_scope = |repository: &RepositoryId| {
            repositories.as_ref().is_none_or(|r| r.contains(repository))
        };
        let acked: HashMap<RepositoryId, EventId> = cursors.iter().copied().collect();
        for (repository, deleted_through) in
            store::consumer::retention_horizons(&self.pool, tenant).await?
        {
            let cursor = acked
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

        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let expires_in = Duration::from_secs(caller.expires_at.saturating_sub(unix_now()));
        let stream = OpenStream {
            pool: self.pool.clone(),
            hub: self.hub.clone(),
            tenant,
            scope: StreamScope {
                repositories,
                cursors,
                default_cursor,
            },
            registration: self.hub.register(caller.tenant.client_id.clone()),
            shutdown: self.shutdown.clone(),
            expires_at: tokio::time::Instant::now() + expires_in,
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
                Ok(Ack {
                    repository_id: parse_repository(&ack.repository_id)?,
                    event_id: EventId::new(ack.event_id),
                    failure,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let skipped = store::consumer::ack(&self.pool, caller.tenant.id, &consumer, &acks).await?;
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
            events: events.into_iter().map(Into::into).collect(),
            next_after_event_id,
        }))
    }
}
