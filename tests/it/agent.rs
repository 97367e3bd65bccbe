//! The agent (`hookrelay relay` and `hookrelay-agent`, the real binaries)
//! between a real server and a local target that checks the GitHub signature itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{AgentProcess, TestApp, TestRepository, TestTarget, fixture, spawn_app};

const WAIT: Duration = Duration::from_secs(20);

async fn deliver(app: &TestApp, repository: &TestRepository, delivery: &str, event: &str) {
    let response = app
        .deliver(
            &repository.id,
            &repository.secret,
            event,
            delivery,
            &fixture(event),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_signed_webhook_reaches_the_target_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let agent = AgentProcess::start(
        &app,
        &tenant,
        "ci",
        &target.url,
        &["--repository", &repository.id],
        dir.path(),
    );

    deliver(&app, &repository, "d-1", "push").await;
    deliver(&app, &repository, "d-2", "pull_request.opened").await;

    assert_eq!(target.wait_for(2, WAIT).await, ["d-1", "d-2"]);
    let received = target.received.lock().unwrap().clone();
    assert_eq!(received[0].body, fixture("push"));
    assert_eq!(received[0].event_type, "push");
    assert_eq!(received[1].body, fixture("pull_request.opened"));
    assert_eq!(received[0].headers["user-agent"], "GitHub-Hookshot/044aadd");
    assert_eq!(received[0].headers["x-github-hook-id"], "292430182");
    // The agent logs a delivery after the target answered it: wait for the line.
    agent.wait_for_output("\"delivered\"", 2, WAIT).await;
    let output = agent.output();
    assert_eq!(
        output.matches("\"delivered\"").count(),
        2,
        "one line per delivery:\n{output}"
    );
}

#[tokio::test]
async fn two_agents_with_different_consumers_each_get_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let jenkins = TestTarget::start(vec![repository.secret.clone()]).await;
    let argo = TestTarget::start(vec![repository.secret.clone()]).await;
    let _a = AgentProcess::start(&app, &tenant, "jenkins", &jenkins.url, &[], dir.path());
    let _b = AgentProcess::start(&app, &tenant, "argo", &argo.url, &[], dir.path());

    for i in 0..5 {
        deliver(&app, &repository, &format!("d-{i}"), "push").await;
    }
    let expected: Vec<String> = (0..5).map(|i| format!("d-{i}")).collect();
    assert_eq!(jenkins.wait_for(5, WAIT).await, expected);
    assert_eq!(argo.wait_for(5, WAIT).await, expected);
}

#[tokio::test]
async fn a_restarted_agent_resumes_after_its_acks() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;

    let mut agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    for i in 0..3 {
        deliver(&app, &repository, &format!("before-{i}"), "push").await;
    }
    target.wait_for(3, WAIT).await;
    agent.signal("TERM");
    assert!(agent.wait(WAIT).await.success(), "{}", agent.output());

    for i in 0..2 {
        deliver(&app, &repository, &format!("after-{i}"), "push").await;
    }
    let _relay = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    let deliveries = target.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        target.deliveries(),
        ["before-0", "before-1", "before-2", "after-0", "after-1"],
        "nothing twice: {deliveries:?}"
    );
}

/// kill -9 at an arbitrary moment: nothing is lost; only what was delivered but
/// not yet acked may arrive twice.
#[tokio::test]
async fn killing_the_agent_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::answering(
        vec![repository.secret.clone()],
        Arc::new(|_| (200, None)),
        Duration::from_millis(10),
    )
    .await;
    for i in 0..120 {
        deliver(&app, &repository, &format!("k-{i:03}"), "ping").await;
    }

    let mut agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    target.wait_for(30, WAIT).await;
    agent.signal("KILL");
    agent.wait(WAIT).await;
    // A request the killed agent had in flight may still be in the target's
    // handler (10 ms): let it land before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_restart = target.deliveries().len();
    let _relay = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());

    let deadline = Instant::now() + WAIT;
    let expected: BTreeSet<String> = (0..120).map(|i| format!("k-{i:03}")).collect();
    loop {
        let got: BTreeSet<String> = target.deliveries().into_iter().collect();
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lost: {:?}",
            expected.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries = target.deliveries();
    let duplicates = deliveries.len() - expected.len();
    assert!(
        duplicates <= 3,
        "{duplicates} re-deliveries after a kill at {before_restart}"
    );
    // Order holds within each agent's run: the second run starts where acks ended.
    let second_run = &deliveries[before_restart..];
    assert!(second_run.windows(2).all(|w| w[0] < w[1]), "{second_run:?}");
}

#[tokio::test]
async fn a_target_that_is_down_for_a_while_gets_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let up_at = Instant::now() + Duration::from_millis(1500);
    let target = TestTarget::answering(
        vec![repository.secret.clone()],
        Arc::new(move |_| {
            if Instant::now() < up_at {
                (503, None)
            } else {
                (200, None)
            }
        }),
        Duration::ZERO,
    )
    .await;
    for i in 0..5 {
        deliver(&app, &repository, &format!("d-{i}"), "push").await;
    }
    let agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());

    let expected: Vec<String> = (0..5).map(|i| format!("d-{i}")).collect();
    assert_eq!(target.wait_for(5, WAIT).await, expected);
    assert!(
        target.requests.load(std::sync::atomic::Ordering::SeqCst) > 5,
        "the agent retried"
    );
    agent.wait_for_output("retrying", 1, WAIT).await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_permanent_4xx_is_recorded_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    // Request 0: 429 Retry-After: 1. Request 1: the retry, taken. Request 2: 422, for good.
    let target = TestTarget::answering(
        vec![repository.secret.clone()],
        Arc::new(|n| match n {
            0 => (429, Some("1")),
            2 => (422, None),
            _ => (200, None),
        }),
        Duration::ZERO,
    )
    .await;
    let started = Instant::now();
    let _relay = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    deliver(&app, &repository, "first", "push").await;
    target.wait_for(1, WAIT).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    deliver(&app, &repository, "refused", "push").await;
    deliver(&app, &repository, "third", "push").await;

    assert_eq!(target.wait_for(2, WAIT).await, ["first", "third"]);
    let deadline = Instant::now() + WAIT;
    loop {
        let failed: Value = app
            .get("/v1/deliveries/failed?consumer=ci", &tenant.token)
            .await
            .json()
            .await
            .unwrap();
        if let Some(failure) = failed["items"].as_array().unwrap().first() {
            assert!(
                failure["reason"].as_str().unwrap().contains("422"),
                "{failure}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused event was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_the_delivery_in_flight_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::answering(
        vec![repository.secret.clone()],
        Arc::new(|_| (200, None)),
        Duration::from_millis(1500),
    )
    .await;
    deliver(&app, &repository, "in-flight", "push").await;
    deliver(&app, &repository, "next", "push").await;

    let mut agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    let deadline = Instant::now() + WAIT;
    while target.requests.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.signal("TERM");
    assert!(agent.wait(WAIT).await.success(), "{}", agent.output());
    assert_eq!(
        target.deliveries(),
        ["in-flight"],
        "the delivery in flight finished; no new one started"
    );

    // Its ack was sent before exit: a new agent starts with the next event.
    let _relay = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    target.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(target.deliveries(), ["in-flight", "next"]);
}

#[tokio::test]
async fn the_agent_gets_a_new_token_when_its_stream_expires() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_app_with(|c| c.token_ttl = Duration::from_secs(2)).await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());

    deliver(&app, &repository, "early", "push").await;
    target.wait_for(1, WAIT).await;
    // Past the first token's expiry: the server closed that stream.
    tokio::time::sleep(Duration::from_secs(4)).await;
    deliver(&app, &repository, "late", "push").await;
    assert_eq!(target.wait_for(2, WAIT).await, ["early", "late"]);
    // A periodic summary is logged.
    agent.wait_for_output("relay summary", 1, WAIT).await;
}

/// Deleting a repository while its event is at the target: the ack for it is
/// skipped by the server, and every later ack still lands (before, the whole
/// batch failed for ever and a restart delivered everything again).
#[tokio::test]
async fn an_ack_for_a_deleted_repository_does_not_hold_back_later_acks() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let doomed = app.repository(&tenant, "acme/old").await;
    let kept = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::answering(
        vec![doomed.secret.clone(), kept.secret.clone()],
        Arc::new(|_| (200, None)),
        Duration::from_millis(1000),
    )
    .await;
    deliver(&app, &doomed, "doomed-1", "push").await;
    let mut agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    let deadline = Instant::now() + WAIT;
    while target.requests.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the agent never reached the target"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The target holds the event for a second: delete its repository meanwhile.
    let response = app
        .delete(&format!("/v1/repositories/{}", doomed.id), &tenant.token)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for i in 0..3 {
        deliver(&app, &kept, &format!("kept-{i}"), "push").await;
    }
    assert_eq!(
        target.wait_for(4, WAIT).await,
        ["doomed-1", "kept-0", "kept-1", "kept-2"]
    );
    agent.wait_for_output("no longer knows", 1, WAIT).await;
    agent.signal("TERM");
    assert!(agent.wait(WAIT).await.success(), "{}", agent.output());

    // A restart resumes after the acks: nothing is delivered again.
    let agent = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    deliver(&app, &kept, "kept-after", "push").await;
    target.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        target.deliveries(),
        ["doomed-1", "kept-0", "kept-1", "kept-2", "kept-after"],
        "{}",
        agent.output()
    );
}

/// Events stored by an older server may carry credential headers: the agent
/// still never presents them to the target.
#[tokio::test]
async fn the_agent_never_replays_credential_or_proxy_headers() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    deliver(&app, &repository, "d-1", "push").await;
    sqlx::query(
        r#"update event set headers = headers || '[["authorization","Bearer admin"],["cookie","s=1"],["x-forwarded-for","10.0.0.1"],["x-real-ip","10.0.0.1"]]'::jsonb"#,
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let _relay = AgentProcess::start(&app, &tenant, "ci", &target.url, &[], dir.path());
    target.wait_for(1, WAIT).await;
    let received = target.received.lock().unwrap()[0].headers.clone();
    assert_eq!(received["x-github-hook-id"], "292430182");
    for name in ["authorization", "cookie", "x-forwarded-for", "x-real-ip"] {
        assert!(!received.contains_key(name), "{name} was replayed");
    }
}

/// The standalone `hookrelay-agent`, which links none of the server, delivers
/// exactly as `hookrelay relay` does.
#[tokio::test]
async fn the_standalone_agent_binary_delivers_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let agent = AgentProcess::start_standalone(&app, &tenant, "slim", &target.url, dir.path());
    deliver(&app, &repository, "d-1", "push").await;
    assert_eq!(target.wait_for(1, WAIT).await, ["d-1"]);
    assert_eq!(target.received.lock().unwrap()[0].body, fixture("push"));
    agent.wait_for_output("\"delivered\"", 1, WAIT).await;
}

/// Repositories are delivered concurrently, each strictly in order: a slow
/// target path for one repository does not hold back another's events.
#[tokio::test]
async fn repositories_are_delivered_concurrently_each_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let slow = app.repository(&tenant, "acme/slow").await;
    let fast = app.repository(&tenant, "acme/fast").await;
    // Every request takes 300 ms: one at a time, 20 events would take 6 s.
    let target = TestTarget::answering(
        vec![slow.secret.clone(), fast.secret.clone()],
        Arc::new(|_| (200, None)),
        Duration::from_millis(300),
    )
    .await;
    for i in 0..10 {
        deliver(&app, &slow, &format!("slow-{i}"), "push").await;
        deliver(&app, &fast, &format!("fast-{i}"), "push").await;
    }
    let started = Instant::now();
    let _relay = AgentProcess::start(
        &app,
        &tenant,
        "ci",
        &target.url,
        &["--concurrency", "4"],
        dir.path(),
    );
    let received = target.wait_for(20, WAIT).await;
    let elapsed = started.elapsed();
    for prefix in ["slow-", "fast-"] {
        let order: Vec<&String> = received.iter().filter(|d| d.starts_with(prefix)).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(
            order,
            expected.iter().collect::<Vec<_>>(),
            "{prefix} in order"
        );
    }
    // Two lanes at once: about 3 s, not 6 (generous for a loaded machine).
    assert!(
        elapsed < Duration::from_millis(5_500),
        "{elapsed:?}: repositories were not concurrent"
    );
}

/// HOOKRELAY_MAX_STREAM_AGE ends each stream cleanly, with the status the
/// agent answers by reconnecting at once: no event is lost or repeated, and
/// the agent never reports a lost stream.
#[tokio::test]
async fn streams_end_cleanly_at_their_maximum_age_and_the_agent_reconnects_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_app_with(|config| {
        config.limits.max_stream_age = Duration::from_secs(2);
    })
    .await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;

    // A raw stream: it ends with UNAVAILABLE "…; reconnect now" within the age.
    let mut stream = app.stream(&tenant.token, "raw", &[], None).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends at its maximum age");
    let status = ended.expect_err("it ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("maximum age") && status.message().contains("reconnect now"));

    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let agent = AgentProcess::start(&app, &tenant, "aged", &target.url, &[], dir.path());
    for n in 0..6 {
        deliver(&app, &repository, &format!("d-{n}"), "push").await;
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    let expected: Vec<String> = (0..6).map(|n| format!("d-{n}")).collect();
    assert_eq!(
        target.wait_for(6, WAIT).await,
        expected,
        "in order, none twice"
    );
    agent
        .wait_for_output("reached its maximum age", 2, WAIT)
        .await;
    let output = agent.output();
    assert!(!output.contains("stream lost"), "{output}");
}
