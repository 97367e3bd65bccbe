use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ServerProcess, fresh_database, repository_at, sign, spawn_app, tenant_at};

#[tokio::test]
async fn request_ids_are_returned_and_propagated() {
    let app = spawn_app().await;
    let generated = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(generated.headers()["x-request-id"].len(), 36);
    let given = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42");
}

#[tokio::test]
async fn metrics_count_webhooks_tokens_and_ingest_latency() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let body = crate::helpers::fixture("ping");
    app.deliver(&repository.id, &repository.secret, "ping", "a", &body)
        .await;
    app.deliver(&repository.id, "wrong", "ping", "b", &body)
        .await;

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for line in [
        r#"hookrelay_webhooks_received_total{provider="github"} 1"#,
        r#"hookrelay_webhooks_rejected_total{reason="signature"} 1"#,
        "hookrelay_ingest_duration_seconds_count 1",
        "hookrelay_tokens_issued_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

/// Runs the real binary: its logs are JSON (stdout is a file), carry the request's
/// tenant and repository, and never contain a secret.
#[tokio::test]
async fn logs_are_structured_and_free_of_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database().await;
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", database),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.into(),
            ),
        ],
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &server.address, "acme").await;
    let token = &tenant.token;
    let repository = repository_at(&http, &server.address, token, "acme/app").await;
    let webhook_secret = repository["webhook_secret"].as_str().unwrap();
    let body = br#"{"zen":"a very private payload"}"#;
    let delivered = http
        .post(repository["webhook_url"].as_str().unwrap())
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "d1")
        .header("x-hub-signature-256", sign(webhook_secret, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::ACCEPTED);
    server.signal("TERM");
    let mut server = server;
    server.wait(Duration::from_secs(30)).await;

    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(!lines.is_empty());
    for needle in [
        tenant.client_secret.as_str(),
        token,
        webhook_secret,
        "a very private payload",
        crate::helpers::TEST_SECRET_KEY,
    ] {
        assert!(!log.contains(needle), "a secret or payload reached the log");
    }
    let webhook_line = lines
        .iter()
        .find(|l| {
            l["span"]["route"] == "/v1/webhooks/{repository_id}"
                && l["message"] == "request finished"
        })
        .expect("a log line for the webhook request");
    assert_eq!(webhook_line["span"]["repository_id"], repository["id"]);
    assert_eq!(webhook_line["span"]["tenant_id"], tenant.tenant_id);
    assert!(
        webhook_line["span"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
}

/// With OTEL_EXPORTER_OTLP_ENDPOINT set, spans reach an OTLP/HTTP receiver.
#[tokio::test]
async fn traces_are_exported_over_otlp() {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let collector = {
        let received = received.clone();
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().push(body);
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database().await;
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", database),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.into(),
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("OTEL_SERVICE_NAME", "hookrelay-under-test".into()),
        ],
        dir.path(),
    )
    .await;
    let signup = reqwest::Client::new()
        .post(format!("{}/v1/tenants", server.address))
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);

    let deadline = Instant::now() + Duration::from_secs(20);
    let exported = loop {
        let bodies = received.lock().unwrap().clone();
        let all: Vec<u8> = bodies.iter().flat_map(|b| b.to_vec()).collect();
        let contains = |needle: &str| all.windows(needle.len()).any(|w| w == needle.as_bytes());
        if contains("hookrelay-under-test") && contains("POST /v1/tenants") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(server);
    collector.abort();
    assert!(
        exported,
        "no span named `POST /v1/tenants` from service hookrelay-under-test reached the collector"
    );
}
