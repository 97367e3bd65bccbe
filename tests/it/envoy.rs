//! The real Envoy in front of the relay: HTTP, gRPC and gRPC-Web on one port.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{
    AgentProcess, EnvoyProcess, ServerProcess, TEST_SECRET_KEY, TestTarget, TestTenant, authed,
    fixture, free_port, fresh_database, post_chunked, render_envoy, repository_at, sign, spawn_app,
    tenant_at, token_at, validate_envoy,
};

fn host(address: &str) -> &str {
    address.trim_start_matches("http://")
}

#[test]
fn every_rendered_config_is_one_envoy_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key_file) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    let (cert, key_file) = (cert.display().to_string(), key_file.display().to_string());
    let base = ["--listen", "127.0.0.1:10000", "--admin", "127.0.0.1:9901"];
    let variants: Vec<Vec<&str>> = vec![
        vec!["--http", "127.0.0.1:8080", "--grpc", "127.0.0.1:50051"],
        vec![
            "--http",
            "127.0.0.1:8080",
            "--http",
            "127.0.0.1:8081",
            "--grpc",
            "127.0.0.1:50051",
            "--grpc",
            "127.0.0.1:50052",
        ],
        vec![
            "--http",
            "127.0.0.1:8080",
            "--grpc",
            "127.0.0.1:50051",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key_file,
        ],
        vec![
            "--http",
            "[::1]:8080",
            "--grpc",
            "[::1]:50051",
            "--max-request-bytes",
            "1048576",
        ],
    ];
    for (i, variant) in variants.iter().enumerate() {
        let args: Vec<&str> = base
            .iter()
            .copied()
            .chain(variant.iter().copied())
            .collect();
        let config = dir.path().join(format!("variant-{i}.json"));
        std::fs::write(&config, render_envoy(&args)).unwrap();
        let (valid, output) = validate_envoy(&config);
        assert!(valid, "{args:?}:\n{output}");
    }
    let bad = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/render"))
        .args([
            "--listen",
            "nowhere",
            "--http",
            "127.0.0.1:1",
            "--grpc",
            "127.0.0.1:2",
            "--admin",
            "127.0.0.1:3",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--listen must be HOST:PORT"));
}

/// The sidecar config used by the Helm chart and Cloud Run is rendered from the
/// same source; this fails when someone edits a copy instead of envoy/render.
#[test]
fn the_generated_sidecar_configs_have_not_drifted_from_envoy_render() {
    for preset in ["sidecar", "sidecar-tls"] {
        let rendered = render_envoy(&["--preset", preset]);
        let path = format!(
            "{}/envoy/generated/{preset}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == rendered,
            "{path} drifted: run `envoy/render --preset {preset} > {path}`"
        );
        // The TLS preset names files that exist only in the pod: checked by
        // the TLS stream test below with files of its own.
        if preset == "sidecar" {
            let (valid, output) = validate_envoy(std::path::Path::new(&path));
            assert!(valid, "{output}");
        }
    }
}

/// What Google's load balancer meets in the pod with HTTP/2 to the backend:
/// Envoy serving TLS. A gRPC stream through it is carried for as long as the
/// relay keeps it (Envoy's gRPC routes have no idle or duration limit), and the
/// relay's maximum stream age then ends it cleanly, with its status intact.
#[tokio::test]
async fn a_grpc_stream_over_tls_lives_until_the_servers_maximum_age_then_ends_cleanly() {
    use hookrelay::grpc::proto::StreamEventsRequest;
    use hookrelay::grpc::proto::event_service_client::EventServiceClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    let max_age = Duration::from_secs(4);
    let app = crate::helpers::spawn_app_with(|c| c.limits.max_stream_age = max_age).await;
    let envoy = EnvoyProcess::start_with(
        0,
        &[host(&app.address).to_owned()],
        &[host(&app.grpc_address).to_owned()],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    let port = envoy.address.rsplit(':').next().unwrap();
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(key.cert.pem()))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .expect("TLS and HTTP/2 (ALPN h2) through Envoy");
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let opened = Instant::now();
    let mut stream = EventServiceClient::new(channel)
        .stream_events(authed(
            StreamEventsRequest {
                consumer: "through-tls".into(),
                ..Default::default()
            },
            &tenant.token,
        ))
        .await
        .unwrap()
        .into_inner();

    // Idle for a while, then an event: the stream is still carried.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = app
        .deliver(
            &repository.id,
            &repository.secret,
            "push",
            "late",
            &fixture("push"),
        )
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the event arrives")
        .expect("the stream is healthy")
        .expect("the stream is open");
    assert_eq!(event.delivery_id, "late");

    // Then the relay ends it at its maximum age, and Envoy passes the status on.
    let ended = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("the stream ends at the relay's maximum age");
    let status = ended.expect_err("ended with a gRPC status, not cut");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("maximum age"), "{status:?}");
    assert!(
        opened.elapsed() >= max_age.mul_f64(0.9),
        "not before the maximum age (less its jitter)"
    );
}

#[tokio::test]
async fn http_grpc_and_grpc_web_share_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let public_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let app = crate::helpers::spawn_app_with(|c| c.public_url = Some(public_url.clone())).await;
    let envoy = EnvoyProcess::start(
        port,
        &[host(&app.address).to_owned()],
        &[host(&app.grpc_address).to_owned()],
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let front = &envoy.address;

    // HTTP/1.1: signup, a token, a repository, a signed webhook.
    let signup = http
        .post(format!("{front}/v1/tenants"))
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.version(), reqwest::Version::HTTP_11);
    let signed_up: Value = signup.json().await.unwrap();
    let token = token_at(
        &http,
        front,
        signed_up["client_id"].as_str().unwrap(),
        signed_up["client_secret"].as_str().unwrap(),
    )
    .await;
    let repository = repository_at(&http, front, &token, "acme/app").await;
    let webhook_url = repository["webhook_url"].as_str().unwrap();
    assert!(webhook_url.starts_with(front.as_str()), "{webhook_url}");
    let secret = repository["webhook_secret"].as_str().unwrap();
    let body = fixture("push");
    let delivered = http
        .post(webhook_url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "via-envoy")
        .header("x-hub-signature-256", sign(secret, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), reqwest::StatusCode::ACCEPTED);
    let stored: Value = sqlx::query_scalar("select headers from event")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let names: Vec<&str> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("x-envoy-")
            || n.starts_with("x-forwarded-")
            || *n == "x-request-id"),
        "{names:?}"
    );

    // gRPC over h2c, with a bearer token.
    let mut client =
        hookrelay::grpc::proto::event_service_client::EventServiceClient::connect(front.clone())
            .await
            .unwrap();
    let request = hookrelay::grpc::proto::StreamEventsRequest {
        repository_ids: vec![],
        consumer: "h2c".into(),
        after_event_id: None,
        ..Default::default()
    };
    let mut stream = client
        .stream_events(authed(request, &token))
        .await
        .unwrap()
        .into_inner();
    let event = crate::helpers::next_event(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(
        (event.delivery_id.as_str(), event.body.as_slice()),
        ("via-envoy", body.as_slice())
    );

    // gRPC-Web, from Connect's published grpc-web transport in Node.
    let descriptors = dir.path().join("hookrelay.binpb");
    std::fs::write(&descriptors, hookrelay::grpc::proto::FILE_DESCRIPTOR_SET).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/grpc-web/stream-events.mjs"
    );
    let output = Command::new("node")
        .args([
            script,
            front,
            descriptors.to_str().unwrap(),
            &token,
            "browser",
            "1",
            repository["id"].as_str().unwrap(),
        ])
        .output()
        .await
        .expect("node runs (scripts/test installs the client's packages)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["listed"], 1);
    assert_eq!(answer["events"][0]["deliveryId"], "via-envoy");
    assert_eq!(answer["events"][0]["bodyLength"], body.len());

    // Health: the relay's readiness and gRPC health through the port, Envoy's own readiness.
    assert_eq!(
        http.get(format!("{front}/readyz"))
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
            host(front),
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .await
        .expect("grpcurl runs");
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("\"SERVING\""),
        "{health:?}"
    );
    assert_eq!(
        http.get(format!("{}/ready", envoy.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // JSON access logs, one line per request (Envoy flushes them periodically).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = envoy.access_log();
        let signup = log
            .iter()
            .any(|l| l["path"] == "/v1/tenants" && l["status"] == 201);
        let grpc_web = log
            .iter()
            .any(|l| l["path"] == "/hookrelay.v1.EventService/ListEvents");
        if signup && grpc_web {
            break;
        }
        assert!(Instant::now() < deadline, "access log incomplete: {log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_webhook_over_the_limit_is_refused_at_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let envoy = EnvoyProcess::start(
        0,
        &[host(&app.address).to_owned()],
        &[host(&app.grpc_address).to_owned()],
        dir.path(),
    )
    .await;
    let too_big = vec![b'x'; 25 * 1024 * 1024 + 1];
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/webhooks/{}",
            envoy.address,
            uuid::Uuid::new_v4()
        ))
        .header("content-type", "application/json")
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
    // Envoy answered: no relay was asked (the access log names no upstream).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = envoy.access_log();
        if let Some(entry) = log.iter().find(|e| e["status"] == 413) {
            assert!(
                entry["upstream"].is_null() || entry["upstream"] == "-",
                "{entry}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 413 in the access log: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Chunked, with no length announced: buffered up to the limit, then 413.
    let headers = [("content-type", "application/json".to_owned())];
    let too_big = vec![b'x'; 25 * 1024 * 1024 + 1];
    let path = format!("/v1/webhooks/{}", uuid::Uuid::new_v4());
    assert_eq!(
        post_chunked(&envoy.address, &path, &headers, &too_big).await,
        413
    );
}

/// Two replicas behind Envoy on one database. SIGTERM the replica holding the
/// agent's stream while webhooks keep arriving: no ingest 5xx, the agent
/// reconnects at once, and every accepted event reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database().await;
    let port = free_port();
    let front = format!("http://127.0.0.1:{port}");
    let grpc_ports = [free_port(), free_port()];
    let mut replicas = Vec::new();
    for grpc_port in grpc_ports {
        replicas.push(
            ServerProcess::start(
                &[
                    ("DATABASE_URL", database.clone()),
                    ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.into()),
                    ("HOOKRELAY_PUBLIC_URL", front.clone()),
                    ("HOOKRELAY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
                    ("HOOKRELAY_DRAIN_DELAY", "2s".into()),
                    ("HOOKRELAY_SHUTDOWN_GRACE", "10s".into()),
                ],
                dir.path(),
            )
            .await,
        );
    }
    let http_upstreams: Vec<String> = replicas
        .iter()
        .map(|r| host(&r.address).to_owned())
        .collect();
    let grpc_upstreams: Vec<String> = grpc_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let envoy = EnvoyProcess::start(port, &http_upstreams, &grpc_upstreams, dir.path()).await;

    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &front, "acme").await;
    let (client_id, client_secret, token) = (
        tenant.client_id.as_str(),
        tenant.client_secret.as_str(),
        tenant.token.clone(),
    );
    let repository = repository_at(&http, &front, &token, "acme/app").await;
    let (webhook_url, secret) = (
        repository["webhook_url"].as_str().unwrap().to_owned(),
        repository["webhook_secret"].as_str().unwrap().to_owned(),
    );

    // The agent reaches everything through the one port, tokens included.
    let target = TestTarget::start(vec![secret.clone()]).await;
    let tenant = TestTenant {
        tenant_id: String::new(),
        client_id: client_id.into(),
        client_secret: client_secret.into(),
        token: token.clone(),
    };
    let agent = AgentProcess::start_at(&front, &tenant, "ci", &target.url, &[], dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        if let Some(i) = replicas
            .iter()
            .position(|r| r.log().contains("stream opened"))
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never opened its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Webhooks keep arriving, four at a time, for six seconds.
    let body = fixture("ping");
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut posters = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (http, url, secret, body) = (
            http.clone(),
            webhook_url.clone(),
            secret.clone(),
            body.clone(),
        );
        posters.spawn(async move {
            let mut results = Vec::new();
            let mut n = 0;
            while Instant::now() < stop_at {
                let delivery = format!("w{worker}-{n:04}");
                n += 1;
                let status = match http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "ping")
                    .header("x-github-delivery", &delivery)
                    .header("x-hub-signature-256", sign(&secret, &body))
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                results.push((delivery, status));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            results
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[holder].signal("TERM");
    let results: Vec<(String, u16)> = posters.join_all().await.into_iter().flatten().collect();
    let status = replicas[holder].wait(Duration::from_secs(15)).await;

    assert!(
        status.success(),
        "the drained replica exits cleanly within its grace period"
    );
    let failed: Vec<&(String, u16)> = results
        .iter()
        .filter(|(_, s)| !(200..300).contains(s))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} webhooks failed during the restart: {failed:?}",
        failed.len(),
        results.len()
    );
    let accepted: BTreeSet<String> = results.iter().map(|(d, _)| d.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: BTreeSet<String> = target.deliveries().into_iter().collect();
        if accepted.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lost: {:?}",
            accepted.difference(&got).take(10).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent
        .wait_for_output("shutting down; reconnect now", 1, Duration::from_secs(5))
        .await;
    drop(envoy);
}
