//! The JWT signing keys. Their private keys are sealed here, and only here,
//! under the key-encryption key, bound to their key id.

use sqlx::PgPool;

use crate::secrets::SecretKey;

/// A signing key with its private key (PKCS#8 DER) opened. No Debug: it holds
/// the private key.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: String,
    pub private_key_der: Vec<u8>,
    pub public_jwk: serde_json::Value,
    /// Whether it may sign now (its publish delay is over).
    pub signs: bool,
}

/// A signing key as `hookrelay keys list` shows it (no private key).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: String,
    pub created_at: time::OffsetDateTime,
    pub signs_from: Option<time::OffsetDateTime>,
    pub retire_after: Option<time::OffsetDateTime>,
    pub retired_at: Option<time::OffsetDateTime>,
}

/// Whether a key verifies now: not retired, and not past its retirement.
macro_rules! verifies {
    () => {
        "retired_at is null and (retire_after is null or retire_after > now())"
    };
}

pub(crate) fn sealing_context(kid: &str) -> String {
    format!("signing_key:{kid}")
}

/// The keys that verify, newest first: the first that `signs` signs, all verify.
pub async fn active(pool: &PgPool, key: &SecretKey) -> anyhow::Result<Vec<SigningKey>> {
    let rows: Vec<(String, String, Vec<u8>, serde_json::Value, bool)> = sqlx::query_as(concat!(
        "select kid, algorithm, private_key, public_jwk, coalesce(signs_from <= now(), true) \
         from signing_key where ",
        verifies!(),
        " order by created_at desc, kid"
    ))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(kid, algorithm, sealed, public_jwk, signs)| {
            Ok(SigningKey {
                private_key_der: key.decrypt(&sealed, &sealing_context(&kid))?,
                kid,
                algorithm,
                public_jwk,
                signs,
            })
        })
        .collect()
}

/// Every key, newest first.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<KeyInfo>> {
    Ok(sqlx::query_as(
        "select kid, algorithm, created_at, signs_from, retire_after, retired_at \
         from signing_key order by created_at desc, kid",
    )
    .fetch_all(pool)
    .await?)
}

/// Adds `new`, signing after `publish_delay`; every key that verifies now
/// retires `retire_delay` after that (when the last token it signed expired).
/// Returns the kids that retire, and when.
pub async fn rotate(
    pool: &PgPool,
    key: &SecretKey,
    new: &SigningKey,
    publish_delay: std::time::Duration,
    retire_delay: std::time::Duration,
) -> anyhow::Result<(time::OffsetDateTime, Vec<(String, time::OffsetDateTime)>)> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('hookrelay.signing_key'))")
        .execute(&mut *tx)
        .await?;
    let retiring: Vec<(String, time::OffsetDateTime)> = sqlx::query_as(concat!(
        "update signing_key set retire_after = least(coalesce(retire_after, 'infinity'), \
             now() + make_interval(secs => $1) + make_interval(secs => $2)) \
         where ",
        verifies!(),
        " returning kid, retire_after"
    ))
    .bind(publish_delay.as_secs_f64())
    .bind(retire_delay.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let signs_from: time::OffsetDateTime = sqlx::query_scalar(
        "insert into signing_key (kid, algorithm, private_key, public_jwk, signs_from) \
         values ($1, $2, $3, $4, now() + make_interval(secs => $5)) returning signs_from",
    )
    .bind(&new.kid)
    .bind(&new.algorithm)
    .bind(key.encrypt(&new.private_key_der, &sealing_context(&new.kid)))
    .bind(&new.public_jwk)
    .bind(publish_delay.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((signs_from, retiring))
}

/// Stores `new` unless another replica stored one first; returns the active keys.
/// The advisory lock makes concurrent first starts agree on one key.
pub async fn insert_if_none(
    pool: &PgPool,
    key: &SecretKey,
    new: &SigningKey,
) -> anyhow::Result<Vec<SigningKey>> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('hookrelay.signing_key'))")
        .execute(&mut *tx)
        .await?;
    let existing: i64 = sqlx::query_scalar(concat!(
        "select count(*) from signing_key where ",
        verifies!()
    ))
    .fetch_one(&mut *tx)
    .await?;
    if existing == 0 {
        sqlx::query(
            "insert into signing_key (kid, algorithm, private_key, public_jwk) values ($1, $2, $3, $4)",
        )
        .bind(&new.kid)
        .bind(&new.algorithm)
        .bind(key.encrypt(&new.private_key_der, &sealing_context(&new.kid)))
        .bind(&new.public_jwk)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    active(pool, key).await
}
