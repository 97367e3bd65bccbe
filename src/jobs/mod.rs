//! Every background loop of a server, started in one place (`start`) and
//! stopped by one token. A loop that belongs to one part lives with it (the
//! relay's wake-ups, the health report, the signing keys); the others are here.

mod consumers;
mod rate_limits;
mod recovery;
mod retention;
mod stored;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often every replica reloads the signing keys: a rotated-in key is in the
/// JWKS within this long, far inside `hookrelay keys rotate`'s publish delay.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// How often the loops that the config times run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Events older than this are deleted (checked every quarter of it).
    pub retention: Duration,
    /// Delivery logs are read for missed deliveries.
    pub recovery: Duration,
    /// Every tenant's stored event bytes are brought up to date.
    pub stored_bytes: Duration,
}

/// Starts the server's background loops; each ends once `stop` is cancelled.
pub fn start(
    state: &AppState,
    schedule: Schedule,
    health: tonic_health::server::HealthReporter,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let (pool, streams) = (&state.pool, &state.streams);
    vec![
        tokio::spawn(streams.clone().listen(pool.clone(), stop.clone())),
        tokio::spawn(streams.clone().announce(pool.clone(), stop.clone())),
        tokio::spawn(
            streams
                .clone()
                .check_revocations(pool.clone(), stop.clone()),
        ),
        tokio::spawn(streams.clone().heartbeat(stop.clone())),
        // Follows `hookrelay keys rotate` on every replica.
        tokio::spawn(state.keys.clone().follow(KEY_RELOAD_INTERVAL, stop.clone())),
        tokio::spawn(consumers::consumer_metrics(
            pool.clone(),
            state.metrics.clone(),
            state.settings.stall_threshold,
            stop.clone(),
        )),
        tokio::spawn(retention::retention_job(
            pool.clone(),
            schedule.retention,
            stop.clone(),
        )),
        tokio::spawn(rate_limits::forget_idle_sources(
            state.rate_limits.clone(),
            stop.clone(),
        )),
        tokio::spawn(stored::count_stored_bytes(
            pool.clone(),
            state.stored_bytes.clone(),
            schedule.stored_bytes,
            stop.clone(),
        )),
        tokio::spawn(recovery::recover_missed(
            state.recovery.clone(),
            pool.clone(),
            schedule.recovery,
            stop.clone(),
        )),
        tokio::spawn(crate::health::report(
            pool.clone(),
            state.storage.clone(),
            health,
            state.metrics.clone(),
            state.draining.clone(),
            stop.clone(),
        )),
    ]
}
