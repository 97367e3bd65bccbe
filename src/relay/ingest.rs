//! Group commit for webhook ingest.
//!
//! Each webhook request hands its event to the server's writer and waits for
//! the outcome. The writer takes everything queued (up to a batch limit),
//! stores it in one statement that commits on its own and answers every
//! request only after the commit. Batches are sized by what is waiting,
//! never by a timer. While the load is light (few events in flight), a batch
//! starts at once beside the ones flushing (up to `PIPELINE`), so a webhook
//! never waits for another's commit before its own begins (PostgreSQL's own
//! group commit shares the flushes); under load it waits for one to land,
//! the batch grows meanwhile, and many webhooks share one INSERT and one WAL
//! flush. After each commit the streams are woken (`StreamHub::committed`),
//! never inside it, and handed the batch's own events when nothing can come
//! before them (`crate::relay`).
//!
//! The writer keeps the connections its batches used (`Connections`) and
//! takes the most recently used first: the next batch goes to the database
//! backend that ran the last one, still warm, and neither the pool's check
//! on handing a connection out nor the one on taking it back (a round trip
//! each) is on a webhook's path.
//!
//! Order: within a repository, ids follow the order in which batches draw
//! them (`crate::store::event`), and a webhook answered before another
//! arrives always has the lower id. Two webhooks of one repository in flight
//! at the same time are ordered by their draws, as they are when two servers
//! take them; within a batch, by arrival.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::Error;
use crate::relay::{CommittedBatch, StreamHub};
use crate::store;
use crate::store::event::{self, Appended, Ingested, NewEvent};

const MAX_BATCH_EVENTS: usize = 256;
/// Batches in flight at once. One (a batch forming only while the previous
/// one committed) made a webhook that arrived just after a commit began wait
/// for two: that commit, then its own.
pub const PIPELINE: usize = 3;
/// A batch starts beside others only while fewer events than this are in
/// flight. Under load, batches in flight side by side were smaller: more
/// statements per webhook, and at 32 concurrent a third more CPU per webhook
/// and a tenth less throughput than one batch at a time (docs/benchmarks.md).
const PIPELINE_EVENTS: usize = 4;
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
    let connections = Connections::default();
    // The batches in flight, each reporting its size when it has committed.
    // They are polled on the writer's own task: spawning each on a task of
    // its own woke another worker per batch, 6–20 µs of the relay's 171–185 µs
    // of CPU per webhook at one webhook at a time (docs/benchmarks.md). A
    // batch that panics fails its own webhooks only, as a task of its own did.
    let mut in_flight = FuturesUnordered::new();
    let mut events_in_flight = 0;
    loop {
        // Batches that landed first, then the next webhook; the batches in
        // flight progress while the writer waits for it.
        let first = tokio::select! {
            biased;
            Some(events) = in_flight.next() => {
                events_in_flight -= events;
                continue;
            }
            item = receiver.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        // Start beside the batches in flight only while they are small (the
        // load is light and a webhook would wait for their flush); under load
        // the batch grows in the queue until one lands.
        while in_flight.len() >= PIPELINE
            || (!in_flight.is_empty() && events_in_flight >= PIPELINE_EVENTS)
        {
            if let Some(events) = in_flight.next().await {
                events_in_flight -= events;
            }
        }
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
        let events = batch.len();
        events_in_flight += events;
        in_flight.push(
            AssertUnwindSafe(write(&pool, &connections, &streams, batch))
                .catch_unwind()
                .map(move |_| events),
        );
    }
    while in_flight.next().await.is_some() {}
}

/// Stores a batch, answers its webhooks, then hands the commit to the streams.
async fn write(
    pool: &sqlx::PgPool,
    connections: &Connections,
    streams: &StreamHub,
    batch: Vec<(NewEvent, Reply)>,
) {
    let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.into_iter().unzip();
    match connections.insert(pool, &events).await {
        Ok(Appended { outcomes, order }) => {
            for (reply, outcome) in replies.into_iter().zip(&outcomes) {
                let _ = reply.send(Ok(*outcome));
            }
            streams.committed(order.as_ref().map(|order| CommittedBatch {
                events: &events,
                outcomes: &outcomes,
                order,
            }));
            return;
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
                let outcome = connections
                    .insert(pool, std::slice::from_ref(&event))
                    .await
                    .and_then(|mut appended| {
                        appended
                            .outcomes
                            .pop()
                            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no outcome")))
                    });
                let _ = reply.send(outcome);
            }
        }
    }
    // Whatever committed of a failed batch, the listener reads it.
    streams.committed(None);
}

/// The writer's connections at rest, the most recently used last. They are
/// kept for as long as they work: the pool's maximum lifetime applies only to
/// connections resting in the pool.
#[derive(Debug, Default)]
struct Connections(Mutex<Vec<(PoolConnection<Postgres>, Instant)>>);

impl Connections {
    /// Stores `events` on a connection of the writer's (or a new one from
    /// `pool`). The connection is kept after a commit and closed after any
    /// error, so a broken one is never used twice. A connection that broke at
    /// rest (its backend terminated, a proxy's timeout) fails its first use:
    /// the batch is tried once more on one fresh from the pool, as a pool that
    /// checks every connection it hands out would have given it.
    async fn insert(&self, pool: &sqlx::PgPool, events: &[NewEvent]) -> Result<Appended, Error> {
        let mut connection = self.take(pool).await?;
        let mut outcome = event::insert_batch(&mut connection, events).await;
        if let Err(Error::Database(error)) = &outcome
            && crate::error::database_unavailable(error)
        {
            connection.close_on_drop();
            drop(connection);
            connection = Self::checked(pool).await?;
            outcome = event::insert_batch(&mut connection, events).await;
        }
        if outcome.is_ok() {
            self.0
                .lock()
                .expect("not poisoned")
                .push((connection, Instant::now()));
        } else {
            connection.close_on_drop();
        }
        outcome
    }

    /// A connection from `pool` that answers a ping: after one broke, the
    /// others may have broken with it (a restarted database) however
    /// recently they were used.
    async fn checked(pool: &sqlx::PgPool) -> Result<PoolConnection<Postgres>, Error> {
        let mut tries = pool.options().get_max_connections();
        loop {
            let mut connection = pool.acquire().await?;
            match connection.ping().await {
                Ok(()) => return Ok(connection),
                Err(error) if tries == 0 => return Err(error.into()),
                Err(_) => {
                    connection.close_on_drop();
                    tries -= 1;
                }
            }
        }
    }

    /// The most recently used connection; one idle for longer than the pool
    /// lets a connection rest unchecked is pinged first, as the pool would.
    async fn take(&self, pool: &sqlx::PgPool) -> Result<PoolConnection<Postgres>, Error> {
        loop {
            let rested = self.0.lock().expect("not poisoned").pop();
            let Some((mut connection, used)) = rested else {
                return Ok(pool.acquire().await?);
            };
            if store::check_if_idle(&mut connection, used.elapsed())
                .await
                .is_ok()
            {
                return Ok(connection);
            }
            connection.close_on_drop();
        }
    }
}
