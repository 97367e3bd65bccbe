//! The gRPC EventService, driven by a generated tonic client.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hookrelay::grpc::proto::{AckEventsRequest, AckOutcome, EventAck, ListEventsRequest};
use reqwest::StatusCode;
use serde_json::Value;
use tonic::Code;

use crate::helpers::{
    TestApp, TestRepository, authed, fixture, next_event, sign, spawn_app, spawn_app_on,
    spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(10);

fn ack(repository: &str, event_id: i64) -> EventAck {
    EventAck {
        repository_id: repository.to_owned(),
        event_id,
        outcome: AckOutcome::Delivered.into(),
        failure_reason: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_stream_sends_the_backlog_then_live_events() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.push(&repository, &format!("backlog-{i}")).await);
    }

    let mut stream = app.stream(&tenant.token, "ci", &[], None).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let event = next_event(&mut stream, WAIT).await;
        assert_eq!(event.id, *id);
        assert_eq!(event.repository_id, repository.id);
        assert_eq!(event.provider, "github");
        assert_eq!(event.event_type, "push");
        assert_eq!(event.delivery_id, format!("backlog-{i}"));
        assert_eq!(event.body, fixture("push"), "the body is byte for byte");
        assert!(event.received_at.is_some());
        let signature = event
            .headers
            .iter()
            .find(|h| h.name == "x-hub-signature-256")
            .unwrap();
        assert_eq!(signature.value, sign(&repository.secret, &fixture("push")));
    }

    let live = app.push(&repository, "live").await;
    let event = next_event(&mut stream, WAIT).await;
    assert_eq!((event.id, event.delivery_id.as_str()), (live, "live"));
}

#[tokio::test]
async fn acks_are_durable_per_consumer_and_a_new_stream_resumes_after_them() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let one = app.repository(&tenant, "acme/one").await;
    let two = app.repository(&tenant, "acme/two").await;
    let a1 = app.push(&one, "a1").await;
    let b1 = app.push(&two, "b1").await;
    let a2 = app.push(&one, "a2").await;
    let b2 = app.push(&two, "b2").await;

    let acks = AckEventsRequest {
        consumer: "ci".into(),
        acks: vec![ack(&one.id, a1), ack(&two.id, b2)],
    };
    app.grpc()
        .await
        .ack_events(authed(acks, &tenant.token))
        .await
        .unwrap();
    // An older ack never moves a cursor back.
    let stale = AckEventsRequest {
        consumer: "ci".into(),
        acks: vec![ack(&two.id, b1)],
    };
    app.grpc()
        .await
        .ack_events(authed(stale, &tenant.token))
        .await
        .unwrap();

    let mut resumed = app.stream(&tenant.token, "ci", &[], None).await.unwrap();
    assert_eq!(
        next_event(&mut resumed, WAIT).await.id,
        a2,
        "one resumes after a1; two is done"
    );
    let a3 = app.push(&one, "a3").await;
    assert_eq!(next_event(&mut resumed, WAIT).await.id, a3);

    // Another consumer starts from the oldest retained event.
    let mut fresh = app
        .stream(&tenant.token, "deploy", &[], None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_event(&mut fresh, WAIT).await.id);
    }
    assert_eq!(seen, [a1, b1, a2, b2, a3]);
    // after_event_id overrides the acks.
    let mut explicit = app
        .stream(&tenant.token, "ci", &[&one.id], Some(b1))
        .await
        .unwrap();
    assert_eq!(next_event(&mut explicit, WAIT).await.id, a2);
}

/// An ack past a repository's newest event is refused, as a seek there is:
/// it would move the cursor over events that have not happened yet.
#[tokio::test]
async fn an_ack_past_the_newest_event_is_refused_and_moves_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let first = app.push(&repository, "d-1").await;
    let ahead = AckEventsRequest {
        consumer: "ci".into(),
        acks: vec![
            ack(&repository.id, first),
            ack(&repository.id, 1_000_000_000_000),
        ],
    };
    let refused = app
        .grpc()
        .await
        .ack_events(authed(ahead, &tenant.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("newest event"), "{refused:?}");

    // Nothing moved: the consumer gets the event it did not ack, then the next.
    let second = app.push(&repository, "d-2").await;
    let mut stream = app.stream(&tenant.token, "ci", &[], None).await.unwrap();
    assert_eq!(next_event(&mut stream, WAIT).await.id, first);
    assert_eq!(next_event(&mut stream, WAIT).await.id, second);
    let consumer = app.get_json("/v1/consumers/ci", &tenant.token).await;
    assert_eq!(
        consumer["repositories"][0]["pending_events"], 2,
        "{consumer}"
    );
}

#[tokio::test]
async fn every_consumer_and_every_stream_of_one_consumer_gets_every_event() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut streams = vec![
        app.stream(&tenant.token, "jenkins", &[], None)
            .await
            .unwrap(),
        app.stream(&tenant.token, "argo", &[], None).await.unwrap(),
        // The same consumer twice: both streams get everything (see README).
        app.stream(&tenant.token, "argo", &[], None).await.unwrap(),
    ];
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.push(&repository, &format!("d{i}")).await);
    }
    for stream in &mut streams {
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(next_event(stream, WAIT).await.id);
        }
        assert_eq!(got, ids);
    }
}

/// 200 webhooks from 32 concurrent writers while a stream is open: every event
/// arrives, per repository in id order, with no gap. Ids commit in order, so an
/// event can never commit below one the stream has already passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_a_streaming_reader_no_gaps_in_order() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repositories = [
        app.repository(&tenant, "acme/one").await,
        app.repository(&tenant, "acme/two").await,
    ];
    let mut stream = app
        .stream(&tenant.token, "reader", &[], None)
        .await
        .unwrap();

    let body = fixture("push");
    let mut writers = tokio::task::JoinSet::new();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..200 {
        let repository = repositories[i % 2].clone();
        let (http, url, body, permit) = (
            app.http.clone(),
            app.url(&format!("/v1/webhooks/{}", repository.id)),
            body.clone(),
            semaphore.clone(),
        );
        writers.spawn(async move {
            let _permit = permit.acquire().await.unwrap();
            let response = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("c-{i}"))
                .header("x-hub-signature-256", sign(&repository.secret, &body))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let answer: Value = response.json().await.unwrap();
            (repository.id, answer["event_id"].as_i64().unwrap())
        });
    }
    let mut accepted: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for (repository, id) in writers.join_all().await {
        accepted.entry(repository).or_default().insert(id);
    }
    let mut streamed: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for _ in 0..200 {
        let event = next_event(&mut stream, WAIT).await;
        streamed
            .entry(event.repository_id)
            .or_default()
            .push(event.id);
    }
    for (repository, ids) in &streamed {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{repository}: out of order"
        );
        assert_eq!(
            ids.iter().copied().collect::<BTreeSet<_>>(),
            accepted[repository],
            "{repository}: a gap"
        );
    }
}

#[tokio::test]
async fn an_event_ingested_on_one_replica_reaches_a_stream_on_another() {
    let public_url = || Some(url::Url::parse("https://relay.example.com").unwrap());
    let a = spawn_app_with(|c| c.public_url = public_url()).await;
    let b = spawn_app_on(&a.database_url, |c| c.public_url = public_url())
        .await
        .unwrap();
    let tenant = a.tenant("acme").await;
    let repository = a.repository(&tenant, "acme/app").await;

    let mut stream = b.stream(&tenant.token, "ci", &[], None).await.unwrap();
    let id = a.push(&repository, "across").await;
    let started = std::time::Instant::now();
    let event = next_event(&mut stream, WAIT).await;
    assert_eq!(event.id, id);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no polling interval: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn list_events_pages_through_a_repository() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.push(&repository, &format!("p{i}")).await);
    }
    let mut client = app.grpc().await;
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let request = ListEventsRequest {
            repository_id: repository.id.clone(),
            after_event_id: after,
            page_size: 2,
        };
        let page = client
            .list_events(authed(request, &tenant.token))
            .await
            .unwrap()
            .into_inner();
        pages.push(page.events.iter().map(|e| e.id).collect::<Vec<_>>());
        match page.next_after_event_id {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(
        pages,
        vec![ids[0..2].to_vec(), ids[2..4].to_vec(), ids[4..5].to_vec()]
    );
}

#[tokio::test]
async fn every_auth_failure_gets_its_status() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let no_events_scope = app
        .token(
            &tenant.client_id,
            &tenant.client_secret,
            Some("repos:read repos:write"),
        )
        .await;
    let mut client = app.grpc().await;

    let stream = |token: Option<&str>, repositories: Vec<String>, consumer: &str| {
        let message = hookrelay::grpc::proto::StreamEventsRequest {
            repository_ids: repositories,
            consumer: consumer.into(),
            after_event_id: None,
            ..Default::default()
        };
        match token {
            Some(token) => authed(message, token),
            None => tonic::Request::new(message),
        }
    };
    let cases: Vec<(&str, tonic::Request<_>, Code)> = vec![
        (
            "no token",
            stream(None, vec![], "ci"),
            Code::Unauthenticated,
        ),
        (
            "garbled token",
            stream(Some("not-a-jwt"), vec![], "ci"),
            Code::Unauthenticated,
        ),
        (
            "no events:read",
            stream(Some(&no_events_scope), vec![], "ci"),
            Code::PermissionDenied,
        ),
        (
            "another tenant's repository",
            stream(Some(&other.token), vec![repository.id.clone()], "ci"),
            Code::NotFound,
        ),
        (
            "unknown repository",
            stream(
                Some(&tenant.token),
                vec![uuid::Uuid::new_v4().to_string()],
                "ci",
            ),
            Code::NotFound,
        ),
        (
            "malformed repository",
            stream(Some(&tenant.token), vec!["nope".into()], "ci"),
            Code::NotFound,
        ),
        (
            "bad consumer",
            stream(Some(&tenant.token), vec![], "no spaces allowed"),
            Code::InvalidArgument,
        ),
    ];
    for (case, request, code) in cases {
        let status = client
            .stream_events(request)
            .await
            .err()
            .unwrap_or_else(|| panic!("{case}: the stream opened"));
        assert_eq!(status.code(), code, "{case}: {status:?}");
    }

    let list = |token: &str, repository: &str| {
        authed(
            ListEventsRequest {
                repository_id: repository.into(),
                after_event_id: 0,
                page_size: 0,
            },
            token,
        )
    };
    assert_eq!(
        client
            .list_events(list(&other.token, &repository.id))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .list_events(list(&no_events_scope, &repository.id))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        client
            .list_events(tonic::Request::new(ListEventsRequest::default()))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let before = app.database_digest().await;
    let foreign_ack = AckEventsRequest {
        consumer: "ci".into(),
        acks: vec![ack(&repository.id, 1)],
    };
    // Another tenant's repository is skipped exactly like a missing one.
    let answer = client
        .ack_events(authed(foreign_ack.clone(), &other.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.skipped_repository_ids, vec![repository.id.clone()]);
    assert_eq!(
        client
            .ack_events(authed(foreign_ack.clone(), &no_events_scope))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        client
            .ack_events(tonic::Request::new(foreign_ack))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(app.database_digest().await, before);
}

#[tokio::test]
async fn deleting_a_client_closes_its_open_streams_within_five_seconds() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let agent: Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &serde_json::json!({"name": "agent", "scopes": ["events:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let agent_token = app
        .token(
            agent["client_id"].as_str().unwrap(),
            agent["client_secret"].as_str().unwrap(),
            None,
        )
        .await;
    let mut stream = app.stream(&agent_token, "ci", &[], None).await.unwrap();

    let deleted_at = std::time::Instant::now();
    let response = app
        .delete(
            &format!("/v1/clients/{}", agent["client_id"].as_str().unwrap()),
            &tenant.token,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("closed within 5 s");
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    assert!(deleted_at.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = spawn_app_with(|c| c.token_ttl = Duration::from_secs(2)).await;
    let tenant = app.tenant("acme").await;
    let mut stream = app.stream(&tenant.token, "ci", &[], None).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(6), stream.message())
        .await
        .expect("closed at expiry");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{status:?}");
}

#[tokio::test]
async fn a_consumer_behind_retention_is_refused_not_moved_forward() {
    let app = spawn_app_with(|c| c.retention = Duration::from_secs(1)).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let first = app.push(&repository, "old-1").await;
    app.push(&repository, "old-2").await;
    let acks = AckEventsRequest {
        consumer: "slow".into(),
        acks: vec![ack(&repository.id, first)],
    };
    app.grpc()
        .await
        .ack_events(authed(acks, &tenant.token))
        .await
        .unwrap();

    // The retention job runs every quarter of the retention period.
    let deadline = std::time::Instant::now() + WAIT;
    while app.event_count().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention deleted nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let refused = app
        .stream(&tenant.token, "slow", &[], None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("behind retention"),
        "{refused:?}"
    );
    // A new consumer starts from the oldest retained event: the next one.
    let mut fresh = app.stream(&tenant.token, "new", &[], None).await.unwrap();
    let next = app.push(&repository, "new-1").await;
    assert_eq!(next_event(&mut fresh, WAIT).await.id, next);
}

#[tokio::test]
async fn failed_deliveries_are_recorded_and_listed() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let id = app.push(&repository, "bad").await;
    let failed = EventAck {
        repository_id: repository.id.clone(),
        event_id: id,
        outcome: AckOutcome::Failed.into(),
        failure_reason: "the target answered 400 Bad Request".into(),
        ..Default::default()
    };
    app.grpc()
        .await
        .ack_events(authed(
            AckEventsRequest {
                consumer: "ci".into(),
                acks: vec![failed],
            },
            &tenant.token,
        ))
        .await
        .unwrap();

    let listed: Value = app
        .get("/v1/deliveries/failed?consumer=ci", &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["event_id"], id);
    assert_eq!(
        listed["items"][0]["reason"],
        "the target answered 400 Bad Request"
    );
    // It counts as acked: the consumer moves past it.
    let mut stream = app.stream(&tenant.token, "ci", &[], None).await.unwrap();
    let next = app.push(&repository, "good").await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, next);
}

/// Live events come from a tail shared by every stream on the server: each
/// stream must still see only its own tenant's (and repositories') events.
#[tokio::test]
async fn live_events_from_the_shared_tail_reach_only_their_tenant_and_repositories() {
    let app = spawn_app().await;
    let alice = app.tenant("alice").await;
    let bob = app.tenant("bob").await;
    let alice_one = app.repository(&alice, "alice/one").await;
    let alice_two = app.repository(&alice, "alice/two").await;
    let bob_repo = app.repository(&bob, "bob/app").await;
    let mut alice_streams = Vec::new();
    for i in 0..20 {
        alice_streams.push(
            app.stream(&alice.token, &format!("a{i}"), &[], None)
                .await
                .unwrap(),
        );
    }
    let mut alice_only_two = app
        .stream(&alice.token, "two", &[&alice_two.id], None)
        .await
        .unwrap();
    let mut bob_stream = app.stream(&bob.token, "b", &[], None).await.unwrap();

    let first = app.push(&alice_one, "alice-1").await;
    for stream in &mut alice_streams {
        assert_eq!(next_event(stream, WAIT).await.id, first);
    }
    let second = app.push(&alice_two, "alice-2").await;
    let bobs = app.push(&bob_repo, "bob-1").await;
    assert_eq!(
        next_event(&mut bob_stream, WAIT).await.id,
        bobs,
        "bob sees only bob's event"
    );
    assert_eq!(
        next_event(&mut alice_only_two, WAIT).await.id,
        second,
        "a repository filter holds"
    );
    for stream in &mut alice_streams {
        assert_eq!(next_event(stream, WAIT).await.id, second);
    }
}

/// Appends `count` events to a repository straight through the database's
/// `append_events`, as another writer would, and wakes the streams as a
/// server does after its commit.
async fn insert_events(app: &TestApp, repository: &TestRepository, prefix: &str, count: i64) {
    append_generated(app, repository, prefix, count, "'{}'").await;
}

/// Appends `count` events to a repository, named `prefix` + n, with the body
/// `body_sql` (an SQL text expression of n, `g`).
async fn append_generated(
    app: &TestApp,
    repository: &TestRepository,
    prefix: &str,
    count: i64,
    body_sql: &str,
) {
    let query = format!(
        "with input as ( \
             select r.tenant_id, r.repository_id, g from repository r, generate_series(1, $3) g \
             where r.repository_id = $1::uuid \
         ), batch as ( \
             select array_agg(tenant_id order by g) as t, array_agg(repository_id order by g) as r, \
                    array_agg('github'::text) as p, array_agg('push'::text) as e, \
                    array_agg($2 || g order by g) as d, array_agg(now()) as at, array_agg('[]'::jsonb) as h, \
                    array_agg(convert_to({body_sql}, 'UTF8') order by g) as b, array_agg(null::text) as n \
             from input \
         ) \
         select count(*) from batch, append_events(t, r, p, e, d, at, h, b, n, n, n)"
    );
    sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(&repository.id)
        .bind(prefix)
        .bind(count)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("select pg_notify('hookrelay_events', 'test')")
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_backlog_of_many_pages_resumes_each_repository_from_its_own_ack() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let one = app.repository(&tenant, "acme/one").await;
    let two = app.repository(&tenant, "acme/two").await;
    let other = app.tenant("other").await;
    let foreign = app.repository(&other, "other/app").await;
    // Interleaved batches, several stream pages long in all.
    for round in 0..4 {
        insert_events(&app, &one, &format!("one-{round}-"), 300).await;
        insert_events(&app, &foreign, &format!("foreign-{round}-"), 100).await;
        insert_events(&app, &two, &format!("two-{round}-"), 200).await;
    }
    let ids = |repository: &str| {
        let pool = app.pool.clone();
        let repository = repository.to_owned();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select event_id from event where repository_id = $1::uuid order by event_id",
            )
            .bind(repository)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let (ones, twos) = (ids(&one.id).await, ids(&two.id).await);
    // The consumer has done the first 700 of one; none of two.
    let acks = AckEventsRequest {
        consumer: "ci".into(),
        acks: vec![ack(&one.id, ones[699])],
    };
    app.grpc()
        .await
        .ack_events(authed(acks, &tenant.token))
        .await
        .unwrap();

    let mut expected: Vec<i64> = ones[700..].iter().chain(&twos).copied().collect();
    expected.sort_unstable();
    let mut stream = app.stream(&tenant.token, "ci", &[], None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        seen.push(next_event(&mut stream, WAIT).await.id);
    }
    assert_eq!(seen, expected, "every event after each cursor, in id order");

    // Live events after the backlog come from both repositories, and only theirs.
    insert_events(&app, &foreign, "foreign-live-", 1).await;
    insert_events(&app, &two, "two-live-", 1).await;
    let live = next_event(&mut stream, WAIT).await;
    assert_eq!(
        (live.repository_id.as_str(), live.delivery_id.as_str()),
        (two.id.as_str(), "two-live-1")
    );

    // Only repository one, from an explicit id: the same pages, filtered.
    let from = ones[100];
    let mut only_one = app
        .stream(&tenant.token, "deploy", &[&one.id], Some(from))
        .await
        .unwrap();
    for expected in &ones[101..] {
        assert_eq!(next_event(&mut only_one, WAIT).await.id, *expected);
    }
}

#[tokio::test]
async fn large_bodies_are_paged_by_size_and_none_is_skipped() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    // 3 MiB each: a stream page stops at 8 MiB of bodies, so these take several pages.
    append_generated(
        &app,
        &repository,
        "big-",
        7,
        "g || repeat('x', 3 * 1024 * 1024 - 1)",
    )
    .await;
    let mut stream = app.stream(&tenant.token, "ci", &[], None).await.unwrap();
    for n in 1..=7 {
        let event = next_event(&mut stream, WAIT).await;
        assert_eq!(event.delivery_id, format!("big-{n}"));
        assert_eq!(event.body.len(), 3 * 1024 * 1024);
        assert_eq!(event.body[0], b'0' + n as u8);
    }
    let live = app.push(&repository, "after-the-big-ones").await;
    assert_eq!(next_event(&mut stream, WAIT).await.id, live);
}
