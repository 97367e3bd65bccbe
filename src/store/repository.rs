//! A tenant's repositories and their webhook secrets, sealed at rest here.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::secrets::SecretKey;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::domain::{
    Provider, Quota, Quotas, RepositoryId, RepositoryName, TenantId, WebhookQuota, WebhookSettings,
};
use crate::error::{Error, violated_constraint};

#[derive(Debug, Clone)]
pub struct Repository {
    pub id: RepositoryId,
    pub provider: Provider,
    pub name: String,
    pub created_at: OffsetDateTime,
    /// Until when the previous webhook secret still verifies, during a rotation.
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    pub settings: WebhookSettings,
}

type RepositoryRow = (
    RepositoryId,
    String,
    String,
    OffsetDateTime,
    Option<OffsetDateTime>,
    sqlx::types::Json<WebhookSettings>,
);

fn from_row(
    (id, provider, name, created_at, expires, settings): RepositoryRow,
) -> Result<Repository, Error> {
    let provider = provider
        .parse()
        .map_err(|e: String| Error::Internal(anyhow::anyhow!("stored provider: {e}")))?;
    let previous_secret_expires_at = expires.filter(|at| *at > OffsetDateTime::now_utc());
    Ok(Repository {
        id,
        provider,
        name,
        created_at,
        previous_secret_expires_at,
        settings: settings.0,
    })
}

/// The columns of `RepositoryRow`, spliced into static SQL.
macro_rules! columns {
    () => {
        "repository_id, provider, name, created_at, previous_secret_expires_at, settings"
    };
}

/// Where a webhook goes, and the secrets that may sign it, opened, each with
/// the time it stops verifying (None: the current secret). No Debug: it holds
/// secrets.
pub struct WebhookTarget {
    pub tenant_id: TenantId,
    pub repository_id: RepositoryId,
    pub provider: Provider,
    pub settings: WebhookSettings,
    /// Its tenant is suspended: webhooks are refused (403).
    pub suspended: bool,
    /// The operator's overrides of its tenant's webhook quotas, if any.
    pub quota: WebhookQuota,
    pub secrets: Vec<(Vec<u8>, Option<OffsetDateTime>)>,
}

/// Webhook secrets are sealed here, and only here: the column is the store's.
/// The associated data binds each ciphertext to its repository.
pub(crate) fn sealing_context(id: RepositoryId) -> String {
    format!("repository:{id}:webhook_secret")
}

fn seal(key: &SecretKey, id: RepositoryId, secret: &SecretString) -> Vec<u8> {
    key.encrypt(secret.expose_secret().as_bytes(), &sealing_context(id))
}

/// A repository to register.
pub struct NewRepository {
    pub id: RepositoryId,
    pub provider: Provider,
    pub name: RepositoryName,
    pub settings: WebhookSettings,
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, repository_id = %new.id))]
pub async fn create(
    pool: &PgPool,
    key: &SecretKey,
    tenant_id: TenantId,
    new: &NewRepository,
    secret: &SecretString,
    quotas: &Quotas,
) -> Result<Repository, Error> {
    let mut transaction = pool.begin().await?;
    super::quota::admit_one(&mut transaction, tenant_id, Quota::Repositories, quotas).await?;
    let NewRepository {
        id,
        provider,
        name,
        settings,
    } = new;
    let sealed_secret = seal(key, *id, secret);
    let row: RepositoryRow = sqlx::query_as(concat!(
        "insert into repository (repository_id, tenant_id, provider, name, webhook_secret, settings) \
         values ($1, $2, $3, $4, $5, $6) returning ",
        columns!(),
        ""
    ))
    .bind(id)
    .bind(tenant_id)
    .bind(provider.as_str())
    .bind(name.as_str())
    .bind(&sealed_secret)
    .bind(sqlx::types::Json(settings))
    .fetch_one(&mut *transaction)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("repository_tenant_provider_name_key") => Error::Conflict(format!(
            "repository {provider}:{} is already registered",
            name.as_str()
        )),
        _ => e.into(),
    })?;
    transaction.commit().await?;
    from_row(row)
}

/// Up to `limit` of the tenant's repositories in creation order, after `after`.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    after: Option<(OffsetDateTime, RepositoryId)>,
    limit: i64,
) -> Result<Vec<Repository>, Error> {
    let rows: Vec<RepositoryRow> = sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from repository where tenant_id = $1 \
          and ($2::timestamptz is null or (created_at, repository_id) > ($2, $3)) \
          order by created_at, repository_id limit $4"
    ))
    .bind(tenant_id)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_row).collect()
}

pub async fn get(
    pool: &PgPool,
    tenant_id: TenantId,
    id: RepositoryId,
) -> Result<Option<Repository>, Error> {
    let row: Option<RepositoryRow> = sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from repository where tenant_id = $1 and repository_id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(from_row).transpose()
}

/// Deletes the repository and, with it (its key cascades), its stored events,
/// recording the bytes they freed (the stored-bytes quota, `store::quota`).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, repository_id = %id))]
pub async fn delete(pool: &PgPool, tenant_id: TenantId, id: RepositoryId) -> Result<bool, Error> {
    let result = sqlx::query(
        "with gone as ( \
             delete from repository where tenant_id = $1 and repository_id = $2 returning repository_id \
         ), freed as ( \
             insert into event_bytes_deleted (tenant_id, bytes) \
             select $1, sum(octet_length(e.body)) from event e join gone using (repository_id) \
             having count(*) > 0 \
         ) \
         select from gone",
    )
    .bind(tenant_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Installs a new webhook secret; the current one keeps verifying for `grace`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, repository_id = %id))]
pub async fn rotate_secret(
    pool: &PgPool,
    key: &SecretKey,
    tenant_id: TenantId,
    id: RepositoryId,
    secret: &SecretString,
    grace: Duration,
) -> Result<Option<Repository>, Error> {
    let sealed_secret = seal(key, id, secret);
    let row: Option<RepositoryRow> = sqlx::query_as(concat!(
        "update repository set previous_webhook_secret = webhook_secret, \
             previous_secret_expires_at = now() + make_interval(secs => $4), \
             webhook_secret = $3 \
         where tenant_id = $1 and repository_id = $2 returning ",
        columns!(),
        ""
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(&sealed_secret)
    .bind(grace.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    row.map(from_row).transpose()
}

/// Unscoped by design: the id in the webhook URL is what names the tenant, and
/// the signature check that follows is what authenticates the sender.
pub async fn webhook_target(
    pool: &PgPool,
    key: &SecretKey,
    id: RepositoryId,
) -> Result<Option<WebhookTarget>, Error> {
    type TargetRow = (
        TenantId,
        String,
        Vec<u8>,
        Option<Vec<u8>>,
        Option<OffsetDateTime>,
        sqlx::types::Json<WebhookSettings>,
        bool,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let row: Option<TargetRow> = sqlx::query_as(
        "select r.tenant_id, r.provider, r.webhook_secret, \
                case when r.previous_secret_expires_at > now() then r.previous_webhook_secret end, \
                r.previous_secret_expires_at, r.settings, t.suspended_at is not null, \
                q.webhooks_per_second, q.webhook_burst, q.stored_event_bytes \
         from repository r join tenant t using (tenant_id) \
         left join tenant_quota q using (tenant_id) where r.repository_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((
        tenant_id,
        provider,
        current,
        previous,
        previous_until,
        settings,
        suspended,
        per_second,
        burst,
        stored_event_bytes,
    )) = row
    else {
        return Ok(None);
    };
    let provider = provider
        .parse()
        .map_err(|e: String| Error::Internal(anyhow::anyhow!("stored provider: {e}")))?;
    let open = |sealed: &[u8]| key.decrypt(sealed, &sealing_context(id));
    let mut secrets = vec![(open(&current)?, None)];
    if let Some(sealed) = previous {
        secrets.push((open(&sealed)?, previous_until));
    }
    Ok(Some(WebhookTarget {
        tenant_id,
        repository_id: id,
        provider,
        settings: settings.0,
        suspended,
        quota: WebhookQuota {
            per_second,
            burst,
            stored_event_bytes,
        },
        secrets,
    }))
}

/// Which of `ids` belong to the tenant.
pub async fn owned(
    pool: &PgPool,
    tenant_id: TenantId,
    ids: &[RepositoryId],
) -> Result<Vec<RepositoryId>, Error> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(RepositoryId::as_uuid).collect();
    let owned = sqlx::query_scalar(
        "select repository_id from repository where tenant_id = $1 and repository_id = any($2)",
    )
    .bind(tenant_id)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(owned)
}
