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
}

fn sealing_context(kid: &str) -> String {
    format!("signing_key:{kid}")
}

/// Keys not retired, newest first: the first signs, all verify.
pub async fn active(pool: &PgPool, key: &SecretKey) -> anyhow::Result<Vec<SigningKey>> {
    let rows: Vec<(String, String, Vec<u8>, serde_json::Value)> = sqlx::query_as(
        "select kid, algorithm, private_key, public_jwk from signing_key \
         where retired_at is null order by created_at desc, kid",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(kid, algorithm, sealed, public_jwk)| {
            Ok(SigningKey {
                private_key_der: key.decrypt(&sealed, &sealing_context(&kid))?,
                kid,
                algorithm,
                public_jwk,
            })
        })
        .collect()
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
    let existing: i64 =
        sqlx::query_scalar("select count(*) from signing_key where retired_at is null")
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
