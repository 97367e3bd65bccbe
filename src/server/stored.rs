//! Bytes of event bodies each tenant stores, for its stored-bytes quota: what
//! the database last said (a whole count, then the changes read every
//! `jobs` interval), plus what this server stored since. Other servers'
//! additions show at the next read, so a tenant on many servers can overshoot
//! by about one interval of its webhooks.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::TenantId;

#[derive(Debug, Default)]
pub struct StoredBytes {
    tenants: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// As of the last read of the database.
    read: HashMap<TenantId, u64>,
    /// Stored by this server before the read under way began: committed
    /// before its snapshot, so in it.
    pending: HashMap<TenantId, u64>,
    /// Stored by this server since: in this read or the next.
    here: HashMap<TenantId, u64>,
}

impl StoredBytes {
    pub fn of(&self, tenant: TenantId) -> u64 {
        let counts = self.tenants.lock().expect("not poisoned");
        let of = |map: &HashMap<TenantId, u64>| map.get(&tenant).copied().unwrap_or(0);
        of(&counts.read) + of(&counts.pending) + of(&counts.here)
    }

    /// This server stored `bytes` more for `tenant`.
    pub fn add(&self, tenant: TenantId, bytes: u64) {
        let mut counts = self.tenants.lock().expect("not poisoned");
        *counts.here.entry(tenant).or_default() += bytes;
    }

    /// A read of the database begins: what this server stored so far was
    /// committed before it, so the read holds it. (What is stored during the
    /// read counts twice until the next one: an overshoot of the quota is
    /// what this must not allow.)
    pub fn reading(&self) {
        let mut counts = self.tenants.lock().expect("not poisoned");
        let Counts { pending, here, .. } = &mut *counts;
        for (tenant, bytes) in here.drain() {
            *pending.entry(tenant).or_default() += bytes;
        }
    }

    /// A whole count of every tenant (the ones not in it store nothing).
    pub fn replace(&self, counted: impl IntoIterator<Item = (TenantId, u64)>) {
        let mut counts = self.tenants.lock().expect("not poisoned");
        counts.read = counted.into_iter().collect();
        counts.pending.clear();
    }

    /// What changed since the last read, by tenant: bytes stored less bytes
    /// deleted. A count never goes below zero: a deletion can be read before
    /// the events it deleted were (a repository deleted within an interval of
    /// its last events); the next whole count puts that right.
    pub fn change(&self, changed: impl IntoIterator<Item = (TenantId, i64)>) {
        let mut counts = self.tenants.lock().expect("not poisoned");
        for (tenant, bytes) in changed {
            let count = counts.read.entry(tenant).or_default();
            *count = count.saturating_add_signed(bytes);
            if *count == 0 {
                counts.read.remove(&tenant);
            }
        }
        counts.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_takes_over_what_this_server_stored_before_it_and_never_goes_below_zero() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let stored = StoredBytes::default();
        stored.replace([(a, 100)]);
        stored.add(a, 10);
        stored.add(b, 5);
        assert_eq!((stored.of(a), stored.of(b)), (110, 5));
        stored.reading();
        // Stored while the read runs: kept, whether or not the read saw it.
        stored.add(a, 1);
        assert_eq!((stored.of(a), stored.of(b)), (111, 5));
        // The read holds this server's 10 and 5, another's 20, and a deletion of 30.
        stored.change([(a, 10 + 20 - 30), (b, 5)]);
        assert_eq!((stored.of(a), stored.of(b)), (101, 5));
        // A failed read: what it would have covered still counts.
        stored.reading();
        assert_eq!(stored.of(a), 101);
        stored.reading();
        stored.change([(a, 1), (b, -7)]);
        assert_eq!((stored.of(a), stored.of(b)), (101, 0));
        stored.reading();
        stored.replace([(b, 1)]);
        assert_eq!((stored.of(a), stored.of(b)), (0, 1));
    }
}
