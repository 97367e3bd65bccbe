//! The database the server runs on: an external one (DATABASE_URL), or the
//! embedded default, supervised and locked to one server per data directory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseConfig;
use crate::embedded_db::{EmbeddedOptions, EmbeddedPostgres};
use crate::store;

/// The database the server runs on: an external one, or the embedded default.
pub struct Database {
    pub pool: PgPool,
    /// Ingest's own connections, which nothing else can take: a burst of
    /// streams, watches or API calls that fills `pool` (503 for them) leaves
    /// webhooks their way to the database.
    pub ingest: PgPool,
    embedded: Option<Embedded>,
}

/// The ingest pool's size: the writer's batches in flight, whose connections
/// it keeps between batches (`relay::ingest`), and two more for the webhook
/// targets' cache misses and a batch's retry on a checked connection.
pub const INGEST_CONNECTIONS: u32 = crate::relay::ingest::PIPELINE as u32 + 2;

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
                    settings: Vec::new(),
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
        let pool = store::connect(options.clone(), config.max_connections).await?;
        let ingest = store::connect(options, INGEST_CONNECTIONS).await?;
        Ok(Self {
            pool,
            ingest,
            embedded,
        })
    }

    /// Closes the pool, then stops the embedded server, if any.
    pub async fn close(self) {
        self.pool.close().await;
        self.ingest.close().await;
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
    match result? {
        None => tracing::info!(version = store::release::VERSION, "migrations applied"),
        // Never backwards: a newer release's migrations stay, and this
        // release serves them (store::release).
        Some(newer) => tracing::warn!(
            version = store::release::VERSION,
            migrated_by = %newer,
            "nothing to apply: the database is migrated by a newer release, which this one can serve"
        ),
    }
    Ok(())
}
