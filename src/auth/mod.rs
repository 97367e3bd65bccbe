//! Who is calling. One `Authenticator::authenticate` serves both transports:
//! HTTP handlers reach it through the `Authorized<S>` extractor, which also
//! checks the scope `S` the handler names in its signature; gRPC methods
//! through `GrpcAuthLayer`, which checks the scope its table lists per method.
//! Both produce the same `Caller`.

pub mod crypto;
mod extractor;
pub mod keys;
mod layer;

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

pub use extractor::{
    AnyScope, Authorized, ClientsWrite, EventsRead, EventsWrite, ReposRead, ReposWrite, ScopeMarker,
};
pub use keys::{Claims, Keys, VerifyError};
pub use layer::{GrpcAuthLayer, caller};

use crate::domain::{ClientId, Scope, Scopes, TenantId, TrustedIssuerId};
use crate::error::Error;

/// An authenticated tenant: what handlers pass (`id`) to every store call.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub principal: Principal,
    pub scopes: Scopes,
}

/// Who holds a token: a client of the tenant, or a workload whose own token
/// was exchanged under one of the tenant's trusted issuers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Client(ClientId),
    Workload {
        trusted_issuer: TrustedIssuerId,
        /// `<issuer>#<the workload's sub>`: the token's `sub`.
        subject: String,
    },
}

impl Principal {
    /// The `sub` of its access tokens.
    pub fn subject(&self) -> &str {
        match self {
            Principal::Client(client_id) => client_id.as_str(),
            Principal::Workload { subject, .. } => subject,
        }
    }
}

/// The verified caller of one request or RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Tenant,
    /// When the token expires (Unix seconds): long-lived streams end then.
    pub expires_at: u64,
}

impl Tenant {
    fn from_claims(claims: &Claims) -> Result<Self, Error> {
        let principal = match claims.trusted_issuer {
            Some(trusted_issuer) => Principal::Workload {
                trusted_issuer,
                subject: claims.sub.clone(),
            },
            None => Principal::Client(ClientId::parse(&claims.sub).ok_or_else(|| {
                Error::Unauthenticated("the token's subject is not a hookrelay client".into())
            })?),
        };
        let scopes = Scopes::parse_space_separated(&claims.scope)
            .map_err(|e| Error::Unauthenticated(format!("the token's scope is invalid: {e}")))?;
        Ok(Tenant {
            id: TenantId::from_uuid(claims.tenant_id),
            principal,
            scopes,
        })
    }

    /// Fails with 403 / PERMISSION_DENIED unless the token carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Error> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(Error::InsufficientScope(scope))
        }
    }
}

/// What a suspended tenant's callers and senders are told.
pub const SUSPENDED: &str = "this tenant is suspended; its operator can resume it";

/// Verifies bearer tokens for both transports.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<Keys>,
    pool: sqlx::PgPool,
}

impl Authenticator {
    pub fn new(keys: Arc<Keys>, pool: sqlx::PgPool) -> Self {
        Self { keys, pool }
    }

    /// The one way in: parses `Authorization: Bearer <JWT>` (an HTTP header or
    /// gRPC metadata), verifies it against the keys in memory (reloading them
    /// once on an unknown key id: another replica may have rotated them),
    /// checks that the token's client (or trusted issuer, for an exchanged
    /// token) still exists: a deleted one's tokens stop working from the next
    /// request on. Returns the caller.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Error> {
        let token = bearer_token(headers)?;
        let claims = match self.keys.verify(token) {
            Err(VerifyError::UnknownKey) if self.keys.refresh().await.unwrap_or(false) => {
                self.keys.verify(token)
            }
            other => other,
        }
        .map_err(|e| Error::Unauthenticated(e.to_string()))?;
        let tenant = Tenant::from_claims(&claims)?;
        use crate::store::PrincipalState;
        let state = match &tenant.principal {
            Principal::Client(client_id) => {
                crate::store::client::state(&self.pool, tenant.id, client_id).await?
            }
            Principal::Workload { trusted_issuer, .. } => {
                crate::store::trusted_issuer::state(&self.pool, tenant.id, *trusted_issuer).await?
            }
        };
        match state {
            PrincipalState::Active => {}
            PrincipalState::Deleted => {
                return Err(Error::Unauthenticated(match tenant.principal {
                    Principal::Client(_) => "the client of this token was deleted".into(),
                    Principal::Workload { .. } => {
                        "the trusted issuer this token was exchanged under was deleted".into()
                    }
                }));
            }
            PrincipalState::Suspended => return Err(Error::Forbidden(SUSPENDED.into())),
        }
        crate::telemetry::access::note_tenant(tenant.id);
        Ok(Caller {
            tenant,
            expires_at: claims.exp,
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_parse_in_any_case_and_nothing_else_does() {
        assert_eq!(bearer_token(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), "abc");
        for bad in ["Basic YTpi", "Bearer", "Bearer   ", "abc"] {
            assert!(bearer_token(&headers(bad)).is_err(), "{bad}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }
}
