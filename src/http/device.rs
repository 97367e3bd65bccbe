//! `hookrelay-agent login`: the OAuth 2.0 Device Authorization Grant (RFC
//! 8628) for the public client `hookrelay-agent`, its refresh tokens (RFC 6749
//! §6) and their revocation (RFC 7009), and the approval API the console's
//! `/console/device` page calls.
//!
//! - `POST /oauth/device_authorization` (anonymous, rate limited per source)
//!   answers a device code, a user code of 8 letters from RFC 8628's 20
//!   consonants (`XXXX-XXXX`), and where a person approves it.
//! - A signed-in person with `clients:write` looks the code up
//!   (`POST /v1/device`), and approves it (`/v1/device/approve`: a client of the
//!   approver's tenant named after the device, with the scopes it asked for,
//!   never more than the approver holds) or denies it (`/v1/device/deny`).
//!   Wrong codes count against the caller's address like failed client
//!   authentications, and every lookup against the tenant (30 a minute).
//! - The device polls `/oauth/token` with the device code grant and gets an
//!   access token and a refresh token. Each refresh rotates the token; a
//!   rotated one presented again revokes the whole login.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::oauth_wire::{OAuthError, find_param, parse_form, requested_scopes, token_response};
use super::{ApiJson, SourceAddr};
use crate::auth::{Authorized, ClientsWrite, Principal};
use crate::domain::{ClientId, DisplayName, Scope, Scopes};
use crate::error::Error;
use crate::secrets;
use crate::state::AppState;
use crate::store;
use crate::store::device::{Grant, Poll, Refresh};

/// The public client the device grant is for: it has no secret.
pub const AGENT_CLIENT_ID: &str = "hookrelay-agent";
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a person has to approve (RFC 8628 `expires_in`).
const EXPIRES_IN: Duration = Duration::from_secs(600);
/// How often the device may poll (RFC 8628 `interval`).
const INTERVAL_SECONDS: i32 = 5;
/// RFC 8628 §6.1: 20 consonants, no vowels (no words), no look-alikes.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LENGTH: usize = 8;
/// Lookups and approvals per tenant.
const APPROVALS_PER_MINUTE: u32 = 30;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/device_authorization", post(device_authorization))
        .route("/oauth/revoke", post(revoke))
        .route("/v1/device", post(lookup))
        .route("/v1/device/approve", post(approve))
        .route("/v1/device/deny", post(deny))
}

/// The per-tenant limit of lookups and approvals.
pub fn approval_rate() -> crate::server::Rate {
    crate::server::Rate {
        count: NonZeroU32::new(APPROVALS_PER_MINUTE).expect("not zero"),
        per: Duration::from_secs(60),
    }
}

/// A new user code: 8 letters of the alphabet, uniformly.
fn generate_user_code() -> String {
    let mut code = String::with_capacity(USER_CODE_LENGTH);
    while code.len() < USER_CODE_LENGTH {
        // 240 = 12 × 20: rejecting the rest keeps every letter equally likely.
        let byte = rand::random::<u8>();
        if byte < 240 {
            code.push(USER_CODE_ALPHABET[usize::from(byte % 20)] as char);
        }
    }
    code
}

/// A user code as a person types it: any case, with or without the dash or
/// spaces. None unless it is 8 letters of the alphabet.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LENGTH && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

/// `XXXX-XXXX`, as shown and printed.
pub fn display_user_code(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

fn generate_token(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// The request's `client_id` must be the agent's public client.
fn public_client(params: &[(String, String)], required: bool) -> Result<(), OAuthError> {
    match find_param(params, "client_id") {
        Some(AGENT_CLIENT_ID) => Ok(()),
        None if !required => Ok(()),
        None => Err(OAuthError::new("invalid_request", "missing client_id")),
        Some(other) => Err(OAuthError::new(
            "invalid_client",
            format!("`{other}` is not a public client; use client_id={AGENT_CLIENT_ID}"),
        )),
    }
}

/// RFC 8628 §3.1–3.2.
async fn device_authorization(
    State(state): State<AppState>,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    state
        .rate_limits
        .device_authorizations
        .take(source)
        .map_err(|retry_after| {
            state.metrics.limited("device_authorization");
            OAuthError::rate_limited(
                retry_after,
                format!(
                    "too many device authorizations from this address; retry in {retry_after} s"
                ),
            )
        })?;
    let params = parse_form(&headers, &body)?;
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(OAuthError::new(
            "invalid_request",
            format!("{AGENT_CLIENT_ID} is a public client: send no credentials"),
        ));
    }
    public_client(&params, true)?;
    let scopes = match find_param(&params, "scope") {
        None | Some("") => Scopes::from_iter([Scope::EventsRead]),
        Some(scope) => Scopes::parse_space_separated(scope)
            .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?,
    };
    let device_name =
        DisplayName::parse(find_param(&params, "device_name").unwrap_or(AGENT_CLIENT_ID)).map_err(
            |reason| OAuthError::new("invalid_request", format!("invalid device_name: {reason}")),
        )?;
    let device_code = generate_token("hrd_");
    let device_code_hash = secrets::hash_client_secret(&device_code);
    let requested_from = source.to_string();
    let expires_at = OffsetDateTime::now_utc() + EXPIRES_IN;
    let mut user_code = None;
    // 20^8 codes: a clash with a pending one is rare, five in a row impossible.
    for _ in 0..5 {
        let code = generate_user_code();
        let new = store::device::NewAuthorization {
            device_code_hash: &device_code_hash,
            user_code: &code,
            device_name: &device_name,
            scopes: &scopes,
            requested_from: &requested_from,
            expires_at,
            interval_seconds: INTERVAL_SECONDS,
        };
        if store::device::create(&state.pool, &new).await? {
            user_code = Some(code);
            break;
        }
    }
    let user_code = display_user_code(&user_code.ok_or_else(|| {
        OAuthError::from(Error::Internal(anyhow::anyhow!(
            "no free user code in five tries"
        )))
    })?);
    tracing::info!(%source, device_name = device_name.as_str(), scope = %scopes, "device authorization started");
    let verification_uri = format!("{}/console/device", state.settings.public_url);
    Ok(token_response(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": EXPIRES_IN.as_secs(),
        "interval": INTERVAL_SECONDS,
    })))
}

/// Access and refresh tokens for `grant`, with `scopes` (a subset of its own).
fn issue(
    state: &AppState,
    grant: &Grant,
    scopes: &Scopes,
    refresh_token: &str,
) -> Result<Response, OAuthError> {
    if grant.suspended {
        return Err(OAuthError::new(
            "unauthorized_client",
            crate::auth::SUSPENDED,
        ));
    }
    let (access_token, expires_in) = state
        .keys
        .issue(
            grant.tenant_id,
            &Principal::Client(grant.client_id.clone()),
            scopes,
            None,
        )
        .map_err(|e| OAuthError::from(Error::Internal(e)))?;
    state.metrics.tokens_issued.inc();
    Ok(token_response(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": refresh_token,
        "scope": scopes.to_string(),
    })))
}

/// RFC 8628 §3.4–3.5: one poll of the token endpoint.
pub(super) async fn device_code_grant(
    state: &AppState,
    params: &[(String, String)],
) -> Result<Response, OAuthError> {
    public_client(params, true)?;
    let device_code = find_param(params, "device_code")
        .filter(|code| !code.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", "missing device_code"))?;
    let refresh_token = generate_token("hrr_");
    let poll = store::device::poll(
        &state.pool,
        &secrets::hash_client_secret(device_code),
        &secrets::hash_client_secret(&refresh_token),
    )
    .await?;
    match poll {
        Poll::Unknown => Err(OAuthError::new("invalid_grant", "unknown device_code")),
        Poll::Expired => Err(OAuthError::new(
            "expired_token",
            "the device code expired before it was approved; start again",
        )),
        Poll::SlowDown => Err(OAuthError::new(
            "slow_down",
            "polling faster than the interval; wait 5 s longer between polls",
        )),
        Poll::Pending => Err(OAuthError::new("authorization_pending", "not approved yet")),
        Poll::Denied => Err(OAuthError::new("access_denied", "the request was denied")),
        Poll::Used => Err(OAuthError::new(
            "invalid_grant",
            "this device code was used already",
        )),
        Poll::Approved(grant) => {
            tracing::info!(tenant_id = %grant.tenant_id, client_id = %grant.client_id, "device login issued");
            issue(state, &grant, &grant.scopes, &refresh_token)
        }
    }
}

/// RFC 6749 §6, rotating: the old token is spent, reusing it revokes the login.
pub(super) async fn refresh_grant(
    state: &AppState,
    params: &[(String, String)],
) -> Result<Response, OAuthError> {
    public_client(params, false)?;
    let presented = find_param(params, "refresh_token")
        .filter(|token| !token.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", "missing refresh_token"))?;
    let refresh_token = generate_token("hrr_");
    let outcome = store::device::rotate(
        &state.pool,
        &secrets::hash_client_secret(presented),
        &secrets::hash_client_secret(&refresh_token),
    )
    .await?;
    match outcome {
        Refresh::Unknown | Refresh::Revoked => Err(OAuthError::new(
            "invalid_grant",
            "the refresh token is revoked, expired or unknown; run `hookrelay-agent login` again",
        )),
        Refresh::Reused {
            tenant_id,
            client_id,
        } => {
            tracing::warn!(%tenant_id, %client_id, "a rotated refresh token was used again; the login is revoked");
            Err(OAuthError::new(
                "invalid_grant",
                "the refresh token was used before, so every token of this login is revoked; \
                 run `hookrelay-agent login` again",
            ))
        }
        Refresh::Rotated(grant) => {
            let scopes =
                requested_scopes(find_param(params, "scope"), &grant.scopes, "the client")?;
            issue(state, &grant, &scopes, &refresh_token)
        }
    }
}

/// RFC 7009: revokes a refresh token's login. Unknown tokens are answered 200
/// as well (§2.2), but counted against the caller's address; access tokens
/// cannot be revoked (they expire on their own).
async fn revoke(
    State(state): State<AppState>,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let limiter = &state.rate_limits.token_failures;
    let limited = |retry_after| {
        OAuthError::rate_limited(
            retry_after,
            format!("too many unknown tokens from this address; retry in {retry_after} s"),
        )
    };
    limiter.blocked(source).map_err(limited)?;
    let params = parse_form(&headers, &body)?;
    public_client(&params, false)?;
    let token = find_param(&params, "token")
        .filter(|token| !token.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", "missing token"))?;
    if find_param(&params, "token_type_hint") == Some("access_token") {
        return Err(OAuthError::new(
            "unsupported_token_type",
            "access tokens cannot be revoked: they expire on their own; delete the client to end them now",
        ));
    }
    if store::device::revoke(&state.pool, &secrets::hash_client_secret(token)).await? {
        tracing::info!(%source, "refresh token revoked");
    } else {
        limiter.failed(source).map_err(limited)?;
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], StatusCode::OK).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserCode {
    user_code: String,
}

#[derive(Debug, Serialize)]
struct PendingView {
    user_code: String,
    device_name: String,
    scopes: Scopes,
    /// The address the device asked from.
    requested_from: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

#[derive(Debug, Serialize)]
struct ApprovedView {
    client_id: ClientId,
    name: String,
    scopes: Scopes,
}

/// The caller's user code, checked against the limits: every attempt counts
/// against the tenant, a source blocked by failures is refused before any work.
fn checked_code(
    state: &AppState,
    tenant: &crate::auth::Tenant,
    source: IpAddr,
    input: &str,
) -> Result<String, Error> {
    let limited = |retry_after| Error::RateLimited {
        message: "too many device code attempts",
        retry_after,
    };
    state
        .rate_limits
        .token_failures
        .blocked(source)
        .map_err(limited)?;
    state
        .rate_limits
        .device_approvals
        .take(tenant.id)
        .map_err(limited)?;
    match normalize_user_code(input) {
        Some(code) => Ok(code),
        None => {
            wrong_code(state, source)?;
            Err(Error::invalid(
                "user_code",
                "must be 8 letters, as shown by the device (XXXX-XXXX)",
            ))
        }
    }
}

/// Counts a wrong code against the caller's address.
fn wrong_code(state: &AppState, source: IpAddr) -> Result<(), Error> {
    state
        .rate_limits
        .token_failures
        .failed(source)
        .map_err(|retry_after| Error::RateLimited {
            message: "too many wrong device codes",
            retry_after,
        })
}

async fn lookup(
    State(state): State<AppState>,
    SourceAddr(source): SourceAddr,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    ApiJson(body): ApiJson<UserCode>,
) -> Result<ApiJson<PendingView>, Error> {
    let code = checked_code(&state, &tenant, source, &body.user_code)?;
    let Some(pending) = store::device::pending(&state.pool, &code).await? else {
        wrong_code(&state, source)?;
        return Err(Error::NotFound("device code"));
    };
    Ok(ApiJson(PendingView {
        user_code: display_user_code(&code),
        device_name: pending.device_name,
        scopes: pending.scopes,
        requested_from: pending.requested_from,
        created_at: pending.created_at,
        expires_at: pending.expires_at,
    }))
}

async fn approve(
    State(state): State<AppState>,
    SourceAddr(source): SourceAddr,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    ApiJson(body): ApiJson<UserCode>,
) -> Result<ApiJson<ApprovedView>, Error> {
    let code = checked_code(&state, &tenant, source, &body.user_code)?;
    let Some(pending) = store::device::pending(&state.pool, &code).await? else {
        wrong_code(&state, source)?;
        return Err(Error::NotFound("device code"));
    };
    let quotas = state.quotas(tenant.id).await?;
    let unused_secret = secrets::generate_client_secret();
    let client_id = store::device::approve(
        &state.pool,
        &code,
        tenant.id,
        &tenant.scopes,
        &quotas,
        &secrets::hash_client_secret(secrecy::ExposeSecret::expose_secret(&unused_secret)),
    )
    .await?;
    tracing::info!(tenant_id = %tenant.id, %client_id, device_name = pending.device_name, "device approved");
    Ok(ApiJson(ApprovedView {
        client_id,
        name: pending.device_name,
        scopes: pending.scopes,
    }))
}

async fn deny(
    State(state): State<AppState>,
    SourceAddr(source): SourceAddr,
    Authorized(tenant, _): Authorized<ClientsWrite>,
    ApiJson(body): ApiJson<UserCode>,
) -> Result<StatusCode, Error> {
    let code = checked_code(&state, &tenant, source, &body.user_code)?;
    if !store::device::deny(&state.pool, &code).await? {
        wrong_code(&state, source)?;
        return Err(Error::NotFound("device code"));
    }
    tracing::info!(tenant_id = %tenant.id, "device denied");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_consonants_typed_any_way() {
        for _ in 0..1000 {
            let code = generate_user_code();
            assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(
                normalize_user_code(&shown.to_lowercase()),
                Some(code.clone())
            );
        }
        assert_eq!(
            normalize_user_code("bcdf ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        for bad in [
            "",
            "BCDF-GHJ",
            "BCDF-GHJKL",
            "ABCD-EFGH",
            "BCDF-GHJ1",
            "BCDF–GHJK",
        ] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
    }
}
