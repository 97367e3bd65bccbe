//! The Cloud SQL HA-like scenario: a primary whose every commit waits for a
//! synchronous standby reached through a link that delays each direction by
//! 1 ms (`delay_proxy`: the zones' network, without tc netem), and four relay
//! replicas on it, each reaching the primary through a counting proxy so that
//! the bytes each one reads from the database are known.
//!
//! It reports ingest at c=32 and c=128 spread over the four replicas, POST →
//! stream latency at 1,000 webhooks/s with one replica and with four (webhooks
//! posted to the replicas in turn, the stream on the first), and the database
//! bytes each replica reads per ingested event while another tenant holds an
//! idle stream on every replica.

use std::path::Path;

use tokio::net::TcpListener;

use super::*;
use delay_proxy::Upstream;

const REPLICAS: usize = 4;
/// The zones' network, each way.
const LINK_DELAY: Duration = Duration::from_millis(1);

struct Replica {
    _server: ChildGuard,
    http: String,
    grpc: String,
    /// Bytes the database has sent this replica.
    received: Arc<AtomicU64>,
}

impl Bench {
    pub(crate) async fn ha(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.join("ha");
        let (primary_dir, standby_dir) = (dir.join("primary"), dir.join("standby"));
        let primary = tokio::task::spawn_blocking({
            let standby_dir = standby_dir.clone();
            move || -> anyhow::Result<EmbeddedPostgres> {
                let primary = EmbeddedPostgres::start(&EmbeddedOptions {
                    dir: primary_dir,
                    bin_dir: None,
                    ephemeral: true,
                    fsync: true,
                    max_connections: 300,
                    settings: Vec::new(),
                })?;
                primary.base_backup(&standby_dir)?;
                Ok(primary)
            }
        })
        .await??;
        let primary_options = primary.connect_options("postgres");
        let socket = primary_options
            .get_socket()
            .context("the primary's socket")?
            .join(".s.PGSQL.5432");
        let link = TcpListener::bind("127.0.0.1:0").await?;
        let link_port = link.local_addr()?.port();
        tokio::spawn(delay_proxy::serve(
            link,
            Upstream::Unix(socket.clone()),
            LINK_DELAY,
            None,
        ));
        let standby = tokio::task::spawn_blocking(move || {
            EmbeddedPostgres::start(&EmbeddedOptions {
                dir: standby_dir,
                bin_dir: None,
                ephemeral: true,
                fsync: true,
                max_connections: 300,
                settings: vec![format!(
                    "primary_conninfo=host=127.0.0.1 port={link_port} user=postgres application_name=standby"
                )],
            })
        })
        .await??;
        let pool = sqlx::PgPool::connect_with(primary_options).await?;
        synchronous_standby(&pool).await?;

        let mut replicas = Vec::new();
        for n in 0..REPLICAS {
            replicas.push(self.replica(&dir, &socket, n).await?);
        }
        let client = reqwest::Client::new();
        let bench = sign_up(&client, &replicas[0].http, "bench", "bench/ha").await?;
        let other = sign_up(&client, &replicas[0].http, "other", "other/ha").await?;

        // Ingest over the four replicas, a quarter of the connections each.
        let mut ingest = Vec::new();
        for concurrency in [32, 128] {
            let seconds = self.seconds(10.0);
            let loads: Vec<Vec<String>> = replicas
                .iter()
                .map(|replica| {
                    vec![
                        "load-ingest".into(),
                        format!("{}/v1/webhooks/{}", replica.http, bench.repository),
                        bench.secret.clone(),
                        self.body.display().to_string(),
                        (concurrency / REPLICAS).to_string(),
                        seconds.to_string(),
                        format!("ha{}-{concurrency}-{}", now_micros(), replica.http.len()),
                    ]
                })
                .collect();
            let results: Vec<IngestLoad> = load_together(loads).await?;
            let per_second: f64 = results.iter().map(|r| r.per_second).sum();
            let failed: u64 = results.iter().map(|r| r.non_2xx + r.errors).sum();
            let p99 = results.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
            self.row(
                "ha",
                format!("c={concurrency} over 4 replicas: webhooks/s (p99 ms)"),
                format!("{per_second:.0} ({p99:.1})"),
                format!("non-2xx {failed}"),
            );
            ingest.push(json!({"concurrency": concurrency, "per_second": per_second, "p99_ms": p99, "failed": failed, "runs": results}));
        }

        // Another tenant's idle streams on every replica: the tails must not
        // read the bench tenant's events for them.
        let mut idle = Vec::new();
        for replica in &replicas {
            let mut client = EventServiceClient::connect(replica.grpc.clone()).await?;
            let request = StreamEventsRequest {
                consumer: "idle".into(),
                ..Default::default()
            };
            idle.push(
                client
                    .stream_events(bearer(request, &other.token))
                    .await?
                    .into_inner(),
            );
        }

        let mut latency = serde_json::Map::new();
        let mut one_p99 = f64::NAN;
        for (label, posting) in [("1 replica", 1), ("4 replicas", REPLICAS)] {
            let urls: Vec<String> = replicas[..posting]
                .iter()
                .map(|r| format!("{}/v1/webhooks/{}", r.http, bench.repository))
                .collect();
            let after: i64 = sqlx::query_scalar("select coalesce(max(event_id), 0) from event")
                .fetch_one(&pool)
                .await?;
            let before: Vec<u64> = replicas
                .iter()
                .map(|r| r.received.load(Ordering::Relaxed))
                .collect();
            let result: LatencyLoad = load_together(vec![vec![
                "load-latency".into(),
                urls.join(","),
                replicas[0].grpc.clone(),
                bench.token.clone(),
                bench.secret.clone(),
                self.body.display().to_string(),
                "1000".into(),
                self.seconds(10.0).to_string(),
                after.to_string(),
                format!("hal{}-{posting}", now_micros()),
            ]])
            .await?
            .remove(0);
            let events = result.posted.max(1) as f64;
            let per_event: Vec<f64> = replicas
                .iter()
                .zip(&before)
                .map(|(r, b)| (r.received.load(Ordering::Relaxed) - b) as f64 / events)
                .collect();
            let target = if posting == 1 {
                one_p99 = result.p99_ms;
                "p99 ≤ 10 ms".to_owned()
            } else {
                format!(
                    "p99 ≤ 15 ms and ≤ 1.5× one replica: {:.2}×",
                    result.p99_ms / one_p99
                )
            };
            self.latency_row("ha", &format!("1,000/s, {label}"), &target, &result);
            self.row(
                "ha",
                format!("{label}: DB bytes read per event, each replica"),
                per_event
                    .iter()
                    .map(|b| format!("{b:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                format!(
                    "the stream is on the first; body {} B",
                    std::fs::metadata(&self.body)?.len()
                ),
            );
            latency.insert(
                label.into(),
                json!({"result": result, "db_bytes_per_event": per_event}),
            );
        }
        drop(idle);
        self.results.insert(
            "ha".into(),
            json!({"replicas": REPLICAS, "link_delay_ms": LINK_DELAY.as_secs_f64() * 1000.0, "ingest": ingest, "latency": latency}),
        );
        pool.close().await;
        drop(replicas);
        drop(standby);
        drop(primary);
        Ok(())
    }

    /// Starts replica `n` on the primary behind a counting proxy; waits until
    /// it is ready (the first applies the migrations).
    async fn replica(&self, dir: &Path, socket: &Path, n: usize) -> anyhow::Result<Replica> {
        let counting = TcpListener::bind("127.0.0.1:0").await?;
        let database_port = counting.local_addr()?.port();
        let received = Arc::new(AtomicU64::new(0));
        tokio::spawn(delay_proxy::serve(
            counting,
            Upstream::Unix(socket.to_path_buf()),
            Duration::ZERO,
            Some(received.clone()),
        ));
        let (http_port, grpc_port) = (free_port(), free_port());
        let server = ChildGuard::spawn(
            Command::new(&self.server_binary)
                .arg("serve")
                .env(
                    "DATABASE_URL",
                    format!(
                        "postgres://postgres@127.0.0.1:{database_port}/postgres?sslmode=disable"
                    ),
                )
                .env("HOOKRELAY_SECRET_KEY", SECRET_KEY)
                .env("HOOKRELAY_PUBLIC_URL", "http://relay.bench.invalid")
                // One tenant's webhooks far past the default quota (200/s).
                .env("HOOKRELAY_QUOTA_WEBHOOKS_PER_SECOND", "10000000")
                .env("HOOKRELAY_QUOTA_WEBHOOK_BURST", "10000000")
                .env("HOOKRELAY_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
                .env("HOOKRELAY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
                .env("HOOKRELAY_DATA_DIR", dir.join(format!("data-{n}")))
                .env("RUST_LOG", "warn")
                .stdout(std::fs::File::create(dir.join(format!("server-{n}.log")))?),
        )?;
        let http = format!("http://127.0.0.1:{http_port}");
        wait_ready(&reqwest::Client::new(), &http, Duration::from_secs(60)).await?;
        Ok(Replica {
            _server: server,
            http,
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            received,
        })
    }
}

/// Makes every commit wait for the standby, once it streams.
async fn synchronous_standby(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query("alter system set synchronous_standby_names = 'standby'")
        .execute(pool)
        .await?;
    sqlx::query("select pg_reload_conf()").execute(pool).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: Option<String> = sqlx::query_scalar(
            "select sync_state from pg_stat_replication where application_name = 'standby'",
        )
        .fetch_optional(pool)
        .await?;
        if state.as_deref() == Some("sync") {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the standby is not synchronous: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs load generators at once, each as its own process, off the runtime's
/// threads (the proxies run on them meanwhile).
async fn load_together<T: serde::de::DeserializeOwned + Send + 'static>(
    loads: Vec<Vec<String>>,
) -> anyhow::Result<Vec<T>> {
    let handles: Vec<_> = loads
        .into_iter()
        .map(|args| tokio::task::spawn_blocking(move || load::<T>(&args)))
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await??);
    }
    Ok(results)
}
