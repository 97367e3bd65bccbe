//! Tenants' quota overrides and what each tenant holds against its quotas.
//! Creations check and insert under the tenant's row lock, so concurrent
//! creations of one tenant take turns and never overshoot a quota.

use sqlx::{PgConnection, PgPool};

use crate::domain::{ConsumerName, Quota, QuotaOverrides, Quotas, TenantId};
use crate::error::Error;

/// The operator's overrides of `tenant`'s quotas (none set: all default).
pub async fn overrides(pool: &PgPool, tenant_id: TenantId) -> Result<QuotaOverrides, Error> {
    Ok(sqlx::query_as(
        "select repositories, clients, trusted_issuers, consumers, open_streams, open_watches, \
         webhooks_per_second, webhook_burst, stored_event_bytes from tenant_quota where tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?
    .unwrap_or_default())
}

/// The tenant's quotas: its overrides over `defaults`.
pub async fn quotas(
    pool: &PgPool,
    tenant_id: TenantId,
    defaults: &Quotas,
) -> Result<Quotas, Error> {
    Ok(overrides(pool, tenant_id).await?.over(defaults))
}

/// Replaces the tenant's overrides (None: back to the default); false when
/// there is no such tenant.
pub async fn set_overrides(
    pool: &PgPool,
    tenant_id: TenantId,
    overrides: &QuotaOverrides,
) -> Result<bool, Error> {
    let stored = sqlx::query(
        "insert into tenant_quota (tenant_id, repositories, clients, trusted_issuers, consumers, \
             open_streams, open_watches, webhooks_per_second, webhook_burst, stored_event_bytes) \
         select tenant_id, $2, $3, $4, $5, $6, $7, $8, $9, $10 from tenant where tenant_id = $1 \
         on conflict (tenant_id) do update set repositories = excluded.repositories, \
             clients = excluded.clients, trusted_issuers = excluded.trusted_issuers, \
             consumers = excluded.consumers, open_streams = excluded.open_streams, \
             open_watches = excluded.open_watches, webhooks_per_second = excluded.webhooks_per_second, \
             webhook_burst = excluded.webhook_burst, \
             stored_event_bytes = excluded.stored_event_bytes, updated_at = now()",
    )
    .bind(tenant_id)
    .bind(overrides.repositories)
    .bind(overrides.clients)
    .bind(overrides.trusted_issuers)
    .bind(overrides.consumers)
    .bind(overrides.open_streams)
    .bind(overrides.open_watches)
    .bind(overrides.webhooks_per_second)
    .bind(overrides.webhook_burst)
    .bind(overrides.stored_event_bytes)
    .execute(pool)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// How many of `quota`'s kind the tenant holds (open watches are counted by
/// the server that holds them, not here).
pub async fn held(
    executor: &mut PgConnection,
    tenant_id: TenantId,
    quota: Quota,
) -> Result<u64, Error> {
    let sql = match quota {
        Quota::Repositories => "select count(*) from repository where tenant_id = $1",
        Quota::Clients => "select count(*) from client where tenant_id = $1",
        Quota::TrustedIssuers => "select count(*) from trusted_issuer where tenant_id = $1",
        Quota::Consumers => "select count(*) from consumer where tenant_id = $1",
        Quota::OpenStreams => "select count(*) from live_consumer_stream where tenant_id = $1",
        Quota::OpenWatches => return Ok(0),
    };
    let count: i64 = sqlx::query_scalar(sql)
        .bind(tenant_id)
        .fetch_one(executor)
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Within a transaction: takes the tenant's row lock, then refuses
/// (`quota_exceeded`) when the tenant already holds its quota of `quota`.
pub async fn admit_one(
    transaction: &mut PgConnection,
    tenant_id: TenantId,
    quota: Quota,
    quotas: &Quotas,
) -> Result<(), Error> {
    sqlx::query("select 1 from tenant where tenant_id = $1 for update")
        .bind(tenant_id)
        .execute(&mut *transaction)
        .await?;
    let held = held(transaction, tenant_id, quota).await?;
    quota.check(quotas, held).map_err(Error::QuotaExceeded)
}

/// Whether a stream of `consumer` may open: the tenant holds fewer open
/// streams than its quota, and a new consumer fits its consumers quota (a
/// known one may always stream). Checked as the stream opens: streams opening
/// at the same moment can pass together.
pub async fn admit_stream(
    pool: &PgPool,
    tenant_id: TenantId,
    consumer: &ConsumerName,
    quotas: &Quotas,
) -> Result<(), Error> {
    let mut connection = pool.acquire().await?;
    let streams = held(&mut connection, tenant_id, Quota::OpenStreams).await?;
    Quota::OpenStreams
        .check(quotas, streams)
        .map_err(Error::QuotaExceeded)?;
    let known: bool = sqlx::query_scalar(
        "select exists (select 1 from consumer where tenant_id = $1 and consumer = $2)",
    )
    .bind(tenant_id)
    .bind(consumer.as_str())
    .fetch_one(&mut *connection)
    .await?;
    if !known {
        let consumers = held(&mut connection, tenant_id, Quota::Consumers).await?;
        Quota::Consumers
            .check(quotas, consumers)
            .map_err(Error::QuotaExceeded)?;
    }
    Ok(())
}

/// Bytes of event bodies by tenant, and the snapshot they were read under.
#[derive(Debug)]
pub struct StoredBytesRead {
    pub tenants: Vec<(TenantId, i64)>,
    /// The read's `pg_snapshot` (its text form): what changes later is what
    /// it did not see.
    pub snapshot: String,
}

/// Bytes of event bodies each tenant stores, counted in one pass over the
/// event table (`octet_length` reads a stored body's size, not the body).
pub async fn stored_event_bytes(pool: &PgPool) -> Result<StoredBytesRead, Error> {
    read_under_one_snapshot(
        pool,
        sqlx::query_as(
            "select tenant_id, sum(octet_length(body))::bigint from event group by tenant_id",
        ),
    )
    .await
}

/// What changed in each tenant's stored event bytes since the read whose
/// snapshot is `since`: the bodies of the events it did not see (transactions
/// from its xmin on, through the `(txid, event_id)` index) less the bytes that
/// the deletions it did not see recorded in `event_bytes_deleted`.
pub async fn stored_event_bytes_since(
    pool: &PgPool,
    since: &str,
) -> Result<StoredBytesRead, Error> {
    read_under_one_snapshot(
        pool,
        sqlx::query_as(
            "select tenant_id, sum(bytes)::bigint from ( \
                 select tenant_id, octet_length(body)::bigint as bytes from event \
                 where txid >= pg_snapshot_xmin($1::pg_snapshot)::text::bigint \
                   and not pg_visible_in_snapshot(txid::text::xid8, $1::pg_snapshot) \
                 union all \
                 select tenant_id, -bytes from event_bytes_deleted \
                 where txid >= pg_snapshot_xmin($1::pg_snapshot)::text::bigint \
                   and not pg_visible_in_snapshot(txid::text::xid8, $1::pg_snapshot) \
             ) changed group by tenant_id",
        )
        .bind(since),
    )
    .await
}

/// Forgets recorded deletions older than a day: every server has read them,
/// and counted the whole table since (`jobs`, hourly).
pub async fn forget_old_deletions(pool: &PgPool) -> Result<u64, Error> {
    Ok(
        sqlx::query("delete from event_bytes_deleted where deleted_at < now() - interval '1 day'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Runs `query` and reads `pg_current_snapshot()` in one repeatable-read
/// transaction, so the snapshot is the one the query saw.
async fn read_under_one_snapshot<'q>(
    pool: &PgPool,
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, (TenantId, i64), sqlx::postgres::PgArguments>,
) -> Result<StoredBytesRead, Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *transaction)
        .await?;
    let snapshot = sqlx::query_scalar("select pg_current_snapshot()::text")
        .fetch_one(&mut *transaction)
        .await?;
    let tenants = query.fetch_all(&mut *transaction).await?;
    transaction.commit().await?;
    Ok(StoredBytesRead { tenants, snapshot })
}
