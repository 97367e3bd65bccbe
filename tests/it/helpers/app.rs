//! spawn_app(): the real server on port 0 against a fresh database, and a
//! `TestApp` with one helper per endpoint and RPC.

use std::time::Duration;

use base64::Engine;
use hookrelay::config::{Config, DatabaseConfig, Limits, SecretKeySource};
use hookrelay::startup::Application;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{TestRepository, TestTenant, authed, fresh_database, repository_at, tenant_at};

pub const TEST_SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub fn test_config(database_url: &str) -> Config {
    Config {
        database: DatabaseConfig {
            url: Some(SecretString::from(database_url.to_owned())),
            data_dir: std::env::temp_dir(),
            postgres_bin_dir: None,
            max_connections: 8,
        },
        http_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        signup_token: None,
        secret_key: SecretKeySource::Value(SecretString::from(TEST_SECRET_KEY)),
        previous_secret_key: None,
        jwt_key_file: Vec::new(),
        jwt_audience: "hookrelay".into(),
        token_ttl: Duration::from_secs(900),
        max_webhook_bytes: 25 * 1024 * 1024,
        secret_rotation_grace: Duration::from_secs(24 * 3600),
        retention: Duration::from_secs(7 * 24 * 3600),
        tls: None,
        cors_origins: Vec::new(),
        drain_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(10),
        migrate: true,
        limits: Limits::default(),
        quotas: Default::default(),
        outbound: Default::default(),
        recovery_interval: Duration::from_secs(300),
        stored_bytes_interval: Duration::from_secs(60),
    }
}

pub struct TestApp {
    pub address: String,
    pub grpc_address: String,
    pub database_url: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let database_url = fresh_database().await;
    spawn_app_on(&database_url, configure)
        .await
        .expect("the application builds")
}

pub async fn spawn_app_on(
    database_url: &str,
    configure: impl FnOnce(&mut Config),
) -> anyhow::Result<TestApp> {
    let mut config = test_config(database_url);
    configure(&mut config);
    let app = Application::build(config).await?;
    let address = format!("http://{}", app.http_addr());
    let grpc_address = format!("http://{}", app.grpc_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Ok(TestApp {
        address,
        grpc_address,
        database_url: database_url.to_owned(),
        pool: PgPool::connect(database_url).await?,
        http: reqwest::Client::new(),
        stop: Some(stop),
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The JSON at a public path.
    async fn public_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The RFC 8414 metadata, as any OAuth2 client reads it first.
    pub async fn metadata(&self) -> Value {
        self.public_json("/.well-known/oauth-authorization-server")
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http
            .put(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn sign_up(&self, name: &str) -> Value {
        let response = self
            .post_json("/v1/tenants", None, &json!({"name": name}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// client_secret_basic, as most OAuth2 clients send it.
    pub async fn request_token(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Response {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.http
            .post(self.url("/oauth/token"))
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    pub async fn token(&self, client_id: &str, secret: &str, scope: Option<&str>) -> String {
        let response = self.request_token(client_id, secret, scope).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A token of a new client of `tenant` holding only `scopes`.
    pub async fn scoped_token(&self, tenant: &TestTenant, name: &str, scopes: &[&str]) -> String {
        let client: Value = self
            .post_json(
                "/v1/clients",
                Some(&tenant.token),
                &json!({"name": name, "scopes": scopes}),
            )
            .await
            .json()
            .await
            .unwrap();
        self.token(
            client["client_id"].as_str().unwrap(),
            client["client_secret"].as_str().unwrap(),
            None,
        )
        .await
    }

    pub async fn tenant(&self, name: &str) -> TestTenant {
        tenant_at(&self.http, &self.address, name).await
    }

    pub async fn repository(&self, tenant: &TestTenant, name: &str) -> TestRepository {
        let body = repository_at(&self.http, &self.address, &tenant.token, name).await;
        TestRepository {
            id: body["id"].as_str().unwrap().to_owned(),
            secret: body["webhook_secret"].as_str().unwrap().to_owned(),
        }
    }

    /// A GitHub delivery, signed with `secret`, as GitHub sends it.
    pub async fn deliver(
        &self,
        repository_id: &str,
        secret: &str,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> Response {
        let repository = serde_json::json!({"id": repository_id, "webhook_secret": secret});
        super::deliver_at(
            &self.http,
            &self.address,
            &repository,
            event,
            delivery,
            body,
        )
        .await
        .unwrap()
    }

    /// The published signing keys (GET /.well-known/jwks.json).
    pub async fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.public_json("/.well-known/jwks.json").await
    }

    /// Posts a signed GitHub push (the real payload) as `delivery`, asserts
    /// the 202, and returns its event id.
    pub async fn push(&self, repository: &TestRepository, delivery: &str) -> i64 {
        self.post_event(repository, "push", delivery, &super::fixture("push"))
            .await
    }

    /// Posts `body` as GitHub would, expecting 202; returns the event id.
    pub async fn post_event(
        &self,
        repository: &TestRepository,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> i64 {
        let response = self
            .deliver(&repository.id, &repository.secret, event, delivery, body)
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{delivery}");
        let body: Value = response.json().await.unwrap();
        body["event_id"].as_i64().unwrap()
    }

    /// A form-encoded push (GitHub's other content type), expecting 202;
    /// returns the event id.
    pub async fn post_form_event(
        &self,
        repository: &TestRepository,
        delivery: &str,
        json_body: &[u8],
    ) -> i64 {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(json_body).unwrap())
            .finish();
        let response = self
            .http
            .post(self.url(&format!("/v1/webhooks/{}", repository.id)))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                super::sign(&repository.secret, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        body["event_id"].as_i64().unwrap()
    }

    /// `count` signed pushes to `repository`, sent at once in tasks of their
    /// own, as from `source` (through a trusted proxy's X-Forwarded-For) when
    /// given; join them for their statuses.
    pub fn spawn_pushes(
        &self,
        repository: &TestRepository,
        prefix: &str,
        source: Option<&str>,
        count: usize,
    ) -> tokio::task::JoinSet<u16> {
        (0..count)
            .map(|i| {
                let (http, url, secret) = (
                    self.http.clone(),
                    self.url(&format!("/v1/webhooks/{}", repository.id)),
                    repository.secret.clone(),
                );
                let (delivery, source) = (format!("{prefix}-{i}"), source.map(str::to_owned));
                async move {
                    let body = super::fixture("push");
                    let mut request = http
                        .post(url)
                        .header("content-type", "application/json")
                        .header("x-github-event", "push")
                        .header("x-github-delivery", delivery)
                        .header("x-hub-signature-256", super::sign(&secret, &body));
                    if let Some(source) = source {
                        request = request.header("x-forwarded-for", source);
                    }
                    request.body(body).send().await.unwrap().status().as_u16()
                }
            })
            .collect()
    }

    /// GET `path`, expecting 200; its JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.get(path, token).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// Registers a repository of any provider: the answer (with its secret).
    pub async fn register(
        &self,
        tenant: &TestTenant,
        provider: &str,
        name: &str,
        settings: Value,
    ) -> Value {
        let response = self
            .post_json(
                "/v1/repositories",
                Some(&tenant.token),
                &json!({"provider": provider, "name": name, "settings": settings}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{provider} {name}");
        response.json().await.unwrap()
    }

    /// POSTs `body` with `headers` to a repository's webhook URL.
    pub async fn post_webhook(
        &self,
        repository_id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Response {
        let mut request = self
            .http
            .post(self.url(&format!("/v1/webhooks/{repository_id}")));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(body.to_vec()).send().await.unwrap()
    }

    /// The Prometheus text at /metrics.
    pub async fn metrics(&self) -> String {
        metrics_at(&self.http, &self.address).await
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from event")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// A digest of every row of every table: equal digests mean nothing changed.
    pub async fn database_digest(&self) -> String {
        let mut digest = String::new();
        for table in [
            "tenant",
            "client",
            "repository",
            "event",
            "signing_key",
            "consumer",
            "consumer_cursor",
            "delivery",
            "redelivery",
        ] {
            let sql = format!(
                "select coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from {table} t"
            );
            let part: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await
                .unwrap();
            digest.push_str(&part);
        }
        digest
    }
}

/// The Prometheus text a server at `base` serves.
pub async fn metrics_at(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Asserts an API error: status and `{"error": code}`.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {status} {code}");
    let body: Value = response.json().await.expect("an error body in JSON");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Asserts an API error whose message says `said`.
pub async fn assert_error_says(response: Response, status: StatusCode, code: &str, said: &str) {
    let body = assert_error(response, status, code).await;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(said), "expected {said:?} in {body}");
}

pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub type EventClient =
    hookrelay::grpc::proto::event_service_client::EventServiceClient<tonic::transport::Channel>;

impl TestApp {
    pub async fn grpc(&self) -> EventClient {
        EventClient::connect(self.grpc_address.clone())
            .await
            .expect("the gRPC server answers")
    }

    /// Opens StreamEvents for `consumer`.
    pub async fn stream(
        &self,
        token: &str,
        consumer: &str,
        repositories: &[&str],
        after: Option<i64>,
    ) -> Result<tonic::Streaming<hookrelay::grpc::proto::Event>, tonic::Status> {
        let request = hookrelay::grpc::proto::StreamEventsRequest {
            repository_ids: repositories.iter().map(|r| r.to_string()).collect(),
            consumer: consumer.to_owned(),
            after_event_id: after,
            ..Default::default()
        };
        self.grpc()
            .await
            .stream_events(authed(request, token))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A stream's filter: event types, branches, tags.
pub type Filter<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str]);

impl TestApp {
    /// Opens StreamEvents for `consumer` with a filter.
    pub async fn open_filtered(
        &self,
        token: &str,
        consumer: &str,
        filter: Filter<'_>,
    ) -> tonic::Streaming<hookrelay::grpc::proto::Event> {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        let request = hookrelay::grpc::proto::StreamEventsRequest {
            consumer: consumer.into(),
            event_types: owned(filter.0),
            branches: owned(filter.1),
            tags: owned(filter.2),
            ..Default::default()
        };
        self.grpc()
            .await
            .stream_events(authed(request, token))
            .await
            .unwrap()
            .into_inner()
    }

    /// Acks `ids` of `repository` as delivered.
    pub async fn ack(&self, token: &str, consumer: &str, repository: &str, ids: &[i64]) {
        use hookrelay::grpc::proto::{AckEventsRequest, AckOutcome, EventAck};
        let acks = ids
            .iter()
            .map(|id| EventAck {
                repository_id: repository.into(),
                event_id: *id,
                outcome: AckOutcome::Delivered.into(),
                ..Default::default()
            })
            .collect();
        self.grpc()
            .await
            .ack_events(authed(
                AckEventsRequest {
                    consumer: consumer.into(),
                    acks,
                },
                token,
            ))
            .await
            .unwrap();
    }
}

/// The ids a stream sends until it has been quiet for a moment.
pub async fn drain(stream: &mut tonic::Streaming<hookrelay::grpc::proto::Event>) -> Vec<i64> {
    let mut ids = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_millis(700), stream.message()).await
    {
        ids.push(message.expect("the stream is healthy").expect("open").id);
    }
    ids
}

/// Polls `check` until it returns Some, or panics after `limit` naming `what`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} ({limit:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next event of a stream, within `timeout`.
pub async fn next_event(
    stream: &mut tonic::Streaming<hookrelay::grpc::proto::Event>,
    timeout: Duration,
) -> hookrelay::grpc::proto::Event {
    tokio::time::timeout(timeout, stream.message())
        .await
        .expect("an event arrives in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}
