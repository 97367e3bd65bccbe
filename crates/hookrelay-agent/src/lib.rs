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
mod config_file;
mod deliver;
mod lanes;
mod metrics;
mod output;
mod token;
pub use token::error_chain;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use backon::BackoffBuilder;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument;

use ack::{Acker, PendingAck};
pub use config_file::with_config_file;
use deliver::Attempt;
use hookrelay_proto::event_service_client::EventServiceClient;
use hookrelay_proto::{AckOutcome, Event, StreamEventsRequest};
pub use hookrelay_telemetry::{LogFormat, TelemetryGuard};
pub use output::init_logging;
use token::TokenSource;

// No Debug: it holds the client secret as a plain string.
#[derive(Clone, Args)]
pub struct RelayArgs {
    /// A TOML file with any of these settings under their long names (e.g.
    /// `server = "https://…"`, `branch = ["main"]`); flags and environment
    /// variables override it.
    #[arg(long, env = "HOOKRELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// The relay's URL: its public URL (Envoy's single port), its HTTP listener
    /// (http://127.0.0.1:8080), or its gRPC listener (then give --token-url too).
    #[arg(long, env = "HOOKRELAY_SERVER", value_parser = parse_http_url)]
    pub server: url::Url,

    /// The OAuth2 token endpoint (any OAuth2 server works). Default: the one the
    /// server's /.well-known/oauth-authorization-server names.
    #[arg(long, env = "HOOKRELAY_TOKEN_URL", value_parser = parse_http_url)]
    pub token_url: Option<url::Url>,

    /// The OAuth2 client. Not needed with --subject-token-file or
    /// --github-actions-oidc: no stored secret at all.
    #[arg(
        long,
        env = "HOOKRELAY_CLIENT_ID",
        required_unless_present_any = ["subject_token_file", "github_actions_oidc"],
        conflicts_with_all = ["subject_token_file", "github_actions_oidc"]
    )]
    pub client_id: Option<String>,

    /// The client secret. Better in the environment than on the command line
    /// (where `ps` shows it), or in a file with --client-secret-file.
    #[arg(
        long,
        env = "HOOKRELAY_CLIENT_SECRET",
        hide_env_values = true,
        required_unless_present_any = ["client_secret_file", "subject_token_file", "github_actions_oidc"],
        conflicts_with = "client_secret_file"
    )]
    pub client_secret: Option<String>,

    /// A file holding the client secret (surrounding whitespace ignored), as
    /// Kubernetes mounts a Secret.
    #[arg(long, env = "HOOKRELAY_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// Instead of a client secret: a file holding a JWT from an issuer the
    /// tenant trusts (POST /v1/trusted-issuers), such as a Kubernetes projected
    /// service account token. Re-read before every token exchange (RFC 8693),
    /// so the kubelet's rotations are picked up.
    #[arg(
        long,
        env = "HOOKRELAY_SUBJECT_TOKEN_FILE",
        conflicts_with = "github_actions_oidc"
    )]
    pub subject_token_file: Option<PathBuf>,

    /// Instead of a client secret: GitHub Actions' OIDC token for --oidc-audience
    /// (the job needs `permissions: id-token: write`), exchanged for an access
    /// token under the tenant's trusted issuer.
    #[arg(
        long,
        env = "HOOKRELAY_GITHUB_ACTIONS_OIDC",
        requires = "oidc_audience"
    )]
    pub github_actions_oidc: bool,

    /// The audience to ask GitHub Actions for: the trusted issuer's `audience`.
    #[arg(long, env = "HOOKRELAY_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// A repository id to relay (repeatable, or comma-separated in the environment).
    /// None: all of the tenant's repositories.
    #[arg(
        long = "repository",
        env = "HOOKRELAY_REPOSITORIES",
        value_delimiter = ','
    )]
    pub repositories: Vec<String>,

    /// This agent's consumer name; its acks are kept under it, e.g. jenkins-eu.
    #[arg(long, env = "HOOKRELAY_CONSUMER")]
    pub consumer: String,

    /// The local URL that receives each event, e.g. http://127.0.0.1:8080/github-webhook/.
    #[arg(long, env = "HOOKRELAY_TARGET", value_parser = parse_http_url)]
    pub target: url::Url,

    /// A PEM CA certificate to trust besides the system roots (server and token endpoint).
    #[arg(long, env = "HOOKRELAY_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Deliver only events of these types (glob patterns, repeatable or
    /// comma-separated), e.g. push,pull_request. Default: every type.
    #[arg(
        long = "event",
        visible_alias = "event-type",
        env = "HOOKRELAY_EVENTS",
        value_delimiter = ','
    )]
    pub event_types: Vec<String>,

    /// Deliver only events concerning these branches (glob patterns, e.g.
    /// main,release/*), or the tags below. Default: no branch or tag filter.
    #[arg(long = "branch", env = "HOOKRELAY_BRANCHES", value_delimiter = ',')]
    pub branches: Vec<String>,

    /// Deliver only events concerning these tags (glob patterns, e.g. v*), or
    /// the branches above.
    #[arg(long = "tag", env = "HOOKRELAY_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,

    /// HTTP/2 pings to the server this often; a server that does not answer
    /// within --keepalive-timeout (frozen, or a silently dropped connection)
    /// counts as lost and the agent reconnects.
    #[arg(long, env = "HOOKRELAY_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,

    #[arg(long, env = "HOOKRELAY_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,

    /// Deliveries in flight at once, over all repositories. Each repository's
    /// events are still delivered one at a time, in order.
    #[arg(long, env = "HOOKRELAY_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz for
    /// Kubernetes probes, on this address (e.g. 0.0.0.0:9090). Off by default.
    #[arg(long, env = "HOOKRELAY_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// /readyz fails while the oldest event not yet delivered is older than this
    /// (or while no stream is connected).
    #[arg(long, env = "HOOKRELAY_READY_MAX_LAG", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_max_lag: Duration,

    /// How often to log a summary line (delivered, retried, failed, pending, lag).
    #[arg(long, env = "HOOKRELAY_SUMMARY_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub summary_interval: Duration,

    /// Send each delivery's W3C `traceparent` to the target (replacing one the
    /// webhook carried), so the target's trace continues the webhook's.
    #[arg(long, env = "HOOKRELAY_SEND_TRACEPARENT")]
    pub send_traceparent: bool,

    /// `text`: short lines for a person; `json`: one object per line; `auto`:
    /// text on a terminal, JSON otherwise.
    #[arg(long, env = "HOOKRELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Print warnings and errors only (-qq: errors only).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Print more: -v the agent's debug lines, -vv all debug lines, -vvv traces.
    /// RUST_LOG, when set, wins over -q and -v.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How the agent proves who it is: its settings as `token::Credentials`.
fn credentials(args: &RelayArgs) -> anyhow::Result<token::Credentials> {
    if let Some(path) = &args.subject_token_file {
        return Ok(token::Credentials::Subject(token::SubjectToken::File(
            path.clone(),
        )));
    }
    if args.github_actions_oidc {
        let audience = args
            .oidc_audience
            .clone()
            .context("--github-actions-oidc needs --oidc-audience")?;
        return Ok(token::Credentials::Subject(
            token::SubjectToken::GitHubActions { audience },
        ));
    }
    let id = args.client_id.clone().context(
        "give --client-id (HOOKRELAY_CLIENT_ID), or --subject-token-file or --github-actions-oidc",
    )?;
    Ok(token::Credentials::Client {
        id,
        secret: client_secret(args)?,
    })
}

/// The client secret, from the flag or environment, or read from its file.
fn client_secret(args: &RelayArgs) -> anyhow::Result<SecretString> {
    match (&args.client_secret, &args.client_secret_file) {
        (Some(secret), _) => Ok(SecretString::from(secret.clone())),
        (None, Some(path)) => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --client-secret-file {}", path.display()))?;
            let secret = secret.trim();
            anyhow::ensure!(
                !secret.is_empty(),
                "--client-secret-file {} is empty",
                path.display()
            );
            Ok(SecretString::from(secret.to_owned()))
        }
        (None, None) => anyhow::bail!("give --client-secret-file or HOOKRELAY_CLIENT_SECRET"),
    }
}

/// An http or https URL with a host: `localhost:9000` (a URL whose scheme
/// is "localhost") is refused at start, naming the flag, instead of failing
/// every delivery later.
fn parse_http_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value)
        .map_err(|e| format!("{e}; use a URL such as http://127.0.0.1:9000/hook"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{value}` is not an http:// or https:// URL; use a URL such as http://{value}"
        ));
    }
    Ok(url)
}

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
    args: RelayArgs,
    client: EventServiceClient<Channel>,
    tokens: Arc<TokenSource>,
    acker: Acker,
    deliverer: Arc<Deliverer>,
    shutdown: CancellationToken,
}

/// What every delivery lane shares.
pub(crate) struct Deliverer {
    http: reqwest::Client,
    target: url::Url,
    metrics: Arc<metrics::AgentMetrics>,
    acks: ack::AckSender,
    send_traceparent: bool,
    shutdown: CancellationToken,
}

impl Deliverer {
    /// Delivers one event until the target takes it or refuses it for good, then
    /// queues its ack. False if shutdown came while it was waiting to retry.
    ///
    /// The delivery is a span continuing the trace of the webhook's ingest (the
    /// event's `traceparent`), exported when OTLP is configured.
    async fn deliver(&self, event: Event) -> bool {
        let span = tracing::info_span!(
            "deliver",
            otel.name = format!("deliver {}", event.event_type),
            otel.kind = "client",
            event_id = event.id,
            repository_id = event.repository_id,
            consumer = tracing::field::Empty,
        );
        if let Some(parent) = &event.traceparent {
            hookrelay_telemetry::continue_trace(&span, parent);
        }
        // The target's trace continues this delivery's span, or the ingest's
        // when no traces are exported here.
        let traceparent = self
            .send_traceparent
            .then(|| hookrelay_telemetry::traceparent(&span).or_else(|| event.traceparent.clone()));
        self.deliver_in(event, traceparent.flatten())
            .instrument(span)
            .await
    }

    async fn deliver_in(&self, event: Event, traceparent: Option<String>) -> bool {
        let started = Instant::now();
        let mut backoff = delivery_backoff();
        let mut attempts = 0u32;
        let repository = if event.repository_name.is_empty() {
            event.repository_id.as_str()
        } else {
            event.repository_name.as_str()
        };
        let outcome = loop {
            attempts += 1;
            match deliver::attempt(&self.http, &self.target, &event, traceparent.as_deref()).await {
                Attempt::Delivered(status) => break Ok(status),
                Attempt::Failed { status, reason } => break Err((status, reason)),
                Attempt::Retry {
                    reason,
                    retry_after,
                } => {
                    self.metrics.retries.inc();
                    let delay = retry_after
                        .unwrap_or_else(|| backoff.next().unwrap_or(Duration::from_secs(30)));
                    tracing::warn!(
                        event_id = event.id,
                        repository,
                        event_type = event.event_type,
                        branch = event.branch,
                        tag = event.tag,
                        attempt = attempts,
                        reason,
                        delay_ms = delay.as_millis() as u64,
                        message = output::message::RETRYING,
                    );
                    tokio::select! {
                        () = self.shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.delivery_seconds.observe(elapsed_ms / 1000.0);
        self.metrics.done(&event);
        // The fields of a delivery's outcome line, at its level, plus `$extra`.
        macro_rules! outcome_line {
            ($level:expr, $status:expr, $($extra:tt)*) => {
                tracing::event!(
                    $level,
                    event_id = event.id,
                    repository,
                    repository_id = event.repository_id,
                    event_type = event.event_type,
                    branch = event.branch,
                    tag = event.tag,
                    delivery_id = event.delivery_id,
                    status = $status.as_u16(),
                    attempts,
                    redelivery = event.redelivery,
                    $($extra)*
                )
            };
        }
        let (outcome, failure_reason, status_code) = match outcome {
            Ok(status) => {
                self.metrics
                    .deliveries
                    .get_or_create(&metrics::OutcomeLabels {
                        outcome: "delivered",
                    })
                    .inc();
                outcome_line!(
                    tracing::Level::INFO,
                    status,
                    elapsed_ms,
                    message = output::message::DELIVERED
                );
                (AckOutcome::Delivered, String::new(), status)
            }
            Err((status, reason)) => {
                self.metrics
                    .deliveries
                    .get_or_create(&metrics::OutcomeLabels { outcome: "failed" })
                    .inc();
                outcome_line!(
                    tracing::Level::WARN,
                    status,
                    reason,
                    message = output::message::FAILED
                );
                (AckOutcome::Failed, reason, status)
            }
        };
        self.acks
            .push(PendingAck {
                repository_id: event.repository_id,
                event_id: event.id,
                outcome,
                failure_reason,
                redelivery_id: event.redelivery_id,
                status_code: status_code.as_u16(),
                attempts,
                duration_ms: elapsed_ms as u32,
            })
            .await;
        true
    }
}

/// Completes on SIGTERM or Ctrl-C (the server's `serve` waits on it too).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

/// Runs the agent until SIGTERM or Ctrl-C (see `run`).
pub async fn run_until_signal(args: RelayArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    run(args, stop).await
}

/// Runs the agent until `shutdown` (SIGTERM or Ctrl-C): the delivery in flight
/// finishes and its ack is sent before it returns.
pub async fn run(args: RelayArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    hookrelay_proto::rules::check_consumer_name(&args.consumer)
        .map_err(|e| anyhow::anyhow!("invalid --consumer: {e}"))?;
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
        credentials(&args)?,
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
    let acker = Acker::spawn(client.clone(), tokens.clone(), args.consumer.clone());
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
            consumer: self.args.consumer.clone(),
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
            consumer = self.args.consumer,
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
                    .map(token::error_chain)
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
                tracing::info!(
                    reason = status.message(),
                    "the server ended the stream; reconnecting now"
                );
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

fn delivery_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn summarize(metrics: Arc<metrics::AgentMetrics>, every: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        // Lag is the age of the oldest event not yet delivered: 0 when
        // nothing waits, growing while events are stuck behind a down target.
        let (pending, lag) = metrics.pending();
        tracing::info!(
            delivered = metrics.count("delivered"),
            retried = metrics.retries.get(),
            failed = metrics.count("failed"),
            pending,
            lag_ms = lag.as_millis() as u64,
            message = output::message::SUMMARY,
        );
    }
}
