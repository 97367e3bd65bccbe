//! The delivery control plane: consumers and their lag, events and their
//! deliveries, redelivery, seek, filters and stall detection, against the real
//! server, PostgreSQL, gRPC clients and the real agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hookrelay::grpc::proto::{AckEventsRequest, AckOutcome, Event, EventAck, StreamEventsRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Streaming;

use crate::helpers::{
    RelayProcess, TestApp, TestRepository, TestTarget, assert_error, authed, fixture, next_event,
    sign, spawn_app, spawn_app_on, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(20);

/// A stream's filter: event types, branches, tags.
type Filter<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str]);

/// GitHub's push payload with its `ref` set to `full_ref` (the fixture is a tag push).
fn push_to(full_ref: &str) -> Vec<u8> {
    String::from_utf8(fixture("push"))
        .unwrap()
        .replace("refs/tags/simple-tag", full_ref)
        .into_bytes()
}

/// Posts `body` as GitHub would; returns the event id.
async fn post(
    app: &TestApp,
    repository: &TestRepository,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> i64 {
    let response = app
        .deliver(&repository.id, &repository.secret, event, delivery, body)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json::<Value>().await.unwrap()["event_id"]
        .as_i64()
        .unwrap()
}

/// A form-encoded delivery (GitHub's other content type); returns the event id.
async fn post_form(
    app: &TestApp,
    repository: &TestRepository,
    delivery: &str,
    json_body: &[u8],
) -> i64 {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(json_body).unwrap())
        .finish();
    let response = app
        .http
        .post(app.url(&format!("/v1/webhooks/{}", repository.id)))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            sign(&repository.secret, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json::<Value>().await.unwrap()["event_id"]
        .as_i64()
        .unwrap()
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.get(path, token).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

/// Polls `check` until it returns Some, or panics after `WAIT` naming `what`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open(app: &TestApp, token: &str, consumer: &str, filter: Filter<'_>) -> Streaming<Event> {
    let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    let request = StreamEventsRequest {
        consumer: consumer.into(),
        event_types: owned(filter.0),
        branches: owned(filter.1),
        tags: owned(filter.2),
        ..Default::default()
    };
    app.grpc()
        .await
        .stream_events(authed(request, token))
        .await
        .unwrap()
        .into_inner()
}

/// The ids the stream sends until it has been quiet for a moment.
async fn drain(stream: &mut Streaming<Event>) -> Vec<i64> {
    let mut ids = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_millis(700), stream.message()).await
    {
        ids.push(message.expect("the stream is healthy").expect("open").id);
    }
    ids
}

async fn ack(app: &TestApp, token: &str, consumer: &str, repository: &str, ids: &[i64]) {
    let acks = ids
        .iter()
        .map(|id| EventAck {
            repository_id: repository.into(),
            event_id: *id,
            outcome: AckOutcome::Delivered.into(),
            ..Default::default()
        })
        .collect();
    app.grpc()
        .await
        .ack_events(authed(
            AckEventsRequest {
                consumer: consumer.into(),
                acks,
            },
            token,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_consumer_shows_its_streams_filter_and_what_it_has_yet_to_deliver() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut stream = open(&app, &tenant.token, "ci", (&["push"], &["main"], &[])).await;
    let first = post(
        &app,
        &repository,
        "push",
        "d-1",
        &push_to("refs/heads/main"),
    )
    .await;
    post(
        &app,
        &repository,
        "push",
        "d-2",
        &push_to("refs/heads/feature"),
    )
    .await;
    let third = post(
        &app,
        &repository,
        "push",
        "d-3",
        &push_to("refs/heads/main"),
    )
    .await;
    post(
        &app,
        &repository,
        "issues",
        "d-4",
        &fixture("issues.opened"),
    )
    .await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, first);
    assert_eq!(next_event(&mut stream, WAIT).await.id, third);

    let consumer = get_json(&app, "/v1/consumers/ci", &tenant.token).await;
    assert_eq!(consumer["name"], "ci");
    assert_eq!(consumer["connected_streams"], 1);
    assert_eq!(consumer["stalled"], false);
    assert!(consumer["last_seen_at"].is_string(), "{consumer}");
    assert_eq!(
        consumer["filter"],
        json!({"event_types": ["push"], "branches": ["main"], "tags": []})
    );
    let position = &consumer["repositories"][0];
    assert_eq!(position["repository_id"], repository.id.as_str());
    assert_eq!(position["acked_event_id"], Value::Null);
    assert_eq!(
        position["pending_events"], 2,
        "only what the filter selects"
    );
    assert!(position["oldest_pending_received_at"].is_string());

    ack(&app, &tenant.token, "ci", &repository.id, &[first]).await;
    let consumer = get_json(&app, "/v1/consumers/ci", &tenant.token).await;
    assert_eq!(consumer["repositories"][0]["acked_event_id"], first);
    assert_eq!(consumer["repositories"][0]["pending_events"], 1);
    ack(&app, &tenant.token, "ci", &repository.id, &[third]).await;
    let list = get_json(&app, "/v1/consumers", &tenant.token).await;
    assert_eq!(list["consumers"].as_array().unwrap().len(), 1);
    assert_eq!(list["consumers"][0]["repositories"][0]["pending_events"], 0);
    assert_eq!(
        list["consumers"][0]["repositories"][0]["oldest_pending_received_at"],
        Value::Null
    );

    drop(stream);
    eventually("the stream to count as closed", || async {
        let consumer = get_json(&app, "/v1/consumers/ci", &tenant.token).await;
        (consumer["connected_streams"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn filters_select_by_type_branch_and_tag_on_real_payloads() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let main = post(
        &app,
        &repository,
        "push",
        "main",
        &push_to("refs/heads/main"),
    )
    .await;
    let tag = post(&app, &repository, "push", "tag", &fixture("push")).await;
    let pull = post(
        &app,
        &repository,
        "pull_request",
        "pr",
        &fixture("pull_request.opened"),
    )
    .await;
    let form = post_form(&app, &repository, "form", &push_to("refs/heads/feature/x")).await;
    let run = post(
        &app,
        &repository,
        "workflow_run",
        "run",
        &fixture("workflow_run.completed"),
    )
    .await;
    let create = post(&app, &repository, "create", "create", &fixture("create")).await;
    let issue = post(
        &app,
        &repository,
        "issues",
        "issue",
        &fixture("issues.opened"),
    )
    .await;

    // The branch or tag of each, as stored once at ingest.
    let listed = get_json(&app, "/v1/events?limit=10", &tenant.token).await;
    let refs: Vec<(i64, Value, Value)> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_i64().unwrap(),
                e["branch"].clone(),
                e["tag"].clone(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            (issue, Value::Null, Value::Null),
            (create, Value::Null, json!("simple-tag")),
            (run, json!("master"), Value::Null),
            (form, json!("feature/x"), Value::Null),
            (pull, json!("master"), Value::Null),
            (tag, Value::Null, json!("simple-tag")),
            (main, json!("main"), Value::Null),
        ]
    );

    let cases: [(&str, Filter<'_>, Vec<i64>); 6] = [
        (
            "all",
            (&[], &[], &[]),
            vec![main, tag, pull, form, run, create, issue],
        ),
        ("main", (&[], &["main"], &[]), vec![main]),
        ("master", (&[], &["master"], &[]), vec![pull, run]),
        ("features", (&["push"], &["feature/*"], &[]), vec![form]),
        ("tags", (&[], &[], &["simple-*"]), vec![tag, create]),
        (
            "pushes-to-main-or-tags",
            (&["push"], &["main"], &["v*", "simple-?ag"]),
            vec![main, tag],
        ),
    ];
    for (consumer, filter, expected) in cases {
        let mut stream = open(&app, &tenant.token, consumer, filter).await;
        assert_eq!(drain(&mut stream).await, expected, "{consumer}");
        let status = get_json(&app, &format!("/v1/consumers/{consumer}"), &tenant.token).await;
        assert_eq!(
            status["repositories"][0]["pending_events"],
            expected.len(),
            "{consumer}: pending counts what the filter selects"
        );
    }

    // A bad pattern is refused, naming its field.
    let request = StreamEventsRequest {
        consumer: "bad".into(),
        branches: vec![String::new()],
        ..Default::default()
    };
    let status = app
        .grpc()
        .await
        .stream_events(authed(request, &tenant.token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("branches"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn globs_mean_the_same_in_memory_and_in_sql() {
    let app = spawn_app().await;
    let cases = [
        ("main", "main", true),
        ("main", "mainline", false),
        ("release/*", "release/1.x", true),
        ("release/*", "release/1.x/hotfix", true),
        ("release/*", "releases", false),
        ("v?.*", "v1.2", true),
        ("v?.*", "v12.2", false),
        ("100%", "100%", true),
        ("100%", "1000", false),
        ("a_b", "a_b", true),
        ("a_b", "axb", false),
        ("back\\slash", "back\\slash", true),
        ("*", "", true),
        ("Main", "main", false),
    ];
    for (glob, value, expected) in cases {
        let filter =
            hookrelay::domain::EventFilter::parse(vec![glob.into()], vec![], vec![]).unwrap();
        assert_eq!(
            filter.matches(value, None, None),
            expected,
            "{glob} ~ {value} in memory"
        );
        let like = filter.likes().event_types.remove(0);
        let in_sql: bool = sqlx::query_scalar("select $1 like $2")
            .bind(value)
            .bind(&like)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(in_sql, expected, "{glob} ~ {value} in SQL ({like})");
    }
}

#[tokio::test]
async fn seek_back_replays_on_the_open_stream_and_seek_forward_skips() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let other = app.repository(&tenant, "acme/other").await;
    let ids: Vec<i64> = post_pushes(&app, &repository, "a", 3).await;
    let mut stream = open(&app, &tenant.token, "ci", (&[], &[], &[])).await;
    for id in &ids {
        assert_eq!(next_event(&mut stream, WAIT).await.id, *id);
    }
    ack(&app, &tenant.token, "ci", &repository.id, &ids).await;

    // Back: the open stream sends the events after the seek again, at once.
    let response = app
        .post_json(
            "/v1/consumers/ci/seek",
            Some(&tenant.token),
            &json!({"repository_id": repository.id, "after_event_id": ids[0]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let consumer: Value = response.json().await.unwrap();
    assert_eq!(consumer["repositories"][0]["acked_event_id"], ids[0]);
    assert_eq!(consumer["repositories"][0]["pending_events"], 2);
    assert_eq!(next_event(&mut stream, WAIT).await.id, ids[1]);
    assert_eq!(next_event(&mut stream, WAIT).await.id, ids[2]);
    // Another repository's events are not sent twice, and live events follow.
    let elsewhere = post(&app, &other, "push", "b-0", &fixture("push")).await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, elsewhere);
    drop(stream);

    // Forward: events after the cursor are skipped.
    let later = post_pushes(&app, &repository, "c", 3).await;
    let response = app
        .post_json(
            "/v1/consumers/ci/seek",
            Some(&tenant.token),
            &json!({"repository_id": repository.id, "after_event_id": later[1]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = open(&app, &tenant.token, "ci", (&[], &[], &[])).await;
    assert_eq!(drain(&mut stream).await, [elsewhere, later[2]]);

    // Past the newest event, unknown repositories and consumers, bad bodies.
    let seek = |body: Value, consumer: &'static str| {
        let (app, token) = (&app, tenant.token.clone());
        async move {
            app.post_json(
                &format!("/v1/consumers/{consumer}/seek"),
                Some(&token),
                &body,
            )
            .await
        }
    };
    let past = seek(
        json!({"repository_id": repository.id, "after_event_id": later[2] + 100}),
        "ci",
    )
    .await;
    assert_error(past, StatusCode::BAD_REQUEST, "invalid_request").await;
    let unknown = seek(
        json!({"repository_id": uuid::Uuid::new_v4(), "after_event_id": 0}),
        "ci",
    )
    .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let nobody = seek(
        json!({"repository_id": repository.id, "after_event_id": 0}),
        "nobody",
    )
    .await;
    assert_error(nobody, StatusCode::NOT_FOUND, "not_found").await;
    let negative = seek(
        json!({"repository_id": repository.id, "after_event_id": -1}),
        "ci",
    )
    .await;
    assert_error(negative, StatusCode::BAD_REQUEST, "invalid_request").await;
    let consumer = get_json(&app, "/v1/consumers/ci", &tenant.token).await;
    assert_eq!(
        consumer["repositories"][0]["acked_event_id"], later[1],
        "refused seeks changed nothing"
    );
}

async fn post_pushes(
    app: &TestApp,
    repository: &TestRepository,
    prefix: &str,
    n: usize,
) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            post(
                app,
                repository,
                "push",
                &format!("{prefix}-{i}"),
                &fixture("push"),
            )
            .await,
        );
    }
    ids
}

#[tokio::test]
async fn a_seek_behind_retention_is_refused_and_filtered_consumers_outlive_retention() {
    let app = spawn_app_with(|config| config.retention = Duration::from_secs(2)).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let first = post(
        &app,
        &repository,
        "push",
        "m-1",
        &push_to("refs/heads/main"),
    )
    .await;
    ack(&app, &tenant.token, "everything", &repository.id, &[first]).await;
    let mut stream = open(&app, &tenant.token, "main-only", (&[], &["main"], &[])).await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, first);
    ack(&app, &tenant.token, "main-only", &repository.id, &[first]).await;
    drop(stream);
    let skipped = post(
        &app,
        &repository,
        "push",
        "f-1",
        &push_to("refs/heads/feature"),
    )
    .await;
    eventually("retention to delete the events", || async {
        (app.event_count().await == 0).then_some(())
    })
    .await;

    // The consumer whose filter skipped the deleted event lost nothing.
    let mut stream = open(&app, &tenant.token, "main-only", (&[], &["main"], &[])).await;
    let live = post(
        &app,
        &repository,
        "push",
        "m-2",
        &push_to("refs/heads/main"),
    )
    .await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, live);
    // The one that wanted it did: it is told, as before.
    let status = app
        .grpc()
        .await
        .stream_events(authed(
            StreamEventsRequest {
                consumer: "everything".into(),
                ..Default::default()
            },
            &tenant.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let behind = app
        .post_json(
            "/v1/consumers/everything/seek",
            Some(&tenant.token),
            &json!({"repository_id": repository.id, "after_event_id": first}),
        )
        .await;
    let body = assert_error(behind, StatusCode::GONE, "behind_retention").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&skipped.to_string()),
        "{body}"
    );
    let forward = app
        .post_json(
            "/v1/consumers/everything/seek",
            Some(&tenant.token),
            &json!({"repository_id": repository.id, "after_event_id": skipped}),
        )
        .await;
    assert_eq!(forward.status(), StatusCode::OK);
}

#[tokio::test]
async fn events_list_newest_first_in_pages_and_show_their_exact_bytes() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let other = app.repository(&tenant, "acme/other").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            post(
                &app,
                &repository,
                "push",
                &format!("d-{i}"),
                &fixture("push"),
            )
            .await,
        );
    }
    let pull = post(
        &app,
        &other,
        "pull_request",
        "pr",
        &fixture("pull_request.opened"),
    )
    .await;

    let page = get_json(&app, "/v1/events?limit=4", &tenant.token).await;
    let listed: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [pull, ids[4], ids[3], ids[2]]);
    assert_eq!(page["next_before_event_id"], ids[2]);
    let page = get_json(
        &app,
        &format!("/v1/events?limit=4&before_event_id={}", ids[2]),
        &tenant.token,
    )
    .await;
    let listed: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [ids[1], ids[0]]);
    assert_eq!(page["next_before_event_id"], Value::Null);
    let pulls = get_json(&app, "/v1/events?event_type=pull_request", &tenant.token).await;
    assert_eq!(pulls["events"].as_array().unwrap().len(), 1);
    let in_one = get_json(
        &app,
        &format!("/v1/events?repository_id={}", other.id),
        &tenant.token,
    )
    .await;
    let event = &in_one["events"][0];
    assert_eq!(event["id"], pull);
    assert_eq!(event["repository_id"], other.id.as_str());
    assert_eq!(event["provider"], "github");
    assert_eq!(event["event_type"], "pull_request");
    assert_eq!(event["delivery_id"], "pr");
    assert_eq!(event["size"], fixture("pull_request.opened").len());
    assert!(event["received_at"].is_string());

    let shown = get_json(&app, &format!("/v1/events/{pull}"), &tenant.token).await;
    let body = base64::engine::general_purpose::STANDARD
        .decode(shown["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, fixture("pull_request.opened"));
    assert!(
        shown["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["x-github-event", "pull_request"])),
        "{}",
        shown["headers"]
    );
    assert_eq!(shown["branch"], "master");

    for bad in ["limit=abc", "limit=0", "before_event_id=-3"] {
        let response = app.get(&format!("/v1/events?{bad}"), &tenant.token).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    for missing in [
        "/v1/events/999999",
        "/v1/events/abc",
        "/v1/events/999999/deliveries",
    ] {
        assert_error(
            app.get(missing, &tenant.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
}

#[tokio::test]
async fn a_delivery_the_target_refused_with_404_is_redelivered_once_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    // A typo in the target's route: the first request gets 404, later ones 200.
    let target = TestTarget::answering(
        vec![repository.secret.clone()],
        Arc::new(|n| if n == 0 { (404, None) } else { (200, None) }),
        Duration::ZERO,
    )
    .await;
    let _relay = RelayProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    let lost = post(&app, &repository, "push", "lost", &fixture("push")).await;
    let next_one = post(&app, &repository, "push", "next", &fixture("push")).await;
    assert_eq!(target.wait_for(1, WAIT).await, ["next"]);

    let failed = eventually("the failure to be recorded", || async {
        let failed = get_json(&app, "/v1/deliveries/failed?consumer=ci", &tenant.token).await;
        failed.as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(failed["event_id"], lost);
    assert_eq!(failed["event_type"], "push");
    assert_eq!(failed["delivery_id"], "lost");
    assert!(
        failed["reason"].as_str().unwrap().contains("404"),
        "{failed}"
    );
    let deliveries = get_json(
        &app,
        &format!("/v1/events/{lost}/deliveries"),
        &tenant.token,
    )
    .await;
    let record = &deliveries["deliveries"][0];
    assert_eq!(record["consumer"], "ci");
    assert_eq!(record["outcome"], "failed");
    assert_eq!(record["status_code"], 404);
    assert_eq!(record["attempts"], 1);
    assert!(record["duration_ms"].is_i64());
    assert!(record["error"].as_str().unwrap().contains("404"));

    let response = app
        .post_json(
            &format!("/v1/events/{lost}/redeliver"),
            Some(&tenant.token),
            &json!({"consumer": "ci"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let redelivery_id = response.json::<Value>().await.unwrap()["redelivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(target.wait_for(2, WAIT).await, ["next", "lost"]);
    let received = target.received.lock().unwrap()[1].clone();
    assert_eq!(
        received.body,
        fixture("push"),
        "byte for byte, as the first time"
    );

    let deliveries = eventually("the redelivery's outcome", || async {
        let deliveries = get_json(
            &app,
            &format!("/v1/events/{lost}/deliveries"),
            &tenant.token,
        )
        .await;
        (deliveries["deliveries"].as_array().unwrap().len() == 2).then_some(deliveries)
    })
    .await;
    let newest = &deliveries["deliveries"][0];
    assert_eq!(newest["outcome"], "delivered");
    assert_eq!(newest["status_code"], 200);
    assert_eq!(newest["redelivery_id"], redelivery_id.as_str());
    let failed = get_json(&app, "/v1/deliveries/failed?consumer=ci", &tenant.token).await;
    assert_eq!(failed, json!([]), "delivered since: no longer failed");
    let consumer = get_json(&app, "/v1/consumers/ci", &tenant.token).await;
    assert_eq!(
        consumer["repositories"][0]["acked_event_id"], next_one,
        "the cursor did not move back"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hookrelay_redeliveries_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hookrelay_acks_total{outcome=\"failed\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_redelivery_waits_in_the_database_through_server_and_agent_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let database_url = app.database_url.clone();
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let mut relay = RelayProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    let event = post(&app, &repository, "push", "d-1", &fixture("push")).await;
    target.wait_for(1, WAIT).await;
    relay.signal("TERM");
    relay.wait(WAIT).await;

    // Asked for while no agent runs, then the server restarts.
    let response = app
        .post_json(
            &format!("/v1/events/{event}/redeliver"),
            Some(&tenant.token),
            &json!({"consumer": "ci"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    drop(app);
    let app = spawn_app_on(&database_url, |_| {}).await.unwrap();
    // The new server has another address, so another issuer: a new token.
    let token = app
        .token(&tenant.client_id, &tenant.client_secret, None)
        .await;
    let relay = RelayProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    assert_eq!(target.wait_for(2, WAIT).await, ["d-1", "d-1"]);
    eventually("the redelivery to be acked", || async {
        let deliveries = get_json(&app, &format!("/v1/events/{event}/deliveries"), &token).await;
        (deliveries["deliveries"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    drop(relay);

    // Acked: another agent start does not deliver it a third time.
    let _relay = RelayProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    post(&app, &repository, "push", "d-2", &fixture("push")).await;
    assert_eq!(target.wait_for(3, WAIT).await, ["d-1", "d-1", "d-2"]);
}

#[tokio::test]
async fn a_connected_consumer_that_delivers_nothing_is_stalled() {
    let app = spawn_app_with(|config| config.limits.stall_threshold = Duration::from_secs(1)).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut stream = open(&app, &tenant.token, "stuck", (&[], &[], &[])).await;
    let event = post(&app, &repository, "push", "d-1", &fixture("push")).await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, event);

    // Connected, never acking: stalled once the event is older than the threshold.
    eventually("the consumer to be stalled", || async {
        let consumer = get_json(&app, "/v1/consumers/stuck", &tenant.token).await;
        (consumer["stalled"] == true).then_some(())
    })
    .await;
    let metrics = eventually("the stall metrics", || async {
        let metrics = app.metrics().await;
        metrics
            .contains("hookrelay_consumers_stalled 1\n")
            .then_some(metrics)
    })
    .await;
    let oldest: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hookrelay_consumer_oldest_pending_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(oldest >= 1.0, "{oldest}");
    assert!(metrics.contains("hookrelay_streams_open 1\n"), "{metrics}");
    assert!(
        metrics.contains("hookrelay_stream_events_sent_total 1\n"),
        "{metrics}"
    );

    // Disconnected it is behind, not stalled.
    drop(stream);
    eventually("the consumer to be disconnected", || async {
        let consumer = get_json(&app, "/v1/consumers/stuck", &tenant.token).await;
        (consumer["connected_streams"] == 0 && consumer["stalled"] == false).then_some(())
    })
    .await;
    // Acked, it is neither.
    let mut stream = open(&app, &tenant.token, "stuck", (&[], &[], &[])).await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, event);
    ack(&app, &tenant.token, "stuck", &repository.id, &[event]).await;
    let consumer = get_json(&app, "/v1/consumers/stuck", &tenant.token).await;
    assert_eq!(consumer["stalled"], false);
    eventually("the stall gauge to clear", || async {
        app.metrics()
            .await
            .contains("hookrelay_consumers_stalled 0\n")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_consumer_forgets_it_and_ends_its_streams() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let event = post(&app, &repository, "push", "d-1", &fixture("push")).await;
    let mut stream = open(&app, &tenant.token, "old", (&[], &[], &[])).await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, event);
    ack(&app, &tenant.token, "old", &repository.id, &[event]).await;

    let response = app.delete("/v1/consumers/old", &tenant.token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let ended = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::NotFound);
    assert_error(
        app.get("/v1/consumers/old", &tenant.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.delete("/v1/consumers/old", &tenant.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let records: i64 = sqlx::query_scalar(
        "select (select count(*) from consumer_cursor) + (select count(*) from delivery) + (select count(*) from consumer_stream)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(records, 0, "its cursors, records and streams are gone");
}

/// Another tenant's consumer or event is indistinguishable from a missing one,
/// and every endpoint wants its scope.
#[tokio::test]
async fn every_new_endpoint_is_tenant_scoped_and_needs_its_scope() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let repository = app.repository(&acme, "acme/app").await;
    let event = post(&app, &repository, "push", "d-1", &fixture("push")).await;
    ack(&app, &acme.token, "ci", &repository.id, &[event]).await;
    let globex = app.tenant("globex").await;
    let before = app.database_digest().await;

    let not_found = [
        ("GET", "/v1/consumers/ci".to_owned(), None),
        ("DELETE", "/v1/consumers/ci".to_owned(), None),
        (
            "POST",
            "/v1/consumers/ci/seek".to_owned(),
            Some(json!({"repository_id": repository.id, "after_event_id": 0})),
        ),
        ("GET", format!("/v1/events/{event}"), None),
        ("GET", format!("/v1/events/{event}/deliveries"), None),
        (
            "POST",
            format!("/v1/events/{event}/redeliver"),
            Some(json!({"consumer": "ci"})),
        ),
        (
            "GET",
            format!("/v1/events?repository_id={}", repository.id),
            None,
        ),
    ];
    for (method, path, body) in &not_found {
        let response = send(&app, method, path, &globex.token, body.as_ref()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    assert_eq!(
        get_json(&app, "/v1/consumers", &globex.token).await,
        json!({"consumers": []})
    );
    assert_eq!(
        get_json(&app, "/v1/events", &globex.token).await["events"],
        json!([])
    );
    assert_eq!(app.database_digest().await, before, "nothing changed");

    let read_only = app
        .token(&acme.client_id, &acme.client_secret, Some("events:read"))
        .await;
    let writes = [
        (
            "POST",
            "/v1/consumers/ci/seek".to_owned(),
            Some(json!({"repository_id": repository.id, "after_event_id": 0})),
        ),
        ("DELETE", "/v1/consumers/ci".to_owned(), None),
        (
            "POST",
            format!("/v1/events/{event}/redeliver"),
            Some(json!({"consumer": "ci"})),
        ),
    ];
    for (method, path, body) in &writes {
        let response = send(&app, method, path, &read_only, body.as_ref()).await;
        assert_error(response, StatusCode::FORBIDDEN, "insufficient_scope").await;
    }
    let repos_only = app
        .token(&acme.client_id, &acme.client_secret, Some("repos:read"))
        .await;
    for path in [
        "/v1/consumers",
        "/v1/consumers/ci",
        "/v1/events",
        &format!("/v1/events/{event}"),
        &format!("/v1/events/{event}/deliveries"),
    ] {
        let response = app.get(path, &repos_only).await;
        assert_error(response, StatusCode::FORBIDDEN, "insufficient_scope").await;
    }
    for (method, path, body) in not_found.iter().chain(writes.iter()) {
        let response = send(&app, method, path, "not-a-token", body.as_ref()).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    let redeliver_unknown = app
        .post_json(
            &format!("/v1/events/{event}/redeliver"),
            Some(&acme.token),
            &json!({"consumer": "nobody"}),
        )
        .await;
    assert_error(redeliver_unknown, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        app.database_digest().await,
        before,
        "refused requests changed nothing"
    );
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let request = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(token);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    request.send().await.unwrap()
}

/// The messages as the first published proto defined them (see
/// crates/hookrelay-proto/tests/baseline): what an older agent sends and decodes.
mod old {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamEventsRequest {
        #[prost(string, repeated, tag = "1")]
        pub repository_ids: Vec<String>,
        #[prost(string, tag = "2")]
        pub consumer: String,
        #[prost(int64, optional, tag = "3")]
        pub after_event_id: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(int64, tag = "1")]
        pub id: i64,
        #[prost(string, tag = "2")]
        pub repository_id: String,
        #[prost(string, tag = "3")]
        pub provider: String,
        #[prost(string, tag = "4")]
        pub event_type: String,
        #[prost(string, tag = "5")]
        pub delivery_id: String,
        #[prost(message, optional, tag = "6")]
        pub received_at: Option<prost_types::Timestamp>,
        #[prost(message, repeated, tag = "7")]
        pub headers: Vec<Header>,
        #[prost(bytes = "vec", tag = "8")]
        pub body: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EventAck {
        #[prost(string, tag = "1")]
        pub repository_id: String,
        #[prost(int64, tag = "2")]
        pub event_id: i64,
        #[prost(int32, tag = "3")]
        pub outcome: i32,
        #[prost(string, tag = "4")]
        pub failure_reason: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AckEventsRequest {
        #[prost(string, tag = "1")]
        pub consumer: String,
        #[prost(message, repeated, tag = "2")]
        pub acks: Vec<EventAck>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AckEventsResponse {
        #[prost(string, repeated, tag = "1")]
        pub skipped_repository_ids: Vec<String>,
    }
}

#[tokio::test]
async fn an_older_client_still_streams_acks_and_completes_redeliveries() {
    use tonic::codegen::http::uri::PathAndQuery;
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let event = post(&app, &repository, "push", "d-1", &fixture("push")).await;
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let grpc = tonic::client::Grpc::new(channel);
    let stream_path = PathAndQuery::from_static("/hookrelay.v1.EventService/StreamEvents");
    let ack_path = PathAndQuery::from_static("/hookrelay.v1.EventService/AckEvents");
    let request = old::StreamEventsRequest {
        consumer: "legacy".into(),
        ..Default::default()
    };
    let open = |mut grpc: tonic::client::Grpc<tonic::transport::Channel>| {
        let (request, path, token) = (request.clone(), stream_path.clone(), tenant.token.clone());
        async move {
            grpc.ready().await.unwrap();
            grpc.server_streaming(
                authed(request, &token),
                path,
                tonic_prost::ProstCodec::<old::StreamEventsRequest, old::Event>::default(),
            )
            .await
            .unwrap()
            .into_inner()
        }
    };
    let old_ack = |mut grpc: tonic::client::Grpc<tonic::transport::Channel>, id: i64| {
        let (path, token, repository_id) = (
            ack_path.clone(),
            tenant.token.clone(),
            repository.id.clone(),
        );
        async move {
            let request = old::AckEventsRequest {
                consumer: "legacy".into(),
                acks: vec![old::EventAck {
                    repository_id,
                    event_id: id,
                    outcome: AckOutcome::Delivered.into(),
                    failure_reason: String::new(),
                }],
            };
            grpc.ready().await.unwrap();
            grpc.unary(
                authed(request, &token),
                path,
                tonic_prost::ProstCodec::<old::AckEventsRequest, old::AckEventsResponse>::default(),
            )
            .await
            .unwrap();
        }
    };

    let mut stream = open(grpc.clone()).await;
    let received = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((received.id, received.body), (event, fixture("push")));
    old_ack(grpc.clone(), event).await;
    let consumer = get_json(&app, "/v1/consumers/legacy", &tenant.token).await;
    assert_eq!(consumer["repositories"][0]["acked_event_id"], event);
    let deliveries = get_json(
        &app,
        &format!("/v1/events/{event}/deliveries"),
        &tenant.token,
    )
    .await;
    assert_eq!(deliveries["deliveries"][0]["outcome"], "delivered");
    assert_eq!(
        deliveries["deliveries"][0]["status_code"],
        Value::Null,
        "an older agent reports less"
    );

    // A redelivery reaches it as a plain event; its plain ack completes it.
    let response = app
        .post_json(
            &format!("/v1/events/{event}/redeliver"),
            Some(&tenant.token),
            &json!({"consumer": "legacy"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let again = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.id, event);
    old_ack(grpc.clone(), event).await;
    drop(stream);
    let mut stream = open(grpc).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), stream.message())
            .await
            .is_err(),
        "the completed redelivery is not sent again"
    );
}

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
    let agent = RelayProcess::start_at(
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
    eventually("d-1 to be acked", || pending(0)).await;

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
    eventually("the stream to be connected", || connected(1)).await;
    eventually("d-2 to be acked", || pending(0)).await;
    agent.signal("STOP");
    eventually("the server to drop the frozen agent's stream", || {
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
    let before = post(&app, &repository, "push", "old", &fixture("push")).await;
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

    post(&app, &foreign, "push", "foreign", &fixture("push")).await;
    let issue = post(
        &app,
        &repository,
        "issues",
        "issue",
        &fixture("issues.opened"),
    )
    .await;
    let push = post(
        &app,
        &repository,
        "push",
        "new",
        &push_to("refs/heads/main"),
    )
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
    let mut stream = open(&app, &tenant.token, "ci", (&[], &[], &[])).await;
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
    let list = get_json(&app, "/v1/consumers", &tenant.token).await;
    assert_eq!(list["consumers"].as_array().unwrap().len(), 1);
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
    post(&app, &repository, "push", "d-1", &fixture("push")).await;
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
