//! Gitea and Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature` hold the hex
//! HMAC-SHA256 of the raw body, with no prefix; the event and delivery come in
//! `X-Gitea-Event` / `X-Gitea-Delivery` (`X-Forgejo-…`). Both also send
//! GitHub-style headers, which are stored and replayed like any other. The
//! payloads have GitHub's shape, so the ref is read the same way.
//!
//! Sources: Gitea `services/webhook/deliver.go` and Forgejo
//! `services/webhook/shared/payloader.go` (`AddDefaultHeaders`); the Gitea and
//! Forgejo webhook docs verify with `hash_hmac('sha256', $payload, $secret)`.

use axum::http::HeaderMap;

use super::git_ref::{Encoding, GitRef};
use super::github::github_style_ref;
use super::{WebhookError, WebhookScheme, delivery_header, event_type_header, verify_hex_hmac};
use crate::domain::DeliveryId;

/// Gitea, or Forgejo (the same scheme under its own header names).
pub struct Gitea {
    signature: (&'static str, &'static str),
    event: (&'static str, &'static str),
    delivery: (&'static str, &'static str),
    identifying: &'static [&'static str],
}

impl Gitea {
    pub const GITEA: Gitea = Gitea {
        signature: ("x-gitea-signature", "X-Gitea-Signature"),
        event: ("x-gitea-event", "X-Gitea-Event"),
        delivery: ("x-gitea-delivery", "X-Gitea-Delivery"),
        identifying: &["x-gitea-signature", "x-gitea-event", "x-gitea-delivery"],
    };
    pub const FORGEJO: Gitea = Gitea {
        signature: ("x-forgejo-signature", "X-Forgejo-Signature"),
        event: ("x-forgejo-event", "X-Forgejo-Event"),
        delivery: ("x-forgejo-delivery", "X-Forgejo-Delivery"),
        identifying: &[
            "x-forgejo-signature",
            "x-forgejo-event",
            "x-forgejo-delivery",
        ],
    };
}

impl WebhookScheme for Gitea {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), WebhookError> {
        let (name, display) = self.signature;
        verify_hex_hmac(headers, name, display, "", body, secrets)
    }

    fn event_type(
        &self,
        headers: &HeaderMap,
        _body: &[u8],
        _encoding: Encoding,
    ) -> Result<String, WebhookError> {
        event_type_header(headers, self.event.0, self.event.1)
    }

    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError> {
        delivery_header(headers, &[self.delivery.0], self.delivery.1)
    }

    fn identifying_headers(&self) -> &'static [&'static str] {
        self.identifying
    }

    fn git_ref(&self, event_type: &str, body: &[u8], encoding: Encoding) -> GitRef {
        github_style_ref(event_type, body, encoding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::test_support::{assert_refs, fixture, headers};

    const SECRET: &[u8] = b"IsWishesWereHorsesWedAllBeEatingSteak!";

    /// go-playground/webhooks `gitea/gitea_test.go`: published signatures of
    /// the fixtures.
    #[test]
    fn accepts_the_published_gitea_vectors() {
        for (file, signature) in [
            (
                "gitea/push.json",
                "60fe446c74fa0cb9474f98cc557db79e10c7aaf22cf324ad65239600b9e4d915",
            ),
            (
                "gitea/pull_request.json",
                "65c18a212efc7bde0f336acaec87f596fe20e80b2a0e7e51a790dd38393ff771",
            ),
        ] {
            let body = fixture(file);
            let signed = headers(&[("x-gitea-signature", signature)]);
            assert_eq!(
                Gitea::GITEA.verify(&signed, &body, &[SECRET]),
                Ok(()),
                "{file}"
            );
            assert!(Gitea::GITEA.verify(&signed, &body, &[b"other"]).is_err());
            let mut changed = body.clone();
            changed[10] ^= 1;
            assert!(Gitea::GITEA.verify(&signed, &changed, &[SECRET]).is_err());
            // Forgejo reads its own header only.
            assert_eq!(
                Gitea::FORGEJO.verify(&signed, &body, &[SECRET]),
                Err(WebhookError::MissingSignature("X-Forgejo-Signature"))
            );
        }
    }

    #[test]
    fn an_empty_signature_is_missing_and_a_prefixed_one_is_malformed() {
        let body = fixture("gitea/push.json");
        assert_eq!(
            Gitea::GITEA.verify(&headers(&[("x-gitea-signature", "")]), &body, &[SECRET]),
            Err(WebhookError::MissingSignature("X-Gitea-Signature"))
        );
        assert_eq!(
            Gitea::GITEA.verify(
                &headers(&[(
                    "x-gitea-signature",
                    "sha256=60fe446c74fa0cb9474f98cc557db79e10c7aaf22cf324ad65239600b9e4d915"
                )]),
                &body,
                &[SECRET]
            ),
            Err(WebhookError::BadSignature("X-Gitea-Signature"))
        );
    }

    #[test]
    fn reads_event_delivery_and_ref_from_each_flavour() {
        let gitea = headers(&[("x-gitea-event", "push"), ("x-gitea-delivery", "d-1")]);
        assert_eq!(
            Gitea::GITEA
                .event_type(&gitea, b"", Encoding::Json)
                .unwrap(),
            "push"
        );
        assert_eq!(Gitea::GITEA.delivery_id(&gitea).unwrap().as_str(), "d-1");
        assert!(Gitea::FORGEJO.delivery_id(&gitea).is_err());
        assert_refs(
            &Gitea::FORGEJO,
            &[
                ("push", "gitea/push.json", GitRef::branch("master")),
                (
                    "pull_request",
                    "gitea/pull_request.json",
                    GitRef::branch("master"),
                ),
                ("push", "forgejo/push.json", GitRef::branch("develop")),
            ],
        );
    }
}
