//! `/.well-known/`: the JWKS and the RFC 8414 authorization server metadata.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::domain::Scope;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

/// RFC 7517: the public keys that verify access tokens.
async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.keys.jwks()),
    )
}

/// RFC 8414 authorization server metadata.
async fn metadata(State(state): State<AppState>) -> impl IntoResponse {
    let base = state.settings.public_url.as_str();
    axum::Json(json!({
        "issuer": state.keys.issuer(),
        "token_endpoint": format!("{base}/oauth/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": super::oauth::GRANT_TYPES,
        "device_authorization_endpoint": format!("{base}/oauth/device_authorization"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "revocation_endpoint_auth_methods_supported": ["none"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        // No authorization endpoint: people approve devices in the console (RFC 8628).
        "response_types_supported": [],
    }))
}
