//! Quotas per tenant: counts refused with 403 `quota_exceeded` naming the
//! limit, webhooks over their rate with 429, streams and watches with
//! RESOURCE_EXHAUSTED; defaults from HOOKRELAY_QUOTA_*, overrides by the
//! operator; `GET /v1/usage` shows both.

use std::time::Duration;

use hookrelay::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestTenant, assert_error, authed, eventually, fixture, spawn_app, spawn_app_on,
    spawn_app_with,
};
use crate::operations::admin;

/// `hookrelay tenants set-quota <tenant> --<quota> <value>`: (success, output).
async fn set_quota(app: &TestApp, tenant: &TestTenant, quota: &str, value: &str) -> (bool, String) {
    admin(
        app,
        &["tenants", "set-quota", &tenant.tenant_id, quota, value],
    )
    .await
}

async fn register(app: &TestApp, tenant: &TestTenant, name: &str) -> reqwest::Response {
    app.post_json(
        "/v1/repositories",
        Some(&tenant.token),
        &json!({"provider": "github", "name": name}),
    )
    .await
}

/// The operator sets one tenant's quota; that tenant gets 403 past it, naming
/// the limit, and changes nothing; the others keep the default; `default`
/// gives it back.
#[tokio::test]
async fn the_operator_sets_a_tenant_s_quota_and_the_tenant_meets_it() {
    let app = spawn_app().await;
    let small = app.tenant("small").await;
    let other = app.tenant("other").await;
    let (ok, output) = set_quota(&app, &small, "--repositories", "2").await;
    assert!(ok, "{output}");
    let (ok, shown) = admin(&app, &["tenants", "show", &small.tenant_id]).await;
    assert!(ok, "{shown}");
    let line = shown
        .lines()
        .find(|l| l.starts_with("repositories"))
        .unwrap();
    assert!(
        line.contains(" 2 ") && line.contains("for this tenant"),
        "{shown}"
    );

    for name in ["small/a", "small/b"] {
        assert_eq!(
            register(&app, &small, name).await.status(),
            StatusCode::CREATED
        );
    }
    let before = app.database_digest().await;
    let refused = register(&app, &small, "small/c").await;
    let error = assert_error(refused, StatusCode::FORBIDDEN, "quota_exceeded").await;
    assert!(
        error["message"].as_str().unwrap().contains("(limit 2)"),
        "{error}"
    );
    assert_eq!(
        app.database_digest().await,
        before,
        "a refusal changes nothing"
    );
    for name in ["other/a", "other/b", "other/c"] {
        assert_eq!(
            register(&app, &other, name).await.status(),
            StatusCode::CREATED
        );
    }

    let (ok, output) = set_quota(&app, &small, "--repositories", "default").await;
    assert!(ok, "{output}");
    assert_eq!(
        register(&app, &small, "small/c").await.status(),
        StatusCode::CREATED
    );
    let (ok, output) = set_quota(&app, &small, "--repositories", "many").await;
    assert!(!ok && output.contains("`many`"), "{output}");
}

/// The defaults come from the environment: clients and trusted issuers.
#[tokio::test]
async fn default_quotas_bound_clients_and_trusted_issuers() {
    let app = spawn_app_with(|config| {
        config.quotas.clients = 2;
        config.quotas.trusted_issuers = 1;
    })
    .await;
    let tenant = app.tenant("acme").await;
    let client = |name: &str| json!({"name": name, "scopes": ["events:read"]});
    // Signup made the first.
    let second = app
        .post_json("/v1/clients", Some(&tenant.token), &client("agent"))
        .await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let third = app
        .post_json("/v1/clients", Some(&tenant.token), &client("more"))
        .await;
    let error = assert_error(third, StatusCode::FORBIDDEN, "quota_exceeded").await;
    assert!(
        error["message"].as_str().unwrap().contains("clients"),
        "{error}"
    );

    let issuer = |claim: &str| {
        json!({"issuer": "https://token.actions.githubusercontent.com",
               "audience": "urn:hookrelay:acme", "claims": {"repository": claim},
               "scopes": ["events:read"]})
    };
    let first = app
        .post_json(
            "/v1/trusted-issuers",
            Some(&tenant.token),
            &issuer("acme/one"),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = app
        .post_json(
            "/v1/trusted-issuers",
            Some(&tenant.token),
            &issuer("acme/two"),
        )
        .await;
    assert_error(second, StatusCode::FORBIDDEN, "quota_exceeded").await;
}

/// Streams and watches over their quotas get RESOURCE_EXHAUSTED naming it; a
/// known consumer may always stream, a new one counts.
#[tokio::test]
async fn streams_watches_and_consumers_are_bounded() {
    let app = spawn_app_with(|config| {
        config.quotas.open_streams = 2;
        config.quotas.consumers = 3;
        config.quotas.open_watches = 1;
    })
    .await;
    let tenant = app.tenant("acme").await;
    let _one = app.stream(&tenant.token, "one", &[], None).await.unwrap();
    let _two = app.stream(&tenant.token, "two", &[], None).await.unwrap();
    let refused = app
        .stream(&tenant.token, "three", &[], None)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("open streams"), "{refused:?}");
    drop(_two);
    // The stream's row goes when it closes: a moment later there is room.
    crate::helpers::eventually(std::time::Duration::from_secs(10), "room", || async {
        app.stream(&tenant.token, "three", &[], None).await.ok()
    })
    .await;

    // Three consumers exist: with room for streams, a known one may stream,
    // a fourth is refused.
    let usage = app.get_json("/v1/usage", &tenant.token).await;
    assert_eq!(usage["usage"]["consumers"], 3, "{usage}");
    drop(_one);
    let known = crate::helpers::eventually(std::time::Duration::from_secs(10), "room", || async {
        app.stream(&tenant.token, "one", &[], None).await.ok()
    })
    .await;
    drop(known);
    let fourth =
        crate::helpers::eventually(std::time::Duration::from_secs(10), "a refusal", || async {
            app.stream(&tenant.token, "four", &[], None)
                .await
                .err()
                .filter(|s| s.message().contains("consumers"))
        })
        .await;
    assert_eq!(fourth.code(), tonic::Code::ResourceExhausted, "{fourth:?}");

    let watch = || async {
        app.grpc()
            .await
            .watch_consumers(authed(
                hookrelay::grpc::proto::WatchConsumersRequest::default(),
                &tenant.token,
            ))
            .await
    };
    let _watching = watch().await.unwrap();
    let refused = watch().await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("open watches"), "{refused:?}");
}

/// A tenant's webhooks past its rate get 429 with Retry-After; another
/// tenant's are not slowed.
#[tokio::test]
async fn webhooks_over_the_tenant_s_rate_get_429() {
    let app = spawn_app_with(|config| {
        config.quotas.webhooks_per_second = 1;
        config.quotas.webhook_burst = 5;
    })
    .await;
    let noisy = app.tenant("noisy").await;
    let quiet = app.tenant("quiet").await;
    let loud = app.repository(&noisy, "noisy/app").await;
    let calm = app.repository(&quiet, "quiet/app").await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let body = crate::helpers::fixture("push");
        let response = app
            .deliver(&loud.id, &loud.secret, "push", &format!("n-{i}"), &body)
            .await;
        let status = response.status().as_u16();
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"], "rate_limited", "{error}");
        }
        statuses.push(status);
    }
    // The burst of 5, and perhaps one refill; the rest refused.
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!((5..=6).contains(&accepted), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 429),
        "{statuses:?}"
    );
    let usage = app.get_json("/v1/usage", &noisy.token).await;
    assert_eq!(usage["quotas"]["webhook_burst"], 5, "{usage}");
    assert!(
        usage["usage"]["webhook_burst"].as_u64().unwrap() >= 4,
        "{usage}"
    );
    // The other tenant is not slowed; nothing refused was stored.
    app.push(&calm, "q-1").await;
    assert_eq!(app.event_count().await, accepted as i64 + 1);
}

/// `GET /v1/usage` with any scope: the same keys in `quotas` and `usage`.
#[tokio::test]
async fn usage_shows_quotas_and_what_is_held_with_the_same_keys() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    app.repository(&tenant, "acme/app").await;
    let token = app.scoped_token(&tenant, "reader", &["events:read"]).await;
    let usage = app.get_json("/v1/usage", &token).await;
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&usage["quotas"]), keys(&usage["usage"]));
    assert_eq!(keys(&usage["quotas"]).len(), 9, "{usage}");
    assert_eq!(usage["usage"]["repositories"], 1);
    assert_eq!(usage["usage"]["clients"], 2);
    assert_eq!(usage["quotas"]["repositories"], 1000);
    let anonymous = app.http.get(app.url("/v1/usage")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// Past its stored event bytes, a tenant's webhooks get 403 naming the limit,
/// and store nothing; another tenant's are stored.
#[tokio::test]
async fn webhooks_past_the_stored_bytes_quota_get_403() {
    let app = spawn_app_with(|config| config.quotas.stored_event_bytes = 10_000).await;
    let full = app.tenant("full").await;
    let other = app.tenant("other").await;
    let repository = app.repository(&full, "full/app").await;
    let body = crate::helpers::fixture("push");
    assert!(body.len() > 5_000 && body.len() < 10_000);
    app.push(&repository, "first").await;
    let refused = app
        .deliver(&repository.id, &repository.secret, "push", "second", &body)
        .await;
    let error = assert_error(refused, StatusCode::FORBIDDEN, "quota_exceeded").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("stored event bytes is reached (limit 10000)"),
        "{error}"
    );
    let usage = app.get_json("/v1/usage", &full.token).await;
    assert_eq!(usage["usage"]["stored_event_bytes"], body.len(), "{usage}");
    let theirs = app.repository(&other, "other/app").await;
    app.push(&theirs, "theirs").await;
    assert_eq!(app.event_count().await, 2);
}

/// The stored event bytes `GET /v1/usage` shows on `app`.
async fn stored_bytes(app: &TestApp, tenant: &TestTenant) -> u64 {
    let usage = app.get_json("/v1/usage", &tenant.token).await;
    usage["usage"]["stored_event_bytes"].as_u64().unwrap()
}

/// Waits until `app` shows `expected` stored event bytes for `tenant`.
async fn shows_stored(app: &TestApp, tenant: &TestTenant, expected: u64, what: &str) {
    eventually(Duration::from_secs(15), what, || async {
        (stored_bytes(app, tenant).await == expected).then_some(())
    })
    .await;
}

/// The bytes recorded as freed for `tenant` by deletions of its events.
async fn recorded_freed(app: &TestApp, tenant: &TestTenant) -> i64 {
    sqlx::query_scalar(
        "select coalesce(sum(bytes), 0)::bigint from event_bytes_deleted where tenant_id = $1::uuid",
    )
    .bind(&tenant.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Reads what changed often; the whole count runs at start and then only
/// after an hour, so what these tests see came from the reads of changes.
/// (One public URL: the servers are replicas, each taking the other's tokens.)
fn read_changes_often(config: &mut Config) {
    config.stored_bytes_interval = Duration::from_millis(100);
    config.public_url = Some(url::Url::parse("https://relay.example.com").unwrap());
}

/// Each server follows a tenant's stored bytes from what changed since its
/// last read: another server's webhooks add to them, and deleting a
/// repository frees its events' bytes on every server.
#[tokio::test]
async fn every_server_follows_stored_bytes_stored_elsewhere_and_freed_by_a_deleted_repository() {
    let a = spawn_app_with(read_changes_often).await;
    let b = spawn_app_on(&a.database_url, read_changes_often)
        .await
        .unwrap();
    let tenant = a.tenant("both").await;
    let bystander = a.tenant("bystander").await;
    let kept = a.repository(&tenant, "both/kept").await;
    let doomed = a.repository(&tenant, "both/doomed").await;
    let theirs = a.repository(&bystander, "bystander/app").await;
    let push = fixture("push").len() as u64;

    // Stored through b only: a learns of them from its reads.
    b.push(&kept, "kept").await;
    b.push(&doomed, "doomed-1").await;
    b.push(&doomed, "doomed-2").await;
    a.push(&theirs, "theirs").await;
    shows_stored(&a, &tenant, 3 * push, "a to read b's webhooks").await;
    shows_stored(&b, &tenant, 3 * push, "b to read its own webhooks").await;

    let deleted = a
        .delete(&format!("/v1/repositories/{}", doomed.id), &tenant.token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(recorded_freed(&a, &tenant).await, 2 * push as i64);
    shows_stored(
        &a,
        &tenant,
        push,
        "a to free the deleted repository's bytes",
    )
    .await;
    shows_stored(
        &b,
        &tenant,
        push,
        "b to free the deleted repository's bytes",
    )
    .await;
    // Another tenant's count is its own.
    assert_eq!(stored_bytes(&b, &bystander).await, push);
    assert_eq!(recorded_freed(&a, &bystander).await, 0);
}

/// The events retention deletes free their tenant's stored bytes; the
/// records of deleted bytes go after a day.
#[tokio::test]
async fn retention_frees_stored_bytes() {
    let app = spawn_app_with(|config| {
        read_changes_often(config);
        config.retention = Duration::from_secs(2);
    })
    .await;
    let tenant = app.tenant("expiring").await;
    sqlx::query(
        "insert into event_bytes_deleted (tenant_id, bytes, deleted_at) \
         values (gen_random_uuid(), 1, now() - interval '25 hours'), \
                (gen_random_uuid(), 2, now() - interval '23 hours')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let repository = app.repository(&tenant, "expiring/app").await;
    let push = fixture("push").len() as u64;
    app.push(&repository, "expires").await;
    assert!(stored_bytes(&app, &tenant).await >= push);
    shows_stored(
        &app,
        &tenant,
        0,
        "retention to free the expired event's bytes",
    )
    .await;
    assert_eq!(app.event_count().await, 0);
    assert_eq!(recorded_freed(&app, &tenant).await, push as i64);
    let others: Vec<i64> = sqlx::query_scalar(
        "select bytes from event_bytes_deleted where tenant_id <> $1::uuid order by bytes",
    )
    .bind(&tenant.tenant_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        others,
        [2],
        "the day-old record is forgotten, the younger kept"
    );
}
