//! `/v1/tenants`: signup, the signup token, and bad signups.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn signup_returns_credentials_and_stores_only_a_hash_of_the_secret() {
    let app = spawn_app().await;

    let response = app
        .post_json("/v1/tenants", None, &json!({"name": "Acme CI"}))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let secret = body["client_secret"].as_str().unwrap();
    let client_id = body["client_id"].as_str().unwrap();
    assert!(body["tenant_id"].as_str().unwrap().len() == 36);
    let (hash, scopes): (Vec<u8>, Vec<String>) =
        sqlx::query_as("select secret_hash, scopes from client where client_id = $1")
            .bind(client_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(hash, Sha256::digest(secret.as_bytes()).to_vec());
    assert_eq!(
        scopes,
        [
            "repos:read",
            "repos:write",
            "clients:write",
            "events:read",
            "events:write"
        ]
    );
    let dump: String = sqlx::query_scalar("select string_agg(c::text, '') from client c")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!dump.contains(secret), "the plain secret is stored");
}

#[tokio::test]
async fn signup_token_is_required_when_configured() {
    let app =
        spawn_app_with(|c| c.signup_token = Some("s3cret-signup-token".to_owned().into())).await;
    let body = json!({"name": "acme"});

    let missing = app.post_json("/v1/tenants", None, &body).await;
    let wrong = app
        .post_json("/v1/tenants", Some("not-the-signup-token"), &body)
        .await;
    assert_error(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let count: i64 = sqlx::query_scalar("select count(*) from tenant")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);

    let right = app
        .post_json("/v1/tenants", Some("s3cret-signup-token"), &body)
        .await;
    assert_eq!(right.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bad_signup_requests_get_a_clear_error_and_change_nothing() {
    let app = spawn_app().await;
    let before = app.database_digest().await;
    let url = app.url("/v1/tenants");
    let cases = [
        (
            app.http
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"name\":"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            app.http
                .post(&url)
                .header("content-type", "text/plain")
                .body("{\"name\":\"x\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            app.http.post(&url).body("{\"name\":\"x\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            app.http.post(&url).json(&json!({"name": ""})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.http.post(&url).json(&json!({"name": 7})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.http
                .post(&url)
                .json(&json!({"name": "x", "admin": true})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.http.post(&url).json(&json!({"name": "x".repeat(101)})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            app.http
                .post(&url)
                .json(&json!({"name": "x".repeat(100_000)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (request, status, code) in cases {
        assert_error(request.send().await.unwrap(), status, code).await;
    }
    assert_eq!(app.database_digest().await, before);
}
