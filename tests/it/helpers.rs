//! spawn_app(): the real server on port 0 against a fresh database of a real
//! PostgreSQL. With DATABASE_URL unset, one throwaway cluster is started per test
//! process (it stops and deletes itself when the process exits).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use hookrelay::config::{Config, DatabaseConfig, Limits, SecretKeySource};
use hookrelay::embedded_db::{EmbeddedOptions, EmbeddedPostgres};
use hookrelay::startup::Application;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::{Connection, PgPool};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/github");

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(FIXTURES).join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

enum Server {
    External(String),
    Embedded(EmbeddedPostgres),
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Server::External(url),
            _ => {
                let dir = std::env::temp_dir().join(format!(
                    "hookrelay-test-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ));
                let cluster = EmbeddedPostgres::start(&EmbeddedOptions {
                    dir,
                    bin_dir: None,
                    ephemeral: true,
                    fsync: false,
                    max_connections: 500,
                })
                .expect(
                    "the test PostgreSQL cluster starts (install PostgreSQL or set DATABASE_URL)",
                );
                Server::Embedded(cluster)
            }
        }
    })
}

/// A URL for `database` on the test server.
pub fn database_url(database: &str) -> String {
    match server() {
        Server::External(url) => {
            let mut url = url::Url::parse(url).expect("DATABASE_URL is a URL");
            url.set_path(database);
            url.to_string()
        }
        Server::Embedded(cluster) => {
            let options = cluster.connect_options(database);
            let socket = options
                .get_socket()
                .expect("a socket")
                .display()
                .to_string();
            format!(
                "postgres://postgres@localhost/{database}?host={socket}&port={}",
                options.get_port()
            )
        }
    }
}

/// The URL of the test server's maintenance database.
pub fn admin_url() -> String {
    match server() {
        Server::External(url) => url.clone(),
        Server::Embedded(_) => database_url("postgres"),
    }
}

/// A new, empty database; returns its URL.
pub async fn fresh_database() -> String {
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connect to the test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    admin.close().await.ok();
    database_url(&name)
}

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
        jwt_key_file: None,
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

/// A signed-up tenant with a token holding every scope.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub token: String,
}

/// A registered repository with its webhook secret.
#[derive(Debug, Clone)]
pub struct TestRepository {
    pub id: String,
    pub secret: String,
}

/// Signs up a tenant at `base` (a server, or Envoy in front of one) and gets
/// it a token, over plain HTTP: for tests that run whole processes.
pub async fn tenant_at(http: &reqwest::Client, base: &str, name: &str) -> TestTenant {
    let response = http
        .post(format!("{base}/v1/tenants"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let field = |name: &str| body[name].as_str().unwrap().to_owned();
    let (client_id, client_secret) = (field("client_id"), field("client_secret"));
    TestTenant {
        tenant_id: field("tenant_id"),
        token: token_at(http, base, &client_id, &client_secret).await,
        client_id,
        client_secret,
    }
}

/// A client-credentials access token from `base`/oauth/token.
pub async fn token_at(http: &reqwest::Client, base: &str, client_id: &str, secret: &str) -> String {
    let body: Value = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Registers a GitHub repository at `base`; the answer as JSON.
pub async fn repository_at(http: &reqwest::Client, base: &str, token: &str, name: &str) -> Value {
    let response = http
        .post(format!("{base}/v1/repositories"))
        .bearer_auth(token)
        .json(&json!({ "provider": "github", "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
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
        self.http
            .post(self.url(&format!("/v1/webhooks/{repository_id}")))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/044aadd")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", "292430182")
            .header("x-hub-signature-256", sign(secret, body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
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
        for table in ["tenant", "client", "repository", "event", "signing_key"] {
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

pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A `hookrelay` process, killed (and waited for) on drop.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
    pub stdout: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn hookrelay() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command.env_remove("DATABASE_URL").env("RUST_LOG", "info");
    command
}

/// The `hookrelay-agent` binary of the workspace, built next to `hookrelay` by
/// `cargo test --workspace` (scripts/test).
pub fn agent_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_hookrelay")).with_file_name("hookrelay-agent");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test)",
        path.display()
    );
    path
}

/// `hookrelay` for tests that must not block their runtime while it runs.
pub fn hookrelay_async() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command.env_remove("DATABASE_URL");
    command
}

impl ServerProcess {
    /// Starts `hookrelay serve` with `envs` and waits until /readyz answers 200.
    pub async fn start(envs: &[(&str, String)], log_dir: &std::path::Path) -> ServerProcess {
        let mut command = hookrelay();
        command.arg("serve");
        Self::start_command(command, envs, log_dir).await
    }

    /// Runs `command` (which starts `hookrelay serve`) on a free HTTP port and
    /// waits until /readyz answers 200.
    pub async fn start_command(
        mut command: Command,
        envs: &[(&str, String)],
        log_dir: &std::path::Path,
    ) -> ServerProcess {
        let port = free_port();
        let stdout = log_dir.join(format!("hookrelay-{port}.log"));
        command
            .env("HOOKRELAY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            // Never the default 50051: tests run in parallel.
            .env("HOOKRELAY_GRPC_ADDR", "127.0.0.1:0")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::inherit());
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = command.spawn().expect("hookrelay starts");
        let mut server = ServerProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
            stdout,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(format!("{}/readyz", server.address)).await
                && response.status() == StatusCode::OK
            {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "hookrelay exited with {status}: {}",
                    std::fs::read_to_string(&server.stdout).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "hookrelay did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hookrelay did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process with this PID is alive (zombies count as gone).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.split_whitespace()
                .nth(2)
                .is_none_or(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
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
        };
        self.grpc()
            .await
            .stream_events(authed(request, token))
            .await
            .map(tonic::Response::into_inner)
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

/// What a test target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub delivery_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

/// A local HTTP target, as a CI server would run: it checks the GitHub
/// signature itself and records what it accepted. `answer` picks the status of
/// each request (given the number of requests so far); signatures are checked first.
pub struct TestTarget {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = std::sync::Arc<dyn Fn(usize) -> (u16, Option<&'static str>) + Send + Sync>;

impl TestTarget {
    pub async fn start(secrets: Vec<String>) -> TestTarget {
        Self::answering(
            secrets,
            std::sync::Arc::new(|_| (200, None)),
            Duration::ZERO,
        )
        .await
    }

    pub async fn answering(secrets: Vec<String>, answer: Answer, delay: Duration) -> TestTarget {
        use axum::http::{HeaderMap, StatusCode};
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let requests: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let handler = {
            let (received, requests) = (received.clone(), requests.clone());
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let (received, requests, secrets, answer) = (
                    received.clone(),
                    requests.clone(),
                    secrets.clone(),
                    answer.clone(),
                );
                async move {
                    let n = requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let signature = headers
                        .get("x-hub-signature-256")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if !secrets
                        .iter()
                        .any(|secret| sign(secret, &body) == signature)
                    {
                        return (StatusCode::UNAUTHORIZED, HeaderMap::new());
                    }
                    tokio::time::sleep(delay).await;
                    let (status, retry_after) = answer(n);
                    let mut answer_headers = HeaderMap::new();
                    if let Some(retry_after) = retry_after {
                        answer_headers.insert("retry-after", retry_after.parse().unwrap());
                    }
                    if (200..300).contains(&status) {
                        let text = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let mut copy = reqwest::header::HeaderMap::new();
                        for (name, value) in &headers {
                            copy.append(
                                reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes())
                                    .unwrap(),
                                reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                            );
                        }
                        received.lock().unwrap().push(Received {
                            delivery_id: text("x-github-delivery"),
                            event_type: text("x-github-event"),
                            body: body.to_vec(),
                            headers: copy,
                        });
                    }
                    (StatusCode::from_u16(status).unwrap(), answer_headers)
                }
            }
        };
        let router = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestTarget {
            url,
            received,
            requests,
            task,
        }
    }

    pub fn deliveries(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.delivery_id.clone())
            .collect()
    }

    /// Waits until the target has accepted at least `count` deliveries.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let deliveries = self.deliveries();
            if deliveries.len() >= count {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "the target got {} of {count} deliveries in {timeout:?}",
                deliveries.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `hookrelay relay` process, killed on drop.
pub struct RelayProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl RelayProcess {
    pub fn start(
        app: &TestApp,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        extra: &[&str],
        log_dir: &std::path::Path,
    ) -> RelayProcess {
        let token_url = app.url("/oauth/token");
        let mut args = vec!["--token-url", &token_url];
        args.extend_from_slice(extra);
        Self::start_at(&app.grpc_address, tenant, consumer, target, &args, log_dir)
    }

    /// An agent against `server` (its token URL defaults to `<server>/oauth/token`).
    pub fn start_at(
        server: &str,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        extra: &[&str],
        log_dir: &std::path::Path,
    ) -> RelayProcess {
        let mut command = hookrelay();
        command.arg("relay");
        Self::spawn(command, server, tenant, consumer, target, extra, log_dir)
    }

    /// The standalone `hookrelay-agent` binary (same flags as `hookrelay relay`).
    pub fn start_standalone(
        app: &TestApp,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        log_dir: &std::path::Path,
    ) -> RelayProcess {
        let token_url = app.url("/oauth/token");
        let command = Command::new(agent_binary());
        Self::spawn(
            command,
            &app.grpc_address,
            tenant,
            consumer,
            target,
            &["--token-url", &token_url],
            log_dir,
        )
    }

    fn spawn(
        mut command: Command,
        server: &str,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        extra: &[&str],
        log_dir: &std::path::Path,
    ) -> RelayProcess {
        let log = log_dir.join(format!(
            "relay-{consumer}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        command
            .args(["--server", server])
            .args(["--client-id", &tenant.client_id])
            .args(["--consumer", consumer])
            .args(["--target", target])
            .args(["--summary-interval", "1s"])
            .args(extra)
            .env("HOOKRELAY_CLIENT_SECRET", &tenant.client_secret)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        RelayProcess {
            child: command.spawn().expect("the relay starts"),
            log,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `needle` occurs `count` times in the agent's output.
    pub async fn wait_for_output(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if output.matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` did not occur {count} times:\n{output}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn output(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default());
        text
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Envoy in front of relay listeners, configured by envoy/render; killed on drop.
pub struct EnvoyProcess {
    child: Child,
    pub address: String,
    pub admin: String,
    pub log: PathBuf,
}

/// Runs envoy/render with `args`; panics unless it succeeds.
pub fn render_envoy(args: &[&str]) -> String {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/render"))
        .args(args)
        .output()
        .expect("envoy/render runs (python3)");
    assert!(
        output.status.success(),
        "envoy/render {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `envoy --mode validate` on a config file: (accepted, output).
pub fn validate_envoy(config: &std::path::Path) -> (bool, String) {
    let output = Command::new("envoy")
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .output()
        .expect("envoy is not on PATH: run the tests through scripts/test, which installs it");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

impl EnvoyProcess {
    /// Envoy on `port` (0: a free one) in front of the given relay listeners; returns
    /// once every upstream passes its health check.
    pub async fn start(
        port: u16,
        http: &[String],
        grpc: &[String],
        dir: &std::path::Path,
    ) -> EnvoyProcess {
        let port = if port == 0 { free_port() } else { port };
        let admin = free_port();
        let (listen, admin_address) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
        let mut args = vec!["--listen", &listen, "--admin", &admin_address];
        for address in http {
            args.extend(["--http", address]);
        }
        for address in grpc {
            args.extend(["--grpc", address]);
        }
        let config = dir.join(format!("envoy-{port}.json"));
        std::fs::write(&config, render_envoy(&args)).unwrap();
        let (valid, output) = validate_envoy(&config);
        assert!(valid, "{output}");
        let log = dir.join(format!("envoy-{port}.log"));
        let child = Command::new("envoy")
            .args([
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--file-flush-interval-msec",
                "100",
                "-c",
            ])
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .expect("envoy starts");
        let envoy = EnvoyProcess {
            child,
            address: format!("http://{listen}"),
            admin: format!("http://{admin_address}"),
            log,
        };
        let hosts = http.len() + grpc.len();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{}/ready", envoy.admin))
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            let clusters = match reqwest::get(format!("{}/clusters", envoy.admin)).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let healthy = clusters
                .lines()
                .filter(|l| l.ends_with("::health_flags::healthy"))
                .count();
            if ready && healthy == hosts {
                return envoy;
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready ({healthy}/{hosts} healthy):\n{clusters}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Envoy's JSON access log lines.
    pub fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
