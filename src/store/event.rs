//! The event log.
//!
//! Ordering: ids come from a sequence, but a plain sequence lets id 10 commit
//! before id 9, and a reader that has passed 10 would skip 9 for ever. So every
//! ingest transaction takes one transaction-scoped advisory lock before drawing
//! ids and holds it until commit: ids are handed out in commit order, and when a
//! reader sees id N every id below N is already committed (or was rolled back
//! and will never exist). Readers can therefore page with `event_id > cursor`.
//!
//! Throughput: the lock serialises ingest transactions, so each one carries a
//! whole batch (see `crate::ingest`): one lock, one multi-row INSERT and one
//! fsync for many webhooks.

use axum::body::Bytes;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use crate::domain::{DeliveryId, EventId, Provider, RepositoryId, TenantId};
use crate::error::{Error, violated_constraint};

/// The NOTIFY channel that announces new events; the payload is the highest new id.
pub const NOTIFY_CHANNEL: &str = "hookrelay_events";

/// Key of the advisory lock that orders ingest commits.
const INGEST_LOCK: i64 = 0x686f_6f6b_7265_6c61; // "hookrela"

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub tenant_id: TenantId,
    pub repository_id: RepositoryId,
    pub provider: Provider,
    pub event_type: String,
    pub delivery_id: DeliveryId,
    pub received_at: OffsetDateTime,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// The outcome of ingesting one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Created(EventId),
    /// The delivery id was seen before for this repository: the stored event's id.
    Duplicate(EventId),
}

/// Inserts a batch in one transaction and returns one outcome per event, in order.
/// A failure fails the whole batch; the caller retries events one by one.
pub async fn insert_batch(pool: &PgPool, events: &[NewEvent]) -> Result<Vec<Ingested>, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(INGEST_LOCK)
        .execute(&mut *tx)
        .await?;
    let outcomes = insert_locked(&mut tx, events).await?;
    let newest = outcomes
        .iter()
        .filter_map(|o| match o {
            Ingested::Created(id) => Some(id.get()),
            Ingested::Duplicate(_) => None,
        })
        .max();
    if let Some(newest) = newest {
        // Delivered to listeners at commit, not before.
        sqlx::query("select pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(newest.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn insert_locked(
    tx: &mut Transaction<'_, Postgres>,
    events: &[NewEvent],
) -> Result<Vec<Ingested>, Error> {
    let mut tenant_ids = Vec::with_capacity(events.len());
    let mut repository_ids = Vec::with_capacity(events.len());
    let mut providers = Vec::with_capacity(events.len());
    let mut event_types = Vec::with_capacity(events.len());
    let mut delivery_ids = Vec::with_capacity(events.len());
    let mut received = Vec::with_capacity(events.len());
    let mut headers = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for event in events {
        tenant_ids.push(event.tenant_id.as_uuid());
        repository_ids.push(event.repository_id.as_uuid());
        providers.push(event.provider.as_str());
        event_types.push(event.event_type.as_str());
        delivery_ids.push(event.delivery_id.as_str());
        received.push(event.received_at);
        headers.push(serde_json::to_value(&event.headers).map_err(anyhow::Error::from)?);
        bodies.push(event.body.as_ref());
    }
    // `order by ord` draws ids in arrival order; duplicates (already stored, or
    // repeated within the batch) are skipped and looked up below.
    let inserted: Vec<(i64, uuid::Uuid, String)> = sqlx::query_as(
        "insert into event (tenant_id, repository_id, provider, event_type, delivery_id, received_at, headers, body) \
         select tenant_id, repository_id, provider, event_type, delivery_id, received_at, headers, body \
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[], $8::bytea[]) \
              with ordinality as input(tenant_id, repository_id, provider, event_type, delivery_id, received_at, headers, body, ord) \
         order by ord \
         on conflict (repository_id, delivery_id) do nothing \
         returning event_id, repository_id, delivery_id",
    )
    .bind(&tenant_ids)
    .bind(&repository_ids)
    .bind(&providers)
    .bind(&event_types)
    .bind(&delivery_ids)
    .bind(&received)
    .bind(&headers)
    .bind(&bodies)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| match violated_constraint(&e) {
        // The repository was deleted between the signature check and the insert.
        Some("event_repository_id_fkey" | "event_tenant_id_fkey") => Error::NotFound("repository"),
        _ => e.into(),
    })?;

    let mut outcomes: Vec<Option<Ingested>> = vec![None; events.len()];
    for (id, repository_id, delivery_id) in inserted {
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
        let existing: Vec<(i64, uuid::Uuid, String)> = sqlx::query_as(
            "select e.event_id, e.repository_id, e.delivery_id from event e \
             join unnest($1::uuid[], $2::text[]) as k(repository_id, delivery_id) \
               on e.repository_id = k.repository_id and e.delivery_id = k.delivery_id",
        )
        .bind(&repository_ids)
        .bind(&delivery_ids)
        .fetch_all(&mut **tx)
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
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| Error::Internal(anyhow::anyhow!("ingested event has no id"))))
        .collect()
}
