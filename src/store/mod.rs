//! All SQL lives here. Functions that touch tenant-owned rows take the caller's
//! `TenantId` first, so no query can reach another tenant's rows. The two
//! deliberate exceptions are lookups that *establish* the tenant: a client by
//! its id (token endpoint) and a repository by its webhook URL id.

pub mod client;
pub mod consumer;
pub mod device;
pub mod event;
pub mod quota;
pub mod recovery;
pub mod rekey;
pub mod release;
pub mod repository;
pub mod sealing;
pub mod signing_key;
pub mod tenant;
pub mod trusted_issuer;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::secrets::SecretKey;

/// The migrations in migrations/, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// A connection idle longer than this is pinged before it is handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pings a connection that has rested `idle_for`, if that is longer than
/// `PING_IDLE_AFTER`: the pool's rule, and the ingest writer's for the
/// connections it keeps.
pub async fn check_if_idle(
    conn: &mut sqlx::PgConnection,
    idle_for: Duration,
) -> Result<(), sqlx::Error> {
    if idle_for > PING_IDLE_AFTER {
        sqlx::Connection::ping(conn).await?;
    }
    Ok(())
}

/// The pool every query runs on. sqlx pings each connection before handing it
/// out (and again when it comes back): a database round trip on the webhook's
/// path before its INSERT, measured at 40 µs of its 0.7 ms at one client
/// (docs/benchmarks.md). Here only a connection idle for `PING_IDLE_AFTER` is
/// pinged, the one that may have died unnoticed (a database restart, a proxy
/// timeout); one that failed in use is pinged as it comes back and dropped if
/// broken, so it is not handed out again.
pub async fn connect(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                check_if_idle(conn, meta.idle_for).await?;
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .context("cannot connect to the database")
}

/// Applies this release's pending migrations, after checking that this
/// release may serve the database (`release`); migrations a newer release
/// applied are left as they are. Returns the newer release, if one migrated it.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<Option<semver::Version>> {
    let migrated = release::migrated(pool).await?;
    release::check(&migrated)?;
    let mut migrator = sqlx::migrate!();
    // Safe only after `release::check`: what this binary does not know is a
    // newer release's, which says this one can serve it.
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .context("cannot apply database migrations")?;
    let newer = migrated
        .newest
        .filter(|newest| *newest > semver::Version::parse(release::VERSION).expect("valid"));
    if newer.is_none() {
        release::record(pool).await?;
    }
    Ok(newer)
}

/// For `serve --no-migrate`: this release may serve the database, and its
/// schema has every migration of this release, or the error says to run
/// `hookrelay migrate`.
pub async fn check_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let migrated = release::migrated(pool).await?;
    release::check(&migrated)?;
    anyhow::ensure!(
        !migrated.fresh,
        "the database has no hookrelay schema: run `hookrelay migrate` first, \
         or start without --no-migrate (HOOKRELAY_NO_MIGRATE)"
    );
    anyhow::ensure!(
        migrated.pending == 0,
        "the database schema lacks {} migration(s) of this release: run `hookrelay migrate`",
        migrated.pending
    );
    Ok(())
}

pub(crate) const KEY_CHECK_CONTEXT: &str = "secret_key_check";
const KEY_CHECK_VALUE: &[u8] = b"hookrelay key-encryption key check";

/// Records the key-encryption key's check value on first use and verifies it
/// afterwards, so a replica with the wrong key stops at start.
pub async fn check_secret_key(pool: &PgPool, key: &SecretKey) -> anyhow::Result<()> {
    sqlx::query("insert into secret_key_check (sealed) values ($1) on conflict do nothing")
        .bind(key.encrypt(KEY_CHECK_VALUE, KEY_CHECK_CONTEXT))
        .execute(pool)
        .await?;
    let sealed: Vec<u8> = sqlx::query_scalar("select sealed from secret_key_check")
        .fetch_one(pool)
        .await?;
    match key.decrypt(&sealed, KEY_CHECK_CONTEXT) {
        Ok(value) if value == KEY_CHECK_VALUE => Ok(()),
        _ => anyhow::bail!(
            "HOOKRELAY_SECRET_KEY is not the key this database's secrets were encrypted with"
        ),
    }
}

/// Whether the database answers: the readiness check.
pub async fn ping(pool: &PgPool) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("select 1").execute(pool),
    )
    .await
    .is_ok_and(|result| result.is_ok())
}

/// Whether a token's principal (a client, or a trusted issuer for exchanged
/// tokens) may still act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalState {
    Active,
    /// The client or trusted issuer was deleted.
    Deleted,
    /// Its tenant is suspended (`hookrelay tenants suspend`).
    Suspended,
}

impl PrincipalState {
    /// From a lookup of the tenant's `suspended_at is not null`: no row, deleted.
    pub fn from_suspended(suspended: Option<bool>) -> Self {
        match suspended {
            None => PrincipalState::Deleted,
            Some(true) => PrincipalState::Suspended,
            Some(false) => PrincipalState::Active,
        }
    }
}
