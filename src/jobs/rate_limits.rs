//! Rate-limiter housekeeping: forgets sources idle for a while.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Keeps the rate limiters' memory proportional to recent sources.
pub async fn forget_idle_sources(limits: Arc<crate::server::RateLimits>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        limits.signup.forget_idle();
        limits.token_failures.forget_idle();
        limits.device_authorizations.forget_idle();
        limits.device_approvals.forget_idle();
        limits.stream_setup.forget_idle();
        limits.provider_calls.forget_idle();
        limits.webhooks.forget_idle();
    }
}
