//! A tenant's trusted issuers (see `crate::domain::issuer`).

use std::collections::BTreeMap;

use sqlx::PgPool;
use time::OffsetDateTime;

use super::PrincipalState;
use crate::domain::{
    Audience, ClaimConditions, IssuerUrl, Quota, Quotas, Scope, Scopes, TenantId, TrustedIssuerId,
};
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub id: TrustedIssuerId,
    pub issuer: String,
    pub audience: String,
    pub claims: BTreeMap<String, String>,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
}

/// A stored trusted issuer, read by column name.
#[derive(sqlx::FromRow)]
struct Row {
    trusted_issuer_id: TrustedIssuerId,
    issuer: String,
    audience: String,
    claims: sqlx::types::Json<BTreeMap<String, String>>,
    scopes: Vec<String>,
    created_at: OffsetDateTime,
}

fn from_row(row: Row) -> Result<TrustedIssuer, Error> {
    let scopes = row
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Scopes, _>>()
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored trusted issuer scope: {e}")))?;
    Ok(TrustedIssuer {
        id: row.trusted_issuer_id,
        issuer: row.issuer,
        audience: row.audience,
        claims: row.claims.0,
        scopes,
        created_at: row.created_at,
    })
}

/// Stores a trusted issuer, unless another tenant's trusted issuer with the
/// same issuer and audience could accept the same token: an exchange must
/// always find exactly one tenant. Concurrent creations for one issuer and
/// audience take turns, so two tenants cannot both pass the check.
pub async fn insert(
    pool: &PgPool,
    tenant_id: TenantId,
    issuer: &IssuerUrl,
    audience: &Audience,
    claims: &ClaimConditions,
    scopes: &Scopes,
    quotas: &Quotas,
) -> Result<TrustedIssuer, Error> {
    let mut transaction = pool.begin().await?;
    super::quota::admit_one(&mut transaction, tenant_id, Quota::TrustedIssuers, quotas).await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('hookrelay.trusted_issuer'), hashtext($1 || ' ' || $2))")
        .bind(issuer.as_str())
        .bind(audience.as_str())
        .execute(&mut *transaction)
        .await?;
    let others: Vec<sqlx::types::Json<BTreeMap<String, String>>> = sqlx::query_scalar(
        "select claims from trusted_issuer where issuer = $1 and audience = $2 and tenant_id <> $3",
    )
    .bind(issuer.as_str())
    .bind(audience.as_str())
    .bind(tenant_id)
    .fetch_all(&mut *transaction)
    .await?;
    for other in others {
        let other = ClaimConditions::parse(other.0)
            .map_err(|e| Error::Internal(anyhow::anyhow!("stored claim conditions: {e}")))?;
        if claims.may_overlap(&other) {
            return Err(Error::Conflict(
                "another tenant trusts this issuer and audience for tokens these claims would \
                 also match; use an audience of your own (the workload names it when it asks \
                 its platform for the token) or narrower claims"
                    .into(),
            ));
        }
    }
    let row: Row = sqlx::query_as(
        "insert into trusted_issuer (trusted_issuer_id, tenant_id, issuer, audience, claims, scopes) \
         values ($1, $2, $3, $4, $5, $6) \
         returning trusted_issuer_id, issuer, audience, claims, scopes, created_at",
    )
    .bind(TrustedIssuerId::new())
    .bind(tenant_id)
    .bind(issuer.as_str())
    .bind(audience.as_str())
    .bind(sqlx::types::Json(claims.as_map()))
    .bind(scopes.to_strings())
    .fetch_one(&mut *transaction)
    .await?;
    transaction.commit().await?;
    from_row(row)
}

/// Up to `limit` of the tenant's trusted issuers in creation order, after `after`.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    after: Option<(OffsetDateTime, TrustedIssuerId)>,
    limit: i64,
) -> Result<Vec<TrustedIssuer>, Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "select trusted_issuer_id, issuer, audience, claims, scopes, created_at from trusted_issuer \
         where tenant_id = $1 \
           and ($2::timestamptz is null or (created_at, trusted_issuer_id) > ($2, $3)) \
         order by created_at, trusted_issuer_id limit $4",
    )
    .bind(tenant_id)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// Deletes one of the tenant's trusted issuers; another tenant's is "not found".
pub async fn delete(pool: &PgPool, tenant_id: TenantId, id: TrustedIssuerId) -> Result<(), Error> {
    let deleted =
        sqlx::query("delete from trusted_issuer where tenant_id = $1 and trusted_issuer_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(pool)
            .await?;
    if deleted.rows_affected() == 0 {
        return Err(Error::NotFound("trusted issuer"));
    }
    Ok(())
}

/// A trusted issuer that may accept a subject token, with its tenant.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub tenant_id: TenantId,
    pub suspended: bool,
    pub issuer: TrustedIssuer,
}

/// A `Row` with its tenant.
#[derive(sqlx::FromRow)]
struct CandidateRow {
    tenant_id: TenantId,
    suspended: bool,
    #[sqlx(flatten)]
    row: Row,
}

/// Whether any tenant trusts `issuer` for any of `audiences`: checked before
/// the issuer's keys are fetched, so that no one can make the relay fetch
/// from an issuer nobody trusts. Unscoped by design: which tenant trusts a
/// subject token is what the exchange establishes.
pub async fn is_trusted(pool: &PgPool, issuer: &str, audiences: &[String]) -> Result<bool, Error> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from trusted_issuer where issuer = $1 and audience = any($2))",
    )
    .bind(issuer)
    .bind(audiences)
    .fetch_one(pool)
    .await?)
}

/// The trusted issuers, of every tenant, for `issuer` and any of `audiences`
/// that `accepts` (a verified token's claims), up to `at_most`. Every
/// candidate is considered, however many other tenants' trusted issuers share
/// the issuer and audience (read as a stream, one row at a time), so squatters
/// cannot push a tenant's own out of reach.
pub async fn accepting(
    pool: &PgPool,
    issuer: &str,
    audiences: &[String],
    mut accepts: impl FnMut(&TrustedIssuer) -> bool,
    at_most: usize,
) -> Result<Vec<Candidate>, Error> {
    use tokio_stream::StreamExt;
    let mut rows = sqlx::query_as::<_, CandidateRow>(
        "select i.tenant_id, t.suspended_at is not null as suspended, i.trusted_issuer_id, \
         i.issuer, i.audience, i.claims, i.scopes, i.created_at \
         from trusted_issuer i join tenant t using (tenant_id) \
         where i.issuer = $1 and i.audience = any($2)",
    )
    .bind(issuer)
    .bind(audiences)
    .fetch(pool);
    let mut found = Vec::new();
    while let Some(candidate) = rows.next().await {
        let candidate = candidate?;
        let issuer = from_row(candidate.row)?;
        if accepts(&issuer) {
            found.push(Candidate {
                tenant_id: candidate.tenant_id,
                suspended: candidate.suspended,
                issuer,
            });
            if found.len() >= at_most {
                break;
            }
        }
    }
    Ok(found)
}

/// Whether tokens exchanged under this trusted issuer may still act: checked
/// on every authenticated request, as a client's existence is.
pub async fn state(
    pool: &PgPool,
    tenant_id: TenantId,
    id: TrustedIssuerId,
) -> Result<PrincipalState, Error> {
    let suspended: Option<bool> = sqlx::query_scalar(
        "select t.suspended_at is not null from trusted_issuer i join tenant t using (tenant_id) \
         where i.tenant_id = $1 and i.trusted_issuer_id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(PrincipalState::from_suspended(suspended))
}

/// Of `ids`, those that still exist in a tenant that is not suspended: open
/// streams of the others are closed.
pub async fn existing(
    pool: &PgPool,
    ids: &[TrustedIssuerId],
) -> Result<std::collections::HashSet<TrustedIssuerId>, Error> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(TrustedIssuerId::as_uuid).collect();
    let rows: Vec<TrustedIssuerId> = sqlx::query_scalar(
        "select i.trusted_issuer_id from trusted_issuer i join tenant t using (tenant_id) \
         where i.trusted_issuer_id = any($1) and t.suspended_at is null",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}
