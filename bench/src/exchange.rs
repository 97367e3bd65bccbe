//! Token exchange (RFC 8693) against client credentials, in one run.
//!
//! An OpenID issuer served by this process (discovery and a JWKS with one
//! ES256 key) is trusted by the bench tenant. The scenario reports the first
//! exchange (discovery and key fetch included), then tokens per second and the
//! relay's CPU per token for exchanges and for client-credentials grants at
//! the same concurrency, and their ratio: what verifying a workload's JWT and
//! matching its trusted issuer costs over checking a client secret.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;

use super::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const AUDIENCE: &str = "hookrelay-bench";

/// Serves discovery and the JWKS for `public_jwk` on loopback; returns the issuer URL.
async fn serve_issuer(public_jwk: Value) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(json!({"keys": [public_jwk]})) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(issuer)
}

/// Grants per second at `concurrency` for `seconds`, and the relay's CPU
/// microseconds per grant.
async fn grants(
    bench: &Bench,
    concurrency: usize,
    seconds: f64,
    form: Arc<Vec<(String, String)>>,
    basic: Option<(String, String)>,
) -> anyhow::Result<(f64, f64)> {
    let client = reqwest::Client::new();
    let url = format!("{}/oauth/token", bench.http);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let cpu = cpu_seconds(bench.server.id());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, form, basic) =
                (client.clone(), url.clone(), form.clone(), basic.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                // At least one each, so a zero duration times one grant.
                loop {
                    let mut request = client.post(&url).form(form.as_slice());
                    if let Some((id, secret)) = &basic {
                        request = request.basic_auth(id, Some(secret));
                    }
                    let response = request.send().await?;
                    anyhow::ensure!(
                        response.status().is_success(),
                        "the token endpoint answered {}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                    response.bytes().await?;
                    ok += 1;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Ok(ok)
            })
        })
        .collect();
    let mut total = 0u64;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(bench.server.id()) - cpu;
    Ok((total as f64 / elapsed, cpu * 1e6 / total.max(1) as f64))
}

impl Bench {
    pub(crate) async fn exchange(&mut self) -> anyhow::Result<()> {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let mut public_jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string())?;
        public_jwk["kid"] = "bench".into();
        public_jwk["alg"] = "ES256".into();
        let pem = secret.to_pkcs8_pem(p256::pkcs8::LineEnding::LF)?;
        let key = EncodingKey::from_ec_pem(pem.as_bytes())?;
        let issuer = serve_issuer(public_jwk).await?;

        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/v1/trusted-issuers", self.http))
            .bearer_auth(&self.token)
            .json(&json!({
                "issuer": issuer, "audience": AUDIENCE,
                "claims": {"repository": "acme/deploy-bot"}, "scopes": ["events:read"],
            }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().as_u16() == 201,
            "creating the trusted issuer: {} {}",
            response.status(),
            response.text().await?
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("bench".into());
        let subject_token = jsonwebtoken::encode(
            &header,
            &json!({"iss": issuer, "aud": AUDIENCE, "sub": "repo:acme/deploy-bot:ref:refs/heads/main",
                    "repository": "acme/deploy-bot", "iat": now, "exp": now + 3600}),
            &key,
        )?;
        let exchange_form = Arc::new(vec![
            ("grant_type".to_owned(), EXCHANGE.to_owned()),
            ("subject_token".to_owned(), subject_token),
            ("subject_token_type".to_owned(), JWT.to_owned()),
        ]);
        let credentials_form = Arc::new(vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("scope".to_owned(), "events:read".to_owned()),
        ]);

        // The first exchange fetches discovery and the key set.
        let started = Instant::now();
        grants(self, 1, 0.0, exchange_form.clone(), None).await?;
        let first_ms = started.elapsed().as_secs_f64() * 1e3;
        self.row(
            "exchange",
            "first exchange (discovery + JWKS) ms",
            format!("{first_ms:.1}"),
            "(report)",
        );

        let seconds = self.seconds(8.0);
        let basic = Some((self.client_id.clone(), self.client_secret.clone()));
        let mut runs = Vec::new();
        for concurrency in [1, 16] {
            let (exchanges, exchange_cpu) =
                grants(self, concurrency, seconds, exchange_form.clone(), None).await?;
            let (credentials, credentials_cpu) = grants(
                self,
                concurrency,
                seconds,
                credentials_form.clone(),
                basic.clone(),
            )
            .await?;
            self.row(
                "exchange",
                format!("c={concurrency}: exchanges/s (relay µs each)"),
                format!("{exchanges:.0} ({exchange_cpu:.0})"),
                "(report)",
            );
            self.row(
                "exchange",
                format!("c={concurrency}: client credentials/s (µs each)"),
                format!("{credentials:.0} ({credentials_cpu:.0})"),
                "(report)",
            );
            self.row(
                "exchange",
                format!("c={concurrency}: exchange / client credentials"),
                format!("{:.2}", exchanges / credentials),
                "(report)",
            );
            runs.push(json!({
                "concurrency": concurrency,
                "exchanges_per_second": exchanges, "exchange_cpu_us": exchange_cpu,
                "client_credentials_per_second": credentials, "client_credentials_cpu_us": credentials_cpu,
            }));
        }
        self.results.insert(
            "exchange".into(),
            json!({"first_ms": first_ms, "runs": runs}),
        );
        Ok(())
    }
}
