//! The event log, and why no reader ever skips an event.
//!
//! Event ids come from a sequence, and a plain sequence lets id 10 commit
//! before id 9: a reader that has passed 10 would skip 9 for ever. Until
//! migration `commit_order_without_a_global_lock` one advisory lock, held
//! through every commit, put all ids in commit order; it also serialised every
//! ingest commit of the fleet, and on an HA database each commit waits for a
//! standby in another zone. Now two rules replace it.
//!
//! **Per repository, ids and transaction ids rise together.** `append_events`
//! (the only way in: `event.txid` has no default; this release calls its body
//! as `append_events_in_order`, which also says where the batch stands in
//! commit order, see `BatchOrder`) must be the first write of
//! its transaction. It takes the advisory lock of each repository in the
//! batch, in key order; only then is the transaction id assigned and are the
//! ids drawn; then it releases the locks, before the commit. So of two
//! transactions appending to one repository, the one that draws its ids
//! second also gets the higher transaction id. The locks order the drawing,
//! not the commits: writers never wait for each other's WAL flush, and on an
//! HA database never for each other's standby acknowledgement.
//!
//! **Readers stop at their snapshot's horizon.** Each event records its
//! transaction id. A snapshot's xmin is the oldest transaction still running;
//! every transaction below it has ended. A reader that takes only events with
//! `txid < xmin` of its snapshot (its `Horizon`) has seen all there will ever
//! be below that horizon: an event committed later belongs to a transaction
//! at or above it. So "everything below horizon H" is a prefix that never
//! grows, and the shared tail and the watches advance from horizon to horizon.
//!
//! **So within a repository no reader skips.** If event e of repository R lies
//! below a reader's horizon, so does every event e' of R with a lower id: e'
//! was drawn by a transaction T' before e's transaction T drew e (or by T
//! itself), so T'.txid < T.txid < horizon, and T' has ended: e' has committed
//! (and is visible) or rolled back (and will never exist). Streams, acks and
//! cursors are per repository and page by `event_id > cursor` within each,
//! up to a horizon: a later event of a repository is never delivered while an
//! earlier one is still to come, however the commits interleave.
//!
//! The price: any transaction that holds a transaction id delays (never
//! loses) the delivery of events committed after it started until it ends,
//! however unrelated it is. hookrelay's own transactions are short; an operator's
//! open `BEGIN` in psql is not, and the listener warns about one that holds
//! the horizon back (`crate::relay`).
//!
//! Throughput: a writer carries a whole batch (see `crate::relay::ingest`) in one
//! statement that commits on its own: one round trip, one multi-row INSERT and
//! one WAL flush for many webhooks; concurrent writers' commits proceed in
//! parallel and share PostgreSQL's own group commit.

use std::collections::HashMap;

use bytes::Bytes;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgPool};
use time::OffsetDateTime;
use tokio_stream::StreamExt;

use super::sealing::SealedHeaders;
use crate::domain::{
    DeliveryId, EventFilter, EventId, Horizon, Provider, RepositoryId, TenantId, event_selected,
};
use crate::error::{Error, violated_constraint};
use crate::secrets::SecretKey;

/// The NOTIFY channel that announces new events, sent by the server after
/// its commits (never inside them); the payload names the sending server.
pub const NOTIFY_CHANNEL: &str = "hookrelay_events";

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub tenant_id: TenantId,
    pub repository_id: RepositoryId,
    pub provider: Provider,
    pub event_type: String,
    pub delivery_id: DeliveryId,
    pub received_at: OffsetDateTime,
    /// Sealed on the way in: `SealedHeaders::seal`.
    pub headers: SealedHeaders,
    pub body: Bytes,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The W3C trace context of the ingest span, when traces are exported.
    pub traceparent: Option<String>,
}

impl NewEvent {
    /// Whether PostgreSQL can store the event's text columns: text cannot hold
    /// NUL (no git ref or event name has one). Checked before the event joins a
    /// batch, so that one such event cannot fail its neighbours.
    pub fn check_storable(&self) -> Result<(), Error> {
        let texts = [
            ("event_type", Some(self.event_type.as_str())),
            ("ref", self.branch.as_deref()),
            ("ref", self.tag.as_deref()),
        ];
        match texts
            .iter()
            .find(|(_, text)| text.is_some_and(|t| t.contains('\0')))
        {
            Some((field, _)) => Err(Error::invalid(field, "contains a NUL character")),
            None => Ok(()),
        }
    }
}

/// The outcome of ingesting one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Created(EventId),
    /// The delivery id was seen before for this repository: the stored event's id.
    Duplicate(EventId),
}

/// A batch appended: one outcome per event, in order, and, when it created
/// any event, where the batch stands in commit order.
#[derive(Debug)]
pub struct Appended {
    pub outcomes: Vec<Ingested>,
    pub order: Option<BatchOrder>,
}

/// Where a committed batch stands in commit order (`append_events_in_order`):
/// whether its own events can go to the shared tail without being read back
/// (`crate::relay`).
#[derive(Debug, Clone)]
pub struct BatchOrder {
    /// The batch's transaction.
    pub txid: Horizon,
    /// No older transaction was running once the batch's rows were in: none
    /// can commit an event below it any more.
    pub oldest: bool,
    /// The newest transaction below the batch's that appended events.
    pub newest_below: Option<Horizon>,
    /// The name of each repository the batch created events in.
    repository_names: Vec<(RepositoryId, String)>,
}

impl BatchOrder {
    /// The events the batch created, as a read of them would return them, of
    /// the tenants `wanted` only; in commit order.
    pub fn stored_events(
        &self,
        events: &[NewEvent],
        outcomes: &[Ingested],
        wanted: impl Fn(TenantId) -> bool,
    ) -> Vec<StoredEvent> {
        let mut stored: Vec<StoredEvent> = events
            .iter()
            .zip(outcomes)
            .filter_map(|(event, outcome)| match outcome {
                Ingested::Created(id) if wanted(event.tenant_id) => Some(StoredEvent {
                    tenant_id: event.tenant_id,
                    event_id: *id,
                    repository_id: event.repository_id,
                    provider: event.provider,
                    event_type: event.event_type.clone(),
                    delivery_id: event.delivery_id.as_str().to_owned(),
                    // PostgreSQL keeps microseconds.
                    received_at: event
                        .received_at
                        .replace_nanosecond(event.received_at.nanosecond() / 1_000 * 1_000)
                        .expect("a whole number of microseconds is a valid nanosecond"),
                    headers: event.headers.clone(),
                    body: event.body.to_vec(),
                    branch: event.branch.clone(),
                    tag: event.tag.clone(),
                    traceparent: event.traceparent.clone(),
                    txid: self.txid,
                    repository_name: self
                        .repository_names
                        .iter()
                        .find(|(repository, _)| *repository == event.repository_id)
                        .map(|(_, name)| name.clone())
                        .unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        stored.sort_by_key(|event| event.event_id);
        stored
    }
}

/// What an event's arguments take beside its body, with room to spare: ids,
/// names, the time, its headers (a few hundred bytes from GitHub). More only
/// grows the buffer once.
const ARGUMENT_BYTES_BESIDE_BODY: usize = 2048;

/// Inserts a batch in one statement (its own transaction) and returns one
/// outcome per event, in order. A failure fails the whole batch; the caller
/// retries events one by one.
pub async fn insert_batch(
    conn: &mut sqlx::PgConnection,
    events: &[NewEvent],
) -> Result<Appended, Error> {
    let mut tenant_ids = Vec::with_capacity(events.len());
    let mut repository_ids = Vec::with_capacity(events.len());
    let mut providers = Vec::with_capacity(events.len());
    let mut event_types = Vec::with_capacity(events.len());
    let mut delivery_ids = Vec::with_capacity(events.len());
    let mut received = Vec::with_capacity(events.len());
    let mut headers = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    let mut branches = Vec::with_capacity(events.len());
    let mut tags = Vec::with_capacity(events.len());
    let mut traceparents = Vec::with_capacity(events.len());
    for event in events {
        tenant_ids.push(event.tenant_id.as_uuid());
        repository_ids.push(event.repository_id.as_uuid());
        providers.push(event.provider.as_str());
        event_types.push(event.event_type.as_str());
        delivery_ids.push(event.delivery_id.as_str());
        received.push(event.received_at);
        headers.push(event.headers.stored());
        bodies.push(event.body.as_ref());
        branches.push(event.branch.as_deref());
        tags.push(event.tag.as_deref());
        traceparents.push(event.traceparent.as_deref());
    }
    // The statement commits when it completes, before the answer arrives.
    type Row = (i64, uuid::Uuid, String, String, i64, bool, Option<i64>);
    // The encoded arguments hold every body: reserved at once, not grown by
    // doubling (a copy of all that came before at each step).
    let mut arguments = PgArguments::default();
    arguments.reserve(
        11,
        events
            .iter()
            .map(|event| event.body.len() + ARGUMENT_BYTES_BESIDE_BODY)
            .sum(),
    );
    let encoded = (|| {
        arguments.add(&tenant_ids)?;
        arguments.add(&repository_ids)?;
        arguments.add(&providers)?;
        arguments.add(&event_types)?;
        arguments.add(&delivery_ids)?;
        arguments.add(&received)?;
        arguments.add(&headers)?;
        arguments.add(&bodies)?;
        arguments.add(&branches)?;
        arguments.add(&tags)?;
        arguments.add(&traceparents)
    })();
    encoded.map_err(|e| Error::Internal(anyhow::anyhow!("encoding a batch of events: {e}")))?;
    let inserted: Vec<Row> = sqlx::query_as_with(
        "select appended_event_id, appended_repository_id, appended_delivery_id, \
                appended_repository_name, batch_txid, batch_oldest, newest_below \
         from append_events_in_order($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                            $6::timestamptz[], $7::jsonb[], $8::bytea[], $9::text[], $10::text[], $11::text[])",
        arguments,
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        // The repository was deleted between the signature check and the insert.
        Some("event_repository_id_fkey" | "event_tenant_id_fkey") => Error::NotFound("repository"),
        _ => e.into(),
    })?;

    // The same on every row.
    let mut order = inserted.first().map(|row| BatchOrder {
        txid: Horizon::new(row.4),
        oldest: row.5,
        newest_below: row.6.map(Horizon::new),
        repository_names: Vec::new(),
    });
    let mut outcomes: Vec<Option<Ingested>> = vec![None; events.len()];
    for (id, repository_id, delivery_id, name, ..) in inserted {
        if let Some(order) = &mut order {
            let repository = RepositoryId::from_uuid(repository_id);
            if !order.repository_names.iter().any(|(r, _)| *r == repository) {
                order.repository_names.push((repository, name));
            }
        }
        // The first event in the batch with this key is the one that was inserted.
        if let Some(index) = events.iter().enumerate().position(|(i, e)| {
            outcomes[i].is_none()
                && e.repository_id.as_uuid() == repository_id
                && e.delivery_id.as_str() == delivery_id
        }) {
            outcomes[index] = Some(Ingested::Created(EventId::new(id)));
        }
    }
    if outcomes.iter().any(Option::is_none) {
        // The conflicting rows are committed: the insert waited for them.
        let existing: Vec<(i64, uuid::Uuid, String)> = sqlx::query_as(
            "select e.event_id, e.repository_id, e.delivery_id from event e \
             join unnest($1::uuid[], $2::text[]) as k(repository_id, delivery_id) \
               on e.repository_id = k.repository_id and e.delivery_id = k.delivery_id",
        )
        .bind(&repository_ids)
        .bind(&delivery_ids)
        .fetch_all(&mut *conn)
        .await?;
        for (i, event) in events.iter().enumerate() {
            if outcomes[i].is_none() {
                outcomes[i] = existing
                    .iter()
                    .find(|(_, r, d)| {
                        *r == event.repository_id.as_uuid() && d == event.delivery_id.as_str()
                    })
                    .map(|(id, _, _)| Ingested::Duplicate(EventId::new(*id)));
            }
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| Error::Internal(anyhow::anyhow!("ingested event has no id"))))
        .collect::<Result<_, _>>()?;
    Ok(Appended { outcomes, order })
}

/// A stored event, as streamed and listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub tenant_id: TenantId,
    pub event_id: EventId,
    pub repository_id: RepositoryId,
    #[sqlx(try_from = "String")]
    pub provider: Provider,
    pub event_type: String,
    pub delivery_id: String,
    pub received_at: OffsetDateTime,
    /// Opened for the agent or redacted for everyone else: see below.
    pub headers: SealedHeaders,
    pub body: Vec<u8>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub traceparent: Option<String>,
    /// The transaction that appended it: its place in commit order across
    /// repositories (see the module's documentation).
    pub txid: Horizon,
    /// The repository's registered name (looked up by primary key per row).
    pub repository_name: String,
}

impl StoredEvent {
    /// The headers to replay, secret values opened, and how many did not open
    /// (sealed under another key) and were left out.
    pub fn headers_for_agent(&self, key: &SecretKey) -> (Vec<(String, String)>, usize) {
        self.headers.opened(self.provider, self.repository_id, key)
    }

    /// The headers to show, secret values as `[sealed]`.
    pub fn headers_redacted(&self) -> Vec<(String, String)> {
        self.headers.redacted(self.provider)
    }
}

/// The columns of a `StoredEvent`, for `select stored_event!() from event e`.
macro_rules! stored_event {
    () => {
        "e.tenant_id, e.event_id, e.repository_id, e.provider, e.event_type, \
         e.delivery_id, e.received_at, e.headers, e.body, e.branch, e.tag, e.traceparent, e.txid, \
         coalesce((select r.name from repository r where r.repository_id = e.repository_id), '') as repository_name"
    };
}
pub(crate) use stored_event;

/// Which events a stream reads: some repositories, or all of the tenant's.
#[derive(Debug, Clone)]
pub struct StreamScope {
    /// None: every repository of the tenant, including ones registered later.
    pub repositories: Option<Vec<RepositoryId>>,
    /// Per repository, the id after which to read: the consumer's ack, moved
    /// on by the stream as it sends (events are sent in id order per repository).
    pub cursors: HashMap<RepositoryId, EventId>,
    /// The cursor of repositories without one of their own.
    pub default_cursor: EventId,
    pub filter: EventFilter,
}

/// A stream page: events in id order, and whether it holds everything
/// committed after the floor (when it does not, read on from its last id).
#[derive(Debug)]
pub struct StreamPage {
    pub events: Vec<StoredEvent>,
    pub complete: bool,
}

/// The next events of a stream: for each repository, those after
/// max(its cursor, `after`) whose transaction lies below `upper` (a horizon
/// from an earlier snapshot, so everything below it is visible now). The page
/// is the lowest `limit` ids of those, so when it is not complete the next
/// page reads on with `after` = its last id and the same `upper`: every
/// event below `upper` with a lower id was in this page. Within a repository
/// the events below a horizon are a prefix of its ids (see the module's
/// documentation), so a repository's events come in id order and none is
/// passed over.
///
/// Each repository's next ids come from a short walk of its
/// (repository_id, event_id) index, which carries the transaction id; only
/// the page's rows (and their bodies) are read. So a page costs the same
/// however far behind the stream is. A page stops early once its bodies pass
/// `max_bytes` (it always holds at least one event), so large webhooks cannot
/// make a page huge.
pub async fn stream_batch(
    pool: &PgPool,
    tenant_id: TenantId,
    scope: &StreamScope,
    upper: Horizon,
    after: EventId,
    limit: i64,
    max_bytes: usize,
) -> Result<StreamPage, Error> {
    let (cursor_repositories, cursor_values): (Vec<uuid::Uuid>, Vec<i64>) = scope
        .cursors
        .iter()
        .map(|(r, c)| (r.as_uuid(), c.get()))
        .unzip();
    let repositories: Option<Vec<uuid::Uuid>> = scope
        .repositories
        .as_ref()
        .map(|ids| ids.iter().map(RepositoryId::as_uuid).collect());
    let likes = scope.filter.likes();
    let query = concat!(
        "with cursors as ( \
             select r.repository_id, greatest(coalesce(k.after, $4), $5) as after \
             from repository r \
             left join unnest($2::uuid[], $3::bigint[]) as k(repository_id, after) on k.repository_id = r.repository_id \
             where r.tenant_id = $1 and ($6::uuid[] is null or r.repository_id = any($6)) \
         ), filter as ( \
             select $8::text[] as event_type_likes, $9::text[] as branch_likes, $10::text[] as tag_likes \
         ), page as ( \
             select n.event_id from cursors c \
             cross join lateral ( \
                 select e.event_id from event e, filter \
                 where e.repository_id = c.repository_id and e.event_id > c.after and e.txid < $11 and ",
        event_selected!("e", "filter"),
        " order by e.event_id limit $7 \
             ) n \
             order by n.event_id limit $7 \
         ) \
         select ",
        stored_event!(),
        " from page join event e on e.event_id = page.event_id \
         where e.tenant_id = $1 \
         order by e.event_id",
    );
    let mut rows = sqlx::query_as::<_, StoredEvent>(query)
        .bind(tenant_id)
        .bind(cursor_repositories)
        .bind(cursor_values)
        .bind(scope.default_cursor)
        .bind(after)
        .bind(repositories)
        .bind(limit)
        .bind(&likes.event_types)
        .bind(&likes.branches)
        .bind(&likes.tags)
        .bind(upper)
        .fetch(pool);
    // Rows past the byte cap are read off the wire one at a time and dropped.
    let (mut events, mut bytes, mut rows_in_page) = (Vec::new(), 0usize, 0i64);
    while let Some(event) = rows.next().await {
        let event = event?;
        rows_in_page += 1;
        if bytes < max_bytes {
            bytes += event.body.len();
            events.push(event);
        }
    }
    Ok(StreamPage {
        complete: rows_in_page < limit && events.len() as i64 == rows_in_page,
        events,
    })
}

/// A page of one repository's retained events after `after`.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
    after: EventId,
    limit: i64,
) -> Result<Vec<StoredEvent>, Error> {
    let events = sqlx::query_as(concat!(
        "select ",
        stored_event!(),
        " from event e \
         where e.tenant_id = $1 and e.repository_id = $2 and e.event_id > $3 \
         order by e.event_id limit $4"
    ))
    .bind(tenant_id)
    .bind(repository_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(events)
}

/// An event without its headers and body, as event lists show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventSummary {
    pub event_id: EventId,
    pub repository_id: RepositoryId,
    pub provider: String,
    pub event_type: String,
    pub delivery_id: String,
    pub received_at: OffsetDateTime,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub size: i64,
}

/// What `newest` lists; None matches anything.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub repository_id: Option<RepositoryId>,
    pub event_type: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub before: Option<EventId>,
}

/// The tenant's newest events matching `query`, newest first. Each repository
/// contributes from its own (repository_id, event_id) index, so a small
/// tenant's list costs the same however busy the others are. `size` comes
/// from the stored value's header: the body is not read.
pub async fn newest(
    pool: &PgPool,
    tenant_id: TenantId,
    query: &EventQuery,
    limit: i64,
) -> Result<Vec<EventSummary>, Error> {
    let events = sqlx::query_as(
        "select n.* from repository r cross join lateral ( \
             select e.event_id, e.repository_id, e.provider, e.event_type, e.delivery_id, e.received_at, \
                    e.branch, e.tag, octet_length(e.body)::bigint as size \
             from event e where e.repository_id = r.repository_id and e.event_id < $3 \
               and ($4::text is null or e.event_type = $4) and ($5::text is null or e.branch = $5) \
               and ($6::text is null or e.tag = $6) \
             order by e.event_id desc limit $7 \
         ) n \
         where r.tenant_id = $1 and ($2::uuid is null or r.repository_id = $2) \
         order by n.event_id desc limit $7",
    )
    .bind(tenant_id)
    .bind(query.repository_id)
    .bind(query.before.unwrap_or(EventId::MAX))
    .bind(query.event_type.as_deref())
    .bind(query.branch.as_deref())
    .bind(query.tag.as_deref())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(events)
}

/// Where a watch reads on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// The events after this id (the watch's first read), in id order.
    Id(EventId),
    /// The events after this place in commit order: (transaction, id).
    Position(Horizon, EventId),
}

/// The tenant's events after `from` whose transaction lies below `upper`, in
/// the order they are read on in, for watching. When a read in id order is
/// complete, everything below `upper` after that id has been seen, and the
/// watch goes on from `Position(upper, 0)`: a later event has a transaction at
/// or above `upper`, so reading on in commit order misses none.
pub async fn summaries_after(
    pool: &PgPool,
    tenant_id: TenantId,
    from: WatchFrom,
    upper: Horizon,
    repositories: &[RepositoryId],
    event_types: &[String],
    limit: i64,
) -> Result<Vec<(EventSummary, Horizon)>, Error> {
    let repositories: Vec<uuid::Uuid> = repositories.iter().map(RepositoryId::as_uuid).collect();
    macro_rules! watched {
        ($order:literal) => {
            concat!(
                "select e.event_id, e.repository_id, e.provider, e.event_type, e.delivery_id, e.received_at, \
                        e.branch, e.tag, octet_length(e.body)::bigint as size, e.txid \
                 from event e where e.tenant_id = $1 and e.txid < $4 \
                   and (cardinality($5::uuid[]) = 0 or e.repository_id = any($5)) \
                   and (cardinality($6::text[]) = 0 or e.event_type = any($6)) \
                   and ",
                $order,
                " limit $7"
            )
        };
    }
    let (query, txid, after) = match from {
        WatchFrom::Id(after) => (
            watched!("e.event_id > $3 and $2::bigint is not null order by e.event_id"),
            Horizon::ZERO,
            after,
        ),
        WatchFrom::Position(txid, after) => (
            watched!("(e.txid, e.event_id) > ($2, $3) order by e.txid, e.event_id"),
            txid,
            after,
        ),
    };
    let rows: Vec<WatchedSummary> = sqlx::query_as(query)
        .bind(tenant_id)
        .bind(txid)
        .bind(after)
        .bind(upper)
        .bind(&repositories)
        .bind(event_types)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.summary, row.txid))
        .collect())
}

#[derive(sqlx::FromRow)]
struct WatchedSummary {
    #[sqlx(flatten)]
    summary: EventSummary,
    txid: Horizon,
}

/// One of the tenant's retained events.
pub async fn get(
    pool: &PgPool,
    tenant_id: TenantId,
    event_id: EventId,
) -> Result<Option<StoredEvent>, Error> {
    let event = sqlx::query_as(concat!(
        "select ",
        stored_event!(),
        " from event e where e.event_id = $1 and e.tenant_id = $2"
    ))
    .bind(event_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(event)
}

/// `pg_snapshot_xmin` of the statement's snapshot, as a bigint.
macro_rules! snapshot_horizon {
    () => {
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    };
}

/// The horizon of a snapshot taken now: every transaction below it has ended.
pub async fn horizon(db: impl sqlx::PgExecutor<'_>) -> Result<Horizon, Error> {
    let horizon = sqlx::query_scalar(concat!("select ", snapshot_horizon!()))
        .fetch_one(db)
        .await?;
    Ok(horizon)
}

/// Who runs the transaction `horizon` (the oldest running one), for a warning.
pub async fn horizon_holder(pool: &PgPool, horizon: Horizon) -> Result<Option<String>, Error> {
    let holder = sqlx::query_scalar(
        "select format('pid %s, application %L, %s, transaction started %s', \
                       pid, application_name, state, xact_start) \
         from pg_stat_activity where backend_xid::text::bigint = $1",
    )
    .bind(horizon)
    .fetch_optional(pool)
    .await?;
    Ok(holder)
}

/// What one read of the shared tail found.
#[derive(Debug)]
pub struct TailRead {
    /// The events after the position, below `horizon`, in commit order:
    /// (transaction, id).
    pub events: Vec<StoredEvent>,
    /// The read's snapshot horizon.
    pub horizon: Horizon,
    /// The highest transaction of any committed event, when it is at or above
    /// `horizon`: events that have committed but that an older transaction
    /// still holds back (read them again soon).
    pub held_back: Option<Horizon>,
}

/// The events of `tenants` after `position` in commit order and below this
/// snapshot's horizon, at most `limit`: feeds the streams' shared in-memory
/// tail (see `crate::relay`), which filters them per stream. Only the
/// tenants with open streams on this server are read, so a server's database
/// egress follows its own streams, not the fleet's traffic.
pub async fn tail_after(
    db: impl sqlx::PgExecutor<'_>,
    position: (Horizon, EventId),
    tenants: &[uuid::Uuid],
    limit: i64,
) -> Result<TailRead, Error> {
    use sqlx::{FromRow, Row};
    // One round trip: the snapshot's horizon on every row, and on a row of
    // nulls when no event is found.
    let rows = sqlx::query(concat!(
        "with h as materialized (select ",
        snapshot_horizon!(),
        " as horizon, (select max(txid) from event) as newest) \
         select h.horizon, h.newest, p.* from h left join lateral ( \
             select ",
        stored_event!(),
        " from event e \
             where (e.txid, e.event_id) > ($1, $2) and e.txid < h.horizon and e.tenant_id = any($3) \
             order by e.txid, e.event_id limit $4 \
         ) p on true"
    ))
    .bind(position.0)
    .bind(position.1)
    .bind(tenants)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut read = TailRead {
        events: Vec::with_capacity(rows.len()),
        horizon: Horizon::ZERO,
        held_back: None,
    };
    for row in rows {
        read.horizon = row.try_get("horizon")?;
        read.held_back = row
            .try_get::<Option<Horizon>, _>("newest")?
            .filter(|newest| *newest >= read.horizon);
        if row.try_get::<Option<EventId>, _>("event_id")?.is_some() {
            read.events.push(StoredEvent::from_row(&row)?);
        }
    }
    Ok(read)
}

impl StreamScope {
    /// Whether a stream of `tenant_id` should send `event` (the same rule as
    /// `stream_batch`'s WHERE clause).
    pub fn wants(&self, tenant_id: TenantId, event: &StoredEvent) -> bool {
        if event.tenant_id != tenant_id {
            return false;
        }
        if let Some(repositories) = &self.repositories
            && !repositories.contains(&event.repository_id)
        {
            return false;
        }
        let cursor = self
            .cursors
            .get(&event.repository_id)
            .copied()
            .unwrap_or(self.default_cursor);
        event.event_id > cursor
            && self.filter.matches(
                &event.event_type,
                event.branch.as_deref(),
                event.tag.as_deref(),
            )
    }
}

/// Deletes events received before `cutoff`, a batch at a time, and records per
/// repository the highest id deleted, and per tenant the bytes it freed (the
/// stored-bytes quota, `store::quota`). Returns how many were deleted.
///
/// A consumer whose filter skipped every deleted event after its cursor lost
/// nothing it wanted: its cursor moves past them in the same statement, so its
/// next stream does not stop at the retention horizon (the events a filter
/// skips count as handled).
pub async fn delete_expired(
    pool: &PgPool,
    cutoff: OffsetDateTime,
    batch: i64,
) -> Result<u64, Error> {
    let query = concat!(
        "with doomed as ( \
             select event_id, repository_id from event where received_at < $1 order by event_id limit $2 \
         ), through as ( \
             select repository_id, max(event_id) as through from doomed group by repository_id \
         ), skipped as ( \
             update consumer_cursor k set acked_event_id = t.through, updated_at = now() \
             from through t, consumer_position p \
             where k.repository_id = t.repository_id and k.acked_event_id < t.through \
               and p.tenant_id = k.tenant_id and p.consumer = k.consumer and p.repository_id = k.repository_id \
               and not exists ( \
                   select 1 from event e where e.repository_id = k.repository_id \
                   and e.event_id > k.acked_event_id and e.event_id <= t.through and ",
        event_selected!("e", "p"),
        ") \
         ), deleted as ( \
             delete from event e using doomed d where e.event_id = d.event_id \
             returning e.tenant_id, e.repository_id, e.event_id, octet_length(e.body) as bytes \
         ), freed as ( \
             insert into event_bytes_deleted (tenant_id, bytes) \
             select tenant_id, sum(bytes) from deleted group by tenant_id \
         ), horizon as ( \
             insert into retention_horizon (repository_id, tenant_id, deleted_through_event_id) \
             select repository_id, tenant_id, max(event_id) from deleted group by repository_id, tenant_id \
             on conflict (repository_id) do update set deleted_through_event_id = \
                 greatest(retention_horizon.deleted_through_event_id, excluded.deleted_through_event_id) \
         ) \
         select count(*) from deleted",
    );
    let mut total = 0;
    loop {
        let deleted: i64 = sqlx::query_scalar(query)
            .bind(cutoff)
            .bind(batch)
            .fetch_one(pool)
            .await?;
        total += deleted as u64;
        if deleted < batch {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RepositoryId, TenantId};

    fn event(tenant: TenantId, repository: RepositoryId, event_id: i64) -> StoredEvent {
        StoredEvent {
            tenant_id: tenant,
            event_id: EventId::new(event_id),
            repository_id: repository,
            provider: Provider::Github,
            event_type: "push".into(),
            delivery_id: format!("d-{event_id}"),
            received_at: OffsetDateTime::UNIX_EPOCH,
            headers: SealedHeaders::default(),
            body: Vec::new(),
            branch: None,
            tag: None,
            traceparent: None,
            txid: Horizon::new(event_id),
            repository_name: "acme/app".into(),
        }
    }

    #[test]
    fn a_stream_wants_its_tenant_s_repositories_past_their_cursors() {
        let (tenant, other) = (TenantId::new(), TenantId::new());
        let (a, b, c) = (
            RepositoryId::new(),
            RepositoryId::new(),
            RepositoryId::new(),
        );
        let scope = StreamScope {
            repositories: Some(vec![a, b]),
            cursors: HashMap::from([(a, EventId::new(10))]),
            default_cursor: EventId::new(3),
            filter: EventFilter::default(),
        };
        assert!(scope.wants(tenant, &event(tenant, a, 11)));
        assert!(!scope.wants(tenant, &event(tenant, a, 10)), "acked");
        assert!(scope.wants(tenant, &event(tenant, b, 4)), "default cursor");
        assert!(!scope.wants(tenant, &event(tenant, b, 3)));
        assert!(!scope.wants(tenant, &event(tenant, c, 50)), "not streamed");
        assert!(!scope.wants(tenant, &event(other, a, 50)), "another tenant");
        let all = StreamScope {
            repositories: None,
            cursors: HashMap::new(),
            default_cursor: EventId::ZERO,
            filter: EventFilter::default(),
        };
        assert!(all.wants(tenant, &event(tenant, c, 1)), "registered later");
        assert!(!all.wants(other, &event(tenant, c, 1)));
    }
}
