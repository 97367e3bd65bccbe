//! The console's live data: the watch RPCs, and gRPC-Web on the HTTP listener's
//! own origin.

use hookrelay::grpc::proto::{AckEventsRequest, AckOutcome, EventAck};
use serde_json::Value;

use crate::control_plane::{WAIT, push_to};
use crate::helpers::{authed, fixture, next_event, spawn_app};

/// What the console shows live: new events, delivery outcomes and consumer
/// status, over the watch RPCs, which create no consumer and move no cursor.
#[tokio::test]
async fn watches_show_events_deliveries_and_consumers_live_and_write_nothing() {
    use hookrelay::grpc::proto::{
        WatchConsumersRequest, WatchDeliveriesRequest, WatchEventsRequest,
    };
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let before = app
        .post_event(&repository, "push", "old", &fixture("push"))
        .await;
    let other = app.tenant("globex").await;
    let foreign = app.repository(&other, "globex/app").await;
    let mut client = app.grpc().await;

    let mut events = client
        .watch_events(authed(WatchEventsRequest::default(), &tenant.token))
        .await
        .unwrap()
        .into_inner();
    let mut pushes = client
        .watch_events(authed(
            WatchEventsRequest {
                event_types: vec!["push".into()],
                after_event_id: Some(0),
                ..Default::default()
            },
            &tenant.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut consumers = client
        .watch_consumers(authed(WatchConsumersRequest::default(), &tenant.token))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, consumers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.consumers.is_empty(), "at once, even when empty");

    app.post_event(&foreign, "push", "foreign", &fixture("push"))
        .await;
    let issue = app
        .post_event(&repository, "issues", "issue", &fixture("issues.opened"))
        .await;
    let push = app
        .post_event(&repository, "push", "new", &push_to("refs/heads/main"))
        .await;
    let seen = tokio::time::timeout(WAIT, events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.id, issue, "from now on, and never another tenant's");
    let seen = tokio::time::timeout(WAIT, events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (seen.id, seen.event_type.as_str(), seen.branch.as_deref()),
        (push, "push", Some("main"))
    );
    assert_eq!(seen.size, push_to("refs/heads/main").len() as i64);
    let first_push = tokio::time::timeout(WAIT, pushes.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let second_push = tokio::time::timeout(WAIT, pushes.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first_push.id, second_push.id),
        (before, push),
        "after 0, pushes only"
    );

    let mut deliveries = client
        .watch_deliveries(authed(
            WatchDeliveriesRequest {
                event_id: Some(push),
            },
            &tenant.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut stream = app
        .open_filtered(&tenant.token, "ci", (&[], &[], &[]))
        .await;
    // Snapshots come whenever something changes: wait for the connected one.
    let snapshot = loop {
        let snapshot = tokio::time::timeout(WAIT, consumers.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(consumer) = snapshot
            .consumers
            .first()
            .filter(|c| c.connected_streams == 1)
        {
            break consumer.clone();
        }
    };
    assert_eq!(snapshot.name, "ci");
    assert_eq!(snapshot.repositories[0].pending_events, 3);
    for _ in 0..3 {
        next_event(&mut stream, WAIT).await;
    }
    app.grpc()
        .await
        .ack_events(authed(
            AckEventsRequest {
                consumer: "ci".into(),
                acks: vec![EventAck {
                    repository_id: repository.id.clone(),
                    event_id: push,
                    outcome: AckOutcome::Failed.into(),
                    failure_reason: "the target answered 404 Not Found".into(),
                    status_code: Some(404),
                    attempts: Some(1),
                    duration_ms: Some(4),
                    ..Default::default()
                }],
            },
            &tenant.token,
        ))
        .await
        .unwrap();
    let record = tokio::time::timeout(WAIT, deliveries.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            record.event_id,
            record.consumer.as_str(),
            record.outcome.as_str(),
            record.status_code
        ),
        (push, "ci", "failed", Some(404))
    );
    drop(stream);

    // Watching wrote nothing: the only consumer is the one that streamed.
    let list = app.get_json("/v1/consumers", &tenant.token).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let no_events_scope = app
        .token(&tenant.client_id, &tenant.client_secret, Some("repos:read"))
        .await;
    let refused = client
        .watch_events(authed(WatchEventsRequest::default(), &no_events_scope))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let foreign_repository = client
        .watch_events(authed(
            WatchEventsRequest {
                repository_ids: vec![foreign.id.clone()],
                ..Default::default()
            },
            &tenant.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign_repository.code(), tonic::Code::NotFound);
}

/// The HTTP listener serves gRPC-Web as well, so the console reaches its live
/// data on its own origin without Envoy; the API's CORS stays closed.
#[tokio::test]
async fn the_http_listener_answers_grpc_web_on_its_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    app.post_event(&repository, "push", "d-1", &fixture("push"))
        .await;
    let descriptors = dir.path().join("hookrelay.binpb");
    std::fs::write(&descriptors, hookrelay::grpc::proto::FILE_DESCRIPTOR_SET).unwrap();
    let output = tokio::process::Command::new("node")
        .args([
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/grpc-web/stream-events.mjs"
            ),
            &app.address,
            descriptors.to_str().unwrap(),
            &tenant.token,
            "browser",
            "1",
            &repository.id,
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
    assert_eq!(answer["events"][0]["deliveryId"], "d-1");

    // Another origin gets no CORS grant, for gRPC-Web or the API.
    for path in ["/hookrelay.v1.EventService/WatchEvents", "/v1/consumers"] {
        let preflight = app
            .http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web",
            )
            .send()
            .await
            .unwrap();
        assert!(
            preflight
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{path}: {:?}",
            preflight.headers()
        );
    }
}
