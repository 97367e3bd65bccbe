//! The listeners and what guards them: connections (limits, timeouts, TLS), the
//! webhook memory budget, and the rate limits on anonymous callers.

pub mod connections;
mod memory;
pub mod rate_limit;
pub mod tls;

pub use connections::{ConnectionLimits, Connections};
pub use memory::{MemoryBudget, MemoryShares, Reservation};
pub use rate_limit::{Limiter, Rate, RateLimits, TenantBuckets, TenantLimiter};
