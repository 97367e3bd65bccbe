//! Bytes of event bodies each tenant stores, for its stored-bytes quota: the
//! last count over the event table (every `jobs` minute), plus what this
//! server stored since. Other servers' additions show at the next count, so a
//! tenant on many servers can overshoot by about a minute of its webhooks.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::TenantId;

#[derive(Debug, Default)]
pub struct StoredBytes {
    tenants: Mutex<HashMap<TenantId, u64>>,
}

impl StoredBytes {
    pub fn of(&self, tenant: TenantId) -> u64 {
        let tenants = self.tenants.lock().expect("not poisoned");
        tenants.get(&tenant).copied().unwrap_or(0)
    }

    /// This server stored `bytes` more for `tenant`.
    pub fn add(&self, tenant: TenantId, bytes: u64) {
        let mut tenants = self.tenants.lock().expect("not poisoned");
        *tenants.entry(tenant).or_default() += bytes;
    }

    /// A new count of every tenant (the ones not in it store nothing).
    pub fn replace(&self, counted: impl IntoIterator<Item = (TenantId, u64)>) {
        *self.tenants.lock().expect("not poisoned") = counted.into_iter().collect();
    }
}
