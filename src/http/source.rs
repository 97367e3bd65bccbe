//! The caller's source address, as an extractor (`server::rate_limit::source_address`
//! decides it from the peer and `X-Forwarded-For`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::error::Error;
use crate::server::rate_limit::source_address;
use crate::state::AppState;

/// The caller's address: the peer, or the client a trusted proxy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceAddr(pub IpAddr);

impl FromRequestParts<AppState> for SourceAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no peer address")))?;
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        Ok(Self(source_address(
            peer,
            &forwarded,
            &state.settings.trusted_proxies,
        )))
    }
}
