//! HTTP: the caller by type. A handler names the scope it needs in its
//! signature (`Authorized<ReposWrite>`), or says in as many words that any
//! scope will do (`AnyScope`); a handler that forgets does not compile.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::Tenant;
use crate::domain::Scope;
use crate::error::Error;
use crate::state::AppState;

/// A scope, as a type.
pub trait ScopeMarker: Send + Sync {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($name:ident => $scope:expr),* $(,)?) => {$(
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl ScopeMarker for $name {
            const SCOPE: Scope = $scope;
        }
    )*};
}

scopes! {
    ReposRead => Scope::ReposRead,
    ReposWrite => Scope::ReposWrite,
    ClientsWrite => Scope::ClientsWrite,
    EventsRead => Scope::EventsRead,
    EventsWrite => Scope::EventsWrite,
}

/// An authenticated caller whose token carries scope `S`: 401 without a valid
/// token, 403 `insufficient_scope` without the scope.
#[derive(Debug, Clone)]
pub struct Authorized<S: ScopeMarker>(pub Tenant, pub PhantomData<S>);

/// An authenticated caller with whatever scopes: for what any client of a
/// tenant may read about the tenant itself (`GET /v1/usage`).
#[derive(Debug, Clone)]
pub struct AnyScope(pub Tenant);

impl FromRequestParts<AppState> for AnyScope {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        Ok(Self(state.auth.authenticate(&parts.headers).await?.tenant))
    }
}

impl<S: ScopeMarker> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let caller = state.auth.authenticate(&parts.headers).await?;
        caller.tenant.require(S::SCOPE)?;
        Ok(Self(caller.tenant, PhantomData))
    }
}
