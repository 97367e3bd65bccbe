//! Builds the application from a `Config` and runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;

use crate::auth::Keys;
use crate::config::{Config, DatabaseConfig, SecretKeySource};
use crate::embedded_db::{EmbeddedOptions, EmbeddedPostgres};
use crate::ingest::Ingestor;
use crate::secrets::SecretKey;
use crate::store;
use crate::telemetry::Metrics;

/// Settings the handlers read.
#[derive(Debug)]
pub struct Settings {
    /// Without a trailing slash: the issuer and the base of webhook URLs.
    pub public_url: String,
    pub signup_token: Option<SecretString>,
    pub max_webhook_bytes: usize,
    pub secret_rotation_grace: Duration,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
    pub secret_key: Arc<SecretKey>,
    pub ingestor: Ingestor,
    pub metrics: Arc<Metrics>,
}

/// The database the server runs on: an external one, or the embedded default.
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
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
                let options = EmbeddedOptions {
                    dir: config.data_dir.join("postgres"),
                    bin_dir: config.postgres_bin_dir.clone(),
                    ephemeral: false,
                    max_connections: 100,
                };
                tracing::info!(dir = %options.dir.display(), "starting the embedded PostgreSQL");
                let cluster =
                    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
                        .await
                        .context("the embedded PostgreSQL start panicked")??;
                (cluster.connect_options("postgres"), Some(cluster))
            }
        };
        let pool = store::connect(options, config.max_connections).await?;
        Ok(Self { pool, embedded })
    }

    /// Closes the pool, then stops the embedded server, if any.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(cluster) = self.embedded {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
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
    ingest_writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Opens the database, applies migrations, loads keys and binds the listeners
    /// (port 0 picks a free port; see `http_addr`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database = Database::open(&config.database).await?;
        match Self::build_on(config, &database).await {
            Ok((state, http, http_addr, ingest_writers)) => Ok(Self {
                state,
                database,
                http,
                http_addr,
                ingest_writers,
            }),
            Err(error) => {
                database.close().await;
                Err(error)
            }
        }
    }

    async fn build_on(
        config: Config,
        database: &Database,
    ) -> anyhow::Result<(
        AppState,
        TcpListener,
        SocketAddr,
        Vec<tokio::task::JoinHandle<()>>,
    )> {
        let pool = database.pool.clone();
        if config.migrate {
            store::migrate(&pool).await?;
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
        let public_url = match &config.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{http_addr}"),
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
        let (ingestor, ingest_writers) = Ingestor::spawn(pool.clone());
        let state = AppState {
            pool,
            settings: Arc::new(Settings {
                public_url,
                signup_token: config.signup_token.clone(),
                max_webhook_bytes: config.max_webhook_bytes,
                secret_rotation_grace: config.secret_rotation_grace,
            }),
            keys: Arc::new(keys),
            secret_key: Arc::new(secret_key),
            ingestor,
            metrics: Arc::new(Metrics::default()),
        };
        Ok((state, http, http_addr, ingest_writers))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: in-flight requests (and
    /// so webhook ingests) finish, the ingest writers commit what they hold, the
    /// pool closes and the embedded database stops.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            state,
            database,
            http,
            http_addr,
            ingest_writers,
        } = self;
        tracing::info!(%http_addr, public_url = %state.settings.public_url, "hookrelay is serving");
        let router = crate::http::router(state);
        let served = axum::serve(http, router)
            .with_graceful_shutdown(shutdown)
            .await;
        for writer in ingest_writers {
            let _ = writer.await;
        }
        database.close().await;
        tracing::info!("hookrelay stopped");
        served.context("the HTTP server failed")
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
