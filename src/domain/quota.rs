//! A tenant's quotas: what it may hold (counts) and how fast it may send.

use serde::Serialize;

/// The quotas of one tenant: the defaults (`HOOKRELAY_QUOTA_*`), or the
/// operator's overrides (`hookrelay tenants set-quota`). The keys of
/// `GET /v1/usage`'s `quotas` and `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quotas {
    pub repositories: u64,
    pub clients: u64,
    pub trusted_issuers: u64,
    pub consumers: u64,
    /// Event streams open at once, on every server together.
    pub open_streams: u64,
    /// Console watches open at once, per server.
    pub open_watches: u64,
    /// Webhooks accepted per second, per server: a token bucket refilled at
    /// this rate and holding `webhook_burst`.
    pub webhooks_per_second: u64,
    pub webhook_burst: u64,
    /// Bytes of event bodies stored (retained) at once; a webhook past it is
    /// refused with 403 `quota_exceeded`.
    pub stored_event_bytes: u64,
}

/// One quota, by the name the API and the CLI use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Repositories,
    Clients,
    TrustedIssuers,
    Consumers,
    OpenStreams,
    OpenWatches,
}

impl Quota {
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Repositories => "repositories",
            Quota::Clients => "clients",
            Quota::TrustedIssuers => "trusted_issuers",
            Quota::Consumers => "consumers",
            Quota::OpenStreams => "open_streams",
            Quota::OpenWatches => "open_watches",
        }
    }

    /// The limit of this quota in `quotas`.
    pub fn of(self, quotas: &Quotas) -> u64 {
        match self {
            Quota::Repositories => quotas.repositories,
            Quota::Clients => quotas.clients,
            Quota::TrustedIssuers => quotas.trusted_issuers,
            Quota::Consumers => quotas.consumers,
            Quota::OpenStreams => quotas.open_streams,
            Quota::OpenWatches => quotas.open_watches,
        }
    }

    /// The error for a tenant that holds `held` and wants one more.
    pub fn check(self, quotas: &Quotas, held: u64) -> Result<(), String> {
        let limit = self.of(quotas);
        if held < limit {
            Ok(())
        } else {
            Err(format!(
                "the tenant's quota of {} is reached (limit {limit})",
                self.as_str().replace('_', " ")
            ))
        }
    }
}

/// The operator's overrides of one tenant's quotas; None: the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct QuotaOverrides {
    pub repositories: Option<i64>,
    pub clients: Option<i64>,
    pub trusted_issuers: Option<i64>,
    pub consumers: Option<i64>,
    pub open_streams: Option<i64>,
    pub open_watches: Option<i64>,
    pub webhooks_per_second: Option<i64>,
    pub webhook_burst: Option<i64>,
    pub stored_event_bytes: Option<i64>,
}

impl QuotaOverrides {
    /// The tenant's quotas: these overrides over `defaults`.
    pub fn over(&self, defaults: &Quotas) -> Quotas {
        let pick = |value: Option<i64>, default: u64| {
            value.map_or(default, |v| u64::try_from(v).unwrap_or(0))
        };
        Quotas {
            repositories: pick(self.repositories, defaults.repositories),
            clients: pick(self.clients, defaults.clients),
            trusted_issuers: pick(self.trusted_issuers, defaults.trusted_issuers),
            consumers: pick(self.consumers, defaults.consumers),
            open_streams: pick(self.open_streams, defaults.open_streams),
            open_watches: pick(self.open_watches, defaults.open_watches),
            webhooks_per_second: pick(self.webhooks_per_second, defaults.webhooks_per_second)
                .max(1),
            webhook_burst: pick(self.webhook_burst, defaults.webhook_burst).max(1),
            stored_event_bytes: pick(self.stored_event_bytes, defaults.stored_event_bytes),
        }
    }
}

/// The overrides a webhook checks, read with its repository (and cached
/// with it for up to 30 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookQuota {
    pub per_second: Option<i64>,
    pub burst: Option<i64>,
    pub stored_event_bytes: Option<i64>,
}

impl WebhookQuota {
    /// The tenant's whole quotas, with these overrides over `defaults`.
    pub fn over(&self, defaults: &Quotas) -> Quotas {
        QuotaOverrides {
            webhooks_per_second: self.per_second,
            webhook_burst: self.burst,
            stored_event_bytes: self.stored_event_bytes,
            ..QuotaOverrides::default()
        }
        .over(defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set_and_a_quota_names_its_limit() {
        let defaults = Quotas {
            repositories: 1000,
            clients: 100,
            trusted_issuers: 100,
            consumers: 1000,
            open_streams: 1000,
            open_watches: 100,
            webhooks_per_second: 100,
            webhook_burst: 1000,
            stored_event_bytes: 1 << 30,
        };
        let overrides = QuotaOverrides {
            repositories: Some(3),
            ..Default::default()
        };
        let quotas = overrides.over(&defaults);
        assert_eq!((quotas.repositories, quotas.clients), (3, 100));
        assert!(Quota::Repositories.check(&quotas, 2).is_ok());
        let refused = Quota::Repositories.check(&quotas, 3).unwrap_err();
        assert_eq!(
            refused,
            "the tenant's quota of repositories is reached (limit 3)"
        );
        assert!(
            Quota::TrustedIssuers
                .check(&quotas, 100)
                .unwrap_err()
                .contains("trusted issuers")
        );
    }
}
