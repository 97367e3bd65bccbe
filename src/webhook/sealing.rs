//! Headers whose value is a secret: GitLab's `X-Gitlab-Token` is the webhook
//! secret itself. It must reach the agent (a GitLab-aware target checks it),
//! but it is not kept in clear at rest: it is sealed (XChaCha20-Poly1305 under
//! the key-encryption key, bound to the repository and header) before the
//! event is stored, unsealed only on the stream to the agent, and shown as
//! `[sealed]` everywhere else (the event API, ListEvents, the console).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::domain::Provider;
use crate::secrets::SecretKey;

const SEALED: &str = "hookrelay-sealed:";
/// What the API shows instead of a sealed value.
pub const REDACTED: &str = "[sealed]";

/// The headers of `provider`'s webhooks whose value is a secret.
pub fn secret_headers(provider: &str) -> &'static [&'static str] {
    if provider == Provider::Gitlab.as_str() {
        &["x-gitlab-token"]
    } else {
        &[]
    }
}

fn context(repository_id: &str, name: &str) -> String {
    format!("repository:{repository_id}:event_header:{name}")
}

fn is_secret(provider: &str, name: &str) -> bool {
    secret_headers(provider)
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}

/// A stored header, as the store keeps it or as the gRPC API sends it.
pub trait HeaderPair {
    fn name(&self) -> &str;
    fn value_mut(&mut self) -> &mut String;
}

impl HeaderPair for (String, String) {
    fn name(&self) -> &str {
        &self.0
    }
    fn value_mut(&mut self) -> &mut String {
        &mut self.1
    }
}

impl HeaderPair for hookrelay_proto::Header {
    fn name(&self) -> &str {
        &self.name
    }
    fn value_mut(&mut self) -> &mut String {
        &mut self.value
    }
}

/// Seals the secret headers of a delivery about to be stored.
pub fn seal_secret_headers<H: HeaderPair>(
    provider: Provider,
    repository_id: &str,
    key: &SecretKey,
    headers: &mut [H],
) {
    for header in headers.iter_mut() {
        if is_secret(provider.as_str(), header.name()) {
            let context = context(repository_id, &header.name().to_ascii_lowercase());
            let value = header.value_mut();
            let sealed = key.encrypt(value.as_bytes(), &context);
            *value = format!("{SEALED}{}", STANDARD.encode(sealed));
        }
    }
}

/// Opens the sealed headers of a stored event for the agent's replay. A value
/// that does not open (sealed under another key) is dropped rather than sent
/// sealed; returns how many were.
pub fn unseal_secret_headers<H: HeaderPair>(
    provider: &str,
    repository_id: &str,
    key: &SecretKey,
    headers: &mut Vec<H>,
) -> usize {
    let before = headers.len();
    headers.retain_mut(|header| {
        if !is_secret(provider, header.name()) {
            return true;
        }
        let context = context(repository_id, &header.name().to_ascii_lowercase());
        let value = header.value_mut();
        let opened = value
            .strip_prefix(SEALED)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .and_then(|sealed| key.decrypt(&sealed, &context).ok())
            .and_then(|plain| String::from_utf8(plain).ok());
        match opened {
            Some(plain) => {
                *value = plain;
                true
            }
            None => false,
        }
    });
    before - headers.len()
}

/// Re-seals the secret headers of a stored event under the current key
/// (`hookrelay secrets rekey`); true when one changed.
pub fn reseal_secret_headers<H: HeaderPair>(
    provider: &str,
    repository_id: &str,
    key: &SecretKey,
    headers: &mut [H],
) -> anyhow::Result<bool> {
    let mut changed = false;
    for header in headers.iter_mut() {
        if !is_secret(provider, header.name()) {
            continue;
        }
        let context = context(repository_id, &header.name().to_ascii_lowercase());
        let value = header.value_mut();
        let Some(sealed) = value
            .strip_prefix(SEALED)
            .and_then(|b64| STANDARD.decode(b64).ok())
        else {
            continue;
        };
        if let Some(resealed) = key.reseal(&sealed, &context)? {
            *value = format!("{SEALED}{}", STANDARD.encode(resealed));
            changed = true;
        }
    }
    Ok(changed)
}

/// Replaces secret values by `[sealed]`, for every output but the agent's stream.
pub fn redact_secret_headers<H: HeaderPair>(provider: &str, headers: &mut [H]) {
    for header in headers.iter_mut() {
        if is_secret(provider, header.name()) {
            *header.value_mut() = REDACTED.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gitlab_token_is_sealed_at_rest_opened_for_the_agent_and_redacted_elsewhere() {
        let key = SecretKey::generate();
        let mut stored = vec![
            ("x-gitlab-event".to_owned(), "Push Hook".to_owned()),
            ("x-gitlab-token".to_owned(), "whsec_abc".to_owned()),
        ];
        seal_secret_headers(Provider::Gitlab, "r-1", &key, &mut stored);
        assert_eq!(stored[0].1, "Push Hook");
        assert!(stored[1].1.starts_with(SEALED) && !stored[1].1.contains("whsec_abc"));

        let mut streamed = stored.clone();
        assert_eq!(
            unseal_secret_headers("gitlab", "r-1", &key, &mut streamed),
            0
        );
        assert_eq!(streamed[1].1, "whsec_abc");
        // Bound to its repository: another one's sealed value does not open.
        let mut moved = stored.clone();
        assert_eq!(unseal_secret_headers("gitlab", "r-2", &key, &mut moved), 1);
        assert_eq!(moved.len(), 1);

        let mut shown = stored.clone();
        redact_secret_headers("gitlab", &mut shown);
        assert_eq!(shown[1].1, REDACTED);
        // Other providers' headers of that name are ordinary.
        let mut github = vec![("x-gitlab-token".to_owned(), "v".to_owned())];
        seal_secret_headers(Provider::Github, "r-1", &key, &mut github);
        assert_eq!(github[0].1, "v");
    }
}
