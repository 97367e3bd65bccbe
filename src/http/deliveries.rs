//! `/v1/deliveries/failed`: events a target refused for good.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::page::{Page, PageQuery, created_cursor, parse_created_cursor};
use super::{ApiJson, ApiQuery};
use crate::auth::{Authorized, EventsRead};
use crate::domain::{ConsumerName, EventId, RepositoryId};
use crate::error::Error;
use crate::state::AppState;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/deliveries/failed", get(failed))
}

#[derive(Debug, Deserialize)]
struct FailedQuery {
    consumer: Option<String>,
}

#[derive(Debug, Serialize)]
struct FailedDelivery {
    consumer: String,
    repository_id: RepositoryId,
    event_id: EventId,
    event_type: String,
    delivery_id: String,
    reason: String,
    #[serde(with = "time::serde::rfc3339")]
    failed_at: OffsetDateTime,
}

/// Events an agent's target refused for good (acked as failed) and not
/// delivered since by a redelivery, newest first.
async fn failed(
    State(state): State<AppState>,
    Authorized(tenant, _): Authorized<EventsRead>,
    ApiQuery(query): ApiQuery<FailedQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<FailedDelivery>>, Error> {
    let limit = page.limit()?;
    // Newest first: the cursor is the last item's failure time and record.
    let after = page.after(|cursor| {
        let (at, pk) = parse_created_cursor(cursor)?;
        Some((at, pk.parse::<i64>().ok()?))
    })?;
    let consumer = query
        .consumer
        .as_deref()
        .map(ConsumerName::parse)
        .transpose()
        .map_err(|reason| Error::invalid("consumer", reason))?;
    let failures =
        store::consumer::failures(&state.pool, tenant.id, consumer.as_ref(), after, limit + 1)
            .await?;
    Ok(ApiJson(Page::of(
        failures,
        limit,
        |f| created_cursor(f.failed_at, &f.delivery_pk.to_string()),
        |f| FailedDelivery {
            consumer: f.consumer,
            repository_id: f.repository_id,
            event_id: f.event_id,
            event_type: f.event_type,
            delivery_id: f.delivery_id,
            reason: f.reason,
            failed_at: f.failed_at,
        },
    )))
}
