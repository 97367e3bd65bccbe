//! `/v1/trusted-issuers`: the workload identity providers whose tokens the
//! tenant accepts in exchange for its own access tokens (issue 18: the token
//! exchange grant comes next). Scope `clients:write`, as for clients: a trusted
//! issuer is a way to obtain credentials.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::page::{Page, PageQuery, created_cursor, parse_created_cursor};
use super::{ApiJson, ApiQuery};
use crate::auth::{Authorized, ClientsWrite};
use crate::domain::{Audience, ClaimConditions, IssuerUrl, Scopes, TrustedIssuerId};
use crate::error::Error;
use crate::state::AppState;
use crate::store;
use crate::store::trusted_issuer::TrustedIssuer;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/trusted-issuers", post(create).get(list))
        .route("/v1/trusted-issuers/{id}", delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTrustedIssuer {
    issuer: String,
    audience: String,
    claims: BTreeMap<String, String>,
    scopes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct TrustedIssuerView {
    id: TrustedIssuerId,
    issuer: String,
    audience: String,
    claims: BTreeMap<String, String>,
    scopes: Scopes,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<TrustedIssuer> for TrustedIssuerView {
    fn from(issuer: TrustedIssuer) -> Self {
        Self {
            id: issuer.id,
            issuer: issuer.issuer,
            audience: issuer.audience,
            claims: issuer.claims,
            scopes: issuer.scopes,
            created_at: issuer.created_at,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    ApiJson(body): ApiJson<CreateTrustedIssuer>,
) -> Result<(StatusCode, ApiJson<TrustedIssuerView>), Error> {
    let issuer = IssuerUrl::parse(&body.issuer, state.federation.allows_http())
        .map_err(|r| Error::invalid("issuer", r))?;
    let audience = Audience::parse(&body.audience).map_err(|r| Error::invalid("audience", r))?;
    let claims = ClaimConditions::parse(body.claims).map_err(|r| Error::invalid("claims", r))?;
    let scopes = super::clients::grantable_scopes(&body.scopes, &tenant.scopes)?;
    let quotas = state.quotas(tenant.id).await?;
    let created = store::trusted_issuer::insert(
        &state.pool,
        tenant.id,
        &issuer,
        &audience,
        &claims,
        &scopes,
        &quotas,
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(created.into())))
}

async fn list(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<TrustedIssuerView>>, Error> {
    let limit = page.limit()?;
    let after = page.after(|cursor| {
        let (at, id) = parse_created_cursor(cursor)?;
        Some((at, TrustedIssuerId::parse(id)?))
    })?;
    let issuers = store::trusted_issuer::list(&state.pool, tenant.id, after, limit + 1).await?;
    Ok(ApiJson(Page::of(
        issuers,
        limit,
        |i| created_cursor(i.created_at, &i.id.to_string()),
        Into::into,
    )))
}

async fn remove(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = TrustedIssuerId::parse(&id).ok_or(Error::NotFound("trusted issuer"))?;
    store::trusted_issuer::delete(&state.pool, tenant.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
