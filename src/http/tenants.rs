//! `/v1/tenants`: self-service signup.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::routing::post;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{ApiJson, SourceAddr};
use crate::auth::bearer_token;
use crate::domain::{ClientId, DisplayName, Scopes, TenantId};
use crate::error::Error;
use crate::secrets;
use crate::state::AppState;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/tenants", post(sign_up))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUp {
    name: String,
}

#[derive(Debug, Serialize)]
struct SignedUp {
    tenant_id: TenantId,
    client_id: ClientId,
    /// Shown once: only its hash is stored.
    client_secret: String,
}

/// Self-service signup: a tenant and a client holding every scope.
async fn sign_up(
    State(state): State<AppState>,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignUp>,
) -> Result<(StatusCode, ApiJson<SignedUp>), Error> {
    state
        .rate_limits
        .signup
        .take(source)
        .map_err(|retry_after| {
            state.metrics.limited("signup");
            tracing::info!(%source, "signup rate limited");
            Error::RateLimited {
                message: "too many signups from this address",
                retry_after,
            }
        })?;
    if let Some(expected) = &state.settings.signup_token {
        let presented = bearer_token(&headers)?;
        if !secrets::constant_time_eq(presented.as_bytes(), expected.expose_secret().as_bytes()) {
            return Err(Error::Unauthenticated("wrong signup token".into()));
        }
    }
    let name = DisplayName::parse(&body.name).map_err(|reason| Error::invalid("name", reason))?;
    let client_name = DisplayName::parse("default").expect("a valid name");
    let secret = secrets::generate_client_secret();
    let (tenant_id, client_id) = store::tenant::create_with_client(
        &state.pool,
        &name,
        &client_name,
        &Scopes::all(),
        &secrets::hash_client_secret(secret.expose_secret()),
    )
    .await?;
    tracing::info!(%tenant_id, %client_id, "tenant signed up");
    Ok((
        StatusCode::CREATED,
        ApiJson(SignedUp {
            tenant_id,
            client_id,
            client_secret: secret.expose_secret().to_owned(),
        }),
    ))
}
