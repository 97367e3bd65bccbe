//! Provider access per repository (sealed credentials), recovery runs, and
//! the redeliveries they asked for. Every query a tenant's request reaches
//! takes its `TenantId`; the background job's list of repositories to read
//! is the one unscoped query, and it returns ids only.

use std::collections::HashSet;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use url::Url;

use crate::domain::{ProviderCredentials, RecoveryId, RepositoryId, TenantId};
use crate::error::Error;
use crate::secrets::SecretKey;

pub(crate) fn sealing_context(id: RepositoryId) -> String {
    format!("repository:{id}:provider_access")
}

/// Provider access as shown: never the credentials.
#[derive(Debug, Clone, Serialize)]
pub struct AccessView {
    pub kind: String,
    pub api_url: String,
    pub hook_id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
}

/// Provider access with its credentials opened, for a recovery run.
#[derive(Debug, Clone)]
pub struct OpenedAccess {
    pub credentials: ProviderCredentials,
    pub api_url: Url,
    pub hook_id: i64,
}

/// Installs (or replaces) the repository's provider access, checked by the caller.
pub async fn put_access(
    pool: &PgPool,
    key: &SecretKey,
    tenant_id: TenantId,
    repository_id: RepositoryId,
    access: &OpenedAccess,
) -> Result<AccessView, Error> {
    let credentials = SecretString::from(
        serde_json::to_string(&access.credentials).map_err(anyhow::Error::from)?,
    );
    let sealed = key.encrypt(
        credentials.expose_secret().as_bytes(),
        &sealing_context(repository_id),
    );
    let row: (String, String, i64, OffsetDateTime) = sqlx::query_as(
        "insert into provider_access (repository_id, tenant_id, kind, api_url, hook_id, \
             credentials, checked_at) \
         select repository_id, tenant_id, $3, $4, $5, $6, now() from repository \
          where tenant_id = $1 and repository_id = $2 \
         on conflict (repository_id) do update set kind = excluded.kind, \
             api_url = excluded.api_url, hook_id = excluded.hook_id, \
             credentials = excluded.credentials, checked_at = excluded.checked_at \
         returning kind, api_url, hook_id, checked_at",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .bind(access.credentials.kind())
    // As given: `https://api.github.com`, not the parsed form's trailing `/`.
    .bind(access.api_url.as_str().trim_end_matches('/'))
    .bind(access.hook_id)
    .bind(sealed)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("repository"))?;
    Ok(AccessView {
        kind: row.0,
        api_url: row.1,
        hook_id: row.2,
        checked_at: row.3,
    })
}

pub async fn access(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
) -> Result<Option<AccessView>, Error> {
    let row: Option<(String, String, i64, OffsetDateTime)> = sqlx::query_as(
        "select kind, api_url, hook_id, checked_at from provider_access \
         where tenant_id = $1 and repository_id = $2",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(kind, api_url, hook_id, checked_at)| AccessView {
        kind,
        api_url,
        hook_id,
        checked_at,
    }))
}

/// The access with its credentials, to call the provider.
pub async fn opened_access(
    pool: &PgPool,
    key: &SecretKey,
    tenant_id: TenantId,
    repository_id: RepositoryId,
) -> Result<Option<OpenedAccess>, Error> {
    let row: Option<(String, i64, Vec<u8>)> = sqlx::query_as(
        "select api_url, hook_id, credentials from provider_access \
         where tenant_id = $1 and repository_id = $2",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .fetch_optional(pool)
    .await?;
    let Some((api_url, hook_id, sealed)) = row else {
        return Ok(None);
    };
    let opened = key.decrypt(&sealed, &sealing_context(repository_id))?;
    let credentials = serde_json::from_slice(&opened)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored provider credentials: {e}")))?;
    let api_url = Url::parse(&api_url)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored api_url: {e}")))?;
    Ok(Some(OpenedAccess {
        credentials,
        api_url,
        hook_id,
    }))
}

pub async fn delete_access(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
) -> Result<bool, Error> {
    let deleted =
        sqlx::query("delete from provider_access where tenant_id = $1 and repository_id = $2")
            .bind(tenant_id)
            .bind(repository_id)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(deleted == 1)
}

/// Every repository with provider access, for the scheduled runs (unscoped:
/// the operator's job, which then works within each row's tenant).
pub async fn all_access(pool: &PgPool) -> Result<Vec<(TenantId, RepositoryId)>, Error> {
    Ok(sqlx::query_as(
        "select tenant_id, repository_id from provider_access order by repository_id",
    )
    .fetch_all(pool)
    .await?)
}

/// Takes (or renews, for the same holder) the repository's recovery lease;
/// false while another run holds it.
pub async fn take_lease(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
    holder: RecoveryId,
    lease: Duration,
) -> Result<bool, Error> {
    let taken = sqlx::query(
        "update provider_access set lease_holder = $3, \
             lease_until = now() + make_interval(secs => $4) \
         where tenant_id = $1 and repository_id = $2 \
           and (lease_holder is null or lease_holder = $3 or lease_until < now())",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .bind(holder)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(taken == 1)
}

pub async fn release_lease(
    pool: &PgPool,
    repository_id: RepositoryId,
    holder: RecoveryId,
) -> Result<(), Error> {
    sqlx::query(
        "update provider_access set lease_holder = null, lease_until = null \
         where repository_id = $1 and lease_holder = $2",
    )
    .bind(repository_id)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(())
}

/// The run holding the repository's lease, if one does.
pub async fn running(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
) -> Result<Option<RecoveryId>, Error> {
    Ok(sqlx::query_scalar(
        "select lease_holder from provider_access \
         where tenant_id = $1 and repository_id = $2 and lease_until > now()",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// Where a run's window starts by default: the start of the last run that
/// completed without error, less `overlap`; None when there was none.
pub async fn last_complete_start(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
) -> Result<Option<OffsetDateTime>, Error> {
    Ok(sqlx::query_scalar(
        "select max(started_at) from recovery_run \
         where tenant_id = $1 and repository_id = $2 and finished_at is not null \
           and error is null",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .fetch_one(pool)
    .await?)
}

/// When the repository's latest run started, on any replica.
pub async fn last_started(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
) -> Result<Option<OffsetDateTime>, Error> {
    Ok(sqlx::query_scalar(
        "select max(started_at) from recovery_run where tenant_id = $1 and repository_id = $2",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .fetch_one(pool)
    .await?)
}

/// Records a new run (the caller holds the lease under `id`). Runs of the
/// repository left unfinished by a stopped replica are closed as interrupted:
/// this run covers their window again.
pub async fn start_run(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
    id: RecoveryId,
    trigger: &str,
    window_start: OffsetDateTime,
) -> Result<(), Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query(
        "update recovery_run set finished_at = now(), \
             error = 'interrupted: the replica running it stopped; a later run covers its window' \
         where tenant_id = $1 and repository_id = $2 and finished_at is null",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .execute(&mut *transaction)
    .await?;
    sqlx::query(
        "insert into recovery_run (recovery_id, tenant_id, repository_id, trigger, window_start) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(repository_id)
    .bind(trigger)
    .bind(window_start)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// A delivery hookrelay refused with a 4xx: reported, not redelivered.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Refused {
    pub delivery_id: String,
    pub status_code: u16,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    pub event: String,
}

/// What a run found, written when it ends.
#[derive(Debug, Clone, Default)]
pub struct RunTotals {
    pub scanned: i64,
    pub missing: i64,
    pub refused: Vec<Refused>,
    pub api_calls: i64,
    pub error: Option<String>,
}

pub async fn finish_run(pool: &PgPool, id: RecoveryId, totals: &RunTotals) -> Result<(), Error> {
    sqlx::query(
        "update recovery_run set finished_at = now(), scanned = $2, missing = $3, refused = $4, \
             api_calls = $5, error = $6 where recovery_id = $1",
    )
    .bind(id)
    .bind(i32::try_from(totals.scanned).unwrap_or(i32::MAX))
    .bind(i32::try_from(totals.missing).unwrap_or(i32::MAX))
    .bind(sqlx::types::Json(&totals.refused))
    .bind(i32::try_from(totals.api_calls).unwrap_or(i32::MAX))
    .bind(&totals.error)
    .execute(pool)
    .await?;
    Ok(())
}

/// A run as `GET /v1/repositories/{id}/recoveries` shows it. `recovered`
/// counts the redeliveries it asked for whose events are now stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Run {
    pub id: RecoveryId,
    pub trigger: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub window_start: OffsetDateTime,
    pub scanned: i32,
    pub missing: i32,
    pub redelivery_requested: i64,
    pub recovered: i64,
    pub refused: sqlx::types::Json<Vec<Refused>>,
    pub api_calls: i32,
    pub error: Option<String>,
}

/// The repository's runs, newest first.
pub async fn runs(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
    limit: i64,
) -> Result<Vec<Run>, Error> {
    Ok(sqlx::query_as(
        "select r.recovery_id as id, r.trigger, r.started_at, r.finished_at, r.window_start, \
                r.scanned, r.missing, r.refused, r.api_calls, r.error, \
                (select count(*) from recovery_redelivery d \
                  where d.recovery_id = r.recovery_id and d.requested_at is not null) \
                  as redelivery_requested, \
                (select count(*) from recovery_redelivery d \
                  where d.recovery_id = r.recovery_id and d.requested_at is not null \
                    and exists (select 1 from event e where e.repository_id = d.repository_id \
                                  and e.delivery_id = d.delivery_id)) as recovered \
         from recovery_run r where r.tenant_id = $1 and r.repository_id = $2 \
         order by r.started_at desc, r.recovery_id limit $3",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Which of `delivery_ids` the repository has stored.
pub async fn stored(
    pool: &PgPool,
    tenant_id: TenantId,
    repository_id: RepositoryId,
    delivery_ids: &[String],
) -> Result<HashSet<String>, Error> {
    let found: Vec<String> = sqlx::query_scalar(
        "select delivery_id from event \
         where tenant_id = $1 and repository_id = $2 and delivery_id = any($3)",
    )
    .bind(tenant_id)
    .bind(repository_id)
    .bind(delivery_ids)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

/// How many redeliveries were asked for each of `delivery_ids`, and which
/// log entries were asked for already.
pub async fn asked(
    pool: &PgPool,
    repository_id: RepositoryId,
    delivery_ids: &[String],
) -> Result<Vec<(String, String)>, Error> {
    Ok(sqlx::query_as(
        "select delivery_id, log_id from recovery_redelivery \
         where repository_id = $1 and delivery_id = any($2)",
    )
    .bind(repository_id)
    .bind(delivery_ids)
    .fetch_all(pool)
    .await?)
}

/// Claims the log entry for a redelivery; false when another run has (a
/// claim left unconfirmed for longer than `takeover` is taken over).
pub async fn claim(
    pool: &PgPool,
    repository_id: RepositoryId,
    log_id: &str,
    delivery_id: &str,
    recovery_id: RecoveryId,
    takeover: Duration,
) -> Result<bool, Error> {
    let claimed = sqlx::query(
        "insert into recovery_redelivery (repository_id, log_id, delivery_id, recovery_id) \
         values ($1, $2, $3, $4) \
         on conflict (repository_id, log_id) do update \
             set recovery_id = excluded.recovery_id, claimed_at = now() \
           where recovery_redelivery.requested_at is null \
             and recovery_redelivery.claimed_at < now() - make_interval(secs => $5)",
    )
    .bind(repository_id)
    .bind(log_id)
    .bind(delivery_id)
    .bind(recovery_id)
    .bind(takeover.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// The provider said yes (`asked`), or no: the claim is dropped so a later
/// run can ask again.
pub async fn settle(
    pool: &PgPool,
    repository_id: RepositoryId,
    log_id: &str,
    asked: bool,
) -> Result<(), Error> {
    let query = if asked {
        "update recovery_redelivery set requested_at = now() \
         where repository_id = $1 and log_id = $2"
    } else {
        "delete from recovery_redelivery where repository_id = $1 and log_id = $2"
    };
    sqlx::query(query)
        .bind(repository_id)
        .bind(log_id)
        .execute(pool)
        .await?;
    Ok(())
}
