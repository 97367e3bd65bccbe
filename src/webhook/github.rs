//! GitHub's scheme: `X-Hub-Signature-256`, `X-GitHub-Event`, `X-GitHub-Delivery`,
//! and the ref of its payloads (which Gitea and Forgejo share).

use std::borrow::Cow;

use axum::http::HeaderMap;
use serde::Deserialize;

use super::git_ref::{Encoding, GitRef, json_document};
use super::{WebhookError, WebhookScheme, delivery_header, event_type_header, verify_hex_hmac};
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
        verify_hex_hmac(
            headers,
            SIGNATURE,
            "X-Hub-Signature-256",
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
        event_type_header(headers, EVENT, "X-GitHub-Event")
    }

    fn identifying_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE, "x-hub-signature", EVENT, DELIVERY]
    }

    fn delivery_id(&self, headers: &HeaderMap) -> Result<DeliveryId, WebhookError> {
        delivery_header(headers, &[DELIVERY], "X-GitHub-Delivery")
    }

    fn git_ref(&self, event_type: &str, body: &[u8], encoding: Encoding) -> GitRef {
        github_style_ref(event_type, body, encoding)
    }
}

/// The ref of GitHub's payloads, which Gitea and Forgejo send in the same
/// shape: `ref` of push (a full ref), create and delete (a short name with
/// `ref_type`), the base branch of pull requests, the head branch of workflow
/// runs, workflow jobs and check suites.
pub(super) fn github_style_ref(event_type: &str, body: &[u8], encoding: Encoding) -> GitRef {
    // Only the event types that concern a ref are parsed at all.
    let wanted = matches!(
        event_type,
        "push"
            | "create"
            | "delete"
            | "workflow_dispatch"
            | "pull_request"
            | "pull_request_review"
            | "pull_request_review_comment"
            | "pull_request_review_thread"
            | "workflow_run"
            | "workflow_job"
            | "check_suite"
    );
    if event_type == "push"
        && encoding == Encoding::Json
        && let Some(full_ref) = leading_ref(body)
    {
        return GitRef::from_full_ref(full_ref);
    }
    let Some(document) = wanted.then(|| json_document(body, encoding)).flatten() else {
        return GitRef::default();
    };
    // A signed body that is not the expected shape is stored all the same;
    // it simply concerns no ref.
    let Ok(payload) = serde_json::from_slice::<RefFields<'_>>(&document) else {
        return GitRef::default();
    };
    match event_type {
        "push" | "workflow_dispatch" => payload
            .git_ref
            .map_or_else(GitRef::default, |r| GitRef::from_full_ref(&r)),
        "create" | "delete" => match (payload.git_ref, payload.ref_type.as_deref()) {
            (Some(name), Some("branch")) => GitRef::branch(&name),
            (Some(name), Some("tag")) => GitRef::tag(&name),
            _ => GitRef::default(),
        },
        "workflow_run" => head_branch(payload.workflow_run),
        "workflow_job" => head_branch(payload.workflow_job),
        "check_suite" => head_branch(payload.check_suite),
        _ => payload
            .pull_request
            .and_then(|pr| pr.base)
            .and_then(|base| base.git_ref)
            .map_or_else(GitRef::default, |name| GitRef::branch(&name)),
    }
}

/// GitHub, Gitea and Forgejo put `ref` first in a push: read it without
/// tokenising the rest of the payload (often several KB). None when it is not
/// the first key or holds an escape: then the whole body is parsed.
fn leading_ref(body: &[u8]) -> Option<&str> {
    fn after<'a>(bytes: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
        bytes.trim_ascii_start().strip_prefix(token)
    }
    let value = after(after(after(body, b"{")?, b"\"ref\"")?, b":")?;
    let value = after(value, b"\"")?;
    let end = value
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    (value[end] == b'"')
        .then(|| std::str::from_utf8(&value[..end]).ok())
        .flatten()
}

/// The few fields `git_ref` reads; serde skips everything else without
/// building it, and strings without escapes are borrowed from the body.
#[derive(Deserialize)]
struct RefFields<'a> {
    #[serde(rename = "ref", borrow, default)]
    git_ref: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ref_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pull_request: Option<PullRequest<'a>>,
    #[serde(borrow, default)]
    workflow_run: Option<HeadBranch<'a>>,
    #[serde(borrow, default)]
    workflow_job: Option<HeadBranch<'a>>,
    #[serde(borrow, default)]
    check_suite: Option<HeadBranch<'a>>,
}

#[derive(Deserialize)]
struct PullRequest<'a> {
    #[serde(borrow, default)]
    base: Option<Base<'a>>,
}

#[derive(Deserialize)]
struct Base<'a> {
    #[serde(rename = "ref", borrow, default)]
    git_ref: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct HeadBranch<'a> {
    #[serde(borrow, default)]
    head_branch: Option<Cow<'a, str>>,
}

fn head_branch(object: Option<HeadBranch<'_>>) -> GitRef {
    object
        .and_then(|o| o.head_branch)
        .map_or_else(GitRef::default, |name| GitRef::branch(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/github")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn finds_the_ref_of_real_payloads() {
        let cases = [
            ("push", "push.json", GitRef::tag("simple-tag")),
            ("create", "create.json", GitRef::tag("simple-tag")),
            (
                "pull_request",
                "pull_request.opened.json",
                GitRef::branch("master"),
            ),
            (
                "workflow_run",
                "workflow_run.completed.json",
                GitRef::branch("master"),
            ),
            ("issues", "issues.opened.json", GitRef::default()),
            ("release", "release.published.json", GitRef::default()),
        ];
        for (event_type, file, expected) in cases {
            assert_eq!(
                GitHub.git_ref(event_type, &fixture(file), Encoding::Json),
                expected,
                "{file}"
            );
        }
        let branch_push = String::from_utf8(fixture("push.json"))
            .unwrap()
            .replace("refs/tags/simple-tag", "refs/heads/release/1.x");
        assert_eq!(
            GitHub.git_ref("push", branch_push.as_bytes(), Encoding::Json),
            GitRef::branch("release/1.x")
        );
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &branch_push)
            .finish();
        assert_eq!(
            GitHub.git_ref("push", form.as_bytes(), Encoding::Form),
            GitRef::branch("release/1.x")
        );
    }

    #[test]
    fn a_leading_ref_is_read_without_parsing_the_rest_and_anything_else_falls_back() {
        assert_eq!(
            leading_ref(b" {\n  \"ref\" : \"refs/heads/main\", \"after\": [1"),
            Some("refs/heads/main")
        );
        for body in [
            &br#"{"before": "x", "ref": "refs/heads/main"}"#[..],
            br#"{"ref": "refs/heads/a\u0062"}"#,
            br#"{"ref": 7}"#,
            br#"{"ref": "refs/heads/unterminated"#,
        ] {
            assert_eq!(leading_ref(body), None, "{}", String::from_utf8_lossy(body));
        }
        // Those still find their ref the slow way.
        for (body, branch) in [
            (&br#"{"before": "x", "ref": "refs/heads/main"}"#[..], "main"),
            (br#"{"ref": "refs/heads/a\u0062"}"#, "ab"),
        ] {
            assert_eq!(
                GitHub.git_ref("push", body, Encoding::Json),
                GitRef::branch(branch)
            );
        }
    }

    #[test]
    fn a_body_of_another_shape_concerns_no_ref() {
        for body in [&b"not json"[..], b"[]", br#"{"ref": 7}"#, b""] {
            assert_eq!(
                GitHub.git_ref("push", body, Encoding::Json),
                GitRef::default()
            );
        }
        assert_eq!(
            GitHub.git_ref("push", br#"{"ref":"refs/heads/a\"b"}"#, Encoding::Json),
            GitRef::branch("a\"b"),
            "escaped strings are decoded"
        );
    }

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
