//! The gRPC API: `hookrelay.v1.EventService` behind per-RPC bearer-token
//! authorization (`auth::GrpcAuthLayer`), plus health and reflection, which
//! need no token.

mod convert;
mod events;

pub use events::EventsService;

/// Generated code for `proto/hookrelay/v1` (the `hookrelay-proto` crate).
pub use hookrelay_proto as proto;
