//! `hookrelay-agent login`, `status` and `logout` with the real binary: the
//! code it prints is approved through the API (the console's page does the
//! same in `console/e2e/device.mjs`), the login is stored 0600, the agent then
//! relays with no secret and no consumer name, and logging out revokes it.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{AgentProcess, TestApp, TestTarget, agent_binary, spawn_app};

/// The agent binary with its config in `home` (XDG_CONFIG_HOME).
fn agent(home: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(agent_binary());
    command
        .env("XDG_CONFIG_HOME", home)
        .env_remove("HOOKRELAY_SERVER")
        .env_remove("HOOKRELAY_CLIENT_ID")
        .env_remove("HOOKRELAY_CLIENT_SECRET")
        .kill_on_drop(true);
    command
}

/// Runs `hookrelay-agent login`, approves the code it prints with `token`,
/// and returns its whole output once it exits successfully.
async fn log_in(app: &TestApp, home: &std::path::Path, token: &str, name: &str) -> String {
    let mut login = agent(home)
        .args(["login", "--server", &app.address, "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
    let mut output = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("login prints its code")
            .unwrap()
            .expect("login prints its code before it ends");
        output.push_str(&line);
        output.push('\n');
        if let Some(rest) = line.split("enter the code ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(',')
                .to_owned();
        }
    };
    let approved = app
        .post_json(
            "/v1/device/approve",
            Some(token),
            &json!({ "user_code": code }),
        )
        .await;
    assert_eq!(approved.status(), StatusCode::OK);
    while let Some(line) = lines.next_line().await.unwrap() {
        output.push_str(&line);
        output.push('\n');
    }
    let status = tokio::time::timeout(Duration::from_secs(30), login.wait())
        .await
        .expect("login ends once approved")
        .unwrap();
    assert!(status.success(), "login failed:\n{output}");
    output
}

/// The refresh token the credentials file holds (one login).
fn refresh_token(file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("refresh_token = "))
        .expect("a stored refresh token");
    line.trim_start_matches("refresh_token = ")
        .trim_matches('"')
        .to_owned()
}

/// With the login in `home` (device name `device`): relays one webhook with
/// no secret and no consumer name, then logs out, after which the refresh
/// token the file last held is refused by the server. Returns the target's URL.
pub(crate) async fn relay_then_log_out(
    app: &TestApp,
    tenant: &crate::helpers::TestTenant,
    home: &std::path::Path,
    consumer: &str,
) -> String {
    let file = home.join("hookrelay/credentials.toml");
    let first_refresh = refresh_token(&file);
    let repository = app.repository(tenant, "acme/app").await;
    // Relaying: no secret, no consumer name (it defaults to the device's).
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    let log_dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(agent_binary());
    command.env("XDG_CONFIG_HOME", home);
    let log = log_dir.path().join("agent.log");
    command
        .args([
            "--server",
            &app.address,
            "--target",
            &target.url,
            "--summary-interval",
            "1s",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
    let relay = AgentProcess {
        child: hookrelay_testkit::ChildGuard::spawn(&mut command).unwrap(),
        log,
    };
    app.push(&repository, "login-1").await;
    assert_eq!(
        target.wait_for(1, Duration::from_secs(20)).await,
        ["login-1"]
    );
    let consumers = app.get_json("/v1/consumers", &tenant.token).await;
    assert!(
        consumers.to_string().contains(&format!("\"{consumer}\"")),
        "{consumers}"
    );
    drop(relay);

    // Logout revokes at the server: the refresh token the file held is refused.
    let last_refresh = refresh_token(&file);
    assert_ne!(first_refresh, last_refresh, "each renewal rotated it");
    let logout = agent(home).arg("logout").output().await.unwrap();
    assert!(
        logout.status.success(),
        "{}",
        String::from_utf8_lossy(&logout.stderr)
    );
    assert!(String::from_utf8_lossy(&logout.stdout).contains("revoked"));
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(&last_refresh)
    );
    let refused = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", last_refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    target.url.clone()
}

#[tokio::test]
async fn a_laptop_logs_in_relays_with_no_secret_and_logs_out() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let home = tempfile::tempdir().unwrap();

    let output = log_in(&app, home.path(), &tenant.token, "ana laptop").await;
    assert!(output.contains("/console/device"), "{output}");
    assert!(output.contains("Logged in to"), "{output}");
    let file = home.path().join("hookrelay/credentials.toml");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "the credentials file is private");
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        stored.contains(&format!("[servers.\"{}\"]", app.address)),
        "{stored}"
    );
    assert!(stored.contains("device_name = \"ana laptop\""), "{stored}");

    // `status` asks the server (which rotates the refresh token in the file).
    let status = agent(home.path()).arg("status").output().await.unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        said.contains("ana laptop") && said.contains("The server accepts this login"),
        "{said}"
    );
    assert!(said.contains(&tenant.tenant_id), "{said}");

    let target_url = relay_then_log_out(&app, &tenant, home.path(), "ana-laptop").await;

    // Logged out, the agent says how to get credentials, naming the safe ways first.
    let without = agent(home.path())
        .args([
            "--server",
            &app.address,
            "--target",
            &target_url,
            "--consumer",
            "ci",
        ])
        .output()
        .await
        .unwrap();
    assert!(!without.status.success());
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(
        said.contains("hookrelay-agent login") && said.contains("HOOKRELAY_CLIENT_SECRET"),
        "{said}"
    );
}

#[tokio::test]
async fn a_revoked_login_says_to_log_in_again() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let home = tempfile::tempdir().unwrap();
    log_in(&app, home.path(), &tenant.token, "ci-runner").await;

    // The device's client is deleted in the console.
    let clients = app.get_json("/v1/clients", &tenant.token).await;
    let device = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["device"] == true)
        .expect("the device client")
        .clone();
    let deleted = app
        .delete(
            &format!("/v1/clients/{}", device["client_id"].as_str().unwrap()),
            &tenant.token,
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let run = tokio::time::timeout(
        Duration::from_secs(30),
        agent(home.path())
            .args([
                "--server",
                &app.address,
                "--target",
                "http://127.0.0.1:9/hook",
            ])
            .output(),
    )
    .await
    .expect("the agent exits")
    .unwrap();
    assert!(!run.status.success());
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("run `hookrelay-agent login --server"),
        "{said}"
    );
}
