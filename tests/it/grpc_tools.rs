//! The gRPC API through grpcurl, a client nobody here wrote: reflection, a call
//! with a bearer token, and health.

use std::time::{Duration, Instant};
use tokio::process::Command;

use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{admin_url, fixture, spawn_app};

/// grpcurl from PATH; scripts/test installs it into .venv. Missing is a failure, not a skip.
/// Async: the server under test runs on this test's runtime.
async fn grpcurl(args: &[&str]) -> (bool, String) {
    let output =
        Command::new("grpcurl").args(args).output().await.expect(
            "grpcurl is not on PATH: run the tests through scripts/test, which installs it",
        );
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn host(address: &str) -> &str {
    address.trim_start_matches("http://")
}

#[tokio::test]
async fn reflection_lists_the_services_without_a_token() {
    let app = spawn_app().await;
    let (ok, listed) = grpcurl(&["-plaintext", host(&app.grpc_address), "list"]).await;
    assert!(ok, "{listed}");
    for service in [
        "hookrelay.v1.EventService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} missing from:\n{listed}"
        );
    }
    let (ok, described) = grpcurl(&[
        "-plaintext",
        host(&app.grpc_address),
        "describe",
        "hookrelay.v1.EventService",
    ])
    .await;
    assert!(ok && described.contains("rpc StreamEvents"), "{described}");
}

#[tokio::test]
async fn grpcurl_lists_events_with_a_bearer_token() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    app.deliver(
        &repository.id,
        &repository.secret,
        "ping",
        "via-grpcurl",
        &fixture("ping"),
    )
    .await;
    let data = format!(r#"{{"repository_id": "{}"}}"#, repository.id);
    let bearer = format!("authorization: Bearer {}", tenant.token);

    let (ok, output) = grpcurl(&[
        "-plaintext",
        "-H",
        &bearer,
        "-d",
        &data,
        host(&app.grpc_address),
        "hookrelay.v1.EventService/ListEvents",
    ])
    .await;
    assert!(ok, "{output}");
    let page: Value = serde_json::from_str(&output).unwrap();
    assert_eq!(page["events"][0]["deliveryId"], "via-grpcurl");
    assert_eq!(page["events"][0]["eventType"], "ping");

    let (ok, output) = grpcurl(&[
        "-plaintext",
        "-d",
        &data,
        host(&app.grpc_address),
        "hookrelay.v1.EventService/ListEvents",
    ])
    .await;
    assert!(!ok && output.contains("Unauthenticated"), "{output}");
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    let app = spawn_app().await;
    let address = host(&app.grpc_address).to_owned();
    let check = |service: &'static str| {
        let address = address.clone();
        async move {
            let data = format!(r#"{{"service": "{service}"}}"#);
            grpcurl(&[
                "-plaintext",
                "-d",
                &data,
                &address,
                "grpc.health.v1.Health/Check",
            ])
            .await
            .1
        }
    };
    let wait_for = |wanted: &'static str| {
        let check = &check;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let answer = check("hookrelay.v1.EventService").await;
                if answer.contains(&format!("\"{wanted}\"")) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "health never became {wanted}: {answer}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_for("SERVING").await;
    assert!(check("").await.contains("\"SERVING\""));

    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.pool.close().await;
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    let allow = |allow: bool| {
        sqlx::AssertSqlSafe(format!(
            r#"alter database "{database}" allow_connections {allow}"#
        ))
    };
    sqlx::query(allow(false)).execute(&mut admin).await.unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();
    wait_for("NOT_SERVING").await;

    sqlx::query(allow(true)).execute(&mut admin).await.unwrap();
    wait_for("SERVING").await;
}
