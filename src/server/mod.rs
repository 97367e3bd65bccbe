//! The listeners and what guards them: connections (limits, timeouts, TLS), the
//! webhook memory budget, the rate limits, and the tenants' stored bytes.

pub mod connections;
mod memory;
pub mod rate_limit;
mod stored;
pub mod tls;

pub use connections::{ConnectionLimits, Connections};
pub use memory::{MemoryBudget, MemoryShares, Reservation};
pub use rate_limit::{Limiter, Rate, RateLimits, TenantBuckets, TenantLimiter};
pub use stored::StoredBytes;
