//! Recovering missed deliveries from the provider's own delivery log, against
//! stand-ins of GitHub's and GitLab's REST APIs (`hookrelay_testkit::
//! provider_api`) that really deliver, log what hookrelay answered, and
//! redeliver the logged request on demand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hookrelay_testkit::provider_api::{Access, Kind, ProviderApi};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    OwnCluster, TestApp, TestRepository, TestTenant, assert_error, assert_error_says, eventually,
    fixture, free_port, fresh_database, spawn_app_on,
};

const TOKEN: &str = "github_pat_recovery";

/// Allows the stand-ins on loopback, over http, and pins the HTTP port and
/// public URL so a restarted server has the same webhook URL.
fn configure(port: u16) -> impl FnOnce(&mut hookrelay::config::Config) {
    move |config| {
        config.http_addr = format!("127.0.0.1:{port}").parse().unwrap();
        config.public_url = Some(format!("http://127.0.0.1:{port}").parse().unwrap());
        config.outbound.allow_http = true;
        config.outbound.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    }
}

async fn start(database_url: &str, port: u16) -> TestApp {
    start_with(database_url, port, |_| {}).await
}

async fn start_with(
    database_url: &str,
    port: u16,
    more: impl Fn(&mut hookrelay::config::Config),
) -> TestApp {
    // The port of a server stopped a moment ago may take a moment to free.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let setup = |config: &mut hookrelay::config::Config| {
            configure(port)(config);
            more(config);
        };
        match spawn_app_on(database_url, setup).await {
            Ok(app) => return app,
            Err(error) if Instant::now() < deadline => {
                eprintln!("retrying the start: {error:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the server starts: {error:#}"),
        }
    }
}

/// Stops `app` and waits until its port refuses connections.
async fn stop(app: TestApp) {
    let address = app.address.trim_start_matches("http://").to_owned();
    drop(app);
    eventually(Duration::from_secs(15), "the server to stop", || {
        let address = address.clone();
        async move {
            tokio::net::TcpStream::connect(&address)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
}

/// A tenant, its GitHub repository, and a GitHub stand-in whose hook posts to
/// the repository's webhook URL with its secret.
struct Scene {
    tenant: TestTenant,
    repository: TestRepository,
    webhook_url: String,
    github: ProviderApi,
    hook: u64,
}

async fn github_scene(app: &TestApp, name: &str) -> Scene {
    let tenant = app.tenant("acme").await;
    let created = crate::helpers::repository_at(&app.http, &app.address, &tenant.token, name).await;
    let repository = TestRepository {
        id: created["id"].as_str().unwrap().to_owned(),
        secret: created["webhook_secret"].as_str().unwrap().to_owned(),
    };
    let webhook_url = created["webhook_url"].as_str().unwrap().to_owned();
    let github = ProviderApi::start(Kind::Github, name).await;
    github.add_token(TOKEN, Access::Write);
    let hook = github.add_hook(&webhook_url, &repository.secret);
    Scene {
        tenant,
        repository,
        webhook_url,
        github,
        hook,
    }
}

impl Scene {
    fn path(&self, rest: &str) -> String {
        format!("/v1/repositories/{}{rest}", self.repository.id)
    }

    async fn give_access(&self, app: &TestApp) -> Value {
        let response = app
            .put_json(
                &self.path("/provider-access"),
                &self.tenant.token,
                &json!({"token": TOKEN, "api_url": self.github.api_url}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Delivers pushes `prefix-0..n` through the stand-in; each answer must be `expected`.
    async fn deliver(&self, prefix: &str, n: usize, expected: u16) -> Vec<String> {
        let body = fixture("push");
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("{prefix}-{i}");
            let status = self.github.deliver(self.hook, "push", &id, &body).await;
            assert_eq!(status, expected, "{id}");
            ids.push(id);
        }
        ids
    }
}

/// Each delivery id of the repository with how many events it has.
async fn stored(app: &TestApp, repository: &str) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "select delivery_id, count(*) from event where repository_id = $1::uuid group by 1",
    )
    .bind(repository)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

async fn wait_stored(app: &TestApp, repository: &str, ids: &[String], what: &str) {
    eventually(Duration::from_secs(60), what, || async {
        let stored = stored(app, repository).await;
        ids.iter().all(|id| stored.contains_key(id)).then_some(())
    })
    .await;
}

/// Posts `recover` and returns the run's id.
async fn recover(app: &TestApp, scene: &Scene) -> String {
    let response = app
        .post_json(
            &scene.path("/recover"),
            Some(&scene.tenant.token),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    body["recovery_id"].as_str().unwrap().to_owned()
}

/// The run `id` once it has finished.
async fn finished(app: &TestApp, scene: &Scene, id: &str) -> Value {
    eventually(
        Duration::from_secs(120),
        "the recovery run to finish",
        || async {
            let runs = app
                .get_json(&scene.path("/recoveries"), &scene.tenant.token)
                .await;
            runs["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|run| run["id"] == id && !run["finished_at"].is_null())
                .cloned()
        },
    )
    .await
}

/// Makes every ingest commit fail the way a full disk does: webhooks get 503.
async fn fail_commits(app: &TestApp, fail: bool) {
    let sql = if fail {
        "create or replace function fail_like_a_full_disk() returns trigger language plpgsql as $$ \
         begin raise exception 'could not extend file: No space left on device' using errcode = 'disk_full'; end $$; \
         create trigger full_disk before insert on event for each statement execute function fail_like_a_full_disk();"
    } else {
        "drop trigger full_disk on event"
    };
    sqlx::raw_sql(sql).execute(&app.pool).await.unwrap();
}

#[tokio::test]
async fn deliveries_missed_while_stopped_failing_or_cut_off_are_recovered_once_each() {
    // A cluster of its own: this test stops PostgreSQL.
    let mut cluster = OwnCluster::start().await;
    let database_url = cluster.url.clone();
    let port = free_port();
    let app = start(&database_url, port).await;
    let scene = github_scene(&app, "octo-org/app").await;
    let access = scene.give_access(&app).await;
    assert_eq!(access["hook_id"], scene.hook);
    assert_eq!(access["kind"], "token");
    let accepted = scene.deliver("up", 2, 202).await;

    // 1. The server is stopped: GitHub cannot connect. At the next start,
    // the start-up run asks for each again.
    stop(app).await;
    let while_stopped = scene.deliver("stopped", 5, 0).await;
    let app = start(&database_url, port).await;
    wait_stored(
        &app,
        &scene.repository.id,
        &while_stopped,
        "the start-up run's redeliveries",
    )
    .await;

    // 2. The server answers 503 (its commits fail): recovered on request.
    fail_commits(&app, true).await;
    let while_failing = scene.deliver("failing", 5, 503).await;
    fail_commits(&app, false).await;
    let manual = recover(&app, &scene).await;
    wait_stored(
        &app,
        &scene.repository.id,
        &while_failing,
        "the manual run's redeliveries",
    )
    .await;
    let run = finished(&app, &scene, &manual).await;
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["missing"], 5, "{run}");
    assert_eq!(run["redelivery_requested"], 5, "{run}");
    assert_eq!(run["recovered"], 5, "{run}");
    assert!(run["error"].is_null(), "{run}");

    // 3. PostgreSQL is down: the server answers 503; recovered once it is back.
    cluster.kill();
    let while_cut_off = scene.deliver("cut-off", 5, 503).await;
    cluster.restart().await;
    let again = eventually(
        Duration::from_secs(30),
        "the manual run after the outage",
        || async {
            let response = app
                .post_json(
                    &scene.path("/recover"),
                    Some(&scene.tenant.token),
                    &json!({}),
                )
                .await;
            if response.status() != StatusCode::ACCEPTED {
                return None;
            }
            let body: Value = response.json().await.ok()?;
            body["recovery_id"].as_str().map(str::to_owned)
        },
    )
    .await;
    wait_stored(
        &app,
        &scene.repository.id,
        &while_cut_off,
        "the redeliveries after the outage",
    )
    .await;
    finished(&app, &scene, &again).await;

    // Every delivery stored exactly once; GitHub asked once per missed one.
    let stored = stored(&app, &scene.repository.id).await;
    let all: Vec<&String> = accepted
        .iter()
        .chain(&while_stopped)
        .chain(&while_failing)
        .chain(&while_cut_off)
        .collect();
    assert_eq!(stored.len(), all.len(), "{stored:?}");
    assert!(stored.values().all(|n| *n == 1), "{stored:?}");
    assert_eq!(scene.github.asks(), 15);
    assert_eq!(scene.github.most_asks_per_attempt(), 1);

    // And streamed: a new consumer gets every one, in commit order.
    let mut stream = app
        .stream(&scene.tenant.token, "ci", &[], Some(0))
        .await
        .unwrap();
    let mut streamed = Vec::new();
    while streamed.len() < all.len() {
        let event = crate::helpers::next_event(&mut stream, Duration::from_secs(10)).await;
        streamed.push(event.delivery_id);
    }
    streamed.sort();
    let mut expected: Vec<String> = all.into_iter().cloned().collect();
    expected.sort();
    assert_eq!(streamed, expected);

    let runs = app
        .get_json(&scene.path("/recoveries"), &scene.tenant.token)
        .await;
    let triggers: Vec<&str> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers[..2], ["manual", "manual"], "newest first: {runs}");
    assert!(triggers.contains(&"startup"), "{runs}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hookrelay_recovery_redeliveries_requested_total 15"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"hookrelay_recovery_runs_total{outcome="ok"}"#));
    assert!(metrics.contains("hookrelay_recovery_missing_events"));
    drop(app);
    drop(cluster);
}

#[tokio::test]
async fn a_delivery_refused_with_401_is_reported_not_redelivered_and_the_doctor_says_why() {
    let port = free_port();
    let app = start(&fresh_database().await, port).await;
    let scene = github_scene(&app, "octo-org/doctor").await;
    scene.give_access(&app).await;
    let healthy = app
        .get_json(&scene.path("/hook"), &scene.tenant.token)
        .await;
    assert_eq!(healthy["url_matches"], true, "{healthy}");
    assert_eq!(healthy["problems"], json!([]), "{healthy}");

    // The secret on GitHub's side is not hookrelay's: every delivery gets 401.
    scene
        .github
        .configure_hook(scene.hook, Some("not-the-secret"), true, false);
    let refused = scene.deliver("wrong-secret", 2, 401).await;
    let run = finished(&app, &scene, &recover(&app, &scene).await).await;
    assert_eq!(run["redelivery_requested"], 0, "{run}");
    assert_eq!(run["missing"], 0, "{run}");
    let reported: Vec<(&str, u64, &str)> = run["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["delivery_id"].as_str().unwrap(),
                r["status_code"].as_u64().unwrap(),
                r["event"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            (refused[0].as_str(), 401, "push"),
            (refused[1].as_str(), 401, "push")
        ]
    );
    assert!(run["delivered_at"].is_null() && !run["refused"][0]["delivered_at"].is_null());
    assert_eq!(scene.github.asks(), 0);

    // The doctor names each problem of the hook.
    scene.github.configure_hook(scene.hook, None, false, true);
    let sick = app
        .get_json(&scene.path("/hook"), &scene.tenant.token)
        .await;
    assert_eq!(sick["active"], false);
    assert_eq!(sick["insecure_ssl"], true);
    let problems = sick["problems"].to_string();
    for said in [
        "inactive",
        "TLS certificate verification is off",
        "refused with 401",
        "does not match",
    ] {
        assert!(problems.contains(said), "{said}: {sick}");
    }
}

#[tokio::test]
async fn two_hundred_fifty_missed_deliveries_across_three_pages_survive_a_rate_limit() {
    let port = free_port();
    let app = start(&fresh_database().await, port).await;
    let scene = github_scene(&app, "octo-org/busy").await;
    scene.give_access(&app).await;
    fail_commits(&app, true).await;
    let missed = scene.deliver("busy", 250, 503).await;
    fail_commits(&app, false).await;
    // The third call of the run (the third page) is refused as GitHub's
    // primary rate limit does, for 2 s.
    let calls_before = scene.github.calls();
    scene.github.rate_limit_after(2, Duration::from_secs(2));
    let began = Instant::now();
    let id = recover(&app, &scene).await;
    wait_stored(&app, &scene.repository.id, &missed, "250 redeliveries").await;
    let wall = began.elapsed();
    let run = finished(&app, &scene, &id).await;
    assert!(run["error"].is_null(), "{run}");
    assert_eq!(run["scanned"], 250, "{run}");
    assert_eq!(run["missing"], 250, "{run}");
    assert_eq!(run["redelivery_requested"], 250, "{run}");
    assert_eq!(run["recovered"], 250, "{run}");
    let calls = scene.github.calls() - calls_before;
    // 3 pages, 1 rate-limited answer, 250 asks.
    assert_eq!(run["api_calls"], 254, "{run}");
    assert_eq!(calls, 254);
    assert!(
        stored(&app, &scene.repository.id)
            .await
            .values()
            .all(|n| *n == 1)
    );
    eprintln!(
        "recovery of 250 missed deliveries: {calls} API calls (3 pages, 1 rate-limited, 250 \
         redeliveries), {:.1} s from the request to the last one stored, 0 unrecovered",
        wall.as_secs_f64()
    );
}

#[tokio::test]
async fn two_replicas_never_ask_for_the_same_redelivery_twice() {
    let database_url = fresh_database().await;
    let port = free_port();
    let first = start(&database_url, port).await;
    // The second replica has the same public URL (as behind one load balancer).
    let second = spawn_app_on(&database_url, |config| {
        configure(port)(config);
        config.http_addr = "127.0.0.1:0".parse().unwrap();
    })
    .await
    .unwrap();
    let scene = github_scene(&first, "octo-org/replicas").await;
    scene.give_access(&first).await;
    fail_commits(&first, true).await;
    let missed = scene.deliver("replicas", 30, 503).await;
    fail_commits(&first, false).await;

    // Both replicas are asked to recover, again and again, at once.
    let mut started = 0;
    let (path, empty) = (scene.path("/recover"), json!({}));
    for _ in 0..5 {
        let (a, b) = tokio::join!(
            first.post_json(&path, Some(&scene.tenant.token), &empty),
            second.post_json(&path, Some(&scene.tenant.token), &empty),
        );
        for response in [a, b] {
            match response.status() {
                StatusCode::ACCEPTED => started += 1,
                StatusCode::CONFLICT => {
                    assert_error(response, StatusCode::CONFLICT, "conflict").await;
                }
                other => panic!("{other}"),
            }
        }
    }
    assert!(started >= 1);
    wait_stored(&first, &scene.repository.id, &missed, "the redeliveries").await;
    eventually(Duration::from_secs(30), "every run to finish", || async {
        let runs = first
            .get_json(&scene.path("/recoveries"), &scene.tenant.token)
            .await;
        runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["finished_at"].is_null())
            .then_some(())
    })
    .await;
    assert_eq!(scene.github.most_asks_per_attempt(), 1);
    assert_eq!(scene.github.asks(), 30);
    assert!(
        stored(&first, &scene.repository.id)
            .await
            .values()
            .all(|n| *n == 1)
    );
}

#[tokio::test]
async fn a_github_app_recovers_with_installation_tokens_minted_from_its_key() {
    let port = free_port();
    let app = start(&fresh_database().await, port).await;
    let scene = github_scene(&app, "octo-org/app-installed").await;
    let private_key = std::fs::read_to_string(
        hookrelay_testkit::repo_root().join("tests/fixtures/github-app/test-app-key.pem"),
    )
    .unwrap();
    let public_key = std::fs::read(
        hookrelay_testkit::repo_root().join("tests/fixtures/github-app/test-app-key.pub.pem"),
    )
    .unwrap();
    scene.github.add_app(4242, 77, &public_key);
    let path = scene.path("/provider-access");
    let app_access = |installation: u64| {
        json!({"app_id": 4242, "installation_id": installation, "private_key": private_key,
               "api_url": scene.github.api_url})
    };
    let wrong = app
        .put_json(&path, &scene.tenant.token, &app_access(78))
        .await;
    assert_error_says(
        wrong,
        StatusCode::UNPROCESSABLE_ENTITY,
        "provider_check_failed",
        "installation",
    )
    .await;
    let response = app
        .put_json(&path, &scene.tenant.token, &app_access(77))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let access: Value = response.json().await.unwrap();
    assert_eq!(access["kind"], "github_app");
    assert!(!access.to_string().contains("PRIVATE KEY"));
    fail_commits(&app, true).await;
    let missed = scene.deliver("app", 3, 503).await;
    fail_commits(&app, false).await;
    let run = finished(&app, &scene, &recover(&app, &scene).await).await;
    wait_stored(
        &app,
        &scene.repository.id,
        &missed,
        "the app's redeliveries",
    )
    .await;
    assert_eq!(run["redelivery_requested"], 3, "{run}");
    assert!(
        scene.github.minted() >= 2,
        "one token per check and per run"
    );
}

#[tokio::test]
async fn gitlab_missed_events_are_resent_within_its_resend_limit() {
    let port = free_port();
    let app = start(&fresh_database().await, port).await;
    let tenant = app.tenant("acme").await;
    let name = "group/subgroup/project";
    let response = app
        .post_json(
            "/v1/repositories",
            Some(&tenant.token),
            &json!({"provider": "gitlab", "name": name}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let repository_id = created["id"].as_str().unwrap().to_owned();
    let secret = created["webhook_secret"].as_str().unwrap();
    let gitlab = ProviderApi::start(Kind::Gitlab, name).await;
    gitlab.add_token("glpat-recovery", Access::Write);
    let hook = gitlab.add_hook(created["webhook_url"].as_str().unwrap(), secret);
    // GitLab allows 5 resends a minute per hook; here 5 per 2 s, to be quick.
    gitlab.resend_limit(5, Duration::from_secs(2));
    let path = |rest: &str| format!("/v1/repositories/{repository_id}{rest}");
    let response = app
        .put_json(
            &path("/provider-access"),
            &tenant.token,
            &json!({"token": "glpat-recovery", "api_url": gitlab.api_url}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let access: Value = response.json().await.unwrap();
    assert_eq!(access["hook_id"], hook);

    fail_commits(&app, true).await;
    let body = hookrelay_testkit::fixture_file("gitlab/push.json");
    let mut missed = Vec::new();
    for i in 0..7 {
        let id = format!("0b3c2f6e-0000-4000-8000-00000000000{i}");
        assert_eq!(gitlab.deliver(hook, "Push Hook", &id, &body).await, 503);
        missed.push(id);
    }
    fail_commits(&app, false).await;
    assert_eq!(
        gitlab
            .deliver(hook, "Push Hook", "0b3c2f6e-ok", &body)
            .await,
        202
    );
    let response = app
        .post_json(&path("/recover"), Some(&tenant.token), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_stored(&app, &repository_id, &missed, "GitLab's resends").await;
    assert_eq!(gitlab.asks(), 7);
    assert_eq!(gitlab.most_asks_per_attempt(), 1);
    let stored = stored(&app, &repository_id).await;
    assert_eq!(stored.len(), 8);
    assert!(stored.values().all(|n| *n == 1));
}

#[tokio::test]
async fn provider_access_is_checked_at_once_sealed_and_never_shown() {
    let port = free_port();
    let app = start(&fresh_database().await, port).await;
    let scene = github_scene(&app, "octo-org/checks").await;
    let path = scene.path("/provider-access");
    let put = |body: Value| {
        let (app, path, token) = (&app, &path, &scene.tenant.token);
        async move { app.put_json(path, token, &body).await }
    };

    // Bad input: 400 naming the field; nothing stored.
    assert_error_says(
        put(json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "token",
    )
    .await;
    let gitea = app
        .post_json(
            "/v1/repositories",
            Some(&scene.tenant.token),
            &json!({"provider": "gitea", "name": "owner/repo"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let response = app
        .put_json(
            &format!(
                "/v1/repositories/{}/provider-access",
                gitea["id"].as_str().unwrap()
            ),
            &scene.tenant.token,
            &json!({"token": "x"}),
        )
        .await;
    assert_error_says(
        response,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "gitea has no API",
    )
    .await;

    // The provider says no: 422 with what to fix.
    let api_url = scene.github.api_url.clone();
    let cases = [
        (json!({"token": "wrong", "api_url": api_url}), "401"),
        (
            json!({"token": "no-hooks", "api_url": api_url}),
            "\"Webhooks\"",
        ),
        (
            json!({"token": TOKEN, "api_url": api_url, "hook_id": 9}),
            "no hook 9",
        ),
    ];
    scene.github.add_token("no-hooks", Access::None);
    for (body, said) in cases {
        let response = put(body).await;
        assert_error_says(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "provider_check_failed",
            said,
        )
        .await;
    }
    // A hook that posts elsewhere is not ours.
    let other = ProviderApi::start(Kind::Github, "octo-org/checks").await;
    other.add_token(TOKEN, Access::Read);
    other.add_hook("https://ci.example.com/hook", "s");
    let response = put(json!({"token": TOKEN, "api_url": other.api_url})).await;
    assert_error_says(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "provider_check_failed",
        &scene.webhook_url,
    )
    .await;
    assert_error(
        app.get(&path, &scene.tenant.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Set: shown without the token; sealed at rest.
    scene.give_access(&app).await;
    let shown = app.get_json(&path, &scene.tenant.token).await;
    assert_eq!(shown["hook_id"], scene.hook);
    assert_eq!(shown["api_url"], api_url);
    assert!(!shown.to_string().contains(TOKEN));
    let sealed: Vec<u8> = sqlx::query_scalar("select credentials from provider_access")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(TOKEN));

    // Another tenant sees none of it.
    let other_tenant = app.tenant("globex").await;
    for response in [
        app.get(&path, &other_tenant.token).await,
        app.get(&scene.path("/recoveries"), &other_tenant.token)
            .await,
        app.get(&scene.path("/hook"), &other_tenant.token).await,
        app.post_json(
            &scene.path("/recover"),
            Some(&other_tenant.token),
            &json!({}),
        )
        .await,
        app.delete(&path, &other_tenant.token).await,
    ] {
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = app.delete(&path, &scene.tenant.token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .post_json(
            &scene.path("/recover"),
            Some(&scene.tenant.token),
            &json!({}),
        )
        .await;
    assert_error(response, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn a_run_stopped_by_a_long_rate_limit_is_resumed_without_asking_twice() {
    let port = free_port();
    let app = start(&fresh_database().await, port).await;
    let scene = github_scene(&app, "octo-org/resumed").await;
    scene.give_access(&app).await;
    fail_commits(&app, true).await;
    let missed = scene.deliver("resumed", 40, 503).await;
    fail_commits(&app, false).await;
    // After the page and 15 asks, GitHub's limit resets only in 10 minutes:
    // the run ends there, saying so.
    scene.github.rate_limit_after(16, Duration::from_secs(600));
    let first = finished(&app, &scene, &recover(&app, &scene).await).await;
    let error = first["error"].as_str().unwrap_or_default();
    assert!(error.contains("rate limited"), "{first}");
    assert_eq!(first["redelivery_requested"], 15, "{first}");
    // The limit resets; the next run reads the same window (the stopped run
    // was not complete) and asks only for the 25 not asked yet.
    scene.github.lift_rate_limit();
    let second = finished(&app, &scene, &recover(&app, &scene).await).await;
    assert!(second["error"].is_null(), "{second}");
    assert_eq!(second["scanned"], 40, "the whole window again: {second}");
    assert_eq!(second["redelivery_requested"], 25, "{second}");
    wait_stored(&app, &scene.repository.id, &missed, "every redelivery").await;
    assert_eq!(scene.github.asks(), 40);
    assert_eq!(scene.github.most_asks_per_attempt(), 1);
}

#[tokio::test]
async fn scheduled_runs_recover_without_being_asked() {
    let port = free_port();
    let database_url = fresh_database().await;
    let app = start(&database_url, port).await;
    let scene = github_scene(&app, "octo-org/scheduled").await;
    scene.give_access(&app).await;
    fail_commits(&app, true).await;
    let missed = scene.deliver("scheduled", 3, 503).await;
    fail_commits(&app, false).await;
    stop(app).await;
    let app = start_with(&database_url, port, |config| {
        config.recovery_interval = Duration::from_secs(1);
    })
    .await;
    wait_stored(
        &app,
        &scene.repository.id,
        &missed,
        "the scheduled redeliveries",
    )
    .await;
    eventually(Duration::from_secs(30), "a scheduled run", || async {
        let runs = app
            .get_json(&scene.path("/recoveries"), &scene.tenant.token)
            .await;
        runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "scheduled" && !r["finished_at"].is_null())
            .then_some(())
    })
    .await;
    assert_eq!(scene.github.most_asks_per_attempt(), 1);
}

#[tokio::test]
async fn a_tenants_calls_to_its_provider_are_rate_limited() {
    let port = free_port();
    let app = start_with(&fresh_database().await, port, |config| {
        config.limits.provider_call_rate = hookrelay::server::Rate::parse("2/min").unwrap();
    })
    .await;
    let scene = github_scene(&app, "octo-org/limited").await;
    scene.give_access(&app).await;
    let doctor = app.get(&scene.path("/hook"), &scene.tenant.token).await;
    assert_eq!(doctor.status(), StatusCode::OK);
    let response = app.get(&scene.path("/hook"), &scene.tenant.token).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let calls = scene.github.calls();
    let response = app
        .post_json(
            &scene.path("/recover"),
            Some(&scene.tenant.token),
            &json!({}),
        )
        .await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(scene.github.calls(), calls, "refused before calling GitHub");
    assert!(
        app.metrics()
            .await
            .contains(r#"hookrelay_rate_limited_total{endpoint="provider_api"} 2"#)
    );
}

/// The console: provider access refused then saved, the doctor, Recover now,
/// the missed delivery recovered (headless Chromium).
#[tokio::test]
async fn a_tenant_recovers_a_missed_delivery_from_the_console() {
    let port = free_port();
    let app = start(&fresh_database().await, port).await;
    let scene = github_scene(&app, "octo-org/console").await;
    fail_commits(&app, true).await;
    let missed = scene.deliver("console", 1, 503).await;
    fail_commits(&app, false).await;
    crate::console::browser_script(
        "recovery.mjs",
        &[
            &app.address,
            &scene.tenant.client_id,
            &scene.tenant.client_secret,
            "octo-org/console",
            &scene.github.api_url,
            TOKEN,
        ],
        "recovery",
    )
    .await;
    wait_stored(
        &app,
        &scene.repository.id,
        &missed,
        "the recovered delivery",
    )
    .await;
}
