//! `/v1/events`: the tenant's retained events, newest first; one event with
//! its headers and body; its deliveries; a redelivery.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ApiJson, ApiQuery};
use crate::auth::{Authorized, EventsRead, EventsWrite};
use crate::domain::{ConsumerName, EventId, RepositoryId, TenantId};
use crate::error::Error;
use crate::state::AppState;
use crate::store;
use crate::store::event::{EventQuery, EventSummary, StoredEvent};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/{id}", get(show))
        .route("/v1/events/{id}/deliveries", get(deliveries))
        .route("/v1/events/{id}/redeliver", post(redeliver))
}

#[derive(Debug, Serialize)]
struct EventView {
    id: EventId,
    repository_id: RepositoryId,
    provider: String,
    event_type: String,
    delivery_id: String,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    branch: Option<String>,
    tag: Option<String>,
    /// Bytes of the body.
    size: i64,
}

impl From<EventSummary> for EventView {
    fn from(e: EventSummary) -> Self {
        Self {
            id: e.event_id,
            repository_id: e.repository_id,
            provider: e.provider,
            event_type: e.event_type,
            delivery_id: e.delivery_id,
            received_at: e.received_at,
            branch: e.branch,
            tag: e.tag,
            size: e.size,
        }
    }
}

#[derive(Debug, Serialize)]
struct EventsView {
    events: Vec<EventView>,
    /// Pass as before_event_id for the next (older) page; null on the last.
    next_before_event_id: Option<EventId>,
}

/// Every parameter is optional; ids and numbers are parsed here so that a bad
/// one gets the API's error, naming it.
#[derive(Debug, Deserialize)]
struct ListQuery {
    repository_id: Option<String>,
    event_type: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
    before_event_id: Option<String>,
    limit: Option<String>,
}

fn number(field: &'static str, value: Option<&str>) -> Result<Option<i64>, Error> {
    value
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::invalid(field, "must be a positive integer"))
        })
        .transpose()
}

async fn list(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsRead>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<EventsView>, Error> {
    let repository_id = query
        .repository_id
        .as_deref()
        .map(|id| RepositoryId::parse(id).ok_or(Error::NotFound("repository")))
        .transpose()?;
    if let Some(id) = repository_id
        && store::repository::owned(&state.pool, tenant.id, &[id])
            .await?
            .is_empty()
    {
        return Err(Error::NotFound("repository"));
    }
    let limit = number("limit", query.limit.as_deref())?
        .unwrap_or(DEFAULT_LIMIT)
        .min(MAX_LIMIT);
    let before = number("before_event_id", query.before_event_id.as_deref())?.map(EventId::new);
    let filter = EventQuery {
        repository_id,
        event_type: query.event_type,
        branch: query.branch,
        tag: query.tag,
        before,
    };
    // One more than asked tells whether an older page follows.
    let mut events = store::event::newest(&state.pool, tenant.id, &filter, limit + 1).await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_before_event_id = more.then(|| events.last().map(|e| e.event_id)).flatten();
    Ok(ApiJson(EventsView {
        events: events.into_iter().map(Into::into).collect(),
        next_before_event_id,
    }))
}

#[derive(Debug, Serialize)]
struct EventDetail {
    #[serde(flatten)]
    event: EventView,
    /// As received, in order: replaying them with the body reproduces the
    /// delivery. A header that carries the webhook secret itself (GitLab's
    /// `X-Gitlab-Token`) shows `[sealed]`: only the agent's stream gets it.
    headers: Vec<(String, String)>,
    body_base64: String,
}

/// A path id that is not a number names no event: 404, like an unknown one.
fn parse_id(id: &str) -> Result<EventId, Error> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(EventId::new)
        .ok_or(Error::NotFound("event"))
}

async fn event(state: &AppState, tenant: TenantId, id: &str) -> Result<StoredEvent, Error> {
    store::event::get(&state.pool, tenant, parse_id(id)?)
        .await?
        .ok_or(Error::NotFound("event"))
}

async fn show(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsRead>,
    Path(id): Path<String>,
) -> Result<ApiJson<EventDetail>, Error> {
    let e = event(&state, tenant.id, &id).await?;
    // GitLab's token is the webhook secret: only the agent's stream opens it.
    let headers = e.headers_redacted();
    Ok(ApiJson(EventDetail {
        event: EventView {
            id: e.event_id,
            repository_id: e.repository_id,
            size: e.body.len() as i64,
            provider: e.provider.as_str().to_owned(),
            event_type: e.event_type,
            delivery_id: e.delivery_id,
            received_at: e.received_at,
            branch: e.branch,
            tag: e.tag,
        },
        headers,
        body_base64: base64::engine::general_purpose::STANDARD.encode(&e.body),
    }))
}

#[derive(Debug, Serialize)]
struct DeliveriesView {
    deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Serialize)]
struct DeliveryView {
    consumer: String,
    /// Set for a redelivery requested through the API.
    redelivery_id: Option<uuid::Uuid>,
    /// `delivered` or `failed`.
    outcome: String,
    /// The target's answer, and what the agent reports of the attempts;
    /// null when an older agent did not report them.
    status_code: Option<i32>,
    attempts: Option<i32>,
    duration_ms: Option<i64>,
    error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    completed_at: OffsetDateTime,
}

/// Every recorded delivery of the event to any consumer, newest first.
async fn deliveries(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsRead>,
    Path(id): Path<String>,
) -> Result<ApiJson<DeliveriesView>, Error> {
    let id = event(&state, tenant.id, &id).await?.event_id;
    let deliveries = store::consumer::deliveries(&state.pool, tenant.id, id)
        .await?
        .into_iter()
        .map(|d| DeliveryView {
            consumer: d.consumer,
            redelivery_id: d.redelivery_id,
            outcome: d.outcome,
            status_code: d.status_code,
            attempts: d.attempts,
            duration_ms: d.duration_ms,
            error: d.error,
            completed_at: d.completed_at,
        })
        .collect();
    Ok(ApiJson(DeliveriesView { deliveries }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Redeliver {
    consumer: String,
}

#[derive(Debug, Serialize)]
struct RedeliveryView {
    redelivery_id: uuid::Uuid,
}

/// The consumer's streams receive the event once more (marked as a
/// redelivery), even though it was acked; the request is durable until the
/// consumer acks it.
async fn redeliver(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsWrite>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Redeliver>,
) -> Result<(StatusCode, ApiJson<RedeliveryView>), Error> {
    let id = parse_id(&id)?;
    let consumer = ConsumerName::parse(&body.consumer).map_err(|_| Error::NotFound("consumer"))?;
    if !store::consumer::exists(&state.pool, tenant.id, &consumer).await? {
        return Err(Error::NotFound("consumer"));
    }
    let redelivery_id = store::consumer::request_redelivery(&state.pool, tenant.id, &consumer, id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    state.metrics.redeliveries.inc();
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(RedeliveryView { redelivery_id }),
    ))
}
