//! The flow every user goes through: sign up, get a token, register a repository.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A signed-up tenant: its default client holds every scope.
#[derive(Debug, Clone)]
pub struct SignedUp {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
}

pub async fn sign_up_at(http: &reqwest::Client, base: &str, name: &str) -> SignedUp {
    let response = http
        .post(format!("{base}/v1/tenants"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("signup answers");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED, "signup");
    let body: Value = response.json().await.expect("a JSON signup");
    let text = |field: &str| body[field].as_str().expect(field).to_owned();
    SignedUp {
        tenant_id: text("tenant_id"),
        client_id: text("client_id"),
        client_secret: text("client_secret"),
    }
}

/// An access token by client credentials (HTTP Basic).
pub async fn token_at(http: &reqwest::Client, base: &str, client_id: &str, secret: &str) -> String {
    let response = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("the token endpoint answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK, "token");
    let body: Value = response.json().await.expect("a JSON token");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Registers a GitHub repository; returns the API's answer (`id`, `webhook_secret`, …).
pub async fn repository_at(http: &reqwest::Client, base: &str, token: &str, name: &str) -> Value {
    let response = http
        .post(format!("{base}/v1/repositories"))
        .bearer_auth(token)
        .json(&json!({ "provider": "github", "name": name }))
        .send()
        .await
        .expect("repositories answers");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::CREATED,
        "repository"
    );
    response.json().await.expect("a JSON repository")
}

/// A GitHub delivery of `event` to `repository` (the JSON of `repository_at`)
/// at `base`, signed with its webhook secret, as GitHub sends it.
pub async fn deliver_at(
    http: &reqwest::Client,
    base: &str,
    repository: &Value,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> reqwest::Result<reqwest::Response> {
    let id = repository["id"].as_str().expect("a repository id");
    let secret = repository["webhook_secret"]
        .as_str()
        .expect("a webhook secret");
    http.post(format!("{base}/v1/webhooks/{id}"))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "292430182")
        .header("x-hub-signature-256", crate::sign(secret, body))
        .body(body.to_vec())
        .send()
        .await
}

/// Waits until `GET <base>/readyz` answers 2xx (the relay, or Envoy in front of it).
pub async fn wait_ready(http: &reqwest::Client, base: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
