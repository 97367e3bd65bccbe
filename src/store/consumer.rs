//! Consumers: named readers of a tenant's events, with their latest filter,
//! durable per-repository cursors, the streams they hold open on every server,
//! and the outcome of every delivery.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;

use super::event::stored_event;
use crate::domain::{ConsumerName, EventFilter, EventId, RepositoryId, TenantId, event_selected};
use crate::error::Error;

/// The NOTIFY channel for changes open streams act on at once (a seek, a
/// redelivery, a deleted consumer). Sent by these low-rate operations only,
/// never by ingest.
pub const CONTROL_CHANNEL: &str = "hookrelay_control";

/// A stream counts as connected while its server refreshed it this recently
/// (`live_consumer_stream`); servers refresh every `STREAM_HEARTBEAT`.
pub const STREAM_HEARTBEAT: Duration = Duration::from_secs(10);

/// A change to a consumer that its open streams, on any server, act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub tenant_id: TenantId,
    pub consumer: String,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Continue this repository after this id.
    Seek {
        repository_id: RepositoryId,
        after_event_id: EventId,
    },
    /// Pending redeliveries wait: send them.
    Redeliver,
    /// The consumer was deleted: end its streams.
    Deleted,
}

async fn signal(
    executor: impl sqlx::PgExecutor<'_>,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    change: Change,
) -> Result<(), Error> {
    let payload = serde_json::to_string(&Signal {
        tenant_id,
        consumer: consumer.as_str().to_owned(),
        change,
    })
    .map_err(|e| Error::Internal(e.into()))?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(CONTROL_CHANNEL)
        .bind(payload)
        .execute(executor)
        .await?;
    Ok(())
}

/// The consumer's last acknowledged event per repository.
pub async fn cursors(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
) -> Result<Vec<(RepositoryId, EventId)>, Error> {
    let rows = sqlx::query_as(
        "select repository_id, acked_event_id from consumer_cursor where tenant_id = $1 and consumer = $2",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Records a stream as it opens: the consumer (created if new) keeps the
/// stream's filter and repositories, and the stream counts as connected.
pub async fn open_stream(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    filter: &EventFilter,
    repositories: Option<&[RepositoryId]>,
    stream_id: uuid::Uuid,
    server_id: uuid::Uuid,
) -> Result<(), Error> {
    let likes = filter.likes();
    let repositories: Option<Vec<uuid::Uuid>> =
        repositories.map(|ids| ids.iter().map(RepositoryId::as_uuid).collect());
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into consumer (tenant_id, consumer, filter, event_type_likes, branch_likes, tag_likes, repository_ids, last_seen_at) \
         values ($1, $2, $3, $4, $5, $6, $7, now()) \
         on conflict (tenant_id, consumer) do update set filter = excluded.filter, \
             event_type_likes = excluded.event_type_likes, branch_likes = excluded.branch_likes, \
             tag_likes = excluded.tag_likes, repository_ids = excluded.repository_ids, last_seen_at = now()",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(sqlx::types::Json(filter))
    .bind(&likes.event_types)
    .bind(&likes.branches)
    .bind(&likes.tags)
    .bind(repositories)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into consumer_stream (stream_id, tenant_id, consumer, server_id) values ($1, $2, $3, $4)",
    )
    .bind(stream_id)
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(server_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a stream as closed; the consumer was last seen now.
pub async fn close_stream(pool: &PgPool, stream_id: uuid::Uuid) -> Result<(), Error> {
    sqlx::query(
        "with closed as (delete from consumer_stream where stream_id = $1 returning tenant_id, consumer) \
         update consumer c set last_seen_at = now() from closed \
         where c.tenant_id = closed.tenant_id and c.consumer = closed.consumer",
    )
    .bind(stream_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether a server other than `server_id` holds an open stream.
pub async fn streams_elsewhere(pool: &PgPool, server_id: uuid::Uuid) -> Result<bool, Error> {
    let elsewhere = sqlx::query_scalar(
        "select exists (select 1 from live_consumer_stream where server_id <> $1)",
    )
    .bind(server_id)
    .fetch_one(pool)
    .await?;
    Ok(elsewhere)
}

/// Refreshes this server's open streams (their consumers are seen now) and
/// forgets streams of servers that stopped refreshing theirs.
pub async fn heartbeat(pool: &PgPool, server_id: uuid::Uuid) -> Result<(), Error> {
    sqlx::query(
        "with mine as ( \
             update consumer_stream set heartbeat_at = now() where server_id = $1 \
             returning tenant_id, consumer \
         ), seen as ( \
             update consumer c set last_seen_at = now() from (select distinct tenant_id, consumer from mine) m \
             where c.tenant_id = m.tenant_id and c.consumer = m.consumer \
         ) \
         delete from consumer_stream where heartbeat_at < now() - interval '5 minutes'",
    )
    .bind(server_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// One acknowledgement, with what the agent reports about the delivery.
#[derive(Debug, Clone, Default)]
pub struct Ack {
    pub repository_id: RepositoryId,
    pub event_id: EventId,
    /// Some(reason) when the target refused the event for good.
    pub failure: Option<String>,
    /// Set when the acked event was a redelivery: the cursor stays.
    pub redelivery_id: Option<uuid::Uuid>,
    pub status_code: Option<i32>,
    pub attempts: Option<i32>,
    pub duration_ms: Option<i64>,
}

/// Records acks in one transaction: the consumer's cursors (live acks only;
/// cursors only move forward, so a late or repeated ack is harmless), one
/// delivery record per event, and the redeliveries they complete.
///
/// Acks naming a repository that is not the tenant's (any more) are skipped,
/// not fatal: an agent acking an event of a repository deleted a moment ago
/// must not be stuck on it. Returns the skipped repositories.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, consumer = consumer.as_str()))]
pub async fn ack(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    acks: &[Ack],
) -> Result<Vec<RepositoryId>, Error> {
    let mut named: Vec<RepositoryId> = acks.iter().map(|a| a.repository_id).collect();
    named.sort_unstable_by_key(|id| id.as_uuid());
    named.dedup();
    let owned = super::repository::owned(pool, tenant_id, &named).await?;
    if owned.is_empty() {
        // Nothing to record: not even that the consumer was seen.
        return Ok(named);
    }
    let applied = || acks.iter().filter(|a| owned.contains(&a.repository_id));
    // One record per live event and per redelivery: the last ack of each wins.
    let mut records: Vec<&Ack> = Vec::new();
    for ack in applied().rev() {
        if !records
            .iter()
            .any(|r| r.redelivery_id == ack.redelivery_id && r.event_id == ack.event_id)
        {
            records.push(ack);
        }
    }
    let column = |f: &dyn Fn(&Ack) -> Option<i64>| records.iter().map(|a| f(a)).collect();
    let event_ids: Vec<i64> = records.iter().map(|a| a.event_id.get()).collect();
    let redelivery_ids: Vec<Option<uuid::Uuid>> = records.iter().map(|a| a.redelivery_id).collect();
    let outcomes: Vec<&str> = records
        .iter()
        .map(|a| {
            if a.failure.is_some() {
                "failed"
            } else {
                "delivered"
            }
        })
        .collect();
    let status_codes: Vec<Option<i64>> = column(&|a| a.status_code.map(i64::from));
    let attempts: Vec<Option<i64>> = column(&|a| a.attempts.map(i64::from));
    let durations: Vec<Option<i64>> = column(&|a| a.duration_ms);
    let errors: Vec<Option<&str>> = records.iter().map(|a| a.failure.as_deref()).collect();
    let (cursor_repositories, cursor_events): (Vec<uuid::Uuid>, Vec<i64>) = applied()
        .filter(|a| a.redelivery_id.is_none())
        .map(|a| (a.repository_id.as_uuid(), a.event_id.get()))
        .unzip();

    // A cursor never moves past a repository's newest event (as `seek`
    // refuses): it would skip events that have not happened yet.
    let past: Option<(RepositoryId, i64, i64)> = sqlx::query_as(
        "select repository_id, acked, newest from ( \
             select a.repository_id, max(a.event_id) as acked, greatest( \
                 coalesce((select max(e.event_id) from event e \
                           where e.repository_id = a.repository_id and e.tenant_id = $1), 0), \
                 coalesce((select h.deleted_through_event_id from retention_horizon h \
                           where h.repository_id = a.repository_id and h.tenant_id = $1), 0)) as newest \
             from unnest($2::uuid[], $3::bigint[]) as a(repository_id, event_id) \
             group by a.repository_id \
         ) acked where acked > newest limit 1",
    )
    .bind(tenant_id)
    .bind(&cursor_repositories)
    .bind(&cursor_events)
    .fetch_optional(pool)
    .await?;
    if let Some((repository, acked, newest)) = past {
        return Err(Error::invalid(
            "event_id",
            format!("{acked} is past the newest event of repository {repository} ({newest})"),
        ));
    }

    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into consumer (tenant_id, consumer, last_seen_at) values ($1, $2, now()) \
         on conflict (tenant_id, consumer) do update set last_seen_at = now()",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into consumer_cursor (tenant_id, consumer, repository_id, acked_event_id) \
         select $1, $2, a.repository_id, max(a.event_id) \
         from unnest($3::uuid[], $4::bigint[]) as a(repository_id, event_id) \
         group by a.repository_id \
         on conflict (tenant_id, consumer, repository_id) do update set \
             acked_event_id = greatest(consumer_cursor.acked_event_id, excluded.acked_event_id), \
             updated_at = now()",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(&cursor_repositories)
    .bind(&cursor_events)
    .execute(&mut *tx)
    .await?;
    // Only the tenant's retained events, and only its own consumer's
    // redeliveries, get a record.
    sqlx::query(
        "with acked as ( \
             select a.* from unnest($3::bigint[], $4::uuid[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[]) \
                 as a(event_id, redelivery_id, outcome, status_code, attempts, duration_ms, error) \
             join event e on e.event_id = a.event_id and e.tenant_id = $1 \
             where a.redelivery_id is null or exists ( \
                 select 1 from redelivery r where r.redelivery_id = a.redelivery_id \
                 and r.tenant_id = $1 and r.consumer = $2 and r.event_id = a.event_id) \
         ), live as ( \
             insert into delivery (tenant_id, consumer, event_id, outcome, status_code, attempts, duration_ms, error) \
             select $1, $2, event_id, outcome, status_code, attempts, duration_ms, error from acked \
             where redelivery_id is null \
             on conflict (tenant_id, consumer, event_id) where redelivery_id is null do update set \
                 outcome = excluded.outcome, status_code = excluded.status_code, attempts = excluded.attempts, \
                 duration_ms = excluded.duration_ms, error = excluded.error, completed_at = now() \
         ), redelivered as ( \
             insert into delivery (tenant_id, consumer, event_id, redelivery_id, outcome, status_code, attempts, duration_ms, error) \
             select $1, $2, event_id, redelivery_id, outcome, status_code, attempts, duration_ms, error from acked \
             where redelivery_id is not null \
             on conflict (redelivery_id) where redelivery_id is not null do nothing \
         ) \
         update redelivery r set completed_at = now() from acked a \
         where r.tenant_id = $1 and r.consumer = $2 and r.completed_at is null \
           and (r.redelivery_id = a.redelivery_id or (a.redelivery_id is null and r.event_id = a.event_id))",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(&event_ids)
    .bind(&redelivery_ids)
    .bind(&outcomes)
    .bind(&status_codes)
    .bind(&attempts)
    .bind(&durations)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(named.into_iter().filter(|id| !owned.contains(id)).collect())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Failure {
    /// The delivery record's own id: with `failed_at`, the list's order.
    pub delivery_pk: i64,
    pub consumer: String,
    pub repository_id: RepositoryId,
    pub event_id: EventId,
    pub event_type: String,
    pub delivery_id: String,
    pub reason: String,
    pub failed_at: OffsetDateTime,
}

/// The events whose latest delivery to a consumer failed for good (a later
/// successful redelivery clears them), newest first.
pub async fn failures(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: Option<&ConsumerName>,
    after: Option<(OffsetDateTime, i64)>,
    limit: i64,
) -> Result<Vec<Failure>, Error> {
    let rows = sqlx::query_as(
        "select d.delivery_pk, d.consumer, e.repository_id, d.event_id, e.event_type, e.delivery_id, \
                coalesce(d.error, 'delivery failed') as reason, d.completed_at as failed_at \
         from delivery d join event e on e.event_id = d.event_id and e.tenant_id = $1 \
         where d.tenant_id = $1 and d.outcome = 'failed' and ($2::text is null or d.consumer = $2) \
           and not exists ( \
               select 1 from delivery later \
               where later.event_id = d.event_id and later.tenant_id = d.tenant_id \
                 and later.consumer = d.consumer and later.delivery_pk <> d.delivery_pk \
                 and (later.completed_at, later.delivery_pk) > (d.completed_at, d.delivery_pk)) \
           and ($3::timestamptz is null or (d.completed_at, d.delivery_pk) < ($3, $4)) \
         order by d.completed_at desc, d.delivery_pk desc limit $5",
    )
    .bind(tenant_id)
    .bind(consumer.map(ConsumerName::as_str))
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, pk)| pk))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Per repository, the highest event id deleted by retention.
pub async fn retention_horizons(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<Vec<(RepositoryId, EventId)>, Error> {
    let rows = sqlx::query_as(
        "select repository_id, deleted_through_event_id from retention_horizon where tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A consumer as `GET /v1/consumers` shows it.
#[derive(Debug, Clone)]
pub struct ConsumerStatus {
    pub name: String,
    pub filter: serde_json::Value,
    pub last_seen_at: Option<OffsetDateTime>,
    pub connected_streams: i64,
    pub repositories: Vec<Position>,
}

/// A consumer's position in one repository it streams.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Position {
    pub consumer: String,
    pub repository_id: RepositoryId,
    pub acked_event_id: Option<EventId>,
    pub pending_events: i64,
    pub oldest_pending_received_at: Option<OffsetDateTime>,
}

impl ConsumerStatus {
    /// Connected, yet the oldest event it would deliver has waited longer
    /// than `threshold`: the relay looks connected but delivers nothing.
    pub fn stalled(&self, threshold: Duration) -> bool {
        let now = OffsetDateTime::now_utc();
        self.connected_streams > 0
            && self
                .repositories
                .iter()
                .filter_map(|r| r.oldest_pending_received_at)
                .any(|oldest| now - oldest > threshold)
    }
}

/// The tenant's consumers (or one), each with its position in every
/// repository it streams: pending counts what its filter selects after its
/// cursor among the retained events.
pub async fn status(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: Option<&ConsumerName>,
) -> Result<Vec<ConsumerStatus>, Error> {
    status_page(pool, tenant_id, consumer, None, 1000).await
}

/// `status` by name, up to `limit` consumers after `after`.
pub async fn status_page(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: Option<&ConsumerName>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ConsumerStatus>, Error> {
    let name = consumer.map(ConsumerName::as_str);
    let consumers: Vec<(String, serde_json::Value, Option<OffsetDateTime>, i64)> = sqlx::query_as(
        "select c.consumer, c.filter, c.last_seen_at, \
                (select count(*) from live_consumer_stream s \
                 where s.tenant_id = c.tenant_id and s.consumer = c.consumer) \
         from consumer c where c.tenant_id = $1 and ($2::text is null or c.consumer = $2) \
           and ($3::text is null or c.consumer > $3) \
         order by c.consumer limit $4",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let names: Vec<&str> = consumers.iter().map(|c| c.0.as_str()).collect();
    let positions: Vec<Position> = sqlx::query_as(concat!(
        "select p.consumer, p.repository_id, p.acked_event_id, s.pending as pending_events, s.oldest as oldest_pending_received_at \
             from consumer_position p \
             cross join lateral ( \
                 select count(*) as pending, min(e.received_at) as oldest from event e \
                 where e.repository_id = p.repository_id \
                   and e.event_id > coalesce(p.acked_event_id, 0) and ",
        event_selected!("e", "p"),
        ") s \
             where p.tenant_id = $1 and p.consumer = any($2) \
             order by p.consumer, p.repository_created_at, p.repository_id",
    ))
    .bind(tenant_id)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok(consumers
        .into_iter()
        .map(
            |(name, filter, last_seen_at, connected_streams)| ConsumerStatus {
                repositories: positions
                    .iter()
                    .filter(|p| p.consumer == name)
                    .cloned()
                    .collect(),
                name,
                filter,
                last_seen_at,
                connected_streams,
            },
        )
        .collect())
}

/// Why a seek was refused.
pub enum SeekRefused {
    /// The cursor would lie below what retention deleted: the least allowed id.
    BehindRetention(EventId),
    /// Past the newest event of the repository.
    PastNewest(EventId),
}

/// Moves the consumer's cursor in one repository to exactly `after` (back to
/// replay, forward to skip) and tells its open streams. The caller has checked
/// that the consumer and the repository are the tenant's.
pub async fn seek(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    repository_id: RepositoryId,
    after: EventId,
) -> Result<Result<(), SeekRefused>, Error> {
    let mut tx = pool.begin().await?;
    let (deleted_through, newest): (Option<EventId>, Option<EventId>) = sqlx::query_as(
        "select (select deleted_through_event_id from retention_horizon where repository_id = $1 and tenant_id = $2), \
                (select max(event_id) from event where repository_id = $1 and tenant_id = $2)",
    )
    .bind(repository_id)
    .bind(tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(horizon) = deleted_through.filter(|h| after < *h) {
        return Ok(Err(SeekRefused::BehindRetention(horizon)));
    }
    let newest = newest
        .unwrap_or(EventId::ZERO)
        .max(deleted_through.unwrap_or(EventId::ZERO));
    if after > newest {
        return Ok(Err(SeekRefused::PastNewest(newest)));
    }
    sqlx::query(
        "insert into consumer_cursor (tenant_id, consumer, repository_id, acked_event_id) values ($1, $2, $3, $4) \
         on conflict (tenant_id, consumer, repository_id) do update set acked_event_id = excluded.acked_event_id, \
             updated_at = now()",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(repository_id)
    .bind(after)
    .execute(&mut *tx)
    .await?;
    signal(
        &mut *tx,
        tenant_id,
        consumer,
        Change::Seek {
            repository_id,
            after_event_id: after,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Forgets the consumer with its cursors, delivery records and redeliveries,
/// and ends its open streams. False when the tenant has no such consumer.
pub async fn delete(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("delete from consumer where tenant_id = $1 and consumer = $2")
        .bind(tenant_id)
        .bind(consumer.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    signal(&mut *tx, tenant_id, consumer, Change::Deleted).await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn exists(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
) -> Result<bool, Error> {
    let found: Option<i32> =
        sqlx::query_scalar("select 1 from consumer where tenant_id = $1 and consumer = $2")
            .bind(tenant_id)
            .bind(consumer.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

/// Asks for `event_id` to be delivered to the consumer once more; its open
/// streams are told at once. None when the tenant has no such event.
pub async fn request_redelivery(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    event_id: EventId,
) -> Result<Option<uuid::Uuid>, Error> {
    let redelivery_id = uuid::Uuid::new_v4();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "insert into redelivery (redelivery_id, tenant_id, consumer, event_id) \
         select $1, $2, $3, e.event_id from event e where e.event_id = $4 and e.tenant_id = $2",
    )
    .bind(redelivery_id)
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(event_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    signal(&mut *tx, tenant_id, consumer, Change::Redeliver).await?;
    tx.commit().await?;
    Ok(Some(redelivery_id))
}

/// The consumer's pending redeliveries, oldest first, except those in `sent`.
pub async fn pending_redeliveries(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    sent: &[uuid::Uuid],
) -> Result<Vec<(uuid::Uuid, super::event::StoredEvent)>, Error> {
    use sqlx::Row;
    let rows = sqlx::query(concat!(
        "select r.redelivery_id, ",
        stored_event!(),
        " from redelivery r join event e on e.event_id = r.event_id and e.tenant_id = r.tenant_id \
         where r.tenant_id = $1 and r.consumer = $2 and r.completed_at is null and r.redelivery_id <> all($3) \
         order by r.requested_at, r.redelivery_id limit 1000",
    ))
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(sent)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok((
                row.try_get("redelivery_id")?,
                sqlx::FromRow::from_row(&row)?,
            ))
        })
        .collect()
}

/// One delivery of an event to a consumer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub delivery_pk: i64,
    pub event_id: EventId,
    pub consumer: String,
    pub redelivery_id: Option<uuid::Uuid>,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub attempts: Option<i32>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub completed_at: OffsetDateTime,
}

/// Every recorded delivery of the tenant's event, newest first.
pub async fn deliveries(
    pool: &PgPool,
    tenant_id: TenantId,
    event_id: EventId,
) -> Result<Vec<Delivery>, Error> {
    let rows = sqlx::query_as(
        "select delivery_pk, event_id, consumer, redelivery_id, outcome, status_code, attempts, duration_ms, \
                error, completed_at \
         from delivery where tenant_id = $1 and event_id = $2 \
         order by completed_at desc, delivery_pk desc",
    )
    .bind(tenant_id)
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The tenant's delivery records completed since `since` (of one event, or
/// all), oldest first, for watching.
pub async fn deliveries_since(
    pool: &PgPool,
    tenant_id: TenantId,
    event_id: Option<EventId>,
    since: OffsetDateTime,
) -> Result<Vec<Delivery>, Error> {
    let rows = sqlx::query_as(
        "select delivery_pk, event_id, consumer, redelivery_id, outcome, status_code, attempts, duration_ms, \
                error, completed_at \
         from delivery where tenant_id = $1 and ($2::bigint is null or event_id = $2) and completed_at > $3 \
         order by completed_at, delivery_pk limit 1000",
    )
    .bind(tenant_id)
    .bind(event_id)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// For the metrics: how many consumers are stalled (connected, with an event
/// pending longer than `threshold`), and the age of the oldest pending event
/// of any consumer, in seconds. One query over every tenant.
pub async fn pending_summary(pool: &PgPool, threshold: Duration) -> Result<(i64, f64), Error> {
    let row: (i64, f64) = sqlx::query_as(concat!(
        "with oldest as ( \
             select p.tenant_id, p.consumer, min(o.received_at) as oldest \
             from consumer_position p \
             cross join lateral ( \
                 select e.received_at from event e \
                 where e.repository_id = p.repository_id \
                   and e.event_id > coalesce(p.acked_event_id, 0) and ",
        event_selected!("e", "p"),
        " order by e.event_id limit 1 \
             ) o \
             group by p.tenant_id, p.consumer \
         ) \
         select count(*) filter (where o.oldest < now() - make_interval(secs => $1) and exists ( \
                    select 1 from live_consumer_stream s where s.tenant_id = o.tenant_id and s.consumer = o.consumer)), \
                coalesce(extract(epoch from now() - min(o.oldest))::float8, 0) \
         from oldest o",
    ))
    .bind(threshold.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(row)
}
