//! Tenants: signup (with the first client), and the operator's list, suspend
//! and delete.

use sqlx::PgPool;

use crate::domain::{ClientId, DisplayName, Scopes, TenantId};
use crate::error::Error;

/// Creates a tenant and its first client in one transaction.
#[tracing::instrument(skip_all, fields(tenant_id))]
pub async fn create_with_client(
    pool: &PgPool,
    name: &DisplayName,
    client_name: &DisplayName,
    scopes: &Scopes,
    secret_hash: &[u8],
) -> Result<(TenantId, ClientId), Error> {
    let tenant_id = TenantId::new();
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant_id));
    let mut tx = pool.begin().await?;
    sqlx::query("insert into tenant (tenant_id, name) values ($1, $2)")
        .bind(tenant_id)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    let client_id =
        super::client::insert(&mut *tx, tenant_id, client_name, scopes, secret_hash).await?;
    tx.commit().await?;
    Ok((tenant_id, client_id))
}

/// A tenant as `hookrelay tenants` shows it. Operator-only: unscoped by design.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantSummary {
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: time::OffsetDateTime,
    pub suspended_at: Option<time::OffsetDateTime>,
    pub clients: i64,
    pub repositories: i64,
    pub events: i64,
}

macro_rules! summary {
    () => {
        "select t.tenant_id, t.name, t.created_at, t.suspended_at, \
            (select count(*) from client c where c.tenant_id = t.tenant_id) as clients, \
            (select count(*) from repository r where r.tenant_id = t.tenant_id) as repositories, \
            (select count(*) from event e where e.tenant_id = t.tenant_id) as events \
         from tenant t"
    };
}

/// Every tenant, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TenantSummary>, Error> {
    Ok(
        sqlx::query_as(concat!(summary!(), " order by t.created_at, t.tenant_id"))
            .fetch_all(pool)
            .await?,
    )
}

pub async fn get(pool: &PgPool, tenant_id: TenantId) -> Result<Option<TenantSummary>, Error> {
    Ok(
        sqlx::query_as(concat!(summary!(), " where t.tenant_id = $1"))
            .bind(tenant_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Suspends (or resumes) a tenant; false when there is no such tenant.
pub async fn set_suspended(
    pool: &PgPool,
    tenant_id: TenantId,
    suspended: bool,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "update tenant set suspended_at = case when $2 then coalesce(suspended_at, now()) end \
         where tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(suspended)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes a tenant with everything it owns (clients, repositories, events,
/// consumers): the foreign keys cascade.
pub async fn delete(pool: &PgPool, tenant_id: TenantId) -> Result<bool, Error> {
    let result = sqlx::query("delete from tenant where tenant_id = $1")
        .bind(tenant_id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}
