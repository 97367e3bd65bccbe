//! One open event stream: the consumer's backlog in id order per repository,
//! then live events from the shared tail as they commit, with signals (seeks,
//! redeliveries, deletion) applied between events, until the client leaves,
//! its token expires or the server stops. Speaks `hookrelay-proto` types: it
//! is what `StreamEvents` returns.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{StreamHub, StreamRegistration};
use crate::domain::{ConsumerName, EventId, Horizon, TenantId};
use crate::error::Error;
use crate::secrets::SecretKey;
use crate::store;
use crate::store::consumer::Change;
use crate::store::event::{StoredEvent, StreamPage, StreamScope};
use hookrelay_proto as proto;

/// Events read per query while catching up.
const STREAM_BATCH: i64 = 1000;
/// Bytes of bodies read per query, at most (a page holds at least one event).
const STREAM_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Events buffered per stream ahead of the client: the stream's backpressure.
const STREAM_BUFFER: usize = 128;
/// Redeliveries a stream remembers having sent (so as not to send them twice
/// while their acks are under way); past this, it forgets and may resend.
const MAX_SENT_REDELIVERIES: usize = 10_000;

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

/// What every stream of a server shares; cheap to clone.
#[derive(Clone)]
pub struct Streams {
    pub pool: sqlx::PgPool,
    pub hub: Arc<StreamHub>,
    /// Opens the sealed headers of events (GitLab's token) for the agent.
    pub secret_key: Arc<SecretKey>,
    pub events_sent: Counter,
    /// Cancelled when the server shuts down: streams end with UNAVAILABLE.
    pub shutdown: CancellationToken,
    /// HOOKRELAY_MAX_STREAM_AGE (zero: none).
    pub max_age: Duration,
}

/// A stream about to start: its consumer, where it reads, its registration.
pub struct Start {
    pub tenant: TenantId,
    pub consumer: ConsumerName,
    pub scope: StreamScope,
    pub registration: StreamRegistration,
    /// Until its access token expires.
    pub expires_in: Duration,
}

impl Streams {
    /// Starts the stream in a task of its own; the client reads what it sends.
    pub fn start(&self, start: Start) -> ReceiverStream<Result<proto::Event, Status>> {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        // The token's expiry, or the stream's maximum age if that comes first.
        let (lifetime, ending) = match stream_age(self.max_age) {
            Some(age) if age < start.expires_in => (age, Stop::MaxAge),
            _ => (start.expires_in, Stop::Expired),
        };
        let stream = OpenStream {
            pool: self.pool.clone(),
            hub: self.hub.clone(),
            tenant: start.tenant,
            consumer: start.consumer,
            scope: start.scope,
            sent_redeliveries: Vec::new(),
            events_sent: self.events_sent.clone(),
            registration: start.registration,
            secret_key: self.secret_key.clone(),
            shutdown: self.shutdown.clone(),
            expires_at: tokio::time::Instant::now() + lifetime,
            ending,
            sender,
        };
        tokio::spawn(stream.run(self.hub.subscribe()));
        ReceiverStream::new(receiver)
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
    async fn send(&self, event: proto::Event) -> Result<(), Option<Stop>> {
        if let Some(stop) = self.stop_now() {
            return Err(Some(stop));
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
            let streamed = self
                .scope
                .repositories
                .as_ref()
                .is_none_or(|repositories| repositories.contains(&event.repository_id));
            if streamed {
                let mut event = self.for_agent(&event);
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
    async fn send_next(&mut self, event: &StoredEvent) -> Result<(), Option<Stop>> {
        self.scope
            .cursors
            .insert(event.repository_id, event.event_id);
        self.send(self.for_agent(event)).await
    }

    /// Only this stream, to the tenant's agent, carries a secret header in clear.
    fn for_agent(&self, event: &StoredEvent) -> proto::Event {
        let (headers, dropped) = event.headers_for_agent(&self.secret_key);
        if dropped > 0 {
            tracing::warn!(
                event_id = event.event_id.get(),
                "a sealed header of the event does not open with this server's key; sent without it"
            );
        }
        to_proto(event, headers)
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
                        self.send_next(&event).await?;
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
                self.send_next(&event).await?;
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

/// An event as the gRPC API sends it, with `headers` (opened for the agent's
/// stream, redacted for anything else).
pub fn to_proto(event: &StoredEvent, headers: Vec<(String, String)>) -> proto::Event {
    proto::Event {
        id: event.event_id.get(),
        repository_id: event.repository_id.to_string(),
        provider: event.provider.as_str().to_owned(),
        event_type: event.event_type.clone(),
        delivery_id: event.delivery_id.clone(),
        received_at: Some(prost_types::Timestamp {
            seconds: event.received_at.unix_timestamp(),
            nanos: i32::try_from(event.received_at.nanosecond()).unwrap_or_default(),
        }),
        headers: headers
            .into_iter()
            .map(|(name, value)| proto::Header { name, value })
            .collect(),
        body: event.body.clone(),
        redelivery: false,
        redelivery_id: String::new(),
        branch: event.branch.clone(),
        tag: event.tag.clone(),
        traceparent: event.traceparent.clone(),
        repository_name: event.repository_name.clone(),
    }
}
