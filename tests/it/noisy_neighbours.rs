//! One tenant cannot take the relay from another: each attack of a tenant
//! (or of anyone who signs up) runs while another tenant sends ordinary
//! webhooks, and every one of those is stored.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{TestApp, TestRepository, read_until_closed, spawn_app_with};

const MIB: usize = 1024 * 1024;

/// The server's answer on a raw connection, once it closes it.
async fn answer(stream: &mut TcpStream, within: Duration) -> String {
    read_until_closed(stream, within)
        .await
        .expect("the server answers and closes in time")
}

/// `count` signed pushes to `repository` at once from `source`; their statuses.
async fn pushes(
    app: &TestApp,
    repository: &TestRepository,
    source: &str,
    count: usize,
) -> Vec<u16> {
    app.spawn_pushes(repository, source, Some(source), count)
        .join_all()
        .await
}

/// The attack of the issue, scaled down: the attacker's own repository, 11
/// connections from 11 addresses, 10 announcing the largest webhook and one a
/// quarter of it, each sending its headers and one byte and holding. Before
/// shares, they held the whole budget and every other tenant's webhook got 503.
/// Now the attacker holds its share (one body), the rest are refused at once,
/// the one admitted is cut after about a second for trickling, and the other
/// tenant's 28 webhooks, sent while all this is open, are all stored.
#[tokio::test]
async fn holding_webhook_bodies_open_takes_no_memory_from_other_tenants() {
    let app = spawn_app_with(|config| {
        config.max_webhook_bytes = 2 * MIB;
        config.limits.webhook_memory = 8 * MIB;
        config.limits.http_body_timeout = Duration::from_secs(60);
        config.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let attacker = app.tenant("attacker").await;
    let own = app.repository(&attacker, "attacker/app").await;
    let victim = app.tenant("victim").await;
    let repository = app.repository(&victim, "victim/app").await;

    let host = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for i in 0..11 {
        let length = if i == 10 { MIB / 2 } else { 2 * MIB };
        let mut stream = TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "POST /v1/webhooks/{} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-forwarded-for: 203.0.113.{i}\r\nx-github-event: push\r\n\
             x-github-delivery: hold-{i}\r\nx-hub-signature-256: sha256=00\r\n\
             content-length: {length}\r\n\r\n{{",
            own.id
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let statuses = pushes(&app, &repository, "198.51.100.7", 28).await;
    assert_eq!(statuses, [202; 28], "the other tenant's webhooks");

    let mut refused = 0;
    let mut cut = 0;
    for mut stream in held {
        let answer = answer(&mut stream, Duration::from_secs(20)).await;
        if answer.starts_with("HTTP/1.1 503") {
            assert!(
                answer.to_ascii_lowercase().contains("retry-after: "),
                "{answer}"
            );
            assert!(answer.contains("tenant"), "{answer}");
            refused += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("slower than"), "{answer}");
            cut += 1;
        }
    }
    assert_eq!(
        (refused, cut),
        (10, 1),
        "the attacker holds one body, its share"
    );
    assert_eq!(app.event_count().await, 28);
}

/// One address holds at most its share, whatever tenants it sends to; other
/// addresses, even for the same tenant, are not affected.
#[tokio::test]
async fn one_address_holds_no_more_than_its_share() {
    let app = spawn_app_with(|config| {
        config.max_webhook_bytes = 2 * MIB;
        config.limits.webhook_memory = 16 * MIB;
        config.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let tenants = [app.tenant("one").await, app.tenant("two").await];
    let mut repositories = Vec::new();
    for tenant in &tenants {
        repositories.push(app.repository(tenant, "acme/app").await);
    }
    let host = app.address.trim_start_matches("http://").to_owned();
    // The default share of one address: an eighth of 16 MiB, one 2 MiB body.
    let mut held = Vec::new();
    for (i, repository) in repositories.iter().enumerate() {
        let mut stream = TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "POST /v1/webhooks/{} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-forwarded-for: 203.0.113.1\r\nx-github-event: push\r\nx-github-delivery: h-{i}\r\n\
             x-hub-signature-256: sha256=00\r\ncontent-length: {}\r\n\r\n{{",
            repository.id,
            2 * MIB
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for repository in &repositories {
        assert_eq!(pushes(&app, repository, "198.51.100.8", 5).await, [202; 5]);
    }
    let mut answers = Vec::new();
    for mut stream in held {
        answers.push(answer(&mut stream, Duration::from_secs(20)).await);
    }
    let refused: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .collect();
    assert_eq!(refused.len(), 1, "{answers:?}");
    assert!(refused[0].contains("from this address"), "{}", refused[0]);
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// The stream attack of the issue, scaled down to a pool of 4: one tenant
/// opens 600 StreamEvents at once over 6 connections while another tenant
/// sends 50 webhooks. Stream set-up is admitted at a bounded rate per tenant
/// (the rest get RESOURCE_EXHAUSTED, which the agent retries after a backoff),
/// and webhooks have database connections of their own: all 50 are stored.
#[tokio::test]
async fn a_burst_of_streams_takes_no_database_from_other_tenants_webhooks() {
    const STREAMS: usize = 600;
    let app = spawn_app_with(|config| {
        config.database.max_connections = 4;
        config.limits.stream_setup_rate = hookrelay::server::Rate::parse("20/s").unwrap();
    })
    .await;
    let attacker = app.tenant("attacker").await;
    let victim = app.tenant("victim").await;
    let repository = app.repository(&victim, "victim/app").await;

    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(app.grpc().await);
    }
    let opens: tokio::task::JoinSet<Result<tonic::Streaming<_>, tonic::Code>> = (0..STREAMS)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let token = attacker.token.clone();
            async move {
                let request = hookrelay::grpc::proto::StreamEventsRequest {
                    consumer: format!("burst-{i}"),
                    ..Default::default()
                };
                client
                    .stream_events(crate::helpers::authed(request, &token))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| status.code())
            }
        })
        .collect();
    let statuses = pushes(&app, &repository, "127.0.0.1", 50).await;
    let opened = opens.join_all().await;
    let elapsed = started.elapsed().as_secs_f64();

    assert_eq!(statuses, [202; 50], "the other tenant's webhooks");
    let admitted = opened.iter().filter(|o| o.is_ok()).count();
    let exhausted = opened
        .iter()
        .filter(|o| matches!(o, Err(tonic::Code::ResourceExhausted)))
        .count();
    assert_eq!(
        admitted + exhausted,
        STREAMS,
        "every open is admitted or told to retry"
    );
    // A burst of 20, then 20 a second.
    let allowed = 20 + (20.0 * elapsed).ceil() as usize;
    assert!(
        (20..=allowed).contains(&admitted),
        "{admitted} admitted in {elapsed:.1} s (at most {allowed})"
    );
    assert_eq!(app.event_count().await, 50);
}

/// The watch attack of the issue: one tenant opens 300 console watches of its
/// consumers and 300 of its deliveries. They share one poll of each
/// (`hookrelay_watch_polls`), every watch still gets the consumers' snapshot,
/// another tenant's webhooks are all stored, and the polls stop once the
/// watches are gone.
#[tokio::test]
async fn many_watches_of_one_tenant_share_one_poll() {
    const WATCHES: usize = 300;
    let app = spawn_app_with(|config| {
        config.limits.stream_setup_rate = None;
        config.quotas.open_watches = 1000;
    })
    .await;
    let watcher = app.tenant("watcher").await;
    let victim = app.tenant("victim").await;
    let repository = app.repository(&victim, "victim/app").await;
    let polls = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("hookrelay_watch_polls "))
            .map(str::to_owned)
    };
    assert_eq!(polls(&app.metrics().await).as_deref(), Some("0"));

    // A connection carries at most 200 streams at once (HTTP/2's limit here).
    let mut connections = Vec::new();
    for _ in 0..(2 * WATCHES).div_ceil(100) {
        connections.push(app.grpc().await);
    }
    let mut consumers = Vec::new();
    let mut deliveries = Vec::new();
    for i in 0..WATCHES {
        let mut client = connections[i % connections.len()].clone();
        consumers.push(
            client
                .watch_consumers(crate::helpers::authed(
                    hookrelay::grpc::proto::WatchConsumersRequest::default(),
                    &watcher.token,
                ))
                .await
                .unwrap()
                .into_inner(),
        );
        deliveries.push(
            client
                .watch_deliveries(crate::helpers::authed(
                    hookrelay::grpc::proto::WatchDeliveriesRequest::default(),
                    &watcher.token,
                ))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    for watch in &mut consumers {
        let snapshot = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("a snapshot in time")
            .unwrap()
            .expect("the watch is open");
        assert!(snapshot.consumers.is_empty());
    }
    assert_eq!(polls(&app.metrics().await).as_deref(), Some("2"));
    assert_eq!(pushes(&app, &repository, "127.0.0.1", 50).await, [202; 50]);

    drop((consumers, deliveries));
    crate::helpers::eventually(Duration::from_secs(10), "the polls to stop", || async {
        (polls(&app.metrics().await).as_deref() == Some("0")).then_some(())
    })
    .await;
}
