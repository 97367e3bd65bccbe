//! Where each repository's webhooks go, cached in memory: tenant, provider, its
//! settings and the decrypted secrets. A webhook then costs no database read before its insert.
//!
//! Correctness across replicas does not depend on the cache:
//! - a secret rotated on another replica: verification with the cached secrets
//!   fails, the entry is re-read and the webhook verified again;
//! - a repository deleted on another replica: the insert's foreign key refuses
//!   the event, which is answered 404;
//! - entries expire after 30 seconds, and this replica forgets an entry as soon
//!   as it rotates or deletes it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::domain::{Provider, RepositoryId, TenantId, WebhookSettings};
use crate::error::Error;
use crate::secrets::SecretKey;
use crate::store;

const TTL: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 100_000;

/// A repository's webhook target. No Debug: it holds secrets.
pub struct Target {
    pub tenant_id: TenantId,
    pub provider: Provider,
    pub settings: WebhookSettings,
    /// The tenant is suspended (re-read within the cache's 30 s).
    pub suspended: bool,
    /// The operator's overrides of the tenant's webhook quotas, re-read
    /// within the cache's 30 s.
    pub quota: crate::domain::WebhookQuota,
    /// Each secret with the time it stops verifying (None: the current one).
    secrets: Vec<(Vec<u8>, Option<OffsetDateTime>)>,
}

impl Target {
    /// The secrets that verify now: the current one, and the previous one during a rotation.
    pub fn secrets(&self) -> Vec<&[u8]> {
        let now = OffsetDateTime::now_utc();
        self.secrets
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| until > now))
            .map(|(secret, _)| secret.as_slice())
            .collect()
    }
}

#[derive(Default)]
pub struct TargetCache {
    entries: RwLock<HashMap<RepositoryId, (Instant, Arc<Target>)>>,
}

impl std::fmt::Debug for TargetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetCache(..)")
    }
}

impl TargetCache {
    /// The target of `id`, and whether it was just read from the database.
    pub async fn get(
        &self,
        pool: &PgPool,
        key: &SecretKey,
        id: RepositoryId,
        fresh: bool,
    ) -> Result<Option<(Arc<Target>, bool)>, Error> {
        if !fresh
            && let Some((at, target)) = self.entries.read().expect("target cache").get(&id)
            && at.elapsed() < TTL
        {
            return Ok(Some((target.clone(), false)));
        }
        let Some(stored) = store::repository::webhook_target(pool, key, id).await? else {
            self.forget(id);
            return Ok(None);
        };
        let target = Arc::new(Target {
            tenant_id: stored.tenant_id,
            provider: stored.provider,
            settings: stored.settings,
            suspended: stored.suspended,
            quota: stored.quota,
            secrets: stored.secrets,
        });
        let mut entries = self.entries.write().expect("target cache");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(id, (Instant::now(), target.clone()));
        Ok(Some((target, true)))
    }

    pub fn forget(&self, id: RepositoryId) {
        self.entries.write().expect("target cache").remove(&id);
    }
}
