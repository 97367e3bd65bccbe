//! Integration tests: the real server over HTTP against a real PostgreSQL.
mod helpers;

mod abuse;
mod agent_errors;
mod agent_output;
mod clients;
mod config;
mod console;
mod control_plane;
mod embedded;
mod envoy;
mod faults;
mod grpc_tools;
mod health;
mod isolation;
mod migrate;
mod oauth;
mod observability;
mod relay;
mod repositories;
mod secrets_at_rest;
mod shutdown;
mod signup;
mod streaming;
mod tls;
mod tokens;
mod webhooks;
