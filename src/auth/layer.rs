//! gRPC: a tower layer in front of the services that calls the same
//! `authenticate()` as HTTP (async: it may reload keys and checks that the
//! client still exists), checks the method's scope from one table, and hands
//! the `Caller` to the handler in the request's extensions.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use tonic::Status;
use tonic::server::NamedService;

use super::{Authenticator, Caller};
use crate::domain::Scope;

/// The scope each RPC needs. A method missing here is refused.
fn required_scope(path: &str) -> Option<Scope> {
    match path {
        "/hookrelay.v1.EventService/StreamEvents"
        | "/hookrelay.v1.EventService/AckEvents"
        | "/hookrelay.v1.EventService/ListEvents"
        | "/hookrelay.v1.EventService/WatchEvents"
        | "/hookrelay.v1.EventService/WatchDeliveries"
        | "/hookrelay.v1.EventService/WatchConsumers" => Some(Scope::EventsRead),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    auth: Authenticator,
}

impl GrpcAuthLayer {
    pub fn new(auth: Authenticator) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            auth: self.auth.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    auth: Authenticator,
    inner: S,
}

impl<S: NamedService> NamedService for GrpcAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<Request<B>> for GrpcAuth<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is ready; the original (which poll_ready readied) runs the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let Some(scope) = required_scope(request.uri().path()) else {
                return Ok(Status::permission_denied("no such method").into_http());
            };
            let caller = match auth.authenticate(request.headers()).await {
                Ok(caller) => caller,
                Err(error) => return Ok(Status::from(error).into_http()),
            };
            if let Err(error) = caller.tenant.require(scope) {
                return Ok(Status::from(error).into_http());
            }
            request.extensions_mut().insert(caller);
            inner.call(request).await
        })
    }
}

/// The caller that `GrpcAuthLayer` established.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the call was not authenticated"))
}
