//! Recovery of missed deliveries (`crate::recovery`) for every repository
//! with provider access: at start, then every `HOOKRELAY_RECOVERY_INTERVAL`.
//! Every replica runs this; each repository's lease lets one read its log at
//! a time, and a scheduled pass skips a repository whose last run (on any
//! replica) started within half an interval.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::recovery::{Recovery, Trigger};
use crate::store;

pub async fn recover_missed(
    recovery: Arc<Recovery>,
    pool: PgPool,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut trigger = Trigger::Startup;
    loop {
        let pass = pass(&recovery, &pool, interval, trigger, &stop);
        tokio::select! {
            () = pass => {}
            () = stop.cancelled() => {
                // Runs in flight end at their next step, releasing their leases.
                recovery.stop();
                return;
            }
        }
        trigger = Trigger::Scheduled;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => {
                recovery.stop();
                return;
            }
        }
    }
}

async fn pass(
    recovery: &Arc<Recovery>,
    pool: &PgPool,
    interval: Duration,
    trigger: Trigger,
    stop: &CancellationToken,
) {
    let repositories = match store::recovery::all_access(pool).await {
        Ok(repositories) => repositories,
        Err(error) => {
            tracing::warn!(error = %error, "recovery: cannot list the repositories with provider access");
            return;
        }
    };
    for (tenant_id, repository_id) in repositories {
        if stop.is_cancelled() {
            return;
        }
        if trigger == Trigger::Scheduled {
            let last = store::recovery::last_started(pool, tenant_id, repository_id).await;
            if let Ok(Some(last)) = last
                && OffsetDateTime::now_utc() - last < interval / 2
            {
                continue;
            }
        }
        if let Err(error) = recovery.run(tenant_id, repository_id, trigger).await {
            tracing::debug!(repository_id = %repository_id, ?error, "recovery not run");
        }
    }
}
