//! `hookrelay secrets rekey`: every sealed column re-sealed under the current
//! key-encryption key, while servers run with both keys (the current one seals,
//! either opens). Each row is updated only if it still holds the ciphertext
//! read, so a secret rotated meanwhile is left as its server wrote it (already
//! under the current key). Rows already under the current key are skipped, so
//! the command can be run again after an interruption.

use sqlx::PgPool;

use super::sealing::SealedHeaders;
use crate::domain::{Provider, RepositoryId};
use crate::secrets::SecretKey;

/// How many values were re-sealed, per kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rekeyed {
    pub key_check: u64,
    pub webhook_secrets: u64,
    pub signing_keys: u64,
    pub event_headers: u64,
    pub provider_credentials: u64,
}

pub async fn rekey(pool: &PgPool, key: &SecretKey) -> anyhow::Result<Rekeyed> {
    let mut done = Rekeyed::default();

    let check: Vec<u8> = sqlx::query_scalar("select sealed from secret_key_check")
        .fetch_one(pool)
        .await?;
    if let Some(resealed) = key.reseal(&check, super::KEY_CHECK_CONTEXT)? {
        done.key_check += sqlx::query("update secret_key_check set sealed = $1 where sealed = $2")
            .bind(resealed)
            .bind(&check)
            .execute(pool)
            .await?
            .rows_affected();
    }

    let repositories: Vec<(RepositoryId, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "select repository_id, webhook_secret, previous_webhook_secret from repository",
    )
    .fetch_all(pool)
    .await?;
    for (id, current, previous) in repositories {
        let context = super::repository::sealing_context(id);
        if let Some(resealed) = key.reseal(&current, &context)? {
            done.webhook_secrets += sqlx::query(
                "update repository set webhook_secret = $1 \
                 where repository_id = $2 and webhook_secret = $3",
            )
            .bind(resealed)
            .bind(id)
            .bind(&current)
            .execute(pool)
            .await?
            .rows_affected();
        }
        if let Some(previous) = previous
            && let Some(resealed) = key.reseal(&previous, &context)?
        {
            done.webhook_secrets += sqlx::query(
                "update repository set previous_webhook_secret = $1 \
                 where repository_id = $2 and previous_webhook_secret = $3",
            )
            .bind(resealed)
            .bind(id)
            .bind(&previous)
            .execute(pool)
            .await?
            .rows_affected();
        }
    }

    let signing_keys: Vec<(String, Vec<u8>)> =
        sqlx::query_as("select kid, private_key from signing_key")
            .fetch_all(pool)
            .await?;
    for (kid, sealed) in signing_keys {
        let context = super::signing_key::sealing_context(&kid);
        if let Some(resealed) = key.reseal(&sealed, &context)? {
            done.signing_keys += sqlx::query(
                "update signing_key set private_key = $1 where kid = $2 and private_key = $3",
            )
            .bind(resealed)
            .bind(&kid)
            .bind(&sealed)
            .execute(pool)
            .await?
            .rows_affected();
        }
    }

    let access: Vec<(RepositoryId, Vec<u8>)> =
        sqlx::query_as("select repository_id, credentials from provider_access")
            .fetch_all(pool)
            .await?;
    for (id, sealed) in access {
        let context = super::recovery::sealing_context(id);
        if let Some(resealed) = key.reseal(&sealed, &context)? {
            done.provider_credentials += sqlx::query(
                "update provider_access set credentials = $1 \
                 where repository_id = $2 and credentials = $3",
            )
            .bind(resealed)
            .bind(id)
            .bind(&sealed)
            .execute(pool)
            .await?
            .rows_affected();
        }
    }

    // Events whose headers hold a sealed value (GitLab's token), in pages.
    let mut after = 0i64;
    loop {
        type Row = (i64, RepositoryId, String, SealedHeaders);
        let rows: Vec<Row> = sqlx::query_as(
            "select event_id, repository_id, provider, headers from event \
             where event_id > $1 and headers::text like '%hookrelay-sealed:%' \
             order by event_id limit 500",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        for (event_id, repository_id, provider, headers) in rows {
            let Ok(provider) = provider.parse::<Provider>() else {
                continue;
            };
            let original = headers.clone();
            let mut headers = headers;
            if headers.reseal(provider, repository_id, key)? {
                done.event_headers += sqlx::query(
                    "update event set headers = $1 where event_id = $2 and headers = $3",
                )
                .bind(headers.stored())
                .bind(event_id)
                .bind(original.stored())
                .execute(pool)
                .await?
                .rows_affected();
            }
        }
    }
    Ok(done)
}
