//! What a person sees when they run the agent in a terminal: checked under a
//! real pseudo-terminal (util-linux `script`), as `is_terminal()` sees it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{
    OnPty, TestApp, TestRepository, TestTarget, TestTenant, agent_binary, spawn_app,
};

const WAIT: Duration = Duration::from_secs(20);

/// `hookrelay-agent` on a pseudo-terminal; its terminal output goes to a file.
struct PtyAgent {
    _agent: OnPty,
    output: PathBuf,
}

impl PtyAgent {
    fn start(
        app: &TestApp,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
        dir: &Path,
    ) -> PtyAgent {
        let token_url = app.url("/oauth/token");
        let mut words = vec![
            agent_binary().display().to_string(),
            "--server".into(),
            app.grpc_address.clone(),
            "--token-url".into(),
            token_url,
            "--client-id".into(),
            tenant.client_id.clone(),
            "--consumer".into(),
            consumer.into(),
            "--target".into(),
            target.into(),
        ];
        words.extend(extra.iter().map(|a| (*a).to_owned()));
        let output = dir.join(format!("pty-{consumer}.log"));
        let agent = OnPty::spawn(&words, dir.join(format!("pty-{consumer}.pid")), |command| {
            command
                .env("HOOKRELAY_CLIENT_SECRET", &tenant.client_secret)
                .env_remove("RUST_LOG")
                .env_remove("NO_COLOR")
                .stdout(std::fs::File::create(&output).unwrap());
            for (name, value) in envs {
                command.env(name, value);
            }
        });
        PtyAgent {
            _agent: agent,
            output,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// The terminal's lines once `needle` appears in them, colours removed.
    async fn lines_once(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let output = self.output();
            let plain = strip_ansi(&output);
            if plain.contains(needle) {
                return plain
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_owned())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` not on the terminal:\n{output}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The text without ANSI escape sequences (ESC [ … letter).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

async fn push(app: &TestApp, repository: &TestRepository, delivery: &str, git_ref: &str) {
    let body = serde_json::to_vec(&serde_json::json!({"ref": git_ref, "after": delivery})).unwrap();
    let response = app
        .deliver(&repository.id, &repository.secret, "push", delivery, &body)
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
}

#[tokio::test]
async fn on_a_terminal_each_delivery_is_one_short_coloured_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    // The first delivery is taken, the second is retried once, the third refused.
    let target = TestTarget::answering(
        vec![repository.secret.clone()],
        Arc::new(|n| match n {
            1 => (503, None),
            3 => (400, None),
            _ => (200, None),
        }),
        Duration::ZERO,
    )
    .await;
    push(&app, &repository, "d-1", "refs/heads/main").await;
    push(&app, &repository, "d-2", "refs/tags/v1.2.0").await;
    push(&app, &repository, "d-3", "refs/heads/main").await;

    let agent = PtyAgent::start(&app, &tenant, "tty", &target.url, &[], &[], dir.path());
    let lines = agent.lines_once("caught up").await;
    let raw = agent.output();
    let deliveries: Vec<&String> = lines.iter().filter(|l| l.contains("push")).collect();

    // `12:01:03  push  acme/app  main  → 200  5 ms`
    let delivered = deliveries
        .iter()
        .find(|l| l.contains("→ 200") && l.contains("main"))
        .unwrap_or_else(|| panic!("no delivered line:\n{raw}"));
    let words: Vec<&str> = delivered.split_whitespace().collect();
    assert_eq!(words.len(), 8, "{delivered}");
    assert!(
        words[0].len() == 8 && words[0].chars().filter(|c| *c == ':').count() == 2,
        "a local time to the second: {delivered}"
    );
    assert_eq!(
        &words[1..6],
        ["push", "acme/app", "main", "→", "200"],
        "{delivered}"
    );
    assert!(
        words[6].parse::<f64>().is_ok() && words[7] == "ms",
        "{delivered}"
    );

    // The retry says why and when; the tagged event then arrives.
    assert!(
        deliveries.iter().any(|l| l.contains("tag v1.2.0")
            && l.contains("↻ 503 Service Unavailable")
            && l.contains("try 2 in")),
        "no retry line:\n{raw}"
    );
    assert!(
        deliveries.iter().any(|l| l.contains("tag v1.2.0")
            && l.contains("→ 200")
            && l.contains("after 2 attempts")),
        "no line for the retried delivery:\n{raw}"
    );
    // The refusal is recorded, in red.
    let failed = deliveries
        .iter()
        .find(|l| l.contains("✗ 400 Bad Request"))
        .unwrap_or_else(|| panic!("no failure line:\n{raw}"));
    assert!(failed.contains("recorded as failed"), "{failed}");
    assert!(
        raw.lines()
            .any(|l| l.contains("400 Bad Request") && l.contains("\x1b[31m")),
        "the failure is not red:\n{raw}"
    );
    assert!(
        raw.lines()
            .any(|l| l.contains("→ 200") && l.contains("\x1b[32m")),
        "deliveries are not green:\n{raw}"
    );

    // Status lines, and nothing for machines.
    assert!(lines.iter().any(|l| l.contains("connected to")), "{raw}");
    for line in &deliveries {
        assert!(line.chars().count() <= 100, "a long line: {line}");
        assert!(
            !line.contains(&repository.id),
            "a UUID on a delivery line: {line}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.trim_start().starts_with('{')),
        "JSON on a terminal:\n{raw}"
    );
    assert_eq!(target.deliveries(), ["d-1", "d-2"]);
}

#[tokio::test]
async fn log_format_no_color_and_quiet_do_what_they_say_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    push(&app, &repository, "d-1", "refs/heads/main").await;

    // --log-format json: JSON even on a terminal, with the same fields.
    let json = PtyAgent::start(
        &app,
        &tenant,
        "json",
        &target.url,
        &["--log-format", "json"],
        &[],
        dir.path(),
    );
    let lines = json.lines_once(r#""message":"caught up""#).await;
    let delivered: serde_json::Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "delivered")
        .unwrap_or_else(|| panic!("no JSON delivered line:\n{}", json.output()));
    assert_eq!(delivered["repository"], "acme/app");
    assert_eq!(delivered["branch"], "main");
    assert_eq!(delivered["status"], 200);
    assert_eq!(delivered["event_type"], "push");

    // NO_COLOR: the same lines, without escape sequences.
    let plain = PtyAgent::start(
        &app,
        &tenant,
        "plain",
        &target.url,
        &[],
        &[("NO_COLOR", "1")],
        dir.path(),
    );
    plain.lines_once("caught up").await;
    let output = plain.output();
    assert!(output.contains("→ 200"), "{output}");
    assert!(
        !output.contains('\x1b'),
        "colours despite NO_COLOR:\n{output}"
    );

    // -q: deliveries happen, and print nothing.
    let quiet = PtyAgent::start(
        &app,
        &tenant,
        "quiet",
        &target.url,
        &["-q"],
        &[],
        dir.path(),
    );
    let deadline = Instant::now() + WAIT;
    while target.deliveries().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the quiet agent delivered nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its "caught up" would come within a second: wait past it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let output = quiet.output();
    assert!(
        !output.contains("→") && !output.contains("caught up") && !output.contains("connected"),
        "-q printed:\n{output}"
    );
}

/// Branch names are the sender's text: on a terminal their control characters
/// are shown escaped, never sent raw (ESC could clear the screen, CR rewrite
/// the line).
#[tokio::test]
async fn control_characters_in_a_branch_are_escaped_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app().await;
    let tenant = app.tenant("acme").await;
    let repository = app.repository(&tenant, "acme/app").await;
    let target = TestTarget::start(vec![repository.secret.clone()]).await;
    push(&app, &repository, "d-1", "refs/heads/x\u{1b}[2J\rfake").await;

    let agent = PtyAgent::start(&app, &tenant, "tty", &target.url, &[], &[], dir.path());
    agent.lines_once("caught up").await;
    let raw = agent.output();
    let line = raw
        .lines()
        .find(|l| l.contains("→ 200"))
        .unwrap_or_else(|| panic!("no delivered line:\n{raw}"));
    assert!(line.contains(r"x\u{1b}[2J\rfake"), "{line:?}");
    assert!(
        !raw.contains("\u{1b}[2J") && !raw.contains("\rfake"),
        "{raw:?}"
    );
}
