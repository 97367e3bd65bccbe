//! The web console: served by hookrelay at /console/ with a strict CSP, built
//! from `console/` (the committed bundle must match its sources), and driven
//! end to end in headless Chromium, directly and through Envoy's single port.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use tokio::process::Command;

use crate::helpers::{EnvoyProcess, agent_binary, free_port, spawn_app, spawn_app_with};

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push((
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    found.sort();
    found
}

async fn run(program: &Path, args: &[&str], dir: &Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} runs (scripts/test installs it): {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?}:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Like the Envoy config's drift test: rebuilding the console from its
/// sources (buf's code generator, then Vite) gives exactly what is committed,
/// so `cargo build` embeds what the sources say without needing Node.js.
#[tokio::test]
async fn the_committed_console_bundle_and_generated_client_match_their_sources() {
    let out = tempfile::tempdir().unwrap();
    let console = console_dir();
    let bin = console.join("node_modules/.bin");
    let generated = out.path().join("generated");
    run(
        &bin.join("buf"),
        &[
            "generate",
            "../proto",
            "--template",
            "buf.gen.yaml",
            "-o",
            generated.to_str().unwrap(),
        ],
        &console,
    )
    .await;
    assert!(
        files(&generated.join("src/gen")) == files(&console.join("src/gen")),
        "console/src/gen is stale: run `npm run build --prefix console` and commit the result"
    );
    let dist = out.path().join("dist");
    run(
        &bin.join("vite"),
        &[
            "build",
            "--logLevel",
            "error",
            "--emptyOutDir",
            "--outDir",
            dist.to_str().unwrap(),
        ],
        &console,
    )
    .await;
    assert!(
        files(&dist) == files(&console.join("dist")),
        "console/dist is stale: run `npm run build --prefix console` and commit the result"
    );
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_slash_leads_there() {
    let app = spawn_app().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = no_redirects.get(app.url("/")).send().await.unwrap();
    assert_eq!(root.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(root.headers()["location"], "/console/");

    let page = app.http.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script or style"
    );
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a bundled script");
    assert!(
        script.starts_with("/console/assets/"),
        "bundled, no CDN: {script}"
    );
    let asset = app.http.get(app.url(script)).send().await.unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        app.http
            .get(app.url("/console/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

fn screenshots(variant: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/console-screenshots")
        .join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the browser script `e2e/<script>` with `args`; its screenshots go
/// to `target/console-screenshots/<variant>` (the script's last argument).
pub async fn browser_script(script: &str, args: &[&str], variant: &str) {
    let shots = screenshots(variant);
    let output = Command::new("node")
        .arg(console_dir().join("e2e").join(script))
        .args(args)
        .arg(&shots)
        .output()
        .await
        .expect("node runs (scripts/test installs the console's packages)");
    assert!(
        output.status.success(),
        "the browser script {script} failed ({variant}):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "{script} ({variant}): {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
}

async fn journey(base: &str, agent_server: &str, variant: &str) {
    let agent = agent_binary();
    let fixture = hookrelay_testkit::fixture_path("push");
    browser_script(
        "journey.mjs",
        &[
            base,
            agent_server,
            agent.to_str().unwrap(),
            fixture.to_str().unwrap(),
        ],
        variant,
    )
    .await;
}

/// Sign up, sign in, register a repository, watch a webhook arrive live, see
/// its failed delivery to a running agent, redeliver after fixing the target;
/// a second tenant sees none of it; no console errors, no CSP violations.
#[tokio::test]
async fn a_tenant_uses_the_console_end_to_end_in_a_browser() {
    let app = spawn_app().await;
    journey(&app.address, &app.grpc_address, "direct").await;
}

/// The same journey through Envoy's single port: the console, its API calls,
/// gRPC-Web, the webhook and the agent's stream all go through it.
#[tokio::test]
async fn the_console_journey_works_through_envoys_single_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let front = format!("http://127.0.0.1:{port}");
    let public = front.clone();
    let app = spawn_app_with(move |config| config.public_url = Some(public.parse().unwrap())).await;
    let upstream = |address: &str| address.trim_start_matches("http://").to_owned();
    let _envoy = EnvoyProcess::start(
        port,
        &[upstream(&app.address)],
        &[upstream(&app.grpc_address)],
        dir.path(),
    )
    .await;
    journey(&front, &front, "envoy").await;
}

/// `hookrelay-agent login` approved in the browser: the real agent binary,
/// the address it prints opened signed out, signed in, approved; then the
/// agent relays a webhook with that login, and logging out revokes it.
#[tokio::test]
async fn a_device_login_is_approved_in_the_console() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let home = tempfile::tempdir().unwrap();
    let agent = agent_binary();
    browser_script(
        "device.mjs",
        &[
            app.address.as_str(),
            agent.to_str().unwrap(),
            &tenant.client_id,
            &tenant.client_secret,
            home.path().to_str().unwrap(),
        ],
        "device",
    )
    .await;
    let file = home.path().join("hookrelay/credentials.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the stored login is private");
    // The login approved in the browser relays, and logging out revokes it.
    crate::agent_login::relay_then_log_out(&app, &tenant, home.path(), "ci-laptop").await;
}

/// Signed in with an agent's events:read-only client, the Events page goes
/// live and the Consumers page loads: no page demands a scope it does not need.
#[tokio::test]
async fn the_console_works_with_an_events_read_only_client() {
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    app.push(&repository, "readonly-1").await;
    let client: serde_json::Value = app
        .post_json(
            "/v1/clients",
            Some(&tenant.token),
            &serde_json::json!({"name": "laptop agent", "scopes": ["events:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    browser_script(
        "readonly.mjs",
        &[
            app.address.as_str(),
            client["client_id"].as_str().unwrap(),
            client["client_secret"].as_str().unwrap(),
            &repository.id,
        ],
        "readonly",
    )
    .await;
}

/// The console renews its token before it expires; its live view reconnects
/// with the new one when the server ends the old token's stream.
#[tokio::test]
async fn the_console_renews_its_token_and_stays_live() {
    let app = spawn_app_with(|config| config.token_ttl = std::time::Duration::from_secs(6)).await;
    let output = Command::new("node")
        .arg(console_dir().join("e2e/renewal.mjs"))
        .args([
            app.address.as_str(),
            hookrelay_testkit::fixture_path("push").to_str().unwrap(),
            "6",
        ])
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
