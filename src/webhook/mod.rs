//! Provider webhook schemes: how a delivery is signed, and which headers name
//! its event type and delivery id. One module per provider behind one trait.

mod github;
pub mod targets;

use axum::http::HeaderMap;
use axum::http::header::{self, HeaderName};

use crate::domain::{DeliveryId, Provider};

pub use github::GitHub;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error("the {0} header does not match the body")]
    BadSignature(&'static str),
    #[error("missing or invalid {0} header")]
    BadHeader(&'static str),
}

/// What hookrelay needs to know about one provider's webhooks.
pub trait WebhookScheme: Send + Sync {
    /// Checks the delivery's signature against each of the repository's secrets
    /// (two during a rotation), in constant time.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), WebhookError>;
    fn event_type(&self, headers: &HeaderMap) -> Result<String, WebhookError>;
    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError>;
}

pub fn scheme(provider: Provider) -> &'static dyn WebhookScheme {
    match provider {
        Provider::Github => &GitHub,
    }
}

/// The request headers worth replaying: what the sender sent, minus hop-by-hop
/// headers (RFC 9110 §7.6.1, including any named in `Connection`), Host and
/// Content-Length, which the replaying client sets for its own connection.
/// Headers that proxies add on the way in (`x-request-id`, `x-forwarded-*`,
/// `forwarded`, `via`, Envoy's `x-envoy-*`) are not the sender's and are dropped
/// too. Order is kept.
pub fn replayable_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    const DROPPED: [HeaderName; 9] = [
        header::CONNECTION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ];
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            !DROPPED.contains(name)
                && name.as_str() != "keep-alive"
                && !matches!(name.as_str(), "x-request-id" | "forwarded" | "via")
                && !name.as_str().starts_with("x-forwarded-")
                && !name.as_str().starts_with("x-envoy-")
                && !named_by_connection.iter().any(|n| n == name.as_str())
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}
