//! The command line: bad settings stop the start with a message naming them.

use crate::helpers::{hookrelay, serve_on};

fn start_with(env: &[(&str, &str)]) -> (i32, String) {
    let data = tempfile::tempdir().unwrap();
    let mut command = hookrelay();
    command.arg("serve").env("HOOKRELAY_DATA_DIR", data.path());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_invalid_setting_stops_the_start_naming_it() {
    let cases = [
        ("HOOKRELAY_HTTP_ADDR", "not-an-address"),
        ("HOOKRELAY_GRPC_ADDR", "localhost"),
        ("HOOKRELAY_PUBLIC_URL", "ftp://relay.example.com"),
        ("HOOKRELAY_TOKEN_TTL", "forever"),
        ("HOOKRELAY_MAX_WEBHOOK_BYTES", "0"),
        ("HOOKRELAY_SECRET_ROTATION_GRACE", "0s"),
        ("HOOKRELAY_DB_MAX_CONNECTIONS", "many"),
        ("HOOKRELAY_SECRET_KEY", "too-short"),
        ("HOOKRELAY_SIGNUP_TOKEN", "short"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("HOOKRELAY_SIGNUP_RATE_LIMIT", "fast"),
        ("HOOKRELAY_TOKEN_FAILURE_RATE_LIMIT", "0/s"),
        ("HOOKRELAY_TRUSTED_PROXIES", "the-load-balancer"),
        ("HOOKRELAY_WEBHOOK_MEMORY", "1024"),
        ("HOOKRELAY_WEBHOOK_MEMORY_PER_TENANT", "1024"),
        ("HOOKRELAY_WEBHOOK_MEMORY_PER_SOURCE", "1024"),
        ("HOOKRELAY_WEBHOOK_MIN_BODY_RATE", "0"),
        ("HOOKRELAY_HTTP_HEADER_TIMEOUT", "0s"),
        ("HOOKRELAY_MAX_CONNECTIONS", "0"),
    ];
    for (name, value) in cases {
        let (code, stderr) = start_with(&[(name, value)]);
        assert_eq!(code, 2, "{name}={value}: {stderr}");
        assert!(
            stderr.contains(name),
            "{name}={value}: the line does not name it: {stderr}"
        );
    }
}

#[test]
fn help_documents_every_setting() {
    let output = hookrelay().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for env in [
        "DATABASE_URL",
        "HOOKRELAY_HTTP_ADDR",
        "HOOKRELAY_GRPC_ADDR",
        "HOOKRELAY_PUBLIC_URL",
        "HOOKRELAY_DATA_DIR",
        "HOOKRELAY_SIGNUP_TOKEN",
        "HOOKRELAY_SECRET_KEY",
        "HOOKRELAY_SECRET_KEY_FILE",
        "HOOKRELAY_JWT_KEY_FILE",
        "HOOKRELAY_TOKEN_TTL",
        "HOOKRELAY_MAX_WEBHOOK_BYTES",
        "HOOKRELAY_SECRET_ROTATION_GRACE",
        "HOOKRELAY_NO_MIGRATE",
        "HOOKRELAY_POSTGRES_BIN_DIR",
        "HOOKRELAY_DB_MAX_CONNECTIONS",
        "HOOKRELAY_JWT_AUDIENCE",
        "HOOKRELAY_HTTP_HEADER_TIMEOUT",
        "HOOKRELAY_HTTP_BODY_TIMEOUT",
        "HOOKRELAY_HTTP_IDLE_TIMEOUT",
        "HOOKRELAY_MAX_CONNECTIONS",
        "HOOKRELAY_WEBHOOK_MEMORY",
        "HOOKRELAY_WEBHOOK_MEMORY_PER_TENANT",
        "HOOKRELAY_WEBHOOK_MEMORY_PER_SOURCE",
        "HOOKRELAY_WEBHOOK_MIN_BODY_RATE",
        "HOOKRELAY_SIGNUP_RATE_LIMIT",
        "HOOKRELAY_TOKEN_FAILURE_RATE_LIMIT",
        "HOOKRELAY_STREAM_SETUP_RATE_LIMIT",
        "HOOKRELAY_QUOTA_REPOSITORIES",
        "HOOKRELAY_QUOTA_OPEN_STREAMS",
        "HOOKRELAY_QUOTA_WEBHOOKS_PER_SECOND",
        "HOOKRELAY_QUOTA_STORED_EVENT_BYTES",
        "HOOKRELAY_TRUSTED_PROXIES",
    ] {
        assert!(
            help.contains(&format!("env: {env}")),
            "--help does not document {env}"
        );
    }
    let top = hookrelay().arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    assert!(top.contains("serve") && top.contains("migrate"));
    // The agent is also `hookrelay agent`.
    assert!(top.contains("[alias: agent]"), "{top}");
    let agent = hookrelay().args(["agent", "--help"]).output().unwrap();
    assert!(agent.status.success());
    let agent = String::from_utf8(agent.stdout).unwrap();
    assert!(
        agent.contains("--consumer") && agent.contains("--target"),
        "{agent}"
    );
}

/// clap's whole message reaches the user: what is missing, "did you mean", the
/// usage line; not only its first line.
#[test]
fn command_line_mistakes_get_clap_s_whole_message() {
    let output = hookrelay()
        .args(["relay", "--server", "http://127.0.0.1:1"])
        .env_remove("HOOKRELAY_CLIENT_ID")
        .env_remove("HOOKRELAY_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Credentials and the consumer name may come from a stored login
    // (`hookrelay-agent login`), so clap requires only the target.
    for expected in ["--target", "Usage: hookrelay relay"] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    let output = hookrelay().arg("serv").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("similar subcommand")
            && stderr.contains("'serve'")
            && stderr.contains("Usage:"),
        "{stderr}"
    );
}

/// A fatal error is printed once, with its cause and the path it concerns.
#[test]
fn an_unusable_data_directory_is_named_once_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the data directory should be.
    let data = dir.path().join("data");
    std::fs::write(&data, "not a directory").unwrap();
    let output = serve_on(&data).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stderr.matches(&*data.display().to_string()).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("File exists") || stderr.contains("Not a directory"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("stopped with an error"),
        "printed twice: {stdout}"
    );
}
