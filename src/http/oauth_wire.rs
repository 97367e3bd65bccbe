//! What every OAuth 2.0 endpoint here shares (the token endpoint in
//! `super::oauth`, the device authorization and revocation endpoints in
//! `super::device`): RFC 6749 §5.2 errors, the form and its parameters,
//! client_secret_basic, scopes asked for, and never-cached answers.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::domain::Scopes;

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub(super) code: &'static str,
    description: String,
    /// Set on 429: the seconds for Retry-After.
    retry_after: Option<u64>,
    /// A 401 carries `WWW-Authenticate: Basic` only when the client sent
    /// Basic credentials (RFC 6749 §5.2): a browser that posted its
    /// credentials in the form must not be shown its own login prompt.
    pub(super) challenge: bool,
    /// Counted against the caller's address by the failure rate limit: wrong
    /// client credentials, a refused subject token, or one whose issuer cannot
    /// be reached (anyone can name an issuer that never answers).
    pub(super) counted: bool,
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
    /// Counts against the caller's address, whatever its code.
    pub(super) fn counted(self) -> Self {
        Self {
            counted: true,
            ..self
        }
    }

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
