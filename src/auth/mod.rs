//! Who is calling: access tokens (issue and verify), signing keys and the JWKS,
//! scopes, and the `Tenant` that every handler receives by type.

mod extractor;
pub use extractor::bearer_token;
pub mod keys;

pub use keys::{Claims, Keys, VerifyError};

use crate::domain::{ClientId, Scope, Scopes, TenantId};
use crate::error::Error;

/// An authenticated caller. Handlers get it from the bearer token (HTTP
/// extractor; the gRPC interceptor produces the same type) and pass `id` to
/// every store call.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub client_id: ClientId,
    pub scopes: Scopes,
}

impl Tenant {
    /// The caller a verified token names. Both the HTTP extractor and the gRPC
    /// interceptor use this, so both produce the same `Tenant`.
    pub fn from_claims(claims: &Claims) -> Result<Self, Error> {
        let client_id = ClientId::parse(&claims.sub).ok_or_else(|| {
            Error::Unauthenticated("the token's subject is not a hookrelay client".into())
        })?;
        let scopes = Scopes::parse_space_separated(&claims.scope)
            .map_err(|e| Error::Unauthenticated(format!("the token's scope is invalid: {e}")))?;
        Ok(Tenant {
            id: TenantId::from_uuid(claims.tenant_id),
            client_id,
            scopes,
        })
    }

    /// Fails unless the token's client still exists: a deleted client's tokens
    /// stop working from the next request on.
    pub async fn check_active(&self, pool: &sqlx::PgPool) -> Result<(), Error> {
        if crate::store::client::is_active(pool, self.id, &self.client_id).await? {
            Ok(())
        } else {
            Err(Error::Unauthenticated(
                "the client of this token was deleted".into(),
            ))
        }
    }

    /// Fails with 403 `insufficient_scope` unless the token carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Error> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(Error::InsufficientScope(scope))
        }
    }
}
