//! The webhook memory budget: bytes of webhook bodies held in memory at once,
//! in total, per tenant and per source address.
//!
//! A body's announced length is reserved before its first byte is read, and
//! the signature can only be checked after the last, so anyone who can reach a
//! webhook URL can hold memory for a while. Shares keep that from becoming a
//! denial of service: one tenant (whatever addresses it sends from) holds at
//! most `per_tenant`, and one source address (whatever tenants it sends to)
//! at most `per_source`; the rest of the budget stays for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::rate_limit::source_key;
use crate::domain::TenantId;
use crate::error::Error;

/// The sizes of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryShares {
    pub total: usize,
    pub per_tenant: usize,
    pub per_source: usize,
}

/// Bytes of webhook bodies that may be held in memory at once.
#[derive(Debug)]
pub struct MemoryBudget {
    total: Arc<Semaphore>,
    shares: MemoryShares,
    held: Mutex<HashMap<Holder, usize>>,
}

/// Who holds part of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    Tenant(TenantId),
    /// An IPv6 source counts as its /64, which one host can fill.
    Source(IpAddr),
}

/// Part of the budget, returned when dropped (after the event is committed).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    tenant: Holder,
    source: Holder,
    bytes: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    pub fn new(shares: MemoryShares) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(shares.total.min(Semaphore::MAX_PERMITS))),
            shares,
            held: Mutex::default(),
        })
    }

    pub fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// Bytes `tenant` holds now.
    pub fn held_by(&self, tenant: TenantId) -> usize {
        let held = self.held.lock().expect("not poisoned");
        held.get(&Holder::Tenant(tenant)).copied().unwrap_or(0)
    }

    /// An empty reservation for a body `tenant` receives from `source`.
    pub fn reservation(self: &Arc<Self>, tenant: TenantId, source: IpAddr) -> Reservation {
        Reservation {
            budget: self.clone(),
            tenant: Holder::Tenant(tenant),
            source: Holder::Source(source_key(source)),
            bytes: 0,
            _permit: None,
        }
    }

    /// Takes `bytes` for both holders, or nothing: 503 when the tenant's share,
    /// the source's share or the whole budget cannot hold them.
    fn take(
        &self,
        tenant: Holder,
        source: Holder,
        bytes: usize,
    ) -> Result<OwnedSemaphorePermit, Error> {
        let full = |whose: &str| {
            Error::Unavailable(format!(
                "too many webhook bodies {whose} are being received; retry shortly"
            ))
        };
        let mut held = self.held.lock().expect("not poisoned");
        let holding = |holder| held.get(&holder).copied().unwrap_or(0);
        if holding(tenant) + bytes > self.shares.per_tenant {
            return Err(full("for this repository's tenant"));
        }
        if holding(source) + bytes > self.shares.per_source {
            return Err(full("from this address"));
        }
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| self.total.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| full("at once"))?;
        for holder in [tenant, source] {
            *held.entry(holder).or_default() += bytes;
        }
        Ok(permit)
    }

    fn give_back(&self, holders: [Holder; 2], bytes: usize) {
        let mut held = self.held.lock().expect("not poisoned");
        for holder in holders {
            if let Some(count) = held.get_mut(&holder) {
                *count -= bytes.min(*count);
                if *count == 0 {
                    held.remove(&holder);
                }
            }
        }
    }
}

impl Reservation {
    /// Bytes reserved so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reserves `more` bytes; on 503 the reservation keeps what it had.
    pub fn grow(&mut self, more: usize) -> Result<(), Error> {
        if more == 0 {
            return Ok(());
        }
        let permit = self.budget.take(self.tenant, self.source, more)?;
        self.bytes += more;
        match &mut self._permit {
            Some(held) => held.merge(permit),
            None => self._permit = Some(permit),
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget
                .give_back([self.tenant, self.source], self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn budget() -> Arc<MemoryBudget> {
        MemoryBudget::new(MemoryShares {
            total: 8 * MIB,
            per_tenant: 4 * MIB,
            per_source: 2 * MIB,
        })
    }

    #[test]
    fn a_tenant_and_a_source_hold_no_more_than_their_shares() {
        let budget = budget();
        let (noisy, quiet) = (TenantId::new(), TenantId::new());
        let ip = |n: u8| IpAddr::from([203, 0, 113, n]);

        // One address: its share, then 503, whichever tenant it sends to.
        let mut first = budget.reservation(noisy, ip(1));
        first.grow(2 * MIB).unwrap();
        assert!(budget.reservation(quiet, ip(1)).grow(1).is_err());
        // Many addresses, one tenant: the tenant's share, then 503.
        let mut second = budget.reservation(noisy, ip(2));
        second.grow(2 * MIB).unwrap();
        let refused = budget.reservation(noisy, ip(3)).grow(1).unwrap_err();
        assert!(refused.to_string().contains("tenant"), "{refused}");
        assert_eq!(budget.held_by(noisy), 4 * MIB);
        // The rest of the budget stays for the others.
        let mut other = budget.reservation(quiet, ip(4));
        other.grow(2 * MIB).unwrap();
        assert_eq!(budget.available(), 2 * MIB);

        // Dropped reservations give everything back.
        drop((first, second, other));
        assert_eq!(budget.available(), 8 * MIB);
        assert_eq!(budget.held_by(noisy), 0);
        assert!(budget.held.lock().unwrap().is_empty());
    }

    #[test]
    fn a_refused_growth_keeps_what_was_reserved() {
        let budget = budget();
        let tenant = TenantId::new();
        let mut reservation = budget.reservation(tenant, IpAddr::from([198, 51, 100, 1]));
        reservation.grow(MIB).unwrap();
        assert!(reservation.grow(2 * MIB).is_err());
        assert_eq!((reservation.bytes(), budget.held_by(tenant)), (MIB, MIB));
        // An IPv6 source counts as its /64.
        let v6 = |last: u16| IpAddr::from([0x2001, 0x0db8, 0, 1, 0, 0, 0, last]);
        let mut a = budget.reservation(TenantId::new(), v6(1));
        a.grow(2 * MIB).unwrap();
        assert!(budget.reservation(TenantId::new(), v6(2)).grow(1).is_err());
    }
}
