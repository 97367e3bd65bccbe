//! `hookrelay serve` on a real pseudo-terminal (util-linux `script`), as a
//! person trying it sees it: lines for a person, not JSON; one line saying
//! where the console is; request lines and PostgreSQL's notices kept out.

use std::time::{Duration, Instant};

use crate::helpers::{OnPty, TEST_SECRET_KEY, free_port, fresh_database, process_alive};

#[tokio::test]
async fn on_a_terminal_the_server_speaks_to_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let output = dir.path().join("pty.log");
    let words = [
        env!("CARGO_BIN_EXE_hookrelay").to_owned(),
        "serve".to_owned(),
    ];
    let database = fresh_database().await;
    let _server = OnPty::spawn(&words, dir.path().join("pty.pid"), |command| {
        command
            .env("DATABASE_URL", database)
            .env("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY)
            .env("HOOKRELAY_DATA_DIR", dir.path())
            .env("HOOKRELAY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("HOOKRELAY_GRPC_ADDR", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .env_remove("HOOKRELAY_LOG_FORMAT")
            .stdout(std::fs::File::create(&output).unwrap());
    });
    let console = format!("console at http://127.0.0.1:{port}/console/");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&output)
        .unwrap_or_default()
        .contains(&console)
    {
        assert!(
            Instant::now() < deadline,
            "no `{console}` line:\n{}",
            std::fs::read_to_string(&output).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few requests: on a terminal they are debug lines, not printed at info.
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/v1/repositories"] {
        http.get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let said = std::fs::read_to_string(&output).unwrap();
    assert!(said.contains("hookrelay is serving"), "{said}");
    assert!(
        !said.contains("{\"timestamp\""),
        "JSON on a terminal:\n{said}"
    );
    assert!(
        !said.contains("request finished"),
        "request lines at info:\n{said}"
    );
    assert!(
        !said.contains("_sqlx_migrations"),
        "PostgreSQL's notice:\n{said}"
    );
}

/// A program on a pseudo-terminal stops with its guard even when it ignores
/// the terminal's hang-up, as everything does in a suite run under `nohup`.
#[tokio::test]
async fn a_program_on_a_pseudo_terminal_that_ignores_the_hang_up_is_stopped_with_its_guard() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pty.pid");
    let bash = std::fs::canonicalize("/bin/bash").unwrap();
    let words = [
        bash.display().to_string(),
        "-c".to_owned(),
        "trap '' HUP; while :; do sleep 0.1; done".to_owned(),
    ];
    let program = OnPty::spawn(&words, pid_file.clone(), |_| {});
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the program never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(process_alive(pid));
    drop(program);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} outlived its guard");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
