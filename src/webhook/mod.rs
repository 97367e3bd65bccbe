//! Provider webhook schemes: how a delivery is signed, and which headers name
//! its event type and delivery id. One module per provider behind one trait.

mod github;
pub mod targets;

use axum::http::HeaderMap;
use axum::http::header;

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
    #[error("the {0} header appears more than once")]
    Repeated(&'static str),
    #[error("the value of the {0} header is not UTF-8")]
    NotUtf8(String),
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
    /// The headers that carry the signature, event type and delivery id: none
    /// may appear twice.
    fn identifying_headers(&self) -> &'static [&'static str];
}

pub fn scheme(provider: Provider) -> &'static dyn WebhookScheme {
    match provider {
        Provider::Github => &GitHub,
    }
}

pub use hookrelay_proto::rules::never_replayed;

/// The request headers to store and replay, in order: everything but what
/// `never_replayed` names and the headers listed in `Connection`.
///
/// Values are replayed byte for byte. Stored headers are strings (JSON in the
/// database, `string` in the gRPC API), which hold any valid UTF-8 exactly; a
/// value that is not UTF-8 (RFC 9110 obs-text, which no supported sender
/// emits) is refused with 400 rather than rewritten.
pub fn replayable_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, WebhookError> {
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
            !never_replayed(name.as_str())
                && !named_by_connection.iter().any(|n| n == name.as_str())
        })
        .map(|(name, value)| {
            let value = std::str::from_utf8(value.as_bytes())
                .map_err(|_| WebhookError::NotUtf8(name.to_string()))?;
            Ok((name.as_str().to_owned(), value.to_owned()))
        })
        .collect()
}

/// Refuses a delivery that repeats a header naming its signature, event or
/// delivery: hookrelay checks the first value while a target may read the last.
pub fn check_unambiguous(
    scheme: &dyn WebhookScheme,
    headers: &HeaderMap,
) -> Result<(), WebhookError> {
    match scheme
        .identifying_headers()
        .iter()
        .find(|name| headers.get_all(**name).iter().nth(1).is_some())
    {
        Some(name) => Err(WebhookError::Repeated(name)),
        None => Ok(()),
    }
}
