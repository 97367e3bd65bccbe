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
use crate::telemetry::access;

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
                            let request_id = request
                                .headers()
                                .get("x-request-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default();
                            let span = tracing::info_span!(
                                "http.request",
                                otel.name = tracing::field::Empty,
                                method = %request.method(),
                                route = route(request),
                                request_id,
                                status = tracing::field::Empty,
                                tenant_id = tracing::field::Empty,
                                repository_id = tracing::field::Empty,
                            );
                            if hookrelay_telemetry::traces_exported() {
                                span.record(
                                    "otel.name",
                                    format!("{} {}", request.method(), route(request)),
                                );
                            }
                            span
                        })
                        .on_request(())
                        // The access log (below) records every status once; an
                        // error line per 5xx would flood the log in an outage,
                        // which is logged once where it is detected.
                        .on_failure(())
                        .on_response(()),
                )
                .layer(axum::middleware::from_fn(access_log))
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .with_state(state)
}

/// The request's route as the router matched it (its path when none matched).
fn route(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str)
}

/// Writes the request's access log line once it is answered (see
/// `telemetry::access`), inside the request's span.
async fn access_log(request: Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = route(&request).to_owned();
    let request_id = request.headers().get("x-request-id").cloned();
    let (response, noted) = access::scope(next.run(request)).await;
    let status = response.status().as_u16();
    if hookrelay_telemetry::traces_exported() {
        Span::current().record("status", status);
    }
    let request = access::Request {
        method: method.as_str(),
        route: &route,
        request_id: request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    };
    access::finished(&request, &noted, status, started.elapsed());
    response
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
