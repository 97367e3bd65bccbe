//! Background jobs, each running until the server's shutdown token.

mod consumers;
mod health;
mod rate_limits;
mod retention;

pub use consumers::consumer_metrics;
pub use health::report_health;
pub use rate_limits::forget_idle_sources;
pub use retention::retention_job;
