//! `/v1/trusted-issuers`: a tenant's workload identity providers (issue 18).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

const GITHUB: &str = "https://token.actions.githubusercontent.com";

fn github(audience: &str, repository: &str) -> Value {
    json!({
        "issuer": GITHUB,
        "audience": audience,
        "claims": {"repository": repository, "ref": "refs/heads/main"},
        "scopes": ["events:read"],
    })
}

async fn count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from trusted_issuer")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_adds_lists_and_deletes_its_trusted_issuers() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let response = app
        .post_json(
            "/v1/trusted-issuers",
            Some(&tenant.token),
            &github("hookrelay-acme", "acme/deploy-bot"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["issuer"], GITHUB);
    assert_eq!(created["audience"], "hookrelay-acme");
    assert_eq!(
        created["claims"],
        json!({"repository": "acme/deploy-bot", "ref": "refs/heads/main"})
    );
    assert_eq!(created["scopes"], json!(["events:read"]));
    let id = created["id"].as_str().unwrap().to_owned();

    let listed: Value = app
        .get("/v1/trusted-issuers", &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({"items": [created], "next_after": null}));

    // Another tenant neither sees nor deletes it.
    let other = app.tenant("other").await;
    let theirs: Value = app
        .get("/v1/trusted-issuers", &other.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs, json!({"items": [], "next_after": null}));
    let path = format!("/v1/trusted-issuers/{id}");
    assert_error(
        app.delete(&path, &other.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(count(&app).await, 1);

    assert_eq!(
        app.delete(&path, &tenant.token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(count(&app).await, 0);
    assert_error(
        app.delete(&path, &tenant.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_trusted_issuers_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = github("hookrelay-acme", "acme/*");
        change(&mut body);
        body
    };
    for (body, field) in [
        (
            with(&|b| b["issuer"] = json!("http://issuer.example")),
            "issuer",
        ),
        (
            with(&|b| b["issuer"] = json!("https://issuer.example/?a=b")),
            "issuer",
        ),
        (with(&|b| b["audience"] = json!("")), "audience"),
        (with(&|b| b["claims"] = json!({})), "claims"),
        (
            with(&|b| b["claims"] = json!({"repository": "*"})),
            "claims",
        ),
        (with(&|b| b["scopes"] = json!([])), "scopes"),
        (
            with(&|b| b["scopes"] = json!(["events:everything"])),
            "scopes",
        ),
    ] {
        let response = app
            .post_json("/v1/trusted-issuers", Some(&tenant.token), &body)
            .await;
        let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("invalid {field}:")),
            "{body}: {error}"
        );
    }
    let unknown_field = with(&|b| b["allow_all"] = json!(true));
    let response = app
        .post_json("/v1/trusted-issuers", Some(&tenant.token), &unknown_field)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A caller cannot hand out scopes it lacks, nor manage issuers without clients:write.
    let limited: Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &json!({"name": "issuers only", "scopes": ["clients:write"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let limited = app
        .token(
            limited["client_id"].as_str().unwrap(),
            limited["client_secret"].as_str().unwrap(),
            None,
        )
        .await;
    let response = app
        .post_json(
            "/v1/trusted-issuers",
            Some(&limited),
            &github("hookrelay-acme", "acme/*"),
        )
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let reader = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("events:read"),
        )
        .await;
    assert_error(
        app.get("/v1/trusted-issuers", &reader).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    assert_eq!(count(&app).await, 0);
}

/// Everyone shares GitHub's issuer: a second tenant may not trust tokens that
/// a first tenant's trusted issuer would also accept, so an exchange always
/// names exactly one tenant.
#[tokio::test]
async fn a_trusted_issuer_that_could_match_another_tenants_is_refused() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let first = app
        .post_json(
            "/v1/trusted-issuers",
            Some(&acme.token),
            &github("hookrelay", "acme/*"),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    for overlapping in [
        github("hookrelay", "acme/deploy-bot"),
        github("hookrelay", "*/deploy-bot"),
        json!({"issuer": GITHUB, "audience": "hookrelay", "claims": {"sub": "repo:other/*"}, "scopes": ["events:read"]}),
    ] {
        let response = app
            .post_json("/v1/trusted-issuers", Some(&other.token), &overlapping)
            .await;
        let error = assert_error(response, StatusCode::CONFLICT, "conflict").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("audience of your own"),
            "{error}"
        );
    }
    // Claims that keep them apart, or an audience of its own, are fine.
    for apart in [
        github("hookrelay", "other/*"),
        github("hookrelay-other", "acme/*"),
    ] {
        let response = app
            .post_json("/v1/trusted-issuers", Some(&other.token), &apart)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{apart}");
    }
    // A tenant's own trusted issuers do not conflict with each other.
    let again = app
        .post_json(
            "/v1/trusted-issuers",
            Some(&acme.token),
            &github("hookrelay", "acme/deploy-bot"),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(count(&app).await, 4);
}
