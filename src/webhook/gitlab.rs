//! GitLab. Two ways to verify, chosen per repository (`settings.verification`):
//! - `token` (GitLab's "Secret token"): GitLab sends the secret itself in
//!   `X-Gitlab-Token`, compared in constant time. It is sealed before the event
//!   is stored (`sealing`), and unsealed only for the agent's replay.
//! - `signing_token` (GitLab's "Signing token", behind GitLab's
//!   `webhook_signing_token` flag): a Standard Webhooks signature
//!   (`webhook-id` = `Idempotency-Key`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64>`), within the repository's tolerance.
//!
//! The event type is `X-Gitlab-Event` (`Push Hook`); the delivery id
//! `Idempotency-Key` (stable across GitLab's retries), else
//! `X-Gitlab-Event-UUID` for GitLab before 17.4; with a signing token, the
//! signed `webhook-id` (the same value, but covered by the signature). Sources: GitLab's
//! `app/services/web_hook_service.rb` (`build_headers`) and MRs !230944 and
//! !231325 (signing tokens).

use std::borrow::Cow;
use std::time::Duration;

use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::git_ref::{Encoding, GitRef, json_document};
use super::{
    WebhookError, WebhookScheme, delivery_header, event_type_header, header_text, standard,
};
use crate::domain::{DeliveryId, GitlabVerification};

const TOKEN: &str = "x-gitlab-token";
const EVENT: &str = "x-gitlab-event";

pub struct GitLab {
    pub verification: GitlabVerification,
    pub tolerance: Duration,
}

impl GitLab {
    fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&[u8]],
        now: i64,
    ) -> Result<(), WebhookError> {
        match self.verification {
            GitlabVerification::Token => {
                let token = header_text(headers, TOKEN)
                    .ok_or(WebhookError::MissingSignature("X-Gitlab-Token"))?;
                // Digests first: equal lengths, so the comparison reveals nothing.
                let given = Sha256::digest(token.as_bytes());
                let matches = secrets
                    .iter()
                    .any(|secret| bool::from(Sha256::digest(secret).ct_eq(&given)));
                if matches {
                    Ok(())
                } else {
                    Err(WebhookError::BadSignature("X-Gitlab-Token"))
                }
            }
            GitlabVerification::SigningToken => {
                standard::verify_signature(headers, body, secrets, self.tolerance, now)
            }
        }
    }
}

impl WebhookScheme for GitLab {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), WebhookError> {
        self.verify_at(headers, body, secrets, standard::now())
    }

    fn event_type(
        &self,
        headers: &HeaderMap,
        _body: &[u8],
        _encoding: Encoding,
    ) -> Result<String, WebhookError> {
        event_type_header(headers, EVENT, "X-Gitlab-Event")
    }

    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError> {
        match self.verification {
            GitlabVerification::Token => delivery_header(
                headers,
                &["idempotency-key", "x-gitlab-event-uuid"],
                "Idempotency-Key (or X-Gitlab-Event-UUID)",
            ),
            // The signed id (GitLab sets it to the Idempotency-Key): an
            // unsigned header would let a captured delivery, replayed within
            // the tolerance under a new key, be stored again.
            GitlabVerification::SigningToken => {
                delivery_header(headers, &["webhook-id"], "webhook-id")
            }
        }
    }

    fn identifying_headers(&self) -> &'static [&'static str] {
        &[
            TOKEN,
            EVENT,
            "idempotency-key",
            "x-gitlab-event-uuid",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        ]
    }

    /// Push and tag pushes: `ref`; merge requests: the target branch;
    /// pipelines and jobs: their ref, a tag when `tag` is true.
    fn git_ref(&self, event_type: &str, body: &[u8], encoding: Encoding) -> GitRef {
        let wanted = matches!(
            event_type,
            "Push Hook" | "Tag Push Hook" | "Merge Request Hook" | "Pipeline Hook" | "Job Hook"
        );
        let Some(document) = wanted.then(|| json_document(body, encoding)).flatten() else {
            return GitRef::default();
        };
        let Ok(payload) = serde_json::from_slice::<Fields<'_>>(&document) else {
            return GitRef::default();
        };
        let short = |name: Option<Cow<'_, str>>, tag: Option<bool>| match (name, tag) {
            (Some(name), Some(true)) => GitRef::tag(&name),
            (Some(name), _) => GitRef::branch(&name),
            (None, _) => GitRef::default(),
        };
        match event_type {
            "Push Hook" | "Tag Push Hook" => payload
                .git_ref
                .map_or_else(GitRef::default, |r| GitRef::from_full_ref(&r)),
            "Job Hook" => short(payload.git_ref, payload.tag),
            "Pipeline Hook" => payload
                .object_attributes
                .map_or_else(GitRef::default, |o| short(o.git_ref, o.tag)),
            _ => payload
                .object_attributes
                .and_then(|o| o.target_branch)
                .map_or_else(GitRef::default, |name| GitRef::branch(&name)),
        }
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "ref", borrow, default)]
    git_ref: Option<Cow<'a, str>>,
    #[serde(default)]
    tag: Option<bool>,
    #[serde(borrow, default)]
    object_attributes: Option<ObjectAttributes<'a>>,
}

#[derive(Deserialize)]
struct ObjectAttributes<'a> {
    #[serde(borrow, default)]
    target_branch: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow, default)]
    git_ref: Option<Cow<'a, str>>,
    #[serde(default)]
    tag: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::test_support::{assert_refs, headers};

    const SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn gitlab(verification: GitlabVerification) -> GitLab {
        GitLab {
            verification,
            tolerance: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_secret_token_must_equal_one_of_the_secrets() {
        let scheme = gitlab(GitlabVerification::Token);
        let token = std::str::from_utf8(SECRET).unwrap();
        let ok = headers(&[("x-gitlab-token", token)]);
        assert_eq!(scheme.verify(&ok, b"{}", &[SECRET]), Ok(()));
        assert_eq!(scheme.verify(&ok, b"{}", &[b"new", SECRET]), Ok(()));
        assert_eq!(
            scheme.verify(&headers(&[("x-gitlab-token", "wrong")]), b"{}", &[SECRET]),
            Err(WebhookError::BadSignature("X-Gitlab-Token"))
        );
        assert_eq!(
            scheme.verify(&HeaderMap::new(), b"{}", &[SECRET]),
            Err(WebhookError::MissingSignature("X-Gitlab-Token"))
        );
        // A repository that wants signatures refuses the bare token.
        assert_eq!(
            gitlab(GitlabVerification::SigningToken).verify(&ok, b"{}", &[SECRET]),
            Err(WebhookError::MissingSignature("webhook-signature"))
        );
    }

    /// A signing token is the Standard Webhooks scheme: the published vector
    /// verifies, and so does a token-mode header never.
    #[test]
    fn a_signing_token_is_a_standard_webhooks_signature() {
        let signed = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let body = br#"{"test": 2432232314}"#;
        let scheme = gitlab(GitlabVerification::SigningToken);
        assert_eq!(
            scheme.verify_at(&signed, body, &[SECRET], 1_614_265_330),
            Ok(())
        );
        assert!(matches!(
            scheme.verify_at(&signed, body, &[SECRET], 1_614_265_330 + 301),
            Err(WebhookError::Stale { .. })
        ));
        assert!(
            gitlab(GitlabVerification::Token)
                .verify_at(&signed, body, &[SECRET], 1_614_265_330)
                .is_err()
        );
    }

    #[test]
    fn the_delivery_is_the_idempotency_key_else_the_event_uuid() {
        let scheme = gitlab(GitlabVerification::Token);
        let both = headers(&[
            (
                "x-gitlab-event-uuid",
                "13792a34-cac6-4fda-95a8-c58e00a3954e",
            ),
            ("idempotency-key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"),
        ]);
        assert_eq!(
            scheme.delivery_id(&both).unwrap().as_str(),
            "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
        );
        let old = headers(&[(
            "x-gitlab-event-uuid",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        )]);
        assert_eq!(
            scheme.delivery_id(&old).unwrap().as_str(),
            "13792a34-cac6-4fda-95a8-c58e00a3954e"
        );
        assert!(scheme.delivery_id(&HeaderMap::new()).is_err());
        let event = headers(&[("x-gitlab-event", "Push Hook")]);
        assert_eq!(
            scheme.event_type(&event, b"", Encoding::Json).unwrap(),
            "Push Hook"
        );
    }

    #[test]
    fn finds_the_ref_of_gitlabs_documented_payloads() {
        let scheme = gitlab(GitlabVerification::Token);
        assert_refs(
            &scheme,
            &[
                ("Push Hook", "gitlab/push.json", GitRef::branch("master")),
                (
                    "Tag Push Hook",
                    "gitlab/tag_push.json",
                    GitRef::tag("v1.0.0"),
                ),
                (
                    "Merge Request Hook",
                    "gitlab/merge_request.json",
                    GitRef::branch("master"),
                ),
                ("Issue Hook", "gitlab/push.json", GitRef::default()),
            ],
        );
        let pipeline = br#"{"object_attributes":{"ref":"v2.0","tag":true}}"#;
        assert_eq!(
            scheme.git_ref("Pipeline Hook", pipeline, Encoding::Json),
            GitRef::tag("v2.0")
        );
        let job = br#"{"ref":"main","tag":false}"#;
        assert_eq!(
            scheme.git_ref("Job Hook", job, Encoding::Json),
            GitRef::branch("main")
        );
    }
}
