//! SIGTERM: not ready first (while still serving), then streams end with
//! "reconnect now", then exit within the grace period.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::Command;

use crate::helpers::{
    ServerProcess, TEST_SECRET_KEY, authed, free_port, fresh_database, tenant_at,
};

#[tokio::test]
async fn sigterm_drains_then_ends_streams_then_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut server = ServerProcess::start(
        &[
            ("DATABASE_URL", fresh_database().await),
            ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.into()),
            ("HOOKRELAY_GRPC_ADDR", grpc.clone()),
            ("HOOKRELAY_DRAIN_DELAY", "3s".into()),
            ("HOOKRELAY_SHUTDOWN_GRACE", "8s".into()),
        ],
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let token = &tenant_at(&http, &server.address, "acme").await.token;
    let mut client = hookrelay::grpc::proto::event_service_client::EventServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    let request = hookrelay::grpc::proto::StreamEventsRequest {
        repository_ids: vec![],
        consumer: "ci".into(),
        after_event_id: None,
        ..Default::default()
    };
    let mut stream = client
        .stream_events(authed(request, token))
        .await
        .unwrap()
        .into_inner();

    let terminated = Instant::now();
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Draining: not ready, NOT_SERVING, but still serving requests.
    assert_eq!(
        http.get(format!("{}/readyz", server.address))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        http.get(format!("{}/healthz", server.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let health = Command::new("grpcurl")
        .args([
            "-plaintext",
            "-d",
            r#"{"service":"hookrelay.v1.EventService"}"#,
            &grpc,
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .await
        .expect("grpcurl runs (scripts/test installs it)");
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("NOT_SERVING"),
        "{health:?}"
    );
    let signup = http
        .post(format!("{}/v1/tenants", server.address))
        .json(&json!({"name": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        signup.status(),
        201,
        "requests are still served while draining"
    );

    // After the drain delay the stream ends with UNAVAILABLE: reconnect now.
    let ended = tokio::time::timeout(Duration::from_secs(8), stream.message())
        .await
        .expect("the stream ends");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("reconnect now"), "{status:?}");
    assert!(
        terminated.elapsed() >= Duration::from_secs(3),
        "streams end after the drain delay"
    );

    assert!(server.wait(Duration::from_secs(10)).await.success());
    assert!(
        terminated.elapsed() < Duration::from_secs(8),
        "exited within the grace period: {:?}",
        terminated.elapsed()
    );
}

#[tokio::test]
async fn probe_checks_readiness_and_grpc_health() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", fresh_database().await),
            ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.into()),
            ("HOOKRELAY_GRPC_ADDR", grpc.clone()),
        ],
        dir.path(),
    )
    .await;
    let probe = |http: String, grpc: String| async move {
        crate::helpers::hookrelay_async()
            .args(["probe", "--http", &http, "--grpc", &grpc])
            .output()
            .await
            .unwrap()
    };
    let ok = probe(
        format!("{}/readyz", server.address),
        format!("http://{grpc}"),
    )
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = probe(format!("{}/nope", server.address), format!("http://{grpc}")).await;
    assert!(!wrong.status.success());
    let down = probe(
        format!("{}/readyz", server.address),
        format!("http://127.0.0.1:{}", free_port()),
    )
    .await;
    assert!(!down.status.success());
}

/// With nothing routing traffic here (no Kubernetes, no Cloud Run), Ctrl-C
/// stops at once: no drain delay. Draining, a second Ctrl-C exits now.
#[tokio::test]
async fn ctrl_c_stops_at_once_where_nothing_routes_here_and_a_second_one_exits_now() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database().await;
    let base = [
        ("DATABASE_URL", database.clone()),
        ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.to_owned()),
    ];
    let mut server = ServerProcess::start(&base, dir.path()).await;
    server.signal("INT");
    assert!(server.wait(Duration::from_secs(20)).await.success());
    assert!(
        server.log().contains("\"drain_delay_ms\":0"),
        "auto is 0 s outside Kubernetes and Cloud Run: {}",
        server.log()
    );

    // In Kubernetes (KUBERNETES_SERVICE_HOST set), auto is the 5 s drain.
    let mut in_kubernetes = base.to_vec();
    in_kubernetes.push(("KUBERNETES_SERVICE_HOST", "10.0.0.1".to_owned()));
    in_kubernetes.push(("HOOKRELAY_SHUTDOWN_GRACE", "60s".to_owned()));
    let mut server = ServerProcess::start(&in_kubernetes, dir.path()).await;
    server.signal("INT");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("shutting down") {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.log().contains("\"drain_delay_ms\":5000"),
        "{}",
        server.log()
    );
    // Draining for 5 s, then 55 s of grace: a second Ctrl-C ends it now.
    server.signal("INT");
    assert!(server.wait(Duration::from_secs(20)).await.success());
    assert!(
        server.log().contains("a second signal: exiting now"),
        "{}",
        server.log()
    );
}
