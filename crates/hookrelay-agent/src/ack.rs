//! Sends the agent's acks in the background, batched: at most one AckEvents
//! call goes out per `ACK_INTERVAL` (each is a commit on the server), except
//! that a flush (before a reconnect or exit) goes at once. Every ack carries
//! its delivery's outcome, status code, attempts and duration, which the
//! server records per event. So a kill -9 re-delivers at most what was
//! delivered in the last interval and while the last ack call was in flight.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use secrecy::ExposeSecret;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use super::token::TokenSource;
use hookrelay_proto::event_service_client::EventServiceClient;
use hookrelay_proto::{AckEventsRequest, AckOutcome, EventAck};

/// Waiting longer than this for acks to reach the server only risks duplicates, never loss.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two ack calls, unless a flush is waiting.
const ACK_INTERVAL: Duration = Duration::from_millis(20);
/// Acks per call, at most (the server takes up to 10,000).
const MAX_ACKS_PER_CALL: usize = 5_000;

#[derive(Debug, Clone)]
pub struct PendingAck {
    pub repository_id: String,
    pub event_id: i64,
    pub outcome: AckOutcome,
    pub failure_reason: String,
    /// The event's redelivery_id, if it was a redelivery.
    pub redelivery_id: String,
    pub status_code: u16,
    pub attempts: u32,
    pub duration_ms: u32,
}

enum Command {
    Ack(PendingAck),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AckSender(mpsc::Sender<Command>);

impl AckSender {
    pub async fn push(&self, ack: PendingAck) {
        let _ = self.0.send(Command::Ack(ack)).await;
    }
}

pub struct Acker {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Batch {
    acks: Vec<EventAck>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    fn add(&mut self, ack: PendingAck) {
        self.acks.push(EventAck {
            repository_id: ack.repository_id,
            event_id: ack.event_id,
            outcome: ack.outcome.into(),
            failure_reason: ack.failure_reason,
            redelivery_id: ack.redelivery_id,
            status_code: Some(i32::from(ack.status_code)),
            attempts: Some(ack.attempts),
            duration_ms: Some(ack.duration_ms),
        });
    }

    /// The next call's acks, oldest first.
    fn request(&self, consumer: &str) -> AckEventsRequest {
        AckEventsRequest {
            consumer: consumer.to_owned(),
            acks: self.acks[..self.acks.len().min(MAX_ACKS_PER_CALL)].to_vec(),
        }
    }

    /// Forgets the acks `request` sent.
    fn sent(&mut self) {
        let sent = self.acks.len().min(MAX_ACKS_PER_CALL);
        self.acks.drain(..sent);
    }
}

impl Acker {
    pub fn spawn(
        client: EventServiceClient<Channel>,
        tokens: Arc<TokenSource>,
        consumer: String,
    ) -> Self {
        let (commands, receiver) = mpsc::channel(1024);
        let task = tokio::spawn(send_acks(client, tokens, consumer, receiver));
        Self { commands, task }
    }

    /// A handle that only pushes acks, for delivery lanes.
    pub fn sender(&self) -> AckSender {
        AckSender(self.commands.clone())
    }

    /// Waits until every ack pushed so far has reached the server.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).await.is_ok()
            && tokio::time::timeout(FLUSH_TIMEOUT, flushed).await.is_err()
        {
            tracing::warn!(
                "acks did not reach the server in time; their events may be delivered again"
            );
        }
    }

    /// Flushes, then stops the task (delivery lanes may still hold senders,
    /// but nothing is delivered after shutdown, so nothing more is acked).
    pub async fn close(self) {
        self.flush().await;
        self.task.abort();
    }
}

async fn send_acks(
    mut client: EventServiceClient<Channel>,
    tokens: Arc<TokenSource>,
    consumer: String,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut batch = Batch::default();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = retry_backoff();
    let mut last_sent: Option<tokio::time::Instant> = None;
    let mut skipped_logged = std::collections::HashSet::new();
    loop {
        // Block only when there is nothing to send.
        if batch.is_empty() {
            match commands.recv().await {
                Some(Command::Ack(ack)) => batch.add(ack),
                Some(Command::Flush(done)) => {
                    let _ = done.send(());
                    continue;
                }
                None => return,
            }
        }
        // Collect what else arrives until the interval since the last call is up.
        if let Some(due) = last_sent.map(|at| at + ACK_INTERVAL) {
            while waiters.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => break,
                    command = commands.recv() => match command {
                        Some(Command::Ack(ack)) => batch.add(ack),
                        Some(Command::Flush(done)) => waiters.push(done),
                        None => break,
                    },
                }
            }
        }
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Ack(ack) => batch.add(ack),
                Command::Flush(done) => waiters.push(done),
            }
        }
        let sent = match send(&mut client, &tokens, batch.request(&consumer)).await {
            Ok(skipped) => {
                for repository_id in skipped {
                    if skipped_logged.insert(repository_id.clone()) {
                        tracing::warn!(
                            repository_id,
                            "the server skipped acks for a repository it no longer knows (deleted?); dropping them"
                        );
                    }
                }
                Ok(())
            }
            // A server without skipped acks fails the whole batch instead.
            // Dropping it only means its events may be delivered again.
            Err(status) if status.code() == tonic::Code::NotFound => {
                tracing::warn!(
                    message = status.message(),
                    "the server refused a batch of acks; dropping it (its events may be delivered again)"
                );
                Ok(())
            }
            Err(status) => Err(status),
        };
        match sent {
            Ok(()) => {
                last_sent = Some(tokio::time::Instant::now());
                batch.sent();
                backoff = retry_backoff();
                if batch.is_empty() {
                    for done in waiters.drain(..) {
                        let _ = done.send(());
                    }
                }
            }
            Err(status) => {
                if status.code() == tonic::Code::Unauthenticated {
                    tokens.invalidate().await;
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(code = ?status.code(), message = status.message(), "ack failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn send(
    client: &mut EventServiceClient<Channel>,
    tokens: &TokenSource,
    request: AckEventsRequest,
) -> Result<Vec<String>, tonic::Status> {
    let token = tokens
        .token()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let mut request = tonic::Request::new(request);
    let bearer = format!("Bearer {}", token.expose_secret())
        .parse()
        .map_err(|_| tonic::Status::internal("the token is not valid metadata"))?;
    request.metadata_mut().insert("authorization", bearer);
    client
        .ack_events(request)
        .await
        .map(|response| response.into_inner().skipped_repository_ids)
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}
