//! What an anonymous caller on the internet can try: slow headers and bodies,
//! idle floods, huge uploads, repeated signups and secret guessing, and
//! headers meant for the private network. Each is bounded, and changes nothing.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    ServerProcess, TestApp, assert_error, deliver_at, fixture, read_until_closed, sign, spawn_app,
    spawn_app_with,
};
use hookrelay::server::Rate;

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn clients_that_dribble_headers_or_send_nothing_are_disconnected() {
    let app = spawn_app_with(|config| {
        config.limits.http_header_timeout = Duration::from_secs(1);
        config.limits.http_idle_timeout = Duration::from_secs(30);
    })
    .await;

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(host(&app)).await.unwrap();
    // Sends one header line every 200 ms: never completes its headers.
    let mut slowloris = TcpStream::connect(host(&app)).await.unwrap();
    slowloris
        .write_all(b"POST /v1/tenants HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(10) {
        if slowloris.write_all(b"x-padding: a\r\n").await.is_err() {
            cut = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), slowloris.read(&mut byte)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a client dribbling headers is disconnected");
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(10))
            .await
            .is_some(),
        "a client that sends nothing is disconnected"
    );
    // The server still answers everyone else.
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn kept_alive_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let app = spawn_app_with(|config| {
        config.limits.http_header_timeout = Duration::from_millis(500);
        config.limits.http_idle_timeout = Duration::from_secs(3);
    })
    .await;
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    // Past the header timeout, the idle connection still serves a next request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    // Then it closes once idle for the idle timeout.
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(15))
            .await
            .is_some(),
        "an idle kept-alive connection is closed"
    );
}

#[tokio::test]
async fn a_body_that_does_not_finish_within_the_deadline_gets_408_and_nothing_is_stored() {
    let app = spawn_app_with(|config| {
        config.limits.http_body_timeout = Duration::from_secs(1);
    })
    .await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let before = app.database_digest().await;

    for (path, content_type) in [
        (
            format!("/v1/webhooks/{}", repository.id),
            "application/json",
        ),
        ("/v1/tenants".to_owned(), "application/json"),
    ] {
        let mut stream = TcpStream::connect(host(&app)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\n\
             x-github-event: ping\r\nx-github-delivery: slow-1\r\n\
             x-hub-signature-256: sha256=00\r\ncontent-length: 1000\r\n\r\n{{\"zen\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(15))
            .await
            .expect("the server answers and closes");
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    assert_eq!(app.database_digest().await, before);
}

/// Peak and current resident memory of a process, in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let (rss, peak) = hookrelay_testkit::rss_kib(pid);
    (peak / 1024, rss / 1024)
}

/// 40 clients start near-25 MiB uploads at once and stall, as slow uploads do.
/// The budget (256 MiB by default) admits what it can hold; the others get 503
/// with Retry-After before their body is read. RSS stays within the budget
/// plus a baseline of 64 MiB over the idle server, whose own baseline is
/// measured first.
#[tokio::test]
async fn concurrent_huge_uploads_stay_within_the_memory_budget() {
    const UPLOADS: usize = 40;
    const SIZE: usize = 24 * 1024 * 1024;
    const BUDGET_MIB: u64 = 256;
    const BASELINE_MIB: u64 = 64;
    let logs = tempfile::tempdir().unwrap();
    let database = crate::helpers::fresh_database().await;
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", database),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.into(),
            ),
            ("HOOKRELAY_HTTP_BODY_TIMEOUT", "8s".into()),
        ],
        logs.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = crate::helpers::tenant_at(&http, &server.address, "acme").await;
    let repository =
        crate::helpers::repository_at(&http, &server.address, &tenant.token, "acme/app").await;
    let id = repository["id"].as_str().unwrap().to_owned();
    let secret = repository["webhook_secret"].as_str().unwrap().to_owned();
    let pid = server.child.id();
    let (_, idle_rss) = memory_mib(pid);

    let address = server.address.trim_start_matches("http://").to_owned();
    let chunk = vec![b' '; 1024 * 1024];
    let mut uploads = Vec::new();
    for i in 0..UPLOADS {
        let (address, id, chunk) = (address.clone(), id.clone(), chunk.clone());
        uploads.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            let head = format!(
                "POST /v1/webhooks/{id} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 x-github-event: push\r\nx-github-delivery: big-{i}\r\n\
                 x-hub-signature-256: sha256=00\r\ncontent-length: {SIZE}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // Everything but the last MiB, then stall; a refused upload sees its
            // answer (and its connection closed) instead.
            for _ in 0..(SIZE / chunk.len() - 1) {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            stream
        }));
    }
    let mut streams = Vec::new();
    for upload in uploads {
        streams.push(upload.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, stalled_rss) = memory_mib(pid);

    let mut refused = 0;
    let mut timed_out = 0;
    for mut stream in streams {
        let answer = read_until_closed(&mut stream, Duration::from_secs(30))
            .await
            .expect("every upload is answered");
        if answer.starts_with("HTTP/1.1 503") {
            assert!(
                answer.to_ascii_lowercase().contains("retry-after: "),
                "{answer}"
            );
            refused += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            timed_out += 1;
        }
    }
    let (peak, _) = memory_mib(pid);
    eprintln!(
        "uploads: {refused} refused with 503, {timed_out} held; RSS idle {idle_rss} MiB, stalled {stalled_rss} MiB, peak {peak} MiB"
    );
    assert!(
        refused >= UPLOADS - (BUDGET_MIB as usize * 1024 * 1024) / SIZE,
        "{refused} refused, {timed_out} held"
    );
    assert!(timed_out >= 1, "the budget admits what it can hold");
    assert!(
        peak <= idle_rss + BUDGET_MIB + BASELINE_MIB,
        "peak RSS {peak} MiB (idle {idle_rss} MiB, while stalled {stalled_rss} MiB)"
    );

    // Once those are gone, the budget is whole again: a real push goes through.
    let body = fixture("push");
    let response = http
        .post(format!("{}/v1/webhooks/{id}", server.address))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "after-the-flood")
        .header("x-hub-signature-256", sign(&secret, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// The process starts with a soft open-file limit of 512 (as many systems set
/// it) and a cap of 300 connections; 3,000 idle sockets later, health checks and
/// a signed webhook are still served.
#[tokio::test]
async fn a_flood_of_idle_connections_does_not_lock_out_health_checks_or_webhooks() {
    let logs = tempfile::tempdir().unwrap();
    let database = crate::helpers::fresh_database().await;
    // Through sh, so that the lowered limit applies to the server alone.
    let mut command = std::process::Command::new("sh");
    command
        .args([
            "-c",
            r#"ulimit -Sn 512 && exec "$0" serve"#,
            env!("CARGO_BIN_EXE_hookrelay"),
        ])
        .env_remove("DATABASE_URL");
    let server = ServerProcess::start_command(
        command,
        &[
            ("DATABASE_URL", database),
            (
                "HOOKRELAY_SECRET_KEY",
                crate::helpers::TEST_SECRET_KEY.into(),
            ),
            ("HOOKRELAY_MAX_CONNECTIONS", "300".into()),
        ],
        logs.path(),
    )
    .await;
    let port: u16 = server.address.rsplit(':').next().unwrap().parse().unwrap();
    let http = reqwest::Client::new();
    let tenant = crate::helpers::tenant_at(&http, &server.address, "acme").await;
    let repository =
        crate::helpers::repository_at(&http, &server.address, &tenant.token, "acme/app").await;

    let mut flood = Vec::new();
    for _ in 0..3000 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            flood.push(stream);
        }
    }
    assert!(flood.len() >= 2500, "the flood connected: {}", flood.len());

    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ready = fresh
        .get(format!("{}/readyz", server.address))
        .send()
        .await
        .expect("/readyz answers during the flood");
    assert_eq!(ready.status(), StatusCode::OK);
    let response = deliver_at(
        &fresh,
        &server.address,
        &repository,
        "ping",
        "during-the-flood",
        &fixture("ping"),
    )
    .await
    .expect("a webhook is served during the flood");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert!(open < 600, "the server holds {open} descriptors");
    drop(flood);
}

fn limited(count: u32) -> Option<Rate> {
    Some(Rate {
        count: NonZeroU32::new(count).unwrap(),
        per: Duration::from_secs(3600),
    })
}

#[tokio::test]
async fn signups_are_rate_limited_per_source_behind_a_trusted_proxy() {
    let app = spawn_app_with(|config| {
        config.limits.signup_rate = limited(3);
        config.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let sign_up = |source: &'static str| {
        app.http
            .post(app.url("/v1/tenants"))
            .header("x-forwarded-for", format!("6.6.6.6, {source}"))
            .json(&json!({"name": "acme"}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            sign_up("198.51.100.1").await.unwrap().status(),
            StatusCode::CREATED
        );
    }
    let tenants = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from tenant")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let before = tenants().await;
    let response = sign_up("198.51.100.1").await.unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(tenants().await, before, "a limited signup creates nothing");
    // Another source is not slowed.
    assert_eq!(
        sign_up("198.51.100.2").await.unwrap().status(),
        StatusCode::CREATED
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"hookrelay_rate_limited_total{endpoint="signup"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(|config| config.limits.signup_rate = limited(2)).await;
    for (i, expected) in [
        StatusCode::CREATED,
        StatusCode::CREATED,
        StatusCode::TOO_MANY_REQUESTS,
    ]
    .into_iter()
    .enumerate()
    {
        let response = app
            .http
            .post(app.url("/v1/tenants"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"name": "acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "signup {i}");
    }
}

#[tokio::test]
async fn failed_client_authentication_is_rate_limited_without_slowing_other_sources() {
    let app = spawn_app_with(|config| {
        config.limits.token_failure_rate = limited(3);
        config.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let tenant = app.tenant("acme").await;
    let request = |source: &'static str, secret: String| {
        app.http
            .post(app.url("/oauth/token"))
            .header("x-forwarded-for", source)
            .basic_auth(&tenant.client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    for _ in 0..3 {
        let response = request("198.51.100.1", "wrong".into()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = request("198.51.100.1", "wrong".into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(body["error_description"].as_str().is_some(), "{body}");
    // The guessing source is blocked even with the right secret, for now...
    let response = request("198.51.100.1", tenant.client_secret.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...while another source authenticates at once.
    let response = request("198.51.100.2", tenant.client_secret.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Successes do not count against a source.
    for _ in 0..5 {
        let response = request("198.51.100.3", tenant.client_secret.clone())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"hookrelay_rate_limited_total{endpoint="token"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn credential_and_proxy_headers_are_never_stored() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let body = fixture("ping");
    let response = app
        .http
        .post(app.url(&format!("/v1/webhooks/{}", repository.id)))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "with-credentials")
        .header("x-hub-signature-256", sign(&repository.secret, &body))
        .header("authorization", "Bearer internal-admin-token")
        .header("proxy-authorization", "Basic YWRtaW46YWRtaW4=")
        .header("cookie", "session=admin")
        .header("forwarded", "for=10.0.0.1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-host", "jenkins.internal")
        .header("x-real-ip", "10.0.0.1")
        .header("x-custom", "kept")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let headers: Value = sqlx::query_scalar("select headers from event")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let names: Vec<&str> = headers
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert!(names.contains(&"x-custom"), "{names:?}");
    for dropped in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
    ] {
        assert!(!names.contains(&dropped), "{dropped} is stored: {names:?}");
    }
}

#[tokio::test]
async fn ambiguous_or_non_utf8_identifying_headers_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let body = fixture("ping");
    let signature = sign(&repository.secret, &body);
    let before = app.database_digest().await;
    let cases: [(&str, &str, &[u8]); 4] = [
        ("x-hub-signature-256", "repeated signature", b"sha256=00"),
        ("x-github-delivery", "repeated delivery", b"other-delivery"),
        ("x-github-event", "repeated event", b"push"),
        ("x-custom", "not UTF-8", b"caf\xe9"),
    ];
    for (name, case, extra) in cases {
        let response = app
            .http
            .post(app.url(&format!("/v1/webhooks/{}", repository.id)))
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", "ambiguous")
            .header("x-hub-signature-256", &signature)
            .header(
                name,
                reqwest::header::HeaderValue::from_bytes(extra).unwrap(),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if name == "x-custom" {
            assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        } else {
            let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("more than once"),
                "{case}: {error}"
            );
        }
    }
    assert_eq!(app.database_digest().await, before);
}

/// The gRPC listener has the same limits: a silent connection is cut at the
/// header timeout, while an open stream, however quiet, is a request in flight
/// and outlives the idle timeout.
#[tokio::test]
async fn grpc_connections_are_cut_when_silent_but_open_streams_stay() {
    let app = spawn_app_with(|config| {
        config.limits.http_header_timeout = Duration::from_secs(1);
        config.limits.http_idle_timeout = Duration::from_secs(2);
    })
    .await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let mut silent = TcpStream::connect(app.grpc_address.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut stream = app
        .stream(&tenant.token, "quiet", &[&repository.id], None)
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(10))
            .await
            .is_some(),
        "a silent gRPC connection is disconnected"
    );
    // Three idle timeouts of silence on the stream.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let response = app
        .deliver(
            &repository.id,
            &repository.secret,
            "ping",
            "after-the-silence",
            &fixture("ping"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let event = crate::helpers::next_event(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(event.delivery_id, "after-the-silence");
}
