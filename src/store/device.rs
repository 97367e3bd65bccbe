//! `hookrelay-agent login`: RFC 8628 device authorizations, the device clients
//! their approval creates, and the rotating refresh tokens those clients renew
//! their access with (RFC 6749 §6, with the reuse detection of the OAuth 2.0
//! security best current practice for public clients).
//!
//! Device and user codes identify an authorization before any tenant is known,
//! so lookups by them are unscoped by design; approving binds it to the
//! approver's tenant. Refresh tokens are looked up by hash, and carry their
//! tenant.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::client::scopes_from_db;
use crate::domain::{ClientId, DisplayName, Quota, Quotas, Scopes, TenantId};
use crate::error::Error;

/// A device authorization waiting for a person, as the approval page shows it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub device_name: String,
    pub scopes: Scopes,
    pub requested_from: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A new device authorization.
pub struct NewAuthorization<'a> {
    pub device_code_hash: &'a [u8],
    pub user_code: &'a str,
    pub device_name: &'a DisplayName,
    pub scopes: &'a Scopes,
    pub requested_from: &'a str,
    pub expires_at: OffsetDateTime,
    pub interval_seconds: i32,
}

/// Stores it; false when the user code is already pending (pick another).
pub async fn create(pool: &PgPool, new: &NewAuthorization<'_>) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "insert into device_authorization (device_authorization_id, device_code_hash, user_code, \
         device_name, scopes, requested_from, expires_at, interval_seconds) \
         values ($1, $2, $3, $4, $5, $6, $7, $8) \
         on conflict (user_code) where status = 'pending' do nothing",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(new.device_code_hash)
    .bind(new.user_code)
    .bind(new.device_name.as_str())
    .bind(new.scopes.to_strings())
    .bind(new.requested_from)
    .bind(new.expires_at)
    .bind(new.interval_seconds)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The pending, unexpired authorization with this user code.
pub async fn pending(pool: &PgPool, user_code: &str) -> Result<Option<Pending>, Error> {
    let row: Option<(String, Vec<String>, String, OffsetDateTime, OffsetDateTime)> =
        sqlx::query_as(
            "select device_name, scopes, requested_from, created_at, expires_at \
             from device_authorization \
             where user_code = $1 and status = 'pending' and expires_at > now()",
        )
        .bind(user_code)
        .fetch_optional(pool)
        .await?;
    row.map(
        |(device_name, scopes, requested_from, created_at, expires_at)| {
            Ok(Pending {
                device_name,
                scopes: scopes_from_db(scopes)?,
                requested_from,
                created_at,
                expires_at,
            })
        },
    )
    .transpose()
}

/// Approves the pending authorization for `tenant_id`: creates the device's
/// client, named after the device, with the scopes it asked for, which the
/// approver must hold (403 otherwise). `secret_hash` is a secret nobody is
/// shown: a device client renews with refresh tokens only.
pub async fn approve(
    pool: &PgPool,
    user_code: &str,
    tenant_id: TenantId,
    approver_scopes: &Scopes,
    quotas: &Quotas,
    secret_hash: &[u8],
) -> Result<ClientId, Error> {
    let mut transaction = pool.begin().await?;
    let pending: Option<(uuid::Uuid, String, Vec<String>)> = sqlx::query_as(
        "select device_authorization_id, device_name, scopes from device_authorization \
         where user_code = $1 and status = 'pending' and expires_at > now() for update",
    )
    .bind(user_code)
    .fetch_optional(&mut *transaction)
    .await?;
    let (id, device_name, scopes) = pending.ok_or(Error::NotFound("device code"))?;
    let scopes = scopes_from_db(scopes)?;
    if !scopes.is_subset(approver_scopes) {
        return Err(Error::Forbidden(format!(
            "the device asks for `{scopes}`; approving needs every one of those scopes"
        )));
    }
    super::quota::admit_one(&mut transaction, tenant_id, Quota::Clients, quotas).await?;
    let client_id = ClientId::generate();
    sqlx::query(
        "insert into client (client_id, tenant_id, name, secret_hash, scopes, device) \
         values ($1, $2, $3, $4, $5, true)",
    )
    .bind(&client_id)
    .bind(tenant_id)
    .bind(&device_name)
    .bind(secret_hash)
    .bind(scopes.to_strings())
    .execute(&mut *transaction)
    .await?;
    sqlx::query(
        "update device_authorization set status = 'approved', tenant_id = $2, client_id = $3 \
         where device_authorization_id = $1",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&client_id)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(client_id)
}

/// Denies the pending authorization; false when there is none with this code.
pub async fn deny(pool: &PgPool, user_code: &str) -> Result<bool, Error> {
    let denied = sqlx::query(
        "update device_authorization set status = 'denied' \
         where user_code = $1 and status = 'pending' and expires_at > now()",
    )
    .bind(user_code)
    .execute(pool)
    .await?;
    Ok(denied.rows_affected() == 1)
}

/// What a device's poll finds (RFC 8628 §3.5).
#[derive(Debug)]
pub enum Poll {
    Unknown,
    Expired,
    /// Polled sooner than its interval; the interval is now this long.
    SlowDown,
    Pending,
    Denied,
    /// Its tokens were issued already: device codes are single-use.
    Used,
    /// Approved: the tokens are this client's, and the first refresh token
    /// (`refresh_hash`) is stored.
    Approved(Grant),
}

/// Whom tokens are issued to.
#[derive(Debug)]
pub struct Grant {
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub scopes: Scopes,
    pub suspended: bool,
}

/// One poll with `device_code_hash`. On approval, marks the authorization
/// issued and stores `refresh_hash` as the first of a new family.
pub async fn poll(
    pool: &PgPool,
    device_code_hash: &[u8],
    refresh_hash: &[u8],
) -> Result<Poll, Error> {
    let mut transaction = pool.begin().await?;
    let row: Option<(uuid::Uuid, String, bool, bool)> = sqlx::query_as(
        "select device_authorization_id, status, expires_at <= now(), \
         polled_at is not null and polled_at + make_interval(secs => interval_seconds) > now() \
         from device_authorization where device_code_hash = $1 for update",
    )
    .bind(device_code_hash)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((id, status, expired, too_soon)) = row else {
        return Ok(Poll::Unknown);
    };
    if expired {
        return Ok(Poll::Expired);
    }
    // RFC 8628 §3.5: slow_down adds 5 seconds to the interval for every later poll.
    sqlx::query(
        "update device_authorization set polled_at = now(), \
         interval_seconds = interval_seconds + case when $2 then 5 else 0 end \
         where device_authorization_id = $1",
    )
    .bind(id)
    .bind(too_soon)
    .execute(&mut *transaction)
    .await?;
    let outcome = match status.as_str() {
        _ if too_soon => Poll::SlowDown,
        "pending" => Poll::Pending,
        "denied" => Poll::Denied,
        "issued" => Poll::Used,
        _ => {
            let row: Option<(TenantId, ClientId, Vec<String>, bool)> = sqlx::query_as(
                "update device_authorization d set status = 'issued' from client c \
                 join tenant t using (tenant_id) \
                 where d.device_authorization_id = $1 and c.client_id = d.client_id \
                 returning c.tenant_id, c.client_id, c.scopes, t.suspended_at is not null",
            )
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await?;
            // The client was deleted before the device came for its tokens.
            let Some((tenant_id, client_id, scopes, suspended)) = row else {
                transaction.commit().await?;
                return Ok(Poll::Denied);
            };
            insert_refresh(
                &mut transaction,
                refresh_hash,
                uuid::Uuid::new_v4(),
                tenant_id,
                &client_id,
            )
            .await?;
            Poll::Approved(Grant {
                tenant_id,
                client_id,
                scopes: scopes_from_db(scopes)?,
                suspended,
            })
        }
    };
    transaction.commit().await?;
    Ok(outcome)
}

async fn insert_refresh(
    connection: &mut PgConnection,
    token_hash: &[u8],
    family_id: uuid::Uuid,
    tenant_id: TenantId,
    client_id: &ClientId,
) -> Result<(), Error> {
    sqlx::query(
        "insert into refresh_token (token_hash, family_id, tenant_id, client_id) \
         values ($1, $2, $3, $4)",
    )
    .bind(token_hash)
    .bind(family_id)
    .bind(tenant_id)
    .bind(client_id)
    .execute(connection)
    .await?;
    Ok(())
}

/// What presenting a refresh token finds.
#[derive(Debug)]
pub enum Refresh {
    Unknown,
    Revoked,
    /// It had been used already: the whole family is revoked now.
    Reused {
        tenant_id: TenantId,
        client_id: ClientId,
    },
    /// Rotated: `new_hash` replaces it.
    Rotated(Grant),
}

/// A presented refresh token, with its client's scopes and tenant's state.
#[derive(sqlx::FromRow)]
struct Presented {
    family_id: uuid::Uuid,
    tenant_id: TenantId,
    client_id: ClientId,
    rotated: bool,
    revoked: bool,
    scopes: Vec<String>,
    suspended: bool,
}

/// Uses the refresh token with `hash` once, storing `new_hash` in its place.
pub async fn rotate(pool: &PgPool, hash: &[u8], new_hash: &[u8]) -> Result<Refresh, Error> {
    let mut transaction = pool.begin().await?;
    let row: Option<Presented> = sqlx::query_as(
        "select r.family_id, r.tenant_id, r.client_id, r.rotated_at is not null as rotated, \
         r.revoked_at is not null as revoked, c.scopes, t.suspended_at is not null as suspended \
         from refresh_token r join client c using (client_id) \
         join tenant t on t.tenant_id = r.tenant_id \
         where r.token_hash = $1 for update of r",
    )
    .bind(hash)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(Presented {
        family_id: family,
        tenant_id,
        client_id,
        rotated,
        revoked,
        scopes,
        suspended,
    }) = row
    else {
        return Ok(Refresh::Unknown);
    };
    if revoked {
        return Ok(Refresh::Revoked);
    }
    if rotated {
        revoke_family(&mut transaction, family).await?;
        transaction.commit().await?;
        return Ok(Refresh::Reused {
            tenant_id,
            client_id,
        });
    }
    sqlx::query("update refresh_token set rotated_at = now() where token_hash = $1")
        .bind(hash)
        .execute(&mut *transaction)
        .await?;
    insert_refresh(&mut transaction, new_hash, family, tenant_id, &client_id).await?;
    sqlx::query("update client set last_used_at = now() where tenant_id = $1 and client_id = $2")
        .bind(tenant_id)
        .bind(&client_id)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(Refresh::Rotated(Grant {
        tenant_id,
        client_id,
        scopes: scopes_from_db(scopes)?,
        suspended,
    }))
}

async fn revoke_family(connection: &mut PgConnection, family: uuid::Uuid) -> Result<(), Error> {
    sqlx::query(
        "update refresh_token set revoked_at = now() where family_id = $1 and revoked_at is null",
    )
    .bind(family)
    .execute(connection)
    .await?;
    Ok(())
}

/// RFC 7009: revokes the family of the refresh token with `hash`, if there is one.
pub async fn revoke(pool: &PgPool, hash: &[u8]) -> Result<bool, Error> {
    let mut transaction = pool.begin().await?;
    let family: Option<uuid::Uuid> =
        sqlx::query_scalar("select family_id from refresh_token where token_hash = $1")
            .bind(hash)
            .fetch_optional(&mut *transaction)
            .await?;
    if let Some(family) = family {
        revoke_family(&mut transaction, family).await?;
    }
    transaction.commit().await?;
    Ok(family.is_some())
}

/// Deletes authorizations that expired a day ago or more: the table holds only
/// what a device or a person may still act on, and a day of history.
pub async fn delete_expired(pool: &PgPool) -> Result<u64, Error> {
    let deleted =
        sqlx::query("delete from device_authorization where expires_at < now() - interval '1 day'")
            .execute(pool)
            .await?;
    Ok(deleted.rows_affected())
}
