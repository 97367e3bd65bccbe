//! `/v1/usage`: the tenant's quotas and what it holds against them.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use super::ApiJson;
use crate::auth::AnyScope;
use crate::domain::{Quota, Quotas};
use crate::error::Error;
use crate::state::AppState;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/usage", get(usage))
}

/// `quotas` and `usage` have the same keys. Open watches and webhooks per
/// second are this server's (each replica counts its own); stored event bytes
/// are the last read (every minute, `jobs`) plus what this server stored since; the
/// rest are the tenant's on every server, now. `webhook_burst` is in use what the bucket lacks
/// of full.
#[derive(Debug, Serialize)]
struct UsageView {
    quotas: Quotas,
    usage: Quotas,
}

/// Any scope: every client of a tenant may see how close it is to its quotas.
async fn usage(
    State(state): State<AppState>,
    AnyScope(tenant): AnyScope,
) -> Result<ApiJson<UsageView>, Error> {
    let quotas = state.quotas(tenant.id).await?;
    let mut connection = state.pool.acquire().await?;
    let mut counts = [0; 5];
    for (count, quota) in counts.iter_mut().zip([
        Quota::Repositories,
        Quota::Clients,
        Quota::TrustedIssuers,
        Quota::Consumers,
        Quota::OpenStreams,
    ]) {
        *count = store::quota::held(&mut connection, tenant.id, quota).await?;
    }
    let [
        repositories,
        clients,
        trusted_issuers,
        consumers,
        open_streams,
    ] = counts;
    let usage = Quotas {
        repositories,
        clients,
        trusted_issuers,
        consumers,
        open_streams,
        open_watches: state.streams.watches_of(tenant.id) as u64,
        webhooks_per_second: state.rate_limits.webhooks.last_second(tenant.id),
        webhook_burst: state.rate_limits.webhooks.in_use(
            tenant.id,
            quotas.webhooks_per_second,
            quotas.webhook_burst,
        ),
        stored_event_bytes: state.stored_bytes.of(tenant.id),
    };
    Ok(ApiJson(UsageView { quotas, usage }))
}
