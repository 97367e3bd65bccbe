//! The gRPC API: `hookrelay.v1.EventService` behind per-RPC bearer-token
//! authorization, plus health and reflection, which need no token.

mod convert;
mod events;

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::auth::{Keys, Tenant};
use crate::domain::Scope;

pub use events::EventsService;

/// Generated code for `proto/hookrelay/v1` (the `hookrelay-proto` crate).
pub use hookrelay_proto as proto;

/// The authenticated caller of an RPC, put in the request's extensions by `Authenticate`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Tenant,
    /// The token's `exp` (seconds since the epoch): a stream ends there.
    pub expires_at: u64,
}

/// Checks `authorization: Bearer <JWT>` on every call: signature, exp, nbf, iss,
/// aud, the tenant claim and the `events:read` scope. Synchronous, against the
/// keys in memory; the handlers then check, asynchronously, that the client
/// still exists.
#[derive(Debug, Clone)]
pub struct Authenticate {
    keys: Arc<Keys>,
}

impl Authenticate {
    pub fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization: Bearer <token> metadata")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
            })?;
        let claims = self
            .keys
            .verify(token)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let tenant = Tenant::from_claims(&claims)?;
        tenant.require(Scope::EventsRead)?;
        request.extensions_mut().insert(Caller {
            tenant,
            expires_at: claims.exp,
        });
        Ok(request)
    }
}

/// The caller that `Authenticate` established.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the call was not authenticated"))
}
