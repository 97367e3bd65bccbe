//! Group commit for webhook ingest.
//!
//! Each webhook request hands its event to the server's writer and waits for
//! the outcome. The writer takes everything queued (up to a batch limit),
//! stores it in one transaction and answers every request only after the
//! commit. So concurrent webhooks share one INSERT and one WAL flush, while a
//! lone webhook is written at once, with no timer in its way. After each
//! commit the streams are woken (`StreamHub::committed`), never inside it.
//!
//! One writer per server: while it commits, the next batch gathers in the
//! queue. Two writers (one committing while the other writes) made smaller
//! batches: more commits, more wake-ups of PostgreSQL per webhook, and on an
//! HA database more round trips to the standby. One writer measured better on
//! both (docs/benchmarks.md). Servers still commit in parallel with each
//! other: commit order takes no lock (`crate::store::event`).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::relay::StreamHub;
use crate::store::event::{self, Ingested, NewEvent};

const MAX_BATCH_EVENTS: usize = 256;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

type Reply = oneshot::Sender<Result<Ingested, Error>>;

/// The handle request handlers use; cheap to clone. The writer stops once every
/// handle is dropped and the queue is empty.
#[derive(Debug, Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<(NewEvent, Reply)>,
}

impl Ingestor {
    pub fn spawn(
        pool: sqlx::PgPool,
        streams: Arc<StreamHub>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(4 * MAX_BATCH_EVENTS);
        let writer = tokio::spawn(write_batches(pool, streams, receiver));
        (Self { queue }, writer)
    }

    /// Stores the event; returns once it is committed (or known to be a duplicate).
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, Error> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        outcome
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("the ingest writer stopped")))?
    }
}

async fn write_batches(
    pool: sqlx::PgPool,
    streams: Arc<StreamHub>,
    mut receiver: mpsc::Receiver<(NewEvent, Reply)>,
) {
    while let Some(first) = receiver.recv().await {
        let mut bytes = first.0.body.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
            match receiver.try_recv() {
                Ok(item) => {
                    bytes += item.0.body.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        write(&pool, batch).await;
        streams.committed();
    }
}

async fn write(pool: &sqlx::PgPool, batch: Vec<(NewEvent, Reply)>) {
    let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.into_iter().unzip();
    match event::insert_batch(pool, &events).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) if events.len() == 1 => {
            let _ = replies
                .into_iter()
                .next()
                .expect("one reply")
                .send(Err(error));
        }
        // One bad event (say, its repository was deleted a moment ago) must not
        // fail its neighbours: retry each on its own.
        Err(_) => {
            for (event, reply) in events.into_iter().zip(replies) {
                let outcome = event::insert_batch(pool, std::slice::from_ref(&event))
                    .await
                    .and_then(|mut o| {
                        o.pop()
                            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no outcome")))
                    });
                let _ = reply.send(outcome);
            }
        }
    }
}
