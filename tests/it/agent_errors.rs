//! The agent fails fast, with one actionable line, on what retrying cannot
//! fix, and keeps retrying what it can.

use std::time::Duration;

use crate::helpers::{AgentProcess, TestTarget, TestTenant, free_port, spawn_app};

const EXIT: Duration = Duration::from_secs(15);

/// Posts one signed push and waits for the agent to deliver it to `target`.
async fn push_reaches(
    app: &crate::helpers::TestApp,
    repository: &crate::helpers::TestRepository,
    target: &TestTarget,
) {
    let response = app
        .deliver(
            &repository.id,
            &repository.secret,
            "push",
            "d-1",
            &hookrelay_testkit::fixture("push"),
        )
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    assert_eq!(target.wait_for(1, Duration::from_secs(20)).await, ["d-1"]);
}

async fn exits_with(agent: &mut AgentProcess, code: i32, needles: &[&str]) {
    let status = agent.wait(EXIT).await;
    let output = agent.output();
    assert_eq!(status.code(), Some(code), "{output}");
    for needle in needles {
        assert!(output.contains(needle), "`{needle}` not in:\n{output}");
    }
}

#[tokio::test]
async fn rejected_credentials_a_missing_scope_and_an_unknown_repository_end_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let target = TestTarget::start(vec![]).await;

    let wrong_secret = TestTenant {
        client_secret: "hrs_wrong".into(),
        ..tenant.clone()
    };
    let mut agent = AgentProcess::start(&app, &wrong_secret, "ci", &target.url, &[], dir.path());
    exits_with(
        &mut agent,
        1,
        &["rejected the client credentials", "HOOKRELAY_CLIENT_SECRET"],
    )
    .await;

    let unknown = TestTenant {
        client_id: "hrc_00000000000000000000000000000000".into(),
        ..tenant.clone()
    };
    let mut agent = AgentProcess::start(&app, &unknown, "ci", &target.url, &[], dir.path());
    exits_with(&mut agent, 1, &["HOOKRELAY_CLIENT_ID"]).await;

    let created: serde_json::Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &serde_json::json!({"name": "reader", "scopes": ["repos:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let no_events = TestTenant {
        client_id: created["client_id"].as_str().unwrap().into(),
        client_secret: created["client_secret"].as_str().unwrap().into(),
        ..tenant.clone()
    };
    let mut agent = AgentProcess::start(&app, &no_events, "ci", &target.url, &[], dir.path());
    exits_with(&mut agent, 1, &["events:read"]).await;

    let missing = uuid::Uuid::new_v4().to_string();
    let mut agent = AgentProcess::start(
        &app,
        &tenant,
        "ci",
        &target.url,
        &["--repository", &missing],
        dir.path(),
    );
    exits_with(&mut agent, 1, &["--repository"]).await;
}

#[tokio::test]
async fn a_target_or_server_that_is_not_a_url_is_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let mut agent = AgentProcess::start(&app, &tenant, "ci", "localhost:9000", &[], dir.path());
    exits_with(&mut agent, 2, &["--target", "http://localhost:9000"]).await;
    let mut agent = AgentProcess::start_at(
        "127.0.0.1:50051",
        &tenant,
        "ci",
        "http://127.0.0.1:9/hook",
        &[],
        dir.path(),
    );
    // In words a person uses, with the server's own kind of example (not a target's).
    exits_with(
        &mut agent,
        2,
        &[
            "--server",
            "did you mean http://127.0.0.1:50051?",
            "https://relay.example.com",
        ],
    )
    .await;
    assert!(
        !agent.output().contains("relative URL"),
        "{}",
        agent.output()
    );
}

#[tokio::test]
async fn a_server_that_is_not_hookrelay_ends_the_agent_and_an_unreachable_one_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let target = TestTarget::start(vec![]).await;
    // Some other web server (here, the webhook target itself) given as --server.
    let other = target.url.trim_end_matches("/hook").to_owned();
    let token_url = app.url("/oauth/token");
    let mut agent = AgentProcess::start_at(
        &other,
        &tenant,
        "ci",
        &target.url,
        &["--token-url", &token_url],
        dir.path(),
    );
    exits_with(&mut agent, 1, &["does not serve hookrelay's gRPC API"]).await;

    // Nothing listens there yet: retried, saying so, never "stream lost".
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut agent = AgentProcess::start_at(
        &closed,
        &tenant,
        "ci",
        &target.url,
        &["--token-url", &token_url],
        dir.path(),
    );
    agent.wait_for_output("cannot connect to", 2, EXIT).await;
    assert!(
        agent.child.try_wait().is_none(),
        "still running: {}",
        agent.output()
    );
    assert!(
        !agent.output().contains("stream lost"),
        "{}",
        agent.output()
    );
}

#[tokio::test]
async fn one_url_is_enough_the_token_endpoint_is_discovered() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    // The HTTP listener's URL alone: metadata, token and gRPC on one origin.
    let _relay = AgentProcess::start_at(&app.address, &tenant, "ci", &target.url, &[], dir.path());
    push_reaches(&app, &repository, &target).await;
}

/// As Kubernetes mounts it: the secret in a file; and the control plane's
/// filters from the command line.
#[tokio::test]
async fn the_secret_can_come_from_a_file_and_filters_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{}\n", tenant.client_secret)).unwrap();
    let _relay = AgentProcess::start(
        &app,
        &tenant,
        "ci",
        &target.url,
        &[
            "--client-secret-file",
            secret_file.to_str().unwrap(),
            "--event",
            "push",
            "--branch",
            "main",
        ],
        dir.path(),
    );
    let push_to = |full_ref: &str| {
        String::from_utf8(hookrelay_testkit::fixture("push"))
            .unwrap()
            .replace("refs/tags/simple-tag", full_ref)
            .into_bytes()
    };
    for (delivery, event, body) in [
        ("feature", "push", push_to("refs/heads/feature")),
        (
            "issue",
            "issues",
            hookrelay_testkit::fixture("issues.opened"),
        ),
        ("main", "push", push_to("refs/heads/main")),
    ] {
        let response = app
            .deliver(&repository.id, &repository.secret, event, delivery, &body)
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }
    assert_eq!(target.wait_for(1, Duration::from_secs(20)).await, ["main"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.deliveries(), ["main"], "only pushes to main");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let mut agent = AgentProcess::start(
        &app,
        &tenant,
        "ci",
        &target.url,
        &["--client-secret-file", empty.to_str().unwrap()],
        dir.path(),
    );
    exits_with(&mut agent, 1, &["--client-secret-file", "is empty"]).await;
}

/// --metrics-addr: Prometheus metrics, /healthz, and a /readyz that turns 503
/// while events wait behind a down target; the summary line says how many
/// wait and for how long.
#[tokio::test]
async fn the_agent_reports_health_metrics_pending_and_lag() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let down = Arc::new(AtomicBool::new(true));
    let target = TestTarget::answering(
        vec![repository.secret.clone()],
        Arc::new({
            let down = down.clone();
            move |_| {
                if down.load(Ordering::SeqCst) {
                    (503, Some("1"))
                } else {
                    (200, None)
                }
            }
        }),
        Duration::ZERO,
    )
    .await;
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let agent = AgentProcess::start(
        &app,
        &tenant,
        "ci",
        &target.url,
        &["--metrics-addr", &metrics_addr, "--ready-max-lag", "2s"],
        dir.path(),
    );
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let (http, url) = (http.clone(), format!("http://{metrics_addr}{path}"));
        async move {
            match http.get(url).send().await {
                Ok(response) => (response.status().as_u16(), response.text().await.unwrap()),
                Err(_) => (0, String::new()),
            }
        }
    };
    let deadline = std::time::Instant::now() + EXIT;
    while get("/readyz").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {}",
            agent.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get("/healthz").await.0, 200);

    // Three events stuck behind the down target: pending 3, lag growing, not ready.
    for i in 0..3 {
        let response = app
            .deliver(
                &repository.id,
                &repository.secret,
                "push",
                &format!("d-{i}"),
                &hookrelay_testkit::fixture("push"),
            )
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }
    let deadline = std::time::Instant::now() + EXIT;
    let (status, why) = loop {
        let answer = get("/readyz").await;
        if answer.0 == 503 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never unready: {}",
            agent.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503);
    assert!(why.contains("3 pending"), "{why}");
    let metrics = get("/metrics").await.1;
    assert!(metrics.contains("hookrelay_agent_pending 3"), "{metrics}");
    assert!(
        metrics.contains("hookrelay_agent_stream_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hookrelay_agent_retries_total"),
        "{metrics}"
    );
    agent.wait_for_output("\"pending\":3", 1, EXIT).await;
    let output = agent.output();
    let summary = output
        .lines()
        .rev()
        .find(|l| l.contains("relay summary"))
        .unwrap();
    let lag: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert!(lag["lag_ms"].as_u64().unwrap() >= 1000, "{summary}");

    // The target is back: delivered in order, nothing pending, ready again.
    down.store(false, Ordering::SeqCst);
    assert_eq!(
        target.wait_for(3, Duration::from_secs(20)).await,
        ["d-0", "d-1", "d-2"]
    );
    let deadline = std::time::Instant::now() + EXIT;
    while get("/readyz").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again: {}",
            agent.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = get("/metrics").await.1;
    assert!(
        metrics.contains("hookrelay_agent_deliveries_total{outcome=\"delivered\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("hookrelay_agent_pending 0"), "{metrics}");
    assert!(
        metrics.contains("hookrelay_agent_delivery_duration_seconds_count 3"),
        "{metrics}"
    );
}

/// `--config agent.toml` holds the settings; a flag on the command line wins
/// over the file, and a key the agent does not know is refused, naming it.
#[tokio::test]
async fn settings_come_from_a_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nclient_id = \"{}\"\nconsumer = \"from-file\"\nevent = [\"push\"]\nconcurrency = 2\n",
            app.address, tenant.client_id
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(crate::helpers::agent_binary());
    command
        .args(["--config", config.to_str().unwrap()])
        .args([
            "--consumer",
            "from-flag",
            "--target",
            &target.url,
            "--summary-interval",
            "1s",
        ])
        .env("HOOKRELAY_CLIENT_SECRET", &tenant.client_secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _agent = hookrelay_testkit::ChildGuard::spawn(&mut command).unwrap();
    push_reaches(&app, &repository, &target).await;
    let consumers: serde_json::Value = app
        .get("/v1/consumers", &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        consumers["items"][0]["name"], "from-flag",
        "the flag wins over the file"
    );
    assert_eq!(
        consumers["items"][0]["filter"]["event_types"],
        serde_json::json!(["push"])
    );

    std::fs::write(
        &config,
        "server = \"http://127.0.0.1:1\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(crate::helpers::agent_binary())
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown setting `colour`"), "{stderr}");
}

/// A `--server` that is not hookrelay and answers 501 to everything (an
/// unconfigured proxy, say) ends the agent at once, as a 404 does: no wait
/// will change it. A refused connection is said in words, without the chain.
#[tokio::test]
async fn a_server_answering_501_ends_the_agent_and_refusals_are_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let answering = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let mut agent = AgentProcess::start_at(
        &address,
        &tenant,
        "ci",
        "http://127.0.0.1:9/hook",
        &[],
        dir.path(),
    );
    exits_with(&mut agent, 1, &["501 Not Implemented", "is not hookrelay"]).await;
    answering.abort();

    let closed = format!("http://127.0.0.1:{}", free_port());
    let agent = AgentProcess::start_at(
        &closed,
        &tenant,
        "ci",
        "http://127.0.0.1:9/hook",
        &[],
        dir.path(),
    );
    agent.wait_for_output("cannot connect to", 1, EXIT).await;
    let output = agent.output();
    assert!(output.contains("Connection refused"), "{output}");
    assert!(
        !output.contains("os error") && !output.contains("client error (Connect)"),
        "{output}"
    );

    // A target that is down: the line names it.
    let repository = app.repository(&tenant, "acme/app").await;
    app.push(&repository, "down-1").await;
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let agent = AgentProcess::start(&app, &tenant, "ci", &down, &[], dir.path());
    let named = format!("cannot reach the target {down}: Connection refused");
    agent.wait_for_output(&named, 1, EXIT).await;
}
