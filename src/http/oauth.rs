//! The OAuth 2.0 token endpoint, with errors exactly as RFC 6749 §5.2. Four
//! grants: client credentials (§4.4); token exchange (RFC 8693), where a
//! workload's own JWT is accepted under a tenant's trusted issuer
//! (`crate::federation`); and the device code (RFC 8628) and refresh token
//! (§6) grants of `hookrelay-agent login` (`super::device`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::json;

use super::SourceAddr;
use super::oauth_wire::{
    OAuthError, basic_credentials, find_param, parse_form, requested_scopes, token_response,
};
use crate::auth::Principal;
use crate::domain::ClientId;
use crate::federation::ExchangeError;
use crate::secrets;
use crate::state::AppState;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth/token", post(token))
}

/// Failed client authentications and refused subject tokens are rate limited
/// per source address: a source over its limit gets 429 before any work is
/// done for it, while other sources, and its own later successes once its
/// bucket refills, are not slowed.
async fn token(
    State(state): State<AppState>,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let limiter = &state.rate_limits.token_failures;
    let limited = |retry_after| {
        state.metrics.limited("token");
        tracing::info!(%source, "token endpoint rate limited");
        OAuthError::rate_limited(
            retry_after,
            format!(
                "too many failed client authentications from this address; retry in {retry_after} s"
            ),
        )
    };
    limiter.blocked(source).map_err(limited)?;
    let result = issue(&state, &headers, &body).await;
    if let Err(error) = &result {
        state
            .metrics
            .token_errors
            .get_or_create(&crate::telemetry::ErrorLabels { error: error.code })
            .inc();
    }
    match result {
        Err(mut error) if error.counted => {
            limiter.failed(source).map_err(limited)?;
            if error.code == "invalid_client" {
                error.challenge = headers.contains_key(header::AUTHORIZATION);
            }
            Err(error)
        }
        other => other,
    }
}

async fn issue(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let params = parse_form(headers, body)?;
    let param = |name: &str| find_param(&params, name);

    match param("grant_type") {
        None => return Err(OAuthError::new("invalid_request", "missing grant_type")),
        Some("client_credentials") => {}
        Some(TOKEN_EXCHANGE) => return exchange(state, headers, &params).await,
        Some(grant @ (super::device::DEVICE_CODE_GRANT | "refresh_token")) => {
            if headers.contains_key(header::AUTHORIZATION) {
                return Err(OAuthError::new(
                    "invalid_request",
                    "this grant is for the public client hookrelay-agent: send no credentials",
                ));
            }
            return if grant == "refresh_token" {
                super::device::refresh_grant(state, &params).await
            } else {
                super::device::device_code_grant(state, &params).await
            };
        }
        Some(other) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!(
                    "grant type `{other}` is not supported; use one of {}",
                    GRANT_TYPES.join(", ")
                ),
            ));
        }
    }

    let form_credentials = match (param("client_id"), param("client_secret")) {
        (Some(id), Some(secret)) => Some((id.to_owned(), secret.to_owned())),
        (None, None) => None,
        _ => {
            return Err(OAuthError::new(
                "invalid_request",
                "client_id and client_secret go together",
            ));
        }
    };
    let (client_id, client_secret) = match (basic_credentials(headers)?, form_credentials) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::new(
                "invalid_request",
                "use one client authentication method, not two",
            ));
        }
        (Some(credentials), None) | (None, Some(credentials)) => credentials,
        (None, None) => {
            return Err(OAuthError::new(
                "invalid_client",
                "client authentication is required",
            ));
        }
    };

    let invalid_client = || OAuthError::new("invalid_client", "unknown client or wrong secret");
    let client_id = ClientId::parse(&client_id).ok_or_else(invalid_client)?;
    let credentials = store::client::credentials(&state.pool, &client_id).await?;
    // Compare against a dummy hash for unknown clients too, so timing tells nothing.
    let stored_hash = credentials
        .as_ref()
        .map_or(&[0u8; 32][..], |c| c.secret_hash.as_slice());
    let valid = secrets::verify_client_secret(&client_secret, stored_hash);
    let credentials = credentials.filter(|_| valid).ok_or_else(invalid_client)?;
    if credentials.suspended {
        return Err(OAuthError::new(
            "unauthorized_client",
            crate::auth::SUSPENDED,
        ));
    }

    let scopes = requested_scopes(param("scope"), &credentials.scopes, "the client")?;
    let (access_token, expires_in) = state
        .keys
        .issue(
            credentials.tenant_id,
            &Principal::Client(client_id.clone()),
            &scopes,
            None,
        )
        .map_err(|e| OAuthError::from(crate::error::Error::Internal(e)))?;
    state.metrics.tokens_issued.inc();
    tracing::info!(tenant_id = %credentials.tenant_id, %client_id, "access token issued");
    Ok(token_response(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scopes.to_string(),
    })))
}

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Every grant type the token endpoint takes (RFC 8414 metadata lists them).
pub const GRANT_TYPES: [&str; 4] = [
    "client_credentials",
    TOKEN_EXCHANGE,
    super::device::DEVICE_CODE_GRANT,
    "refresh_token",
];
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 8693 §2: a workload's JWT for an access token of the one tenant that
/// trusts it. No client authentication: the subject token is the credential.
async fn exchange(
    state: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Response, OAuthError> {
    let param = |name: &str| find_param(params, name);
    if headers.contains_key(header::AUTHORIZATION) || param("client_id").is_some() {
        return Err(OAuthError::new(
            "invalid_request",
            "a token exchange takes no client credentials: the subject token is the credential",
        ));
    }
    let subject_token = param("subject_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", "missing subject_token"))?;
    match param("subject_token_type") {
        Some(JWT_TYPE | ID_TOKEN_TYPE) => {}
        None => {
            return Err(OAuthError::new(
                "invalid_request",
                "missing subject_token_type",
            ));
        }
        Some(other) => {
            return Err(OAuthError::new(
                "invalid_request",
                format!("subject_token_type `{other}` is not supported; use {JWT_TYPE}"),
            ));
        }
    }
    if param("actor_token").is_some() {
        return Err(OAuthError::new(
            "invalid_request",
            "actor tokens (delegation) are not supported",
        ));
    }
    if let Some(requested) = param("requested_token_type")
        && requested != ACCESS_TOKEN_TYPE
    {
        return Err(OAuthError::new(
            "invalid_request",
            format!("requested_token_type must be {ACCESS_TOKEN_TYPE}"),
        ));
    }
    if let Some(audience) = param("audience")
        && audience != state.keys.audience()
    {
        return Err(OAuthError::new(
            "invalid_target",
            format!(
                "this server issues tokens for the audience `{}` only",
                state.keys.audience()
            ),
        ));
    }

    let exchanged = state
        .federation
        .verify(&state.pool, subject_token)
        .await
        .map_err(|error| match error {
            ExchangeError::Invalid(why) => {
                tracing::info!(reason = %why, "subject token refused");
                OAuthError::new("invalid_grant", why)
            }
            // The detail (DNS, connect, TLS) is for the log; the anonymous
            // caller gets a short reason.
            ExchangeError::Unavailable(why) => {
                tracing::warn!(reason = %why, "token exchange unavailable");
                OAuthError::new(
                    "temporarily_unavailable",
                    "the subject token's issuer cannot be reached to fetch its keys; try again later",
                )
                .counted()
            }
            ExchangeError::Store(error) => error.into(),
        })?;
    if exchanged.suspended {
        return Err(OAuthError::new(
            "unauthorized_client",
            crate::auth::SUSPENDED,
        ));
    }
    let scopes = requested_scopes(param("scope"), &exchanged.scopes, "the trusted issuer")?;
    let principal = Principal::Workload {
        trusted_issuer: exchanged.trusted_issuer_id,
        subject: format!("{}#{}", exchanged.issuer, exchanged.subject),
    };
    let (access_token, expires_in) = state
        .keys
        .issue(
            exchanged.tenant_id,
            &principal,
            &scopes,
            Some(exchanged.expires_at),
        )
        .map_err(|_| OAuthError::new("invalid_grant", "the subject token has expired"))?;
    state.metrics.tokens_issued.inc();
    // The audit record of every exchange.
    tracing::info!(
        tenant_id = %exchanged.tenant_id,
        trusted_issuer_id = %exchanged.trusted_issuer_id,
        issuer = %exchanged.issuer,
        subject = %exchanged.subject,
        scope = %scopes,
        expires_in,
        "token exchanged for a workload"
    );
    Ok(token_response(json!({
        "access_token": access_token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scopes.to_string(),
    })))
}
