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
