//! Through Envoy: the same webhooks and streams on the one port, against direct.

use super::*;

impl Bench {
    pub(super) async fn envoy(&mut self) -> anyhow::Result<()> {
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
