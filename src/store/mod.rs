//! All SQL lives here. Functions that touch tenant-owned rows take the caller's
//! `TenantId` first, so no query can reach another tenant's rows. The two
//! deliberate exceptions are lookups that *establish* the tenant: a client by
//! its id (token endpoint) and a repository by its webhook URL id.

pub mod client;
pub mod consumer;
pub mod event;
pub mod quota;
pub mod recovery;
pub mod rekey;
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

pub async fn connect(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .context("cannot connect to the database")
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("cannot apply database migrations")
}

/// For `serve --no-migrate`: the schema must be this release's, or the error
/// says to run `hookrelay migrate`.
pub async fn check_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => applied,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
                anyhow::bail!(
                    "the database has no hookrelay schema: run `hookrelay migrate` first, \
                     or start without --no-migrate (HOOKRELAY_NO_MIGRATE)"
                )
            }
            Err(error) => return Err(error).context("cannot read the applied migrations"),
        };
    let pending = MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count();
    anyhow::ensure!(
        pending == 0,
        "the database schema lacks {pending} migration(s) of this release: run `hookrelay migrate`"
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
