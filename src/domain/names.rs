//! Names tenants choose: display names (tenants, clients) and consumer names.

/// A display name (tenants, clients): 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > 100 {
            return Err("must be 1 to 100 characters".into());
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A consumer name, e.g. `jenkins-eu`: 1 to 100 letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsumerName(String);

impl ConsumerName {
    /// The rule the agent checks too (`hookrelay_proto::rules`).
    pub fn parse(value: &str) -> Result<Self, String> {
        hookrelay_proto::rules::check_consumer_name(value)
            .map(|()| Self(value.to_owned()))
            .map_err(str::to_owned)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
