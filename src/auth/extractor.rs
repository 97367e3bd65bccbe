use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{Tenant, VerifyError};
use crate::error::Error;
use crate::startup::AppState;

/// The bearer token of `Authorization`, if the header is well formed.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| Error::Unauthenticated("missing Authorization: Bearer token".into()))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("malformed Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Error::Unauthenticated(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?;
        let claims = match state.keys.verify(token) {
            Err(VerifyError::UnknownKey) if state.keys.refresh().await.unwrap_or(false) => {
                state.keys.verify(token)
            }
            other => other,
        }
        .map_err(|e| Error::Unauthenticated(e.to_string()))?;

        let tenant = Tenant::from_claims(&claims)?;
        tenant.check_active(&state.pool).await?;
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant.id));
        Ok(tenant)
    }
}
