//! Provider webhook schemes: how a delivery is signed, and which headers name
//! its event type and delivery id. One module per provider behind one trait;
//! `scheme` picks the one a repository's provider and settings call for.

mod bitbucket;
mod git_ref;
mod gitea;
mod github;
mod gitlab;
#[cfg(test)]
mod properties;
pub mod standard;
pub mod targets;

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{DeliveryId, Provider, WebhookSettings};

pub use bitbucket::Bitbucket;
pub use git_ref::{Encoding, GitRef};
pub use gitea::Gitea;
pub use github::GitHub;
pub use gitlab::GitLab;
pub use standard::StandardWebhooks;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error("the {0} header does not match the body")]
    BadSignature(&'static str),
    #[error(
        "the {header} header is more than {tolerance_seconds} s away from the server's clock: \
         a delivery is accepted only within that tolerance, so that a captured one cannot be replayed"
    )]
    Stale {
        header: &'static str,
        tolerance_seconds: u64,
    },
    #[error("missing or invalid {0} header")]
    BadHeader(&'static str),
    #[error("the {0} header appears more than once")]
    Repeated(&'static str),
    #[error("the value of the {0} header is not UTF-8")]
    NotUtf8(String),
    /// The body lacks what the scheme reads from it (a Standard Webhooks
    /// sender's event type).
    #[error("{0}")]
    BadBody(String),
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
    /// The event type, from a header, or for some senders from the (verified) body.
    fn event_type(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        encoding: Encoding,
    ) -> Result<String, WebhookError>;
    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError>;
    /// The headers that carry the signature, event type and delivery id: none
    /// may appear twice.
    fn identifying_headers(&self) -> &'static [&'static str];
    /// The branch or tag the event concerns, read from the (verified) body.
    /// Parses only the fields it needs; a body of another shape concerns none.
    fn git_ref(&self, event_type: &str, body: &[u8], encoding: Encoding) -> GitRef;
}

/// A repository's scheme: its provider's, configured by its settings.
pub enum Scheme {
    GitHub(GitHub),
    GitLab(GitLab),
    Gitea(Gitea),
    Bitbucket(Bitbucket),
    Standard(StandardWebhooks),
}

impl Scheme {
    pub fn as_dyn(&self) -> &dyn WebhookScheme {
        match self {
            Scheme::GitHub(s) => s,
            Scheme::GitLab(s) => s,
            Scheme::Gitea(s) => s,
            Scheme::Bitbucket(s) => s,
            Scheme::Standard(s) => s,
        }
    }
}

pub fn scheme(provider: Provider, settings: &WebhookSettings) -> Scheme {
    match provider {
        Provider::Github => Scheme::GitHub(GitHub),
        Provider::Gitlab => Scheme::GitLab(GitLab {
            verification: settings.verification.unwrap_or_default(),
            tolerance: settings.tolerance(),
        }),
        Provider::Gitea => Scheme::Gitea(Gitea::GITEA),
        Provider::Forgejo => Scheme::Gitea(Gitea::FORGEJO),
        Provider::Bitbucket => Scheme::Bitbucket(Bitbucket),
        Provider::Standard => Scheme::Standard(StandardWebhooks {
            tolerance: settings.tolerance(),
            event_type_field: settings
                .event_type_field
                .clone()
                .unwrap_or_else(|| WebhookSettings::DEFAULT_EVENT_TYPE_FIELD.to_owned()),
        }),
    }
}

/// A header's value, trimmed; None when absent, empty or not text.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether `value` may be an event type: 1 to 100 of letters, digits and
/// `_-.:/ ` (`push`, `Push Hook`, `repo:push`, `invoice.paid`).
fn valid_event_type(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/ ".contains(&b))
}

/// The event type a header names.
fn event_type_header(
    headers: &HeaderMap,
    name: &str,
    display: &'static str,
) -> Result<String, WebhookError> {
    header_text(headers, name)
        .filter(|v| valid_event_type(v))
        .map(str::to_owned)
        .ok_or(WebhookError::BadHeader(display))
}

/// The delivery id from the first of `names` present (`display` names them in errors).
fn delivery_header(
    headers: &HeaderMap,
    names: &[&str],
    display: &'static str,
) -> Result<DeliveryId, WebhookError> {
    names
        .iter()
        .find_map(|name| header_text(headers, name))
        .and_then(DeliveryId::parse)
        .ok_or(WebhookError::BadHeader(display))
}

/// A hex HMAC-SHA256 of the body in `name`, after `prefix` (`sha256=` or
/// none), keyed by one of `secrets`. An empty value (Gitea sends `""` or
/// `sha256=` when no secret is set) counts as missing.
fn verify_hex_hmac(
    headers: &HeaderMap,
    name: &str,
    display: &'static str,
    prefix: &str,
    body: &[u8],
    secrets: &[&[u8]],
) -> Result<(), WebhookError> {
    let value = header_text(headers, name)
        .filter(|v| *v != prefix)
        .ok_or(WebhookError::MissingSignature(display))?;
    let signature = value
        .strip_prefix(prefix)
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(WebhookError::BadSignature(display))?;
    let matches = secrets.iter().any(|secret| {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(&signature).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(WebhookError::BadSignature(display))
    }
}

/// How far apart two unix times are.
fn distance(a: i64, b: i64) -> Duration {
    Duration::from_secs(a.abs_diff(b))
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

/// What the schemes' tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    /// A fixture of `tests/fixtures`, e.g. `gitea/push.json`, byte for byte.
    pub fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(path),
        )
        .unwrap()
    }

    /// Each (event type, fixture, expected ref) as `scheme` reads it.
    pub fn assert_refs(scheme: &dyn super::WebhookScheme, cases: &[(&str, &str, super::GitRef)]) {
        for (event, file, expected) in cases {
            assert_eq!(
                scheme.git_ref(event, &fixture(file), super::Encoding::Json),
                *expected,
                "{file}"
            );
        }
    }

    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
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
