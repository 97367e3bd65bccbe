//! Provider webhook schemes: how a delivery is signed, and which headers name
//! its event type and delivery id. One module per provider behind one trait.

mod git_ref;
mod github;
pub mod targets;

use axum::http::HeaderMap;
use axum::http::header;

use crate::domain::{DeliveryId, Provider};

pub use git_ref::{Encoding, GitRef};
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
    /// The branch or tag the event concerns, read from the (verified) body.
    /// Parses only the fields it needs; a body of another shape concerns none.
    fn git_ref(&self, event_type: &str, body: &[u8], encoding: Encoding) -> GitRef;
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn replayable_headers_keep_order_and_drop_connection_named_and_credential_headers() {
        let map = headers(&[
            ("x-github-event", b"push"),
            ("connection", b"keep-alive, x-hop"),
            ("x-hop", b"1"),
            ("authorization", b"Bearer t"),
            ("user-agent", b"GitHub-Hookshot/1"),
            ("x-forwarded-for", b"1.2.3.4"),
        ]);
        assert_eq!(
            replayable_headers(&map).unwrap(),
            vec![
                ("x-github-event".to_owned(), "push".to_owned()),
                ("user-agent".to_owned(), "GitHub-Hookshot/1".to_owned()),
            ]
        );
        let map = headers(&[("x-custom", b"caf\xe9")]);
        assert_eq!(
            replayable_headers(&map),
            Err(WebhookError::NotUtf8("x-custom".into()))
        );
        let map = headers(&[("x-custom", "café".as_bytes())]);
        assert_eq!(replayable_headers(&map).unwrap()[0].1, "café");
    }

    #[test]
    fn a_repeated_identifying_header_is_ambiguous() {
        let once = headers(&[
            ("x-github-delivery", b"a"),
            ("x-custom", b"1"),
            ("x-custom", b"2"),
        ]);
        assert_eq!(check_unambiguous(&GitHub, &once), Ok(()));
        let twice = headers(&[("x-github-delivery", b"a"), ("x-github-delivery", b"b")]);
        assert_eq!(
            check_unambiguous(&GitHub, &twice),
            Err(WebhookError::Repeated("x-github-delivery"))
        );
    }
}
