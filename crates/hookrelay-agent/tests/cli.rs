//! The `hookrelay-agent` binary's command line: the same flags, with the same
//! environment fallbacks, as `hookrelay relay`.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hookrelay-agent"))
}

#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    let output = agent().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for env in [
        "HOOKRELAY_SERVER",
        "HOOKRELAY_TOKEN_URL",
        "HOOKRELAY_CLIENT_ID",
        "HOOKRELAY_CLIENT_SECRET",
        "HOOKRELAY_CONSUMER",
        "HOOKRELAY_TARGET",
        "HOOKRELAY_REPOSITORIES",
        "HOOKRELAY_CA_FILE",
        "HOOKRELAY_SUMMARY_INTERVAL",
    ] {
        assert!(help.contains(&format!("env: {env}")), "{env}: {help}");
    }
}

#[test]
fn an_invalid_consumer_stops_it_with_a_message_naming_the_flag() {
    let output = agent()
        .args(["--server", "http://127.0.0.1:9", "--client-id", "hrc_x"])
        .args(["--consumer", "has space", "--target", "http://127.0.0.1:9/"])
        .env("HOOKRELAY_CLIENT_SECRET", "s")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid --consumer"), "{stderr}");
}
