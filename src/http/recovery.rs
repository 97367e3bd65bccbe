//! A repository's provider access, its recovery runs, and the hook doctor:
//! `/v1/repositories/{id}/provider-access`, `…/recover`, `…/recoveries`,
//! `…/hook` (see `crate::recovery`).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ApiJson;
use super::repositories::parse_id;
use crate::auth::{Authorized, ReposRead, ReposWrite};
use crate::domain::{ProviderAccessRequest, RecoveryId, TenantId};
use crate::error::Error;
use crate::recovery::{Diagnosis, NotStarted, RUNS_SHOWN, Trigger};
use crate::state::AppState;
use crate::store;
use crate::store::recovery::{AccessView, Run};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/repositories/{id}/provider-access",
            get(show_access).put(put_access).delete(delete_access),
        )
        .route("/v1/repositories/{id}/recover", post(recover))
        .route("/v1/repositories/{id}/recoveries", get(recoveries))
        .route("/v1/repositories/{id}/hook", get(doctor))
}

/// A request that calls the tenant's provider, at most
/// HOOKRELAY_PROVIDER_CALL_RATE_LIMIT per tenant.
fn admit(state: &AppState, tenant: TenantId) -> Result<(), Error> {
    state
        .rate_limits
        .provider_calls
        .take(tenant)
        .map_err(|retry_after| {
            state.metrics.limited("provider_api");
            Error::RateLimited {
                message: "this tenant calls its provider's API through hookrelay faster than \
                          HOOKRELAY_PROVIDER_CALL_RATE_LIMIT allows",
                retry_after,
            }
        })
}

/// Checks the access against the provider at once (200 with what was found,
/// or 422 saying what is wrong), then seals and stores it.
async fn put_access(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposWrite>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProviderAccessRequest>,
) -> Result<ApiJson<AccessView>, Error> {
    let id = parse_id(&id)?;
    let repository = store::repository::get(&state.pool, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("repository"))?;
    let access = body
        .validate(repository.provider)
        .map_err(|(field, reason)| Error::invalid(field, reason))?;
    admit(&state, tenant.id)?;
    let opened = state
        .recovery
        .check(repository.provider, &repository.name, id, access)
        .await
        .map_err(Error::ProviderCheck)?;
    let view =
        store::recovery::put_access(&state.pool, &state.secret_key, tenant.id, id, &opened).await?;
    tracing::info!(
        tenant_id = %tenant.id,
        repository_id = %id,
        kind = %view.kind,
        hook_id = view.hook_id,
        "provider access set"
    );
    Ok(ApiJson(view))
}

async fn show_access(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposRead>,
    Path(id): Path<String>,
) -> Result<ApiJson<AccessView>, Error> {
    let id = parse_id(&id)?;
    store::recovery::access(&state.pool, tenant.id, id)
        .await?
        .map(ApiJson)
        .ok_or(Error::NotFound("provider access"))
}

async fn delete_access(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = parse_id(&id)?;
    if store::recovery::delete_access(&state.pool, tenant.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound("provider access"))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recover {
    /// Read the log back to this time (default: since the last complete
    /// run; never past the provider's retention).
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize)]
struct Started {
    recovery_id: RecoveryId,
}

/// Starts a run now: 202 with its id; 409 while one runs.
async fn recover(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposWrite>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, ApiJson<Started>), Error> {
    let id = parse_id(&id)?;
    admit(&state, tenant.id)?;
    let body: Recover = if body.iter().all(u8::is_ascii_whitespace) {
        Recover::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))?
    };
    if body
        .since
        .is_some_and(|since| since > OffsetDateTime::now_utc())
    {
        return Err(Error::invalid("since", "must be in the past"));
    }
    match state
        .recovery
        .start(tenant.id, id, Trigger::Manual, body.since)
        .await
    {
        Ok(recovery_id) => Ok((StatusCode::ACCEPTED, ApiJson(Started { recovery_id }))),
        Err(NotStarted::Running(running)) => Err(Error::Conflict(match running {
            Some(running) => format!("recovery {running} of this repository is running"),
            None => "a recovery of this repository is running".into(),
        })),
        Err(NotStarted::Busy) => Err(Error::RateLimited {
            message: "this server runs as many recoveries as it may",
            retry_after: 30,
        }),
        Err(NotStarted::Failed(error)) => Err(error),
    }
}

#[derive(Debug, Serialize)]
struct Runs {
    items: Vec<Run>,
}

/// The latest runs, newest first.
async fn recoveries(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposRead>,
    Path(id): Path<String>,
) -> Result<ApiJson<Runs>, Error> {
    let id = parse_id(&id)?;
    store::repository::get(&state.pool, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("repository"))?;
    let items = store::recovery::runs(&state.pool, tenant.id, id, RUNS_SHOWN).await?;
    Ok(ApiJson(Runs { items }))
}

/// The provider's hook, read now, and what would break delivery.
async fn doctor(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposRead>,
    Path(id): Path<String>,
) -> Result<ApiJson<Diagnosis>, Error> {
    let id = parse_id(&id)?;
    admit(&state, tenant.id)?;
    Ok(ApiJson(state.recovery.diagnose(tenant.id, id).await?))
}
