//! Noisy neighbours (issue 26): tenant B (the bench tenant) sends a steady
//! 200 webhooks/s with one open stream while tenant A runs, one after
//! another, each attack: bodies held open on its own repository from 11
//! addresses, 2,000 event streams, 1,000 console watches. Reported: B's share
//! of 2xx and its POST → stream p50/p99 as ratios to B alone, in the same run.
//!
//! The bench server's stream set-up limit and stream quotas are raised for the
//! fan-out scenario, so here all 2,000 of A's streams open: harder than a
//! default server, which would refuse most of them.

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::*;

const RATE: f64 = 200.0;

#[derive(Clone, Copy)]
enum Attack {
    /// 11 connections from 11 loopback addresses (127.0.0.2–12) to A's
    /// repository: 10 announce 25 MiB, one 6 MiB; each sends its headers and
    /// one byte, and is opened again as soon as the server closes it.
    Bodies,
    /// 2,000 StreamEvents of A over 10 connections, held open.
    Streams,
    /// 1,000 WatchConsumers of A; the refused ones try again every second.
    Watches,
}

impl Attack {
    async fn run(self, bench: Target, stop: CancellationToken) {
        match self {
            Attack::Bodies => {
                let mut holders = tokio::task::JoinSet::new();
                for i in 0..11u8 {
                    let (bench, stop) = (bench.clone(), stop.clone());
                    holders.spawn(async move {
                        let length = if i == 10 { 6 << 20 } else { 25 << 20 };
                        while !stop.is_cancelled() {
                            let _ = hold_body(&bench, i, length, &stop).await;
                            // Again at once, but not in a spin that takes the
                            // machine's CPU from everyone (the bench's too).
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    });
                }
                holders.join_all().await;
            }
            Attack::Streams => {
                let mut held = Vec::new();
                for connection in 0..10 {
                    let Ok(client) = EventServiceClient::connect(bench.grpc.clone()).await else {
                        continue;
                    };
                    for i in 0..200 {
                        let request = StreamEventsRequest {
                            consumer: format!("attack-{connection}-{i}"),
                            ..Default::default()
                        };
                        let mut client = client.clone();
                        if let Ok(stream) =
                            client.stream_events(bearer(request, &bench.token)).await
                        {
                            held.push(stream.into_inner());
                        }
                    }
                }
                stop.cancelled().await;
                drop(held);
            }
            Attack::Watches => {
                let mut clients = Vec::new();
                for _ in 0..5 {
                    if let Ok(client) = EventServiceClient::connect(bench.grpc.clone()).await {
                        clients.push(client);
                    }
                }
                let mut held = Vec::new();
                while !stop.is_cancelled() && !clients.is_empty() {
                    for i in held.len()..1000 {
                        let mut client = clients[i % clients.len()].clone();
                        let request = hookrelay::grpc::proto::WatchConsumersRequest::default();
                        match client.watch_consumers(bearer(request, &bench.token)).await {
                            Ok(watch) => held.push(watch.into_inner()),
                            Err(_) => break,
                        }
                    }
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

/// Where the attacker sends, and as whom.
#[derive(Clone)]
struct Target {
    host: String,
    grpc: String,
    token: String,
    repository: String,
}

/// One held body from 127.0.0.(2 + `source`), until the server closes it or
/// `stop`.
async fn hold_body(
    target: &Target,
    source: u8,
    length: usize,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 2 + source], 0)))?;
    let mut stream = socket
        .connect(target.host.parse().map_err(std::io::Error::other)?)
        .await?;
    let head = format!(
        "POST /v1/webhooks/{} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-github-event: push\r\nx-github-delivery: hold-{source}\r\n\
         x-hub-signature-256: sha256=00\r\ncontent-length: {length}\r\n\r\n{{",
        target.repository
    );
    stream.write_all(head.as_bytes()).await?;
    let mut buffer = [0u8; 1024];
    tokio::select! {
        () = stop.cancelled() => {}
        _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer) => {}
    }
    Ok(())
}

impl Bench {
    pub(super) async fn neighbours(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let attacker = sign_up(&client, &self.http, "attacker", "attacker/app").await?;
        let target = Target {
            host: self.http.trim_start_matches("http://").to_owned(),
            grpc: self.grpc.clone(),
            token: attacker.token.clone(),
            repository: attacker.repository.clone(),
        };
        let seconds = self.seconds(10.0);
        let alone = self.steady(seconds).await?;
        self.latency_row("neighbours", "B alone", "", &alone);
        let mut runs = vec![json!({"attack": "none", "result": alone})];
        for (name, attack) in [
            ("bodies held", Attack::Bodies),
            ("2,000 streams", Attack::Streams),
            ("1,000 watches", Attack::Watches),
        ] {
            let stop = CancellationToken::new();
            let running = tokio::spawn(attack.run(target.clone(), stop.clone()));
            // Let the attack take hold before B's run starts.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let under = self.steady(seconds).await;
            stop.cancel();
            let _ = running.await;
            let under = under?;
            let share = (under.posted - under.failed) as f64 / under.posted.max(1) as f64;
            self.row(
                "neighbours",
                format!("{name}: B's webhooks answered 2xx"),
                format!("{:.1}%", share * 100.0),
                "100%",
            );
            self.row(
                "neighbours",
                format!("{name}: B's p50/p99 ÷ alone"),
                format!(
                    "{:.2}/{:.2}",
                    under.p50_ms / alone.p50_ms,
                    under.p99_ms / alone.p99_ms
                ),
                "p99 ≤ 2×",
            );
            self.latency_row("neighbours", &format!("B under {name}"), "", &under);
            runs.push(json!({"attack": name, "result": under}));
        }
        self.results.insert("neighbours".into(), json!(runs));
        Ok(())
    }

    /// B's steady webhooks with its stream, for `seconds`.
    async fn steady(&self, seconds: f64) -> anyhow::Result<LatencyLoad> {
        let after = self.newest_id().await?;
        let args = self.latency_args(&self.http, &self.grpc, RATE, seconds, after);
        tokio::task::spawn_blocking(move || load::<LatencyLoad>(&args)).await?
    }
}
