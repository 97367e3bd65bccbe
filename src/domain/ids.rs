//! Identifiers: tenants, repositories, trusted issuers (UUIDs), clients,
//! deliveries, events, and the commit-order horizon.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the textual form; None for anything else.
            pub fn parse(value: &str) -> Option<Self> {
                Uuid::try_parse(value).ok().map(Self)
            }

            pub fn from_uuid(value: Uuid) -> Self {
                Self(value)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant: the unit of isolation. Every tenant-owned row carries one.
    TenantId
);
uuid_id!(
    /// A registered git repository; its id is the last segment of its webhook URL.
    RepositoryId
);
uuid_id!(
    /// A tenant's trusted issuer (token exchange); tokens issued under it name it.
    TrustedIssuerId
);

uuid_id!(
    /// One run of recovery: a repository's delivery log read for missed deliveries.
    RecoveryId
);

/// An OAuth2 client id, `hrc_` followed by 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ClientId(String);

impl ClientId {
    const PREFIX: &'static str = "hrc_";

    pub fn generate() -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            hex::encode(rand::random::<[u8; 16]>())
        ))
    }

    pub fn parse(value: &str) -> Option<Self> {
        let digits = value.strip_prefix(Self::PREFIX)?;
        (digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's position in the global log. Ids grow in commit order (see `store::event`).
#[derive(
    Debug,
    Default,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct EventId(i64);

impl EventId {
    /// Before the first event: "from the oldest retained".
    pub const ZERO: EventId = EventId(0);
    /// After every event: a tail that holds nothing yet.
    pub const MAX: EventId = EventId(i64::MAX);

    pub fn new(value: i64) -> Self {
        Self(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in commit order across repositories: every event whose
/// transaction id (`event.txid`) is below it has committed or never will (see
/// `crate::store::event`). Readers that read across repositories (the
/// streams' shared tail, watches) go up to the horizon of their snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct Horizon(i64);

impl Horizon {
    /// Below every event.
    pub const ZERO: Horizon = Horizon(0);

    pub fn new(value: i64) -> Self {
        Self(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The provider's id of one delivery (GitHub's X-GitHub-Delivery): the dedup key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryId(String);

impl DeliveryId {
    pub const MAX_LEN: usize = 200;

    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        (!value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
