//! hookrelay's gRPC contract, shared by the server, the agent, the tests and the
//! bench: the code generated from `proto/hookrelay/v1` (by build.rs, with protox
//! and tonic-prost-build, no system protoc), and the few rules about its
//! messages that both ends apply.

#![forbid(unsafe_code)]

pub mod rules;

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("hookrelay.v1");
}

pub use generated::*;

/// The descriptor set that server reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hookrelay_descriptor");
