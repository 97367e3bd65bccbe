//! Latency: webhooks at a fixed rate while a stream receives them (POST → 2xx
//! and POST → stream percentiles).

use super::*;

/// Where a latency run's events arrive: a hookrelay stream, or smee.io's
/// server-sent events (`scenario smee`).
pub(super) enum Subscriber {
    Stream(tonic::Streaming<hookrelay::grpc::proto::Event>),
    Sse {
        response: reqwest::Response,
        buffer: Vec<u8>,
    },
}

impl Subscriber {
    /// A stream of every repository's events after `after`.
    pub(super) async fn stream(
        grpc: &str,
        token: &str,
        consumer: String,
        after: i64,
    ) -> anyhow::Result<Self> {
        let mut client = EventServiceClient::connect(grpc.to_owned())
            .await?
            .max_decoding_message_size(64 << 20);
        Ok(Self::Stream(
            stream_all(&mut client, token, consumer, after).await?,
        ))
    }

    /// smee.io's channel at `url`, as its client subscribes (an EventSource).
    pub(super) async fn sse(url: &str) -> anyhow::Result<Self> {
        let response = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .await?
            .error_for_status()?;
        Ok(Self::Sse {
            response,
            buffer: Vec::new(),
        })
    }

    /// The delivery id of the next event that arrives; None when the
    /// subscription ends.
    async fn next(&mut self) -> anyhow::Result<Option<String>> {
        match self {
            Self::Stream(stream) => Ok(stream.message().await?.map(|event| event.delivery_id)),
            // smee sends each webhook as `data: {…headers, "body": …}` (and
            // pings and a ready event, which carry no delivery).
            Self::Sse { response, buffer } => loop {
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if let Some(data) = line.strip_prefix(b"data:")
                        && let Ok(event) = serde_json::from_slice::<Value>(data)
                        && let Some(delivery) = event["x-github-delivery"].as_str()
                    {
                        return Ok(Some(delivery.to_owned()));
                    }
                }
                match response.chunk().await? {
                    Some(chunk) => buffer.extend_from_slice(&chunk),
                    None => return Ok(None),
                }
            },
        }
    }
}

/// A delivery id in the form of a UUID (smee.io refuses any other), unique
/// per run (`run`) and webhook (`n`): a repeated delivery id is (rightly)
/// stored once.
fn delivery_id(run: &str, n: u64) -> String {
    let run = run
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    format!("{run:08x}-0000-4000-8000-{n:012x}")
}

/// Webhooks to `url` at `rate` per second (0: as fast as 64 workers go) for
/// `seconds` while `subscriber` receives them: POST → received latencies.
pub(super) async fn load_latency(
    mut subscriber: Subscriber,
    url: &str,
    secret: &str,
    body: &[u8],
    rate: f64,
    seconds: f64,
    prefix: &str,
) -> anyhow::Result<LatencyLoad> {
    let sent: Arc<std::sync::Mutex<HashMap<String, u64>>> = Arc::default();
    let progress = Arc::new(AtomicU64::new(0));
    let stop = delivery_id(prefix, 0xffff_ffff_ffff);
    let received = tokio::spawn({
        let (sent, progress, stop) = (sent.clone(), progress.clone(), stop.clone());
        async move {
            let mut latencies = Vec::new();
            loop {
                let delivery = match subscriber.next().await {
                    Ok(Some(delivery)) => delivery,
                    Ok(None) => break,
                    Err(error) => {
                        eprintln!("latency subscription ended: {error:#}");
                        break;
                    }
                };
                let at = now_micros();
                progress.fetch_add(1, Ordering::Relaxed);
                if delivery == stop {
                    break;
                }
                if let Some(t) = sent.lock().unwrap().get(&delivery) {
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
            "the subscriber did not receive the run's last event within 60 s: {} events received",
            progress.load(Ordering::Relaxed),
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
pub(super) struct Poster {
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
    pub(super) async fn send(self, n: u64) {
        let delivery = delivery_id(&self.prefix, n);
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

impl Bench {
    pub(super) fn latency_args(
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

    pub(super) async fn latency(&mut self) -> anyhow::Result<()> {
        let mut runs = Vec::new();
        for rate in [100.0, 200.0, 1000.0, 0.0] {
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
            let target = match rate {
                200.0 => "p99 ≤ 10 ms (issue 33)",
                1000.0 => "p99 ≤ 10 ms",
                _ => "",
            };
            self.latency_row("latency", &label, target, &result);
            runs.push(json!({"rate": rate, "result": result}));
        }
        self.results.insert("latency".into(), json!(runs));
        Ok(())
    }

    /// One latency run's row: POST → stream percentiles, and POST → 2xx.
    pub(super) fn latency_row(
        &mut self,
        scenario: &str,
        label: &str,
        target: &str,
        result: &LatencyLoad,
    ) {
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
}
