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

/// What the next release would leave: a migration this binary does not know,
/// and its record naming the oldest release that can serve the schema.
async fn migrated_by_a_newer_release(pool: &sqlx::PgPool, serves_from: &str) {
    sqlx::query(
        "insert into _sqlx_migrations (version, description, success, checksum, execution_time) \
         values (99990101000000, 'a newer release', true, '\\x00', 1)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("insert into hookrelay_release (version, serves_from) values ('99.0.0', $1)")
        .bind(serves_from)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_release_serves_a_database_the_next_one_migrated_and_refuses_one_beyond() {
    let database = fresh_database().await;
    assert!(migrate(&database).status.success());
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let recorded: (String, String) =
        sqlx::query_as("select version, serves_from from hookrelay_release")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        (
            hookrelay::store::release::VERSION.to_owned(),
            hookrelay::store::release::SERVES_FROM.to_owned()
        )
    );

    // The rollback case: the next release migrated, and says this one can serve it.
    migrated_by_a_newer_release(&pool, hookrelay::store::release::VERSION).await;
    let back = migrate(&database);
    let said =
        String::from_utf8_lossy(&back.stdout).to_string() + &String::from_utf8_lossy(&back.stderr);
    assert!(back.status.success(), "{said}");
    assert!(
        said.contains("nothing to apply"),
        "migrate never goes backwards: {said}"
    );
    let app = crate::helpers::spawn_app_on(&database, |_| {}).await;
    assert!(
        app.is_ok(),
        "serves the next release's schema: {:?}",
        app.err()
    );
    drop(app);

    // A release that says only 99.x can serve its schema: one clear line.
    sqlx::query("update hookrelay_release set serves_from = '99.0.0' where version = '99.0.0'")
        .execute(&pool)
        .await
        .unwrap();
    let refused = migrate(&database);
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success());
    let expected = format!(
        "this is hookrelay {}, and the database was migrated by hookrelay 99.0.0, which releases \
         before 99.0.0 cannot serve: run hookrelay 99.0.0 or later",
        hookrelay::store::release::VERSION
    );
    assert!(said.contains(&expected), "{said}");
    let error = crate::helpers::spawn_app_on(&database, |_| {})
        .await
        .err()
        .expect("refused");
    assert!(format!("{error:#}").contains(&expected), "{error:#}");
    let error = crate::helpers::spawn_app_on(&database, |config| config.migrate = false)
        .await
        .err()
        .expect("refused with --no-migrate too");
    assert!(format!("{error:#}").contains(&expected), "{error:#}");
}
