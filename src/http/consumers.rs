//! `/v1/consumers`: each consumer, how far behind it is in every repository it
//! streams, whether it is stalled; seek and delete.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::page::{Page, PageQuery};
use super::{ApiJson, ApiQuery};
use crate::auth::{Authorized, EventsRead, EventsWrite};
use crate::domain::{ConsumerName, EventId, RepositoryId, TenantId};
use crate::error::Error;
use crate::state::AppState;
use crate::store;
use crate::store::consumer::{ConsumerStatus, SeekRefused};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/consumers", get(list))
        .route("/v1/consumers/{name}", get(show).delete(remove))
        .route("/v1/consumers/{name}/seek", post(seek))
}

#[derive(Debug, Serialize)]
struct ConsumerView {
    name: String,
    connected_streams: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    last_seen_at: Option<OffsetDateTime>,
    stalled: bool,
    filter: FilterView,
    repositories: Vec<PositionView>,
}

/// The filter of the consumer's latest stream; empty lists filter nothing.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FilterView {
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    branches: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PositionView {
    repository_id: RepositoryId,
    /// None until the consumer acks an event of the repository (it then
    /// starts from the oldest retained event).
    acked_event_id: Option<EventId>,
    pending_events: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    oldest_pending_received_at: Option<OffsetDateTime>,
}

impl ConsumerView {
    fn new(state: &AppState, status: ConsumerStatus) -> Self {
        Self {
            stalled: status.stalled(state.settings.stall_threshold),
            name: status.name,
            connected_streams: status.connected_streams,
            last_seen_at: status.last_seen_at,
            filter: serde_json::from_value(status.filter).unwrap_or_default(),
            repositories: status
                .repositories
                .into_iter()
                .map(|p| PositionView {
                    repository_id: p.repository_id,
                    acked_event_id: p.acked_event_id,
                    pending_events: p.pending_events,
                    oldest_pending_received_at: p.oldest_pending_received_at,
                })
                .collect(),
        }
    }
}

/// A name that cannot be a consumer's names none: 404, like an unknown one.
fn parse_name(name: &str) -> Result<ConsumerName, Error> {
    ConsumerName::parse(name).map_err(|_| Error::NotFound("consumer"))
}

async fn one(
    state: &AppState,
    tenant: TenantId,
    name: &ConsumerName,
) -> Result<ConsumerView, Error> {
    let status = store::consumer::status(&state.pool, tenant, Some(name))
        .await?
        .pop()
        .ok_or(Error::NotFound("consumer"))?;
    Ok(ConsumerView::new(state, status))
}

/// By name; the cursor is the last name of the page.
async fn list(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsRead>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<ConsumerView>>, Error> {
    let limit = page.limit()?;
    let after = page.after(|cursor| ConsumerName::parse(cursor).ok())?;
    let consumers = store::consumer::status_page(
        &state.pool,
        tenant.id,
        None,
        after.as_ref().map(ConsumerName::as_str),
        limit + 1,
    )
    .await?;
    Ok(ApiJson(Page::of(
        consumers,
        limit,
        |c| c.name.clone(),
        |status| ConsumerView::new(&state, status),
    )))
}

async fn show(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsRead>,
    Path(name): Path<String>,
) -> Result<ApiJson<ConsumerView>, Error> {
    Ok(ApiJson(one(&state, tenant.id, &parse_name(&name)?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seek {
    repository_id: String,
    after_event_id: i64,
}

/// Moves the consumer's cursor in one repository (back to replay, forward to
/// skip) within retention; its open streams continue from there at once.
async fn seek(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsWrite>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Seek>,
) -> Result<ApiJson<ConsumerView>, Error> {
    let name = parse_name(&name)?;
    if body.after_event_id < 0 {
        return Err(Error::invalid("after_event_id", "must not be negative"));
    }
    let repository =
        RepositoryId::parse(&body.repository_id).ok_or(Error::NotFound("repository"))?;
    if store::repository::owned(&state.pool, tenant.id, &[repository])
        .await?
        .is_empty()
    {
        return Err(Error::NotFound("repository"));
    }
    if !store::consumer::exists(&state.pool, tenant.id, &name).await? {
        return Err(Error::NotFound("consumer"));
    }
    let after = EventId::new(body.after_event_id);
    match store::consumer::seek(&state.pool, tenant.id, &name, repository, after).await? {
        Ok(()) => {}
        Err(SeekRefused::BehindRetention(horizon)) => {
            return Err(Error::BehindRetention(format!(
                "events up to {horizon} were deleted by retention; seek to after_event_id >= {horizon}"
            )));
        }
        Err(SeekRefused::PastNewest(newest)) => {
            return Err(Error::invalid(
                "after_event_id",
                format!("the repository's newest event is {newest}"),
            ));
        }
    }
    Ok(ApiJson(one(&state, tenant.id, &name).await?))
}

/// Forgets the consumer: its cursors, delivery records and redeliveries. Its
/// open streams end (NOT_FOUND), so its agents stop rather than start over.
async fn remove(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsWrite>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    if store::consumer::delete(&state.pool, tenant.id, &parse_name(&name)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound("consumer"))
    }
}
