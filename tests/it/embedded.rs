//! `hookrelay serve` without DATABASE_URL runs its own PostgreSQL, which never
//! outlives it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{ServerProcess, process_alive, serve_on, tenant_at, token_at};

fn postgres_pid(data_dir: &Path) -> u32 {
    let pid_file =
        std::fs::read_to_string(data_dir.join("postgres/postmaster.pid")).expect("postmaster.pid");
    pid_file.lines().next().unwrap().trim().parse().unwrap()
}

async fn wait_gone(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "postgres {pid} outlived hookrelay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Field 5 of /proc/PID/stat: the process group.
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    fields.get(2)?.parse().ok()
}

/// Every live process in process group `group`.
fn group_members(group: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_group(pid) == Some(group))
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect()
}

#[tokio::test]
async fn serve_runs_an_embedded_database_that_never_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let env = [("HOOKRELAY_DATA_DIR", data.display().to_string())];

    // First run: creates the cluster and the key-encryption key.
    let server = ServerProcess::start(&env, dir.path()).await;
    let mode = std::fs::metadata(data.join("secret.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pid = postgres_pid(&data);
    assert!(process_alive(pid));
    // PostgreSQL, its guard and the guard's shutdown timer share a process group.
    let group = process_group(pid).expect("postgres runs");
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &server.address, "acme").await;

    // SIGTERM: a clean exit that takes PostgreSQL with it, and leaves nothing
    // behind (once, the guard's 10 s timer outlived it as an orphaned `sleep`).
    server.signal("TERM");
    let mut server = server;
    assert!(server.wait(Duration::from_secs(30)).await.success());
    wait_gone(pid, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !group_members(group).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            group_members(group)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Second run: the same cluster, with the tenant still in it.
    let server = ServerProcess::start(&env, dir.path()).await;
    let token = token_at(
        &http,
        &server.address,
        &tenant.client_id,
        &tenant.client_secret,
    )
    .await;
    let repositories = http
        .get(format!("{}/v1/repositories", server.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(repositories.status(), StatusCode::OK);
    let pid = postgres_pid(&data);

    // SIGKILL: hookrelay gets no chance to clean up, and PostgreSQL still goes.
    server.signal("KILL");
    let mut server = server;
    server.wait(Duration::from_secs(10)).await;
    wait_gone(pid, Duration::from_secs(15)).await;
}

#[test]
fn without_postgresql_binaries_the_error_names_the_package_and_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let output = serve_on(&dir.path().join("data"))
        .env("HOOKRELAY_POSTGRES_BIN_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("apt-get install postgresql"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

/// The embedded PostgreSQL is supervised: killed, it is restarted and the
/// server serves again. A second server on the same data directory stops at
/// once, naming the first.
#[tokio::test]
async fn the_embedded_database_is_restarted_and_its_data_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let env = [("HOOKRELAY_DATA_DIR", data.display().to_string())];
    let server = ServerProcess::start(&env, dir.path()).await;
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &server.address, "acme").await;

    let started = Instant::now();
    let second = serve_on(&data).output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another hookrelay")
            && stderr.contains(&format!("pid {}", server.child.id())),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "it waited");

    let pid = postgres_pid(&data);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_gone(pid, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let response = http
            .post(format!("{}/oauth/token", server.address))
            .basic_auth(&tenant.client_id, Some(&tenant.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let body: serde_json::Value = response.json().await.unwrap();
            break body["access_token"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the server never recovered: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!token.is_empty());
    assert_ne!(postgres_pid(&data), pid, "a new postmaster runs");
    assert!(
        server
            .log()
            .contains("the embedded PostgreSQL exited; restarting it"),
        "{}",
        server.log()
    );
}
