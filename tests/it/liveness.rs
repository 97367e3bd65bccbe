//! A frozen server or agent is noticed by keepalive on the other side, directly
//! and through Envoy, and the stream comes back.

use reqwest::StatusCode;
use serde_json::Value;

use crate::control_plane::WAIT;
use crate::helpers::{AgentProcess, TestRepository, TestTarget, eventually, fixture, sign};

/// A frozen server, or a frozen agent, is noticed by HTTP/2 keepalive pings on
/// the other side: no stream hangs on a dead link.
#[tokio::test]
async fn a_frozen_server_or_agent_is_noticed_and_the_stream_comes_back() {
    frozen_peers(false).await;
}

/// The same through Envoy: its pings on both sides find the frozen peer.
#[tokio::test]
async fn through_envoy_a_frozen_server_or_agent_is_noticed_too() {
    frozen_peers(true).await;
}

async fn frozen_peers(through_envoy: bool) {
    let logs = tempfile::tempdir().unwrap();
    let grpc_port = crate::helpers::free_port();
    let server = crate::helpers::ServerProcess::start(
        &[
            ("DATABASE_URL", crate::helpers::fresh_database().await),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.to_owned(),
            ),
            ("HOOKRELAY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
            ("HOOKRELAY_HTTP2_KEEPALIVE_INTERVAL", "1s".to_owned()),
            ("HOOKRELAY_HTTP2_KEEPALIVE_TIMEOUT", "1s".to_owned()),
        ],
        logs.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = crate::helpers::tenant_at(&http, &server.address, "acme").await;
    let created =
        crate::helpers::repository_at(&http, &server.address, &tenant.token, "acme/app").await;
    let repository = TestRepository {
        id: created["id"].as_str().unwrap().to_owned(),
        secret: created["webhook_secret"].as_str().unwrap().to_owned(),
    };
    let post = |delivery: &'static str| {
        let (http, url, secret) = (
            http.clone(),
            format!("{}/v1/webhooks/{}", server.address, repository.id),
            repository.secret.clone(),
        );
        async move {
            let body = fixture("push");
            let response = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", delivery)
                .header("x-hub-signature-256", sign(&secret, &body))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }
    };
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let token_url = format!("{}/oauth/token", server.address);
    let envoy = if through_envoy {
        let upstream = |address: &str| address.trim_start_matches("http://").to_owned();
        Some(
            crate::helpers::EnvoyProcess::start_with(
                0,
                &[upstream(&server.address)],
                &[format!("127.0.0.1:{grpc_port}")],
                &["--keepalive-interval", "1s", "--keepalive-timeout", "1s"],
                logs.path(),
            )
            .await,
        )
    } else {
        None
    };
    let agent = AgentProcess::start_at(
        &envoy.as_ref().map_or_else(
            || format!("http://127.0.0.1:{grpc_port}"),
            |e| e.address.clone(),
        ),
        &tenant,
        "ci",
        &target.url,
        &[
            "--token-url",
            &token_url,
            "--keepalive-interval",
            "1s",
            "--keepalive-timeout",
            "1s",
        ],
        logs.path(),
    );
    post("d-1").await;
    target.wait_for(1, WAIT).await;
    // Its ack in, so that what follows redelivers nothing (at-least-once
    // would: an ack lost with the frozen server means d-1 comes again).
    let consumer = || {
        let (http, url, token) = (
            http.clone(),
            format!("{}/v1/consumers/ci", server.address),
            tenant.token.clone(),
        );
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let consumer = &consumer;
    let pending = move |expected: i64| async move {
        (consumer().await["repositories"][0]["pending_events"] == expected).then_some(())
    };
    eventually(WAIT, "d-1 to be acked", || pending(0)).await;

    // The server freezes: the agent notices the dead link, and reconnects once
    // the server continues.
    server.signal("STOP");
    agent.wait_for_output("stream lost", 1, WAIT).await;
    server.signal("CONT");
    agent
        .wait_for_output(r#""message":"connected""#, 2, WAIT)
        .await;
    post("d-2").await;
    assert_eq!(target.wait_for(2, WAIT).await, ["d-1", "d-2"]);

    // The agent freezes: the server notices, and its stream stops counting.
    let connected = move |expected: i64| async move {
        (consumer().await["connected_streams"] == expected).then_some(())
    };
    eventually(WAIT, "the stream to be connected", || connected(1)).await;
    eventually(WAIT, "d-2 to be acked", || pending(0)).await;
    agent.signal("STOP");
    eventually(WAIT, "the server to drop the frozen agent's stream", || {
        connected(0)
    })
    .await;
    agent.signal("CONT");
    agent
        .wait_for_output(r#""message":"connected""#, 3, WAIT)
        .await;
    post("d-3").await;
    assert_eq!(target.wait_for(3, WAIT).await, ["d-1", "d-2", "d-3"]);
}
