use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{WebhookError, WebhookScheme};
use crate::domain::DeliveryId;

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
pub struct GitHub;

const SIGNATURE: &str = "x-hub-signature-256";
const EVENT: &str = "x-github-event";
const DELIVERY: &str = "x-github-delivery";

impl WebhookScheme for GitHub {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), WebhookError> {
        let header = headers
            .get(SIGNATURE)
            .ok_or(WebhookError::MissingSignature("X-Hub-Signature-256"))?;
        let signature = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .ok_or(WebhookError::BadSignature("X-Hub-Signature-256"))?;
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
            Err(WebhookError::BadSignature("X-Hub-Signature-256"))
        }
    }

    fn event_type(&self, headers: &HeaderMap) -> Result<String, WebhookError> {
        headers
            .get(EVENT)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 100
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            })
            .map(str::to_owned)
            .ok_or(WebhookError::BadHeader("X-GitHub-Event"))
    }

    fn identifying_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE, "x-hub-signature", EVENT, DELIVERY]
    }

    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError> {
        headers
            .get(DELIVERY)
            .and_then(|v| v.to_str().ok())
            .and_then(DeliveryId::parse)
            .ok_or(WebhookError::BadHeader("X-GitHub-Delivery"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE, signature.parse().unwrap());
        headers
    }

    /// GitHub's published test vector (docs: "Validating webhook deliveries").
    #[test]
    fn accepts_githubs_published_test_vector() {
        let headers =
            headers("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        let secret: &[u8] = b"It's a Secret to Everybody";
        assert_eq!(GitHub.verify(&headers, b"Hello, World!", &[secret]), Ok(()));
    }

    #[test]
    fn rejects_a_changed_body_or_secret() {
        let headers =
            headers("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        let secret: &[u8] = b"It's a Secret to Everybody";
        assert!(
            GitHub
                .verify(&headers, b"Hello, World?", &[secret])
                .is_err()
        );
        assert!(
            GitHub
                .verify(&headers, b"Hello, World!", &[b"another secret"])
                .is_err()
        );
    }

    #[test]
    fn accepts_either_secret_during_a_rotation() {
        let headers =
            headers("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        let old: &[u8] = b"It's a Secret to Everybody";
        assert_eq!(
            GitHub.verify(&headers, b"Hello, World!", &[b"new secret", old]),
            Ok(())
        );
    }

    #[test]
    fn rejects_missing_and_malformed_signatures() {
        assert_eq!(
            GitHub.verify(&HeaderMap::new(), b"x", &[b"s"]),
            Err(WebhookError::MissingSignature("X-Hub-Signature-256"))
        );
        for bad in ["757107ea", "sha1=757107ea", "sha256=zz", "sha256="] {
            assert!(
                GitHub.verify(&headers(bad), b"x", &[b"s"]).is_err(),
                "{bad}"
            );
        }
    }
}
