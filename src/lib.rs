//! hookrelay: a multi-tenant webhook relay. GitHub posts webhooks here, they are
//! committed to PostgreSQL, and clients behind firewalls receive them over gRPC.
#![forbid(unsafe_code)]

pub mod admin;
/// The agent (`hookrelay-agent`, also `hookrelay relay`), which is its own
/// crate so that the `hookrelay-agent` binary links none of the server.
pub use hookrelay_agent as agent;
pub mod auth;
pub mod config;
pub mod database;
pub mod domain;
pub mod embedded_db;
pub mod error;
pub mod federation;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod health;
pub mod http;
pub mod jobs;
pub mod outbound;
pub mod probe;
pub mod recovery;
pub mod relay;
pub mod secrets;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod webhook;
