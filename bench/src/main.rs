//! The benchmark runner (not a test): `scripts/bench [SCENARIO...] [--quick]`.
//!
//! It starts a fresh PostgreSQL (fsync on) and the release server, drives each
//! scenario with load generators in separate processes (this binary, re-executed
//! with a `load-*` subcommand), prints a table with the machine's details and
//! writes JSON. Scenarios: ingest, latency, fanout, catchup, agent, envoy, refs,
//! ha, exchange, neighbours, smee.
#![forbid(unsafe_code)]

mod agent;
mod catchup;
mod delay_proxy;
mod envoy;
mod exchange;
mod fanout;
mod ha;
mod ingest;
mod latency;
mod messages;
mod neighbours;
mod smee;

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
const ALL: [&str; 11] = [
    "ingest",
    "latency",
    "fanout",
    "catchup",
    "agent",
    "envoy",
    "refs",
    "ha",
    "exchange",
    "neighbours",
    "smee",
];

#[derive(Parser)]
#[command(
    name = "bench",
    about = "hookrelay benchmarks: prints a table and writes JSON"
)]
struct Cli {
    #[command(subcommand)]
    load: Option<Generator>,
    /// Scenarios to run (default: all): ingest, latency, fanout, catchup, agent, envoy, refs, ha,
    /// exchange, neighbours, smee (needs SMEE_DIR).
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
    /// smee.io's latency: webhooks to a channel at a fixed rate while its
    /// server-sent events receive them.
    #[command(hide = true, name = "load-latency-sse")]
    SseLatency {
        url: String,
        body: PathBuf,
        rate: f64,
        seconds: f64,
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

/// Opens a stream of every repository's events after `after` for `consumer`.
async fn stream_all(
    client: &mut EventServiceClient<tonic::transport::Channel>,
    token: &str,
    consumer: String,
    after: i64,
) -> anyhow::Result<tonic::Streaming<hookrelay::grpc::proto::Event>> {
    let request = StreamEventsRequest {
        repository_ids: vec![],
        consumer,
        after_event_id: Some(after),
        ..Default::default()
    };
    Ok(client
        .stream_events(bearer(request, token))
        .await?
        .into_inner())
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
        } => ingest::load_ingest(
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
        } => {
            let subscriber =
                latency::Subscriber::stream(&grpc, &token, format!("{prefix}-latency"), after)
                    .await?;
            let body = std::fs::read(body)?;
            latency::load_latency(subscriber, &url, &secret, &body, rate, seconds, &prefix)
                .await
                .map(|r| serde_json::to_string(&r))??
        }
        Generator::SseLatency {
            url,
            body,
            rate,
            seconds,
            prefix,
        } => {
            let subscriber = latency::Subscriber::sse(&url).await?;
            let body = std::fs::read(body)?;
            latency::load_latency(subscriber, &url, "smee", &body, rate, seconds, &prefix)
                .await
                .map(|r| serde_json::to_string(&r))??
        }
        Generator::Fanout {
            grpc,
            token,
            streams,
            after,
        } => serde_json::to_string(&fanout::load_fanout(&grpc, &token, streams, after).await?)?,
        Generator::Catchup {
            grpc,
            token,
            repository,
            expect,
        } => serde_json::to_string(
            &catchup::load_catchup(&grpc, &token, &repository, expect).await?,
        )?,
    };
    println!("{result}");
    Ok(())
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
            "neighbours" => bench.neighbours().await,
            "smee" => bench.smee().await,
            _ => unreachable!(),
        }
        .with_context(|| format!("scenario {scenario}"));
        if outcome.is_err() {
            break;
        }
    }
    // Our sessions end before PostgreSQL's smart shutdown waits on them.
    bench.pool.close().await;
    if outcome.is_err() {
        eprintln!(
            "the server's and PostgreSQL's logs are kept in {}",
            bench.dir.display()
        );
    }
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
    // After a successful run the scratch directory (its database, hundreds of
    // MB) goes, once the server and PostgreSQL have stopped.
    let dir = bench.dir.clone();
    drop(bench);
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        eprintln!("cannot remove {}: {error}", dir.display());
    }
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
                .env("HOOKRELAY_OUTBOUND_ALLOW_HTTP", "true")
                .env("HOOKRELAY_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8")
                // The fan-out scenario opens 10,000 streams (and consumers) of
                // one tenant at once: it measures delivery to them, not the
                // per-tenant set-up limit (which would spread their opening
                // over minutes) nor the default quotas (1,000 of each).
                .env("HOOKRELAY_STREAM_SETUP_RATE_LIMIT", "off")
                .env("HOOKRELAY_QUOTA_OPEN_STREAMS", "100000")
                .env("HOOKRELAY_QUOTA_CONSUMERS", "100000")
                // The ingest scenarios measure one tenant's webhooks per second
                // far past the default quota (200/s, bursts of 2,000).
                .env("HOOKRELAY_QUOTA_WEBHOOKS_PER_SECOND", "10000000")
                .env("HOOKRELAY_QUOTA_WEBHOOK_BURST", "10000000")
                // As production runs: the default log level, the access log
                // on, JSON lines to a file.
                .env_remove("RUST_LOG")
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
