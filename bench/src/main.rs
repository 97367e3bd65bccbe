//! The benchmark runner (not a test): `scripts/bench [SCENARIO...] [--quick]`.
//!
//! It starts a fresh PostgreSQL (fsync on) and the release server, drives each
//! scenario with load generators in separate processes (this binary, re-executed
//! with a `load-*` subcommand), prints a table with the machine's details and
//! writes JSON. Scenarios: ingest, latency, fanout, catchup, agent, envoy.
#![forbid(unsafe_code)]

mod delay_proxy;
mod exchange;
mod ha;
mod messages;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hookrelay::embedded_db::{EmbeddedOptions, EmbeddedPostgres};
use hookrelay::grpc::proto::StreamEventsRequest;
use hookrelay::grpc::proto::event_service_client::EventServiceClient;
use hookrelay_testkit::{
    ChildGuard, bearer, cpu_seconds, fixture_path, free_port, repo_root, sign, tool, wait_ready,
};
use messages::{CatchupLoad, FanoutLoad, IngestLoad, LatencyLoad};
use serde_json::{Value, json};

const SECRET_KEY: &str = "YmVuY2htYXJrLWtleS1lbmNyeXB0aW9uLWtleS0zMmI=";
const ALL: [&str; 9] = [
    "ingest", "latency", "fanout", "catchup", "agent", "envoy", "refs", "ha", "exchange",
];

#[derive(Parser)]
#[command(
    name = "bench",
    about = "hookrelay benchmarks: prints a table and writes JSON"
)]
struct Cli {
    #[command(subcommand)]
    load: Option<Generator>,
    /// Scenarios to run (default: all): ingest, latency, fanout, catchup, agent, envoy, refs, ha.
    scenarios: Vec<String>,
    /// The `hookrelay` binary to benchmark (default: the one beside this runner),
    /// e.g. an older build, for runs that alternate two versions.
    #[arg(long)]
    server: Option<PathBuf>,
    /// Shorter runs, for a smoke check of the runner itself.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Generator {
    /// A TCP proxy adding `delay` each way (tc netem is not available here).
    #[command(name = "delay-proxy")]
    DelayProxy {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: delay_proxy::Upstream,
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Duration,
    },
    /// Signed push webhooks at a fixed concurrency until the deadline.
    #[command(hide = true, name = "load-ingest")]
    Ingest {
        url: String,
        secret: String,
        body: PathBuf,
        concurrency: usize,
        seconds: f64,
        prefix: String,
    },
    /// Webhooks at a fixed rate (0: as fast as 64 workers go) while a stream receives them.
    #[command(hide = true, name = "load-latency")]
    Latency {
        url: String,
        grpc: String,
        token: String,
        secret: String,
        body: PathBuf,
        rate: f64,
        seconds: f64,
        after: i64,
        prefix: String,
    },
    /// N idle streams; prints "ready", then the receipt time of the first event on each.
    #[command(hide = true, name = "load-fanout")]
    Fanout {
        grpc: String,
        token: String,
        streams: usize,
        after: i64,
    },
    /// One consumer reads `expect` events from a repository's backlog.
    #[command(hide = true, name = "load-catchup")]
    Catchup {
        grpc: String,
        token: String,
        repository: String,
        expect: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.load {
        Some(load) => runtime.block_on(run_load(load)),
        None => runtime.block_on(run(cli)),
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    body: &[u8],
    delivery: &str,
) -> reqwest::Result<u16> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sign(secret, body))
        .body(body.to_vec())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

// ---------------------------------------------------------------- load processes

async fn run_load(load: Generator) -> anyhow::Result<()> {
    let result: String = match load {
        Generator::DelayProxy {
            listen,
            upstream,
            delay,
        } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            delay_proxy::serve(listener, upstream, delay, None).await?;
            return Ok(());
        }
        Generator::Ingest {
            url,
            secret,
            body,
            concurrency,
            seconds,
            prefix,
        } => load_ingest(
            &url,
            &secret,
            &std::fs::read(body)?,
            concurrency,
            seconds,
            &prefix,
        )
        .await
        .map(|r| serde_json::to_string(&r))??,
        Generator::Latency {
            url,
            grpc,
            token,
            secret,
            body,
            rate,
            seconds,
            after,
            prefix,
        } => load_latency(
            &url,
            &grpc,
            &token,
            &secret,
            &std::fs::read(body)?,
            rate,
            seconds,
            after,
            &prefix,
        )
        .await
        .map(|r| serde_json::to_string(&r))??,
        Generator::Fanout {
            grpc,
            token,
            streams,
            after,
        } => serde_json::to_string(&load_fanout(&grpc, &token, streams, after).await?)?,
        Generator::Catchup {
            grpc,
            token,
            repository,
            expect,
        } => serde_json::to_string(&load_catchup(&grpc, &token, &repository, expect).await?)?,
    };
    println!("{result}");
    Ok(())
}

async fn load_ingest(
    url: &str,
    secret: &str,
    body: &[u8],
    concurrency: usize,
    seconds: f64,
    prefix: &str,
) -> anyhow::Result<IngestLoad> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let body = Arc::new(body.to_vec());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (http, url, secret, body, prefix) = (
            http.clone(),
            url.to_owned(),
            secret.to_owned(),
            body.clone(),
            prefix.to_owned(),
        );
        workers.spawn(async move {
            let (mut latencies, mut non_2xx, mut errors, mut n) = (Vec::new(), 0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let delivery = format!("{prefix}-{worker}-{n}");
                n += 1;
                let sent = Instant::now();
                match post(&http, &url, &secret, &body, &delivery).await {
                    Ok(status) if (200..300).contains(&status) => {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0)
                    }
                    Ok(_) => non_2xx += 1,
                    Err(_) => errors += 1,
                }
            }
            (latencies, non_2xx, errors)
        });
    }
    let (mut latencies, mut non_2xx, mut errors) = (Vec::new(), 0, 0);
    for (l, n, e) in workers.join_all().await {
        latencies.extend(l);
        non_2xx += n;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(IngestLoad {
        ok: latencies.len() as u64,
        non_2xx,
        errors,
        seconds: elapsed,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
    })
}

#[allow(clippy::too_many_arguments)]
async fn load_latency(
    url: &str,
    grpc: &str,
    token: &str,
    secret: &str,
    body: &[u8],
    rate: f64,
    seconds: f64,
    after: i64,
    prefix: &str,
) -> anyhow::Result<LatencyLoad> {
    let mut client = EventServiceClient::connect(grpc.to_owned())
        .await?
        .max_decoding_message_size(64 << 20);
    let request = StreamEventsRequest {
        repository_ids: vec![],
        consumer: format!("{prefix}-latency"),
        after_event_id: Some(after),
        ..Default::default()
    };
    let mut stream = client
        .stream_events(bearer(request, token))
        .await?
        .into_inner();
    let sent: Arc<std::sync::Mutex<HashMap<String, u64>>> = Arc::default();
    let progress = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    // Unique per run: a repeated delivery id is (rightly) stored once.
    let stop = format!("{prefix}-stop");
    let received = tokio::spawn({
        let (sent, progress, stop) = (sent.clone(), progress.clone(), stop.clone());
        async move {
            let mut latencies = Vec::new();
            loop {
                let event = match stream.message().await {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(status) => {
                        eprintln!("latency stream ended: {status:?}");
                        break;
                    }
                };
                progress.0.fetch_add(1, Ordering::Relaxed);
                progress.1.store(event.id as u64, Ordering::Relaxed);
                let at = now_micros();
                if event.delivery_id == stop {
                    break;
                }
                if let Some(t) = sent.lock().unwrap().get(&event.delivery_id) {
                    latencies.push(at.saturating_sub(*t) as f64 / 1000.0);
                }
            }
            latencies
        }
    });
    let http = reqwest::Client::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let poster = Poster {
        http: http.clone(),
        urls: Arc::new(url.split(',').map(str::to_owned).collect()),
        secret: secret.into(),
        body: Arc::new(body.to_vec()),
        prefix: prefix.into(),
        sent: sent.clone(),
        posted: Arc::default(),
        failed: Arc::default(),
        committed: Arc::default(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    if rate > 0.0 {
        // Open loop: a request every 1/rate seconds, whatever the previous ones do.
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut n = 0;
        while Instant::now() < deadline {
            ticker.tick().await;
            tasks.spawn(poster.clone().send(n));
            n += 1;
        }
    } else {
        let counter = Arc::new(AtomicU64::new(0));
        for _ in 0..64 {
            let (counter, poster) = (counter.clone(), poster.clone());
            tasks.spawn(async move {
                while Instant::now() < deadline {
                    poster
                        .clone()
                        .send(counter.fetch_add(1, Ordering::Relaxed))
                        .await;
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = url.split(',').next().unwrap_or(url);
    post(&http, first, secret, body, &stop).await?;
    let mut latencies = match tokio::time::timeout(Duration::from_secs(60), received).await {
        Ok(latencies) => latencies?,
        Err(_) => bail!(
            "the stream did not deliver the run's last event within 60 s: {} events received, the last id {}",
            progress.0.load(Ordering::Relaxed),
            progress.1.load(Ordering::Relaxed)
        ),
    };
    latencies.sort_by(f64::total_cmp);
    let mut committed = poster.committed.lock().unwrap().clone();
    committed.sort_by(f64::total_cmp);
    let posted = poster.posted.load(Ordering::Relaxed);
    Ok(LatencyLoad {
        posted,
        failed: poster.failed.load(Ordering::Relaxed),
        received: latencies.len(),
        per_second: posted as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        commit_p50_ms: percentile(&committed, 50.0),
        commit_p99_ms: percentile(&committed, 99.0),
    })
}

/// Posts webhooks for the latency run, noting when each was sent.
#[derive(Clone)]
struct Poster {
    http: reqwest::Client,
    /// Webhook URLs, taken in turn (replicas behind no load balancer).
    urls: Arc<Vec<String>>,
    secret: Arc<str>,
    body: Arc<Vec<u8>>,
    prefix: Arc<str>,
    sent: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    posted: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// POST → 2xx (committed) per webhook, in ms.
    committed: Arc<std::sync::Mutex<Vec<f64>>>,
}

impl Poster {
    async fn send(self, n: u64) {
        let delivery = format!("{}-{n}", self.prefix);
        self.sent
            .lock()
            .unwrap()
            .insert(delivery.clone(), now_micros());
        let started = Instant::now();
        let url = &self.urls[n as usize % self.urls.len()];
        match post(&self.http, url, &self.secret, &self.body, &delivery).await {
            Ok(status) if (200..300).contains(&status) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                self.committed.lock().unwrap().push(ms);
                self.posted.fetch_add(1, Ordering::Relaxed)
            }
            _ => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

async fn load_fanout(
    grpc: &str,
    token: &str,
    streams: usize,
    after: i64,
) -> anyhow::Result<FanoutLoad> {
    const PER_CONNECTION: usize = 100;
    let mut receivers = tokio::task::JoinSet::new();
    for chunk in 0..streams.div_ceil(PER_CONNECTION) {
        let channel = tonic::transport::Endpoint::from_shared(grpc.to_owned())?
            .connect()
            .await?;
        for i in 0..PER_CONNECTION.min(streams - chunk * PER_CONNECTION) {
            let mut client = EventServiceClient::new(channel.clone());
            let request = StreamEventsRequest {
                repository_ids: vec![],
                consumer: format!("fan-{chunk}-{i}"),
                after_event_id: Some(after),
                ..Default::default()
            };
            let mut stream = client
                .stream_events(bearer(request, token))
                .await?
                .into_inner();
            receivers.spawn(async move {
                match stream.message().await {
                    Ok(Some(_)) => Some(now_micros()),
                    _ => None,
                }
            });
        }
    }
    println!("ready");
    let received: Vec<Option<u64>> = receivers.join_all().await;
    let got: Vec<u64> = received.iter().flatten().copied().collect();
    Ok(FanoutLoad {
        streams,
        received: got.len(),
        last_receipt_us: got.iter().max().copied(),
        first_receipt_us: got.iter().min().copied(),
    })
}

async fn load_catchup(
    grpc: &str,
    token: &str,
    repository: &str,
    expect: usize,
) -> anyhow::Result<CatchupLoad> {
    let mut client = EventServiceClient::connect(grpc.to_owned())
        .await?
        .max_decoding_message_size(64 << 20);
    let request = StreamEventsRequest {
        repository_ids: vec![repository.to_owned()],
        consumer: "catchup".into(),
        after_event_id: None,
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client
        .stream_events(bearer(request, token))
        .await?
        .into_inner();
    let (mut count, mut bytes) = (0usize, 0usize);
    while count < expect {
        let event = stream.message().await?.context("the stream ended early")?;
        count += 1;
        bytes += event.body.len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(CatchupLoad {
        events: count,
        seconds: elapsed,
        per_second: count as f64 / elapsed,
        mib_per_second: bytes as f64 / elapsed / 1048576.0,
    })
}

// ---------------------------------------------------------------- the runner

struct Bench {
    dir: PathBuf,
    _cluster: EmbeddedPostgres,
    socket: String,
    pool: sqlx::PgPool,
    server: ChildGuard,
    /// The `hookrelay` binary under test.
    server_binary: PathBuf,
    http: String,
    grpc: String,
    token: String,
    client_id: String,
    client_secret: String,
    repository: String,
    secret: String,
    body: PathBuf,
    quick: bool,
    rows: Vec<(String, String, String, String)>,
    results: serde_json::Map<String, Value>,
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build with `cargo build --release --bins`",
        path.display()
    );
    Ok(path)
}

fn machine() -> Value {
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let postgres = tool("postgres")
        .ok()
        .and_then(|p| Command::new(p).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (memory as f64 / 1048576.0 * 10.0).round() / 10.0,
        "cpu": cpu,
        "postgres": postgres,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

/// Runs this binary as a load generator and parses the line it prints last.
fn load<T: serde::de::DeserializeOwned>(args: &[String]) -> anyhow::Result<T> {
    let output = Command::new(std::env::current_exe()?)
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "load generator {:?} failed",
        args.first()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(serde_json::from_str(
        stdout.lines().last().unwrap_or("null"),
    )?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let scenarios: Vec<String> =
        if cli.scenarios.is_empty() || cli.scenarios.iter().any(|s| s == "all") {
            ALL.iter().map(|s| s.to_string()).collect()
        } else {
            cli.scenarios.clone()
        };
    for scenario in &scenarios {
        anyhow::ensure!(
            ALL.contains(&scenario.as_str()),
            "unknown scenario {scenario}; pick from {ALL:?}"
        );
    }
    let machine = machine();
    println!("hookrelay benchmarks on {machine}");
    let server = match &cli.server {
        Some(path) => path.clone(),
        None => sibling("hookrelay")?,
    };
    let mut bench = Bench::start(cli.quick, &server).await?;
    let mut outcome = Ok(());
    for scenario in &scenarios {
        println!("== {scenario}");
        // Each scenario starts from a settled database, not in the middle of the
        // previous one's checkpoint and autovacuum.
        if let Err(error) = bench.settle().await {
            outcome = Err(error);
            break;
        }
        outcome = match scenario.as_str() {
            "ingest" => bench.ingest().await,
            "latency" => bench.latency().await,
            "fanout" => bench.fanout().await,
            "catchup" => bench.catchup().await,
            "agent" => bench.agent().await,
            "envoy" => bench.envoy().await,
            "refs" => bench.refs(),
            "ha" => bench.ha().await,
            "exchange" => bench.exchange().await,
            _ => unreachable!(),
        }
        .with_context(|| format!("scenario {scenario}"));
        if outcome.is_err() {
            break;
        }
    }
    // Our sessions end before PostgreSQL's smart shutdown waits on them.
    bench.pool.close().await;
    outcome?;
    println!();
    println!(
        "{:<10} {:<42} {:>14}  {:<30}",
        "scenario", "measure", "value", "target"
    );
    for (scenario, measure, value, target) in &bench.rows {
        println!("{scenario:<10} {measure:<42} {value:>14}  {target:<30}");
    }
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let report = json!({ "machine": machine, "quick": cli.quick, "results": bench.results });
    std::fs::write(&cli.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwrote {}", cli.out.display());
    Ok(())
}

impl Bench {
    async fn start(quick: bool, server_binary: &std::path::Path) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("hookrelay-bench-{}", std::process::id()));
        let cluster_dir = dir.join("postgres");
        let cluster = tokio::task::spawn_blocking(move || {
            EmbeddedPostgres::start(&EmbeddedOptions {
                dir: cluster_dir,
                bin_dir: None,
                ephemeral: true,
                fsync: true,
                max_connections: 300,
                settings: Vec::new(),
            })
        })
        .await??;
        let options = cluster.connect_options("postgres");
        let socket = options
            .get_socket()
            .context("a socket")?
            .display()
            .to_string();
        let database_url =
            format!("postgres://postgres@localhost/postgres?host={socket}&port=5432");
        let (http_port, grpc_port) = (free_port(), free_port());
        let server = ChildGuard::spawn(
            Command::new(server_binary)
                .arg("serve")
                .env("DATABASE_URL", &database_url)
                .env("HOOKRELAY_SECRET_KEY", SECRET_KEY)
                .env("HOOKRELAY_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
                .env("HOOKRELAY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
                .env("HOOKRELAY_DATA_DIR", dir.join("data"))
                // The exchange scenario's issuer is served by the bench on loopback.
                .env("HOOKRELAY_ISSUER_ALLOW_HTTP", "true")
                .env("HOOKRELAY_ISSUER_ALLOW_NETWORKS", "127.0.0.0/8")
                .env("RUST_LOG", "warn")
                .stdout(std::fs::File::create(dir.join("server.log"))?),
        )?;
        let http = format!("http://127.0.0.1:{http_port}");
        let client = reqwest::Client::new();
        wait_ready(&client, &http, Duration::from_secs(60)).await?;
        let tenant = sign_up(&client, &http, "bench", "bench/ingest").await?;
        let body = fixture_path("push");
        anyhow::ensure!(body.exists(), "{} is missing", body.display());
        Ok(Self {
            pool: sqlx::PgPool::connect(&database_url).await?,
            dir,
            _cluster: cluster,
            socket,
            server,
            server_binary: server_binary.to_path_buf(),
            http,
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            token: tenant.token,
            client_id: tenant.client_id,
            client_secret: tenant.client_secret,
            repository: tenant.repository,
            secret: tenant.secret,
            body,
            quick,
            rows: Vec::new(),
            results: serde_json::Map::new(),
        })
    }

    fn seconds(&self, full: f64) -> f64 {
        if self.quick {
            (full / 4.0).max(2.0)
        } else {
            full
        }
    }

    /// The CPU that extracting the branch or tag adds to ingest: the
    /// extraction alone, in this process, over real payloads (compare with the
    /// relay's whole CPU per webhook in `envoy`).
    fn refs(&mut self) -> anyhow::Result<()> {
        use hookrelay::webhook::{Encoding, GitHub, WebhookScheme};
        // At least half a second of CPU each: /proc counts in 10 ms ticks.
        let min_cpu = if self.quick { 0.5 } else { 2.0 };
        let mut results = serde_json::Map::new();
        for (event_type, fixture_name) in [
            ("push", "push"),
            ("pull_request", "pull_request.opened"),
            ("workflow_run", "workflow_run.completed"),
            ("issues", "issues.opened"),
        ] {
            let body = hookrelay_testkit::fixture(fixture_name);
            let pid = std::process::id();
            let before = cpu_seconds(pid);
            let (mut rounds, mut found) = (0usize, 0usize);
            // Checked every 20,000 rounds: reading the clock spawns a process.
            while rounds % 20_000 != 0 || cpu_seconds(pid) - before < min_cpu {
                let git_ref =
                    GitHub.git_ref(std::hint::black_box(event_type), &body, Encoding::Json);
                found += usize::from(git_ref.branch.is_some() || git_ref.tag.is_some());
                rounds += 1;
            }
            let micros = (cpu_seconds(pid) - before) * 1e6 / rounds as f64;
            anyhow::ensure!(
                event_type == "issues" || found == rounds,
                "{event_type}: no ref found"
            );
            self.row(
                "refs",
                format!("CPU µs per {event_type} ({} KB)", body.len() / 1024),
                format!("{micros:.2}"),
                "",
            );
            results.insert(
                event_type.into(),
                json!({"cpu_us": micros, "bytes": body.len()}),
            );
        }
        self.results
            .insert("refs".into(), serde_json::Value::Object(results));
        Ok(())
    }

    fn row(
        &mut self,
        scenario: &str,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
    ) {
        let row = (
            scenario.to_owned(),
            measure.into(),
            value.into(),
            target.into(),
        );
        println!("   {:<42} {:>14}  {}", row.1, row.2, row.3);
        self.rows.push(row);
    }

    async fn settle(&self) -> anyhow::Result<()> {
        sqlx::query("vacuum (analyze) event")
            .execute(&self.pool)
            .await?;
        sqlx::query("checkpoint").execute(&self.pool).await?;
        Ok(())
    }

    async fn event_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from event")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn newest_id(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar::<_, Option<i64>>("select max(event_id) from event")
                .fetch_one(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    fn ingest_args(&self, url: &str, concurrency: usize, seconds: f64) -> Vec<String> {
        vec![
            "load-ingest".into(),
            format!("{url}/v1/webhooks/{}", self.repository),
            self.secret.clone(),
            self.body.display().to_string(),
            concurrency.to_string(),
            seconds.to_string(),
            format!("i{}-{concurrency}-{}", now_micros(), url.len()),
        ]
    }

    async fn ingest(&mut self) -> anyhow::Result<()> {
        let mut runs = Vec::new();
        let mut at_32 = 0.0;
        for concurrency in [1, 8, 32, 128] {
            let before = self.event_count().await?;
            let result: IngestLoad =
                load(&self.ingest_args(&self.http.clone(), concurrency, self.seconds(10.0)))?;
            let rows = self.event_count().await? - before;
            let ok = result.ok as i64;
            anyhow::ensure!(
                rows == ok,
                "ingest at {concurrency}: {ok} answers 2xx but {rows} rows were stored"
            );
            let per_second = result.per_second;
            if concurrency == 32 {
                at_32 = per_second;
            }
            self.row(
                "ingest",
                format!("c={concurrency}: webhooks/s (p50, p99 ms)"),
                format!(
                    "{per_second:.0} ({:.1}, {:.1})",
                    result.p50_ms, result.p99_ms
                ),
                format!(
                    "rows = 2xx: {rows} = {ok}; non-2xx {}",
                    result.non_2xx + result.errors
                ),
            );
            runs.push(json!({"concurrency": concurrency, "result": result, "rows": rows}));
        }
        let baseline = self.pgbench().await?;
        let pg8 = baseline[1]["tps"].as_f64().unwrap_or(f64::NAN);
        for run in &baseline {
            let clients = run["clients"].as_u64().unwrap_or(0);
            let tps = run["tps"].as_f64().unwrap_or(f64::NAN);
            self.row(
                "ingest",
                format!("pgbench, {clients} client(s): inserts/s"),
                format!("{tps:.0}"),
                "raw PostgreSQL, same row shape",
            );
        }
        self.row(
            "ingest",
            "c=32 / pgbench 8 clients",
            format!("{:.2}", at_32 / pg8),
            "≥ 1.00",
        );
        let ratios = self.ingest_ratios().await?;
        self.results.insert(
            "ingest".into(),
            json!({"runs": runs, "pgbench": baseline, "ratio_32_to_pgbench_8": at_32 / pg8, "ratios": ratios}),
        );
        Ok(())
    }

    /// Ratios measured in one run, so they compare run to run on a noisy
    /// machine: three alternations of (ingest c=32, pgbench 8 clients one row
    /// per transaction) and of (ingest c=128, pgbench 8 clients inserting 32
    /// rows per statement), medians of the ratios; and the relay's CPU per
    /// webhook over the ingest runs.
    async fn ingest_ratios(&mut self) -> anyhow::Result<Value> {
        let (single, batched) = self.pgbench_scripts().await?;
        let seconds = self.seconds(5.0);
        let (mut vs_single, mut vs_batched, mut cpu_per_webhook) =
            (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            for (concurrency, script, ratios, rows_per_tx) in [
                (32, &single, &mut vs_single, 1.0),
                (128, &batched, &mut vs_batched, 32.0),
            ] {
                let cpu = cpu_seconds(self.server.id());
                let result: IngestLoad =
                    load(&self.ingest_args(&self.http.clone(), concurrency, seconds))?;
                let cpu = cpu_seconds(self.server.id()) - cpu;
                if result.ok > 0 {
                    cpu_per_webhook.push(cpu * 1e6 / result.ok as f64);
                }
                let rows_per_second = self.pgbench_run(script, 8, seconds as u64)? * rows_per_tx;
                ratios.push(result.per_second / rows_per_second);
            }
        }
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let (single_ratio, batched_ratio, cpu) = (
            median(&mut vs_single),
            median(&mut vs_batched),
            median(&mut cpu_per_webhook),
        );
        self.row(
            "ingest",
            "c=32 / pgbench 8 clients, median of 3 alternations",
            format!("{single_ratio:.2}"),
            "≥ 1.0 (issue 17)",
        );
        self.row(
            "ingest",
            "c=128 / PostgreSQL's 32-row batched inserts, median of 3",
            format!("{batched_ratio:.2}"),
            "≥ 0.5 (issue 17)",
        );
        self.row(
            "ingest",
            "relay CPU per webhook (µs), median of the runs above",
            format!("{cpu:.0}"),
            "≤ 50 (issue 17)",
        );
        Ok(json!({
            "c32_vs_pgbench8": vs_single,
            "c128_vs_batched32": vs_batched,
            "relay_cpu_us_per_webhook": cpu_per_webhook,
        }))
    }

    /// The pgbench scripts: one row per transaction (as one unbatched webhook
    /// would be), and 32 rows per statement (PostgreSQL's own batched insert
    /// rate for the same rows: the physical reference for ingest).
    async fn pgbench_scripts(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        sqlx::query("create table if not exists bench_event (like event including defaults including indexes including compression)").execute(&self.pool).await?;
        let body = hex::encode(std::fs::read(&self.body)?);
        let row = |id: &str| {
            format!(
                "gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'github', 'push', {id}, now(), \
                 '[[\"content-type\",\"application/json\"],[\"x-github-event\",\"push\"],[\"x-github-delivery\",\"d\"]]', '\\x{body}', \
                 pg_current_xact_id()::text::bigint"
            )
        };
        let columns = "insert into bench_event (tenant_id, repository_id, provider, event_type, delivery_id, received_at, headers, body, txid)";
        let single = self.dir.join("pgbench.sql");
        std::fs::write(
            &single,
            format!("{columns} values ({});\n", row("gen_random_uuid()::text")),
        )?;
        let batched = self.dir.join("pgbench-batch32.sql");
        std::fs::write(
            &batched,
            format!(
                "{columns} select {} from generate_series(1, 32) as n;\n",
                row("gen_random_uuid()::text || n")
            ),
        )?;
        Ok((single, batched))
    }

    /// pgbench with `script` for `seconds`: transactions per second.
    fn pgbench_run(
        &self,
        script: &std::path::Path,
        clients: u32,
        seconds: u64,
    ) -> anyhow::Result<f64> {
        let output = Command::new(tool("pgbench")?)
            .args([
                "-n",
                "-M",
                "prepared",
                "-h",
                &self.socket,
                "-p",
                "5432",
                "-U",
                "postgres",
                "-f",
            ])
            .arg(script)
            .args([
                "-c",
                &clients.to_string(),
                "-j",
                &clients.to_string(),
                "-T",
                &seconds.to_string(),
                "postgres",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find(|l| l.starts_with("tps"))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .with_context(|| {
                format!(
                    "pgbench printed no tps: {text}{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
    }

    async fn pgbench(&self) -> anyhow::Result<Vec<Value>> {
        let (single, _) = self.pgbench_scripts().await?;
        let mut runs = Vec::new();
        for clients in [1, 8] {
            let tps = self.pgbench_run(&single, clients, self.seconds(10.0) as u64)?;
            runs.push(json!({"clients": clients, "tps": tps}));
        }
        Ok(runs)
    }

    fn latency_args(
        &self,
        url: &str,
        grpc: &str,
        rate: f64,
        seconds: f64,
        after: i64,
    ) -> Vec<String> {
        vec![
            "load-latency".into(),
            format!("{url}/v1/webhooks/{}", self.repository),
            grpc.to_owned(),
            self.token.clone(),
            self.secret.clone(),
            self.body.display().to_string(),
            rate.to_string(),
            seconds.to_string(),
            after.to_string(),
            format!("l{}-{rate}", now_micros()),
        ]
    }

    async fn latency(&mut self) -> anyhow::Result<()> {
        let mut runs = Vec::new();
        for rate in [100.0, 1000.0, 0.0] {
            let after = self.newest_id().await?;
            let result: LatencyLoad = load(&self.latency_args(
                &self.http.clone(),
                &self.grpc.clone(),
                rate,
                self.seconds(10.0),
                after,
            ))?;
            let label = if rate > 0.0 {
                format!("{rate:.0}/s")
            } else {
                format!("max ({:.0}/s)", result.per_second)
            };
            let target = if rate == 1000.0 { "p99 ≤ 10 ms" } else { "" };
            self.latency_row("latency", &label, target, &result);
            runs.push(json!({"rate": rate, "result": result}));
        }
        self.results.insert("latency".into(), json!(runs));
        Ok(())
    }

    /// One latency run's row: POST → stream percentiles, and POST → 2xx.
    fn latency_row(&mut self, scenario: &str, label: &str, target: &str, result: &LatencyLoad) {
        self.row(
            scenario,
            format!("{label}: POST→stream p50/p99/max ms"),
            format!(
                "{:.1}/{:.1}/{:.0}",
                result.p50_ms, result.p99_ms, result.max_ms
            ),
            format!(
                "{target} (got {}/{}; POST→2xx p50/p99 {:.1}/{:.1})",
                result.received, result.posted, result.commit_p50_ms, result.commit_p99_ms
            ),
        );
    }

    async fn fanout(&mut self) -> anyhow::Result<()> {
        let mut runs = Vec::new();
        let counts: &[usize] = if self.quick { &[1000] } else { &[1000, 10000] };
        for &streams in counts {
            let pid = self.server.id();
            let before = hookrelay_testkit::rss_kib(pid).0;
            let after = self.newest_id().await?;
            let mut child = Command::new(std::env::current_exe()?)
                .args([
                    "load-fanout",
                    &self.grpc,
                    &self.token,
                    &streams.to_string(),
                    &after.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()?;
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
                child.stdout.take().context("stdout")?,
            ));
            let ready = lines.next().transpose()?;
            anyhow::ensure!(
                ready.as_deref() == Some("ready"),
                "the fan-out client failed to open its streams"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            let open = hookrelay_testkit::rss_kib(pid).0;
            let sent_at = now_micros();
            let status = post(
                &reqwest::Client::new(),
                &format!("{}/v1/webhooks/{}", self.http, self.repository),
                &self.secret,
                &std::fs::read(&self.body)?,
                &format!("fan-{streams}-{sent_at}"),
            )
            .await?;
            anyhow::ensure!(status == 202, "the fan-out event was refused: {status}");
            let result: FanoutLoad =
                serde_json::from_str(&lines.last().transpose()?.unwrap_or_default())?;
            child.wait()?;
            let reach_ms =
                result.last_receipt_us.unwrap_or(0).saturating_sub(sent_at) as f64 / 1000.0;
            let per_stream_kib = open.saturating_sub(before) as f64 / streams as f64;
            self.row(
                "fanout",
                format!("{streams} streams: RSS MiB, KiB/stream"),
                format!("{:.0}, {per_stream_kib:.1}", open as f64 / 1024.0),
                if streams == 10000 { "≤ 300 MB" } else { "" },
            );
            self.row(
                "fanout",
                format!("{streams} streams: one event reaches all, ms"),
                format!("{reach_ms:.0} ({}/{streams})", result.received),
                if streams == 10000 { "≤ 1000 ms" } else { "" },
            );
            runs.push(json!({"streams": streams, "rss_before_kib": before, "rss_open_kib": open, "reach_ms": reach_ms, "result": result}));
        }
        self.results.insert("fanout".into(), json!(runs));
        Ok(())
    }

    /// A second repository filled with `count` events of 2 KiB, straight into the table.
    async fn backlog(&self, name: &str, count: i64) -> anyhow::Result<String> {
        let response: Value = reqwest::Client::new()
            .post(format!("{}/v1/repositories", self.http))
            .bearer_auth(&self.token)
            .json(&json!({"provider": "github", "name": name}))
            .send()
            .await?
            .json()
            .await?;
        let id = response["id"].as_str().context("a repository")?.to_owned();
        append_backlog(&self.pool, std::slice::from_ref(&id), count).await?;
        Ok(id)
    }

    async fn catchup(&mut self) -> anyhow::Result<()> {
        let count = if self.quick { 20_000 } else { 100_000 };
        let repository = self.backlog("bench/catchup", count).await?;
        let result: CatchupLoad = load(&[
            "load-catchup".into(),
            self.grpc.clone(),
            self.token.clone(),
            repository,
            count.to_string(),
        ])?;
        self.row(
            "catchup",
            format!("{count} events of 2 KiB behind: events/s"),
            format!("{:.0}", result.per_second),
            "≥ 50,000",
        );
        self.results
            .insert("catchup".into(), serde_json::to_value(&result)?);
        Ok(())
    }

    async fn agent(&mut self) -> anyhow::Result<()> {
        let count: usize = if self.quick { 5_000 } else { 20_000 };
        let one = self.agent_run(1, count).await?;
        let eight = self.agent_run(8, count).await?;
        self.results.insert(
            "agent".into(),
            json!({"events": count, "one_repository_per_second": one, "eight_repositories_per_second": eight}),
        );
        Ok(())
    }

    /// `count` backlog events, interleaved over `repositories` repositories
    /// (as webhooks of several repositories arrive), delivered by the slim
    /// agent with acks to a target that answers 200 at once: events/s.
    async fn agent_run(&mut self, repositories: usize, count: usize) -> anyhow::Result<f64> {
        let mut ids = Vec::new();
        for r in 0..repositories {
            ids.push(
                self.backlog(&format!("bench/agent-{repositories}-{r}"), 0)
                    .await?,
            );
        }
        append_backlog(&self.pool, &ids, count as i64).await?;
        let received = Arc::new(AtomicU64::new(0));
        let target = axum::Router::new().route(
            "/",
            axum::routing::post({
                let received = received.clone();
                move || {
                    received.fetch_add(1, Ordering::Relaxed);
                    async { axum::http::StatusCode::OK }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let target_url = format!("http://{}/", listener.local_addr()?);
        let server = tokio::spawn(async move { axum::serve(listener, target).await });
        let started = Instant::now();
        let token_url = format!("{}/oauth/token", self.http);
        let consumer = format!("bench-agent-{repositories}");
        let mut args = vec![
            "--server",
            &self.grpc,
            "--token-url",
            &token_url,
            "--client-id",
            &self.client_id,
            "--consumer",
            &consumer,
            "--target",
            &target_url,
        ];
        for id in &ids {
            args.extend(["--repository", id.as_str()]);
        }
        // The slim agent binary users install, not `hookrelay relay`.
        let mut agent = Command::new(sibling("hookrelay-agent")?)
            .args(&args)
            .env("HOOKRELAY_CLIENT_SECRET", &self.client_secret)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(
                self.dir.join(format!("agent-{repositories}.log")),
            )?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while received.load(Ordering::Relaxed) < count as u64 {
            if Instant::now() > deadline {
                let _ = agent.kill();
                bail!(
                    "the agent delivered {} of {count}",
                    received.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(agent.id().to_string())
            .status();
        agent.wait()?;
        server.abort();
        let per_second = count as f64 / elapsed;
        self.row(
            "agent",
            format!(
                "{count} events, {repositories} repositor{}: events/s",
                if repositories == 1 { "y" } else { "ies" }
            ),
            format!("{per_second:.0}"),
            if repositories == 1 { "" } else { "≥ 5,000" },
        );
        Ok(per_second)
    }

    async fn envoy(&mut self) -> anyhow::Result<()> {
        let envoy = tool("envoy")?;
        let (port, admin) = (free_port(), free_port());
        let (http_up, grpc_up) = (
            self.http.trim_start_matches("http://").to_owned(),
            self.grpc.trim_start_matches("http://").to_owned(),
        );
        let rendered = Command::new(repo_root().join("envoy/render"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--http",
                &http_up,
                "--grpc",
                &grpc_up,
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .output()?;
        anyhow::ensure!(rendered.status.success(), "envoy/render failed");
        let config = self.dir.join("envoy.json");
        std::fs::write(&config, rendered.stdout)?;
        let mut proxy = Command::new(envoy)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "error",
                "-c",
            ])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()?;
        let front = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        wait_ready(&client, &front, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seconds = self.seconds(10.0);
        let relay_cpu = cpu_seconds(self.server.id());
        let direct = load(&self.ingest_args(&self.http.clone(), 32, seconds))?;
        let relay_cpu = cpu_seconds(self.server.id()) - relay_cpu;
        self.settle().await?;
        let envoy_cpu = cpu_seconds(proxy.id());
        let through = load(&self.ingest_args(&front, 32, seconds))?;
        let envoy_cpu = cpu_seconds(proxy.id()) - envoy_cpu;
        // CPU per webhook: what the relay itself spends, and what Envoy adds.
        let per_webhook = |cpu: f64, run: &IngestLoad| cpu * 1e6 / (run.ok as f64).max(1.0);
        let (relay_us, envoy_us) = (
            per_webhook(relay_cpu, &direct),
            per_webhook(envoy_cpu, &through),
        );
        let (d, t) = (direct.per_second, through.per_second);
        self.row(
            "envoy",
            "ingest c=32 webhooks/s: direct → Envoy",
            format!("{d:.0} → {t:.0}"),
            format!("cost {:.0}% (≤ 15%)", (1.0 - t / d) * 100.0),
        );
        self.row(
            "envoy",
            "CPU µs per webhook: relay; Envoy adds",
            format!("{relay_us:.0}; {envoy_us:.0}"),
            "",
        );
        self.settle().await?;
        let after = self.newest_id().await?;
        let direct_latency: LatencyLoad = load(&self.latency_args(
            &self.http.clone(),
            &self.grpc.clone(),
            1000.0,
            seconds,
            after,
        ))?;
        self.settle().await?;
        let after = self.newest_id().await?;
        let through_latency: LatencyLoad =
            load(&self.latency_args(&front, &front, 1000.0, seconds, after))?;
        self.row(
            "envoy",
            "1000/s p99 ms: direct → Envoy",
            format!(
                "{:.1} → {:.1}",
                direct_latency.p99_ms, through_latency.p99_ms
            ),
            "",
        );
        // Connection reuse, to tell proxying cost from connection churn.
        let stats = client
            .get(format!("http://127.0.0.1:{admin}/stats?filter=downstream_cx_total|downstream_rq_total|upstream_cx_total|upstream_rq_total"))
            .send()
            .await?
            .text()
            .await?;
        println!("{stats}");
        let _ = proxy.kill();
        let _ = proxy.wait();
        self.results.insert("envoy".into(), json!({"ingest_direct": direct, "ingest_envoy": through, "relay_cpu_us_per_webhook": relay_us, "envoy_cpu_us_per_webhook": envoy_us, "latency_direct": direct_latency, "latency_envoy": through_latency}));
        Ok(())
    }
}

/// Appends `count` pushes of 2 KiB, interleaved over `repositories`, through
/// the database's `append_events` (the servers' own way in), and wakes the
/// streams as a server does after its commit.
async fn append_backlog(
    pool: &sqlx::PgPool,
    repositories: &[String],
    count: i64,
) -> anyhow::Result<()> {
    // In chunks: one transaction holds the repositories' locks while it writes.
    const CHUNK: i64 = 10_000;
    for start in (0..count).step_by(CHUNK as usize) {
        sqlx::query(
            "with input as ( \
                 select r.tenant_id, r.repository_id, g from generate_series($2::bigint, $3::bigint) g \
                 join repository r on r.repository_id = ($1::uuid[])[1 + g % cardinality($1::uuid[])] \
             ), batch as ( \
                 select array_agg(tenant_id order by g) as t, array_agg(repository_id order by g) as r, \
                        array_agg('github'::text) as p, array_agg('push'::text) as e, \
                        array_agg('backlog-' || g order by g) as d, array_agg(now()) as at, \
                        array_agg('[[\"content-type\",\"application/json\"],[\"x-github-event\",\"push\"]]'::jsonb) as h, \
                        array_agg(convert_to(rpad('{\"n\":' || g || ',\"pad\":\"', 2047, 'x') || '}', 'UTF8') order by g) as b, \
                        array_agg(null::text) as n \
                 from input \
             ) \
             select count(*) from batch, append_events(t, r, p, e, d, at, h, b, n, n, n)",
        )
        .bind(repositories)
        .bind(start + 1)
        .bind((start + CHUNK).min(count))
        .execute(pool)
        .await?;
    }
    sqlx::query("select pg_notify('hookrelay_events', 'bench')")
        .execute(pool)
        .await?;
    Ok(())
}

/// A signed-up tenant with one GitHub repository.
struct Tenant {
    client_id: String,
    client_secret: String,
    token: String,
    repository: String,
    secret: String,
}

/// Signs up tenant `name` and registers its repository `repository`.
async fn sign_up(
    client: &reqwest::Client,
    http: &str,
    name: &str,
    repository: &str,
) -> anyhow::Result<Tenant> {
    let signed_up: Value = client
        .post(format!("{http}/v1/tenants"))
        .json(&json!({ "name": name }))
        .send()
        .await?
        .json()
        .await?;
    let field = |value: &Value, name: &str| -> anyhow::Result<String> {
        Ok(value[name]
            .as_str()
            .with_context(|| format!("no {name} in {value}"))?
            .to_owned())
    };
    let (client_id, client_secret) = (
        field(&signed_up, "client_id")?,
        field(&signed_up, "client_secret")?,
    );
    let token: Value = client
        .post(format!("{http}/oauth/token"))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json()
        .await?;
    let token = field(&token, "access_token")?;
    let registered: Value = client
        .post(format!("{http}/v1/repositories"))
        .bearer_auth(&token)
        .json(&json!({"provider": "github", "name": repository}))
        .send()
        .await?
        .json()
        .await?;
    Ok(Tenant {
        client_id,
        client_secret,
        token,
        repository: field(&registered, "id")?,
        secret: field(&registered, "webhook_secret")?,
    })
}
