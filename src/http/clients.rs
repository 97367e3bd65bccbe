//! `/v1/clients`: a tenant's extra OAuth2 clients (create, list, delete).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::page::{Page, PageQuery, created_cursor, parse_created_cursor};
use super::{ApiJson, ApiQuery};
use crate::auth::{Authorized, ClientsWrite};
use crate::domain::{ClientId, DisplayName, Quota, Scope, Scopes};
use crate::error::Error;
use crate::secrets;
use crate::state::AppState;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/clients", post(create).get(list))
        .route("/v1/clients/{client_id}", delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateClient {
    name: String,
    scopes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CreatedClient {
    client_id: ClientId,
    /// Shown once: only its hash is stored.
    client_secret: String,
    scopes: Scopes,
}

#[derive(Debug, Serialize)]
struct ClientView {
    client_id: ClientId,
    name: String,
    scopes: Scopes,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Made by approving `hookrelay-agent login` (see `super::device`).
    device: bool,
    /// When a device client last renewed its access; null for other clients.
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
}

/// Extra credentials for the tenant, e.g. a read-only one for a relay agent. A
/// client can only hand out scopes it holds itself.
async fn create(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    ApiJson(body): ApiJson<CreateClient>,
) -> Result<(StatusCode, ApiJson<CreatedClient>), Error> {
    let name = DisplayName::parse(&body.name).map_err(|reason| Error::invalid("name", reason))?;
    let scopes = grantable_scopes(&body.scopes, &tenant.scopes)?;
    let secret = secrets::generate_client_secret();
    let quotas = state.quotas(tenant.id).await?;
    let mut transaction = state.pool.begin().await?;
    store::quota::admit_one(&mut transaction, tenant.id, Quota::Clients, &quotas).await?;
    let client_id = store::client::insert(
        &mut *transaction,
        tenant.id,
        &name,
        &scopes,
        &secrets::hash_client_secret(secret.expose_secret()),
    )
    .await?;
    transaction.commit().await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedClient {
            client_id,
            client_secret: secret.expose_secret().to_owned(),
            scopes,
        }),
    ))
}

/// The scopes a caller hands out (to a client or a trusted issuer): at least
/// one, each known, none beyond the caller's own.
pub(super) fn grantable_scopes(requested: &[String], caller: &Scopes) -> Result<Scopes, Error> {
    let scopes = requested
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Scopes, _>>()
        .map_err(|e| Error::invalid("scopes", e.to_string()))?;
    if scopes.is_empty() {
        return Err(Error::invalid("scopes", "must name at least one scope"));
    }
    if !scopes.is_subset(caller) {
        return Err(Error::Forbidden(
            "a caller cannot grant scopes its own token lacks".into(),
        ));
    }
    Ok(scopes)
}

async fn list(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<ClientView>>, Error> {
    let limit = page.limit()?;
    let after = page.after(|cursor| {
        let (at, id) = parse_created_cursor(cursor)?;
        Some((at, id.to_owned()))
    })?;
    let after = after.as_ref().map(|(at, id)| (*at, id.as_str()));
    let clients = store::client::list(&state.pool, tenant.id, after, limit + 1).await?;
    Ok(ApiJson(Page::of(
        clients,
        limit,
        |c| created_cursor(c.created_at, c.client_id.as_str()),
        |c| ClientView {
            client_id: c.client_id,
            name: c.name,
            scopes: c.scopes,
            created_at: c.created_at,
            device: c.device,
            last_used_at: c.last_used_at,
        },
    )))
}

/// From now on the client gets no token, and its issued tokens are refused.
/// The caller must hold every scope of the client, and the tenant's last client
/// with `clients:write` stays (see `store::client::delete`).
async fn remove(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    Path(client_id): Path<String>,
) -> Result<StatusCode, Error> {
    let client_id = ClientId::parse(&client_id).ok_or(Error::NotFound("client"))?;
    store::client::delete(&state.pool, tenant.id, &client_id, &tenant.scopes).await?;
    Ok(StatusCode::NO_CONTENT)
}
