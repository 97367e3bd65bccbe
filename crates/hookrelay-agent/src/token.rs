//! Access tokens for the agent: OAuth2 client credentials with the oauth2 crate,
//! against hookrelay's token endpoint or any other.

use std::time::{Duration, Instant};

use anyhow::Context;
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, EndpointNotSet, EndpointSet, Scope, TokenResponse, TokenUrl};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Refresh a token this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

pub struct TokenSource {
    client: Client,
    http: oauth2::reqwest::Client,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

impl TokenSource {
    pub fn new(
        token_url: &str,
        client_id: &str,
        client_secret: &SecretString,
        http: oauth2::reqwest::Client,
    ) -> anyhow::Result<Self> {
        let client = BasicClient::new(ClientId::new(client_id.to_owned()))
            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()))
            .set_token_uri(TokenUrl::new(token_url.to_owned()).context("invalid --token-url")?);
        Ok(Self {
            client,
            http,
            cached: Mutex::new(None),
        })
    }

    /// A token valid for at least a minute more (or for as long as it lives).
    pub async fn token(&self) -> anyhow::Result<SecretString> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let response = self
            .client
            .exchange_client_credentials()
            .add_scope(Scope::new("events:read".into()))
            .request_async(&self.http)
            .await
            .map_err(|e| anyhow::anyhow!("cannot get an access token: {e}"))?;
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(300));
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
        let token = SecretString::from(response.access_token().secret().clone());
        *cached = Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// Forgets the cached token (the server refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}
