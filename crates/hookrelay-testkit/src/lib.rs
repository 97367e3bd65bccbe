//! What hookrelay's integration tests (`tests/it`) and its benchmark runner
//! (`bench/`) share, defined once: the repository's fixtures, GitHub's
//! signature, the signup → token → repository flow, readiness, child
//! processes that never outlive their owner, tools, and process statistics.

#![forbid(unsafe_code)]

mod flow;
mod process;
pub mod provider_api;
mod senders;

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use flow::{SignedUp, deliver_at, repository_at, sign_up_at, token_at, wait_ready};
pub use process::{ChildGuard, cpu_seconds, process_alive, rss_kib};
pub use senders::Sender;

/// The repository's root directory.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `tests/fixtures/github/<name>.json`: a real GitHub payload (see its README).
pub fn fixture_path(name: &str) -> PathBuf {
    repo_root()
        .join("tests/fixtures/github")
        .join(format!("{name}.json"))
}

/// The bytes of a GitHub fixture, unchanged: sign exactly these.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The bytes of any file under `tests/fixtures`, e.g. `gitlab/push.json`.
pub fn fixture_file(path: &str) -> Vec<u8> {
    let path = repo_root().join("tests/fixtures").join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// GitHub's `X-Hub-Signature-256` of `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A gRPC request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a token is ASCII"),
    );
    request
}

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on loopback")
}

/// A tool the tests and the bench run: from the project's `.venv` (grpcurl,
/// Envoy, installed by scripts/test), from PATH, or the newest PostgreSQL's.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let venv = repo_root().join(".venv/bin").join(name);
    if venv.exists() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|path| path.exists())
    });
    if let Some(path) = on_path {
        return Ok(path);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|entry| entry.path().join("bin").join(name))
                .filter(|path| path.exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().ok_or_else(|| {
        anyhow::anyhow!("{name} not found (scripts/test and scripts/bench install what they need)")
    })
}

/// `envoy/render <args>`: the one source of every Envoy configuration.
pub fn render_envoy(args: &[&str]) -> String {
    let output = std::process::Command::new(repo_root().join("envoy/render"))
        .args(args)
        .output()
        .expect("envoy/render runs");
    assert!(
        output.status.success(),
        "envoy/render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}
