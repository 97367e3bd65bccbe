//! Child processes of the tests: `hookrelay serve`, the agent, Envoy. Each
//! holds a `ChildGuard`, so none outlives its test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookrelay_testkit::{ChildGuard, free_port, render_envoy};
use reqwest::StatusCode;
use serde_json::Value;

use super::{TestApp, TestTenant};

/// A `hookrelay` process, killed (and waited for) on drop.
pub struct ServerProcess {
    pub child: ChildGuard,
    pub address: String,
    pub stdout: PathBuf,
}

pub fn hookrelay() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command.env_remove("DATABASE_URL").env("RUST_LOG", "info");
    command
}

/// The `hookrelay-agent` binary of the workspace, built next to `hookrelay` by
/// `cargo test --workspace` (scripts/test).
pub fn agent_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_hookrelay")).with_file_name("hookrelay-agent");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test)",
        path.display()
    );
    path
}

/// `hookrelay serve` on `data_dir` with both listeners on free ports: for tests
/// that expect it to stop at start.
pub fn serve_on(data_dir: &std::path::Path) -> Command {
    let mut command = hookrelay();
    command
        .arg("serve")
        .env("HOOKRELAY_DATA_DIR", data_dir)
        .env("HOOKRELAY_HTTP_ADDR", "127.0.0.1:0")
        .env("HOOKRELAY_GRPC_ADDR", "127.0.0.1:0");
    command
}

/// `hookrelay` for tests that must not block their runtime while it runs.
pub fn hookrelay_async() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command.env_remove("DATABASE_URL");

    command
}

impl ServerProcess {
    /// Starts `hookrelay serve` with `envs` and waits until /readyz answers 200.
    pub async fn start(envs: &[(&str, String)], log_dir: &std::path::Path) -> ServerProcess {
        let mut command = hookrelay();
        command.arg("serve");
        Self::start_command(command, envs, log_dir).await
    }

    /// Runs `command` (which starts `hookrelay serve`) on a free HTTP port and
    /// waits until /readyz answers 200.
    pub async fn start_command(
        command: Command,
        envs: &[(&str, String)],
        log_dir: &std::path::Path,
    ) -> ServerProcess {
        Self::start_on(command, free_port(), envs, log_dir).await
    }

    /// `start_command` with the HTTP listener on `port`.
    pub async fn start_on(
        mut command: Command,
        port: u16,
        envs: &[(&str, String)],
        log_dir: &std::path::Path,
    ) -> ServerProcess {
        let stdout = log_dir.join(format!(
            "hookrelay-{port}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        command
            .env("HOOKRELAY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            // Never the default 50051: tests run in parallel.
            .env("HOOKRELAY_GRPC_ADDR", "127.0.0.1:0")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::inherit());
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = ChildGuard::spawn(&mut command).expect("hookrelay starts");
        let mut server = ServerProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
            stdout,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(format!("{}/readyz", server.address)).await
                && response.status() == StatusCode::OK
            {
                return server;
            }
            if let Some(status) = server.child.try_wait() {
                panic!(
                    "hookrelay exited with {status}: {}",
                    std::fs::read_to_string(&server.stdout).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "hookrelay did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        self.child.signal(signal);
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.child.wait(timeout).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

/// A `hookrelay relay` process, killed on drop.
pub struct AgentProcess {
    pub child: ChildGuard,
    pub log: PathBuf,
}

impl AgentProcess {
    pub fn start(
        app: &TestApp,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        extra: &[&str],
        log_dir: &std::path::Path,
    ) -> AgentProcess {
        let token_url = app.url("/oauth/token");
        let mut args = vec!["--token-url", &token_url];
        args.extend_from_slice(extra);
        Self::start_at(&app.grpc_address, tenant, consumer, target, &args, log_dir)
    }

    /// An agent against `server` (its token URL defaults to `<server>/oauth/token`).
    pub fn start_at(
        server: &str,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        extra: &[&str],
        log_dir: &std::path::Path,
    ) -> AgentProcess {
        let mut command = hookrelay();
        command.arg("relay");
        Self::spawn(command, server, tenant, consumer, target, extra, log_dir)
    }

    /// The standalone `hookrelay-agent` binary (same flags as `hookrelay relay`).
    pub fn start_standalone(
        app: &TestApp,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        log_dir: &std::path::Path,
    ) -> AgentProcess {
        let token_url = app.url("/oauth/token");
        let command = Command::new(agent_binary());
        Self::spawn(
            command,
            &app.grpc_address,
            tenant,
            consumer,
            target,
            &["--token-url", &token_url],
            log_dir,
        )
    }

    /// `command` (the agent, with any environment the test wants) with the
    /// usual flags, the tenant's client credentials, and `extra`.
    pub fn spawn(
        mut command: Command,
        server: &str,
        tenant: &TestTenant,
        consumer: &str,
        target: &str,
        extra: &[&str],
        log_dir: &std::path::Path,
    ) -> AgentProcess {
        command.args(["--client-id", &tenant.client_id]);
        // The secret from the environment, unless the test gives it another way.
        if !extra.contains(&"--client-secret-file") {
            command.env("HOOKRELAY_CLIENT_SECRET", &tenant.client_secret);
        }
        Self::spawn_with(command, server, consumer, target, extra, log_dir)
    }

    /// `command` with the usual flags and `extra`, and no client credentials
    /// unless `extra` has them.
    pub fn spawn_with(
        mut command: Command,
        server: &str,
        consumer: &str,
        target: &str,
        extra: &[&str],
        log_dir: &std::path::Path,
    ) -> AgentProcess {
        let log = log_dir.join(format!(
            "relay-{consumer}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        command
            .args(["--server", server])
            .args(["--consumer", consumer])
            .args(["--target", target])
            .args(["--summary-interval", "1s"])
            .args(extra)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        AgentProcess {
            child: ChildGuard::spawn(&mut command).expect("the relay starts"),
            log,
        }
    }

    pub fn signal(&self, signal: &str) {
        self.child.signal(signal);
    }

    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.child.wait(timeout).await
    }

    /// Waits until `needle` occurs `count` times in the agent's output.
    pub async fn wait_for_output(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if output.matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` did not occur {count} times:\n{output}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn output(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default());
        text
    }
}

/// A real Envoy in front of relay listeners, configured by envoy/render; killed on drop.
pub struct EnvoyProcess {
    /// Envoy runs until this drops.
    _child: ChildGuard,
    pub address: String,
    pub admin: String,
    pub log: PathBuf,
}

/// `envoy --mode validate` on a config file: (accepted, output).
pub fn validate_envoy(config: &std::path::Path) -> (bool, String) {
    let output = Command::new("envoy")
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .output()
        .expect("envoy is not on PATH: run the tests through scripts/test, which installs it");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

impl EnvoyProcess {
    /// Envoy on `port` (0: a free one) in front of the given relay listeners; returns
    /// once every upstream passes its health check.
    pub async fn start(
        port: u16,
        http: &[String],
        grpc: &[String],
        dir: &std::path::Path,
    ) -> EnvoyProcess {
        Self::start_with(port, http, grpc, &[], dir).await
    }

    /// `start`, with more envoy/render flags.
    pub async fn start_with(
        port: u16,
        http: &[String],
        grpc: &[String],
        render_flags: &[&str],
        dir: &std::path::Path,
    ) -> EnvoyProcess {
        let hosts = http.len() + grpc.len();
        Self::start_expecting(port, http, grpc, render_flags, hosts, dir).await
    }

    /// `start_with`, returning once `healthy` of the upstream hosts pass their
    /// health checks (the others may start later, as in a rolling upgrade).
    pub async fn start_expecting(
        port: u16,
        http: &[String],
        grpc: &[String],
        render_flags: &[&str],
        healthy_hosts: usize,
        dir: &std::path::Path,
    ) -> EnvoyProcess {
        let port = if port == 0 { free_port() } else { port };
        let admin = free_port();
        let (listen, admin_address) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
        let mut args = vec!["--listen", &listen, "--admin", &admin_address];
        args.extend_from_slice(render_flags);
        for address in http {
            args.extend(["--http", address]);
        }
        for address in grpc {
            args.extend(["--grpc", address]);
        }
        let config = dir.join(format!("envoy-{port}.json"));
        std::fs::write(&config, render_envoy(&args)).unwrap();
        let (valid, output) = validate_envoy(&config);
        assert!(valid, "{output}");
        let log = dir.join(format!("envoy-{port}.log"));
        let child = ChildGuard::spawn(
            Command::new("envoy")
                .args([
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                    "--file-flush-interval-msec",
                    "100",
                    "-c",
                ])
                .arg(&config)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(log.with_extension("err")).unwrap()),
        )
        .expect("envoy starts");
        let envoy = EnvoyProcess {
            _child: child,
            address: format!("http://{listen}"),
            admin: format!("http://{admin_address}"),
            log,
        };
        let hosts = healthy_hosts;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{}/ready", envoy.admin))
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            let clusters = match reqwest::get(format!("{}/clusters", envoy.admin)).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let healthy = clusters
                .lines()
                .filter(|l| l.ends_with("::health_flags::healthy"))
                .count();
            if ready && healthy == hosts {
                return envoy;
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready ({healthy}/{hosts} healthy):\n{clusters}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Envoy's JSON access log lines.
    pub fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// A program on a real pseudo-terminal (util-linux `script`), as a person
/// running it in a terminal has it; stopped when dropped. `script` runs the
/// program in a session of its own, so killing `script` leaves the program
/// to the terminal's hang-up, which a process that ignores SIGHUP (a suite
/// run under `nohup`) outlives: the program is also killed by its own pid,
/// which the shell writes to `pid_file` before it execs the program.
pub struct OnPty {
    _script: ChildGuard,
    program: PathBuf,
    pid_file: PathBuf,
}

impl OnPty {
    /// Runs `words` (the program, then its arguments) on a pseudo-terminal;
    /// `configure` sets `script`'s environment and where its output goes.
    pub fn spawn(
        words: &[String],
        pid_file: PathBuf,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let quote = |arg: &str| format!("'{}'", arg.replace('\'', r"'\''"));
        let line = format!(
            "echo $$ > {}; exec {}",
            quote(&pid_file.display().to_string()),
            words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
        );
        let mut command = Command::new("script");
        // -q: no banner; -f: flush at once; -e: its exit status; -c: the command.
        command
            .args(["-qfec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        configure(&mut command);
        Self {
            _script: ChildGuard::spawn(&mut command)
                .expect("util-linux `script` runs (apt-get install bsdutils)"),
            program: PathBuf::from(&words[0]),
            pid_file,
        }
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(&self.pid_file) else {
            return;
        };
        let pid = pid.trim();
        // Only while that pid is still the program (not a pid reused since).
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if running.is_some() && running == std::fs::canonicalize(&self.program).ok() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}
