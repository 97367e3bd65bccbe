//! The OAuth 2.0 token endpoint, with errors exactly as RFC 6749 §5.2. Four
//! grants: client credentials (§4.4); token exchange (RFC 8693), where a
//! workload's own JWT is accepted under a tenant's trusted issuer
//! (`crate::federation`); and the device code (RFC 8628) and refresh token
//! (§6) grants of `hookrelay-agent login` (`super::device`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::SourceAddr;
use crate::auth::Principal;
use crate::domain::{ClientId, Scopes};
use crate::federation::ExchangeError;
use crate::secrets;
use crate::state::AppState;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth/token", post(token))
}

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub(crate) struct OAuthError {
    code: &'static str,
    description: String,
    /// Set on 429: the seconds for Retry-After.
    retry_after: Option<u64>,
    /// A 401 carries `WWW-Authenticate: Basic` only when the client sent
    /// Basic credentials (RFC 6749 §5.2): a browser that posted its
    /// credentials in the form must not be shown its own login prompt.
    challenge: bool,
    /// Counted against the caller's address by the failure rate limit: wrong
    /// client credentials, a refused subject token, or one whose issuer cannot
    /// be reached (anyone can name an issuer that never answers).
    counted: bool,
}

impl OAuthError {
    pub(super) fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
            challenge: true,
            counted: matches!(code, "invalid_client" | "invalid_grant"),
        }
    }

    /// Too many failed authentications from the caller's address. RFC 6749
    /// defines no code for it; `temporarily_unavailable` is the nearest.
    pub(super) fn rate_limited(retry_after: u64, description: String) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new("temporarily_unavailable", description)
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self.code {
            _ if self.retry_after.is_some() => StatusCode::TOO_MANY_REQUESTS,
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut response = (
            status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(json!({"error": self.code, "error_description": self.description})),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED && self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="hookrelay""#),
            );
        }
        response
    }
}

impl From<crate::error::Error> for OAuthError {
    fn from(error: crate::error::Error) -> Self {
        tracing::error!(
            error = format!("{:#}", anyhow::Error::from(error)),
            "token endpoint failed"
        );
        OAuthError::new("server_error", "internal error")
    }
}

/// The request's parameters; RFC 6749 §3.2: none may be repeated.
pub(crate) fn parse_form(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::new(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    for (i, (name, _)) in params.iter().enumerate() {
        if params[..i].iter().any(|(n, _)| n == name) {
            return Err(OAuthError::new(
                "invalid_request",
                format!("parameter `{name}` is repeated"),
            ));
        }
    }
    Ok(params)
}

pub(super) fn find_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// client_secret_basic: `Basic base64(urlencode(id):urlencode(secret))` (§2.3.1).
pub(crate) fn basic_credentials(
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::new("invalid_client", "malformed Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::new(
            "invalid_client",
            "use HTTP Basic or form credentials",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
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
                OAuthError {
                    counted: true,
                    ..OAuthError::new(
                        "temporarily_unavailable",
                        "the subject token's issuer cannot be reached to fetch its keys; try again later",
                    )
                }
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

/// The `scope` parameter: none asks for everything `granted`; more than
/// `granted` is `invalid_scope`.
pub(super) fn requested_scopes(
    requested: Option<&str>,
    granted: &Scopes,
    who: &str,
) -> Result<Scopes, OAuthError> {
    match requested {
        None | Some("") => Ok(granted.clone()),
        Some(requested) => {
            let requested = Scopes::parse_space_separated(requested)
                .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
            if !requested.is_subset(granted) {
                return Err(OAuthError::new(
                    "invalid_scope",
                    format!("{who} may not request that scope"),
                ));
            }
            Ok(requested)
        }
    }
}

/// A successful token response (RFC 6749 §5.1): never cached.
pub(super) fn token_response(body: serde_json::Value) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_form_must_be_urlencoded_and_repeat_no_parameter() {
        let form = with(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        let params = parse_form(&form, b"grant_type=client_credentials&scope=a+b").unwrap();
        assert_eq!(
            params,
            vec![
                ("grant_type".to_owned(), "client_credentials".to_owned()),
                ("scope".to_owned(), "a b".to_owned()),
            ]
        );
        let repeated = parse_form(&form, b"scope=a&scope=b").unwrap_err();
        assert_eq!(repeated.code, "invalid_request");
        let json = with(header::CONTENT_TYPE, "application/json");
        assert_eq!(
            parse_form(&json, b"{}").unwrap_err().code,
            "invalid_request"
        );
    }

    #[test]
    fn basic_credentials_are_urldecoded_after_base64() {
        // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        let encoded = STANDARD.encode("hrc%3Aid:s%2Bcret%25");
        let headers = with(header::AUTHORIZATION, &format!("Basic {encoded}"));
        assert_eq!(
            basic_credentials(&headers).unwrap(),
            Some(("hrc:id".to_owned(), "s+cret%".to_owned()))
        );
        assert_eq!(basic_credentials(&HeaderMap::new()).unwrap(), None);
        for bad in ["Basic !!!", "Basic", "Bearer abc"] {
            let error = basic_credentials(&with(header::AUTHORIZATION, bad)).unwrap_err();
            assert_eq!(error.code, "invalid_client", "{bad}");
        }
    }
}
