//! Access to a git provider's API for one repository, to read its webhook's
//! delivery log and ask for redeliveries: what a tenant may give, checked
//! once at the edge.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use super::Provider;

/// The credentials, sealed at rest as one value and never shown again.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProviderCredentials {
    /// A GitHub fine-grained or classic token, or a GitLab access token.
    Token {
        #[serde(serialize_with = "expose")]
        token: SecretString,
    },
    /// A GitHub App: installation tokens are minted from its private key.
    GithubApp {
        app_id: u64,
        installation_id: u64,
        #[serde(serialize_with = "expose")]
        private_key: SecretString,
    },
}

impl std::fmt::Debug for ProviderCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secrecy::ExposeSecret::expose_secret(secret))
}

impl ProviderCredentials {
    /// `token` or `github_app`, as shown.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderCredentials::Token { .. } => "token",
            ProviderCredentials::GithubApp { .. } => "github_app",
        }
    }
}

/// Validated provider access: credentials, the API's base URL, and the
/// webhook's id when the tenant named it.
#[derive(Debug, Clone)]
pub struct ProviderAccess {
    pub credentials: ProviderCredentials,
    pub api_url: Url,
    pub hook_id: Option<u64>,
}

/// The body of `PUT /v1/repositories/{id}/provider-access`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAccessRequest {
    #[serde(default)]
    pub token: Option<SecretString>,
    #[serde(default)]
    pub app_id: Option<u64>,
    #[serde(default)]
    pub installation_id: Option<u64>,
    #[serde(default)]
    pub private_key: Option<SecretString>,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub hook_id: Option<u64>,
}

/// The longest credential accepted: a GitHub App's 4096-bit PEM key is about 3.3 KB.
const MAX_CREDENTIAL: usize = 8 * 1024;

impl ProviderAccessRequest {
    /// The access, or the field at fault and why.
    pub fn validate(self, provider: Provider) -> Result<ProviderAccess, (&'static str, String)> {
        use secrecy::ExposeSecret;
        recovers(provider).map_err(|reason| ("provider", reason))?;
        let credentials = match (
            self.token,
            self.app_id,
            self.installation_id,
            self.private_key,
        ) {
            (Some(token), None, None, None) => {
                let value = token.expose_secret();
                if value.is_empty()
                    || value.len() > MAX_CREDENTIAL
                    || !value.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err((
                        "token",
                        "must be the provider's access token (printable, no spaces)".into(),
                    ));
                }
                ProviderCredentials::Token { token }
            }
            (None, Some(app_id), Some(installation_id), Some(private_key)) => {
                if provider != Provider::Github {
                    return Err(("app_id", "GitHub Apps are for github repositories".into()));
                }
                if private_key.expose_secret().len() > MAX_CREDENTIAL
                    || jsonwebtoken::EncodingKey::from_rsa_pem(
                        private_key.expose_secret().as_bytes(),
                    )
                    .is_err()
                {
                    return Err((
                        "private_key",
                        "must be the GitHub App's RSA private key in PEM, as GitHub downloads it"
                            .into(),
                    ));
                }
                ProviderCredentials::GithubApp {
                    app_id,
                    installation_id,
                    private_key,
                }
            }
            _ => {
                return Err((
                    "token",
                    "give either `token`, or `app_id`, `installation_id` and `private_key` \
                     (a GitHub App)"
                        .into(),
                ));
            }
        };
        let api_url = match self.api_url {
            None => default_api_url(provider),
            Some(url) => parse_api_url(&url).map_err(|reason| ("api_url", reason))?,
        };
        Ok(ProviderAccess {
            credentials,
            api_url,
            hook_id: self.hook_id,
        })
    }
}

/// Whether hookrelay can read the provider's delivery log.
pub fn recovers(provider: Provider) -> Result<(), String> {
    match provider {
        Provider::Github | Provider::Gitlab => Ok(()),
        Provider::Gitea | Provider::Forgejo | Provider::Bitbucket => Err(format!(
            "{provider} has no API to list or redeliver webhook deliveries, so hookrelay cannot \
             recover what it missed; provider access is for github and gitlab repositories"
        )),
        Provider::Standard => Err(
            "a Standard Webhooks sender has no common API to list or redeliver deliveries; \
             provider access is for github and gitlab repositories"
                .into(),
        ),
    }
}

/// The public API: github.com's, GitLab.com's.
pub fn default_api_url(provider: Provider) -> Url {
    let url = match provider {
        Provider::Gitlab => "https://gitlab.com/api/v4",
        _ => "https://api.github.com",
    };
    Url::parse(url).expect("a valid URL")
}

/// An http(s) base URL without credentials, query or fragment, with no
/// trailing slash.
fn parse_api_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err("must be an https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; give them as `token`".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    let trimmed = url.as_str().trim_end_matches('/').to_owned();
    Url::parse(&trimmed).map_err(|e| e.to_string())
}

/// How far back the provider keeps deliveries: GitHub.com 3 days, GitHub
/// Enterprise Server 7, GitLab 7.
pub fn log_retention(provider: Provider, api_url: &Url) -> Duration {
    const DAY: u64 = 24 * 3600;
    match provider {
        Provider::Github if api_url.host_str() == Some("api.github.com") => {
            Duration::from_secs(3 * DAY)
        }
        _ => Duration::from_secs(7 * DAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> ProviderAccessRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_token_or_a_whole_github_app_and_nothing_in_between() {
        let access = request(serde_json::json!({"token": "github_pat_x"}))
            .validate(Provider::Github)
            .unwrap();
        assert_eq!(access.api_url.as_str(), "https://api.github.com/");
        assert_eq!(access.credentials.kind(), "token");
        let gitlab = request(
            serde_json::json!({"token": "glpat-x", "api_url": "https://git.example.com/api/v4/"}),
        )
        .validate(Provider::Gitlab)
        .unwrap();
        assert_eq!(gitlab.api_url.as_str(), "https://git.example.com/api/v4");
        let half_app = request(serde_json::json!({"app_id": 1, "installation_id": 2}));
        assert_eq!(half_app.validate(Provider::Github).unwrap_err().0, "token");
        let both = request(serde_json::json!({"token": "x", "app_id": 1}));
        assert!(both.validate(Provider::Github).is_err());
        let bad_key =
            request(serde_json::json!({"app_id": 1, "installation_id": 2, "private_key": "nope"}));
        assert_eq!(
            bad_key.validate(Provider::Github).unwrap_err().0,
            "private_key"
        );
        for url in [
            "ftp://x",
            "https://user:pw@x",
            "https://x/?q=1",
            "not a url",
        ] {
            let result = request(serde_json::json!({"token": "x", "api_url": url}))
                .validate(Provider::Github);
            assert_eq!(result.unwrap_err().0, "api_url", "{url}");
        }
    }

    #[test]
    fn providers_without_a_delivery_log_are_named() {
        for provider in [Provider::Gitea, Provider::Forgejo, Provider::Bitbucket] {
            let (field, reason) = request(serde_json::json!({"token": "x"}))
                .validate(provider)
                .unwrap_err();
            assert_eq!(field, "provider");
            assert!(reason.starts_with(provider.as_str()), "{reason}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let access = request(serde_json::json!({"token": "github_pat_secret"}))
            .validate(Provider::Github)
            .unwrap();
        assert!(!format!("{access:?}").contains("secret"));
    }
}
