//! What the integration tests share, by concern: the test database, the
//! in-process app, the signup flow, child processes and the local target. The
//! primitives the bench needs too (fixtures, signing, free ports, process
//! guards) live in the `hookrelay-testkit` crate.

mod app;
mod database;
mod flow;
mod processes;
mod target;

pub use app::*;
pub use database::*;
pub use flow::*;
pub use hookrelay_testkit::{bearer as authed, fixture, free_port, process_alive, render_envoy};
pub use processes::*;
pub use target::*;
