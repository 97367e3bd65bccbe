//! Calls to a provider's REST API for one repository: credentials on every
//! request (and only to the API's own origin), rate limits honoured, calls
//! counted.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::domain::{Provider, ProviderCredentials};
use crate::outbound::{Answer, FetchError, Fetcher};

/// Longest single answer read: a page of 100 GitLab hook events carries their
/// payloads.
const MAX_ANSWER: usize = 32 * 1024 * 1024;
/// Longest a call may take, connection and body included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Rate limits within one call are waited out up to this much in all; a
/// longer one ends the run, and the next run takes over. With `MAX_ATTEMPTS`
/// of `CALL_TIMEOUT`, one call takes at most about 4 minutes: less than a
/// run's lease (`super::LEASE`).
pub const MAX_WAIT: Duration = Duration::from_secs(65);
/// Attempts of one call: the first, and one after each rate-limit wait.
const MAX_ATTEMPTS: usize = 6;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The provider refused (wrong token, missing permission, no such hook):
    /// asking again will not help until the tenant changes something.
    #[error("{0}")]
    Refused(String),
    /// Unreachable, failing, or rate limited for longer than `MAX_WAIT`.
    #[error("{0}")]
    Unavailable(String),
    /// The run was stopped (shutdown).
    #[error("stopped: the server is shutting down")]
    Stopped,
}

impl From<FetchError> for ApiError {
    fn from(error: FetchError) -> Self {
        match error {
            FetchError::Refused(why) => ApiError::Refused(why),
            FetchError::Unavailable(why) => ApiError::Unavailable(why),
        }
    }
}

/// One repository's provider API.
pub struct Api {
    fetcher: Fetcher,
    provider: Provider,
    base: Url,
    credentials: ProviderCredentials,
    /// A GitHub App's installation token, minted on first use.
    installation_token: Option<(SecretString, OffsetDateTime)>,
    stop: CancellationToken,
    /// Calls made, rate-limited retries and token minting included.
    pub calls: i64,
}

impl Api {
    pub fn new(
        fetcher: Fetcher,
        provider: Provider,
        base: Url,
        credentials: ProviderCredentials,
        stop: CancellationToken,
    ) -> Self {
        Self {
            fetcher,
            provider,
            base,
            credentials,
            installation_token: None,
            stop,
            calls: 0,
        }
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// `<base>/<segments…>`, each segment percent-encoded (GitLab's project
    /// path becomes one `group%2Fproject` segment).
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http URL has a path")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Whether `url` is on the API's own origin: credentials go nowhere else,
    /// whatever a `Link` header names.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// A call answered 2xx, parsed as JSON (`None` for a 202 or 204 without body).
    pub async fn json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        url: &Url,
    ) -> Result<(Option<T>, HeaderMap), ApiError> {
        let answer = self.call(method, url).await?;
        if !answer.status.is_success() {
            return Err(self.refusal(url, &answer));
        }
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok((None, answer.headers));
        }
        let value = serde_json::from_slice(&answer.body).map_err(|e| {
            ApiError::Unavailable(format!("{url} answered JSON hookrelay cannot read: {e}"))
        })?;
        Ok((Some(value), answer.headers))
    }

    /// The answer to one call, after any rate-limit waits; any status.
    pub async fn call(&mut self, method: Method, url: &Url) -> Result<Answer, ApiError> {
        if !self.same_origin(url) {
            return Err(ApiError::Refused(format!(
                "{url} is not on {}: hookrelay sends credentials only to the API it was given",
                self.base
            )));
        }
        let mut waited = Duration::ZERO;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let authorization = self.authorization().await?;
            let mut request = self
                .fetcher
                .request(method.clone(), url)?
                .header(reqwest::header::ACCEPT, self.accept());
            let (name, value) = authorization;
            request = request.header(name, value.expose_secret());
            if self.provider == Provider::Github {
                request = request.header("x-github-api-version", "2022-11-28");
            }
            self.calls += 1;
            let answer = self
                .fetcher
                .send(request, url, MAX_ANSWER, CALL_TIMEOUT)
                .await?;
            match rate_limited(&answer, OffsetDateTime::now_utc()) {
                None => return Ok(answer),
                Some(wait) if waited + wait <= MAX_WAIT && attempts < MAX_ATTEMPTS => {
                    waited += wait;
                    tracing::info!(
                        url = %url,
                        wait_seconds = wait.as_secs(),
                        "the provider's rate limit: waiting"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => return Err(ApiError::Stopped),
                    }
                }
                Some(wait) => {
                    return Err(ApiError::Unavailable(format!(
                        "rate limited by {} for {} s more; the next run resumes",
                        self.provider,
                        wait.as_secs()
                    )));
                }
            }
        }
    }

    fn accept(&self) -> &'static str {
        match self.provider {
            Provider::Github => "application/vnd.github+json",
            _ => "application/json",
        }
    }

    /// The header that carries the credentials.
    async fn authorization(&mut self) -> Result<(&'static str, SecretString), ApiError> {
        match (&self.credentials, self.provider) {
            (ProviderCredentials::Token { token }, Provider::Gitlab) => {
                Ok(("private-token", token.clone()))
            }
            (ProviderCredentials::Token { token }, _) => Ok((
                "authorization",
                SecretString::from(format!("Bearer {}", token.expose_secret())),
            )),
            (ProviderCredentials::GithubApp { .. }, _) => {
                let token = self.installation_token().await?;
                Ok((
                    "authorization",
                    SecretString::from(format!("Bearer {}", token.expose_secret())),
                ))
            }
        }
    }

    /// A GitHub App installation token (valid an hour), minted with a JWT
    /// signed by the app's key; minted again 5 minutes before it expires.
    async fn installation_token(&mut self) -> Result<SecretString, ApiError> {
        let now = OffsetDateTime::now_utc();
        if let Some((token, expires_at)) = &self.installation_token
            && *expires_at - now > time::Duration::minutes(5)
        {
            return Ok(token.clone());
        }
        let ProviderCredentials::GithubApp {
            app_id,
            installation_id,
            private_key,
        } = &self.credentials
        else {
            unreachable!("only GitHub Apps mint installation tokens")
        };
        let jwt = app_jwt(*app_id, private_key, now)?;
        let url = self.url(
            &[
                "app",
                "installations",
                &installation_id.to_string(),
                "access_tokens",
            ],
            &[],
        );
        let request = self
            .fetcher
            .request(Method::POST, &url)?
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {jwt}"));
        self.calls += 1;
        let answer = self
            .fetcher
            .send(request, &url, 64 * 1024, CALL_TIMEOUT)
            .await?;
        if !answer.status.is_success() {
            return Err(ApiError::Refused(format!(
                "GitHub refused to mint an installation token for app {app_id}, installation \
                 {installation_id} ({}): check the app id, the installation id and the key",
                answer.status
            )));
        }
        #[derive(serde::Deserialize)]
        struct Minted {
            token: SecretString,
            #[serde(with = "time::serde::rfc3339")]
            expires_at: OffsetDateTime,
        }
        let minted: Minted = serde_json::from_slice(&answer.body).map_err(|e| {
            ApiError::Unavailable(format!("GitHub's installation token answer: {e}"))
        })?;
        self.installation_token = Some((minted.token.clone(), minted.expires_at));
        Ok(minted.token)
    }

    /// A non-2xx answer as an error the tenant can act on.
    pub fn refusal(&self, url: &Url, answer: &Answer) -> ApiError {
        let status = answer.status.as_u16();
        let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let said = if message.is_empty() {
            String::new()
        } else {
            format!(": \"{message}\"")
        };
        let path = url.path();
        match status {
            401 => ApiError::Refused(format!(
                "{} refused the credentials (401{said}): the token is wrong, expired or revoked",
                self.provider
            )),
            403 | 404 => ApiError::Refused(format!(
                "{} answered {status} for {path}{said}: {}",
                self.provider,
                permission_needed(self.provider)
            )),
            _ if answer.status.is_server_error() => ApiError::Unavailable(format!(
                "{} answered {status} for {path}{said}",
                self.provider
            )),
            _ => ApiError::Refused(format!(
                "{} answered {status} for {path}{said}",
                self.provider
            )),
        }
    }
}

/// What the token needs, by provider.
pub fn permission_needed(provider: Provider) -> &'static str {
    match provider {
        Provider::Gitlab => {
            "the token needs the Maintainer role on the project and the `api` scope (read_api \
             lists deliveries; resending needs api)"
        }
        _ => {
            "the token needs the repository permission \"Webhooks\" (read to list deliveries, \
             write to redeliver; a classic token: admin:repo_hook), and the repository must \
             exist and be visible to it"
        }
    }
}

/// How long a rate-limited answer asks to wait: 429, or 403 with
/// `Retry-After` or with `x-ratelimit-remaining: 0` (GitHub's two forms).
fn rate_limited(answer: &Answer, now: OffsetDateTime) -> Option<Duration> {
    let status = answer.status.as_u16();
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    if status != 429 && !(status == 403 && (retry_after.is_some() || exhausted)) {
        return None;
    }
    if let Some(seconds) = retry_after {
        return Some(Duration::from_secs(seconds.max(1)));
    }
    let reset = header("x-ratelimit-reset")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|at| at - now.unix_timestamp());
    // GitHub's secondary limits without a header: at least a minute.
    Some(Duration::from_secs(
        reset.map_or(60, |s| s.clamp(1, i64::MAX) as u64),
    ))
}

/// The JWT a GitHub App authenticates with (RS256, `iss` the app id, issued a
/// minute back for clock drift, valid 9 minutes: GitHub allows 10).
fn app_jwt(
    app_id: u64,
    private_key: &SecretString,
    now: OffsetDateTime,
) -> Result<String, ApiError> {
    crate::auth::crypto::install();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes())
        .map_err(|_| {
            ApiError::Refused("the GitHub App's private key is not an RSA PEM key".into())
        })?;
    let now = now.unix_timestamp();
    let claims = serde_json::json!({"iat": now - 60, "exp": now + 540, "iss": app_id.to_string()});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|e| ApiError::Refused(format!("cannot sign the GitHub App's JWT: {e}")))
}

/// The `next` URL of an RFC 8288 `Link` header (GitHub's paging).
pub fn next_link(headers: &HeaderMap) -> Option<Url> {
    let value = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| Url::parse(target).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)]) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: Vec::new(),
        }
    }

    #[test]
    fn rate_limits_in_each_form_the_providers_send() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        assert_eq!(rate_limited(&answer(200, &[]), now), None);
        assert_eq!(
            rate_limited(&answer(403, &[]), now),
            None,
            "a plain 403 is a refusal"
        );
        assert_eq!(
            rate_limited(&answer(429, &[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limited(
                &answer(
                    403,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", "1000030")
                    ]
                ),
                now
            ),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            rate_limited(&answer(429, &[]), now),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            "<https://api.github.com/x?cursor=a>; rel=\"prev\", <https://api.github.com/x?cursor=b>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).unwrap().as_str(),
            "https://api.github.com/x?cursor=b"
        );
        assert!(next_link(&HeaderMap::new()).is_none());
    }
}
