//! `/v1/repositories`: register, list, show, delete, rotate the webhook secret.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn register_list_show_and_delete_a_repository() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;

    let response = app
        .post_json(
            "/v1/repositories",
            Some(&tenant.token),
            &json!({"provider": "github", "name": "acme/app"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["provider"], "github");
    assert_eq!(created["name"], "acme/app");
    assert_eq!(
        created["webhook_url"],
        app.url(&format!("/v1/webhooks/{id}"))
    );
    assert_eq!(created["webhook_secret"].as_str().unwrap().len(), 64);

    let listed: Value = app
        .get("/v1/repositories", &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], id);
    assert!(
        listed["items"][0].get("webhook_secret").is_none(),
        "the list shows no secret"
    );

    let shown: Value = app
        .get(&format!("/v1/repositories/{id}"), &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["name"], "acme/app");
    assert!(shown.get("webhook_secret").is_none());

    assert_eq!(
        app.delete(&format!("/v1/repositories/{id}"), &tenant.token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        app.get(&format!("/v1/repositories/{id}"), &tenant.token)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.delete(&format!("/v1/repositories/{id}"), &tenant.token)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let listed: Value = app
        .get("/v1/repositories", &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({"items": [], "next_after": null}));
}

#[tokio::test]
async fn bad_repository_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    app.repository(&tenant, "acme/app").await;
    let before = app.database_digest().await;

    let cases = [
        (
            json!({"provider": "github", "name": "acme/app"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"provider": "svn", "name": "acme/app"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"provider": "github", "name": "no-slash"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"provider": "github", "name": "a/b/c"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"provider": "github", "name": "../etc"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"provider": "github"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!(["github"]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(
            app.post_json("/v1/repositories", Some(&tenant.token), &body)
                .await,
            status,
            code,
        )
        .await;
    }
    let not_json = app
        .http
        .post(app.url("/v1/repositories"))
        .bearer_auth(&tenant.token)
        .body("provider=github")
        .send()
        .await
        .unwrap();
    assert_error(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    for path in [
        "/v1/repositories/not-a-uuid",
        "/v1/repositories/00000000-0000-0000-0000-000000000000",
    ] {
        assert_error(
            app.get(path, &tenant.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        assert_error(
            app.delete(path, &tenant.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let rotate = app
            .post_json(
                &format!("{path}/rotate-secret"),
                Some(&tenant.token),
                &json!({}),
            )
            .await;
        assert_error(rotate, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(app.database_digest().await, before);
}

#[tokio::test]
async fn a_rotated_secret_verifies_alongside_the_old_one_for_the_grace_period() {
    let app = spawn_app_with(|c| c.secret_rotation_grace = std::time::Duration::from_secs(3)).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let body = crate::helpers::fixture("ping");

    let response = app
        .post_json(
            &format!("/v1/repositories/{}/rotate-secret", repository.id),
            Some(&tenant.token),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.unwrap();
    let new_secret = rotated["webhook_secret"].as_str().unwrap();
    assert_ne!(new_secret, repository.secret);
    assert!(rotated["previous_secret_expires_at"].is_string());

    assert_eq!(
        app.deliver(&repository.id, &repository.secret, "ping", "d-old", &body)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.deliver(&repository.id, new_secret, "ping", "d-new", &body)
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let late = app
        .deliver(&repository.id, &repository.secret, "ping", "d-late", &body)
        .await;
    assert_error(late, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    assert_eq!(
        app.deliver(&repository.id, new_secret, "ping", "d-new-2", &body)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(app.event_count().await, 3);
}
