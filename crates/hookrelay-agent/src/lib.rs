//! The agent inside a private network (`hookrelay-agent`, also `hookrelay
//! relay`). It keeps an outbound StreamEvents call open, replays each event to
//! a local target and acks it.
//!
//! - **Order.** Each repository's events are delivered one at a time in stream
//!   order, so they reach the target in id order; different repositories are
//!   delivered concurrently, up to --concurrency in flight (see `lanes`). A
//!   retried event holds back the ones behind it in its repository only.
//! - **No loss.** An event is acked only after the target answered 2xx, or a
//!   permanent 4xx (then it is recorded as failed). A reconnect resumes after the
//!   last ack, so a crash (even kill -9) can only re-deliver the events that were
//!   delivered but not yet acked.
//! - **Acks** go to a background task that coalesces them (the highest id per
//!   repository), so slow ack round trips never stall delivery.

#![forbid(unsafe_code)]

mod ack;
mod args;
mod config_file;
mod deliver;
mod lanes;
mod login;
mod metrics;
mod output;
mod token;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::BackoffBuilder;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use ack::Acker;
pub use args::AgentArgs;
pub use config_file::{flags as config_flags, with_config_file};
use deliver::Deliverer;
use hookrelay_proto::StreamEventsRequest;
use hookrelay_proto::event_service_client::EventServiceClient;
pub use hookrelay_telemetry::{LogFormat, TelemetryGuard, shutdown_signal};
pub use login::{LoginArgs, ServerArg, login, logout, status};
pub use output::init_logging;
use token::TokenSource;

/// How the stream ended.
enum Ended {
    Shutdown,
    /// Reconnect without waiting (the server is draining, or the token expired).
    ReconnectNow,
    /// It never opened (the server or the token endpoint is unreachable): retry.
    Retry(String),
    /// It was open and broke: reconnect.
    Lost(String),
}

impl Ended {
    /// After the stream opened, a retry is a lost stream.
    fn after_open(self) -> Self {
        match self {
            Ended::Retry(why) => Ended::Lost(why),
            other => other,
        }
    }
}

struct Agent {
    args: AgentArgs,
    client: EventServiceClient<Channel>,
    tokens: Arc<TokenSource>,
    acker: Acker,
    deliverer: Arc<Deliverer>,
    shutdown: CancellationToken,
}

/// Runs the agent until SIGTERM or Ctrl-C (see `run`).
pub async fn run_until_signal(args: AgentArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    run(args, stop).await
}

/// Runs the agent until `shutdown` (SIGTERM or Ctrl-C): the delivery in flight
/// finishes and its ack is sent before it returns.
pub async fn run(mut args: AgentArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let consumer = args::consumer(&args)?;
    hookrelay_proto::rules::check_consumer_name(&consumer)
        .map_err(|e| anyhow::anyhow!("invalid --consumer: {e}"))?;
    args.consumer = Some(consumer.clone());
    let ca = match &args.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let mut http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &ca {
        http = http.add_root_certificate(
            reqwest::Certificate::from_pem(ca).context("--ca-file is not a PEM certificate")?,
        );
    }
    let http = http.build()?;
    let token_endpoint = match &args.token_url {
        Some(url) => token::Endpoint::Given(url.clone()),
        None => token::Endpoint::Discover(args.server.clone()),
    };
    let tokens = Arc::new(TokenSource::new(
        token_endpoint,
        args::credentials(&args)?,
        http.clone(),
    )?);

    let mut endpoint = Endpoint::from_shared(args.server.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(args.keepalive_interval)
        .keep_alive_timeout(args.keepalive_timeout)
        .keep_alive_while_idle(true);
    if args.server.scheme() == "https" {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let client = EventServiceClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(64 * 1024 * 1024);
    let acker = Acker::spawn(client.clone(), tokens.clone(), consumer);
    let renewal = tokio::spawn(tokens.clone().keep_fresh(shutdown.clone()));
    let metrics = Arc::new(metrics::AgentMetrics::default());
    if let Some(address) = args.metrics_addr {
        metrics::serve(
            address,
            metrics.clone(),
            args.ready_max_lag,
            shutdown.clone(),
        )
        .await?;
    }
    let summary = tokio::spawn(summarize(
        metrics.clone(),
        args.summary_interval,
        shutdown.clone(),
    ));
    let state = tokio::spawn(output::report_state(
        metrics.clone(),
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(30),
        shutdown.clone(),
    ));
    let deliverer = Arc::new(Deliverer {
        http,
        target: args.target.clone(),
        metrics,
        acks: acker.sender(),
        send_traceparent: args.send_traceparent,
        shutdown: shutdown.clone(),
    });
    let agent = Agent {
        args,
        client,
        tokens,
        acker,
        deliverer,
        shutdown,
    };
    let result = agent.run().await;
    summary.abort();
    state.abort();
    renewal.abort();
    result
}

impl Agent {
    async fn run(mut self) -> anyhow::Result<()> {
        let mut backoff = reconnect_backoff();
        loop {
            let ended = self.stream().await;
            // Resume from what the target really got: acks first, then reconnect.
            self.acker.flush().await;
            match ended? {
                Ended::Shutdown => {
                    self.acker.close().await;
                    tracing::info!("relay stopped");
                    return Ok(());
                }
                Ended::ReconnectNow => backoff = reconnect_backoff(),
                Ended::Retry(reason) => {
                    self.deliverer.metrics.reconnects.inc();
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(
                        reason,
                        delay_ms = delay.as_millis() as u64,
                        "not connected; retrying"
                    );
                    tokio::select! {
                        () = self.shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Ended::Lost(reason) => {
                    self.deliverer.metrics.reconnects.inc();
                    // It was connected: start the backoff over.
                    backoff = reconnect_backoff();
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(
                        reason,
                        delay_ms = delay.as_millis() as u64,
                        "stream lost; reconnecting"
                    );
                    tokio::select! {
                        () = self.shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One StreamEvents call, delivering until it ends. Err only for problems a
    /// reconnect cannot fix (bad configuration, a cursor behind retention).
    async fn stream(&mut self) -> anyhow::Result<Ended> {
        if self.shutdown.is_cancelled() {
            return Ok(Ended::Shutdown);
        }
        let token = match self.tokens.token().await {
            Ok(token) => token,
            Err(token::TokenError::Refused(why)) => anyhow::bail!(why),
            Err(token::TokenError::Unavailable(why)) => return Ok(Ended::Retry(why)),
        };
        let mut request = tonic::Request::new(StreamEventsRequest {
            repository_ids: self.args.repositories.clone(),
            consumer: self.args.consumer.clone().unwrap_or_default(),
            after_event_id: None,
            event_types: self.args.event_types.clone(),
            branches: self.args.branches.clone(),
            tags: self.args.tags.clone(),
        });
        let bearer: MetadataValue<_> = format!("Bearer {}", token.expose_secret()).parse()?;
        request.metadata_mut().insert("authorization", bearer);
        let opened = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Ok(Ended::Shutdown),
            opened = self.client.stream_events(request) => opened,
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return self.refused(status).await,
        };
        tracing::info!(
            server = %self.args.server,
            consumer = self.args.consumer.as_deref().unwrap_or_default(),
            message = output::message::CONNECTED,
        );
        self.deliverer.metrics.set_connected(true);
        let mut lanes =
            lanes::Lanes::new(self.deliverer.clone(), usize::from(self.args.concurrency));
        let ended = loop {
            // Biased: after SIGTERM no new delivery starts, even if an event is ready.
            let message = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break Ok(Ended::Shutdown),
                message = stream.message() => message,
            };
            match message {
                Ok(Some(event)) => {
                    if !lanes.push(event).await {
                        break Ok(Ended::Shutdown);
                    }
                }
                Ok(None) => break Ok(Ended::Lost("the server closed the stream".into())),
                Err(status) => break self.ended_by(status).await.map(Ended::after_open),
            }
        };
        // What the lanes were given is delivered (or, after SIGTERM, what is in
        // flight finishes) before the acks are flushed and the stream reopens.
        self.deliverer.metrics.set_connected(false);
        lanes.finish().await;
        ended
    }

    /// The stream could not open: a status that says the configuration is
    /// wrong ends the agent with one line saying what to fix; one that says the
    /// server cannot be reached is retried.
    async fn refused(&self, status: tonic::Status) -> anyhow::Result<Ended> {
        let server = &self.args.server;
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Internal
                if status.message().contains("connect")
                    || status.message().contains("transport") =>
            {
                let cause = std::error::Error::source(&status)
                    .map(hookrelay_telemetry::connection_failure)
                    .unwrap_or_else(|| status.message().to_owned());
                Ok(Ended::Retry(format!("cannot connect to {server}: {cause}")))
            }
            _ => self.ended_by(status).await,
        }
    }

    async fn ended_by(&self, status: tonic::Status) -> anyhow::Result<Ended> {
        let server = &self.args.server;
        match status.code() {
            Code::Unimplemented => anyhow::bail!(
                "{server} does not serve hookrelay's gRPC API ({}): is --server the relay's URL \
                 (its public URL, HTTP listener or gRPC listener), not a webhook target or another service?",
                status.message()
            ),
            Code::PermissionDenied if status.message().contains("suspended") => {
                anyhow::bail!("the server refused the stream: {}", status.message())
            }
            Code::PermissionDenied => anyhow::bail!(
                "the server refused the stream: {}; the agent's client needs the events:read scope",
                status.message()
            ),
            Code::NotFound if status.message().contains("repository") => anyhow::bail!(
                "the server refused the stream: {}; check --repository (HOOKRELAY_REPOSITORIES)",
                status.message()
            ),
            Code::Unauthenticated => {
                self.tokens.invalidate().await;
                tracing::warn!(
                    message = status.message(),
                    "the server refused the token; getting a new one"
                );
                Ok(Ended::ReconnectNow)
            }
            // The server is draining, or the stream reached its maximum age.
            Code::Unavailable if status.message().contains("reconnect now") => {
                // The server's words already say what happens next.
                tracing::info!("the server ended the stream: {}", status.message());
                Ok(Ended::ReconnectNow)
            }
            Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
                anyhow::bail!(
                    "the server refused the stream ({:?}): {}",
                    status.code(),
                    status.message()
                )
            }
            _ => Ok(Ended::Retry(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            ))),
        }
    }
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A summary line every `every`, while anything happens: an idle agent says it
/// once, not every interval.
async fn summarize(metrics: Arc<metrics::AgentMetrics>, every: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    let mut last = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        // Lag is the age of the oldest event not yet delivered: 0 when
        // nothing waits, growing while events are stuck behind a down target.
        let (pending, lag) = metrics.pending();
        let counts = (
            metrics.count("delivered"),
            metrics.retries.get(),
            metrics.count("failed"),
            pending,
        );
        if last == Some(counts) && pending == 0 {
            continue;
        }
        last = Some(counts);
        let (delivered, retried, failed, pending) = counts;
        tracing::info!(
            delivered,
            retried,
            failed,
            pending,
            lag_ms = lag.as_millis() as u64,
            message = output::message::SUMMARY,
        );
    }
}
