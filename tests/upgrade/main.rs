//! The rolling upgrade, and the rollback, between the previous release
//! (`tests/upgrade/PREVIOUS`, built by `scripts/previous-release`) and this
//! tree, side by side on one database behind one Envoy, under steady signed
//! webhooks (README, "Upgrades"):
//!
//! 1. N-1: two replicas, an agent of N-1 streaming to a target;
//! 2. N's migrations applied while N-1 serves; two replicas of N started beside;
//! 3. the N-1 replicas stopped one at a time (SIGTERM, drain), as a rolling
//!    update does (the N-1 agent now streams from N);
//! 4. the agent swapped for N's;
//! 5. the rollback: N-1 started again on the database N migrated, the N
//!    replicas stopped one at a time (N's agent now streams from N-1).
//!
//! Asserted: every webhook answered 2xx; every 2xx reached the target exactly
//! once (a duplicate only while the agents were swapped, counted); each
//! repository in order; no replica logged a schema error.
//!
//! Run by `scripts/upgrade` (the last step of `scripts/test`), which builds
//! the previous release first; `cargo test --test upgrade` builds it too.

#[allow(dead_code, unused_imports)]
#[path = "../it/helpers/mod.rs"]
mod helpers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helpers::{
    AgentProcess, EnvoyProcess, ServerProcess, TEST_SECRET_KEY, TestTarget, free_port,
    fresh_database, hookrelay, repository_at, sign, tenant_at,
};

/// The previous release's binaries: `HOOKRELAY_PREVIOUS_BIN`, or built now.
fn previous_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("HOOKRELAY_PREVIOUS_BIN") {
        return PathBuf::from(dir);
    }
    let root = hookrelay_testkit::repo_root();
    let output = std::process::Command::new(root.join("scripts/previous-release"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/previous-release runs");
    assert!(
        output.status.success(),
        "the previous release does not build"
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// What the webhook senders saw, per repository: (delivery id, event id) of
/// each 2xx in the order answered, and every other answer.
#[derive(Default)]
struct Sent {
    accepted: Mutex<HashMap<usize, Vec<(String, i64)>>>,
    refused: Mutex<Vec<String>>,
}

/// One sender per repository, each `rate` signed pushes a second, in order.
fn send_webhooks(
    front: String,
    repositories: Vec<(String, String)>,
    rate: u32,
    stop: Arc<AtomicBool>,
    sent: Arc<Sent>,
) -> Vec<tokio::task::JoinHandle<()>> {
    repositories
        .into_iter()
        .enumerate()
        .map(|(index, (id, secret))| {
            let (front, stop, sent) = (front.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .build()
                    .unwrap();
                let body = hookrelay_testkit::fixture("push");
                let signature = sign(&secret, &body);
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    n += 1;
                    let delivery = format!("r{index}-{n}");
                    let answer = http
                        .post(format!("{front}/v1/webhooks/{id}"))
                        .header("content-type", "application/json")
                        .header("x-github-event", "push")
                        .header("x-github-delivery", &delivery)
                        .header("x-hub-signature-256", &signature)
                        .body(body.clone())
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            let json: serde_json::Value = response.json().await.unwrap();
                            sent.accepted
                                .lock()
                                .unwrap()
                                .entry(index)
                                .or_default()
                                .push((delivery, json["event_id"].as_i64().unwrap()));
                        }
                        Ok(response) => {
                            let status = response.status();
                            let text = response.text().await.unwrap_or_default();
                            sent.refused
                                .lock()
                                .unwrap()
                                .push(format!("{delivery}: {status} {text}"));
                        }
                        Err(error) => sent
                            .refused
                            .lock()
                            .unwrap()
                            .push(format!("{delivery}: {error}")),
                    }
                }
            })
        })
        .collect()
}

/// A replica's two ports, fixed so Envoy's upstreams are known in advance and
/// a replica restarted for the rollback comes back where it was.
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    grpc: u16,
}

struct Cluster {
    database: String,
    logs: PathBuf,
    front: String,
}

impl Cluster {
    async fn replica(&self, binary: Option<&PathBuf>, ports: Ports) -> ServerProcess {
        let command = match binary {
            Some(dir) => {
                let mut command = std::process::Command::new(dir.join("hookrelay"));
                command.env_remove("DATABASE_URL").env("RUST_LOG", "info");
                command
            }
            None => hookrelay(),
        };
        let mut command = command;
        command.arg("serve");
        ServerProcess::start_on(
            command,
            ports.http,
            &[
                ("DATABASE_URL", self.database.clone()),
                ("HOOKRELAY_SECRET_KEY", TEST_SECRET_KEY.to_owned()),
                ("HOOKRELAY_GRPC_ADDR", format!("127.0.0.1:{}", ports.grpc)),
                ("HOOKRELAY_PUBLIC_URL", self.front.clone()),
                ("HOOKRELAY_DRAIN_DELAY", "3s".to_owned()),
                ("HOOKRELAY_TRUSTED_PROXIES", "127.0.0.1".to_owned()),
                // 50 webhooks a second from one address, for minutes.
                ("HOOKRELAY_QUOTA_WEBHOOKS_PER_SECOND", "1000".to_owned()),
            ],
            &self.logs,
        )
        .await
    }
}

/// Stops a replica as Kubernetes does: SIGTERM, then its drain and exit.
async fn roll_out(mut replica: ServerProcess) -> String {
    replica.signal("TERM");
    let status = replica.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "a replica stopped with {status}");
    replica.log()
}

fn schema_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("ERROR") || line.contains("\"level\":\"ERROR\""))
        .filter(|line| {
            [
                "column",
                "relation",
                "migrat",
                "schema",
                "does not exist",
                "violates",
            ]
            .iter()
            .any(|word| line.contains(word))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_and_its_rollback_lose_and_reorder_nothing() {
    let previous = previous_bin();
    let version = |binary: PathBuf| {
        let output = std::process::Command::new(binary)
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let (old_version, new_version) = (
        version(previous.join("hookrelay")),
        version(PathBuf::from(env!("CARGO_BIN_EXE_hookrelay"))),
    );
    eprintln!("N-1: {old_version}; N: {new_version}");
    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let cluster = Cluster {
        database: fresh_database().await,
        logs: logs.path().to_path_buf(),
        front: format!("http://127.0.0.1:{port}"),
    };
    let ports: Vec<Ports> = (0..4)
        .map(|_| Ports {
            http: free_port(),
            grpc: free_port(),
        })
        .collect();
    let (old_ports, new_ports) = (&ports[..2], &ports[2..]);
    let mut phases: Vec<(&str, Duration)> = Vec::new();
    let mut began = Instant::now();
    let mut phase = |name: &'static str, began: &mut Instant| {
        phases.push((name, began.elapsed()));
        *began = Instant::now();
    };

    // 1. N-1, two replicas behind Envoy (which knows N's ports already).
    let mut old = Vec::new();
    for ports in old_ports {
        old.push(cluster.replica(Some(&previous), *ports).await);
    }
    let upstream = |f: fn(&Ports) -> u16| {
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", f(p)))
            .collect::<Vec<_>>()
    };
    let _envoy = EnvoyProcess::start_expecting(
        port,
        &upstream(|p| p.http),
        &upstream(|p| p.grpc),
        &[],
        4,
        logs.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = tenant_at(&http, &cluster.front, "acme").await;
    let mut repositories = Vec::new();
    let mut secrets = Vec::new();
    for name in ["acme/app", "acme/api"] {
        let created = repository_at(&http, &cluster.front, &tenant.token, name).await;
        let secret = created["webhook_secret"].as_str().unwrap().to_owned();
        secrets.push(secret.clone());
        repositories.push((created["id"].as_str().unwrap().to_owned(), secret));
    }
    let target = TestTarget::start(secrets).await;
    let agent = |binary: PathBuf| {
        AgentProcess::spawn(
            std::process::Command::new(binary),
            &cluster.front,
            &tenant,
            "ci",
            &target.url,
            &[],
            logs.path(),
        )
    };
    let mut old_agent = agent(previous.join("hookrelay-agent"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let senders = send_webhooks(
        cluster.front.clone(),
        repositories.clone(),
        25,
        stop.clone(),
        sent.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase("N-1 serving", &mut began);

    // 2. N's migrations while N-1 serves, then N beside it.
    let migrated = hookrelay()
        .arg("migrate")
        .env("DATABASE_URL", &cluster.database)
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let mut new = Vec::new();
    for ports in new_ports {
        new.push(cluster.replica(None, *ports).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase("N migrated and started beside N-1", &mut began);

    // 3. N-1 rolled out, one replica at a time.
    let mut logs_seen = Vec::new();
    for replica in old.drain(..) {
        logs_seen.push(roll_out(replica).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    phase("N-1 rolled out", &mut began);

    // 4. The agent swapped for N's.
    let swap_began = target.deliveries().len();
    old_agent.signal("TERM");
    let status = old_agent.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "the N-1 agent stopped with {status}");
    let _new_agent = agent(helpers::agent_binary());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let swap_ended = target.deliveries().len();
    phase("agent swapped for N's", &mut began);

    // 5. The rollback: N-1 again on the database N migrated; N rolled out.
    for ports in old_ports {
        old.push(cluster.replica(Some(&previous), *ports).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for replica in new.drain(..) {
        logs_seen.push(roll_out(replica).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase("rolled back to N-1", &mut began);

    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted = sent.accepted.lock().unwrap().clone();
    let refused = sent.refused.lock().unwrap().clone();
    let total_accepted: usize = accepted.values().map(Vec::len).sum();
    assert!(
        refused.is_empty(),
        "every webhook is answered 2xx; refused: {refused:?}"
    );
    let received = target
        .wait_for(total_accepted, Duration::from_secs(60))
        .await;
    // Settle: anything still in flight arrives, or a duplicate shows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received_all = target.deliveries();
    phase("drained", &mut began);

    // Exactly once, but for duplicates around the agent swap.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    for (index, delivery) in received_all.iter().enumerate() {
        if seen.insert(delivery, index).is_some() {
            duplicates.push((index, delivery.clone()));
        }
    }
    for (index, delivery) in &duplicates {
        assert!(
            (swap_began..swap_ended + 50).contains(index),
            "{delivery} came twice, the second time at {index}, outside the agent swap \
             ({swap_began}..{swap_ended})"
        );
    }
    for deliveries in accepted.values() {
        for (delivery, _) in deliveries {
            assert!(
                seen.contains_key(delivery.as_str()),
                "{delivery} never arrived"
            );
        }
    }
    assert!(received.len() >= total_accepted);
    // Each repository in order: by event id, first arrivals.
    let position: HashMap<&str, usize> = {
        let mut first = HashMap::new();
        for (index, delivery) in received_all.iter().enumerate() {
            first.entry(delivery.as_str()).or_insert(index);
        }
        first
    };
    for deliveries in accepted.values() {
        let mut by_event = deliveries.clone();
        by_event.sort_by_key(|(_, event)| *event);
        let order: Vec<usize> = by_event.iter().map(|(d, _)| position[d.as_str()]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "a repository's events arrived out of order"
        );
    }
    for replica in old.drain(..) {
        logs_seen.push(roll_out(replica).await);
    }
    let errors: Vec<String> = logs_seen
        .iter()
        .flat_map(|log| schema_errors(log))
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:#?}");

    let sent_count = total_accepted + refused.len();
    eprintln!(
        "upgrade {old_version} -> {new_version} -> rollback: {sent_count} webhooks sent, \
         {total_accepted} answered 2xx, {} deliveries to the target ({} distinct), {} \
         duplicates (all during the agent swap)",
        received_all.len(),
        seen.len(),
        duplicates.len()
    );
    for (name, took) in phases {
        eprintln!("  {name}: {:.1} s", took.as_secs_f64());
    }
}
