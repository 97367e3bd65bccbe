use sqlx::PgPool;

/// A stored signing key; `private_key` is sealed under the key-encryption key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub public_jwk: serde_json::Value,
}

/// Keys not retired, newest first: the first signs, all verify.
pub async fn active(pool: &PgPool) -> Result<Vec<StoredKey>, sqlx::Error> {
    sqlx::query_as(
        "select kid, algorithm, private_key, public_jwk from signing_key \
         where retired_at is null order by created_at desc, kid",
    )
    .fetch_all(pool)
    .await
}

/// Stores `key` unless another replica stored one first; returns the active keys.
/// The advisory lock makes concurrent first starts agree on one key.
pub async fn insert_if_none(pool: &PgPool, key: &StoredKey) -> Result<Vec<StoredKey>, sqlx::Error> {
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
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    active(pool).await
}
