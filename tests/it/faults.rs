//! Faults that must not cost a committed event: the server killed with SIGKILL
//! under load, PostgreSQL stopped mid-ingest, storage failing. A 2xx always
//! means stored; failures answer 503 with Retry-After, never 500.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    OwnCluster, ServerProcess, TEST_SECRET_KEY, assert_error, fixture, repository_at, sign,
    spawn_app, tenant_at,
};

/// What posters saw: per delivery id, the event id of its 2xx.
#[derive(Default)]
struct Outcomes {
    accepted: Mutex<BTreeMap<String, i64>>,
    unavailable: AtomicUsize,
    unavailable_without_retry_after: AtomicUsize,
    other: Mutex<Vec<String>>,
}

/// Posts signed pings to `address()` from `writers` tasks until `stop`.
fn post_until(
    address: Arc<Mutex<String>>,
    repository: (String, String),
    writers: usize,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Outcomes>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|writer| {
            let (address, repository, stop, outcomes) = (
                address.clone(),
                repository.clone(),
                stop.clone(),
                outcomes.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .build()
                    .unwrap();
                let body = fixture("ping");
                let signature = sign(&repository.1, &body);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let delivery = format!("w{writer}-{n}");
                    let url = format!("{}/v1/webhooks/{}", address.lock().unwrap(), repository.0);
                    let sent = http
                        .post(url)
                        .header("content-type", "application/json")
                        .header("x-github-event", "ping")
                        .header("x-github-delivery", &delivery)
                        .header("x-hub-signature-256", &signature)
                        .body(body.clone())
                        .send()
                        .await;
                    let Ok(response) = sent else {
                        // Killed mid-request, or nothing listening: no answer, no promise.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let status = response.status();
                    let retry_after = response.headers().contains_key("retry-after");
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        let Ok(answer) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        outcomes
                            .accepted
                            .lock()
                            .unwrap()
                            .insert(delivery, answer["event_id"].as_i64().unwrap());
                    } else if status == StatusCode::SERVICE_UNAVAILABLE {
                        outcomes.unavailable.fetch_add(1, Ordering::SeqCst);
                        if !retry_after {
                            outcomes
                                .unavailable_without_retry_after
                                .fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    } else {
                        outcomes
                            .other
                            .lock()
                            .unwrap()
                            .push(format!("{status} {text}"));
                    }
                }
            })
        })
        .collect()
}

/// Stops the posters, then checks that every delivery that got a 2xx is
/// stored, under the event id it was told, and that nothing but 2xx and 503
/// came back. Returns the number of 2xx.
async fn stop_and_check(
    stop: &AtomicBool,
    posters: Vec<tokio::task::JoinHandle<()>>,
    pool: &sqlx::PgPool,
    outcomes: &Outcomes,
) -> usize {
    stop.store(true, Ordering::SeqCst);
    for poster in posters {
        poster.await.unwrap();
    }
    assert!(
        outcomes.other.lock().unwrap().is_empty(),
        "only 2xx and 503: {:?}",
        outcomes.other.lock().unwrap()
    );
    let stored: BTreeMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("select delivery_id, event_id from event")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let accepted = outcomes.accepted.lock().unwrap().clone();
    for (delivery, event_id) in &accepted {
        assert_eq!(
            stored.get(delivery),
            Some(event_id),
            "{delivery} got a 2xx with event {event_id} but is not stored"
        );
    }
    accepted.len()
}

#[tokio::test]
async fn every_2xx_survives_the_server_being_killed_under_load() {
    const ROUNDS: usize = 4;
    let logs = tempfile::tempdir().unwrap();
    let database = crate::helpers::fresh_database().await;
    let env = [
        ("DATABASE_URL", database.clone()),
        ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.to_owned()),
    ];
    let mut server = ServerProcess::start(&env, logs.path()).await;
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &server.address, "acme").await;
    let repository = repository_at(&http, &server.address, &tenant.token, "acme/app").await;
    let repository = (
        repository["id"].as_str().unwrap().to_owned(),
        repository["webhook_secret"].as_str().unwrap().to_owned(),
    );
    let address = Arc::new(Mutex::new(server.address.clone()));
    let outcomes = Arc::new(Outcomes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let posters = post_until(
        address.clone(),
        repository,
        8,
        stop.clone(),
        outcomes.clone(),
    );
    let mut per_round = Vec::new();
    for _ in 0..ROUNDS {
        let before = outcomes.accepted.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while outcomes.accepted.lock().unwrap().len() < before + 50 {
            assert!(Instant::now() < deadline, "no webhooks accepted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.signal("KILL");
        server.wait(Duration::from_secs(10)).await;
        per_round.push(outcomes.accepted.lock().unwrap().len() - before);
        server = ServerProcess::start(&env, logs.path()).await;
        *address.lock().unwrap() = server.address.clone();
    }
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let accepted = stop_and_check(&stop, posters, &pool, &outcomes).await;
    eprintln!(
        "kill -9 x{ROUNDS}: {accepted} webhooks got a 2xx ({per_round:?} before each kill); all stored"
    );
}

#[tokio::test]
async fn postgresql_stopped_mid_ingest_gets_503_never_a_false_2xx_and_recovers() {
    let logs = tempfile::tempdir().unwrap();
    let mut cluster = OwnCluster::start().await;
    let url = cluster.url.clone();
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", url.clone()),
            ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.to_owned()),
        ],
        logs.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &server.address, "acme").await;
    let repository = repository_at(&http, &server.address, &tenant.token, "acme/app").await;
    let repository = (
        repository["id"].as_str().unwrap().to_owned(),
        repository["webhook_secret"].as_str().unwrap().to_owned(),
    );
    let outcomes = Arc::new(Outcomes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let posters = post_until(
        Arc::new(Mutex::new(server.address.clone())),
        repository,
        4,
        stop.clone(),
        outcomes.clone(),
    );
    while outcomes.accepted.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A fast shutdown: sessions are cut mid-transaction, as in a failover.
    cluster.kill();
    let outage_began = outcomes.accepted.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http
            .get(format!("{}/readyz", server.address))
            .send()
            .await
            .unwrap();
        if ready.status() == StatusCode::SERVICE_UNAVAILABLE
            && outcomes.unavailable.load(Ordering::SeqCst) > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "no 503 during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during_outage = outcomes.accepted.lock().unwrap().len() - outage_began;

    cluster.restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let recovered_at = outcomes.accepted.lock().unwrap().len();
    loop {
        let ready = http
            .get(format!("{}/readyz", server.address))
            .send()
            .await
            .unwrap();
        if ready.status() == StatusCode::OK
            && outcomes.accepted.lock().unwrap().len() > recovered_at + 20
        {
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let accepted = stop_and_check(&stop, posters, &pool, &outcomes).await;
    assert_eq!(
        outcomes
            .unavailable_without_retry_after
            .load(Ordering::SeqCst),
        0
    );
    let metrics = crate::helpers::metrics_at(&http, &server.address).await;
    assert!(
        metrics.contains(r#"hookrelay_webhooks_rejected_total{reason="database_unavailable"}"#),
        "{metrics}"
    );
    let log = server.log();
    let error_lines = log
        .lines()
        .filter(|l| l.contains(r#""level":"ERROR""#))
        .count();
    let outage_lines = log
        .lines()
        .filter(|l| l.contains("the database is unavailable"))
        .count();
    let unavailable = outcomes.unavailable.load(Ordering::SeqCst);
    eprintln!(
        "PostgreSQL stopped: {accepted} 2xx all stored ({during_outage} during the outage), \
         {unavailable} answered 503, {error_lines} error lines, {outage_lines} outage lines"
    );
    assert!(outage_lines <= 2, "one line per outage:\n{log}");
    assert!(
        error_lines <= 10,
        "{error_lines} error lines for one outage"
    );
    pool.close().await;
    drop(server);
    drop(cluster);
}

#[tokio::test]
async fn readiness_turns_503_while_commits_fail_for_a_storage_reason() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    // The error PostgreSQL raises when its disk is full, from the insert path.
    sqlx::raw_sql(
        "create function fail_like_a_full_disk() returns trigger language plpgsql as $$ \
         begin raise exception 'could not extend file: No space left on device' using errcode = 'disk_full'; end $$; \
         create trigger full_disk before insert on event for each statement execute function fail_like_a_full_disk();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let ready = || async {
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready().await, StatusCode::OK, "select 1 still works");
    let body = fixture("ping");
    let response = app
        .deliver(&repository.id, &repository.secret, "ping", "full-1", &body)
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.event_count().await, 0);

    sqlx::raw_sql("drop trigger full_disk on event")
        .execute(&app.pool)
        .await
        .unwrap();
    let response = app
        .deliver(&repository.id, &repository.secret, "ping", "full-1", &body)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(ready().await, StatusCode::OK, "a commit succeeded again");
}

/// The database drops every connection between two webhooks (a restart, a
/// failover, an administrator), a moment after the last one was used: the
/// next webhooks are stored on new connections, not answered 503.
#[tokio::test]
async fn webhooks_right_after_the_database_dropped_every_connection_are_stored() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let tenant = app.tenant("dropped").await;
    let repository = app.repository(&tenant, "acme/dropped").await;
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&crate::helpers::admin_url())
        .await
        .unwrap();
    for round in 0..3 {
        let before = app.push(&repository, &format!("before-{round}")).await;
        let dropped: Vec<bool> = sqlx::query_scalar(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where datname = $1 and pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(dropped.contains(&true), "no connection to drop");
        // At once, and again: every connection the writer held is gone.
        let after = app.push(&repository, &format!("after-{round}")).await;
        let again = app.push(&repository, &format!("again-{round}")).await;
        assert!(before < after && after < again, "{before} {after} {again}");
    }
}
