//! Stand-ins for GitHub's and GitLab's webhook REST APIs, written from the
//! providers' documentation, with the part of each provider that sends: a
//! stand-in delivers webhooks to a hook's URL as the provider would (signed,
//! recorded in the hook's delivery log with what was answered, 0 when nothing
//! answered), lists that log the way the provider pages it, and redelivers an
//! entry on request by really sending the recorded request again.
//!
//! - GitHub (<https://docs.github.com/en/rest/repos/webhooks>): `Authorization:
//!   Bearer`, `GET /repos/{owner}/{repo}/hooks[/{id}]`,
//!   `GET …/hooks/{id}/deliveries` (`per_page` ≤ 100, `status=failure`,
//!   `cursor` in the `Link` header, newest first), `POST
//!   …/deliveries/{id}/attempts` (202), `POST
//!   /app/installations/{id}/access_tokens` (an RS256 app JWT), and the
//!   primary rate limit's answer: 403 with `x-ratelimit-remaining: 0` and
//!   `x-ratelimit-reset`.
//! - GitLab (<https://docs.gitlab.com/api/project_webhooks/>): `PRIVATE-TOKEN`,
//!   `GET /api/v4/projects/{id or url-encoded path}/hooks[/{id}]`,
//!   `GET …/hooks/{id}/events` (`page`, `per_page` ≤ 100, `x-next-page`),
//!   `POST …/events/{id}/resend` (a few per window per hook, 429 with
//!   `Retry-After` past that).

// The `Err` of these handlers' helpers is the HTTP answer itself.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Sender;

/// Which provider a stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Github,
    Gitlab,
}

/// What a token may do with the repository's webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Sees the repository, not its webhooks.
    None,
    Read,
    Write,
}

/// One attempt to deliver, as the provider logs it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: u64,
    pub guid: String,
    pub event: String,
    pub delivered_at: u64,
    /// 0: nothing answered.
    pub status_code: u16,
    pub redelivery: bool,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Hook {
    id: u64,
    url: String,
    secret: String,
    active: bool,
    insecure_ssl: bool,
    attempts: Vec<Attempt>,
    /// Resend times, for GitLab's per-hook limit.
    resends: Vec<SystemTime>,
}

#[derive(Debug, Default)]
struct World {
    tokens: HashMap<String, Access>,
    hooks: Vec<Hook>,
    next_id: u64,
    calls: u64,
    /// Redeliveries asked, per attempt id.
    asked: HashMap<u64, u32>,
    /// After this many more calls, answer "rate limited" for `limit_for`.
    limit_after: Option<u64>,
    limit_for: Duration,
    limited_until: Option<SystemTime>,
    /// A GitHub App: its id, installation id and public key (PEM).
    app: Option<(u64, u64, Vec<u8>)>,
    minted: u32,
    /// GitLab's resend limit: this many per `resend_window` per hook.
    resend_limit: usize,
    resend_window: Duration,
}

struct Inner {
    kind: Kind,
    repository: String,
    world: Mutex<World>,
    http: reqwest::Client,
}

/// A running stand-in; stops when dropped.
pub struct ProviderApi {
    inner: Arc<Inner>,
    /// The API's base URL, as a tenant gives it in `api_url`.
    pub api_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for ProviderApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn now_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .expect("a valid time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

impl ProviderApi {
    /// A stand-in for `kind` serving `repository` (`owner/repo`, `group/project`).
    pub async fn start(kind: Kind, repository: &str) -> Self {
        let inner = Arc::new(Inner {
            kind,
            repository: repository.to_owned(),
            world: Mutex::new(World {
                next_id: 1000,
                resend_limit: 5,
                resend_window: Duration::from_secs(60),
                ..World::default()
            }),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client"),
        });
        let router = match kind {
            Kind::Github => Router::new()
                .route("/repos/{owner}/{repo}/hooks", get(gh_hooks))
                .route("/repos/{owner}/{repo}/hooks/{hook}", get(gh_hook))
                .route(
                    "/repos/{owner}/{repo}/hooks/{hook}/deliveries",
                    get(gh_deliveries),
                )
                .route(
                    "/repos/{owner}/{repo}/hooks/{hook}/deliveries/{delivery}/attempts",
                    post(gh_attempt),
                )
                .route(
                    "/app/installations/{installation}/access_tokens",
                    post(gh_mint),
                ),
            Kind::Gitlab => Router::new()
                .route("/api/v4/projects/{project}/hooks", get(gl_hooks))
                .route("/api/v4/projects/{project}/hooks/{hook}", get(gl_hook))
                .route(
                    "/api/v4/projects/{project}/hooks/{hook}/events",
                    get(gl_events),
                )
                .route(
                    "/api/v4/projects/{project}/hooks/{hook}/events/{event}/resend",
                    post(gl_resend),
                ),
        }
        .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let api_url = match kind {
            Kind::Github => format!("http://{address}"),
            Kind::Gitlab => format!("http://{address}/api/v4"),
        };
        Self {
            inner,
            api_url,
            stop: Some(stop),
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.inner.world.lock().expect("the stand-in's state")
    }

    pub fn add_token(&self, token: &str, access: Access) {
        self.world().tokens.insert(token.to_owned(), access);
    }

    /// A webhook posting to `url`, signed with `secret`; its id.
    pub fn add_hook(&self, url: &str, secret: &str) -> u64 {
        let mut world = self.world();
        world.next_id += 1;
        let id = world.next_id;
        world.hooks.push(Hook {
            id,
            url: url.to_owned(),
            secret: secret.to_owned(),
            active: true,
            insecure_ssl: false,
            attempts: Vec::new(),
            resends: Vec::new(),
        });
        id
    }

    /// Changes a hook's secret, activity or TLS verification.
    pub fn configure_hook(&self, id: u64, secret: Option<&str>, active: bool, insecure_ssl: bool) {
        let mut world = self.world();
        let hook = world.hooks.iter_mut().find(|h| h.id == id).expect("a hook");
        if let Some(secret) = secret {
            hook.secret = secret.to_owned();
        }
        hook.active = active;
        hook.insecure_ssl = insecure_ssl;
    }

    /// A GitHub App installed on the repository, with its public key.
    pub fn add_app(&self, app_id: u64, installation_id: u64, public_key_pem: &[u8]) {
        self.world().app = Some((app_id, installation_id, public_key_pem.to_vec()));
    }

    /// After `calls` more API calls, answer "rate limited" for `duration`.
    pub fn rate_limit_after(&self, calls: u64, duration: Duration) {
        let mut world = self.world();
        world.limit_after = Some(calls);
        world.limit_for = duration;
    }

    /// Ends a rate limit now (as its reset time would).
    pub fn lift_rate_limit(&self) {
        let mut world = self.world();
        world.limit_after = None;
        world.limited_until = None;
    }

    /// GitLab's resend limit: `count` per `window` per hook.
    pub fn resend_limit(&self, count: usize, window: Duration) {
        let mut world = self.world();
        world.resend_limit = count;
        world.resend_window = window;
    }

    /// API calls answered so far, rate-limited ones included.
    pub fn calls(&self) -> u64 {
        self.world().calls
    }

    /// Installation tokens minted for the GitHub App.
    pub fn minted(&self) -> u32 {
        self.world().minted
    }

    /// The most redeliveries asked for any one log entry.
    pub fn most_asks_per_attempt(&self) -> u32 {
        self.world().asked.values().copied().max().unwrap_or(0)
    }

    /// Redeliveries asked in all.
    pub fn asks(&self) -> u32 {
        self.world().asked.values().sum()
    }

    /// The hook's log, oldest first.
    pub fn attempts(&self, hook: u64) -> Vec<Attempt> {
        let world = self.world();
        world
            .hooks
            .iter()
            .find(|h| h.id == hook)
            .map(|h| h.attempts.clone())
            .unwrap_or_default()
    }

    /// Delivers `body` as the provider does (a new delivery id), logs the
    /// attempt with what was answered, and returns that status (0: nothing).
    pub async fn deliver(&self, hook: u64, event: &str, delivery: &str, body: &[u8]) -> u16 {
        let (url, secret) = {
            let world = self.world();
            let hook = world.hooks.iter().find(|h| h.id == hook).expect("a hook");
            (hook.url.clone(), hook.secret.clone())
        };
        let sender = match self.inner.kind {
            Kind::Github => Sender::Github,
            Kind::Gitlab => Sender::GitlabToken,
        };
        let headers = sender.headers(
            &secret,
            event,
            delivery,
            body,
            now_secs(SystemTime::now()) as i64,
        );
        send(
            &self.inner,
            hook,
            &url,
            delivery,
            event,
            headers,
            body.to_vec(),
            false,
        )
        .await
    }
}

/// Sends one attempt and logs it.
#[allow(clippy::too_many_arguments)]
async fn send(
    inner: &Inner,
    hook: u64,
    url: &str,
    guid: &str,
    event: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    redelivery: bool,
) -> u16 {
    let mut request = inner.http.post(url).body(body.clone());
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let status_code = match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    };
    let mut world = inner.world.lock().expect("the stand-in's state");
    world.next_id += 1;
    let id = world.next_id;
    if let Some(hook) = world.hooks.iter_mut().find(|h| h.id == hook) {
        hook.attempts.push(Attempt {
            id,
            guid: guid.to_owned(),
            event: event.to_owned(),
            delivered_at: now_secs(SystemTime::now()),
            status_code,
            redelivery,
            headers,
            body,
        });
    }
    status_code
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Counts the call, answers "rate limited" while limited, and checks the
/// credentials: the caller's access, or the answer to give instead.
fn admit(inner: &Inner, headers: &HeaderMap) -> Result<Access, Response> {
    let mut world = inner.world.lock().expect("the stand-in's state");
    world.calls += 1;
    let now = SystemTime::now();
    if let Some(after) = world.limit_after {
        if after == 0 {
            world.limit_after = None;
            world.limited_until = Some(now + world.limit_for);
        } else {
            world.limit_after = Some(after - 1);
        }
    }
    if let Some(until) = world.limited_until {
        if now < until {
            let wait = until.duration_since(now).unwrap_or_default();
            let mut response = match inner.kind {
                Kind::Github => answer(
                    StatusCode::FORBIDDEN,
                    json!({"message": "API rate limit exceeded for user ID 1."}),
                ),
                Kind::Gitlab => answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({"message": "429 Too Many Requests"}),
                ),
            };
            let h = response.headers_mut();
            h.insert("x-ratelimit-remaining", "0".parse().unwrap());
            h.insert(
                "x-ratelimit-reset",
                (now_secs(until) + 1).to_string().parse().unwrap(),
            );
            if inner.kind == Kind::Gitlab {
                h.insert(
                    "retry-after",
                    (wait.as_secs() + 1).to_string().parse().unwrap(),
                );
            }
            return Err(response);
        }
        world.limited_until = None;
    }
    let token = match inner.kind {
        Kind::Github => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ")),
        Kind::Gitlab => headers.get("private-token").and_then(|v| v.to_str().ok()),
    };
    match token.and_then(|t| world.tokens.get(t)) {
        Some(access) => Ok(*access),
        None => Err(match inner.kind {
            Kind::Github => answer(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Bad credentials", "status": "401"}),
            ),
            Kind::Gitlab => answer(
                StatusCode::UNAUTHORIZED,
                json!({"message": "401 Unauthorized"}),
            ),
        }),
    }
}

fn forbidden(kind: Kind) -> Response {
    match kind {
        Kind::Github => answer(
            StatusCode::FORBIDDEN,
            json!({"message": "Resource not accessible by personal access token", "status": "403"}),
        ),
        Kind::Gitlab => answer(StatusCode::FORBIDDEN, json!({"message": "403 Forbidden"})),
    }
}

fn not_found(kind: Kind) -> Response {
    match kind {
        Kind::Github => answer(
            StatusCode::NOT_FOUND,
            json!({"message": "Not Found", "status": "404"}),
        ),
        Kind::Gitlab => answer(StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
    }
}

/// Admits a call on the stand-in's repository needing `needed`.
fn admit_repo(
    inner: &Inner,
    headers: &HeaderMap,
    repository: &str,
    needed: Access,
) -> Result<(), Response> {
    let access = admit(inner, headers)?;
    if repository != inner.repository {
        return Err(not_found(inner.kind));
    }
    let enough = match needed {
        Access::None => true,
        Access::Read => access != Access::None,
        Access::Write => access == Access::Write,
    };
    if enough {
        Ok(())
    } else {
        Err(forbidden(inner.kind))
    }
}

fn gh_hook_json(hook: &Hook) -> Value {
    json!({
        "type": "Repository",
        "id": hook.id,
        "name": "web",
        "active": hook.active,
        "events": ["push", "pull_request"],
        "config": {
            "content_type": "json",
            "insecure_ssl": if hook.insecure_ssl { "1" } else { "0" },
            "url": hook.url,
            "secret": "********",
        },
        "last_response": {"code": hook.attempts.last().map(|a| a.status_code), "status": "active", "message": null},
    })
}

async fn gh_hooks(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &format!("{owner}/{repo}"), Access::Read) {
        return response;
    }
    let world = inner.world.lock().unwrap();
    answer(
        StatusCode::OK,
        Value::Array(world.hooks.iter().map(gh_hook_json).collect()),
    )
}

async fn gh_hook(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, hook)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &format!("{owner}/{repo}"), Access::Read) {
        return response;
    }
    let world = inner.world.lock().unwrap();
    match world.hooks.iter().find(|h| h.id == hook) {
        Some(hook) => answer(StatusCode::OK, gh_hook_json(hook)),
        None => not_found(inner.kind),
    }
}

async fn gh_deliveries(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, hook)): Path<(String, String, u64)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &format!("{owner}/{repo}"), Access::Read) {
        return response;
    }
    let per_page: usize = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let failures_only = query.get("status").map(String::as_str) == Some("failure");
    // The cursor is opaque to callers: here, the id to continue below.
    let below: u64 = query
        .get("cursor")
        .and_then(|c| c.strip_prefix("v1_"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(u64::MAX);
    let world = inner.world.lock().unwrap();
    let Some(hook) = world.hooks.iter().find(|h| h.id == hook) else {
        return not_found(inner.kind);
    };
    let matching: Vec<&Attempt> = hook
        .attempts
        .iter()
        .rev()
        .filter(|a| a.id < below)
        .filter(|a| !failures_only || !(200..300).contains(&a.status_code))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(per_page)
        .map(|a| {
            json!({
                "id": a.id,
                "guid": a.guid,
                "delivered_at": rfc3339(a.delivered_at),
                "redelivery": a.redelivery,
                "duration": 0.05,
                "status": match a.status_code { 0 => "failed to connect".to_owned(), 200..=299 => "OK".to_owned(), code => format!("Invalid HTTP Response: {code}") },
                "status_code": a.status_code,
                "event": a.event,
                "action": null,
                "installation_id": null,
                "repository_id": 1,
            })
        })
        .collect();
    let mut response = answer(StatusCode::OK, Value::Array(page));
    if matching.len() > per_page {
        let last = matching[per_page - 1].id;
        let mut next = format!(
            "http://{}/repos/{owner}/{repo}/hooks/{}/deliveries?per_page={per_page}&cursor=v1_{last}",
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost"),
            hook.id
        );
        if failures_only {
            next.push_str("&status=failure");
        }
        response
            .headers_mut()
            .insert("link", format!("<{next}>; rel=\"next\"").parse().unwrap());
    }
    response
}

/// Sends a logged attempt again, as the provider does: the recorded body and
/// delivery id, signed again with the hook's current secret.
fn resend(inner: Arc<Inner>, hook: u64, attempt: u64) -> Result<(), Response> {
    let (url, secret, original) = {
        let mut world = inner.world.lock().unwrap();
        let Some(hook) = world.hooks.iter().find(|h| h.id == hook) else {
            return Err(not_found(inner.kind));
        };
        let Some(original) = hook.attempts.iter().find(|a| a.id == attempt).cloned() else {
            return Err(not_found(inner.kind));
        };
        let found = (hook.url.clone(), hook.secret.clone(), original);
        *world.asked.entry(attempt).or_default() += 1;
        found
    };
    let sender = match inner.kind {
        Kind::Github => Sender::Github,
        Kind::Gitlab => Sender::GitlabToken,
    };
    let headers = sender.headers(
        &secret,
        &original.event,
        &original.guid,
        &original.body,
        now_secs(SystemTime::now()) as i64,
    );
    tokio::spawn(async move {
        send(
            &inner,
            hook,
            &url,
            &original.guid,
            &original.event,
            headers,
            original.body,
            true,
        )
        .await;
    });
    Ok(())
}

async fn gh_attempt(
    State(inner): State<Arc<Inner>>,
    Path((owner, repo, hook, delivery)): Path<(String, String, u64, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &format!("{owner}/{repo}"), Access::Write) {
        return response;
    }
    match resend(inner, hook, delivery) {
        Ok(()) => answer(StatusCode::ACCEPTED, json!({})),
        Err(response) => response,
    }
}

/// Mints an installation token for a valid app JWT (RS256, `iss` the app id,
/// `exp` at most 10 minutes ahead).
async fn gh_mint(
    State(inner): State<Arc<Inner>>,
    Path(installation): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let mut world = inner.world.lock().unwrap();
    world.calls += 1;
    let Some((app_id, installation_id, public_key)) = world.app.clone() else {
        return not_found(inner.kind);
    };
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public_key).expect("the app's public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[app_id.to_string()]);
    let valid = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .ok()
        .filter(|data| {
            let iat = data.claims["iat"].as_u64().unwrap_or(0);
            let exp = data.claims["exp"].as_u64().unwrap_or(u64::MAX);
            exp.saturating_sub(iat) <= 600
        });
    if valid.is_none() {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "A JSON web token could not be decoded"}),
        );
    }
    if installation != installation_id {
        return not_found(inner.kind);
    }
    world.minted += 1;
    let token = format!("ghs_installation{}", world.minted);
    world.tokens.insert(token.clone(), Access::Write);
    answer(
        StatusCode::CREATED,
        json!({
            "token": token,
            "expires_at": rfc3339(now_secs(SystemTime::now()) + 3600),
            "permissions": {"repository_hooks": "write"},
            "repository_selection": "selected",
        }),
    )
}

fn gl_hook_json(hook: &Hook) -> Value {
    json!({
        "id": hook.id,
        "url": hook.url,
        "name": "hookrelay",
        "project_id": 3,
        "push_events": true,
        "tag_push_events": true,
        "merge_requests_events": false,
        "enable_ssl_verification": !hook.insecure_ssl,
        "alert_status": if hook.active { "executable" } else { "disabled" },
        "disabled_until": null,
        "created_at": "2026-11-01T09:10:54.854Z",
    })
}

async fn gl_hooks(
    State(inner): State<Arc<Inner>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &project, Access::Read) {
        return response;
    }
    let world = inner.world.lock().unwrap();
    answer(
        StatusCode::OK,
        Value::Array(world.hooks.iter().map(gl_hook_json).collect()),
    )
}

async fn gl_hook(
    State(inner): State<Arc<Inner>>,
    Path((project, hook)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &project, Access::Read) {
        return response;
    }
    let world = inner.world.lock().unwrap();
    match world.hooks.iter().find(|h| h.id == hook) {
        Some(hook) => answer(StatusCode::OK, gl_hook_json(hook)),
        None => not_found(inner.kind),
    }
}

async fn gl_events(
    State(inner): State<Arc<Inner>>,
    Path((project, hook)): Path<(String, u64)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &project, Access::Read) {
        return response;
    }
    let per_page: usize = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page: usize = query
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let world = inner.world.lock().unwrap();
    let Some(hook) = world.hooks.iter().find(|h| h.id == hook) else {
        return not_found(inner.kind);
    };
    let all: Vec<&Attempt> = hook.attempts.iter().rev().collect();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|a| {
            let request_headers: serde_json::Map<String, Value> = a
                .headers
                .iter()
                .filter(|(name, _)| name != "x-gitlab-token")
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect();
            json!({
                "id": a.id,
                "url": hook.url,
                "trigger": "push_hooks",
                "request_headers": request_headers,
                "request_data": String::from_utf8_lossy(&a.body),
                "response_headers": {},
                "response_body": "",
                "execution_duration": 0.05,
                "response_status": if a.status_code == 0 { "internal error".to_owned() } else { a.status_code.to_string() },
            })
        })
        .collect();
    let more = all.len() > page * per_page;
    let mut response = answer(StatusCode::OK, Value::Array(items));
    let h = response.headers_mut();
    h.insert("x-page", page.to_string().parse().unwrap());
    h.insert("x-per-page", per_page.to_string().parse().unwrap());
    h.insert(
        "x-next-page",
        if more {
            (page + 1).to_string()
        } else {
            String::new()
        }
        .parse()
        .unwrap(),
    );
    response
}

async fn gl_resend(
    State(inner): State<Arc<Inner>>,
    Path((project, hook, event)): Path<(String, u64, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit_repo(&inner, &headers, &project, Access::Write) {
        return response;
    }
    {
        let mut world = inner.world.lock().unwrap();
        let (limit, window) = (world.resend_limit, world.resend_window);
        let now = SystemTime::now();
        let Some(hook) = world.hooks.iter_mut().find(|h| h.id == hook) else {
            return not_found(inner.kind);
        };
        hook.resends
            .retain(|at| now.duration_since(*at).unwrap_or_default() < window);
        if hook.resends.len() >= limit {
            let oldest = hook.resends[0];
            let wait = window.saturating_sub(now.duration_since(oldest).unwrap_or_default());
            let mut response = answer(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message": "This endpoint has been requested too many times. Try again later."}),
            );
            response.headers_mut().insert(
                "retry-after",
                (wait.as_secs() + 1).to_string().parse().unwrap(),
            );
            return response;
        }
        hook.resends.push(now);
    }
    match resend(inner, hook, event) {
        Ok(()) => answer(StatusCode::CREATED, json!({})),
        Err(response) => response,
    }
}
