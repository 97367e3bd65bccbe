use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{Tenant, VerifyError};
use crate::domain::{ClientId, Scopes, TenantId};
use crate::error::Error;
use crate::startup::AppState;
use crate::store;

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

        let client_id = ClientId::parse(&claims.sub).ok_or_else(|| {
            Error::Unauthenticated("the token's subject is not a hookrelay client".into())
        })?;
        let tenant_id = TenantId::from_uuid(claims.tenant_id);
        let scopes = Scopes::parse_space_separated(&claims.scope)
            .map_err(|e| Error::Unauthenticated(format!("the token's scope is invalid: {e}")))?;
        // A deleted client's tokens stop working from the next request on.
        if !store::client::is_active(&state.pool, tenant_id, &client_id).await? {
            return Err(Error::Unauthenticated(
                "the client of this token was deleted".into(),
            ));
        }
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant_id));
        Ok(Tenant {
            id: tenant_id,
            client_id,
            scopes,
        })
    }
}
