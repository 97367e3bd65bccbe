//! The Standard Webhooks specification (https://www.standardwebhooks.com,
//! spec 1.0.0): `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature`, a space-separated list of `v1,<base64>` signatures (more
//! than one during the sender's key rotation), each the HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` keyed by the base64 bytes of the `whsec_` secret.
//!
//! As the reference libraries do: the timestamp must be within the tolerance
//! (default 5 minutes) either way, so a captured delivery cannot be replayed
//! later; signatures of other versions (`v1a`, `v2`) are skipped; the `whsec_`
//! prefix is optional and the base64 may be unpadded. GitLab's signing tokens
//! follow the same scheme (`gitlab.rs`).

use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::git_ref::{Encoding, GitRef, json_document};
use super::{
    WebhookError, WebhookScheme, delivery_header, distance, header_text, valid_event_type,
};
use crate::domain::DeliveryId;

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";

/// A Standard Webhooks sender; the event type is a field of the JSON body.
pub struct StandardWebhooks {
    pub tolerance: Duration,
    /// A dotted path into the body, e.g. `type` or `data.kind`.
    pub event_type_field: String,
}

/// The HMAC key of a `whsec_<base64>` secret (the prefix optional).
fn key(secret: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(secret).ok()?;
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    (!key.is_empty()).then_some(key)
}

/// A signing secret a sender brings, as the spec defines it: `whsec_` and the
/// base64 of 24 to 64 bytes (the same decoding that verifies with it).
pub fn check_secret(secret: &str) -> Result<(), String> {
    let key = secret
        .starts_with("whsec_")
        .then(|| key(secret.as_bytes()))
        .flatten()
        .ok_or("must be `whsec_` followed by base64")?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "must hold 24 to 64 bytes (the Standard Webhooks specification), not {}",
            key.len()
        ));
    }
    Ok(())
}

/// Verifies a Standard Webhooks signature as of `now` (unix seconds).
pub(super) fn verify_signature(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[&[u8]],
    tolerance: Duration,
    now: i64,
) -> Result<(), WebhookError> {
    let signatures = header_text(headers, SIGNATURE)
        .ok_or(WebhookError::MissingSignature("webhook-signature"))?;
    let id = header_text(headers, ID).ok_or(WebhookError::BadHeader("webhook-id"))?;
    // The signed content holds the timestamp as sent.
    let timestamp_text = header_text(headers, TIMESTAMP)
        .filter(|t| t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(WebhookError::BadHeader("webhook-timestamp"))?;
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| WebhookError::BadHeader("webhook-timestamp"))?;
    // The spec: the id and timestamp must not hold a `.`, which would let one
    // signed content be read as another.
    if id.contains('.') {
        return Err(WebhookError::BadHeader("webhook-id"));
    }
    if distance(timestamp, now) > tolerance {
        return Err(WebhookError::Stale {
            header: "webhook-timestamp",
            tolerance_seconds: tolerance.as_secs(),
        });
    }
    let given: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    if given.is_empty() {
        return Err(WebhookError::BadSignature("webhook-signature"));
    }
    let matches = secrets.iter().filter_map(|secret| key(secret)).any(|key| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_text.as_bytes());
        mac.update(b".");
        mac.update(body);
        // verify_slice compares in constant time (and refuses other lengths).
        given
            .iter()
            .any(|signature| mac.clone().verify_slice(signature).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(WebhookError::BadSignature("webhook-signature"))
    }
}

pub(super) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl WebhookScheme for StandardWebhooks {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), WebhookError> {
        verify_signature(headers, body, secrets, self.tolerance, now())
    }

    fn event_type(
        &self,
        _headers: &HeaderMap,
        body: &[u8],
        encoding: Encoding,
    ) -> Result<String, WebhookError> {
        let field = &self.event_type_field;
        let missing = || {
            WebhookError::BadBody(format!(
                "the body has no `{field}` field naming the event type (1 to 100 letters, digits \
                 and `_-.:/`); set the repository's event_type_field if the sender names it elsewhere"
            ))
        };
        let document = json_document(body, encoding).ok_or_else(missing)?;
        let value: serde_json::Value = serde_json::from_slice(&document).map_err(|_| missing())?;
        let found = field
            .split('.')
            .try_fold(&value, |object, name| object.get(name))
            .and_then(serde_json::Value::as_str)
            .filter(|v| valid_event_type(v))
            .ok_or_else(missing)?;
        Ok(found.to_owned())
    }

    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError> {
        delivery_header(headers, &[ID], "webhook-id")
    }

    fn identifying_headers(&self) -> &'static [&'static str] {
        &[ID, TIMESTAMP, SIGNATURE]
    }

    /// Standard Webhooks senders are not git hosts: no branch or tag.
    fn git_ref(&self, _event_type: &str, _body: &[u8], _encoding: Encoding) -> GitRef {
        GitRef::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::test_support::{fixture, headers};

    fn signed(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", &timestamp.to_string()),
            ("webhook-signature", signature),
        ])
    }

    const TOLERANCE: Duration = Duration::from_secs(300);

    /// Both published vectors (standard-webhooks/standard-webhooks libraries'
    /// signing tests), verified at their own timestamps.
    #[test]
    fn accepts_the_published_vectors() {
        let vectors: Vec<serde_json::Value> =
            serde_json::from_slice(&fixture("standard-webhooks/vectors.json")).unwrap();
        assert_eq!(vectors.len(), 2);
        for vector in vectors {
            let secret = vector["secret"].as_str().unwrap().as_bytes();
            let timestamp = vector["timestamp"].as_i64().unwrap();
            let headers = signed(
                vector["msg_id"].as_str().unwrap(),
                timestamp,
                vector["expected_signature"].as_str().unwrap(),
            );
            let body = vector["payload"].as_str().unwrap().as_bytes();
            assert_eq!(
                verify_signature(&headers, body, &[secret], TOLERANCE, timestamp),
                Ok(())
            );
            // The prefix is optional.
            let bare = secret.strip_prefix(b"whsec_").unwrap();
            assert_eq!(
                verify_signature(&headers, body, &[bare], TOLERANCE, timestamp),
                Ok(())
            );
        }
    }

    const SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID_A: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS_A: i64 = 1_614_265_330;
    const BODY_A: &[u8] = br#"{"test": 2432232314}"#;
    const SIG_A: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    /// The libraries' negative cases.
    #[test]
    fn refuses_what_the_reference_libraries_refuse() {
        let check = |headers: &HeaderMap, body: &[u8], now: i64| {
            verify_signature(headers, body, &[SECRET], TOLERANCE, now)
        };
        for bad in [
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
            "v1,",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            assert_eq!(
                check(&signed(ID_A, TS_A, bad), BODY_A, TS_A),
                Err(WebhookError::BadSignature("webhook-signature")),
                "{bad}"
            );
        }
        // A changed body, id or timestamp.
        assert!(check(&signed(ID_A, TS_A, SIG_A), br#"{"test": 2432232315}"#, TS_A).is_err());
        assert!(check(&signed("msg_other", TS_A, SIG_A), BODY_A, TS_A).is_err());
        assert!(check(&signed(ID_A, TS_A + 1, SIG_A), BODY_A, TS_A + 1).is_err());
        // Out of the tolerance, either way: Go's "old/new timestamp fails".
        for now in [TS_A + 301, TS_A - 301] {
            assert_eq!(
                check(&signed(ID_A, TS_A, SIG_A), BODY_A, now),
                Err(WebhookError::Stale {
                    header: "webhook-timestamp",
                    tolerance_seconds: 300
                })
            );
        }
        assert_eq!(
            check(&signed(ID_A, TS_A, SIG_A), BODY_A, TS_A + 299),
            Ok(())
        );
        // Missing or malformed headers.
        assert_eq!(
            check(&HeaderMap::new(), BODY_A, TS_A),
            Err(WebhookError::MissingSignature("webhook-signature"))
        );
        let no_timestamp = headers(&[("webhook-id", ID_A), ("webhook-signature", SIG_A)]);
        assert_eq!(
            check(&no_timestamp, BODY_A, TS_A),
            Err(WebhookError::BadHeader("webhook-timestamp"))
        );
        let dotted = headers(&[
            ("webhook-id", "a.b"),
            ("webhook-timestamp", &TS_A.to_string()),
            ("webhook-signature", SIG_A),
        ]);
        assert_eq!(
            check(&dotted, BODY_A, TS_A),
            Err(WebhookError::BadHeader("webhook-id"))
        );
    }

    /// Go's "valid multi sig is valid", and a rotation on hookrelay's side.
    #[test]
    fn any_valid_signature_of_several_and_either_secret_verifies() {
        let multi = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SIG_A} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
        );
        assert_eq!(
            verify_signature(
                &signed(ID_A, TS_A, &multi),
                BODY_A,
                &[SECRET],
                TOLERANCE,
                TS_A
            ),
            Ok(())
        );
        let other: &[u8] = b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert_eq!(
            verify_signature(
                &signed(ID_A, TS_A, SIG_A),
                BODY_A,
                &[other, SECRET],
                TOLERANCE,
                TS_A
            ),
            Ok(())
        );
    }

    #[test]
    fn the_event_type_is_a_field_of_the_body() {
        let scheme = |field: &str| StandardWebhooks {
            tolerance: TOLERANCE,
            event_type_field: field.into(),
        };
        let body = br#"{"type":"invoice.paid","data":{"kind":"charge"}}"#;
        let none = HeaderMap::new();
        assert_eq!(
            scheme("type")
                .event_type(&none, body, Encoding::Json)
                .unwrap(),
            "invoice.paid"
        );
        assert_eq!(
            scheme("data.kind")
                .event_type(&none, body, Encoding::Json)
                .unwrap(),
            "charge"
        );
        for (field, body) in [
            ("type", &br#"{"kind":"x"}"#[..]),
            ("type", br#"{"type":7}"#),
            ("type", b"not json"),
            ("data.kind.deeper", body),
        ] {
            assert!(matches!(
                scheme(field).event_type(&none, body, Encoding::Json),
                Err(WebhookError::BadBody(_))
            ));
        }
    }
}
