//! What a repository is made of: its provider, its name as the provider spells
//! it, and the provider's webhook settings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A sender of webhooks: a git hosting provider, or any sender that follows
/// the Standard Webhooks specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    Gitea,
    Forgejo,
    /// Bitbucket Cloud and Bitbucket Data Center.
    Bitbucket,
    /// https://www.standardwebhooks.com (Svix-powered services and others).
    Standard,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Github,
        Provider::Gitlab,
        Provider::Gitea,
        Provider::Forgejo,
        Provider::Bitbucket,
        Provider::Standard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Forgejo => "forgejo",
            Provider::Bitbucket => "bitbucket",
            Provider::Standard => "standard",
        }
    }
}

impl Provider {
    /// The largest webhook body the provider sends, where it says: GitHub does
    /// not deliver payloads over 25 MB. A larger announced length is refused
    /// before anything is read.
    pub fn max_webhook_bytes(self) -> Option<usize> {
        match self {
            Provider::Github => Some(25 * 1024 * 1024),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Provider {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        value.parse()
    }
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == value)
            .ok_or_else(|| {
                let supported: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unsupported provider `{value}`; supported: {}",
                    supported.join(", ")
                )
            })
    }
}

/// Where the provider posts the repository's webhooks: `<public URL>/v1/webhooks/<id>`.
pub fn webhook_url(public_url: &str, id: super::RepositoryId) -> String {
    format!("{}/v1/webhooks/{id}", public_url.trim_end_matches('/'))
}

/// How a GitLab repository's webhooks are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitlabVerification {
    /// The secret itself in `X-Gitlab-Token` (GitLab's "Secret token").
    #[default]
    Token,
    /// A Standard Webhooks signature (GitLab's "Signing token"): the secret
    /// never travels, and a captured delivery cannot be replayed later.
    SigningToken,
}

/// Per-repository settings of the providers that have any. Absent fields take
/// their defaults; a field that does not apply to the provider is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// gitlab: `token` (default) or `signing_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<GitlabVerification>,
    /// standard, and gitlab with a signing token: how far `webhook-timestamp`
    /// may be from the server's clock, either way (default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_tolerance_seconds: Option<u32>,
    /// standard: the body's JSON field naming the event type, as a dotted path
    /// (default `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type_field: Option<String>,
}

impl WebhookSettings {
    pub const DEFAULT_TOLERANCE_SECONDS: u32 = 300;
    pub const DEFAULT_EVENT_TYPE_FIELD: &str = "type";

    /// Refuses settings that do not apply to `provider` or are out of range.
    pub fn validate(&self, provider: Provider) -> Result<(), String> {
        let allowed: &[&str] = match provider {
            Provider::Gitlab => &["verification", "timestamp_tolerance_seconds"],
            Provider::Standard => &["timestamp_tolerance_seconds", "event_type_field"],
            _ => &[],
        };
        for (name, given) in [
            ("verification", self.verification.is_some()),
            (
                "timestamp_tolerance_seconds",
                self.timestamp_tolerance_seconds.is_some(),
            ),
            ("event_type_field", self.event_type_field.is_some()),
        ] {
            if given && !allowed.contains(&name) {
                return Err(format!("`{name}` does not apply to provider {provider}"));
            }
        }
        if let Some(seconds) = self.timestamp_tolerance_seconds
            && !(10..=3600).contains(&seconds)
        {
            return Err("`timestamp_tolerance_seconds` must be 10 to 3600".into());
        }
        if let Some(field) = &self.event_type_field
            && (field.is_empty()
                || field.len() > 200
                || field.split('.').any(str::is_empty)
                || field.chars().any(char::is_control))
        {
            return Err(
                "`event_type_field` must be a field name or a dotted path such as `data.type`"
                    .into(),
            );
        }
        Ok(())
    }

    /// These settings with the defaults of `provider` filled in, as the API shows them.
    pub fn effective(&self, provider: Provider) -> WebhookSettings {
        let tolerance = Some(
            self.timestamp_tolerance_seconds
                .unwrap_or(Self::DEFAULT_TOLERANCE_SECONDS),
        );
        match provider {
            Provider::Gitlab => WebhookSettings {
                verification: Some(self.verification.unwrap_or_default()),
                timestamp_tolerance_seconds: tolerance,
                event_type_field: None,
            },
            Provider::Standard => WebhookSettings {
                verification: None,
                timestamp_tolerance_seconds: tolerance,
                event_type_field: Some(
                    self.event_type_field
                        .clone()
                        .unwrap_or_else(|| Self::DEFAULT_EVENT_TYPE_FIELD.to_owned()),
                ),
            },
            _ => WebhookSettings::default(),
        }
    }

    pub fn tolerance(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.timestamp_tolerance_seconds
                .unwrap_or(Self::DEFAULT_TOLERANCE_SECONDS),
        ))
    }
}

/// A repository's name as its provider spells it: `owner/repo` (GitHub, Gitea,
/// Forgejo), `group/subgroup/project` (GitLab), `workspace/repo` or
/// `PROJECT/repo` (Bitbucket); for a Standard Webhooks sender, any label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn parse(provider: Provider, value: &str) -> Result<Self, String> {
        let valid_part = |part: &str| {
            !part.is_empty()
                && part.len() <= 100
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        let parts: Vec<&str> = value.split('/').collect();
        let valid = match provider {
            Provider::Github | Provider::Gitea | Provider::Forgejo | Provider::Bitbucket => {
                parts.len() == 2 && parts.iter().all(|p| valid_part(p))
            }
            // Groups nest up to 20 levels.
            Provider::Gitlab => {
                (2..=21).contains(&parts.len()) && parts.iter().all(|p| valid_part(p))
            }
            Provider::Standard => {
                !value.is_empty() && value.len() <= 200 && parts.iter().all(|p| valid_part(p))
            }
        };
        if valid {
            return Ok(Self(value.to_owned()));
        }
        Err(match provider {
            Provider::Gitlab => {
                "must be `group/project` or `group/subgroup/project` (letters, digits, `-`, `_`, `.`)"
                    .into()
            }
            Provider::Bitbucket => {
                "must be `workspace/repository` or `PROJECT/repository` (letters, digits, `-`, `_`, `.`)"
                    .into()
            }
            Provider::Standard => {
                "must be a name such as `billing-events` or `acme/payments` (letters, digits, `-`, `_`, `.`, `/`)"
                    .into()
            }
            _ => "must be `owner/repo` (letters, digits, `-`, `_`, `.`)".into(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
