//! The HTTP API: one module per resource, each with its own `router()`.

mod body;
mod clients;
mod console;
mod consumers;
mod deliveries;
pub(crate) mod device;
mod events;
mod json;
mod oauth;
mod oauth_wire;
mod page;
mod probes;
mod recovery;
mod repositories;
mod source;
mod tenants;
mod trusted_issuers;
mod usage;
mod webhooks;
mod well_known;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::state::AppState;

pub use json::{ApiJson, ApiQuery};

/// What `crate::fuzzing` reaches of the HTTP layer's parsers.
pub(crate) mod fuzzing {
    pub(crate) use super::oauth_wire::{basic_credentials, parse_form};
}
pub use source::SourceAddr;

/// JSON API bodies are small; webhooks get their own, larger limit.
const API_BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = Router::new()
        .merge(tenants::router())
        .merge(oauth::router())
        .merge(device::router())
        .merge(repositories::router())
        .merge(recovery::router())
        .merge(clients::router())
        .merge(trusted_issuers::router())
        .merge(deliveries::router())
        .merge(consumers::router())
        .merge(events::router())
        .merge(usage::router())
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::buffer_api_body,
        ));
    Router::new()
        .merge(api)
        .merge(webhooks::router())
        .merge(console::router())
        .merge(well_known::router())
        .merge(probes::router())
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::map_request(
                    webhooks::remember_sender_request_id,
                ))
                .layer(SetSensitiveRequestHeadersLayer::new([
                    axum::http::header::AUTHORIZATION,
                ]))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request| {
                            let route = request.extensions().get::<MatchedPath>().map_or_else(
                                || request.uri().path().to_owned(),
                                |p| p.as_str().to_owned(),
                            );
                            let request_id = request
                                .headers()
                                .get("x-request-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default();
                            tracing::info_span!(
                                "http.request",
                                otel.name = format!("{} {route}", request.method()),
                                method = %request.method(),
                                route,
                                request_id,
                                status = tracing::field::Empty,
                                tenant_id = tracing::field::Empty,
                                repository_id = tracing::field::Empty,
                            )
                        })
                        .on_request(())
                        // "request finished" below records every status once;
                        // an error line per 5xx would flood the log in an
                        // outage, which is logged once where it is detected.
                        .on_failure(())
                        .on_response(|response: &Response, latency: Duration, span: &Span| {
                            let status = response.status().as_u16();
                            span.record("status", status);
                            // Milliseconds to the microsecond: 9.63, not 9.629577000000001.
                            let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
                            // JSON logs are the access log; on a terminal a person
                            // wants what happened, so request lines are debug lines.
                            if crate::telemetry::text_logs() {
                                tracing::debug!(status, latency_ms, "request finished");
                            } else {
                                tracing::info!(status, latency_ms, "request finished");
                            }
                        }),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .with_state(state)
}

/// Whether reading a body failed on its length limit.
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
