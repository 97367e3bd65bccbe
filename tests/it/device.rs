//! `hookrelay-agent login`'s server side: the Device Authorization Grant (RFC
//! 8628) through the `oauth2` crate's device flow, every error answer of the
//! token endpoint, approval by a signed-in person, rotating refresh tokens with
//! reuse detection, revocation (RFC 7009), and the abuse bounds.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, DeviceAuthorizationUrl, RefreshToken, Scope, StandardDeviceAuthorizationResponse,
    TokenResponse, TokenUrl,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, spawn_app, spawn_app_with};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A device authorization, as the agent asks for one.
async fn authorize(app: &TestApp, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![
        ("client_id", "hookrelay-agent"),
        ("device_name", "ana's laptop"),
    ];
    form.extend_from_slice(extra);
    app.http
        .post(app.url("/oauth/device_authorization"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn started(app: &TestApp) -> Value {
    let response = authorize(app, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// One poll of the token endpoint: (status, body).
async fn poll(app: &TestApp, device_code: &str) -> (StatusCode, Value) {
    token_form(
        app,
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", "hookrelay-agent"),
            ("device_code", device_code),
        ],
    )
    .await
}

async fn token_form(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url("/oauth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, Value) {
    token_form(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "hookrelay-agent"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn approve(app: &TestApp, tenant: &TestTenant, user_code: &str) -> reqwest::Response {
    app.post_json(
        "/v1/device/approve",
        Some(&tenant.token),
        &json!({ "user_code": user_code }),
    )
    .await
}

/// Lets the next poll through the interval, as waiting 5 s would.
async fn skip_interval(app: &TestApp) {
    sqlx::query("update device_authorization set polled_at = polled_at - interval '1 minute'")
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_device_logs_in_through_the_oauth2_crate_once_a_person_approves() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let metadata = app.metadata().await;
    assert_eq!(
        metadata["device_authorization_endpoint"],
        app.url("/oauth/device_authorization")
    );
    assert_eq!(metadata["revocation_endpoint"], app.url("/oauth/revoke"));
    let grants = metadata["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&json!(DEVICE_GRANT)) && grants.contains(&json!("refresh_token")));

    let client = BasicClient::new(ClientId::new("hookrelay-agent".into()))
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(
                metadata["device_authorization_endpoint"]
                    .as_str()
                    .unwrap()
                    .into(),
            )
            .unwrap(),
        )
        .set_token_uri(TokenUrl::new(metadata["token_endpoint"].as_str().unwrap().into()).unwrap());
    let http = oauth2::reqwest::Client::new();
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("events:read".into()))
        .add_extra_param("device_name", "ana's laptop")
        .request_async(&http)
        .await
        .expect("the device authorization");
    let user_code = details.user_code().secret().clone();
    assert!(
        regex_lite_match(&user_code),
        "{user_code} is XXXX-XXXX of RFC 8628's consonants"
    );
    assert_eq!(
        details.verification_uri().as_str(),
        app.url("/console/device")
    );
    assert_eq!(
        details.verification_uri_complete().unwrap().secret(),
        &format!("{}?user_code={user_code}", app.url("/console/device"))
    );
    assert_eq!(details.expires_in(), Duration::from_secs(600));
    assert_eq!(details.interval(), Duration::from_secs(5));

    // The person sees what asks, then approves while the device polls.
    let shown: Value = app
        .post_json(
            "/v1/device",
            Some(&tenant.token),
            &json!({ "user_code": user_code.to_lowercase() }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["device_name"], "ana's laptop");
    assert_eq!(shown["scopes"], json!(["events:read"]));
    assert_eq!(shown["requested_from"], "127.0.0.1");
    let approver = {
        let (app_url, token, code) = (app.address.clone(), tenant.token.clone(), user_code.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            reqwest::Client::new()
                .post(format!("{app_url}/v1/device/approve"))
                .bearer_auth(token)
                .json(&json!({ "user_code": code }))
                .send()
                .await
                .unwrap()
        })
    };
    let token = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, None)
        .await
        .expect("the device gets its tokens once approved");
    let approved: Value = approver.await.unwrap().json().await.unwrap();
    assert_eq!(approved["name"], "ana's laptop");
    assert_eq!(
        token.scopes().unwrap(),
        &vec![Scope::new("events:read".into())]
    );
    let access = token.access_token().secret();
    let events = app.get("/v1/events", access).await;
    assert_eq!(events.status(), StatusCode::OK, "the device reads events");
    let repositories = app.get("/v1/repositories", access).await;
    assert_eq!(
        repositories.status(),
        StatusCode::FORBIDDEN,
        "and nothing else"
    );

    // The device's client is listed as one, with its last use once it renews.
    let renewed = client
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http)
        .await
        .expect("the refresh token renews");
    assert_ne!(
        renewed.refresh_token().unwrap().secret(),
        token.refresh_token().unwrap().secret()
    );
    let clients: Value = app.get_json("/v1/clients", &tenant.token).await;
    let device = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == approved["client_id"])
        .expect("the device's client is listed");
    assert_eq!(device["device"], true);
    assert!(device["last_used_at"].is_string(), "{device}");

    // Logout: revoking the refresh token ends the login.
    let revoked = app
        .http
        .post(app.url("/oauth/revoke"))
        .form(&[
            ("token", renewed.refresh_token().unwrap().secret().as_str()),
            ("client_id", "hookrelay-agent"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let refused = client
        .exchange_refresh_token(&RefreshToken::new(
            renewed.refresh_token().unwrap().secret().clone(),
        ))
        .request_async(&http)
        .await;
    assert!(refused.is_err(), "a revoked refresh token renews nothing");
}

/// `XXXX-XXXX` of BCDFGHJKLMNPQRSTVWXZ.
fn regex_lite_match(code: &str) -> bool {
    let alphabet = "BCDFGHJKLMNPQRSTVWXZ";
    code.len() == 9
        && code.as_bytes()[4] == b'-'
        && code
            .chars()
            .filter(|c| *c != '-')
            .all(|c| alphabet.contains(c))
}

#[tokio::test]
async fn every_rfc_8628_answer_of_the_token_endpoint() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;

    let pending = started(&app).await;
    let code = pending["device_code"].as_str().unwrap();
    let (status, body) = poll(&app, code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    // Polling again at once: slow_down.
    let (_, body) = poll(&app, code).await;
    assert_eq!(body["error"], "slow_down");
    skip_interval(&app).await;
    let (_, body) = poll(&app, code).await;
    assert_eq!(body["error"], "authorization_pending");

    // Denied.
    let denied = app
        .post_json(
            "/v1/device/deny",
            Some(&tenant.token),
            &json!({ "user_code": pending["user_code"] }),
        )
        .await;
    assert_eq!(denied.status(), StatusCode::NO_CONTENT);
    skip_interval(&app).await;
    let (_, body) = poll(&app, code).await;
    assert_eq!(body["error"], "access_denied");
    // A denied code cannot be approved afterwards.
    let late = approve(&app, &tenant, pending["user_code"].as_str().unwrap()).await;
    assert_eq!(late.status(), StatusCode::NOT_FOUND);

    // Expired.
    let expiring = started(&app).await;
    sqlx::query("update device_authorization set expires_at = now() - interval '1 second' where status = 'pending'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, body) = poll(&app, expiring["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "expired_token");
    let late = approve(&app, &tenant, expiring["user_code"].as_str().unwrap()).await;
    assert_eq!(
        late.status(),
        StatusCode::NOT_FOUND,
        "an expired code is not approvable"
    );

    // Approved: tokens once, then the code is spent.
    let approved = started(&app).await;
    let code = approved["device_code"].as_str().unwrap();
    assert_eq!(
        approve(&app, &tenant, approved["user_code"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    let (status, body) = poll(&app, code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("hrr_"));
    skip_interval(&app).await;
    let (_, body) = poll(&app, code).await;
    assert_eq!(
        body["error"], "invalid_grant",
        "device codes are single-use"
    );

    // Malformed polls.
    let (_, body) = poll(&app, "hrd_nothing").await;
    assert_eq!(body["error"], "invalid_grant");
    let (_, body) = token_form(
        &app,
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", "hookrelay-agent"),
        ],
    )
    .await;
    assert_eq!(body["error"], "invalid_request");
    let (status, body) = token_form(
        &app,
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", "other"),
            ("device_code", code),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_the_whole_login() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let login = started(&app).await;
    approve(&app, &tenant, login["user_code"].as_str().unwrap()).await;
    let (_, tokens) = poll(&app, login["device_code"].as_str().unwrap()).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();

    let (status, renewed) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let second = renewed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second, "each use rotates the refresh token");

    // Someone replays the first (a stolen copy): refused, and the second dies with it.
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("hookrelay-agent login"),
        "{body}"
    );
    let (_, body) = refresh(&app, &second).await;
    assert_eq!(body["error"], "invalid_grant", "the whole chain is revoked");

    // A scope narrower than the login's is fine, a wider one is not.
    let login = started(&app).await;
    approve(&app, &tenant, login["user_code"].as_str().unwrap()).await;
    let (_, tokens) = poll(&app, login["device_code"].as_str().unwrap()).await;
    let (_, body) = token_form(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("scope", "repos:write"),
        ],
    )
    .await;
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn deleting_the_device_client_ends_its_login() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let login = started(&app).await;
    let approved: Value = approve(&app, &tenant, login["user_code"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let (_, tokens) = poll(&app, login["device_code"].as_str().unwrap()).await;
    let deleted = app
        .delete(
            &format!("/v1/clients/{}", approved["client_id"].as_str().unwrap()),
            &tenant.token,
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (_, body) = refresh(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(body["error"], "invalid_grant");
    let events = app
        .get("/v1/events", tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        events.status(),
        StatusCode::UNAUTHORIZED,
        "its access token stops at once"
    );
}

#[tokio::test]
async fn approving_needs_clients_write_and_every_scope_asked_for() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let login = started(&app).await;
    let code = login["user_code"].as_str().unwrap();

    // A reader cannot approve at all.
    let reader_token = app.scoped_token(&tenant, "reader", &["events:read"]).await;
    let refused = app
        .post_json(
            "/v1/device/approve",
            Some(&reader_token),
            &json!({ "user_code": code }),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // A manager without events:write cannot approve a device that asks for it.
    let wide = authorize(&app, &[("scope", "events:read events:write")])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let manager_token = app
        .scoped_token(&tenant, "manager", &["clients:write", "events:read"])
        .await;
    let refused = app
        .post_json(
            "/v1/device/approve",
            Some(&manager_token),
            &json!({ "user_code": wide["user_code"] }),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert!(body.to_string().contains("events:write"), "{body}");

    // Bad requests change nothing.
    let bad = authorize(&app, &[("scope", "everything")]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_scope");
    let bad = app
        .http
        .post(app.url("/oauth/device_authorization"))
        .form(&[("client_id", "hrc_someone")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let malformed = app
        .post_json(
            "/v1/device/approve",
            Some(&tenant.token),
            &json!({ "user_code": "AEIO-U123" }),
        )
        .await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn guessing_user_codes_hits_the_limit() {
    let app = spawn_app_with(|config| {
        config.limits.token_failure_rate = hookrelay::server::Rate::parse("5/min").unwrap();
    })
    .await;
    let tenant = app.tenant("acme").await;
    let login = started(&app).await;
    let mut statuses = Vec::new();
    for guess in [
        "BCDF-GHJK",
        "BCDF-GHJL",
        "BCDF-GHJM",
        "BCDF-GHJN",
        "BCDF-GHJP",
        "BCDF-GHJQ",
        "BCDF-GHJR",
    ] {
        statuses.push(approve(&app, &tenant, guess).await.status());
    }
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::NOT_FOUND),
        "{statuses:?}"
    );
    assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // Blocked, the right code is refused too: guessing cannot continue.
    let right = approve(&app, &tenant, login["user_code"].as_str().unwrap()).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn device_authorizations_are_rate_limited_per_source() {
    let app = spawn_app_with(|config| {
        config.limits.device_authorization_rate = hookrelay::server::Rate::parse("3/min").unwrap();
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(authorize(&app, &[]).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let limited = authorize(&app, &[]).await;
    assert!(limited.headers().contains_key("retry-after"));
}
