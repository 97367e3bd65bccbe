//! Consumers: named readers of a tenant's events, with durable per-repository
//! acks and a record of deliveries that failed for good.

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::domain::{ConsumerName, EventId, RepositoryId, TenantId};
use crate::error::Error;

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

/// One acknowledgement.
#[derive(Debug, Clone)]
pub struct Ack {
    pub repository_id: RepositoryId,
    pub event_id: EventId,
    /// Some(reason) when the target refused the event for good.
    pub failure: Option<String>,
}

/// Records acks in one transaction. Cursors only move forward, so a late or
/// repeated ack is harmless. Acks naming a repository that is not the
/// tenant's (any more) are skipped, not fatal: an agent acking an event of a
/// repository deleted a moment ago must not be stuck on it. Returns the
/// skipped repositories.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, consumer = consumer.as_str()))]
pub async fn ack(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    acks: &[Ack],
) -> Result<Vec<RepositoryId>, Error> {
    let repositories: Vec<uuid::Uuid> = acks.iter().map(|a| a.repository_id.as_uuid()).collect();
    let events: Vec<i64> = acks.iter().map(|a| a.event_id.get()).collect();
    let mut tx = pool.begin().await?;
    let applied: Vec<RepositoryId> = sqlx::query_scalar(
        "insert into consumer_cursor (tenant_id, consumer, repository_id, acked_event_id) \
         select $1, $2, a.repository_id, max(a.event_id) \
         from unnest($3::uuid[], $4::bigint[]) as a(repository_id, event_id) \
         join repository r on r.repository_id = a.repository_id and r.tenant_id = $1 \
         group by a.repository_id \
         on conflict (tenant_id, consumer, repository_id) do update set \
             acked_event_id = greatest(consumer_cursor.acked_event_id, excluded.acked_event_id), \
             updated_at = now() \
         returning repository_id",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .bind(&repositories)
    .bind(&events)
    .fetch_all(&mut *tx)
    .await?;
    for ack in acks.iter().filter(|a| applied.contains(&a.repository_id)) {
        if let Some(reason) = &ack.failure {
            sqlx::query(
                "insert into delivery_failure (tenant_id, consumer, repository_id, event_id, reason) \
                 values ($1, $2, $3, $4, $5) on conflict do nothing",
            )
            .bind(tenant_id)
            .bind(consumer.as_str())
            .bind(ack.repository_id)
            .bind(ack.event_id)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    let mut skipped: Vec<RepositoryId> = acks
        .iter()
        .map(|a| a.repository_id)
        .filter(|id| !applied.contains(id))
        .collect();
    skipped.sort_unstable_by_key(|id| id.as_uuid());
    skipped.dedup();
    Ok(skipped)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Failure {
    pub consumer: String,
    pub repository_id: RepositoryId,
    pub event_id: EventId,
    pub reason: String,
    pub failed_at: OffsetDateTime,
}

/// The tenant's failed deliveries, newest first.
pub async fn failures(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: Option<&ConsumerName>,
) -> Result<Vec<Failure>, Error> {
    let rows = sqlx::query_as(
        "select consumer, repository_id, event_id, reason, failed_at from delivery_failure \
         where tenant_id = $1 and ($2::text is null or consumer = $2) \
         order by failed_at desc, event_id desc limit 1000",
    )
    .bind(tenant_id)
    .bind(consumer.map(ConsumerName::as_str))
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
