//! The operator's commands, run as the real binary against a running server's
//! database: signing-key rotation without a restart.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{TEST_SECRET_KEY, TestApp, eventually, hookrelay_async, spawn_app};

/// `hookrelay <args>` against the app's database: (success, stdout + stderr).
pub async fn admin(app: &TestApp, args: &[&str]) -> (bool, String) {
    admin_on(
        &app.database_url,
        &[("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY)],
        args,
    )
    .await
}

/// `hookrelay <args>` against `database_url` with `envs`: (success, stdout + stderr).
async fn admin_on(database_url: &str, envs: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let output = hookrelay_async()
        .args(args)
        .env("DATABASE_URL", database_url)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("hookrelay runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

async fn jwks(app: &TestApp) -> Vec<String> {
    app.jwks()
        .await
        .keys
        .into_iter()
        .filter_map(|k| k.common.key_id)
        .collect()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn keys_rotate_publishes_at_once_signs_after_the_delay_and_retires_the_old_key() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let old_token = tenant.token.clone();
    let old_kid = kid(&old_token);
    assert_eq!(jwks(&app).await, std::slice::from_ref(&old_kid));

    let (ok, output) = admin(
        &app,
        &[
            "keys",
            "rotate",
            "--publish-delay",
            "8s",
            "--token-ttl",
            "4s",
            "--clock-skew",
            "0s",
        ],
    )
    .await;
    assert!(ok, "{output}");
    let new_kid = output
        .split_whitespace()
        .nth(3)
        .expect("added signing key <kid>")
        .to_owned();
    assert_ne!(new_kid, old_kid);
    assert!(
        output.contains(&old_kid) && output.contains("keeps verifying until"),
        "{output}"
    );

    // Published by the running server within its reload interval, well before it signs.
    eventually(Duration::from_secs(7), "publishing the new key", || async {
        jwks(&app).await.contains(&new_kid).then_some(())
    })
    .await;
    let token = app
        .token(&tenant.client_id, &tenant.client_secret, None)
        .await;
    assert_eq!(
        kid(&token),
        old_kid,
        "the old key signs during the publish delay"
    );
    let (ok, listed) = admin(&app, &["keys", "list"]).await;
    assert!(ok, "{listed}");
    assert!(line_of(&listed, &new_kid).contains("published"), "{listed}");
    let old_line = line_of(&listed, &old_kid);
    assert!(
        old_line.contains("signing") && old_line.contains("retires at"),
        "{listed}"
    );

    // Then the new key signs, and the old key's tokens still verify.
    eventually(
        Duration::from_secs(15),
        "signing with the new key",
        || async {
            let token = app
                .token(&tenant.client_id, &tenant.client_secret, None)
                .await;
            (kid(&token) == new_kid).then_some(())
        },
    )
    .await;
    assert_eq!(
        app.get("/v1/repositories", &old_token).await.status(),
        StatusCode::OK
    );

    // After the longest token lifetime, the old key retires everywhere.
    eventually(Duration::from_secs(15), "retiring the old key", || async {
        (jwks(&app).await == [new_kid.clone()]).then_some(())
    })
    .await;
    assert_eq!(
        app.get("/v1/repositories", &old_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, listed) = admin(&app, &["keys", "list"]).await;
    assert!(line_of(&listed, &old_kid).contains("retired"), "{listed}");
    assert!(line_of(&listed, &new_kid).contains("signing"), "{listed}");
}

fn line_of(listed: &str, kid: &str) -> String {
    listed
        .lines()
        .find(|l| l.starts_with(kid))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn keys_commands_refuse_a_wrong_key_encryption_key() {
    let app = spawn_app().await;
    let wrong = [(
        "HOOKRELAY_SECRET_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )];
    let (ok, output) = admin_on(&app.database_url, &wrong, &["keys", "list"]).await;
    assert!(!ok);
    assert!(output.contains("key-encryption key"), "{output}");
}

/// `hookrelay tenants`: list and show; a suspension refuses the tenant's
/// tokens, token requests, streams and webhooks (403, visible to the sender)
/// and changes nothing else; resume lifts it; delete needs --yes and removes
/// everything the tenant owns.
#[tokio::test]
async fn tenants_can_be_listed_suspended_resumed_and_deleted() {
    let app = spawn_app().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let repository = app.repository(&acme, "acme/app").await;
    let body = crate::helpers::fixture("push");
    assert_eq!(
        app.deliver(&repository.id, &repository.secret, "push", "before", &body)
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    let (ok, listed) = admin(&app, &["tenants", "list"]).await;
    assert!(ok, "{listed}");
    let row = line_of(&listed, &acme.tenant_id);
    assert!(row.contains("acme") && row.contains("active"), "{listed}");
    assert_eq!(
        row.split_whitespace().nth(3),
        Some("1"),
        "one client: {row}"
    );
    assert!(listed.contains(&globex.tenant_id));

    let mut stream = app.stream(&acme.token, "ci", &[], None).await.unwrap();
    crate::helpers::next_event(&mut stream, Duration::from_secs(10)).await;

    let (ok, output) = admin(&app, &["tenants", "suspend", &acme.tenant_id]).await;
    assert!(ok, "{output}");
    let refused = app.get("/v1/repositories", &acme.token).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("suspended"));
    let token = app
        .request_token(&acme.client_id, &acme.client_secret, None)
        .await;
    assert_eq!(token.status(), StatusCode::BAD_REQUEST);
    let token: serde_json::Value = token.json().await.unwrap();
    assert_eq!(token["error"], "unauthorized_client");
    // The open stream is closed.
    let ended = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("the stream of a suspended tenant closes");
    assert_eq!(ended.unwrap_err().code(), tonic::Code::Unauthenticated);
    // Webhooks get 403 once the repository's cached target expires (30 s),
    // at once for a repository this replica has not cached.
    let fresh = app.repository(&globex, "globex/app").await;
    let (ok, _) = admin(&app, &["tenants", "suspend", &globex.tenant_id]).await;
    assert!(ok);
    let webhook = app
        .deliver(&fresh.id, &fresh.secret, "push", "while-suspended", &body)
        .await;
    assert_eq!(webhook.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        webhook.json::<serde_json::Value>().await.unwrap()["error"],
        "forbidden"
    );
    // Other tenants are untouched.
    let (_, listed) = admin(&app, &["tenants", "show", &acme.tenant_id]).await;
    assert!(
        line_of(&listed, &acme.tenant_id).contains("suspended"),
        "{listed}"
    );

    let (ok, _) = admin(&app, &["tenants", "resume", &acme.tenant_id]).await;
    assert!(ok);
    assert_eq!(
        app.get("/v1/repositories", &acme.token).await.status(),
        StatusCode::OK
    );

    let (ok, output) = admin(&app, &["tenants", "delete", &acme.tenant_id]).await;
    assert!(!ok && output.contains("--yes"), "{output}");
    let (ok, output) = admin(&app, &["tenants", "delete", &acme.tenant_id, "--yes"]).await;
    assert!(ok, "{output}");
    assert_eq!(app.event_count().await, 0, "its events went with it");
    let (_, listed) = admin(&app, &["tenants", "list"]).await;
    assert!(!listed.contains(&acme.tenant_id) && listed.contains(&globex.tenant_id));
    let (ok, output) = admin(&app, &["tenants", "show", "not-a-uuid"]).await;
    assert!(!ok && output.contains("not a tenant id"), "{output}");
}

/// The restore drill of the README: `pg_dump`, `pg_restore` into a new
/// database, and a server with the same key-encryption key serves as before.
#[tokio::test]
async fn a_dump_restored_into_a_new_database_serves_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let public_url = url::Url::parse("https://relay.example.com").unwrap();
    let original =
        crate::helpers::spawn_app_with(|c| c.public_url = Some(public_url.clone())).await;
    let tenant = original.tenant("acme").await;
    let repository = original.repository(&tenant, "acme/app").await;
    let body = crate::helpers::fixture("push");
    let before = original
        .deliver(
            &repository.id,
            &repository.secret,
            "push",
            "before-backup",
            &body,
        )
        .await;
    assert_eq!(before.status(), StatusCode::ACCEPTED);

    let dump = dir.path().join("hookrelay.dump");
    let dumped = tokio::process::Command::new("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(&original.database_url)
        .output()
        .await
        .expect("pg_dump runs (the PostgreSQL client package)");
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    drop(original);

    let restored_url = crate::helpers::fresh_database().await;
    let restored = tokio::process::Command::new("pg_restore")
        .args(["--no-owner", "-d", &restored_url])
        .arg(&dump)
        .output()
        .await
        .expect("pg_restore runs");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let app = crate::helpers::spawn_app_on(&restored_url, |c| c.public_url = Some(public_url))
        .await
        .expect("the server starts on the restored database with the same key");

    // The token issued before the backup verifies (the signing key came back).
    assert_eq!(
        app.get("/v1/repositories", &tenant.token).await.status(),
        StatusCode::OK
    );
    // The webhook secret still verifies.
    let after = app
        .deliver(
            &repository.id,
            &repository.secret,
            "push",
            "after-restore",
            &body,
        )
        .await;
    assert_eq!(after.status(), StatusCode::ACCEPTED);
    // And the stream has both, in order.
    let mut stream = app.stream(&tenant.token, "drill", &[], None).await.unwrap();
    let first = crate::helpers::next_event(&mut stream, Duration::from_secs(10)).await;
    let second = crate::helpers::next_event(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(
        [first.delivery_id, second.delivery_id],
        ["before-backup", "after-restore"]
    );
}

/// Changing the key-encryption key while serving: servers run with the new key
/// and the previous one, `hookrelay secrets rekey` re-seals everything, and
/// then the new key alone opens every secret (and the old one no longer does).
#[tokio::test]
async fn secrets_rekey_moves_every_sealed_value_to_the_new_key() {
    use hookrelay::config::SecretKeySource;
    use hookrelay_testkit::{Sender, fixture_file};
    use secrecy::SecretString;

    const NEW_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let public_url = url::Url::parse("https://relay.example.com").unwrap();
    let old = crate::helpers::spawn_app_with(|c| c.public_url = Some(public_url.clone())).await;
    let tenant = old.tenant("acme").await;
    let github = old.repository(&tenant, "acme/app").await;
    let gitlab = old
        .register(&tenant, "gitlab", "acme/platform", serde_json::json!({}))
        .await;
    let (gitlab_id, gitlab_secret) = (
        gitlab["id"].as_str().unwrap().to_owned(),
        gitlab["webhook_secret"].as_str().unwrap().to_owned(),
    );
    let body = fixture_file("gitlab/push.json");
    let headers = Sender::GitlabToken.headers(&gitlab_secret, "Push Hook", "g-1", &body, 0);
    assert_eq!(
        old.post_webhook(&gitlab_id, &headers, &body).await.status(),
        StatusCode::ACCEPTED
    );
    let database_url = old.database_url.clone();
    drop(old);

    let with_keys = |current: &str, previous: Option<&str>| {
        let (current, previous, public_url) = (
            current.to_owned(),
            previous.map(str::to_owned),
            public_url.clone(),
        );
        move |c: &mut hookrelay::config::Config| {
            c.public_url = Some(public_url);
            c.secret_key = SecretKeySource::Value(SecretString::from(current));
            c.previous_secret_key = previous.map(|p| SecretKeySource::Value(SecretString::from(p)));
        }
    };
    // During the change: the new key seals, either opens.
    let both =
        crate::helpers::spawn_app_on(&database_url, with_keys(NEW_KEY, Some(TEST_SECRET_KEY)))
            .await
            .expect("a server with both keys starts");
    assert_eq!(
        both.deliver(
            &github.id,
            &github.secret,
            "push",
            "during",
            &crate::helpers::fixture("push")
        )
        .await
        .status(),
        StatusCode::ACCEPTED
    );

    let both_keys = [
        ("HOOKRELAY_SECRET_KEY", NEW_KEY),
        ("HOOKRELAY_PREVIOUS_SECRET_KEY", TEST_SECRET_KEY),
    ];
    let (ok, said) = admin_on(&database_url, &both_keys, &["secrets", "rekey"]).await;
    assert!(ok, "{said}");
    assert!(
        said.contains("1 key check, 2 webhook secrets, 1 signing keys, 1 event headers"),
        "{said}"
    );
    drop(both);

    // Afterwards the new key alone opens everything.
    let new = crate::helpers::spawn_app_on(&database_url, with_keys(NEW_KEY, None))
        .await
        .expect("the new key alone opens the database");
    assert_eq!(
        new.get("/v1/repositories", &tenant.token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        new.deliver(
            &github.id,
            &github.secret,
            "push",
            "after",
            &crate::helpers::fixture("push")
        )
        .await
        .status(),
        StatusCode::ACCEPTED
    );
    let mut stream = new
        .stream(&tenant.token, "agent", &[gitlab_id.as_str()], None)
        .await
        .unwrap();
    let event = crate::helpers::next_event(&mut stream, Duration::from_secs(10)).await;
    let token = event
        .headers
        .iter()
        .find(|h| h.name == "x-gitlab-token")
        .map(|h| h.value.clone());
    assert_eq!(
        token.as_deref(),
        Some(gitlab_secret.as_str()),
        "the sealed token re-sealed"
    );
    drop(new);
    // And the old key no longer does.
    let refused =
        crate::helpers::spawn_app_on(&database_url, with_keys(TEST_SECRET_KEY, None)).await;
    assert!(
        refused.is_err(),
        "a server with the old key alone refuses to start"
    );

    // Running it again finds nothing left to do.
    let (ok, again) = admin_on(&database_url, &both_keys, &["secrets", "rekey"]).await;
    assert!(
        ok && again.contains("0 key check, 0 webhook secrets, 0 signing keys, 0 event headers"),
        "{again}"
    );
}
