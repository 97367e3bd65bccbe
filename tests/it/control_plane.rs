//! The delivery control plane: consumers and their lag, events and their
//! deliveries, redelivery, seek, filters and stall detection, against the real
//! server, PostgreSQL, gRPC clients and the real agent.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hookrelay::grpc::proto::StreamEventsRequest;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    AgentProcess, Filter, TestApp, TestRepository, TestTarget, assert_error, authed, drain,
    eventually, fixture, next_event, spawn_app, spawn_app_on, spawn_app_with,
};

pub const WAIT: Duration = Duration::from_secs(20);

/// GitHub's push payload with its `ref` set to `full_ref` (the fixture is a tag push).
pub fn push_to(full_ref: &str) -> Vec<u8> {
    String::from_utf8(fixture("push"))
        .unwrap()
        .replace("refs/tags/simple-tag", full_ref)
        .into_bytes()
}

#[tokio::test]
async fn a_consumer_shows_its_streams_filter_and_what_it_has_yet_to_deliver() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut stream = app
        .open_filtered(&tenant.token, "ci", (&["push"], &["main"], &[]))
        .await;
    let first = app
        .post_event(&repository, "push", "d-1", &push_to("refs/heads/main"))
        .await;
    app.post_event(&repository, "push", "d-2", &push_to("refs/heads/feature"))
        .await;
    let third = app
        .post_event(&repository, "push", "d-3", &push_to("refs/heads/main"))
        .await;
    app.post_event(&repository, "issues", "d-4", &fixture("issues.opened"))
        .await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, first);
    assert_eq!(next_event(&mut stream, WAIT).await.id, third);

    let consumer = app.get_json("/v1/consumers/ci", &tenant.token).await;
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

    app.ack(&tenant.token, "ci", &repository.id, &[first]).await;
    let consumer = app.get_json("/v1/consumers/ci", &tenant.token).await;
    assert_eq!(consumer["repositories"][0]["acked_event_id"], first);
    assert_eq!(consumer["repositories"][0]["pending_events"], 1);
    app.ack(&tenant.token, "ci", &repository.id, &[third]).await;
    let list = app.get_json("/v1/consumers", &tenant.token).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["repositories"][0]["pending_events"], 0);
    assert_eq!(
        list["items"][0]["repositories"][0]["oldest_pending_received_at"],
        Value::Null
    );

    drop(stream);
    eventually(WAIT, "the stream to count as closed", || async {
        let consumer = app.get_json("/v1/consumers/ci", &tenant.token).await;
        (consumer["connected_streams"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn filters_select_by_type_branch_and_tag_on_real_payloads() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let main = app
        .post_event(&repository, "push", "main", &push_to("refs/heads/main"))
        .await;
    let tag = app
        .post_event(&repository, "push", "tag", &fixture("push"))
        .await;
    let pull = app
        .post_event(
            &repository,
            "pull_request",
            "pr",
            &fixture("pull_request.opened"),
        )
        .await;
    let form = app
        .post_form_event(&repository, "form", &push_to("refs/heads/feature/x"))
        .await;
    let run = app
        .post_event(
            &repository,
            "workflow_run",
            "run",
            &fixture("workflow_run.completed"),
        )
        .await;
    let create = app
        .post_event(&repository, "create", "create", &fixture("create"))
        .await;
    let issue = app
        .post_event(&repository, "issues", "issue", &fixture("issues.opened"))
        .await;

    // The branch or tag of each, as stored once at ingest.
    let listed = app.get_json("/v1/events?limit=10", &tenant.token).await;
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
        let mut stream = app.open_filtered(&tenant.token, consumer, filter).await;
        assert_eq!(drain(&mut stream).await, expected, "{consumer}");
        let status = app
            .get_json(&format!("/v1/consumers/{consumer}"), &tenant.token)
            .await;
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
    let mut stream = app
        .open_filtered(&tenant.token, "ci", (&[], &[], &[]))
        .await;
    for id in &ids {
        assert_eq!(next_event(&mut stream, WAIT).await.id, *id);
    }
    app.ack(&tenant.token, "ci", &repository.id, &ids).await;

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
    let elsewhere = app
        .post_event(&other, "push", "b-0", &fixture("push"))
        .await;
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
    let mut stream = app
        .open_filtered(&tenant.token, "ci", (&[], &[], &[]))
        .await;
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
    let consumer = app.get_json("/v1/consumers/ci", &tenant.token).await;
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
            app.post_event(
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
    let first = app
        .post_event(&repository, "push", "m-1", &push_to("refs/heads/main"))
        .await;
    app.ack(&tenant.token, "everything", &repository.id, &[first])
        .await;
    let mut stream = app
        .open_filtered(&tenant.token, "main-only", (&[], &["main"], &[]))
        .await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, first);
    app.ack(&tenant.token, "main-only", &repository.id, &[first])
        .await;
    drop(stream);
    let skipped = app
        .post_event(&repository, "push", "f-1", &push_to("refs/heads/feature"))
        .await;
    eventually(WAIT, "retention to delete the events", || async {
        (app.event_count().await == 0).then_some(())
    })
    .await;

    // The consumer whose filter skipped the deleted event lost nothing.
    let mut stream = app
        .open_filtered(&tenant.token, "main-only", (&[], &["main"], &[]))
        .await;
    let live = app
        .post_event(&repository, "push", "m-2", &push_to("refs/heads/main"))
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
            app.post_event(&repository, "push", &format!("d-{i}"), &fixture("push"))
                .await,
        );
    }
    let pull = app
        .post_event(
            &other,
            "pull_request",
            "pr",
            &fixture("pull_request.opened"),
        )
        .await;

    let page = app.get_json("/v1/events?limit=4", &tenant.token).await;
    let listed: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [pull, ids[4], ids[3], ids[2]]);
    assert_eq!(page["next_before_event_id"], ids[2]);
    let page = app
        .get_json(
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
    let pulls = app
        .get_json("/v1/events?event_type=pull_request", &tenant.token)
        .await;
    assert_eq!(pulls["events"].as_array().unwrap().len(), 1);
    let in_one = app
        .get_json(
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

    let shown = app
        .get_json(&format!("/v1/events/{pull}"), &tenant.token)
        .await;
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
    let _relay = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    let lost = app
        .post_event(&repository, "push", "lost", &fixture("push"))
        .await;
    let next_one = app
        .post_event(&repository, "push", "next", &fixture("push"))
        .await;
    assert_eq!(target.wait_for(1, WAIT).await, ["next"]);

    let failed = eventually(WAIT, "the failure to be recorded", || async {
        let failed = app
            .get_json("/v1/deliveries/failed?consumer=ci", &tenant.token)
            .await;
        failed["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(failed["event_id"], lost);
    assert_eq!(failed["event_type"], "push");
    assert_eq!(failed["delivery_id"], "lost");
    assert!(
        failed["reason"].as_str().unwrap().contains("404"),
        "{failed}"
    );
    let deliveries = app
        .get_json(&format!("/v1/events/{lost}/deliveries"), &tenant.token)
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

    let deliveries = eventually(WAIT, "the redelivery's outcome", || async {
        let deliveries = app
            .get_json(&format!("/v1/events/{lost}/deliveries"), &tenant.token)
            .await;
        (deliveries["deliveries"].as_array().unwrap().len() == 2).then_some(deliveries)
    })
    .await;
    let newest = &deliveries["deliveries"][0];
    assert_eq!(newest["outcome"], "delivered");
    assert_eq!(newest["status_code"], 200);
    assert_eq!(newest["redelivery_id"], redelivery_id.as_str());
    let failed = app
        .get_json("/v1/deliveries/failed?consumer=ci", &tenant.token)
        .await;
    assert_eq!(
        failed,
        json!({"items": [], "next_after": null}),
        "delivered since: no longer failed"
    );
    let consumer = app.get_json("/v1/consumers/ci", &tenant.token).await;
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
    let mut agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    let event = app
        .post_event(&repository, "push", "d-1", &fixture("push"))
        .await;
    target.wait_for(1, WAIT).await;
    agent.signal("TERM");
    agent.wait(WAIT).await;

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
    let agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    assert_eq!(target.wait_for(2, WAIT).await, ["d-1", "d-1"]);
    eventually(WAIT, "the redelivery to be acked", || async {
        let deliveries = app
            .get_json(&format!("/v1/events/{event}/deliveries"), &token)
            .await;
        (deliveries["deliveries"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    drop(agent);

    // Acked: another agent start does not deliver it a third time.
    let _relay = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    app.post_event(&repository, "push", "d-2", &fixture("push"))
        .await;
    assert_eq!(target.wait_for(3, WAIT).await, ["d-1", "d-1", "d-2"]);
}

#[tokio::test]
async fn a_connected_consumer_that_delivers_nothing_is_stalled() {
    let app = spawn_app_with(|config| config.limits.stall_threshold = Duration::from_secs(1)).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut stream = app
        .open_filtered(&tenant.token, "stuck", (&[], &[], &[]))
        .await;
    let event = app
        .post_event(&repository, "push", "d-1", &fixture("push"))
        .await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, event);

    // Connected, never acking: stalled once the event is older than the threshold.
    eventually(WAIT, "the consumer to be stalled", || async {
        let consumer = app.get_json("/v1/consumers/stuck", &tenant.token).await;
        (consumer["stalled"] == true).then_some(())
    })
    .await;
    let metrics = eventually(WAIT, "the stall metrics", || async {
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
    eventually(WAIT, "the consumer to be disconnected", || async {
        let consumer = app.get_json("/v1/consumers/stuck", &tenant.token).await;
        (consumer["connected_streams"] == 0 && consumer["stalled"] == false).then_some(())
    })
    .await;
    // Acked, it is neither.
    let mut stream = app
        .open_filtered(&tenant.token, "stuck", (&[], &[], &[]))
        .await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, event);
    app.ack(&tenant.token, "stuck", &repository.id, &[event])
        .await;
    let consumer = app.get_json("/v1/consumers/stuck", &tenant.token).await;
    assert_eq!(consumer["stalled"], false);
    eventually(WAIT, "the stall gauge to clear", || async {
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
    let event = app
        .post_event(&repository, "push", "d-1", &fixture("push"))
        .await;
    let mut stream = app
        .open_filtered(&tenant.token, "old", (&[], &[], &[]))
        .await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, event);
    app.ack(&tenant.token, "old", &repository.id, &[event])
        .await;

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
    let event = app
        .post_event(&repository, "push", "d-1", &fixture("push"))
        .await;
    app.ack(&acme.token, "ci", &repository.id, &[event]).await;
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
        app.get_json("/v1/consumers", &globex.token).await,
        json!({"items": [], "next_after": null})
    );
    assert_eq!(
        app.get_json("/v1/events", &globex.token).await["events"],
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

/// A repeated or malformed query parameter gets the API's JSON error, like any
/// other bad input.
#[tokio::test]
async fn repeated_query_parameters_get_a_json_error() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    for path in [
        "/v1/events?limit=1&limit=2",
        "/v1/events?limit=many",
        "/v1/deliveries/failed?consumer=a&consumer=b",
    ] {
        let response = app.get(path, &tenant.token).await;
        let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {error}"
        );
    }
}
