//! Each provider's two ends, written from its documentation and independently
//! of hookrelay's `src/webhook/`: how the provider sends and signs a delivery
//! (`Sender::headers`), and how a target that verifies that provider's scheme
//! itself checks one (`Sender::accepts`), as Jenkins' GitLab plugin or a
//! Gitea-aware CI would.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A webhook sender, as each provider sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Github,
    /// GitLab with a secret token (`X-Gitlab-Token`).
    GitlabToken,
    /// GitLab with a signing token (Standard Webhooks headers).
    GitlabSigning,
    Gitea,
    Forgejo,
    BitbucketCloud,
    BitbucketDataCenter,
    Standard,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The HMAC key of a `whsec_<base64>` secret.
fn whsec_key(secret: &str) -> Vec<u8> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .expect("a whsec_ secret is base64")
}

impl Sender {
    pub const ALL: [Sender; 8] = [
        Sender::Github,
        Sender::GitlabToken,
        Sender::GitlabSigning,
        Sender::Gitea,
        Sender::Forgejo,
        Sender::BitbucketCloud,
        Sender::BitbucketDataCenter,
        Sender::Standard,
    ];

    /// The `provider` of `POST /v1/repositories`.
    pub fn provider(self) -> &'static str {
        match self {
            Sender::Github => "github",
            Sender::GitlabToken | Sender::GitlabSigning => "gitlab",
            Sender::Gitea => "gitea",
            Sender::Forgejo => "forgejo",
            Sender::BitbucketCloud | Sender::BitbucketDataCenter => "bitbucket",
            Sender::Standard => "standard",
        }
    }

    /// The repository `settings` this sender needs.
    pub fn settings(self) -> serde_json::Value {
        match self {
            Sender::GitlabSigning => serde_json::json!({"verification": "signing_token"}),
            _ => serde_json::json!({}),
        }
    }

    /// A published payload of this provider (`tests/fixtures`) and its event type.
    pub fn fixture(self) -> (&'static str, &'static str) {
        match self {
            Sender::Github => ("github/push.json", "push"),
            Sender::GitlabToken | Sender::GitlabSigning => ("gitlab/push.json", "Push Hook"),
            Sender::Gitea => ("gitea/push.json", "push"),
            Sender::Forgejo => ("forgejo/push.json", "push"),
            Sender::BitbucketCloud => ("bitbucket/repo_push.json", "repo:push"),
            Sender::BitbucketDataCenter => (
                "bitbucket-server/repo_refs_changed.json",
                "repo:refs_changed",
            ),
            Sender::Standard => ("standard-webhooks/contact.created.json", "contact.created"),
        }
    }

    /// The headers the provider sends with `body`, signed with `secret`, at
    /// unix time `timestamp` (used by the Standard Webhooks schemes only).
    pub fn headers(
        self,
        secret: &str,
        event: &str,
        delivery: &str,
        body: &[u8],
        timestamp: i64,
    ) -> Vec<(String, String)> {
        let hex_body = || hex::encode(hmac_sha256(secret.as_bytes(), &[body]));
        let standard = |id: &str| {
            let signature = hmac_sha256(
                &whsec_key(secret),
                &[
                    id.as_bytes(),
                    b".",
                    timestamp.to_string().as_bytes(),
                    b".",
                    body,
                ],
            );
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", timestamp.to_string()),
                (
                    "webhook-signature",
                    format!("v1,{}", STANDARD.encode(signature)),
                ),
            ]
        };
        let pairs: Vec<(&str, String)> = match self {
            Sender::Github => vec![
                ("user-agent", "GitHub-Hookshot/044aadd".into()),
                ("x-github-event", event.into()),
                ("x-github-delivery", delivery.into()),
                ("x-hub-signature-256", format!("sha256={}", hex_body())),
            ],
            Sender::GitlabToken => vec![
                ("user-agent", "GitLab/17.6.0".into()),
                ("idempotency-key", delivery.into()),
                ("x-gitlab-event", event.into()),
                (
                    "x-gitlab-webhook-uuid",
                    "02affd2d-2cba-4033-917d-ec22d5dc4b38".into(),
                ),
                ("x-gitlab-instance", "https://gitlab.example.com".into()),
                ("x-gitlab-token", secret.into()),
                (
                    "x-gitlab-event-uuid",
                    "13792a34-cac6-4fda-95a8-c58e00a3954e".into(),
                ),
            ],
            Sender::GitlabSigning => {
                let mut pairs = vec![
                    ("user-agent", "GitLab/18.2.0".into()),
                    ("idempotency-key", delivery.into()),
                    ("x-gitlab-event", event.into()),
                    (
                        "x-gitlab-event-uuid",
                        "13792a34-cac6-4fda-95a8-c58e00a3954e".into(),
                    ),
                ];
                pairs.extend(standard(delivery));
                pairs
            }
            // Forgejo sends its own headers, then all of Gitea's.
            Sender::Gitea | Sender::Forgejo => {
                let signature = hex_body();
                let mut pairs: Vec<(&str, String)> = Vec::new();
                if self == Sender::Forgejo {
                    pairs.extend([
                        ("x-forgejo-delivery", delivery.to_owned()),
                        ("x-forgejo-event", event.to_owned()),
                        ("x-forgejo-event-type", event.to_owned()),
                        ("x-forgejo-signature", signature.clone()),
                    ]);
                }
                pairs.extend([
                    ("x-gitea-delivery", delivery.to_owned()),
                    ("x-gitea-event", event.to_owned()),
                    ("x-gitea-event-type", event.to_owned()),
                    ("x-gitea-signature", signature.clone()),
                    ("x-gogs-delivery", delivery.to_owned()),
                    ("x-gogs-event", event.to_owned()),
                    ("x-gogs-signature", signature.clone()),
                    ("x-hub-signature-256", format!("sha256={signature}")),
                    ("x-github-delivery", delivery.to_owned()),
                    ("x-github-event", event.to_owned()),
                ]);
                pairs
            }
            Sender::BitbucketCloud => vec![
                ("user-agent", "Bitbucket-Webhooks/2.0".into()),
                ("x-event-key", event.into()),
                (
                    "x-hook-uuid",
                    "{cb2b0c74-3a1e-4f24-9a4b-8d0a6f0e7c11}".into(),
                ),
                ("x-request-uuid", delivery.into()),
                ("x-attempt-number", "1".into()),
                ("x-hub-signature", format!("sha256={}", hex_body())),
            ],
            Sender::BitbucketDataCenter => vec![
                ("user-agent", "Atlassian HttpClient 4.2.0".into()),
                ("x-event-key", event.into()),
                ("x-request-id", delivery.into()),
                ("x-hub-signature", format!("sha256={}", hex_body())),
            ],
            Sender::Standard => {
                let mut pairs = vec![("user-agent", "Svix-Webhooks/1.37.0".into())];
                pairs.extend(standard(delivery));
                pairs
            }
        };
        let mut headers: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        headers.insert(0, ("content-type".into(), "application/json".into()));
        headers
    }

    /// Whether a target that verifies this provider's scheme itself accepts
    /// the delivery (`header` reads a request header, lowercase name).
    pub fn accepts(
        self,
        secret: &str,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> bool {
        let hex_body = || hex::encode(hmac_sha256(secret.as_bytes(), &[body]));
        let standard = || {
            let (Some(id), Some(timestamp), Some(signatures)) = (
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
            ) else {
                return false;
            };
            let expected = STANDARD.encode(hmac_sha256(
                &whsec_key(secret),
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            ));
            signatures
                .split(' ')
                .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
        };
        match self {
            Sender::Github => {
                header("x-hub-signature-256") == Some(format!("sha256={}", hex_body()))
            }
            Sender::GitlabToken => header("x-gitlab-token").as_deref() == Some(secret),
            Sender::GitlabSigning | Sender::Standard => standard(),
            Sender::Gitea => header("x-gitea-signature") == Some(hex_body()),
            Sender::Forgejo => header("x-forgejo-signature") == Some(hex_body()),
            Sender::BitbucketCloud | Sender::BitbucketDataCenter => {
                header("x-hub-signature") == Some(format!("sha256={}", hex_body()))
            }
        }
    }
}
