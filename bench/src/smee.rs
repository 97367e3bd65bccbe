//! smee.io beside hookrelay (issue 33): the same signed 7.3 KB push at 100/s
//! and 500/s, open loop, POST → received by a subscriber (smee's server-sent
//! events; hookrelay's `StreamEvents`), alternating smee, hookrelay, smee,
//! hookrelay, smee on one machine, with the floor of a durable write beside
//! them: one commit of the same row by one pgbench client, back to back and
//! at each rate.
//!
//! smee.io keeps events in memory and checks nothing; hookrelay verifies the
//! signature and commits each event (fsync on) before it answers and streams
//! it. smee.io is not on npm: `scripts/smee-build DIR` builds it from its
//! repository, and the scenario takes that directory from SMEE_DIR.

use super::*;

const RATES: [f64; 2] = [100.0, 500.0];

impl Bench {
    pub(super) async fn smee(&mut self) -> anyhow::Result<()> {
        let dir = std::env::var_os("SMEE_DIR").map(PathBuf::from).context(
            "the smee scenario needs SMEE_DIR, a built copy of probot/smee.io: run `scripts/smee-build DIR` and set SMEE_DIR=DIR",
        )?;
        anyhow::ensure!(
            dir.join("public/main.min.js").exists(),
            "SMEE_DIR={} holds no built smee.io (public/main.min.js is missing): run `scripts/smee-build {}`",
            dir.display(),
            dir.display()
        );
        let port = free_port();
        let log = std::fs::File::create(self.dir.join("smee.log"))?;
        let _smee = ChildGuard::spawn(
            Command::new(tool("node")?)
                .arg("index.js")
                .current_dir(&dir)
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1")
                .env("NODE_ENV", "production")
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        let smee = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{smee}/favicon.ico"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "smee.io did not answer on {smee} within 30 s (see its log, smee.log)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seconds = self.seconds(10.0);
        let (single, _) = self.pgbench_scripts().await?;
        let append = self.pgbench_append_script(1).await?;
        let mut results = serde_json::Map::new();
        for rate in RATES {
            let (mut smee_runs, mut relay_runs) = (Vec::new(), Vec::new());
            for round in 0..5 {
                if round % 2 == 0 {
                    let channel = format!("{smee}/bench{}", now_micros());
                    smee_runs.push(load::<LatencyLoad>(&[
                        "load-latency-sse".into(),
                        channel,
                        self.body.display().to_string(),
                        rate.to_string(),
                        seconds.to_string(),
                        format!("s{}-{rate}", now_micros()),
                    ])?);
                } else {
                    let after = self.newest_id().await?;
                    let (http, grpc) = (self.http.clone(), self.grpc.clone());
                    relay_runs.push(load::<LatencyLoad>(
                        &self.latency_args(&http, &grpc, rate, seconds, after),
                    )?);
                }
            }
            let (smee_p50, smee_p99) = medians(&smee_runs);
            let (relay_p50, relay_p99) = medians(&relay_runs);
            let (commit_p50, commit_p99) =
                medians_of(&relay_runs, |r| (r.commit_p50_ms, r.commit_p99_ms));
            let (floor_p50, floor_p99) = self.pgbench_latency(&single, rate, seconds as u64)?;
            let (append_p50, append_p99) = self.pgbench_latency(&append, rate, seconds as u64)?;
            self.row(
                "smee",
                format!("{rate:.0}/s smee.io: POST→SSE p50/p99 ms"),
                format!("{smee_p50:.1}/{smee_p99:.1}"),
                format!("medians of {} runs", smee_runs.len()),
            );
            self.row(
                "smee",
                format!("{rate:.0}/s hookrelay: POST→stream p50/p99 ms"),
                format!("{relay_p50:.1}/{relay_p99:.1}"),
                format!("medians of {} runs", relay_runs.len()),
            );
            self.row(
                "smee",
                format!("{rate:.0}/s hookrelay / smee.io, p50 and p99"),
                format!("{:.2} / {:.2}", relay_p50 / smee_p50, relay_p99 / smee_p99),
                "≤ 1.0 (issue 33)",
            );
            self.row(
                "smee",
                format!("{rate:.0}/s hookrelay: POST→2xx (committed) p50/p99 ms"),
                format!("{commit_p50:.1}/{commit_p99:.1}"),
                format!("medians of {} runs", relay_runs.len()),
            );
            self.row(
                "smee",
                format!("{rate:.0}/s floor: one commit of the row at this rate p50/p99 ms"),
                format!("{floor_p50:.2}/{floor_p99:.2}"),
                "pgbench -R, 1 client, fsync on",
            );
            self.row(
                "smee",
                format!("{rate:.0}/s hookrelay's append_events_in_order at this rate p50/p99 ms"),
                format!("{append_p50:.2}/{append_p99:.2}"),
                "pgbench -R, 1 client, one event",
            );
            results.insert(
                format!("{rate:.0}"),
                json!({
                    "smee": smee_runs,
                    "hookrelay": relay_runs,
                    "commit_floor_p50_ms": floor_p50,
                    "commit_floor_p99_ms": floor_p99,
                    "append_events_p50_ms": append_p50,
                    "append_events_p99_ms": append_p99,
                }),
            );
        }
        let tps = self.pgbench_run(&single, 1, seconds as u64)?;
        self.row(
            "smee",
            "floor: one commit of the row (pgbench, 1 client) ms",
            format!("{:.2}", 1000.0 / tps),
            "fsync on",
        );
        results.insert("commit_floor_ms".into(), json!(1000.0 / tps));
        self.results.insert("smee".into(), Value::Object(results));
        Ok(())
    }
}

impl Bench {
    /// A pgbench script appending `events` events of the bench's repository in
    /// one call, the way hookrelay's ingest writer does
    /// (`append_events_in_order`): the database's share of a batch's commit,
    /// without HTTP or the relay.
    pub(super) async fn pgbench_append_script(&self, events: usize) -> anyhow::Result<PathBuf> {
        let tenant: String = sqlx::query_scalar(
            "select tenant_id::text from repository where repository_id = $1::uuid",
        )
        .bind(&self.repository)
        .fetch_one(&self.pool)
        .await?;
        let body = hex::encode(std::fs::read(&self.body)?);
        let each = |value: &str| format!("array_fill({value}, array[{events}])");
        let script = self.dir.join(format!("pgbench-append-{events}.sql"));
        std::fs::write(
            &script,
            format!(
                "select count(*) from append_events_in_order({}, {}, {}, {}, \
                 array(select gen_random_uuid()::text from generate_series(1, {events})), {}, {}, {}, {}, {}, {});\n",
                each(&format!("'{tenant}'::uuid")),
                each(&format!("'{}'::uuid", self.repository)),
                each("'github'::text"),
                each("'push'::text"),
                each("now()"),
                each("'[[\"content-type\",\"application/json\"]]'::jsonb"),
                each(&format!("'\\x{body}'::bytea")),
                each("null::text"),
                each("null::text"),
                each("null::text"),
            ),
        )?;
        Ok(script)
    }
}

/// The medians of the runs' p50 and p99 (POST → received).
fn medians(runs: &[LatencyLoad]) -> (f64, f64) {
    medians_of(runs, |r| (r.p50_ms, r.p99_ms))
}

/// The medians of a pair of figures over the runs.
fn medians_of(runs: &[LatencyLoad], pick: impl Fn(&LatencyLoad) -> (f64, f64)) -> (f64, f64) {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    (
        median(runs.iter().map(|r| pick(r).0).collect()),
        median(runs.iter().map(|r| pick(r).1).collect()),
    )
}
