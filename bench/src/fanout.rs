//! Fan-out: one event reaching many idle streams (first-receipt percentiles).

use super::*;

pub(super) async fn load_fanout(
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
            let mut stream =
                stream_all(&mut client, token, format!("fan-{chunk}-{i}"), after).await?;
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

impl Bench {
    pub(super) async fn fanout(&mut self) -> anyhow::Result<()> {
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
}
