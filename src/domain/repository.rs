use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A git hosting provider that sends webhooks. GitLab, Gitea and Bitbucket come later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "github" => Ok(Provider::Github),
            other => Err(format!("unsupported provider `{other}`; supported: github")),
        }
    }
}

/// `owner/repo`, as GitHub spells it.
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
        match provider {
            Provider::Github => match value.split_once('/') {
                Some((owner, repo)) if valid_part(owner) && valid_part(repo) => {
                    Ok(Self(value.to_owned()))
                }
                _ => Err("must be `owner/repo` (letters, digits, `-`, `_`, `.`)".into()),
            },
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name (tenants, clients): 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > 100 {
            return Err("must be 1 to 100 characters".into());
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A consumer name, e.g. `jenkins-eu`: 1 to 100 letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsumerName(String);

impl ConsumerName {
    /// The rule the agent checks too (`hookrelay_proto::rules`).
    pub fn parse(value: &str) -> Result<Self, String> {
        hookrelay_proto::rules::check_consumer_name(value)
            .map(|()| Self(value.to_owned()))
            .map_err(str::to_owned)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
