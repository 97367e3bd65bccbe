//! `/healthz` and `/readyz` while the database is up and while it is not.

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{admin_url, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer_while_the_database_is_up() {
    let app = spawn_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_while_the_database_is_unreachable() {
    let app = spawn_app().await;
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.pool.close().await;
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    let lock_out = |allow: bool| {
        sqlx::AssertSqlSafe(format!(
            r#"alter database "{database}" allow_connections {allow}"#
        ))
    };
    sqlx::query(lock_out(false))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    sqlx::query(lock_out(true))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if app
            .http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "readyz recovers with the database");
}
