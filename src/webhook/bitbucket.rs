//! Bitbucket Cloud and Bitbucket Data Center: `X-Hub-Signature:
//! sha256=<hex HMAC-SHA256 of the raw body>` (sent when the webhook has a
//! secret; hookrelay always gives one), the event in `X-Event-Key`
//! (`repo:push`, `pullrequest:created`; Data Center `repo:refs_changed`,
//! `pr:opened`), the delivery in `X-Request-UUID` (Cloud) or `X-Request-Id`
//! (Data Center). `X-Hook-UUID` names the webhook, not the delivery.
//!
//! Sources: Atlassian's "Event payloads" (Cloud) and "Event payload → HTTP
//! headers" (Data Center) pages; the Data Center scheme is confirmed by the
//! published go-playground/webhooks vectors checked below.

use std::borrow::Cow;

use axum::http::HeaderMap;
use serde::Deserialize;

use super::git_ref::{Encoding, GitRef, json_document};
use super::{WebhookError, WebhookScheme, delivery_header, event_type_header, verify_hex_hmac};
use crate::domain::DeliveryId;

pub struct Bitbucket;

const SIGNATURE: &str = "x-hub-signature";
const EVENT: &str = "x-event-key";

impl WebhookScheme for Bitbucket {
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), WebhookError> {
        verify_hex_hmac(
            headers,
            SIGNATURE,
            "X-Hub-Signature",
            "sha256=",
            body,
            secrets,
        )
    }

    fn event_type(
        &self,
        headers: &HeaderMap,
        _body: &[u8],
        _encoding: Encoding,
    ) -> Result<String, WebhookError> {
        event_type_header(headers, EVENT, "X-Event-Key")
    }

    /// Cloud (which sends `X-Hook-UUID`): `X-Request-UUID`; Data Center:
    /// `X-Request-Id`. A Cloud delivery never falls back to `X-Request-Id`,
    /// which a proxy on the way may have added.
    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError> {
        if headers.contains_key("x-hook-uuid") || headers.contains_key("x-request-uuid") {
            delivery_header(headers, &["x-request-uuid"], "X-Request-UUID")
        } else {
            delivery_header(headers, &["x-request-id"], "X-Request-Id")
        }
    }

    fn identifying_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE, EVENT, "x-request-uuid", "x-request-id"]
    }

    /// Cloud pushes: the first change's new ref (its old one for a deletion);
    /// Cloud pull requests: the destination branch. Data Center pushes: the
    /// first change's ref; Data Center pull requests: the target ref.
    fn git_ref(&self, event_type: &str, body: &[u8], encoding: Encoding) -> GitRef {
        let wanted = event_type == "repo:push"
            || event_type == "repo:refs_changed"
            || event_type.starts_with("pullrequest:")
            || event_type.starts_with("pr:");
        let Some(document) = wanted.then(|| json_document(body, encoding)).flatten() else {
            return GitRef::default();
        };
        let Ok(payload) = serde_json::from_slice::<Fields<'_>>(&document) else {
            return GitRef::default();
        };
        let named = |kind: &str, name: &str| match kind.to_ascii_lowercase().as_str() {
            "branch" | "named_branch" => GitRef::branch(name),
            "tag" | "annotated_tag" => GitRef::tag(name),
            _ => GitRef::default(),
        };
        if event_type == "repo:push" {
            payload
                .push
                .and_then(|push| push.changes.into_iter().next())
                .and_then(|change| change.new.or(change.old))
                .map_or_else(GitRef::default, |r| named(&r.kind, &r.name))
        } else if event_type == "repo:refs_changed" {
            payload
                .changes
                .into_iter()
                .next()
                .map_or_else(GitRef::default, |c| {
                    named(&c.git_ref.kind, &c.git_ref.display_id)
                })
        } else if event_type.starts_with("pullrequest:") {
            payload.pullrequest.map_or_else(GitRef::default, |pr| {
                GitRef::branch(&pr.destination.branch.name)
            })
        } else {
            payload
                .pull_request
                .map_or_else(GitRef::default, |pr| GitRef::branch(&pr.to_ref.display_id))
        }
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    push: Option<Push<'a>>,
    #[serde(borrow, default)]
    changes: Vec<ServerChange<'a>>,
    #[serde(borrow, default)]
    pullrequest: Option<CloudPullRequest<'a>>,
    #[serde(rename = "pullRequest", borrow, default)]
    pull_request: Option<ServerPullRequest<'a>>,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow, default)]
    changes: Vec<CloudChange<'a>>,
}

#[derive(Deserialize)]
struct CloudChange<'a> {
    #[serde(borrow, default)]
    new: Option<CloudRef<'a>>,
    #[serde(borrow, default)]
    old: Option<CloudRef<'a>>,
}

#[derive(Deserialize)]
struct CloudRef<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct CloudPullRequest<'a> {
    #[serde(borrow)]
    destination: Destination<'a>,
}

#[derive(Deserialize)]
struct Destination<'a> {
    #[serde(borrow)]
    branch: BranchName<'a>,
}

#[derive(Deserialize)]
struct BranchName<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ServerChange<'a> {
    #[serde(rename = "ref", borrow)]
    git_ref: ServerRef<'a>,
}

#[derive(Deserialize)]
struct ServerRef<'a> {
    /// `BRANCH` or `TAG` in a push's changes; absent in a pull request's refs.
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(rename = "displayId", borrow)]
    display_id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ServerPullRequest<'a> {
    #[serde(rename = "toRef", borrow)]
    to_ref: ServerRef<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::test_support::{assert_refs, fixture, headers};

    /// go-playground/webhooks `bitbucket-server/bitbucketserver_test.go`.
    #[test]
    fn accepts_the_published_data_center_vectors() {
        for (file, signature) in [
            (
                "bitbucket-server/repo_refs_changed.json",
                "sha256=8a60f7487d167f55886df87d4077192035d76f76a8e0b3a48fd8ae8cad25f391",
            ),
            (
                "bitbucket-server/pr_opened.json",
                "sha256=b82c323978a741aa256c0a6bfa13a8f211e1795bd8ddb2641ced122769f7a7c6",
            ),
        ] {
            let body = fixture(file);
            let signed = headers(&[("x-hub-signature", signature)]);
            assert_eq!(
                Bitbucket.verify(&signed, &body, &[b"secret"]),
                Ok(()),
                "{file}"
            );
            assert!(Bitbucket.verify(&signed, &body, &[b"other"]).is_err());
            let unprefixed = headers(&[("x-hub-signature", &signature[7..])]);
            assert_eq!(
                Bitbucket.verify(&unprefixed, &body, &[b"secret"]),
                Err(WebhookError::BadSignature("X-Hub-Signature"))
            );
        }
        assert_eq!(
            Bitbucket.verify(&HeaderMap::new(), b"{}", &[b"secret"]),
            Err(WebhookError::MissingSignature("X-Hub-Signature"))
        );
    }

    #[test]
    fn reads_cloud_and_data_center_deliveries() {
        let cloud = headers(&[("x-event-key", "repo:push"), ("x-request-uuid", "c-1")]);
        assert_eq!(Bitbucket.delivery_id(&cloud).unwrap().as_str(), "c-1");
        assert_eq!(
            Bitbucket.event_type(&cloud, b"", Encoding::Json).unwrap(),
            "repo:push"
        );
        let server = headers(&[("x-request-id", "s-1")]);
        assert_eq!(Bitbucket.delivery_id(&server).unwrap().as_str(), "s-1");
        assert!(
            Bitbucket
                .delivery_id(&headers(&[("x-hook-uuid", "h")]))
                .is_err()
        );
        // A Cloud delivery without its id does not take a proxy's request id.
        let proxied = headers(&[("x-hook-uuid", "h"), ("x-request-id", "envoy-1")]);
        assert!(Bitbucket.delivery_id(&proxied).is_err());
        assert_refs(
            &Bitbucket,
            &[
                (
                    "repo:push",
                    "bitbucket/repo_push.json",
                    GitRef::branch("name-of-branch"),
                ),
                (
                    "pullrequest:created",
                    "bitbucket/pullrequest_created.json",
                    GitRef::branch("master"),
                ),
                (
                    "repo:refs_changed",
                    "bitbucket-server/repo_refs_changed.json",
                    GitRef::branch("feature/wip"),
                ),
                (
                    "pr:opened",
                    "bitbucket-server/pr_opened.json",
                    GitRef::branch("master"),
                ),
                ("repo:fork", "bitbucket/repo_push.json", GitRef::default()),
            ],
        );
    }
}
