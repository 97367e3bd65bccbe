//! Every provider: each published payload, sent and signed as that provider
//! sends it, is accepted and stored byte for byte; bad signatures and bad
//! input are refused and store nothing; and the agent replays each delivery to
//! a target that checks the provider's own scheme.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hookrelay_testkit::{Sender, fixture_file};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{AgentProcess, TestApp, TestTarget, TestTenant, spawn_app, spawn_app_with};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A repository name each provider accepts.
fn name(sender: Sender) -> &'static str {
    match sender {
        Sender::GitlabToken => "acme/platform/app",
        Sender::GitlabSigning => "acme/platform/signed",
        Sender::Standard => "billing-events",
        Sender::BitbucketDataCenter => "PROJ/app",
        _ => "acme/app",
    }
}

struct Registered {
    id: String,
    secret: String,
    body: Value,
}

async fn register(app: &TestApp, tenant: &TestTenant, sender: Sender) -> Registered {
    let body = app
        .register(tenant, sender.provider(), name(sender), sender.settings())
        .await;
    Registered {
        id: body["id"].as_str().unwrap().to_owned(),
        secret: body["webhook_secret"].as_str().unwrap().to_owned(),
        body,
    }
}

async fn post(
    app: &TestApp,
    id: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> reqwest::Response {
    app.post_webhook(id, headers, body).await
}

async fn send(
    app: &TestApp,
    repository: &Registered,
    sender: Sender,
    secret: &str,
    delivery: &str,
) -> reqwest::Response {
    let (file, event) = sender.fixture();
    let body = fixture_file(file);
    let headers = sender.headers(secret, event, delivery, &body, now());
    post(app, &repository.id, &headers, &body).await
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The header that carries the sender's signature (or GitLab's token).
fn signature_header(sender: Sender) -> &'static str {
    match sender {
        Sender::Github => "x-hub-signature-256",
        Sender::GitlabToken => "x-gitlab-token",
        Sender::GitlabSigning | Sender::Standard => "webhook-signature",
        Sender::Gitea => "x-gitea-signature",
        Sender::Forgejo => "x-forgejo-signature",
        Sender::BitbucketCloud | Sender::BitbucketDataCenter => "x-hub-signature",
    }
}

/// How an error names a header (as the provider spells it).
fn event_header_display(name: &str) -> &'static str {
    match name {
        "x-github-event" => "X-GitHub-Event",
        "x-gitlab-event" => "X-Gitlab-Event",
        "x-gitea-event" => "X-Gitea-Event",
        "x-forgejo-event" => "X-Forgejo-Event",
        _ => "X-Event-Key",
    }
}

fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
    headers.iter().filter(|(n, _)| n != name).cloned().collect()
}

#[tokio::test]
async fn every_provider_is_accepted_stored_byte_for_byte_and_deduplicated() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    for sender in Sender::ALL {
        let repository = register(&app, &tenant, sender).await;
        // The secret in the form the provider's settings page takes.
        match sender.provider() {
            "gitlab" | "standard" => {
                let key = repository.secret.strip_prefix("whsec_").expect("whsec_");
                let key = base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .unwrap();
                assert_eq!(key.len(), 32, "{sender:?}");
            }
            _ => assert!(
                repository.secret.len() == 64
                    && repository.secret.bytes().all(|b| b.is_ascii_hexdigit()),
                "{sender:?}"
            ),
        }
        assert_eq!(
            repository.body["webhook_url"],
            app.url(&format!("/v1/webhooks/{}", repository.id)),
            "the webhook URL keeps its shape"
        );

        let delivery = format!("{sender:?}-1");
        let response = send(&app, &repository, sender, &repository.secret, &delivery).await;
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{sender:?}: {}",
            response.text().await.unwrap()
        );
        let id = response.json::<Value>().await.unwrap()["event_id"]
            .as_i64()
            .unwrap();

        let event: Value = app
            .get(&format!("/v1/events/{id}"), &tenant.token)
            .await
            .json()
            .await
            .unwrap();
        let (file, event_type) = sender.fixture();
        let stored = base64::engine::general_purpose::STANDARD
            .decode(event["body_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(stored, fixture_file(file), "{sender:?}: byte for byte");
        assert_eq!(event["provider"], sender.provider());
        assert_eq!(event["event_type"], event_type, "{sender:?}");
        assert_eq!(event["delivery_id"], delivery.as_str(), "{sender:?}");
        let expected_branch = match sender {
            Sender::Github | Sender::Standard => None,
            Sender::GitlabToken | Sender::GitlabSigning | Sender::Gitea => Some("master"),
            Sender::Forgejo => Some("develop"),
            Sender::BitbucketCloud => Some("name-of-branch"),
            Sender::BitbucketDataCenter => Some("feature/wip"),
        };
        assert_eq!(event["branch"].as_str(), expected_branch, "{sender:?}");
        // GitLab's token is the secret itself: never shown by the API.
        let headers: Vec<(String, String)> =
            serde_json::from_value(event["headers"].clone()).unwrap();
        if sender == Sender::GitlabToken {
            assert_eq!(header(&headers, "x-gitlab-token"), Some("[sealed]"));
        }
        assert!(
            !event.to_string().contains(&repository.secret),
            "{sender:?}"
        );

        // The provider's retry of the same delivery is stored once.
        let again = send(&app, &repository, sender, &repository.secret, &delivery).await;
        assert_eq!(again.status(), StatusCode::OK, "{sender:?}");
        assert_eq!(again.json::<Value>().await.unwrap()["duplicate"], true);

        // Rotation: the new secret verifies, and the old one during the grace period.
        let rotated: Value = app
            .post_json(
                &format!("/v1/repositories/{}/rotate-secret", repository.id),
                Some(&tenant.token),
                &json!({}),
            )
            .await
            .json()
            .await
            .unwrap();
        let new_secret = rotated["webhook_secret"].as_str().unwrap();
        assert_eq!(
            new_secret.starts_with("whsec_"),
            repository.secret.starts_with("whsec_")
        );
        for (secret, delivery) in [
            (new_secret, "after-rotation-new"),
            (repository.secret.as_str(), "after-rotation-old"),
        ] {
            let response = send(
                &app,
                &repository,
                sender,
                secret,
                &format!("{sender:?}-{delivery}"),
            )
            .await;
            assert_eq!(
                response.status(),
                StatusCode::ACCEPTED,
                "{sender:?} {delivery}"
            );
        }
    }
    assert_eq!(app.event_count().await, 3 * Sender::ALL.len() as i64);
}

#[tokio::test]
async fn wrong_missing_malformed_and_stale_signatures_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    for sender in Sender::ALL {
        let repository = register(&app, &tenant, sender).await;
        let (file, event) = sender.fixture();
        let body = fixture_file(file);
        let good = sender.headers(&repository.secret, event, "d-1", &body, now());
        let other_secret = if repository.secret.starts_with("whsec_") {
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
        } else {
            "0000000000000000000000000000000000000000000000000000000000000000"
        };
        let wrong = sender.headers(other_secret, event, "d-1", &body, now());
        let signature_header = signature_header(sender);
        let mut malformed = without(&good, signature_header);
        malformed.push((
            signature_header.to_owned(),
            "sha256=zz,not-a-signature".to_owned(),
        ));
        let mut changed_body = body.clone();
        changed_body.push(b' ');
        let cases = [
            ("wrong secret", wrong, body.clone()),
            ("missing", without(&good, signature_header), body.clone()),
            ("malformed", malformed, body.clone()),
            ("changed body", good.clone(), changed_body),
        ];
        for (case, headers, body) in cases {
            // GitLab's bare token does not cover the body: a changed body passes its check.
            if sender == Sender::GitlabToken && case == "changed body" {
                continue;
            }
            let response = post(&app, &repository.id, &headers, &body).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{sender:?}: {case}"
            );
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"], "invalid_signature", "{sender:?}: {case}");
        }
        // Standard Webhooks signatures carry a timestamp: outside ±5 minutes,
        // a captured delivery cannot be replayed.
        if matches!(sender, Sender::GitlabSigning | Sender::Standard) {
            for skew in [-400, 400] {
                let stale = sender.headers(&repository.secret, event, "d-1", &body, now() + skew);
                let response = post(&app, &repository.id, &stale, &body).await;
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{sender:?} {skew}"
                );
                let message = response.json::<Value>().await.unwrap()["message"].to_string();
                assert!(
                    message.contains("webhook-timestamp") && message.contains("300 s"),
                    "{message}"
                );
            }
        }
    }
    assert_eq!(app.event_count().await, 0, "nothing refused was stored");
}

/// With a signing token, GitLab's delivery id is the signed `webhook-id`: a
/// captured delivery replayed within the tolerance under another
/// `Idempotency-Key`, or with none, is a duplicate, not a new event.
#[tokio::test]
async fn a_replayed_signed_gitlab_delivery_is_stored_once_whatever_its_idempotency_key() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let sender = Sender::GitlabSigning;
    let repository = register(&app, &tenant, sender).await;
    let (file, event) = sender.fixture();
    let body = fixture_file(file);
    let captured = sender.headers(&repository.secret, event, "d-1", &body, now());
    let first = post(&app, &repository.id, &captured, &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let id = first.json::<Value>().await.unwrap()["event_id"].clone();

    let new_key: Vec<(String, String)> = captured
        .iter()
        .map(|(name, value)| match name.as_str() {
            "idempotency-key" => (name.clone(), "another-key".to_owned()),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    for replay in [new_key, without(&captured, "idempotency-key")] {
        let response = post(&app, &repository.id, &replay, &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            (answer["event_id"].clone(), answer["duplicate"].clone()),
            (id.clone(), json!(true))
        );
    }
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_per_provider_and_changes_nothing() {
    let app = spawn_app_with(|config| config.max_webhook_bytes = 64 * 1024).await;
    let tenant = app.tenant("acme").await;
    let mut standard = None;
    for sender in Sender::ALL {
        let repository = register(&app, &tenant, sender).await;
        let (file, event) = sender.fixture();
        let body = fixture_file(file);
        let good = sender.headers(&repository.secret, event, "d-1", &body, now());
        // The event header, and every header that can name the delivery.
        let (event_header, delivery_headers): (Option<&str>, &[&str]) = match sender {
            Sender::Github => (Some("x-github-event"), &["x-github-delivery"]),
            Sender::GitlabToken => (
                Some("x-gitlab-event"),
                &["idempotency-key", "x-gitlab-event-uuid"],
            ),
            // webhook-id is what the signature covers.
            Sender::GitlabSigning => (Some("x-gitlab-event"), &["webhook-id"]),
            Sender::Gitea => (Some("x-gitea-event"), &["x-gitea-delivery"]),
            Sender::Forgejo => (Some("x-forgejo-event"), &["x-forgejo-delivery"]),
            Sender::BitbucketCloud => (Some("x-event-key"), &["x-request-uuid"]),
            Sender::BitbucketDataCenter => (Some("x-event-key"), &["x-request-id"]),
            Sender::Standard => (None, &["webhook-id"]),
        };
        let before = app.database_digest().await;
        // A repeated identifying header: hookrelay would check one, a target might read the other.
        let mut repeated = good.clone();
        repeated.push((delivery_headers[0].to_owned(), "d-2".to_owned()));
        let response = post(&app, &repository.id, &repeated, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{sender:?} repeated"
        );
        assert!(response.text().await.unwrap().contains("more than once"));
        if let Some(event_header) = event_header {
            let response = post(&app, &repository.id, &without(&good, event_header), &body).await;
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{sender:?} no event"
            );
            assert!(
                response
                    .text()
                    .await
                    .unwrap()
                    .contains(event_header_display(event_header))
            );
        }
        // A repeated signature header, even with one valid value.
        let signature = signature_header(sender);
        let mut doubled = good.clone();
        doubled.push((signature.to_owned(), "sha256=0000".to_owned()));
        let response = post(&app, &repository.id, &doubled, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{sender:?} two signatures"
        );
        assert!(response.text().await.unwrap().contains("more than once"));
        let mut no_delivery = good.clone();
        for name in delivery_headers {
            no_delivery = without(&no_delivery, name);
        }
        let response = post(&app, &repository.id, &no_delivery, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{sender:?} no delivery"
        );
        // Over the size limit.
        let big = vec![b' '; 65 * 1024];
        let oversized = sender.headers(&repository.secret, event, "d-big", &big, now());
        let response = post(&app, &repository.id, &oversized, &big).await;
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{sender:?} oversized"
        );
        assert_eq!(
            app.database_digest().await,
            before,
            "{sender:?}: nothing changed"
        );
        if sender == Sender::Standard {
            standard = Some(repository);
        }
    }
    // A Standard Webhooks body must name its event type where the repository says.
    let standard = standard.unwrap();
    let body = br#"{"kind":"contact.created"}"#;
    let headers = Sender::Standard.headers(&standard.secret, "", "d-untyped", body, now());
    let response = post(&app, &standard.id, &headers, body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("`type`"));
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn repositories_take_each_providers_settings_and_refuse_the_rest() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let create = |body: Value| {
        let app = &app;
        let token = tenant.token.clone();
        async move { app.post_json("/v1/repositories", Some(&token), &body).await }
    };
    let unknown = create(json!({"provider": "svn", "name": "a/b"})).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("github, gitlab, gitea, forgejo, bitbucket, standard")
    );
    for (provider, settings) in [
        ("github", json!({"verification": "token"})),
        ("gitlab", json!({"event_type_field": "kind"})),
        ("standard", json!({"verification": "signing_token"})),
        ("standard", json!({"timestamp_tolerance_seconds": 1})),
        ("standard", json!({"unknown": 1})),
    ] {
        let response =
            create(json!({"provider": provider, "name": "a/b", "settings": settings})).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{provider} {settings}"
        );
        assert!(response.text().await.unwrap().contains("settings"));
    }
    let standard: Value = create(json!({
        "provider": "standard",
        "name": "payments",
        "settings": {"event_type_field": "data.kind", "timestamp_tolerance_seconds": 60}
    }))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        standard["settings"],
        json!({"event_type_field": "data.kind", "timestamp_tolerance_seconds": 60})
    );
    let gitlab: Value = create(json!({"provider": "gitlab", "name": "group/project"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        gitlab["settings"],
        json!({"verification": "token", "timestamp_tolerance_seconds": 300})
    );
    let listed: Value = app
        .get("/v1/repositories", &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed.to_string().find("webhook_secret").is_none());

    // The configured field names the event type, and the tolerance is the repository's.
    let secret = standard["webhook_secret"].as_str().unwrap();
    let id = standard["id"].as_str().unwrap();
    let body = br#"{"data":{"kind":"payment.settled"}}"#;
    let response = post(
        &app,
        id,
        &Sender::Standard.headers(secret, "", "p-1", body, now()),
        body,
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let event_id = response.json::<Value>().await.unwrap()["event_id"].clone();
    let event: Value = app
        .get(&format!("/v1/events/{event_id}"), &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["event_type"], "payment.settled");
    let stale = Sender::Standard.headers(secret, "", "p-2", body, now() - 90);
    assert_eq!(
        post(&app, id, &stale, body).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// The agent replays each provider's own headers and exact body, so a target
/// that verifies that provider's scheme itself accepts every delivery.
#[tokio::test]
async fn each_provider_reaches_a_target_that_checks_its_signature_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let mut running = Vec::new();
    for (i, sender) in Sender::ALL.into_iter().enumerate() {
        let repository = register(&app, &tenant, sender).await;
        let target = TestTarget::verifying(sender, repository.secret.clone()).await;
        let response = send(
            &app,
            &repository,
            sender,
            &repository.secret,
            &format!("e2e-{i}"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{sender:?}");
        let agent = AgentProcess::start(
            &app,
            &tenant,
            &format!("agent-{i}"),
            &target.url,
            &["--repository", &repository.id],
            dir.path(),
        );
        running.push((sender, target, agent));
    }
    for (sender, target, agent) in &running {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while target.received.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{sender:?}: the target accepted nothing (it got {} requests):\n{}",
                target.requests.load(std::sync::atomic::Ordering::SeqCst),
                agent.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let received = target.received.lock().unwrap()[0].clone();
        assert_eq!(
            received.body,
            fixture_file(sender.fixture().0),
            "{sender:?}"
        );
        assert_eq!(
            target.requests.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{sender:?}: accepted at the first attempt"
        );
    }
}
