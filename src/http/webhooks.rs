//! POST /v1/webhooks/{repository_id}: the URL given to the provider (GitHub,
//! GitLab, Gitea, Forgejo, Bitbucket or a Standard Webhooks sender).
//!
//! The order of checks is the order of cost: size announced, repository known,
//! body read (bounded), signature, headers. Nothing is stored until all pass,
//! and the answer is sent only after the event is committed.

use tokio::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde_json::json;
use time::OffsetDateTime;

use super::{SourceAddr, body};
use crate::domain::RepositoryId;
use crate::error::Error;
use crate::state::AppState;
use crate::store::event::{Ingested, NewEvent};
use crate::store::sealing::SealedHeaders;
use crate::telemetry::ProviderLabels;
use crate::webhook::{self, Encoding, WebhookError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/{repository_id}", post(receive))
        // The handler enforces HOOKRELAY_MAX_WEBHOOK_BYTES itself, to answer in the API's format.
        .layer(DefaultBodyLimit::disable())
}

/// Whether the request came with an `X-Request-Id` of its own, before the
/// request-id layer gives every request one. Bitbucket Data Center names its
/// deliveries with that header, so a generated one must not pass for it.
#[derive(Clone, Copy)]
pub struct SenderRequestId(bool);

pub async fn remember_sender_request_id(
    mut request: axum::extract::Request,
) -> axum::extract::Request {
    let given = request.headers().contains_key("x-request-id");
    request.extensions_mut().insert(SenderRequestId(given));
    request
}

async fn receive(
    State(state): State<AppState>,
    Path(repository_id): Path<String>,
    SourceAddr(source): SourceAddr,
    sender_request_id: Option<axum::Extension<SenderRequestId>>,
    mut headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), Error> {
    if !sender_request_id.is_some_and(|given| given.0.0) {
        headers.remove("x-request-id");
    }
    let started = Instant::now();
    let received_at = OffsetDateTime::now_utc();
    let result = accept(
        &state,
        source,
        &repository_id,
        &headers,
        body,
        received_at,
        started,
    )
    .await;
    state.storage.record(&result);
    match &result {
        Ok(_) => state
            .metrics
            .ingest_seconds
            .observe(started.elapsed().as_secs_f64()),
        Err(error) => state.metrics.reject(rejection_reason(error)),
    }
    let (provider, outcome) = result?;
    state
        .metrics
        .webhooks_received
        .get_or_create(&ProviderLabels { provider })
        .inc();
    Ok(match outcome {
        Ingested::Created(id) => (StatusCode::ACCEPTED, axum::Json(json!({"event_id": id}))),
        Ingested::Duplicate(id) => (
            StatusCode::OK,
            axum::Json(json!({"event_id": id, "duplicate": true})),
        ),
    })
}

async fn accept(
    state: &AppState,
    source: std::net::IpAddr,
    repository_id: &str,
    headers: &HeaderMap,
    body: Body,
    received_at: OffsetDateTime,
    started: Instant,
) -> Result<(&'static str, Ingested), Error> {
    let limit = state.settings.max_webhook_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }

    // An unknown id and another tenant's id get the same answer: the id in the
    // URL is all the sender has, so there is no other tenant to tell apart.
    let id = RepositoryId::parse(repository_id).ok_or(Error::NotFound("repository"))?;
    crate::telemetry::access::note_repository(id);
    let (mut target, mut fresh) = state
        .targets
        .get(&state.ingest_pool, &state.secret_key, id, false)
        .await?
        .ok_or(Error::NotFound("repository"))?;
    crate::telemetry::access::note_tenant(target.tenant_id);
    if target.suspended {
        // 403, so the sender's delivery log (GitHub's Recent Deliveries) shows why.
        return Err(Error::Forbidden(crate::auth::SUSPENDED.into()));
    }
    // No more than the provider itself ever sends.
    let limit = target
        .provider
        .max_webhook_bytes()
        .map_or(limit, |max| max.min(limit));
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }

    // Held until the event is committed: the budget counts every body in
    // memory, and the tenant's and the source's shares of it.
    let reservation = state.webhook_memory.reservation(target.tenant_id, source);
    let pace = body::BodyPace {
        started,
        timeout: state.settings.body_timeout,
        min_rate: state.settings.webhook_min_body_rate,
    };
    let (body, _reservation) =
        body::read_webhook(body, announced, limit, reservation, pace).await?;

    let mut scheme = webhook::scheme(target.provider, &target.settings);
    webhook::check_unambiguous(scheme.as_dyn(), headers).map_err(webhook_error)?;
    if let Err(error) = scheme.as_dyn().verify(headers, &body, &target.secrets()) {
        if fresh {
            return Err(webhook_error(error));
        }
        // The secret may have been rotated on another replica: read it again.
        (target, fresh) = state
            .targets
            .get(&state.ingest_pool, &state.secret_key, id, true)
            .await?
            .ok_or(Error::NotFound("repository"))?;
        debug_assert!(fresh);
        // Its settings may have changed with it.
        scheme = webhook::scheme(target.provider, &target.settings);
        scheme
            .as_dyn()
            .verify(headers, &body, &target.secrets())
            .map_err(webhook_error)?;
    }
    let scheme = scheme.as_dyn();

    // The tenant's webhook rate: verified webhooks only, so that no one who
    // merely knows the URL can spend the tenant's quota.
    let quotas = target.quota.over(&state.settings.quotas);
    state
        .rate_limits
        .webhooks
        .take(
            target.tenant_id,
            quotas.webhooks_per_second,
            quotas.webhook_burst,
        )
        .map_err(|retry_after| {
            state.metrics.limited("webhook");
            Error::RateLimited {
                message: "this repository's tenant sends more webhooks per second than its quota",
                retry_after,
            }
        })?;
    let stored = state.stored_bytes.of(target.tenant_id);
    if stored + body.len() as u64 > quotas.stored_event_bytes {
        return Err(Error::QuotaExceeded(format!(
            "the tenant's quota of stored event bytes is reached (limit {})",
            quotas.stored_event_bytes
        )));
    }

    let encoding = check_content_type(headers)?;
    let event_type = scheme
        .event_type(headers, &body, encoding)
        .map_err(webhook_error)?;
    let delivery_id = scheme.delivery_id(headers).map_err(webhook_error)?;
    let git_ref = scheme.git_ref(&event_type, &body, encoding);
    let stored_headers = SealedHeaders::seal(
        target.provider,
        id,
        &state.secret_key,
        webhook::replayable_headers(headers).map_err(webhook_error)?,
    );

    let event = NewEvent {
        tenant_id: target.tenant_id,
        repository_id: id,
        provider: target.provider,
        event_type,
        delivery_id,
        received_at,
        headers: stored_headers,
        body,
        branch: git_ref.branch,
        tag: git_ref.tag,
        traceparent: hookrelay_telemetry::traceparent(&tracing::Span::current()),
    };
    event.check_storable()?;
    let bytes = event.body.len() as u64;
    let outcome = state.ingestor.ingest(event).await?;
    if let Ingested::Created(_) = outcome {
        state.stored_bytes.add(target.tenant_id, bytes);
    }
    Ok((target.provider.as_str(), outcome))
}

fn webhook_error(error: WebhookError) -> Error {
    match error {
        WebhookError::MissingSignature(_)
        | WebhookError::BadSignature(_)
        | WebhookError::Stale { .. } => Error::InvalidSignature(error.to_string()),
        WebhookError::BadBody(reason) => Error::invalid("body", reason),
        WebhookError::BadHeader(name) => Error::invalid(name, "missing or malformed"),
        WebhookError::Repeated(name) => Error::invalid(name, "appears more than once"),
        WebhookError::NotUtf8(_) => Error::invalid("headers", error.to_string()),
    }
}

/// GitHub delivers either content type; both are stored untouched.
fn check_content_type(headers: &HeaderMap) -> Result<Encoding, Error> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(Encoding::Json),
        Some("application/x-www-form-urlencoded") => Ok(Encoding::Form),
        _ => Err(Error::UnsupportedMediaType(
            "webhooks must be application/json or application/x-www-form-urlencoded".into(),
        )),
    }
}

fn rejection_reason(error: &Error) -> &'static str {
    match error {
        Error::InvalidSignature(_) => "signature",
        Error::NotFound(_) => "unknown_repository",
        Error::PayloadTooLarge { .. } => "too_large",
        Error::UnsupportedMediaType(_) => "content_type",
        Error::Invalid { .. } | Error::InvalidJson(_) => "bad_request",
        Error::Unavailable(_) => "unavailable",
        Error::RequestTimeout(_) => "body_timeout",
        Error::Database(error) if crate::error::database_unavailable(error) => {
            "database_unavailable"
        }
        Error::Forbidden(_) => "suspended",
        Error::RateLimited { .. } => "rate_limited",
        Error::QuotaExceeded(_) => "quota_exceeded",
        Error::BehindRetention(_) | Error::ProviderCheck(_) => "internal",
        Error::Unauthenticated(_)
        | Error::InsufficientScope(_)
        | Error::Conflict(_)
        | Error::Database(_)
        | Error::Internal(_) => "internal",
    }
}
