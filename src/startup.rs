//! Builds the application from a `Config` and runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;

use crate::auth::{Authenticator, GrpcAuthLayer, Keys};
use crate::config::{Config, DatabaseConfig, SecretKeySource};
use crate::embedded_db::{EmbeddedOptions, EmbeddedPostgres};
use crate::grpc::EventsService;
use crate::grpc::proto::event_service_server::EventServiceServer;
use crate::http::server::ConnectionLimits;
use crate::ingest::Ingestor;
use crate::secrets::SecretKey;
use crate::state::{AppState, Settings};
use crate::store;
use crate::streams::StreamHub;
use crate::telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// The database the server runs on: an external one, or the embedded default.
pub struct Database {
    pub pool: PgPool,
    embedded: Option<Embedded>,
}

/// The embedded PostgreSQL, restarted by a supervisor if it dies.
struct Embedded {
    cluster: Arc<std::sync::Mutex<Option<EmbeddedPostgres>>>,
    supervisor: CancellationToken,
    /// Held while the server runs: one hookrelay per data directory.
    _lock: std::fs::File,
}

impl Database {
    pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let (options, embedded) = match &config.url {
            Some(url) => {
                let options: PgConnectOptions = url
                    .expose_secret()
                    .parse()
                    .context("invalid DATABASE_URL")?;
                (options, None)
            }
            None => {
                let lock = lock_data_dir(&config.data_dir)?;
                let options = EmbeddedOptions {
                    dir: config.data_dir.join("postgres"),
                    bin_dir: config.postgres_bin_dir.clone(),
                    ephemeral: false,
                    fsync: true,
                    max_connections: 100,
                };
                tracing::info!(dir = %options.dir.display(), "starting the embedded PostgreSQL");
                let start = options.clone();
                let cluster = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&start))
                    .await
                    .context("the embedded PostgreSQL start panicked")??;
                let connect = cluster.connect_options("postgres");
                let cluster = Arc::new(std::sync::Mutex::new(Some(cluster)));
                let supervisor = CancellationToken::new();
                tokio::spawn(supervise(cluster.clone(), options, supervisor.clone()));
                (
                    connect,
                    Some(Embedded {
                        cluster,
                        supervisor,
                        _lock: lock,
                    }),
                )
            }
        };
        let pool = store::connect(options, config.max_connections).await?;
        Ok(Self { pool, embedded })
    }

    /// Closes the pool, then stops the embedded server, if any.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(embedded) = self.embedded {
            embedded.supervisor.cancel();
            let cluster = embedded.cluster.lock().expect("not poisoned").take();
            if let Some(cluster) = cluster {
                let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
            }
        }
    }
}

/// Takes `<data dir>/hookrelay.lock`, so that a second server on the same data
/// directory stops at once, naming the first, instead of waiting on its database.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let path = dir.join("hookrelay.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if file.try_lock().is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        anyhow::bail!(
            "the data directory {} is in use by another hookrelay{}; stop it, or give this one \
             another --data-dir (HOOKRELAY_DATA_DIR)",
            dir.display(),
            if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            }
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Restarts the embedded PostgreSQL if it exits while the server runs (killed
/// by the OOM killer, say). The pool reconnects on its own: the socket is the same.
async fn supervise(
    cluster: Arc<std::sync::Mutex<Option<EmbeddedPostgres>>>,
    options: EmbeddedOptions,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let exited = cluster
            .lock()
            .expect("not poisoned")
            .as_mut()
            .and_then(EmbeddedPostgres::exited);
        let Some(why) = exited else { continue };
        tracing::error!(why, "the embedded PostgreSQL exited; restarting it");
        let start = options.clone();
        match tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&start)).await {
            Ok(Ok(restarted)) => {
                if stop.is_cancelled() {
                    // Shutting down meanwhile: stop it again.
                    let _ = tokio::task::spawn_blocking(move || restarted.stop()).await;
                    return;
                }
                tracing::warn!("the embedded PostgreSQL is running again");
                let old = cluster.lock().expect("not poisoned").replace(restarted);
                drop(old);
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "restarting the embedded PostgreSQL failed; retrying");
            }
            Err(error) => tracing::error!(%error, "restarting the embedded PostgreSQL panicked"),
        }
    }
}

/// `hookrelay migrate`.
pub async fn migrate_only(config: DatabaseConfig) -> anyhow::Result<()> {
    let database = Database::open(&config).await?;
    let result = store::migrate(&database.pool).await;
    database.close().await;
    result?;
    tracing::info!("migrations applied");
    Ok(())
}

pub struct Application {
    state: AppState,
    database: Database,
    http: TcpListener,
    http_addr: SocketAddr,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    tls: Option<crate::tls::TlsFiles>,
    retention: Duration,
    cors_origins: Vec<String>,
    drain_delay: Duration,
    shutdown_grace: Duration,
    connection_limits: ConnectionLimits,
    ingest_writers: Vec<tokio::task::JoinHandle<()>>,
}

/// What `build_on` prepares on an open database.
struct Parts {
    state: AppState,
    http: TcpListener,
    http_addr: SocketAddr,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    ingest_writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Opens the database, applies migrations, loads keys and binds the listeners
    /// (port 0 picks a free port; see `http_addr`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database = Database::open(&config.database).await?;
        let (tls, retention, cors_origins) = (
            config.tls.clone(),
            config.retention,
            config.cors_origins.clone(),
        );
        let (drain_delay, shutdown_grace) = (config.drain_delay, config.shutdown_grace);
        let connection_limits = ConnectionLimits {
            header_timeout: config.limits.http_header_timeout,
            idle_timeout: config.limits.http_idle_timeout,
        };
        let built = async {
            if let Some(tls) = &tls {
                // Fail at start, not at the first connection.
                tls.acceptor()?;
            }
            Self::build_on(config, &database).await
        };
        match built.await {
            Ok(Parts {
                state,
                http,
                http_addr,
                grpc,
                grpc_addr,
                ingest_writers,
            }) => Ok(Self {
                state,
                database,
                http,
                http_addr,
                grpc,
                grpc_addr,
                tls,
                retention,
                cors_origins,
                drain_delay,
                shutdown_grace,
                connection_limits,
                ingest_writers,
            }),
            Err(error) => {
                database.close().await;
                Err(error)
            }
        }
    }

    async fn build_on(config: Config, database: &Database) -> anyhow::Result<Parts> {
        let pool = database.pool.clone();
        if config.migrate {
            store::migrate(&pool).await?;
        } else {
            store::check_migrated(&pool).await?;
        }
        let secret_key = match &config.secret_key {
            SecretKeySource::Value(value) => {
                SecretKey::from_base64(value).context("invalid HOOKRELAY_SECRET_KEY")?
            }
            SecretKeySource::File(path) => {
                SecretKey::from_file(path).context("invalid HOOKRELAY_SECRET_KEY_FILE")?
            }
            SecretKeySource::DataDir => {
                let path = config.database.data_dir.join("secret.key");
                if config.database.url.is_some() {
                    tracing::warn!(
                        path = %path.display(),
                        "HOOKRELAY_SECRET_KEY is not set: using a key from the data directory; \
                         every replica must share one key"
                    );
                }
                SecretKey::load_or_generate(&path)?
            }
        };
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
            config.jwt_key_file.as_deref(),
            &pool,
            &secret_key,
            public_url.clone(),
            config.jwt_audience.clone(),
            config.token_ttl,
        )
        .await
        .context("cannot load the JWT signing key")?;
        let keys = Arc::new(keys);
        let (ingestor, ingest_writers) = Ingestor::spawn(pool.clone());
        let limits = &config.limits;
        let open_files = crate::http::server::raise_open_file_limit();
        let max_connections = limits.max_connections.unwrap_or_else(|| {
            crate::http::server::default_max_connections(
                open_files,
                config.database.max_connections,
            )
        });
        tracing::info!(open_files, max_connections, "connection limits");
        let state = AppState {
            auth: Authenticator::new(keys.clone(), pool.clone()),
            pool,
            settings: Arc::new(Settings {
                public_url,
                signup_token: config.signup_token.clone(),
                max_webhook_bytes: config.max_webhook_bytes,
                secret_rotation_grace: config.secret_rotation_grace,
                body_timeout: limits.http_body_timeout,
                trusted_proxies: limits.trusted_proxies.clone(),
            }),
            webhook_memory: Arc::new(crate::http::MemoryBudget::new(limits.webhook_memory)),
            rate_limits: Arc::new(crate::http::RateLimits {
                signup: crate::http::Limiter::new(limits.signup_rate),
                token_failures: crate::http::Limiter::new(limits.token_failure_rate),
            }),
            connections: crate::http::server::Connections::new(max_connections),
            storage: Arc::default(),
            keys,
            secret_key: Arc::new(secret_key),
            ingestor,
            metrics: Arc::new(Metrics::default()),
            streams: StreamHub::new(),
            targets: Arc::default(),
            draining: CancellationToken::new(),
        };
        Ok(Parts {
            state,
            http,
            http_addr,
            grpc,
            grpc_addr,
            ingest_writers,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
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
        let Self {
            state,
            database,
            http,
            http_addr,
            grpc,
            grpc_addr,
            tls,
            retention,
            cors_origins,
            drain_delay,
            shutdown_grace,
            connection_limits,
            ingest_writers,
        } = self;
        tracing::info!(
            %http_addr,
            %grpc_addr,
            public_url = %state.settings.public_url,
            tls = tls.is_some(),
            "hookrelay is serving"
        );
        let stop = CancellationToken::new();
        let background = [
            tokio::spawn(
                state
                    .streams
                    .clone()
                    .listen(state.pool.clone(), stop.clone()),
            ),
            tokio::spawn(
                state
                    .streams
                    .clone()
                    .check_revocations(state.pool.clone(), stop.clone()),
            ),
            tokio::spawn(retention_job(state.pool.clone(), retention, stop.clone())),
            tokio::spawn(forget_idle_sources(state.rate_limits.clone(), stop.clone())),
        ];
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let health_task = tokio::spawn(report_health(
            state.pool.clone(),
            state.storage.clone(),
            health_reporter,
            state.draining.clone(),
            stop.clone(),
        ));

        let acceptor = tls.as_ref().map(|tls| tls.acceptor()).transpose()?;
        let grpc_server = crate::http::server::serve(
            grpc,
            acceptor.clone(),
            grpc_router(&state, health, &cors_origins, stop.clone())?,
            connection_limits,
            state.connections.clone(),
            stop.clone(),
        );
        let router = crate::http::router(state.clone());
        let http_server = crate::http::server::serve(
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
                "shutting down: not ready, draining"
            );
            draining.cancel();
            tokio::time::sleep(drain_delay).await;
            trigger.cancel();
            tokio::time::sleep(shutdown_grace.saturating_sub(drain_delay)).await;
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
        let _ = health_task.await;
        drop(state);
        for writer in ingest_writers {
            let _ = writer.await;
        }
        database.close().await;
        tracing::info!("hookrelay stopped");
        served_http?;
        served_grpc
    }
}

/// The gRPC services as one router: EventService behind the auth interceptor;
/// health and reflection (v1 and v1alpha, which grpcurl speaks) without auth;
/// gRPC-Web translated here, by tonic-web, and nowhere else (Envoy only routes
/// it), so browsers reach the same server with or without Envoy. It is served
/// by `http::server` like the HTTP API, with the same connection limits.
fn grpc_router(
    state: &AppState,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    cors_origins: &[String],
    stop: CancellationToken,
) -> anyhow::Result<axum::Router> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let events = tower::Layer::layer(
        &GrpcAuthLayer::new(state.auth.clone()),
        EventServiceServer::new(EventsService::new(
            state.pool.clone(),
            state.streams.clone(),
            stop,
        )),
    );
    let routes = tonic::service::Routes::builder()
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(events)
        .clone()
        .routes();
    Ok(routes
        .prepare()
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(grpc_web_cors(cors_origins)?))
}

/// CORS for browsers calling over gRPC-Web from `origins` (none: no cross-origin calls).
fn grpc_web_cors(origins: &[String]) -> anyhow::Result<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let origins = origins
        .iter()
        .map(|origin| HeaderValue::from_str(origin).context("invalid HOOKRELAY_CORS_ORIGINS"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 3600)))
}

/// grpc.health.v1: SERVING while the database answers; NOT_SERVING otherwise, and
/// from the moment the server starts draining.
async fn report_health(
    pool: PgPool,
    storage: Arc<crate::health::StorageHealth>,
    reporter: tonic_health::server::HealthReporter,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    const SERVICE: &str = "hookrelay.v1.EventService";
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = draining.cancelled(), if !draining.is_cancelled() => {}
            _ = interval.tick() => {}
        }
        let answered = store::ping(&pool).await;
        if answered {
            crate::error::database_answered();
        }
        let status = if !draining.is_cancelled() && answered && !storage.failing() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(SERVICE, status).await;
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(SERVICE, ServingStatus::NotServing)
        .await;
}

/// Deletes events older than `retention`, every quarter of it (at most every minute).
async fn retention_job(pool: PgPool, retention: Duration, stop: CancellationToken) {
    let every = (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let cutoff = time::OffsetDateTime::now_utc() - retention;
        match store::event::delete_expired(&pool, cutoff, 10_000).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "retention deleted expired events"),
            Err(error) => tracing::warn!(%error, "retention job failed"),
        }
    }
}

/// Keeps the rate limiters' memory proportional to recent sources.
async fn forget_idle_sources(limits: Arc<crate::http::RateLimits>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        limits.signup.forget_idle();
        limits.token_failures.forget_idle();
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
