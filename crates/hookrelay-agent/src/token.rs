//! Access tokens for the agent: OAuth2 client credentials with the oauth2 crate,
//! against hookrelay's token endpoint or any other; or, with no stored secret,
//! a workload's own JWT exchanged for one (RFC 8693 token exchange).

use std::time::{Duration, Instant};

use anyhow::Context;
use hookrelay_telemetry::error_chain;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Refresh a token this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Why no token came.
#[derive(Debug)]
pub enum TokenError {
    /// The token endpoint said no, and asking again will not change that:
    /// the one actionable line to exit with.
    Refused(String),
    /// Unreachable, overloaded, or a response that is not OAuth2 yet: retry.
    Unavailable(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Refused(why) | TokenError::Unavailable(why) => f.write_str(why),
        }
    }
}

/// Where the token endpoint is: given, or found in the server's RFC 8414
/// metadata the first time a token is needed.
pub enum Endpoint {
    Given(url::Url),
    Discover(url::Url),
}

/// How the agent proves who it is.
pub enum Credentials {
    Client {
        id: String,
        secret: SecretString,
    },
    /// A JWT of an issuer the tenant trusts, fetched anew for every exchange.
    Subject(SubjectToken),
    /// A device login (`hookrelay-agent login`): renewed by its refresh token.
    Login(crate::login::Login),
}

/// Where the workload's own JWT comes from.
pub enum SubjectToken {
    /// A file, re-read every time (a Kubernetes projected service account token).
    File(std::path::PathBuf),
    /// GitHub Actions' OIDC endpoint, for this audience.
    GitHubActions { audience: String },
}

pub struct TokenSource {
    endpoint: Endpoint,
    credentials: Credentials,
    /// The token endpoint and a client for it, once known.
    client: Mutex<Option<(String, Client)>>,
    http: oauth2::reqwest::Client,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

#[derive(serde::Deserialize)]
struct Metadata {
    token_endpoint: String,
}

impl TokenSource {
    pub fn new(
        endpoint: Endpoint,
        credentials: Credentials,
        http: oauth2::reqwest::Client,
    ) -> anyhow::Result<Self> {
        if let Endpoint::Given(url) = &endpoint {
            TokenUrl::new(url.to_string()).context("invalid --token-url")?;
        }
        Ok(Self {
            endpoint,
            credentials,
            client: Mutex::new(None),
            http,
            cached: Mutex::new(None),
        })
    }

    /// The token endpoint's URL and a client for it, discovering it if need be.
    async fn client(&self) -> Result<(String, Client), TokenError> {
        let mut client = self.client.lock().await;
        if let Some(known) = client.as_ref() {
            return Ok(known.clone());
        }
        let url = match &self.endpoint {
            Endpoint::Given(url) => url.to_string(),
            Endpoint::Discover(server) => self.discover(server).await?,
        };
        let token_url = TokenUrl::new(url.clone()).map_err(|e| {
            TokenError::Refused(format!("the token endpoint {url} is not a URL: {e}"))
        })?;
        let (id, secret) = match &self.credentials {
            Credentials::Client { id, secret } => (id.clone(), secret.expose_secret().to_owned()),
            // Token exchange and refresh post their own forms; the client is unused.
            Credentials::Subject(_) | Credentials::Login(_) => (String::new(), String::new()),
        };
        let built = BasicClient::new(ClientId::new(id))
            .set_client_secret(ClientSecret::new(secret))
            .set_token_uri(token_url);
        *client = Some((url.clone(), built.clone()));
        Ok((url, built))
    }

    /// The token endpoint named by `<server>/.well-known/oauth-authorization-server`.
    async fn discover(&self, server: &url::Url) -> Result<String, TokenError> {
        let metadata = server
            .join("/.well-known/oauth-authorization-server")
            .map_err(|e| TokenError::Refused(format!("--server {server}: {e}")))?;
        let response = self.http.get(metadata.clone()).send().await.map_err(|e| {
            TokenError::Unavailable(format!(
                "cannot connect to {server}: {}",
                hookrelay_telemetry::connection_failure(&e)
            ))
        })?;
        let status = response.status();
        // 501: a server that does not implement this at all; no wait will change it.
        if (status.is_server_error() && status.as_u16() != 501) || status.as_u16() == 429 {
            return Err(TokenError::Unavailable(format!(
                "{metadata} answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(TokenError::Refused(format!(
                "{metadata} answered {status}: --server {server} is not hookrelay's public or HTTP URL; \
                 give it, or the token endpoint with --token-url"
            )));
        }
        let metadata: Metadata = response.json().await.map_err(|e| {
            TokenError::Refused(format!(
                "{metadata} is not OAuth2 server metadata ({e}): give the token endpoint with --token-url"
            ))
        })?;
        Ok(metadata.token_endpoint)
    }

    /// A token valid for at least a minute more (or for as long as it lives).
    pub async fn token(&self) -> Result<SecretString, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let (url, client) = self.client().await?;
        let (token, lifetime) = match &self.credentials {
            Credentials::Client { .. } => {
                let response = client
                    .exchange_client_credentials()
                    .add_scope(Scope::new("events:read".into()))
                    .request_async(&self.http)
                    .await
                    .map_err(|error| classify(&url, error))?;
                (
                    SecretString::from(response.access_token().secret().clone()),
                    response.expires_in(),
                )
            }
            Credentials::Subject(source) => {
                let subject = self.subject_token(source).await?;
                self.exchange(&url, &subject).await?
            }
            Credentials::Login(login) => login.access_token(&self.http).await?,
        };
        let lifetime = lifetime.unwrap_or(Duration::from_secs(300));
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
        *cached = Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// The workload's own JWT, fetched now: tokens in files rotate.
    async fn subject_token(&self, source: &SubjectToken) -> Result<SecretString, TokenError> {
        match source {
            SubjectToken::File(path) => {
                let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                    TokenError::Refused(format!(
                        "cannot read --subject-token-file {}: {e}",
                        path.display()
                    ))
                })?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(TokenError::Refused(format!(
                        "--subject-token-file {} is empty",
                        path.display()
                    )));
                }
                Ok(SecretString::from(token.to_owned()))
            }
            SubjectToken::GitHubActions { audience } => {
                let missing = |name: &str| {
                    TokenError::Refused(format!(
                        "{name} is not set: --github-actions-oidc runs inside a GitHub Actions job \
                         with `permissions: id-token: write`"
                    ))
                };
                let url = std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL")
                    .map_err(|_| missing("ACTIONS_ID_TOKEN_REQUEST_URL"))?;
                let bearer = std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
                    .map_err(|_| missing("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))?;
                let mut url = url::Url::parse(&url).map_err(|e| {
                    TokenError::Refused(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}"))
                })?;
                url.query_pairs_mut().append_pair("audience", audience);
                let response = self
                    .http
                    .get(url)
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .map_err(|e| {
                        TokenError::Unavailable(format!(
                            "cannot reach GitHub Actions' OIDC endpoint: {}",
                            error_chain(&e)
                        ))
                    })?;
                let status = response.status();
                if !status.is_success() {
                    let why = format!("GitHub Actions' OIDC endpoint answered {status}");
                    return Err(if status.is_server_error() || status.as_u16() == 429 {
                        TokenError::Unavailable(why)
                    } else {
                        TokenError::Refused(why)
                    });
                }
                #[derive(serde::Deserialize)]
                struct IdToken {
                    value: String,
                }
                let token: IdToken = response.json().await.map_err(|e| {
                    TokenError::Unavailable(format!(
                        "GitHub Actions' OIDC endpoint sent no token: {}",
                        error_chain(&e)
                    ))
                })?;
                Ok(SecretString::from(token.value))
            }
        }
    }

    /// RFC 8693: the subject token for an access token with events:read.
    async fn exchange(
        &self,
        url: &str,
        subject: &SecretString,
    ) -> Result<(SecretString, Option<Duration>), TokenError> {
        let response = self
            .http
            .post(url)
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", subject.expose_secret()),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("scope", "events:read"),
            ])
            .send()
            .await
            .map_err(|e| {
                TokenError::Unavailable(format!(
                    "cannot reach the token endpoint {url}: {}",
                    hookrelay_telemetry::connection_failure(&e)
                ))
            })?;
        let status = response.status();
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: Option<String>,
            expires_in: Option<u64>,
            error: Option<String>,
            error_description: Option<String>,
        }
        let answer: Answer = response.json().await.map_err(|_| {
            TokenError::Unavailable(format!(
                "the token endpoint {url} answered {status} without an OAuth2 response"
            ))
        })?;
        if let (true, Some(token)) = (status.is_success(), answer.access_token) {
            return Ok((
                SecretString::from(token),
                answer.expires_in.map(Duration::from_secs),
            ));
        }
        let code = answer.error.unwrap_or_default();
        let detail = answer
            .error_description
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        Err(match code.as_str() {
            "invalid_grant" => TokenError::Refused(format!(
                "the token endpoint {url} refused the subject token{detail}: check the tenant's \
                 trusted issuer (issuer, audience and claims) against the token"
            )),
            "invalid_scope" => TokenError::Refused(format!(
                "the trusted issuer does not grant events:read{detail}"
            )),
            "invalid_request" | "unsupported_grant_type" | "unauthorized_client" => {
                TokenError::Refused(format!(
                    "the token endpoint {url} refused the exchange{detail}"
                ))
            }
            _ => TokenError::Unavailable(format!(
                "the token endpoint {url} answered {status} {code}{detail}"
            )),
        })
    }

    /// Gets the next token before the current one expires (a minute before,
    /// or halfway through a shorter life), so that a slow or failing token
    /// endpoint, or a workload token that must be fetched first, is retried
    /// while the current token still works. Runs until `stop`.
    pub async fn keep_fresh(self: std::sync::Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            let refresh_at = self.cached.lock().await.as_ref().map(|(_, at)| *at);
            let wait = match refresh_at {
                Some(at) => at.saturating_duration_since(Instant::now()),
                // No token yet: the first stream gets one.
                None => Duration::from_secs(1),
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if refresh_at.is_none() {
                continue;
            }
            if let Err(error) = self.token().await {
                tracing::warn!(%error, "cannot renew the access token yet; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }

    /// Forgets the cached token (the server refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

fn classify<E: std::error::Error>(
    url: &str,
    error: RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> TokenError {
    {
        match error {
            RequestTokenError::ServerResponse(response) => {
                let detail = response
                    .error_description()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                match response.error() {
                    // The credentials are right, but the tenant may not act now.
                    BasicErrorResponseType::UnauthorizedClient if detail.contains("suspended") => {
                        TokenError::Refused(format!("the token endpoint {url} refused{detail}"))
                    }
                    BasicErrorResponseType::InvalidClient
                    | BasicErrorResponseType::UnauthorizedClient => TokenError::Refused(format!(
                        "the token endpoint {url} rejected the client credentials{detail}: \
                         check HOOKRELAY_CLIENT_ID and HOOKRELAY_CLIENT_SECRET"
                    )),
                    BasicErrorResponseType::InvalidScope => TokenError::Refused(format!(
                        "the client may not have the events:read scope{detail}: \
                         create a client with events:read (POST /v1/clients) for the agent"
                    )),
                    BasicErrorResponseType::UnsupportedGrantType
                    | BasicErrorResponseType::InvalidGrant
                    | BasicErrorResponseType::InvalidRequest => TokenError::Refused(format!(
                        "the token endpoint {url} refused the client-credentials request{detail}: \
                         is --token-url an OAuth2 token endpoint?"
                    )),
                    other => TokenError::Unavailable(format!(
                        "the token endpoint {url} answered {}{detail}",
                        other.as_ref()
                    )),
                }
            }
            RequestTokenError::Request(cause) => TokenError::Unavailable(format!(
                "cannot reach the token endpoint {url}: {}",
                error_chain(&cause)
            )),
            RequestTokenError::Parse(_, body) => TokenError::Unavailable(format!(
                "the token endpoint {url} did not answer with an OAuth2 token ({} bytes of something else)",
                body.len()
            )),
            RequestTokenError::Other(why) => {
                TokenError::Unavailable(format!("the token endpoint {url}: {why}"))
            }
        }
    }
}
