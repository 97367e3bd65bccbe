//! Token exchange (RFC 8693) against a real OpenID provider: panva's
//! `oidc-provider` (tests/oidc-provider), run by Node on loopback, issuing JWT
//! access tokens to workloads. The test holds the provider's private keys, so
//! it can also sign the tokens no provider would issue (expired, wrong issuer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookrelay_testkit::{ChildGuard, repo_root, tool};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use hookrelay::config::Config;

use crate::helpers::{
    AgentProcess, TestApp, TestRepository, TestTarget, TestTenant, free_port, hookrelay,
    spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(20);
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An EC P-256 signing key, as the provider's JWKS and as the test's signer.
struct TestKey {
    kid: String,
    private_jwk: Value,
    encoding: EncodingKey,
}

impl TestKey {
    fn new(kid: &str) -> TestKey {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let mut private_jwk: Value = serde_json::from_str(&secret.to_jwk_string()).unwrap();
        private_jwk["kid"] = kid.into();
        private_jwk["alg"] = "ES256".into();
        private_jwk["use"] = "sig".into();
        let pem = secret.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
        TestKey {
            kid: kid.to_owned(),
            private_jwk,
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        }
    }

    /// A token with `claims`, signed by this key under its key id.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The OpenID provider, on a fixed port so that it can restart with new keys.
struct Issuer {
    url: String,
    port: u16,
    jwks: PathBuf,
    child: Option<ChildGuard>,
    http: reqwest::Client,
}

impl Issuer {
    async fn start(dir: &Path, keys: &[&TestKey], token_ttl: u64) -> Issuer {
        let port = free_port();
        let mut issuer = Issuer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            jwks: dir.join(format!("jwks-{port}.json")),
            child: None,
            http: reqwest::Client::new(),
        };
        issuer.run(keys, token_ttl).await;
        issuer
    }

    /// (Re)starts the provider with `keys`; the first signs.
    async fn run(&mut self, keys: &[&TestKey], token_ttl: u64) {
        self.child = None;
        let set = json!({"keys": keys.iter().map(|k| k.private_jwk.clone()).collect::<Vec<_>>()});
        std::fs::write(&self.jwks, set.to_string()).unwrap();
        let script = repo_root().join("tests/oidc-provider/issuer.mjs");
        assert!(
            repo_root()
                .join("tests/oidc-provider/node_modules/oidc-provider")
                .exists(),
            "oidc-provider is not installed: run scripts/test (npm ci --prefix tests/oidc-provider)"
        );
        let node = tool("node").expect("node (scripts/test installs it)");
        let child = ChildGuard::spawn(
            Command::new(node)
                .arg(script)
                .arg(self.port.to_string())
                .arg(&self.url)
                .arg(&self.jwks)
                .env("TOKEN_TTL", token_ttl.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("node starts the OpenID provider");
        self.child = Some(child);
        let discovery = format!("{}/.well-known/openid-configuration", self.url);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = self.http.get(&discovery).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the OpenID provider did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A workload's token from the provider: client credentials, for `audience`.
    async fn token(&self, client: &str, audience: &str) -> String {
        let response = self
            .http
            .post(format!("{}/token", self.url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", "secret"),
                ("resource", audience),
                ("scope", "deploy"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the provider issues a token"
        );
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// A relay that may reach issuers on loopback over http (tests only).
async fn relay_trusting_loopback() -> TestApp {
    spawn_app_with(allow_loopback_issuers).await
}

fn allow_loopback_issuers(config: &mut Config) {
    config.outbound.allow_http = true;
    config.outbound.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
}

async fn trust(
    app: &TestApp,
    tenant: &TestTenant,
    issuer: &str,
    audience: &str,
    repository: &str,
    scopes: &[&str],
) -> String {
    let response = app
        .post_json(
            "/v1/trusted-issuers",
            Some(&tenant.token),
            &json!({
                "issuer": issuer,
                "audience": audience,
                "claims": {"repository": repository, "ref": "refs/heads/main"},
                "scopes": scopes,
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn exchange(app: &TestApp, subject_token: &str, scope: Option<&str>) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", JWT),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let response = app
        .http
        .post(app.url("/oauth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Asserts an RFC 6749 §5.2 `invalid_grant` with no token, and returns its reason.
async fn refused(app: &TestApp, subject_token: &str) -> String {
    let (status, body) = exchange(app, subject_token, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    body["error_description"].as_str().unwrap().to_owned()
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn workload_tokens_are_exchanged_for_exactly_one_tenant_and_every_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestKey::new("first");
    let mut issuer = Issuer::start(dir.path(), &[&first], 300).await;
    let app = relay_trusting_loopback().await;
    let acme = app.tenant("acme").await;
    let beta = app.tenant("beta").await;
    let acme_repo = app.repository(&acme, "acme/app").await;
    let beta_repo = app.repository(&beta, "beta/app").await;
    let acme_trusted = trust(
        &app,
        &acme,
        &issuer.url,
        "urn:hookrelay:acme",
        "acme/deploy-bot",
        &["events:read", "repos:read"],
    )
    .await;
    trust(
        &app,
        &beta,
        &issuer.url,
        "urn:hookrelay:beta",
        "acme/intruder",
        &["repos:read"],
    )
    .await;

    // The RFC 8414 metadata lists the grant.
    let metadata = app.metadata().await;
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(EXCHANGE))
    );

    // The provider's token for acme's audience: acme's token, with its scopes,
    // a subject naming the issuer and the workload, and no longer a life.
    let workload = issuer.token("deploy-bot", "urn:hookrelay:acme").await;
    let (status, body) = exchange(&app, &workload, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "repos:read events:read");
    assert!(body["expires_in"].as_u64().unwrap() <= 300);
    let access = body["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&access);
    assert_eq!(claims["sub"], format!("{}#deploy-bot", issuer.url));
    assert_eq!(claims["tenant_id"], acme.tenant_id);
    assert_eq!(
        app.get(&format!("/v1/repositories/{}", acme_repo.id), &access)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/v1/repositories/{}", beta_repo.id), &access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // A narrower scope may be asked for; a wider one may not.
    let (status, body) = exchange(&app, &workload, Some("events:read")).await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (StatusCode::OK, Some("events:read"))
    );
    let (status, body) = exchange(&app, &workload, Some("repos:write")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    // Another tenant's trusted issuer: its token is that tenant's, never acme's.
    let theirs = issuer.token("intruder", "urn:hookrelay:beta").await;
    let (status, body) = exchange(&app, &theirs, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let theirs = body["access_token"].as_str().unwrap();
    assert_eq!(claims_of(theirs)["tenant_id"], beta.tenant_id);
    assert_eq!(
        app.get(&format!("/v1/repositories/{}", acme_repo.id), theirs)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Every bad token: invalid_grant, and nothing issued.
    let now = now();
    let valid = |overrides: Value| {
        let mut claims = json!({
            "iss": issuer.url, "aud": "urn:hookrelay:acme", "sub": "deploy-bot",
            "repository": "acme/deploy-bot", "ref": "refs/heads/main",
            "iat": now, "exp": now + 120,
        });
        for (name, value) in overrides.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    // The test's own signature is accepted: the refusals below are each for one reason.
    let (status, _) = exchange(&app, &first.sign(&valid(json!({}))), None).await;
    assert_eq!(status, StatusCode::OK);
    let issued_before = app.metrics().await;
    let wrong_issuer = first.sign(&valid(json!({"iss": format!("{}/other", issuer.url)})));
    assert!(
        refused(&app, &wrong_issuer)
            .await
            .contains("no trusted issuer")
    );
    let wrong_audience = issuer.token("deploy-bot", "urn:hookrelay:nobody").await;
    assert!(
        refused(&app, &wrong_audience)
            .await
            .contains("no trusted issuer")
    );
    let other_claims = issuer.token("intruder", "urn:hookrelay:acme").await;
    assert!(
        refused(&app, &other_claims)
            .await
            .contains("no trusted issuer")
    );
    let expired = first.sign(&valid(json!({"iat": now - 600, "exp": now - 120})));
    assert!(refused(&app, &expired).await.contains("expired"));
    let not_yet = first.sign(&valid(json!({"nbf": now + 600})));
    assert!(refused(&app, &not_yet).await.contains("not valid yet"));
    // Another key under the issuer's key id.
    let forged = TestKey::new("first").sign(&valid(json!({})));
    assert!(refused(&app, &forged).await.contains("signature"));
    let unsigned = {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "first"})),
            b64(&valid(json!({})))
        )
    };
    refused(&app, &unsigned).await;
    let shared_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &valid(json!({})),
        &EncodingKey::from_secret(b"anyone who reads the JWKS"),
    )
    .unwrap();
    refused(&app, &shared_secret).await;
    refused(&app, "not a token").await;
    assert_eq!(
        app.metrics()
            .await
            .lines()
            .find(|l| l.starts_with("hookrelay_tokens_issued_total")),
        issued_before
            .lines()
            .find(|l| l.starts_with("hookrelay_tokens_issued_total")),
        "a refused exchange issues nothing"
    );

    // The access token lives no longer than the subject token.
    let short = first.sign(&valid(json!({"exp": now + 40})));
    let (status, body) = exchange(&app, &short, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["expires_in"].as_u64().unwrap() <= 40, "{body}");
    assert!(
        claims_of(body["access_token"].as_str().unwrap())["exp"]
            .as_u64()
            .unwrap()
            <= now + 40
    );

    // Two of acme's trusted issuers accept the token: never a guess.
    let second = trust(
        &app,
        &acme,
        &issuer.url,
        "urn:hookrelay:acme",
        "acme/*",
        &["events:read"],
    )
    .await;
    assert!(refused(&app, &workload).await.contains("more than one"));
    let deleted = app
        .delete(&format!("/v1/trusted-issuers/{second}"), &acme.token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // The provider rotates to a new key: its new tokens verify once the relay
    // refetches the key set, which an unknown key id triggers.
    let rotated = TestKey::new("rotated");
    issuer.run(&[&rotated, &first], 300).await;
    let after_rotation = issuer.token("deploy-bot", "urn:hookrelay:acme").await;
    assert_eq!(
        jsonwebtoken::decode_header(&after_rotation)
            .unwrap()
            .kid
            .as_deref(),
        Some("rotated")
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = exchange(&app, &after_rotation, None).await;
        if status == StatusCode::OK {
            break;
        }
        // At most one refetch per issuer every few seconds: until then, unknown.
        assert!(
            Instant::now() < deadline,
            "the rotated key was not picked up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Deleting the trusted issuer closes the open streams of the tokens
    // exchanged under it, long before those tokens expire.
    let (_, body) = exchange(&app, &after_rotation, None).await;
    let streaming = body["access_token"].as_str().unwrap().to_owned();
    let mut stream = app.stream(&streaming, "ci", &[], None).await.unwrap();
    let deleted = app
        .delete(&format!("/v1/trusted-issuers/{acme_trusted}"), &acme.token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream is closed within seconds");
    assert_eq!(ended.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(
        refused(&app, &after_rotation)
            .await
            .contains("no trusted issuer")
    );
    drop(dir);
}

#[tokio::test]
async fn issuers_on_private_addresses_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::new("k");
    let issuer = Issuer::start(dir.path(), &[&key], 300).await;

    // The default: https only.
    let strict = spawn_app_with(|_| {}).await;
    let tenant = strict.tenant("acme").await;
    let response = strict
        .post_json(
            "/v1/trusted-issuers",
            Some(&tenant.token),
            &json!({"issuer": issuer.url, "audience": "urn:hookrelay:acme",
                    "claims": {"repository": "acme/deploy-bot"}, "scopes": ["events:read"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Plain http allowed, loopback not: the exchange refuses to fetch the keys.
    let no_loopback = spawn_app_with(|config| config.outbound.allow_http = true).await;
    let tenant = no_loopback.tenant("acme").await;
    trust(
        &no_loopback,
        &tenant,
        &issuer.url,
        "urn:hookrelay:acme",
        "acme/deploy-bot",
        &["events:read"],
    )
    .await;
    let workload = issuer.token("deploy-bot", "urn:hookrelay:acme").await;
    let reason = refused(&no_loopback, &workload).await;
    assert!(reason.contains("may not connect to 127.0.0.1"), "{reason}");
    // A name that resolves to loopback is refused after resolution.
    let by_name = issuer.url.replace("127.0.0.1", "localhost");
    let response = no_loopback
        .post_json(
            "/v1/trusted-issuers",
            Some(&tenant.token),
            &json!({"issuer": by_name, "audience": "urn:hookrelay:named",
                    "claims": {"repository": "acme/deploy-bot"}, "scopes": ["events:read"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let named = key.sign(
        &json!({"iss": by_name, "aud": "urn:hookrelay:named", "sub": "x",
        "repository": "acme/deploy-bot", "iat": now(), "exp": now() + 60}),
    );
    let reason = refused(&no_loopback, &named).await;
    assert!(reason.contains("resolves to no address"), "{reason}");
    drop(dir);
}

/// An issuer that cannot be reached gets a short 503 (the DNS, connect or TLS
/// detail goes to the log), counted against the caller's failure limit like a
/// refused token: anyone can name an issuer that never answers.
#[tokio::test]
async fn an_unreachable_issuer_gets_a_short_503_that_counts_toward_the_failure_limit() {
    let app = spawn_app_with(|config| {
        allow_loopback_issuers(config);
        config.limits.token_failure_rate = hookrelay::server::Rate::parse("3/min").unwrap();
    })
    .await;
    let tenant = app.tenant("acme").await;
    // Nothing listens there.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    trust(
        &app,
        &tenant,
        &issuer,
        "urn:hookrelay:acme",
        "acme/deploy-bot",
        &["events:read"],
    )
    .await;
    let token = TestKey::new("k").sign(&json!({
        "iss": issuer, "aud": "urn:hookrelay:acme", "sub": "x", "repository": "acme/deploy-bot",
        "ref": "refs/heads/main", "iat": now(), "exp": now() + 60,
    }));
    for attempt in 0..3 {
        let (status, body) = exchange(&app, &token, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{attempt}: {body}");
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        let reason = body["error_description"].as_str().unwrap().to_lowercase();
        for detail in ["127.0.0.1", "connect", "refused", "dns", "tls", "error"] {
            assert!(!reason.contains(detail), "{detail} in {reason}");
        }
    }
    let (status, body) = exchange(&app, &token, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}

/// A minimal OpenID issuer on loopback: discovery and `key`'s public JWK.
async fn serve_issuer(key: &TestKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut public = key.private_jwk.clone();
    public.as_object_mut().unwrap().remove("d");
    let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
    let issuer = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(json!({"keys": [public]})) }),
        );
    tokio::spawn(async move { axum::serve(listener, issuer).await });
    url
}

/// Squatters cannot push a tenant's trusted issuer out of reach: after 1,000
/// other trusted issuers on the same issuer and audience, the tenant's own
/// still accepts its workload's token.
#[tokio::test]
async fn a_trusted_issuer_accepts_after_a_thousand_squatters() {
    let app = relay_trusting_loopback().await;
    let key = TestKey::new("k");
    let issuer = serve_issuer(&key).await;
    let squatter = app.tenant("squatter").await;
    let victim = app.tenant("victim").await;
    // In one statement: the API would take the same path a thousand times.
    sqlx::query(
        "insert into trusted_issuer (trusted_issuer_id, tenant_id, issuer, audience, claims, scopes) \
         select gen_random_uuid(), $1::uuid, $2, 'urn:shared', \
                jsonb_build_object('repository', 'squat/' || g), array['events:read'] \
         from generate_series(1, 1000) g",
    )
    .bind(&squatter.tenant_id)
    .bind(&issuer)
    .execute(&app.pool)
    .await
    .unwrap();
    trust(
        &app,
        &victim,
        &issuer,
        "urn:shared",
        "victim/app",
        &["events:read"],
    )
    .await;
    let token = key.sign(&json!({
        "iss": issuer, "aud": "urn:shared", "sub": "ci", "repository": "victim/app",
        "ref": "refs/heads/main", "iat": now(), "exp": now() + 60,
    }));
    let (status, body) = exchange(&app, &token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["tenant_id"], victim.tenant_id.as_str(), "{claims}");
}

/// GitHub's side of `--github-actions-oidc`, which cannot run here: the job's
/// OIDC endpoint (ACTIONS_ID_TOKEN_REQUEST_URL), which answers the request
/// token with a JWT for the audience asked for. The JWT is the real provider's.
async fn actions_oidc_endpoint(
    request_token: &'static str,
    id_token: String,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use axum::extract::Query;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    let (asked, audiences) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/_apis/token",
        axum::routing::get(
            move |headers: HeaderMap,
                  Query(query): Query<std::collections::HashMap<String, String>>| {
                let (asked, id_token) = (asked.clone(), id_token.clone());
                async move {
                    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(&format!("Bearer {request_token}"));
                    if !authorized || query.get("api-version").map(String::as_str) != Some("2.0") {
                        return (StatusCode::UNAUTHORIZED, axum::Json(json!({}))).into_response();
                    }
                    let _ = asked.send(query.get("audience").cloned().unwrap_or_default());
                    axum::Json(json!({"count": 1, "value": id_token})).into_response()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_apis/token?api-version=2.0",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, audiences)
}

fn hookrelay_relay() -> Command {
    let mut command = hookrelay();
    command.arg("relay");
    command
}

/// `hookrelay_tokens_issued_total` of the relay.
async fn tokens_issued(app: &TestApp) -> u64 {
    let metrics = app.metrics().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("hookrelay_tokens_issued_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the tokens_issued counter")
}

/// A relay whose tenant trusts the provider's `deploy-bot` for the audience
/// `urn:hookrelay:acme`, with a repository and a target that checks signatures.
struct Trusting {
    dir: tempfile::TempDir,
    issuer: Issuer,
    app: TestApp,
    tenant: TestTenant,
    repository: TestRepository,
    trusted: String,
    target: TestTarget,
}

impl Trusting {
    /// `subject_ttl`: the provider's token lifetime, in seconds.
    async fn start(subject_ttl: u64, configure: impl FnOnce(&mut Config)) -> Trusting {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::start(dir.path(), &[&TestKey::new("k")], subject_ttl).await;
        let app = spawn_app_with(|config| {
            allow_loopback_issuers(config);
            configure(config);
        })
        .await;
        let tenant = app.tenant("acme").await;
        let repository = app.repository(&tenant, "acme/app").await;
        let trusted = trust(
            &app,
            &tenant,
            &issuer.url,
            "urn:hookrelay:acme",
            "acme/deploy-bot",
            &["events:read"],
        )
        .await;
        let target = TestTarget::start(vec![repository.secret.clone()]).await;
        Trusting {
            dir,
            issuer,
            app,
            tenant,
            repository,
            trusted,
            target,
        }
    }

    /// The provider's token for `client`, for acme's audience.
    async fn workload_token(&self, client: &str) -> String {
        self.issuer.token(client, "urn:hookrelay:acme").await
    }

    /// `command` (an agent) with no client credentials: `credentials` says how
    /// it gets its token.
    fn agent(&self, command: Command, consumer: &str, credentials: &[&str]) -> AgentProcess {
        let token_url = self.app.url("/oauth/token");
        let mut extra = vec![
            "--token-url",
            &token_url,
            "--repository",
            &self.repository.id,
        ];
        extra.extend_from_slice(credentials);
        AgentProcess::spawn_with(
            command,
            &self.app.grpc_address,
            consumer,
            &self.target.url,
            &extra,
            self.dir.path(),
        )
    }

    async fn push(&self, delivery: &str) {
        self.app.push(&self.repository, delivery).await;
    }
}

#[tokio::test]
async fn an_agent_with_no_stored_secret_relays_rereads_its_token_file_and_stops_when_distrusted() {
    // Short-lived workload tokens: the agent exchanges again every few seconds.
    let setup = Trusting::start(8, |_| {}).await;
    let (app, target) = (&setup.app, &setup.target);
    let token_file = setup.dir.path().join("token");
    let file = ["--subject-token-file", token_file.to_str().unwrap()];

    // No client id, no secret: the projected-token file is all it has.
    std::fs::write(&token_file, setup.workload_token("deploy-bot").await).unwrap();
    let mut first = setup.agent(hookrelay_relay(), "ci", &file);
    setup.push("d-1").await;
    target.wait_for(1, WAIT).await;
    // The kubelet rotates the file: the agent reads the new token at its next
    // exchange. A token the trusted issuer does not accept ends it.
    std::fs::write(&token_file, setup.workload_token("intruder").await).unwrap();
    assert!(!first.wait(WAIT).await.success());
    let output = first.output();
    assert!(output.contains("refused the subject token"), "{output}");

    // A valid token again: it relays; then the tenant deletes the trusted issuer.
    std::fs::write(&token_file, setup.workload_token("deploy-bot").await).unwrap();
    let mut second = setup.agent(hookrelay_relay(), "ci", &file);
    setup.push("d-2").await;
    assert_eq!(target.wait_for(2, WAIT).await.len(), 2);
    let (status, body) = exchange(app, &std::fs::read_to_string(&token_file).unwrap(), None).await;
    assert_eq!(status, StatusCode::OK);
    let exchanged = body["access_token"].as_str().unwrap().to_owned();
    let deleted = app
        .delete(
            &format!("/v1/trusted-issuers/{}", setup.trusted),
            &setup.tenant.token,
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    // Its tokens stop working at once, its stream closes, and the agent,
    // refused a new token, exits saying why.
    let response = app
        .get(
            &format!("/v1/repositories/{}", setup.repository.id),
            &exchanged,
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(!second.wait(WAIT).await.success());
    let output = second.output();
    assert!(output.contains("refused the subject token"), "{output}");
}

#[tokio::test]
async fn an_agent_in_github_actions_asks_for_its_audience_and_relays() {
    let setup = Trusting::start(300, |_| {}).await;
    let id_token = setup.workload_token("deploy-bot").await;
    let (request_url, mut audiences) = actions_oidc_endpoint("request-token", id_token).await;
    let actions = [
        "--github-actions-oidc",
        "--oidc-audience",
        "urn:hookrelay:acme",
    ];

    let mut command = hookrelay_relay();
    command
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &request_url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "request-token");
    let _agent = setup.agent(command, "actions", &actions);
    setup.push("d-1").await;
    setup.target.wait_for(1, WAIT).await;
    assert_eq!(
        audiences.recv().await.as_deref(),
        Some("urn:hookrelay:acme")
    );

    // Outside a job (no request URL), the agent says what is missing.
    let mut outside = setup.agent(hookrelay_relay(), "outside", &actions);
    assert!(!outside.wait(WAIT).await.success());
    let output = outside.output();
    assert!(
        output.contains("ACTIONS_ID_TOKEN_REQUEST_URL is not set"),
        "{output}"
    );
}

#[tokio::test]
async fn the_agent_exchanges_again_before_its_access_token_expires() {
    // Access tokens live 10 s: the agent renews halfway, with no event or ack
    // to prompt it, while the stream still runs on the first token.
    let setup = Trusting::start(300, |config| config.token_ttl = Duration::from_secs(10)).await;
    let token_file = setup.dir.path().join("token");
    std::fs::write(&token_file, setup.workload_token("deploy-bot").await).unwrap();
    let before = tokens_issued(&setup.app).await;
    let _agent = setup.agent(
        hookrelay_relay(),
        "ci",
        &["--subject-token-file", token_file.to_str().unwrap()],
    );
    let deadline = Instant::now() + WAIT;
    while tokens_issued(&setup.app).await == before {
        assert!(
            Instant::now() < deadline,
            "the agent did not exchange its token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first token expires at most 10 s from now; the second comes before.
    let first_expires = Instant::now() + Duration::from_secs(10);
    while tokens_issued(&setup.app).await < before + 2 {
        assert!(
            Instant::now() < first_expires - Duration::from_secs(1),
            "no new token before the first expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real binary: each exchange leaves one audit line naming the tenant, the
/// trusted issuer, the issuer and the workload's subject, and neither the
/// subject token nor the access token reaches the log.
#[tokio::test]
async fn each_exchange_is_logged_with_issuer_subject_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(dir.path(), &[&TestKey::new("k")], 300).await;
    let server = crate::helpers::ServerProcess::start(
        &[
            ("DATABASE_URL", crate::helpers::fresh_database().await),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.into(),
            ),
            ("HOOKRELAY_ISSUER_ALLOW_HTTP", "true".into()),
            ("HOOKRELAY_ISSUER_ALLOW_NETWORKS", "127.0.0.0/8".into()),
        ],
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = crate::helpers::tenant_at(&http, &server.address, "acme").await;
    let created: Value = http
        .post(format!("{}/v1/trusted-issuers", server.address))
        .bearer_auth(&tenant.token)
        .json(
            &json!({"issuer": issuer.url, "audience": "urn:hookrelay:acme",
                      "claims": {"repository": "acme/deploy-bot"}, "scopes": ["events:read"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subject_token = issuer.token("deploy-bot", "urn:hookrelay:acme").await;
    let answer: Value = http
        .post(format!("{}/oauth/token", server.address))
        .form(&[
            ("grant_type", EXCHANGE),
            ("subject_token", &subject_token),
            ("subject_token_type", JWT),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = answer["access_token"].as_str().expect("an access token");
    server.signal("TERM");
    let mut server = server;
    server.wait(WAIT).await;

    let log = server.log();
    for secret in [subject_token.as_str(), access_token] {
        assert!(!log.contains(secret), "a token reached the log");
    }
    let audit: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "token exchanged for a workload")
        .collect();
    assert_eq!(audit.len(), 1, "{log}");
    let line = &audit[0];
    assert_eq!(line["tenant_id"], tenant.tenant_id, "{line}");
    assert_eq!(line["trusted_issuer_id"], created["id"], "{line}");
    assert_eq!(line["issuer"], issuer.url, "{line}");
    assert_eq!(line["subject"], "deploy-bot", "{line}");
}
