//! The command line: bad settings stop the start with one line naming them.

use crate::helpers::hookrelay;

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
fn an_invalid_setting_stops_the_start_with_one_line_naming_it() {
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
    ];
    for (name, value) in cases {
        let (code, stderr) = start_with(&[(name, value)]);
        assert_eq!(code, 2, "{name}={value}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{name}={value}: not one line: {stderr}"
        );
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
    ] {
        assert!(
            help.contains(&format!("env: {env}")),
            "--help does not document {env}"
        );
    }
    let top = hookrelay().arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    assert!(top.contains("serve") && top.contains("migrate"));
}
