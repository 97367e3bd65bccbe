//! `/v1/repositories`: register, list, show, delete, rotate the webhook secret.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::page::{Page, PageQuery, created_cursor, parse_created_cursor};
use super::{ApiJson, ApiQuery};
use crate::auth::{Authorized, ReposRead, ReposWrite};
use crate::domain::{Provider, RepositoryId, RepositoryName, WebhookSettings};
use crate::error::Error;
use crate::secrets;
use crate::state::AppState;
use crate::store;
use crate::store::repository::Repository;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/repositories", post(create).get(list))
        .route("/v1/repositories/{id}", get(show).delete(remove))
        .route("/v1/repositories/{id}/rotate-secret", post(rotate_secret))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRepository {
    provider: String,
    name: String,
    /// GitLab: `verification`; Standard Webhooks: `event_type_field`,
    /// `timestamp_tolerance_seconds` (see `WebhookSettings`).
    #[serde(default)]
    settings: Option<serde_json::Value>,
    /// `standard` only: the signing secret the sender generated (`whsec_…`),
    /// for senders that do not let you set one. Otherwise hookrelay makes one.
    #[serde(default)]
    webhook_secret: Option<SecretString>,
}

/// The body of rotate-secret, optional: `standard` may bring the sender's new secret.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    #[serde(default)]
    webhook_secret: Option<SecretString>,
}

/// The secret to install: the one given (Standard Webhooks senders that
/// generate their own), or a new one in the provider's form.
fn new_secret(provider: Provider, given: Option<SecretString>) -> Result<SecretString, Error> {
    match given {
        None => Ok(secrets::generate_webhook_secret(provider)),
        Some(_) if provider != Provider::Standard => Err(Error::invalid(
            "webhook_secret",
            format!("hookrelay makes the secret for provider {provider}; omit it"),
        )),
        Some(secret) => {
            crate::webhook::standard::check_secret(secret.expose_secret())
                .map_err(|reason| Error::invalid("webhook_secret", reason))?;
            Ok(secret)
        }
    }
}

#[derive(Debug, Serialize)]
struct RepositoryView {
    id: RepositoryId,
    provider: Provider,
    name: String,
    webhook_url: String,
    /// The provider's settings with their defaults filled in (`{}` for providers without any).
    settings: WebhookSettings,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Set during a secret rotation: until then the previous secret still verifies.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    previous_secret_expires_at: Option<OffsetDateTime>,
    /// Only in the answers that create it (create and rotate).
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

impl RepositoryView {
    fn new(state: &AppState, repository: Repository, secret: Option<&SecretString>) -> Self {
        Self {
            webhook_url: crate::domain::webhook_url(&state.settings.public_url, repository.id),
            settings: repository.settings.effective(repository.provider),
            id: repository.id,
            provider: repository.provider,
            name: repository.name,
            created_at: repository.created_at,
            previous_secret_expires_at: repository.previous_secret_expires_at,
            webhook_secret: secret.map(|s| s.expose_secret().to_owned()),
        }
    }
}

pub(super) fn parse_id(id: &str) -> Result<RepositoryId, Error> {
    RepositoryId::parse(id).ok_or(Error::NotFound("repository"))
}

async fn create(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposWrite>,
    ApiJson(body): ApiJson<CreateRepository>,
) -> Result<(StatusCode, ApiJson<RepositoryView>), Error> {
    let provider: Provider = body
        .provider
        .parse()
        .map_err(|reason: String| Error::invalid("provider", reason))?;
    let name = RepositoryName::parse(provider, &body.name)
        .map_err(|reason| Error::invalid("name", reason))?;
    let settings: WebhookSettings = match body.settings {
        None | Some(serde_json::Value::Null) => WebhookSettings::default(),
        Some(value) => {
            serde_json::from_value(value).map_err(|e| Error::invalid("settings", e.to_string()))?
        }
    };
    settings
        .validate(provider)
        .map_err(|reason| Error::invalid("settings", reason))?;
    let id = RepositoryId::new();
    crate::telemetry::access::note_repository(id);
    let secret = new_secret(provider, body.webhook_secret)?;
    let repository = store::repository::create(
        &state.pool,
        &state.secret_key,
        tenant.id,
        &store::repository::NewRepository {
            id,
            provider,
            name,
            settings,
        },
        &secret,
        &state.quotas(tenant.id).await?,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(RepositoryView::new(&state, repository, Some(&secret))),
    ))
}

async fn list(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposRead>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<RepositoryView>>, Error> {
    let limit = page.limit()?;
    let after = page.after(|cursor| {
        let (at, id) = parse_created_cursor(cursor)?;
        Some((at, RepositoryId::parse(id)?))
    })?;
    let repositories = store::repository::list(&state.pool, tenant.id, after, limit + 1).await?;
    Ok(ApiJson(Page::of(
        repositories,
        limit,
        |r| created_cursor(r.created_at, &r.id.to_string()),
        |r| RepositoryView::new(&state, r, None),
    )))
}

async fn show(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposRead>,
    Path(id): Path<String>,
) -> Result<ApiJson<RepositoryView>, Error> {
    let id = parse_id(&id)?;
    let repository = store::repository::get(&state.pool, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("repository"))?;
    Ok(ApiJson(RepositoryView::new(&state, repository, None)))
}

/// Deletes the repository and its stored events; its webhook URL answers 404.
async fn remove(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = parse_id(&id)?;
    let deleted = store::repository::delete(&state.pool, tenant.id, id).await?;
    state.targets.forget(id);
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound("repository"))
    }
}

/// A new webhook secret; the previous one keeps verifying for the rotation grace
/// period (24 h by default), so the provider side can be updated without loss.
async fn rotate_secret(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<ReposWrite>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<ApiJson<RepositoryView>, Error> {
    let id = parse_id(&id)?;
    let given: RotateSecret = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecret::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))?
    };
    let provider = store::repository::get(&state.pool, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("repository"))?
        .provider;
    let secret = new_secret(provider, given.webhook_secret)?;
    let repository = store::repository::rotate_secret(
        &state.pool,
        &state.secret_key,
        tenant.id,
        id,
        &secret,
        state.settings.secret_rotation_grace,
    )
    .await?
    .ok_or(Error::NotFound("repository"))?;
    Ok(ApiJson(RepositoryView::new(
        &state,
        repository,
        Some(&secret),
    )))
}
