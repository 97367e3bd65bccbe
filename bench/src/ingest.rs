//! Ingest: signed GitHub pushes at fixed concurrencies (relay CPU per webhook,
//! webhooks per second), as ratios to pgbench's rate for the same row.

use super::*;

pub(super) async fn load_ingest(
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

impl Bench {
    pub(super) fn ingest_args(&self, url: &str, concurrency: usize, seconds: f64) -> Vec<String> {
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

    pub(super) async fn ingest(&mut self) -> anyhow::Result<()> {
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
    /// webhook (utime + stime from /proc) at each concurrency. The load comes
    /// from wrk (`bench/wrk/push.lua`), as an outside measurement would make
    /// it: keep-alive HTTP/1.1, the body signed once, unique delivery ids.
    ///
    /// Beside them, the database alone: one pgbench client calling
    /// `append_events_in_order` with 16 events, as the ingest writer sends
    /// one repository's batches at 32 concurrent (one at a time, about 16
    /// each): the rate ingest would reach if HTTP, the relay and the load
    /// generator took no CPU.
    pub(super) async fn ingest_ratios(&mut self) -> anyhow::Result<Value> {
        let (single, batched) = self.pgbench_scripts().await?;
        let append = self.pgbench_append_script(16).await?;
        let seconds = self.seconds(8.0);
        let (mut vs_single, mut vs_batched, mut cpu_32, mut cpu_128) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut database_alone, mut vs_database_alone) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            for (concurrency, script, ratios, rows_per_tx, cpu_per_webhook) in [
                (32, &single, &mut vs_single, 1.0, &mut cpu_32),
                (128, &batched, &mut vs_batched, 32.0, &mut cpu_128),
            ] {
                let cpu = cpu_seconds(self.server.id());
                let (ok, per_second) = self.wrk(concurrency, seconds)?;
                let cpu = cpu_seconds(self.server.id()) - cpu;
                cpu_per_webhook.push(cpu * 1e6 / ok as f64);
                let rows_per_second = self.pgbench_run(script, 8, seconds as u64)? * rows_per_tx;
                ratios.push(per_second / rows_per_second);
                if concurrency == 32 {
                    let alone = self.pgbench_run(&append, 1, seconds as u64)? * 16.0;
                    database_alone.push(alone);
                    vs_database_alone.push(per_second / alone);
                }
            }
        }
        let median = |values: &[f64]| {
            let mut values = values.to_vec();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        self.row(
            "ingest",
            "wrk c=32 / pgbench 8 clients, median of 3 alternations",
            format!("{:.2}", median(&vs_single)),
            "≥ 1.2 (issue 33)",
        );
        self.row(
            "ingest",
            "the database alone: append_events_in_order, 16 events a call, 1 client: rows/s",
            format!("{:.0}", median(&database_alone)),
            "median of 3; no HTTP, relay or load generator",
        );
        self.row(
            "ingest",
            "wrk c=32 / the database alone, median of 3",
            format!("{:.2}", median(&vs_database_alone)),
            "what HTTP and the relay leave",
        );
        self.row(
            "ingest",
            "wrk c=128 / PostgreSQL's 32-row batched inserts, median of 3",
            format!("{:.2}", median(&vs_batched)),
            "≥ 0.5 (issue 17)",
        );
        self.row(
            "ingest",
            "relay CPU per webhook (µs), wrk c=32, median of 3",
            format!("{:.0}", median(&cpu_32)),
            "≤ 50 (issue 33)",
        );
        self.row(
            "ingest",
            "relay CPU per webhook (µs), wrk c=128, median of 3",
            format!("{:.0}", median(&cpu_128)),
            "≤ 40 (issue 33)",
        );
        Ok(json!({
            "c32_vs_pgbench8": vs_single,
            "c128_vs_batched32": vs_batched,
            "relay_cpu_us_per_webhook_c32": cpu_32,
            "relay_cpu_us_per_webhook_c128": cpu_128,
            "database_alone_rows_per_second": database_alone,
            "c32_vs_database_alone": vs_database_alone,
        }))
    }

    /// wrk at `concurrency` for `seconds` (2 threads): webhooks answered 2xx,
    /// and their rate. Any other answer fails the run.
    fn wrk(&self, concurrency: usize, seconds: f64) -> anyhow::Result<(u64, f64)> {
        let script = repo_root().join("bench/wrk/push.lua");
        let output = Command::new(tool("wrk")?)
            .args([
                "-t2",
                &format!("-c{concurrency}"),
                &format!("-d{seconds:.0}s"),
                "-s",
            ])
            .arg(&script)
            .arg(format!("{}/v1/webhooks/{}", self.http, self.repository))
            .env("WRK_BODY", &self.body)
            .env(
                "WRK_SIGNATURE",
                sign(&self.secret, &std::fs::read(&self.body)?),
            )
            .output()
            .context("wrk (apt-get install wrk)")?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(output.status.success(), "wrk failed: {text}");
        anyhow::ensure!(
            !text.contains("Non-2xx"),
            "wrk got answers other than 2xx: {text}"
        );
        let requests = text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .with_context(|| format!("no request count in wrk's output: {text}"))?;
        let per_second = text
            .lines()
            .find(|l| l.starts_with("Requests/sec:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .with_context(|| format!("no rate in wrk's output: {text}"))?;
        Ok((requests, per_second))
    }

    /// The pgbench scripts: one row per transaction (as one unbatched webhook
    /// would be), and 32 rows per statement (PostgreSQL's own batched insert
    /// rate for the same rows: the physical reference for ingest).
    pub(super) async fn pgbench_scripts(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
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

    /// pgbench with `script` by `clients` for `seconds`, plus `extra` arguments.
    fn pgbench_output(
        &self,
        script: &std::path::Path,
        clients: u32,
        seconds: u64,
        extra: &[&str],
    ) -> anyhow::Result<String> {
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
            ])
            .args(extra)
            .arg("postgres")
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(text)
    }

    /// pgbench with `script` for `seconds`: transactions per second.
    pub(super) fn pgbench_run(
        &self,
        script: &std::path::Path,
        clients: u32,
        seconds: u64,
    ) -> anyhow::Result<f64> {
        let text = self.pgbench_output(script, clients, seconds, &[])?;
        text.lines()
            .find(|l| l.starts_with("tps"))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .with_context(|| format!("pgbench printed no tps: {text}"))
    }

    /// One pgbench client running `script` at `rate` per second (open loop,
    /// `-R`) for `seconds`: the p50 and p99 of each transaction's own time in
    /// ms, from its per-transaction log (the schedule lag left out). A commit
    /// after an idle gap costs more than one right after another, so the
    /// floor of a webhook arriving at a rate is measured at that rate.
    pub(super) fn pgbench_latency(
        &self,
        script: &std::path::Path,
        rate: f64,
        seconds: u64,
    ) -> anyhow::Result<(f64, f64)> {
        let prefix = self
            .dir
            .join(format!("pgbench-rate{rate:.0}-{}", now_micros()));
        let rate = format!("{rate:.0}");
        let prefix_arg = format!("--log-prefix={}", prefix.display());
        self.pgbench_output(script, 1, seconds, &["-R", &rate, "-l", &prefix_arg])?;
        // -l writes <prefix>.<pid>: one line per transaction, its time in µs third.
        let name = prefix
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut times = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}."))
            {
                for line in std::fs::read_to_string(entry.path())?.lines() {
                    if let Some(us) = line
                        .split_whitespace()
                        .nth(2)
                        .and_then(|t| t.parse::<f64>().ok())
                    {
                        times.push(us / 1000.0);
                    }
                }
            }
        }
        anyhow::ensure!(
            !times.is_empty(),
            "pgbench -l wrote no transactions under {}",
            prefix.display()
        );
        times.sort_by(f64::total_cmp);
        Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
    }

    pub(super) async fn pgbench(&self) -> anyhow::Result<Vec<Value>> {
        let (single, _) = self.pgbench_scripts().await?;
        let mut runs = Vec::new();
        for clients in [1, 8] {
            let tps = self.pgbench_run(&single, clients, self.seconds(10.0) as u64)?;
            runs.push(json!({"clients": clients, "tps": tps}));
        }
        Ok(runs)
    }
}
