//! `hookrelay migrate`, and `serve --no-migrate` on the schema it made.

use crate::helpers::{ServerProcess, TEST_SECRET_KEY, fresh_database, hookrelay};

fn migrate(database: &str) -> std::process::Output {
    hookrelay()
        .arg("migrate")
        .env("DATABASE_URL", database)
        .output()
        .unwrap()
}

#[tokio::test]
async fn migrate_applies_the_embedded_migrations_and_is_idempotent() {
    let database = fresh_database().await;

    let first = migrate(&database);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = migrate(&database);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, hookrelay::store::MIGRATOR.iter().count());
    let tables: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in ["client", "event", "repository", "signing_key", "tenant"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
}

#[tokio::test]
async fn serve_with_no_migrate_uses_the_schema_migrate_made() {
    let dir = tempfile::tempdir().unwrap();
    let unmigrated = fresh_database().await;
    let refused = hookrelay()
        .args(["serve", "--no-migrate"])
        .env("DATABASE_URL", &unmigrated)
        .env("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY)
        .env("HOOKRELAY_HTTP_ADDR", "127.0.0.1:0")
        .env("HOOKRELAY_GRPC_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "serve --no-migrate started on an empty database"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("no hookrelay schema") && stderr.contains("hookrelay migrate"),
        "{stderr}"
    );

    assert!(migrate(&unmigrated).status.success());
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", unmigrated),
            ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.into()),
            ("HOOKRELAY_NO_MIGRATE", "true".into()),
        ],
        dir.path(),
    )
    .await;
    let signup = reqwest::Client::new()
        .post(format!("{}/v1/tenants", server.address))
        .json(&serde_json::json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), reqwest::StatusCode::CREATED);
}
