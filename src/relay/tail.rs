//! The shared tail: the new events of the tenants with open streams on this
//! server, read once per wake-up into a bounded memory window that streams
//! filter instead of querying; and the re-reads of events an older
//! transaction holds back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::StreamHub;
use crate::domain::{EventId, Horizon, TenantId};
use crate::store;
use crate::store::event::{BatchOrder, Ingested, NewEvent, StoredEvent};
use crate::telemetry::SourceLabels;

/// The most events, and bytes of bodies, the shared tail keeps.
const TAIL_EVENTS: usize = 10_000;
const TAIL_BYTES: usize = 64 * 1024 * 1024;
const TAIL_FETCH: i64 = 1_000;

/// The committed events of `tenants` with transactions in [low, high), in
/// commit order: (transaction, id).
#[derive(Debug, Default)]
pub(super) struct Tail {
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
    pub(super) fn restart(&mut self, horizon: Option<Horizon>) {
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

impl StreamHub {
    /// The tail starts reading the tenant's events (one more open stream).
    pub(super) fn start_reading(&self, tenant: TenantId) {
        let mut tail = self.tail.write().expect("tail lock");
        let covered = tail.tenants.entry(tenant).or_default();
        covered.streams += 1;
        if covered.from.is_none() {
            // Until a read has included the tenant, its streams read from the
            // database: read now rather than at the next wake-up or backstop.
            self.local_commits.notify_one();
        }
    }

    /// One stream of the tenant closed; the tail stops reading its events
    /// after its last.
    pub(super) fn stop_reading(&self, tenant: TenantId) {
        let mut tail = self.tail.write().expect("tail lock");
        if let Some(covered) = tail.tenants.get_mut(&tenant) {
            covered.streams -= 1;
            if covered.streams == 0 {
                tail.tenants.remove(&tenant);
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
    pub(super) fn reset_tail(&self, horizon: Option<Horizon>) {
        self.tail.write().expect("tail lock").restart(horizon);
    }

    /// Reads the tail's tenants' events committed since the tail's end into
    /// it; returns the new end (None: the tail rests, no stream reads it) and
    /// what is held back (see `TailRead`). It reads on the listener's own
    /// connection: no pool checks (a round trip each) between a commit and
    /// its streams, and the same warm database backend every time.
    pub(super) async fn extend_tail(
        &self,
        db: &mut PgListener,
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
            let horizon = store::event::horizon(&mut *db).await?;
            let mut tail = self.tail.write().expect("tail lock");
            if tail.generation == generation {
                tail.restart(Some(horizon));
            }
            return Ok((Some(horizon), None));
        }
        let mut position = (start, EventId::ZERO);
        let mut read_events = Vec::new();
        let (horizon, held_back) = loop {
            let read = store::event::tail_after(&mut *db, position, &tenants, TAIL_FETCH).await?;
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
        // The read holds every event from `start` to its horizon; those below
        // the tail's end now were appended meanwhile by their own commit.
        let high = tail.high;
        let mut added = 0;
        for event in read_events.into_iter().filter(|e| e.txid >= high) {
            tail.push(event);
            added += 1;
        }
        self.count_tail_events("read", added);
        // Every event of these tenants below the horizon has been read.
        tail.high = tail.high.max(horizon);
        for tenant in &tenants {
            if let Some(covered) = tail.tenants.get_mut(&TenantId::from_uuid(*tenant))
                && covered.from.is_none()
            {
                covered.from = Some(start);
            }
        }
        tail.trim();
        Ok((Some(tail.high), held_back))
    }

    /// Takes a batch this server committed: appends its events to the tail
    /// when they are the next in commit order. They are when no older
    /// transaction was running once the batch's transaction id was assigned
    /// (none can commit an event below it any more), the tail is complete up
    /// to above the newest transaction below it with events (it holds every
    /// event below the batch), and the tail has not read past it already.
    /// None: a batch that failed, for the listener to read.
    pub(super) fn hand_over(&self, batch: Option<CommittedBatch<'_>>) -> Handover {
        let mut tail = self.tail.write().expect("tail lock");
        if tail.tenants.is_empty() {
            // Nobody reads the tail: forget it, as `extend_tail` does.
            if tail.known {
                tail.restart(None);
            }
            return Handover::Resting;
        }
        let Some(batch) = batch else {
            return Handover::Read;
        };
        let order = batch.order;
        if !order.oldest
            || !tail.known
            || tail.high > order.txid
            || order.newest_below.is_some_and(|below| below >= tail.high)
        {
            return Handover::Read;
        }
        let own = order.stored_events(batch.events, batch.outcomes, |tenant| {
            tail.tenants.contains_key(&tenant)
        });
        self.count_tail_events("commit", own.len());
        for event in own {
            tail.push(event);
        }
        // The batch's transaction has ended, and every one below it.
        tail.high = Horizon::new(order.txid.get() + 1);
        tail.trim();
        Handover::Appended(tail.high)
    }

    fn count_tail_events(&self, source: &'static str, events: usize) {
        if events > 0 {
            self.tail_events
                .get_or_create(&SourceLabels { source })
                .inc_by(events as u64);
        }
    }
}

/// What became of a batch this server committed (`StreamHub::hand_over`).
pub(super) enum Handover {
    /// Its events are in the tail, which now ends here.
    Appended(Horizon),
    /// No stream on this server reads the tail.
    Resting,
    /// The listener reads them.
    Read,
}

/// A batch this server committed: its events, their outcomes, and where it
/// stands in commit order.
#[derive(Debug, Clone, Copy)]
pub struct CommittedBatch<'a> {
    pub events: &'a [NewEvent],
    pub outcomes: &'a [Ingested],
    pub order: &'a BatchOrder,
}

impl Tail {
    fn push(&mut self, event: StoredEvent) {
        self.bytes += event.body.len();
        self.events.push_back(Arc::new(event));
    }

    /// Drops the oldest events beyond the tail's bounds.
    fn trim(&mut self) {
        while self.events.len() > TAIL_EVENTS || self.bytes > TAIL_BYTES {
            let Some(evicted) = self.events.pop_front() else {
                break;
            };
            self.bytes -= evicted.body.len();
            self.low = self.low.max(Horizon::new(evicted.txid.get() + 1));
        }
    }
}

/// Re-reads events that committed while an older transaction was running.
#[derive(Debug, Default)]
pub(super) struct HeldBack {
    /// When to re-read: None while nothing is held back.
    delay: Option<Duration>,
    /// The horizon delivery waits at, and since when.
    stuck: Option<(Horizon, tokio::time::Instant)>,
    warned: bool,
}

impl HeldBack {
    pub(super) async fn wait(&self) {
        match self.delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
    }

    pub(super) async fn update(
        &mut self,
        pool: &PgPool,
        high: Horizon,
        held_back: Option<Horizon>,
    ) {
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
