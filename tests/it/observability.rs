//! Request ids, metrics, structured logs without secrets, OTLP traces across the relay.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::helpers::{
    AgentProcess, ServerProcess, TestTarget, agent_binary, deliver_at, fresh_database,
    repository_at, sign, spawn_app, tenant_at,
};

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
        "hookrelay_log_lines_dropped_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

/// The real binary on a fresh database, with `settings`, logging JSON into `dir`.
async fn logging_server(settings: &[(&str, &str)], dir: &std::path::Path) -> ServerProcess {
    let mut envs = vec![
        ("DATABASE_URL", fresh_database().await),
        (
            "HOOKRELAY_SECRET_KEY",
            crate::helpers::TEST_SECRET_KEY.to_owned(),
        ),
    ];
    envs.extend(settings.iter().map(|(k, v)| (*k, (*v).to_owned())));
    ServerProcess::start(&envs, dir).await
}

/// Runs the real binary: its logs are JSON (stdout is a file), carry the request's
/// tenant and repository, and never contain a secret.
#[tokio::test]
async fn logs_are_structured_and_free_of_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = logging_server(&[], dir.path()).await;
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
    assert_eq!(webhook_line["target"], "hookrelay::access");
    // As tracing writes every other line's: RFC 3339, UTC, to the microsecond.
    let timestamp = webhook_line["timestamp"].as_str().unwrap();
    assert_eq!(
        timestamp.len(),
        "2026-12-06T15:29:32.977820Z".len(),
        "{timestamp}"
    );
    assert!(
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    assert_eq!(webhook_line["span"]["repository_id"], repository["id"]);
    assert_eq!(webhook_line["span"]["tenant_id"], tenant.tenant_id);
    assert!(
        webhook_line["span"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
}

/// HOOKRELAY_ACCESS_LOG=failures keeps the lines of refused requests only: a
/// stored webhook leaves none, one with a wrong signature leaves its 401.
#[tokio::test]
async fn the_access_log_can_keep_only_failures() {
    let dir = tempfile::tempdir().unwrap();
    let server = logging_server(&[("HOOKRELAY_ACCESS_LOG", "failures")], dir.path()).await;
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &server.address, "acme").await;
    let repository = repository_at(&http, &server.address, &tenant.token, "acme/app").await;
    let url = repository["webhook_url"].as_str().unwrap();
    let body = br#"{"zen":"x"}"#;
    for (delivery, secret, expected) in [
        (
            "good",
            repository["webhook_secret"].as_str().unwrap(),
            StatusCode::ACCEPTED,
        ),
        ("bad", "wrong", StatusCode::UNAUTHORIZED),
    ] {
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign(secret, body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }
    server.signal("TERM");
    let mut server = server;
    server.wait(Duration::from_secs(30)).await;
    let statuses: Vec<u64> = server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "hookrelay::access")
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401], "only the refused webhook is logged");
}

/// An OTLP/HTTP receiver: what was posted to /v1/traces, until it drops.
struct Collector {
    endpoint: String,
    received: Arc<Mutex<Vec<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Collector {
        let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let router = {
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
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Collector {
            endpoint,
            received,
            task,
        }
    }

    /// Every exported span, with its service's name.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut spans = Vec::new();
        for body in self.received.lock().unwrap().iter() {
            let request = ExportTraceServiceRequest::decode(body.as_ref())
                .expect("the exporter posts OTLP protobuf");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(any_value::Value::StringValue(name)) => Some(name.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }
        spans
    }

    /// Waits for a span called `name` from `service`.
    async fn span(&self, service: &str, name: &str) -> Span {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, span)) = self
                .spans()
                .into_iter()
                .find(|(s, span)| s == service && span.name == name)
            {
                return span;
            }
            assert!(
                Instant::now() < deadline,
                "no span `{name}` from {service}; got {:?}",
                self.spans()
                    .iter()
                    .map(|(s, span)| format!("{s}: {}", span.name))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// With OTEL_EXPORTER_OTLP_ENDPOINT set, spans reach an OTLP/HTTP receiver.
#[tokio::test]
async fn traces_are_exported_over_otlp() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database().await;
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", database),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.into(),
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.clone()),
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
    collector
        .span("hookrelay-under-test", "POST /v1/tenants")
        .await;
}

/// The agent's delivery span is a child of the webhook's ingest span (the
/// server keeps its trace context with the event), and --send-traceparent
/// hands the delivery's context to the target.
#[tokio::test]
async fn a_delivery_continues_the_webhooks_trace() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", fresh_database().await),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.into(),
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &server.address, "acme").await;
    let repository = repository_at(&http, &server.address, &tenant.token, "acme/app").await;
    let secret = repository["webhook_secret"].as_str().unwrap();
    let target = TestTarget::start(vec![secret.to_owned()]).await;
    let mut agent = std::process::Command::new(agent_binary());
    agent
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME");
    let _agent = AgentProcess::spawn(
        agent,
        &server.address,
        &tenant,
        "traced",
        &target.url,
        &["--send-traceparent"],
        dir.path(),
    );

    let response = deliver_at(
        &http,
        &server.address,
        &repository,
        "push",
        "d-traced",
        &crate::helpers::fixture("push"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    target.wait_for(1, Duration::from_secs(20)).await;

    let ingest = collector
        .span("hookrelay", "POST /v1/webhooks/{repository_id}")
        .await;
    let delivery = collector.span("hookrelay-agent", "deliver push").await;
    assert_eq!(delivery.trace_id, ingest.trace_id, "one trace");
    assert_eq!(
        delivery.parent_span_id, ingest.span_id,
        "the delivery is the ingest's child"
    );
    let received = target.received.lock().unwrap()[0].headers.clone();
    assert_eq!(
        received["traceparent"],
        format!(
            "00-{}-{}-01",
            hex::encode(&delivery.trace_id),
            hex::encode(&delivery.span_id)
        ),
        "the target continues the delivery's span"
    );
}

/// Every metric the dashboard and the alerts name is one the relay or the
/// agent really exports (read from their /metrics after some traffic).
#[tokio::test]
async fn the_dashboard_and_alerts_use_only_metrics_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let metrics_port = crate::helpers::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _agent = AgentProcess::start(
        &app,
        &tenant,
        "metrics",
        &target.url,
        &["--metrics-addr", &metrics_addr],
        dir.path(),
    );
    let response = app
        .deliver(
            &repository.id,
            &repository.secret,
            "push",
            "m-1",
            &crate::helpers::fixture("push"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    target.wait_for(1, Duration::from_secs(20)).await;
    let _ = app.request_token(&tenant.client_id, "wrong", None).await;
    // The database gauge is set by the health job within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut exported = app.metrics().await;
    exported.push_str(
        &reqwest::get(format!("http://{metrics_addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    // Declared families (a labelled family shows no sample until it has one)
    // with the series names their type gives them, and every sample.
    let mut names: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for line in exported.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next()
        {
            names.insert(name.to_owned());
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["dashboard.json", "alerts.yaml"] {
        let text =
            std::fs::read_to_string(format!("{root}/helm/hookrelay/files/monitoring/{file}"))
                .unwrap();
        let mut used: Vec<&str> = text
            .match_indices("hookrelay_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(!used.is_empty());
        for name in used {
            assert!(
                names.contains(name),
                "{file} uses {name}, which neither the relay nor the agent exports"
            );
        }
    }
}
