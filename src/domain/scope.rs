//! The API's OAuth2 scopes, one by one and as the space-separated `scope` set.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An OAuth2 scope of the hookrelay API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "repos:read")]
    ReposRead,
    #[serde(rename = "repos:write")]
    ReposWrite,
    #[serde(rename = "clients:write")]
    ClientsWrite,
    #[serde(rename = "events:read")]
    EventsRead,
    /// Seek and delete consumers, redeliver events.
    #[serde(rename = "events:write")]
    EventsWrite,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::ReposRead,
        Scope::ReposWrite,
        Scope::ClientsWrite,
        Scope::EventsRead,
        Scope::EventsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReposRead => "repos:read",
            Scope::ReposWrite => "repos:write",
            Scope::ClientsWrite => "clients:write",
            Scope::EventsRead => "events:read",
            Scope::EventsWrite => "events:write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown scope `{0}`")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == value)
            .ok_or_else(|| UnknownScope(value.to_owned()))
    }
}

/// A set of scopes; its text form is the space-separated OAuth2 `scope` string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn all() -> Self {
        Self(Scope::ALL.into_iter().collect())
    }

    /// Parses a space-separated scope string (RFC 6749 §3.3).
    pub fn parse_space_separated(value: &str) -> Result<Self, UnknownScope> {
        value
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(Scope::from_str)
            .collect()
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(" "))
    }
}
