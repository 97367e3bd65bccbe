//! The container smoke test: the images `scripts/image` built, loaded from
//! their OCI archives into a podman store of their own and run as the charts
//! run them (README, "Images"):
//!
//! - each container's command, environment, mounted Secrets and ConfigMaps,
//!   emptyDirs (as size-limited tmpfs) and security context (user 65532,
//!   read-only root, every capability dropped, no privilege escalation) come
//!   from the charts rendered by the Helm SDK (`tests/image/chart_pods.py`);
//! - the chart's migration Job, then the relay with the chart's Envoy config in
//!   an Envoy sidecar container in front (a test image of the Envoy the suite
//!   runs, on the same root file system, since none can be pulled here);
//! - sign up, register a repository and send a signed webhook through Envoy;
//!   the agent image streams it to a target on the host, byte for byte;
//! - SIGTERM stops the agent, then the relay, each with exit status 0 well
//!   within its grace period; a webhook sent while the agent was down is
//!   delivered after both come back, and nothing is delivered twice;
//! - the images' user, labels and embedded SBOM; their sizes are printed.
//!
//! Run by `scripts/image-smoke` (after `scripts/image`), the last step of
//! `scripts/test`. Containers share the host's network (`--network host`), so
//! the chart's fixed ports are swapped for free ones.

#[allow(dead_code, unused_imports)]
#[path = "../it/helpers/mod.rs"]
mod helpers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use helpers::{
    TEST_SECRET_KEY, TestTarget, free_port, fresh_database, repository_at, sign, tenant_at,
};
use serde_json::{Value, json};

const IMAGES: [&str; 3] = ["hookrelay", "hookrelay-agent", "envoy-sidecar-test"];

/// podman on a store of the test's own, with the settings this machine needs.
struct Podman {
    store: PathBuf,
    conf: PathBuf,
    /// Containers started, removed on drop.
    started: std::sync::Mutex<Vec<String>>,
}

impl Podman {
    fn new(store: PathBuf) -> Podman {
        Podman {
            store,
            conf: hookrelay_testkit::repo_root().join("tests/image/containers.conf"),
            started: Default::default(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.store.join("root"))
            .arg("--runroot")
            .arg(self.store.join("run"))
            .args(["--storage-driver", "vfs", "--log-level", "error"])
            .env("CONTAINERS_CONF", &self.conf);
        command
    }

    /// Runs podman with `args`; panics with its output unless it succeeds.
    fn run(&self, args: &[&str]) -> String {
        let output = self
            .command()
            .args(args)
            .output()
            .expect("podman runs (scripts/image-smoke installs it)");
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            describe(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn start(&self, name: &str, args: Vec<String>) {
        self.command().args(["rm", "-f", name]).output().unwrap();
        self.started.lock().unwrap().push(name.to_owned());
        let mut all = vec!["run".to_owned(), "-d".into(), "--name".into(), name.into()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run(&refs);
    }

    fn logs(&self, name: &str) -> String {
        let output = self.command().args(["logs", name]).output().unwrap();
        describe(&output)
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.run(&["inspect", name, "--format", format])
            .trim()
            .to_owned()
    }

    /// `podman stop -t grace` (SIGTERM, then SIGKILL at the deadline), as
    /// the kubelet does; returns the exit status and how long it took.
    fn stop(&self, name: &str, grace: u64) -> (i64, Duration) {
        let started = Instant::now();
        self.run(&["stop", "-t", &grace.to_string(), name]);
        let took = started.elapsed();
        let code = self.inspect(name, "{{.State.ExitCode}}").parse().unwrap();
        (code, took)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in self.started.lock().unwrap().drain(..) {
            let _ = self.command().args(["rm", "-f", "-t", "0", &name]).output();
        }
    }
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The four containers the charts deploy, with these values.
fn chart_pods(relay_values: &Value, agent_values: &Value) -> Value {
    let output = Command::new("python3")
        .arg(hookrelay_testkit::repo_root().join("tests/image/chart_pods.py"))
        .arg(relay_values.to_string())
        .arg(agent_values.to_string())
        .output()
        .expect("python3 runs (scripts/test puts the project's virtualenv on PATH)");
    assert!(
        output.status.success(),
        "chart_pods.py: {}",
        describe(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `podman run` arguments for one of the charts' containers: its security
/// context, environment (Secret references from `secrets`), mounts and
/// command. Secret and ConfigMap files are written under `dir`, as the kubelet
/// writes them (root-owned, 0644).
fn run_args(
    plan: &Value,
    image: &str,
    secrets: &HashMap<&str, HashMap<&str, String>>,
    dir: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["--network".into(), "host".into()];
    let security = &plan["security"];
    let user = security["runAsUser"]
        .as_i64()
        .expect("the chart sets runAsUser");
    let group = security["runAsGroup"]
        .as_i64()
        .expect("the chart sets runAsGroup");
    assert_ne!(user, 0, "the chart runs as root");
    args.extend(["--user".into(), format!("{user}:{group}")]);
    if let Some(fs_group) = security["fsGroup"].as_i64() {
        args.extend(["--group-add".into(), fs_group.to_string()]);
    }
    if security["readOnlyRootFilesystem"] == json!(true) {
        // podman would mount tmpfs on /tmp, /var/tmp and /run; Kubernetes does not.
        args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    for capability in security["capabilities"]["drop"]
        .as_array()
        .into_iter()
        .flatten()
    {
        args.extend(["--cap-drop".into(), capability.as_str().unwrap().into()]);
    }
    if security["allowPrivilegeEscalation"] == json!(false) {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    for (name, value) in plan["env"].as_object().unwrap() {
        let value = match value {
            Value::String(value) => value.clone(),
            reference => {
                let [secret, key] = [0, 1].map(|i| reference["secret"][i].as_str().unwrap());
                secrets[secret][key].clone()
            }
        };
        args.extend(["--env".into(), format!("{name}={value}")]);
    }
    for mount in plan["mounts"].as_array().unwrap() {
        let path = mount["path"].as_str().unwrap();
        let files: Vec<(String, String)> = match mount["kind"].as_str().unwrap() {
            "emptyDir" => {
                let size = mount["sizeLimit"].as_str().unwrap_or("64Mi");
                let size = size.trim_end_matches("Mi");
                args.extend([
                    "--tmpfs".into(),
                    format!("{path}:rw,size={size}m,mode=1777"),
                ]);
                continue;
            }
            "configMap" => mount["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap().to_owned()))
                .collect(),
            "secret" => {
                let data = &secrets[mount["name"].as_str().unwrap()];
                match mount["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .map(|item| {
                            let key = item["key"].as_str().unwrap();
                            (item["path"].as_str().unwrap().to_owned(), data[key].clone())
                        })
                        .collect(),
                    None => data
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                }
            }
            kind => panic!("no rule for a {kind} volume"),
        };
        let host = dir.join(format!("volume-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&host).unwrap();
        for (file, contents) in files {
            std::fs::write(host.join(&file), contents).unwrap();
            std::fs::set_permissions(
                host.join(&file),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
        }
        std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mode = if mount["readOnly"] == json!(true) {
            "ro"
        } else {
            "rw"
        };
        args.extend([
            "--volume".into(),
            format!("{}:{path}:{mode}", host.display()),
        ]);
    }
    if let Some(command) = plan["command"].as_array() {
        args.extend([
            "--entrypoint".into(),
            Value::Array(command.clone()).to_string(),
        ]);
    }
    args.push(image.into());
    for arg in plan["args"].as_array().unwrap() {
        args.push(arg.as_str().unwrap().into());
    }
    args
}

/// A TCP port on loopback that forwards to a Unix socket: the test's
/// PostgreSQL listens on a socket only, a container reaches it by TCP.
async fn tcp_to_unix(socket: PathBuf) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    port
}

/// A URL of the test database that a container on the host network reaches.
async fn container_database_url(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    let query: HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    match query.get("host") {
        Some(socket_dir) => {
            let port = query.get("port").map(String::as_str).unwrap_or("5432");
            let proxy = tcp_to_unix(Path::new(socket_dir).join(format!(".s.PGSQL.{port}"))).await;
            format!("postgres://postgres@127.0.0.1:{proxy}{}", parsed.path())
        }
        None => url.to_owned(),
    }
}

/// Replaces the chart's fixed ports (Envoy 8080 and admin 9901, the relay's
/// 8081 and 50051, the agent's metrics 9090) with free ones.
fn with_ports(plan: &Value, ports: &HashMap<u16, u16>) -> Value {
    let mut text = plan.to_string();
    for (from, to) in ports {
        text = text
            .replace(&format!(":{from}\""), &format!(":{to}\""))
            .replace(
                &format!("\\\"port_value\\\": {from}"),
                &format!("\\\"port_value\\\": {to}"),
            );
    }
    serde_json::from_str(&text).unwrap()
}

async fn eventually_ok(url: &str, what: &str, podman: &Podman, containers: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = containers
                .iter()
                .map(|c| format!("--- {c}:\n{}", podman.logs(c)))
                .collect();
            panic!("{what} never answered {url}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_received(target: &TestTarget, count: usize, podman: &Podman) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.received.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "the target received {} of {count}\n--- agent:\n{}",
            target.received.lock().unwrap().len(),
            podman.logs("agent")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_run_as_the_charts_run_them() {
    let root = hookrelay_testkit::repo_root();
    let archives = root.join("target/image");
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let podman = Podman::new(scratch.path().join("store"));
    let version = env!("CARGO_PKG_VERSION");

    // The archives load, and carry what an operator relies on.
    for image in IMAGES {
        let archive = archives.join(format!("{image}.oci.tar"));
        assert!(
            archive.exists(),
            "{} is missing: run scripts/image first",
            archive.display()
        );
        podman.run(&["load", "--quiet", "-i", archive.to_str().unwrap()]);
        let reference = format!("localhost/{image}:{version}");
        let config: Value =
            serde_json::from_str(&podman.run(&["image", "inspect", &reference])).unwrap();
        let config = &config[0];
        assert_eq!(
            config["Config"]["User"], "65532:65532",
            "{image} runs as nonroot"
        );
        println!(
            "image {reference}: {:.1} MB",
            config["Size"].as_f64().unwrap() / 1e6
        );
        if image.starts_with("hookrelay") {
            let labels = &config["Labels"];
            assert_eq!(labels["org.opencontainers.image.version"], version);
            assert_eq!(
                labels["org.opencontainers.image.source"],
                "https://github.com/hookrelay/hookrelay"
            );
            let revision = labels["org.opencontainers.image.revision"]
                .as_str()
                .unwrap();
            assert!(revision.len() == 40 || revision == "unknown", "{revision}");
            assert_sbom(&podman, &reference, image, scratch.path());
        }
    }
    let image = |name: &str| format!("localhost/{name}:{version}");

    // The database: the chart's DATABASE_URL Secret points at it.
    let database = container_database_url(&fresh_database().await).await;
    let ports: HashMap<u16, u16> = [8080, 9901, 8081, 50051, 9090]
        .into_iter()
        .map(|port| (port, free_port()))
        .collect();
    let front = format!("http://127.0.0.1:{}", ports[&8080]);

    // The agent's values need a client, which needs the relay: render once with
    // a placeholder, then again once the client exists.
    let agent_values = |client_id: &str, target: &str| {
        json!({
            "server": front,
            "clientId": client_id,
            "clientSecret": {"existingSecret": "hookrelay-agent"},
            "consumer": "ci",
            "target": target,
        })
    };
    let relay_values = json!({ "publicUrl": front });
    let pods = with_ports(
        &chart_pods(
            &relay_values,
            &agent_values("hrc_placeholder", "http://127.0.0.1:1/"),
        ),
        &ports,
    );
    let mut secrets: HashMap<&str, HashMap<&str, String>> = HashMap::new();
    secrets.insert(
        "hookrelay-database",
        HashMap::from([("DATABASE_URL", database.clone())]),
    );
    secrets.insert(
        "hookrelay-secret-key",
        HashMap::from([("secret-key", TEST_SECRET_KEY.to_owned())]),
    );

    // The chart's pre-install Job: migrations, then it exits.
    let migrate = run_args(
        &pods["migrate"],
        &image("hookrelay"),
        &secrets,
        scratch.path(),
    );
    let mut args = vec!["run".to_owned(), "--rm".into()];
    args.extend(migrate);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.run(&refs);

    let relay = run_args(
        &pods["relay"],
        &image("hookrelay"),
        &secrets,
        scratch.path(),
    );
    let envoy = run_args(
        &pods["envoy"],
        &image("envoy-sidecar-test"),
        &secrets,
        scratch.path(),
    );
    podman.start("relay", relay.clone());
    podman.start("envoy", envoy);
    eventually_ok(
        &format!("{front}/readyz"),
        "the relay behind Envoy",
        &podman,
        &["relay", "envoy"],
    )
    .await;

    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &front, "acme").await;
    let repository = repository_at(&http, &front, &tenant.token, "acme/app").await;
    let (id, secret) = (
        repository["id"].as_str().unwrap().to_owned(),
        repository["webhook_secret"].as_str().unwrap().to_owned(),
    );
    // A CI server that checks GitHub's signature itself.
    let target = TestTarget::start(vec![secret.clone()]).await;
    let body = hookrelay_testkit::fixture("push");
    let send = |delivery: &'static str| {
        let (http, front, id, body, signature) = (
            http.clone(),
            front.clone(),
            id.clone(),
            body.clone(),
            sign(&secret, &body),
        );
        async move {
            let response = http
                .post(format!("{front}/v1/webhooks/{id}"))
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", delivery)
                .header("x-hub-signature-256", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                202,
                "{delivery}: {}",
                response.text().await.unwrap()
            );
        }
    };
    send("image-1").await;

    // The agent, as its chart runs it, with the tenant's client.
    let pods = with_ports(
        &chart_pods(&relay_values, &agent_values(&tenant.client_id, &target.url)),
        &ports,
    );
    secrets.insert(
        "hookrelay-agent",
        HashMap::from([("client-secret", tenant.client_secret.clone())]),
    );
    let agent = run_args(
        &pods["agent"],
        &image("hookrelay-agent"),
        &secrets,
        scratch.path(),
    );
    podman.start("agent", agent.clone());
    wait_received(&target, 1, &podman).await;
    assert_eq!(
        target.received.lock().unwrap()[0].body,
        body,
        "replayed byte for byte"
    );

    // SIGTERM: each stops by itself, well within its grace period.
    let agent_grace = pods["agent"]["grace"].as_u64().unwrap();
    let (code, took) = podman.stop("agent", agent_grace);
    assert_eq!(
        code,
        0,
        "the agent's exit on SIGTERM (took {took:?}):\n{}",
        podman.logs("agent")
    );
    assert!(
        took < Duration::from_secs(agent_grace / 2),
        "the agent took {took:?} to stop"
    );
    send("image-2").await;
    let relay_grace = pods["relay"]["grace"].as_u64().unwrap();
    let (code, took) = podman.stop("relay", relay_grace);
    assert_eq!(
        code,
        0,
        "the relay's exit on SIGTERM (took {took:?}):\n{}",
        podman.logs("relay")
    );
    assert!(
        took < Duration::from_secs(relay_grace),
        "the relay took {took:?} to stop"
    );
    println!(
        "SIGTERM: the relay stopped in {took:?} (grace {relay_grace} s, drain delay included)"
    );
    let envoy_grace = pods["envoy"]["grace"].as_u64().unwrap();
    let (code, took) = podman.stop("envoy", envoy_grace);
    assert_eq!(
        code,
        0,
        "Envoy's exit on SIGTERM (took {took:?}):\n{}",
        podman.logs("envoy")
    );

    // Both back: the webhook accepted while the agent was down arrives, once.
    for name in ["relay", "envoy"] {
        podman.run(&["start", name]);
    }
    eventually_ok(
        &format!("{front}/readyz"),
        "the restarted relay",
        &podman,
        &["relay", "envoy"],
    )
    .await;
    podman.start("agent", agent);
    wait_received(&target, 2, &podman).await;
    send("image-3").await;
    wait_received(&target, 3, &podman).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered: Vec<String> = target
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.delivery_id.clone())
        .collect();
    assert_eq!(
        delivered,
        ["image-1", "image-2", "image-3"],
        "each once, in order"
    );
    for name in ["agent", "relay", "envoy"] {
        let grace = pods[name]["grace"].as_u64().unwrap();
        let (code, _) = podman.stop(name, grace);
        assert_eq!(code, 0, "{name}: {}", podman.logs(name));
    }
}

/// The binary in `reference` carries its cargo-auditable dependency list (the
/// `.dep-v0` section, zlib-compressed JSON), read back by objcopy and Python.
fn assert_sbom(podman: &Podman, reference: &str, binary: &str, dir: &Path) {
    let container = podman.run(&["create", reference]).trim().to_owned();
    let copy = dir.join(binary);
    podman.run(&[
        "cp",
        &format!("{container}:/usr/local/bin/{binary}"),
        copy.to_str().unwrap(),
    ]);
    podman.run(&["rm", &container]);
    let section = dir.join(format!("{binary}.dep-v0"));
    let output = Command::new("objcopy")
        .arg(format!("--dump-section=.dep-v0={}", section.display()))
        .arg(&copy)
        .arg(dir.join(format!("{binary}.stripped")))
        .output()
        .expect("objcopy runs (binutils)");
    assert!(
        output.status.success(),
        "{binary} has no .dep-v0 section: {}",
        describe(&output)
    );
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, zlib; sbom = json.loads(zlib.decompress(open(sys.argv[1], 'rb').read()));\
             print(json.dumps(sorted(p['name'] for p in sbom['packages'])))",
        ])
        .arg(&section)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let packages: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    for expected in [binary, "tokio", "rustls", "tonic"] {
        assert!(
            packages.iter().any(|p| p == expected),
            "{expected} is not in {binary}'s SBOM"
        );
    }
    println!("SBOM of {binary}: {} packages", packages.len());
}
