//! Builds the application from a `Config` and runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::{Authenticator, Keys};
use crate::config::{Config, SecretKeySource};
use crate::database::Database;
use crate::jobs;
use crate::relay::Ingestor;
use crate::relay::StreamHub;
use crate::secrets::SecretKey;
use crate::server::connections::ConnectionLimits;
use crate::state::{AppState, Settings};
use crate::store;
use crate::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

pub struct Application {
    database: Database,
    built: Built,
}

/// What `build_on` prepares on an open database.
struct Built {
    state: AppState,
    http: TcpListener,
    http_addr: SocketAddr,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    serving: Serving,
    ingest_writer: tokio::task::JoinHandle<()>,
}

/// How the listeners serve, and how the server stops: from the config.
struct Serving {
    tls: Option<crate::server::tls::TlsFiles>,
    schedule: jobs::Schedule,
    cors_origins: Vec<String>,
    drain_delay: Duration,
    shutdown_grace: Duration,
    connection_limits: ConnectionLimits,
}

impl Application {
    /// Opens the database, applies migrations, loads keys and binds the listeners
    /// (port 0 picks a free port; see `http_addr`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database = Database::open(&config.database).await?;
        match Self::build_on(config, &database).await {
            Ok(built) => Ok(Self { database, built }),
            Err(error) => {
                database.close().await;
                Err(error)
            }
        }
    }

    async fn build_on(config: Config, database: &Database) -> anyhow::Result<Built> {
        let serving = Serving {
            tls: config.tls.clone(),
            schedule: jobs::Schedule {
                retention: config.retention,
                recovery: config.recovery_interval,
                stored_bytes: config.stored_bytes_interval,
            },
            cors_origins: config.cors_origins.clone(),
            drain_delay: config.drain_delay,
            shutdown_grace: config.shutdown_grace,
            connection_limits: ConnectionLimits {
                header_timeout: config.limits.http_header_timeout,
                idle_timeout: config.limits.http_idle_timeout,
                keepalive_interval: config.limits.http2_keepalive_interval,
                keepalive_timeout: config.limits.http2_keepalive_timeout,
            },
        };
        if let Some(tls) = &serving.tls {
            // Fail at start, not at the first connection.
            tls.acceptor()?;
        }
        let pool = database.pool.clone();
        if config.migrate {
            if let Some(newer) = store::migrate(&pool).await? {
                tracing::warn!(
                    version = store::release::VERSION,
                    migrated_by = %newer,
                    "the database is migrated by a newer release; this one serves it (a rollback)"
                );
            }
        } else {
            store::check_migrated(&pool).await?;
        }
        let mut secret_key = open_secret_key(&config.secret_key, &config.database)?;
        if let Some(previous) = &config.previous_secret_key {
            secret_key = secret_key.with_previous(open_secret_key(previous, &config.database)?);
            tracing::warn!(
                "HOOKRELAY_PREVIOUS_SECRET_KEY is set: secrets open with either key; \
                 run `hookrelay secrets rekey`, then remove it"
            );
        }
        store::check_secret_key(&pool, &secret_key).await?;

        let http = TcpListener::bind(config.http_addr).await.with_context(|| {
            format!("cannot listen on HOOKRELAY_HTTP_ADDR {}", config.http_addr)
        })?;
        let http_addr = http.local_addr()?;
        let grpc = TcpListener::bind(config.grpc_addr).await.with_context(|| {
            format!("cannot listen on HOOKRELAY_GRPC_ADDR {}", config.grpc_addr)
        })?;
        let grpc_addr = grpc.local_addr()?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let public_url = match &config.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("{scheme}://{http_addr}"),
        };
        let keys = Keys::load(
            &config.jwt_key_file,
            &pool,
            &secret_key,
            public_url.clone(),
            config.jwt_audience.clone(),
            config.token_ttl,
        )
        .await
        .context("cannot load the JWT signing key")?;
        let keys = Arc::new(keys);
        let limits = &config.limits;
        let open_files = crate::server::connections::raise_open_file_limit();
        let max_connections = limits.max_connections.unwrap_or_else(|| {
            crate::server::connections::default_max_connections(
                open_files,
                config.database.max_connections + crate::database::INGEST_CONNECTIONS,
            )
        });
        tracing::info!(open_files, max_connections, "connection limits");
        let metrics = Arc::new(Metrics::default());
        let outbound = crate::outbound::Fetcher::new(config.outbound.clone())?;
        let secret_key = Arc::new(secret_key);
        let streams = StreamHub::new(pool.clone(), &metrics);
        let (ingestor, ingest_writer) = Ingestor::spawn(database.ingest.clone(), streams.clone());
        let state = AppState::new(crate::state::SharedState {
            auth: Authenticator::new(keys.clone(), pool.clone()),
            pool,
            ingest_pool: database.ingest.clone(),
            settings: Arc::new(Settings {
                public_url: public_url.clone(),
                signup_token: config.signup_token.clone(),
                max_webhook_bytes: config.max_webhook_bytes,
                secret_rotation_grace: config.secret_rotation_grace,
                body_timeout: limits.http_body_timeout,
                webhook_min_body_rate: limits.webhook_min_body_rate,
                trusted_proxies: limits.trusted_proxies.clone(),
                stall_threshold: limits.stall_threshold,
                max_stream_age: limits.max_stream_age,
                quotas: config.quotas,
            }),
            webhook_memory: crate::server::MemoryBudget::new(
                limits.memory_shares(config.max_webhook_bytes),
            ),
            rate_limits: Arc::new(crate::server::RateLimits {
                signup: crate::server::Limiter::new(limits.signup_rate),
                token_failures: crate::server::Limiter::new(limits.token_failure_rate),
                device_authorizations: crate::server::Limiter::new(
                    limits.device_authorization_rate,
                ),
                device_approvals: crate::server::TenantLimiter::new(Some(
                    crate::http::device::approval_rate(),
                )),
                stream_setup: crate::server::TenantLimiter::new(limits.stream_setup_rate),
                provider_calls: crate::server::TenantLimiter::new(limits.provider_call_rate),
                webhooks: crate::server::TenantBuckets::default(),
            }),
            connections: crate::server::connections::Connections::new(max_connections),
            stored_bytes: Arc::default(),
            federation: Arc::new(crate::federation::Federation::new(outbound.clone())),
            recovery: Arc::new(crate::recovery::Recovery::new(
                database.pool.clone(),
                secret_key.clone(),
                outbound,
                public_url.clone(),
                metrics.clone(),
            )),
            storage: Arc::default(),
            keys,
            secret_key,
            ingestor,
            streams,
            metrics,
            targets: Arc::default(),
            draining: CancellationToken::new(),
        });
        Ok(Built {
            state,
            http,
            http_addr,
            grpc,
            grpc_addr,
            serving,
            ingest_writer,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.built.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.built.grpc_addr
    }

    pub fn state(&self) -> &AppState {
        &self.built.state
    }

    /// Serves HTTP and gRPC until `shutdown` completes, then shuts down gracefully:
    /// 1. readiness goes false (/readyz 503, gRPC health NOT_SERVING) while the
    ///    server keeps serving for the drain delay, so load balancers move new
    ///    requests to other replicas;
    /// 2. open streams end with UNAVAILABLE ("reconnect now"), the listeners stop
    ///    accepting, and in-flight requests (so webhook ingests) finish;
    /// 3. the ingest writers commit what they hold, the pool closes and the
    ///    embedded database stops.
    ///
    /// Whatever is still running when the grace period ends is abandoned.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { database, built } = self;
        let Built {
            state,
            http,
            http_addr,
            grpc,
            grpc_addr,
            serving,
            ingest_writer,
        } = built;
        let Serving {
            tls,
            schedule,
            cors_origins,
            drain_delay,
            shutdown_grace,
            connection_limits,
        } = serving;
        tracing::info!(
            version = hookrelay_telemetry::VERSION,
            commit = hookrelay_telemetry::COMMIT,
            %http_addr,
            %grpc_addr,
            public_url = %state.settings.public_url,
            tls = tls.is_some(),
            "hookrelay is serving"
        );
        tracing::info!("console at {}/console/", state.settings.public_url);
        let stop = CancellationToken::new();
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let background = jobs::start(&state, schedule, health_reporter, &stop);

        let acceptor = tls.as_ref().map(|tls| tls.acceptor()).transpose()?;
        let grpc_router = crate::grpc::router(&state, health, &cors_origins, stop.clone())?;
        let grpc_server = crate::server::connections::serve(
            grpc,
            acceptor.clone(),
            grpc_router.clone(),
            connection_limits,
            state.connections.clone(),
            stop.clone(),
        );
        // The HTTP listener serves the gRPC paths too: the web console, served
        // from this listener, reaches its live data (gRPC-Web) on its own
        // origin, with no Envoy and no CORS. Behind Envoy they go to the gRPC
        // listener instead, by content type.
        let router = crate::http::router(state.clone()).merge(grpc_router);
        let http_server = crate::server::connections::serve(
            http,
            acceptor,
            router,
            connection_limits,
            state.connections.clone(),
            stop.clone(),
        );
        let (trigger, draining, deadline) = (
            stop.clone(),
            state.draining.clone(),
            CancellationToken::new(),
        );
        let grace_over = deadline.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(
                drain_delay_ms = drain_delay.as_millis() as u64,
                "shutting down: not ready, draining (a second Ctrl-C or SIGTERM exits now)"
            );
            draining.cancel();
            let drain = async {
                tokio::time::sleep(drain_delay).await;
                trigger.cancel();
                tokio::time::sleep(shutdown_grace.saturating_sub(drain_delay)).await;
            };
            tokio::select! {
                () = drain => {}
                () = hookrelay_telemetry::shutdown_signal() => {
                    tracing::warn!("a second signal: exiting now");
                    trigger.cancel();
                }
            }
            grace_over.cancel();
        });
        let (served_http, served_grpc) = tokio::select! {
            served = async { tokio::join!(http_server, grpc_server) } => served,
            () = deadline.cancelled() => {
                tracing::warn!("the shutdown grace period is over; exiting with requests in flight");
                (Ok(()), Ok(()))
            }
        };
        stop.cancel();
        for task in background {
            let _ = task.await;
        }
        drop(state);
        let _ = ingest_writer.await;
        database.close().await;
        tracing::info!("hookrelay stopped");
        served_http?;
        served_grpc
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub use hookrelay_telemetry::shutdown_signal;

/// The key-encryption key, as `serve` and the operator commands take it.
pub fn open_secret_key(
    source: &SecretKeySource,
    database: &crate::config::DatabaseConfig,
) -> anyhow::Result<SecretKey> {
    Ok(match source {
        SecretKeySource::Value(value) => {
            SecretKey::from_base64(value).context("invalid HOOKRELAY_SECRET_KEY")?
        }
        SecretKeySource::File(path) => {
            SecretKey::from_file(path).context("invalid HOOKRELAY_SECRET_KEY_FILE")?
        }
        SecretKeySource::DataDir => {
            let path = database.data_dir.join("secret.key");
            if database.url.is_some() {
                tracing::warn!(
                    path = %path.display(),
                    "HOOKRELAY_SECRET_KEY is not set: using a key from the data directory; \
                     every replica must share one key"
                );
            }
            SecretKey::load_or_generate(&path)?
        }
    })
}
