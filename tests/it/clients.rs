//! `/v1/clients`: extra clients get only their scopes, deleted ones stop working.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn an_extra_client_gets_only_its_scopes() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;

    let response = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &json!({"name": "relay agent", "scopes": ["events:read", "repos:read"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["scopes"], json!(["repos:read", "events:read"]));
    let token = app
        .token(
            created["client_id"].as_str().unwrap(),
            created["client_secret"].as_str().unwrap(),
            None,
        )
        .await;

    assert_eq!(
        app.get("/v1/repositories", &token).await.status(),
        StatusCode::OK
    );
    let write = app
        .post_json(
            "/v1/repositories",
            Some(&token),
            &json!({"provider": "github", "name": "a/b"}),
        )
        .await;
    assert_error(write, StatusCode::FORBIDDEN, "insufficient_scope").await;
    assert_error(
        app.get("/v1/clients", &token).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;

    let listed: Value = app
        .get("/v1/clients", &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["next_after"].is_null(), "{listed}");
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "relay agent"]);
    assert!(listed[0].get("client_secret").is_none());
}

#[tokio::test]
async fn a_deleted_client_gets_no_token_and_its_tokens_stop_working() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let created: Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &json!({"name": "ci", "scopes": ["repos:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let (id, secret) = (
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let token = app.token(id, secret, None).await;
    assert_eq!(
        app.get("/v1/repositories", &token).await.status(),
        StatusCode::OK
    );

    assert_eq!(
        app.delete(&format!("/v1/clients/{id}"), &tenant.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    assert_error(
        app.get("/v1/repositories", &token).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert_eq!(
        app.request_token(id, secret, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_error(
        app.delete(&format!("/v1/clients/{id}"), &tenant.token)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // The tenant's other client is untouched.
    assert_eq!(
        app.get("/v1/repositories", &tenant.token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_client_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let narrow: Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &json!({"name": "n", "scopes": ["clients:write"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let narrow_token = app
        .token(
            narrow["client_id"].as_str().unwrap(),
            narrow["client_secret"].as_str().unwrap(),
            None,
        )
        .await;
    let before = app.database_digest().await;

    let cases = [
        (
            &tenant.token,
            json!({"name": "x", "scopes": ["root"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &tenant.token,
            json!({"name": "x", "scopes": []}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &tenant.token,
            json!({"name": "", "scopes": ["repos:read"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &tenant.token,
            json!({"scopes": ["repos:read"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        // A client cannot mint a client with more power than itself.
        (
            &narrow_token,
            json!({"name": "x", "scopes": ["repos:write"]}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (token, body, status, code) in cases {
        assert_error(
            app.post_json("/v1/clients", Some(token), &body).await,
            status,
            code,
        )
        .await;
    }
    assert_error(
        app.delete("/v1/clients/nonsense", &tenant.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(app.database_digest().await, before);
}

/// A client with only `clients:write` cannot remove a stronger client (it
/// would lock the tenant out), and nobody can remove the tenant's last client
/// able to manage clients.
#[tokio::test]
async fn a_client_cannot_delete_beyond_its_scopes_nor_the_last_manager() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let created = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &json!({"name": "manager", "scopes": ["clients:write"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let manager: Value = created.json().await.unwrap();
    let manager_id = manager["client_id"].as_str().unwrap().to_owned();
    let manager_token = app
        .token(
            &manager_id,
            manager["client_secret"].as_str().unwrap(),
            None,
        )
        .await;
    let before = app.database_digest().await;

    // The narrow client cannot delete the full-scope signup client...
    assert_error(
        app.delete(&format!("/v1/clients/{}", tenant.client_id), &manager_token)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // ...nor create one stronger than itself.
    assert_error(
        app.post_json(
            "/v1/clients",
            Some(&manager_token),
            &json!({"name": "escalate", "scopes": ["repos:write"]}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(app.database_digest().await, before);

    // The full client removes the narrow one; then it is the last manager.
    assert_eq!(
        app.delete(&format!("/v1/clients/{manager_id}"), &tenant.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let before = app.database_digest().await;
    assert_error(
        app.delete(&format!("/v1/clients/{}", tenant.client_id), &tenant.token)
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(app.database_digest().await, before);
    // And the tenant still gets in.
    let token = app
        .token(&tenant.client_id, &tenant.client_secret, None)
        .await;
    assert_eq!(
        app.get("/v1/clients", &token).await.status(),
        StatusCode::OK
    );
}
