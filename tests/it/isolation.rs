//! Tenant isolation: another tenant's resources are invisible (404, never 403),
//! and a token without the endpoint's scope is refused (403). Nothing changes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn another_tenants_resources_are_not_found() {
    let app = spawn_app().await;
    let alice = app.tenant("alice").await;
    let mallory = app.tenant("mallory").await;
    let repository = app.repository(&alice, "alice/app").await;
    let client: Value = app
        .post_json(
            "/v1/clients",
            Some(&alice.token),
            &json!({"name": "agent", "scopes": ["events:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let client_id = client["client_id"].as_str().unwrap();
    let before = app.database_digest().await;

    let repo = format!("/v1/repositories/{}", repository.id);
    let cases = [
        (Method::GET, repo.clone(), None),
        (Method::DELETE, repo.clone(), None),
        (
            Method::POST,
            format!("{repo}/rotate-secret"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/v1/clients/{client_id}"), None),
    ];
    for (method, path, body) in cases {
        let response = call(&app, method.clone(), &path, &mallory.token, body).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let repositories: Value = app
        .get("/v1/repositories", &mallory.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(repositories, json!({"items": [], "next_after": null}));
    let clients: Value = app
        .get("/v1/clients", &mallory.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        clients["items"].as_array().unwrap().len(),
        1,
        "only mallory's own client"
    );
    assert_eq!(clients["items"][0]["client_id"], mallory.client_id.as_str());
    // Mallory's webhook secret does not open Alice's repository.
    let mallory_repository = app.repository(&mallory, "mallory/app").await;
    let before_webhook = app.database_digest().await;
    let forged = app
        .deliver(
            &repository.id,
            &mallory_repository.secret,
            "ping",
            "d-1",
            b"{}",
        )
        .await;
    assert_error(forged, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    assert_eq!(app.database_digest().await, before_webhook);
    assert_ne!(before, before_webhook);

    // The same repository name is free in another tenant.
    let same_name = app
        .post_json(
            "/v1/repositories",
            Some(&mallory.token),
            &json!({"provider": "github", "name": "alice/app"}),
        )
        .await;
    assert_eq!(same_name.status(), StatusCode::CREATED);
    // And Alice still has everything.
    assert_eq!(app.get(&repo, &alice.token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_endpoint_requires_its_scope() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let repo = format!("/v1/repositories/{}", repository.id);
    let client: Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &json!({"name": "a", "scopes": ["events:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let client_path = format!("/v1/clients/{}", client["client_id"].as_str().unwrap());

    let endpoints: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::POST,
            "/v1/repositories".into(),
            Some(json!({"provider": "github", "name": "acme/new"})),
            "repos:write",
        ),
        (Method::GET, "/v1/repositories".into(), None, "repos:read"),
        (Method::GET, repo.clone(), None, "repos:read"),
        (Method::DELETE, repo.clone(), None, "repos:write"),
        (
            Method::POST,
            format!("{repo}/rotate-secret"),
            Some(json!({})),
            "repos:write",
        ),
        (
            Method::POST,
            "/v1/clients".into(),
            Some(json!({"name": "b", "scopes": ["events:read"]})),
            "clients:write",
        ),
        (Method::GET, "/v1/clients".into(), None, "clients:write"),
        (Method::DELETE, client_path, None, "clients:write"),
    ];
    let all = ["repos:read", "repos:write", "clients:write", "events:read"];
    let before = app.database_digest().await;
    for (method, path, body, needed) in &endpoints {
        let others: Vec<&str> = all.iter().copied().filter(|s| s != needed).collect();
        let token = app
            .token(
                &tenant.client_id,
                &tenant.client_secret,
                Some(&others.join(" ")),
            )
            .await;
        let response = call(&app, method.clone(), path, &token, body.clone()).await;
        let error = assert_error(response, StatusCode::FORBIDDEN, "insufficient_scope").await;
        assert!(
            error["message"].as_str().unwrap().contains(needed),
            "{method} {path}: {error}"
        );
    }
    assert_eq!(app.database_digest().await, before);
}
