//! Secrets at rest: sealed webhook secrets, signing keys and event headers.

use hookrelay::secrets::SecretKey;
use jsonwebtoken::jwk::JwkSet;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use reqwest::StatusCode;

use crate::helpers::{TEST_SECRET_KEY, spawn_app, spawn_app_on};

fn test_key() -> SecretKey {
    SecretKey::from_base64(&TEST_SECRET_KEY.to_owned().into()).unwrap()
}

#[tokio::test]
async fn webhook_secrets_are_encrypted_and_bound_to_their_repository() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let one = app.repository(&tenant, "acme/one").await;
    let two = app.repository(&tenant, "acme/two").await;

    let sealed: Vec<u8> =
        sqlx::query_scalar("select webhook_secret from repository where repository_id = $1::uuid")
            .bind(&one.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        !sealed
            .windows(one.secret.len())
            .any(|w| w == one.secret.as_bytes()),
        "stored in the clear"
    );
    let key = test_key();
    let opened = key
        .decrypt(&sealed, &format!("repository:{}:webhook_secret", one.id))
        .unwrap();
    assert_eq!(opened, one.secret.as_bytes());
    // Moved to another row, the ciphertext no longer opens.
    assert!(
        key.decrypt(&sealed, &format!("repository:{}:webhook_secret", two.id))
            .is_err()
    );
    // Nor with another key.
    assert!(
        SecretKey::generate()
            .decrypt(&sealed, &format!("repository:{}:webhook_secret", one.id))
            .is_err()
    );
}

#[tokio::test]
async fn the_generated_signing_key_is_stored_encrypted() {
    let app = spawn_app().await;
    let (kid, sealed): (String, Vec<u8>) =
        sqlx::query_as("select kid, private_key from signing_key")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        p256::SecretKey::from_pkcs8_der(&sealed).is_err(),
        "the private key is stored in the clear"
    );
    let der = test_key()
        .decrypt(&sealed, &format!("signing_key:{kid}"))
        .unwrap();
    assert!(p256::SecretKey::from_pkcs8_der(&der).is_ok());
}

#[tokio::test]
async fn a_replica_with_another_key_encryption_key_refuses_to_start() {
    let app = spawn_app().await;
    let other = hookrelay::config::SecretKeySource::Value(
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
            .to_owned()
            .into(),
    );
    let error = spawn_app_on(&app.database_url, |c| c.secret_key = other)
        .await
        .err()
        .expect("the start fails");
    assert!(
        format!("{error:#}").contains("HOOKRELAY_SECRET_KEY"),
        "{error:#}"
    );
}

#[tokio::test]
async fn replicas_on_one_database_share_the_signing_key() {
    // Replicas sit behind one public URL, which is the token issuer.
    let public_url = || Some(url::Url::parse("https://relay.example.com").unwrap());
    let a = crate::helpers::spawn_app_with(|c| c.public_url = public_url()).await;
    let b = spawn_app_on(&a.database_url, |c| c.public_url = public_url())
        .await
        .unwrap();
    let tenant = a.tenant("acme").await;

    // Issued by replica A, accepted by replica B: one key, listed by both.
    assert_eq!(
        b.get("/v1/repositories", &tenant.token).await.status(),
        StatusCode::OK
    );
    let jwks_a: JwkSet = a.jwks().await;
    let jwks_b: JwkSet = b.jwks().await;
    assert_eq!(jwks_a.keys.len(), 1);
    assert_eq!(jwks_a.keys[0].common.key_id, jwks_b.keys[0].common.key_id);
}

#[tokio::test]
async fn a_pem_signing_key_file_is_used_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let ec = dir.path().join("ec.pem");
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    std::fs::write(
        &ec,
        secret.to_pkcs8_pem(Default::default()).unwrap().as_bytes(),
    )
    .unwrap();
    let rsa = dir.path().join("rsa.pem");
    let generated = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa)
        .status()
        .expect("openssl runs");
    assert!(generated.success());

    for (path, algorithm) in [(ec, "ES256"), (rsa, "RS256")] {
        let app = crate::helpers::spawn_app_with(|c| c.jwt_key_file = vec![path.clone()]).await;
        let tenant = app.tenant("acme").await;
        let header = jsonwebtoken::decode_header(&tenant.token).unwrap();
        assert_eq!(format!("{:?}", header.alg), algorithm);
        let jwks: JwkSet = app.jwks().await;
        assert_eq!(jwks.keys.len(), 1);
        assert_eq!(jwks.keys[0].common.key_id, header.kid);
        assert_eq!(
            app.get("/v1/repositories", &tenant.token).await.status(),
            StatusCode::OK
        );
        let stored: i64 = sqlx::query_scalar("select count(*) from signing_key")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(stored, 0, "no key is generated when a key file is given");
    }

    // Rotation with files: the new key second (published, verifying), then first.
    let app = crate::helpers::spawn_app_with(|c| {
        c.jwt_key_file = vec![dir.path().join("ec.pem"), dir.path().join("rsa.pem")]
    })
    .await;
    let tenant = app.tenant("acme").await;
    let jwks: JwkSet = app.jwks().await;
    assert_eq!(jwks.keys.len(), 2, "both files are published");
    let header = jsonwebtoken::decode_header(&tenant.token).unwrap();
    assert_eq!(format!("{:?}", header.alg), "ES256", "the first file signs");
    // A token the second key signed (by the replica that already signs with it) verifies.
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            tenant.token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let rsa_kid = jwks
        .keys
        .iter()
        .find_map(|k| {
            k.common
                .key_id
                .clone()
                .filter(|kid| Some(kid) != header.kid.as_ref())
        })
        .unwrap();
    let mut rsa_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    rsa_header.kid = Some(rsa_kid);
    rsa_header.typ = Some("at+jwt".into());
    let by_second = jsonwebtoken::encode(
        &rsa_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(dir.path().join("rsa.pem")).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        app.get("/v1/repositories", &by_second).await.status(),
        StatusCode::OK
    );
}

/// GitLab's secret token arrives in a header of every delivery: the stored
/// event holds it sealed, and only the agent's stream opens it.
#[tokio::test]
async fn a_gitlab_token_is_sealed_in_the_stored_event_and_opened_only_for_the_agent() {
    use hookrelay_testkit::{Sender, fixture_file};
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let created = app
        .register(&tenant, "gitlab", "acme/app", serde_json::json!({}))
        .await;
    let (id, secret) = (
        created["id"].as_str().unwrap(),
        created["webhook_secret"].as_str().unwrap(),
    );
    let body = fixture_file("gitlab/push.json");
    let headers = Sender::GitlabToken.headers(secret, "Push Hook", "g-1", &body, 0);
    let response = app.post_webhook(id, &headers, &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let stored: String = sqlx::query_scalar("select headers::text from event")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!stored.contains(secret), "the token is stored in the clear");
    assert!(stored.contains("x-gitlab-token"));

    let mut stream = app.stream(&tenant.token, "agent", &[], None).await.unwrap();
    let event = crate::helpers::next_event(&mut stream, std::time::Duration::from_secs(10)).await;
    let token = event
        .headers
        .iter()
        .find(|h| h.name == "x-gitlab-token")
        .map(|h| h.value.as_str());
    assert_eq!(token, Some(secret), "the agent gets the token to replay");
    // The event API shows it sealed.
    let shown = app
        .get(&format!("/v1/events/{}", event.id), &tenant.token)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !shown.contains(secret) && shown.contains("[sealed]"),
        "{shown}"
    );
}
