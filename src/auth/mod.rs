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
    /// Fails with 403 `insufficient_scope` unless the token carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Error> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(Error::InsufficientScope(scope))
        }
    }
}
