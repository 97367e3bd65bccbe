//! The agent: delivering a backlog to a local target, across repositories.

use super::*;

impl Bench {
    pub(super) async fn agent(&mut self) -> anyhow::Result<()> {
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
    pub(super) async fn agent_run(
        &mut self,
        repositories: usize,
        count: usize,
    ) -> anyhow::Result<f64> {
        let mut ids = Vec::new();
        for r in 0..repositories {
            ids.push(
                self.backlog(&format!("bench/agent-{repositories}-{r}"), 0)
                    .await?,
            );
        }
        catchup::append_backlog(&self.pool, &ids, count as i64).await?;
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
}
