//! Rate limits on what anonymous callers can repeat: signups, and failed client
//! authentication at the token endpoint. Token buckets (governor) keyed by the
//! source address; an IPv6 source counts as its /64, which one host can fill.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

use crate::domain::TenantId;

/// `N/s`, `N/min` or `N/h` per source address (a burst of N), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    pub fn parse(value: &str) -> Result<Option<Self>, String> {
        if value.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let usage = || format!("`{value}`: use N/s, N/min or N/h (for example 10/min), or off");
        let (count, per) = value.trim().split_once('/').ok_or_else(usage)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| usage())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(usage()),
        };
        Ok(Some(Self { count, per }))
    }

    fn quota(self) -> Quota {
        Quota::with_period(self.per / self.count.get())
            .expect("a rate's period is longer than zero")
            .allow_burst(self.count)
    }
}

/// A token bucket per source address.
#[derive(Debug)]
pub struct Limiter {
    buckets: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    /// Sources over a failure limit, until when: checked before any work is
    /// done for them (the bucket itself cannot be read without taking a token).
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl Limiter {
    pub fn new(rate: Option<Rate>) -> Self {
        Self {
            buckets: rate.map(|rate| DefaultKeyedRateLimiter::keyed(rate.quota())),
            clock: DefaultClock::default(),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `source`; over the limit, the seconds until one is free.
    pub fn take(&self, source: IpAddr) -> Result<(), u64> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        buckets.check_key(&source_key(source)).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// For failure limits: whether `source` is still blocked by earlier failures.
    pub fn blocked(&self, source: IpAddr) -> Result<(), u64> {
        let blocked = self.blocked.lock().expect("not poisoned");
        match blocked.get(&source_key(source)) {
            Some(until) => {
                let now = Instant::now();
                match until.checked_duration_since(now) {
                    Some(wait) if !wait.is_zero() => {
                        Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                    }
                    _ => Ok(()),
                }
            }
            None => Ok(()),
        }
    }

    /// For failure limits: counts a failure of `source`; over the limit, blocks
    /// the source until a token is free again and returns the wait.
    pub fn failed(&self, source: IpAddr) -> Result<(), u64> {
        self.take(source).inspect_err(|&wait| {
            self.blocked.lock().expect("not poisoned").insert(
                source_key(source),
                Instant::now() + Duration::from_secs(wait),
            );
        })
    }

    /// Forgets sources whose buckets are full again, so memory follows the
    /// number of recent sources, not of all sources ever seen.
    pub fn forget_idle(&self) {
        if let Some(buckets) = &self.buckets {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .expect("not poisoned")
            .retain(|_, until| *until > now);
    }
}

/// The key a source counts under: an IPv6 address as its /64, which one host can fill.
pub(crate) fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// A token bucket per tenant, for what a tenant's own callers repeat.
#[derive(Debug)]
pub struct TenantLimiter {
    buckets: Option<governor::DefaultKeyedRateLimiter<TenantId>>,
    clock: DefaultClock,
}

impl TenantLimiter {
    pub fn new(rate: Option<Rate>) -> Self {
        Self {
            buckets: rate.map(|rate| governor::RateLimiter::keyed(rate.quota())),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token for `tenant`; over the limit, the seconds until one is free.
    pub fn take(&self, tenant: TenantId) -> Result<(), u64> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        buckets.check_key(&tenant).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Forgets tenants whose buckets are full again.
    pub fn forget_idle(&self) {
        if let Some(buckets) = &self.buckets {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }
}

/// A token bucket per tenant, each with the tenant's own rate and burst (its
/// webhook quota), refilled continuously.
#[derive(Debug, Default)]
pub struct TenantBuckets {
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Taken within the current second, and within the one before: the usage
    /// `GET /v1/usage` reports.
    second: (Instant, u64, u64),
}

impl TenantBuckets {
    /// Takes a token for `tenant` from a bucket of `burst` refilled at `rate`
    /// per second; when empty, the seconds until one is free.
    pub fn take(&self, tenant: TenantId, rate: u64, burst: u64) -> Result<(), u64> {
        let now = Instant::now();
        let (rate, burst) = (rate.max(1) as f64, burst.max(1) as f64);
        let mut buckets = self.buckets.lock().expect("not poisoned");
        let bucket = buckets.entry(tenant).or_insert(Bucket {
            tokens: burst,
            at: now,
            second: (now, 0, 0),
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64);
        }
        bucket.tokens -= 1.0;
        let (start, current, _) = bucket.second;
        let elapsed = now.duration_since(start);
        bucket.second = if elapsed < Duration::from_secs(1) {
            (start, current + 1, bucket.second.2)
        } else if elapsed < Duration::from_secs(2) {
            (start + Duration::from_secs(1), 1, current)
        } else {
            (now, 1, 0)
        };
        Ok(())
    }

    /// How much of its burst `tenant` has used (what its bucket lacks of
    /// full, refilled up to now at `rate`).
    pub fn in_use(&self, tenant: TenantId, rate: u64, burst: u64) -> u64 {
        let buckets = self.buckets.lock().expect("not poisoned");
        buckets.get(&tenant).map_or(0, |bucket| {
            let refilled = bucket.tokens + bucket.at.elapsed().as_secs_f64() * rate.max(1) as f64;
            (burst as f64 - refilled.min(burst as f64)).floor() as u64
        })
    }

    /// What `tenant` sent in the last whole second on this server.
    pub fn last_second(&self, tenant: TenantId) -> u64 {
        let buckets = self.buckets.lock().expect("not poisoned");
        buckets.get(&tenant).map_or(0, |bucket| {
            let (start, current, previous) = bucket.second;
            match Instant::now().duration_since(start).as_secs() {
                0 => previous,
                1 => current,
                _ => 0,
            }
        })
    }

    /// Forgets tenants that sent nothing for a while (their buckets are full).
    pub fn forget_idle(&self) {
        let idle = Instant::now() - Duration::from_secs(600);
        self.buckets
            .lock()
            .expect("not poisoned")
            .retain(|_, bucket| bucket.at > idle);
    }
}

/// The limiters of one server.
#[derive(Debug)]
pub struct RateLimits {
    pub signup: Limiter,
    pub token_failures: Limiter,
    /// `POST /oauth/device_authorization` per source address.
    pub device_authorizations: Limiter,
    /// Device code lookups and approvals per tenant (`crate::http::device`).
    pub device_approvals: TenantLimiter,
    /// Streams and watches opened per tenant: their set-up reads the database,
    /// so a burst of thousands must not take the pool from everyone else.
    pub stream_setup: TenantLimiter,
    /// Calls to a provider's API a tenant's requests make (checking provider
    /// access, the hook doctor, recovery on request): hookrelay must not
    /// become a tenant's way to hammer a third party.
    pub provider_calls: TenantLimiter,
    /// Webhooks per tenant: its webhook quota.
    pub webhooks: TenantBuckets,
}

/// The caller's address: the peer, or, when the peer is a trusted proxy, the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy
/// (nginx's `real_ip_recursive`). Spoofed entries to the left of it are ignored.
pub fn source_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut source = peer;
    for entry in forwarded_for
        .iter()
        .rev()
        .flat_map(|header| header.rsplit(','))
    {
        let Ok(address) = entry.trim().parse::<IpAddr>() else {
            // A malformed hop: everything to its left is untrustworthy.
            break;
        };
        source = address;
        if !is_trusted(&address) {
            break;
        }
    }
    source
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_source_whatever_it_forwards() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        assert_eq!(
            source_address(ip("203.0.113.9"), &["1.2.3.4"], &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_source() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "35.191.0.0/16".parse().unwrap(),
        ];
        // A client-supplied (spoofed) entry, the real client, the load balancer.
        let forwarded = ["6.6.6.6, 198.51.100.7", "35.191.3.4"];
        assert_eq!(
            source_address(ip("127.0.0.1"), &forwarded, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            source_address(ip("127.0.0.1"), &[], &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            source_address(ip("127.0.0.1"), &["garbage, 35.191.0.1"], &trusted),
            ip("35.191.0.1")
        );
    }

    #[test]
    fn rates_parse_and_ipv6_sources_count_per_64() {
        assert_eq!(
            Rate::parse("10/min").unwrap(),
            Some(Rate {
                count: NonZeroU32::new(10).unwrap(),
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(Rate::parse("off").unwrap(), None);
        assert!(Rate::parse("10").is_err() && Rate::parse("0/s").is_err());
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        let limiter = Limiter::new(Rate::parse("2/h").unwrap());
        assert!(limiter.failed(ip("2001:db8::1")).is_ok());
        assert!(limiter.failed(ip("2001:db8::2")).is_ok());
        assert!(limiter.failed(ip("2001:db8::3")).is_err());
        assert!(limiter.blocked(ip("2001:db8::ffff")).is_err());
        assert!(limiter.blocked(ip("2001:db9::1")).is_ok());
    }
}
