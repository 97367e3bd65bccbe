//! The gRPC API: `hookrelay.v1.EventService` behind per-RPC bearer-token
//! authorization (`auth::GrpcAuthLayer`), plus health and reflection, which
//! need no token.

mod events;
mod watch;

pub use events::EventsService;

/// Generated code for `proto/hookrelay/v1` (the `hookrelay-proto` crate).
pub use hookrelay_proto as proto;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::auth::GrpcAuthLayer;
use crate::state::AppState;
use proto::event_service_server::EventServiceServer;

/// The gRPC services as one router: EventService behind the auth interceptor;
/// health and reflection (v1 and v1alpha, which grpcurl speaks) without auth;
/// gRPC-Web translated here, by tonic-web, and nowhere else (Envoy only routes
/// it), so browsers reach the same server with or without Envoy. It is served
/// by `server::connections` like the HTTP API, with the same connection limits.
pub fn router(
    state: &AppState,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    cors_origins: &[String],
    stop: CancellationToken,
) -> anyhow::Result<axum::Router> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let events = tower::Layer::layer(
        &GrpcAuthLayer::new(state.auth.clone()),
        EventServiceServer::new(EventsService::new(state.clone(), stop)),
    );
    let routes = tonic::service::Routes::builder()
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(events)
        .clone()
        .routes();
    Ok(routes
        .prepare()
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(grpc_web_cors(cors_origins)?))
}

/// CORS for browsers calling over gRPC-Web from `origins` (none: no cross-origin calls).
fn grpc_web_cors(origins: &[String]) -> anyhow::Result<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let origins = origins
        .iter()
        .map(|origin| HeaderValue::from_str(origin).context("invalid HOOKRELAY_CORS_ORIGINS"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 3600)))
}
