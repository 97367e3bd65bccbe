//! A tenant's OAuth2 clients: their hashed secrets, scopes, and whether a
//! token's client may still act.

use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;

use super::PrincipalState;
use crate::domain::{ClientId, DisplayName, Scope, Scopes, TenantId};
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: ClientId,
    pub name: String,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
    /// Made by approving a device (`hookrelay-agent login`).
    pub device: bool,
    /// When a device client last renewed its access.
    pub last_used_at: Option<OffsetDateTime>,
}

/// What the token endpoint needs to authenticate a client.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub tenant_id: TenantId,
    pub secret_hash: Vec<u8>,
    pub scopes: Scopes,
    pub suspended: bool,
}

pub(super) fn scopes_from_db(names: Vec<String>) -> Result<Scopes, Error> {
    names
        .iter()
        .map(|name| name.parse::<Scope>())
        .collect::<Result<Scopes, _>>()
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored client scope: {e}")))
}

pub async fn insert(
    executor: impl PgExecutor<'_>,
    tenant_id: TenantId,
    name: &DisplayName,
    scopes: &Scopes,
    secret_hash: &[u8],
) -> Result<ClientId, Error> {
    let client_id = ClientId::generate();
    sqlx::query(
        "insert into client (client_id, tenant_id, name, secret_hash, scopes) values ($1, $2, $3, $4, $5)",
    )
    .bind(&client_id)
    .bind(tenant_id)
    .bind(name.as_str())
    .bind(secret_hash)
    .bind(scopes.to_strings())
    .execute(executor)
    .await?;
    Ok(client_id)
}

/// Up to `limit` of the tenant's clients in creation order, after `after`.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    after: Option<(OffsetDateTime, &str)>,
    limit: i64,
) -> Result<Vec<Client>, Error> {
    type Row = (
        ClientId,
        String,
        Vec<String>,
        OffsetDateTime,
        bool,
        Option<OffsetDateTime>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select client_id, name, scopes, created_at, device, last_used_at from client where tenant_id = $1 \
         and ($2::timestamptz is null or (created_at, client_id) > ($2, $3)) \
         order by created_at, client_id limit $4",
    )
    .bind(tenant_id)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(
            |(client_id, name, scopes, created_at, device, last_used_at)| {
                Ok(Client {
                    client_id,
                    name,
                    scopes: scopes_from_db(scopes)?,
                    created_at,
                    device,
                    last_used_at,
                })
            },
        )
        .collect()
}

/// Deletes the client; its tokens stop working from the next request on.
///
/// A caller may delete only a client whose every scope it holds itself (403
/// otherwise), and never the tenant's last client holding `clients:write`
/// (409), which would lock the tenant out. The tenant's clients are locked for
/// the check, so two concurrent deletions cannot both remove "the other" one.
pub async fn delete(
    pool: &PgPool,
    tenant_id: TenantId,
    client_id: &ClientId,
    caller_scopes: &Scopes,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(ClientId, Vec<String>)> = sqlx::query_as(
        "select client_id, scopes from client where tenant_id = $1 order by client_id for update",
    )
    .bind(tenant_id)
    .fetch_all(&mut *tx)
    .await?;
    let clients = rows
        .into_iter()
        .map(|(id, scopes)| Ok((id, scopes_from_db(scopes)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let (_, scopes) = clients
        .iter()
        .find(|(id, _)| id == client_id)
        .ok_or(Error::NotFound("client"))?;
    if !scopes.is_subset(caller_scopes) {
        return Err(Error::Forbidden(
            "deleting a client needs every scope it holds".into(),
        ));
    }
    let can_manage = |scopes: &Scopes| scopes.contains(Scope::ClientsWrite);
    if can_manage(scopes)
        && !clients
            .iter()
            .any(|(id, scopes)| id != client_id && can_manage(scopes))
    {
        return Err(Error::Conflict(
            "this is the tenant's last client with clients:write; create another first".into(),
        ));
    }
    sqlx::query("delete from client where tenant_id = $1 and client_id = $2")
        .bind(tenant_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the client still exists and its tenant is not suspended: checked
/// on every authenticated request.
pub async fn state(
    pool: &PgPool,
    tenant_id: TenantId,
    client_id: &ClientId,
) -> Result<PrincipalState, Error> {
    let suspended: Option<bool> = sqlx::query_scalar(
        "select t.suspended_at is not null from client c join tenant t using (tenant_id) \
         where c.tenant_id = $1 and c.client_id = $2",
    )
    .bind(tenant_id)
    .bind(client_id)
    .fetch_optional(pool)
    .await?;
    Ok(PrincipalState::from_suspended(suspended))
}

/// Unscoped by design: authenticating the client is what establishes its tenant.
pub async fn credentials(
    pool: &PgPool,
    client_id: &ClientId,
) -> Result<Option<Credentials>, Error> {
    let row: Option<(TenantId, Vec<u8>, Vec<String>, bool)> = sqlx::query_as(
        "select c.tenant_id, c.secret_hash, c.scopes, t.suspended_at is not null \
         from client c join tenant t using (tenant_id) where c.client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(pool)
    .await?;
    row.map(|(tenant_id, secret_hash, scopes, suspended)| {
        Ok(Credentials {
            tenant_id,
            secret_hash,
            scopes: scopes_from_db(scopes)?,
            suspended,
        })
    })
    .transpose()
}

/// Which of these client ids still exist and belong to a tenant that is not
/// suspended (any tenant: used to close the open streams of deleted clients and
/// suspended tenants, whose tenants are known to the caller).
pub async fn existing(
    pool: &PgPool,
    client_ids: &[String],
) -> Result<std::collections::HashSet<String>, Error> {
    let rows: Vec<String> = sqlx::query_scalar(
        "select c.client_id from client c join tenant t using (tenant_id) \
         where c.client_id = any($1) and t.suspended_at is null",
    )
    .bind(client_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}
