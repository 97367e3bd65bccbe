//! Every way a bearer token can be wrong gets 401 and changes nothing.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TEST_SECRET_KEY, TestApp, assert_error, base64url, spawn_app};
use hookrelay::secrets::SecretKey;

/// The server's own signing key, recovered the way an attacker with the
/// database *and* the key-encryption key could: it lets the test forge tokens
/// that differ from a real one in exactly one claim.
async fn server_key(app: &TestApp) -> (String, EncodingKey) {
    let (kid, sealed): (String, Vec<u8>) =
        sqlx::query_as("select kid, private_key from signing_key")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let key = SecretKey::from_base64(&TEST_SECRET_KEY.to_owned().into()).unwrap();
    let der = key.decrypt(&sealed, &format!("signing_key:{kid}")).unwrap();
    (kid, EncodingKey::from_ec_der(&der))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn forge(kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test]
async fn bad_tokens_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let (kid, key) = server_key(&app).await;
    let good = json!({
        "iss": app.address, "sub": tenant.client_id, "aud": "hookrelay",
        "exp": now() + 600, "iat": now(), "nbf": now(), "jti": "j",
        "scope": "repos:read repos:write clients:write events:read", "tenant_id": tenant.tenant_id,
    });
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        forge(&kid, &key, &claims)
    };
    // The forging works: the unmodified claims are accepted.
    assert_eq!(
        app.get("/v1/repositories", &forge(&kid, &key, &good))
            .await
            .status(),
        StatusCode::OK
    );

    let other_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let other_key = EncodingKey::from_ec_der(other_key.to_pkcs8_der().unwrap().as_bytes());
    let parts: Vec<&str> = tenant.token.split('.').collect();
    let mut tampered_claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .unwrap(),
    )
    .unwrap();
    tampered_claims["tenant_id"] = json!(uuid::Uuid::new_v4());
    let unsigned_header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let mut no_kid = Header::new(Algorithm::ES256);
    no_kid.kid = None;

    let cases: Vec<(&str, String)> = vec![
        ("expired", with("exp", json!(now() - 120))),
        ("not yet valid", with("nbf", json!(now() + 600))),
        ("wrong issuer", with("iss", json!("https://evil.example"))),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("no audience", {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("aud");
            forge(&kid, &key, &c)
        }),
        (
            "unknown subject",
            with("sub", json!("hrc_00000000000000000000000000000000")),
        ),
        (
            "other tenant",
            with("tenant_id", json!(uuid::Uuid::new_v4())),
        ),
        ("garbled", "not.a.jwt".to_owned()),
        ("empty segments", "..".to_owned()),
        (
            "unsigned (alg none)",
            format!("{unsigned_header}.{}.", parts[1]),
        ),
        (
            "alg none with signature",
            format!("{unsigned_header}.{}.{}", parts[1], parts[2]),
        ),
        (
            "tampered",
            format!(
                "{}.{}.{}",
                parts[0],
                base64url(tampered_claims.to_string().as_bytes()),
                parts[2]
            ),
        ),
        ("wrong key, same kid", forge(&kid, &other_key, &good)),
        (
            "no kid",
            jsonwebtoken::encode(&no_kid, &good, &key).unwrap(),
        ),
        ("HS256 with the public key", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.clone());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(kid.as_bytes())).unwrap()
        }),
    ];

    let before = app.database_digest().await;
    for (case, token) in &cases {
        for response in [
            app.get("/v1/repositories", token).await,
            app.post_json(
                "/v1/repositories",
                Some(token),
                &json!({"provider": "github", "name": "a/b"}),
            )
            .await,
            app.post_json(
                "/v1/clients",
                Some(token),
                &json!({"name": "x", "scopes": ["events:read"]}),
            )
            .await,
        ] {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
            assert!(
                response.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{case}"
            );
        }
    }
    // Short, stable reasons, not the JWT library's internals.
    let without_tenant = {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("tenant_id");
        forge(&kid, &key, &c)
    };
    let named: Vec<(&str, &str)> = vec![
        (&cases[0].1, "invalid token: expired"),
        (&cases[1].1, "invalid token: not yet valid"),
        (&cases[2].1, "invalid token: wrong issuer"),
        (&cases[3].1, "invalid token: wrong audience"),
        (&cases[12].1, "invalid token: bad signature"),
        (&without_tenant, "invalid token: malformed"),
        (&cases[7].1, "malformed token"),
    ];
    for (token, reason) in named {
        let error = assert_error(
            app.get("/v1/repositories", token).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;
        assert_eq!(error["message"], reason);
    }
    let missing = app
        .http
        .get(app.url("/v1/repositories"))
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let basic = app
        .http
        .get(app.url("/v1/repositories"))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_error(basic, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(app.database_digest().await, before);
}

#[tokio::test]
async fn a_token_expires_after_its_lifetime() {
    let app =
        crate::helpers::spawn_app_with(|c| c.token_ttl = std::time::Duration::from_secs(1)).await;
    let tenant = app.tenant("acme").await;
    assert_eq!(
        app.get("/v1/repositories", &tenant.token).await.status(),
        StatusCode::OK
    );
    // One second of lifetime plus the five seconds of clock-skew leeway.
    tokio::time::sleep(std::time::Duration::from_millis(7_100)).await;
    assert_error(
        app.get("/v1/repositories", &tenant.token).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
}

/// A key rotated on another replica: a token signed with it carries a key id
/// this replica has not loaded. Both transports reload the keys once and accept
/// it (gRPC used to refuse it).
#[tokio::test]
async fn a_key_rotated_on_another_replica_is_accepted_over_http_and_grpc() {
    // Replicas share one public URL: the tokens' issuer.
    let public_url = || Some(url::Url::parse("https://relay.example.com").unwrap());
    let first = crate::helpers::spawn_app_with(|c| c.public_url = public_url()).await;
    let tenant = first.tenant("acme").await;
    // Rotate: the same key material under a new key id, newer than the old one.
    let (kid, sealed): (String, Vec<u8>) =
        sqlx::query_as("select kid, private_key from signing_key")
            .fetch_one(&first.pool)
            .await
            .unwrap();
    let key = SecretKey::from_base64(&TEST_SECRET_KEY.to_owned().into()).unwrap();
    let der = key.decrypt(&sealed, &format!("signing_key:{kid}")).unwrap();
    sqlx::query(
        "insert into signing_key (kid, algorithm, private_key, public_jwk, created_at) \
         select 'rotated', algorithm, $1, public_jwk, created_at + interval '1 second' from signing_key where kid = $2",
    )
    .bind(key.encrypt(&der, "signing_key:rotated"))
    .bind(&kid)
    .execute(&first.pool)
    .await
    .unwrap();
    // Another replica starts, loads both keys and signs with the newer one.
    let second = crate::helpers::spawn_app_on(&first.database_url, |c| c.public_url = public_url())
        .await
        .unwrap();
    let token = second
        .token(&tenant.client_id, &tenant.client_secret, None)
        .await;
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], "rotated");

    let mut client = first.grpc().await;
    let listed = client
        .list_events(crate::helpers::authed(
            hookrelay::grpc::proto::ListEventsRequest {
                repository_id: first.repository(&tenant, "acme/app").await.id,
                ..Default::default()
            },
            &token,
        ))
        .await;
    assert!(listed.is_ok(), "gRPC: {listed:?}");
    assert_eq!(
        first.get("/v1/repositories", &token).await.status(),
        StatusCode::OK
    );
}
