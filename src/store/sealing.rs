//! Event headers whose value is a secret, sealed at rest: GitLab's
//! `X-Gitlab-Token` is the webhook secret itself. It must reach the agent (a
//! GitLab-aware target checks it), but it is not kept in clear: it is sealed
//! (XChaCha20-Poly1305 under the key-encryption key, bound to the repository
//! and header) before the event is stored (`SealedHeaders::seal`), opened only
//! for the stream to the agent (`StoredEvent::headers_for_agent`), and shown as
//! `[sealed]` everywhere else (`StoredEvent::headers_redacted`: the event API,
//! ListEvents, the console). The type has no other way to its values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::domain::{Provider, RepositoryId};
use crate::secrets::SecretKey;

const SEALED: &str = "hookrelay-sealed:";
/// What the API shows instead of a sealed value.
pub const REDACTED: &str = "[sealed]";

/// The headers of `provider`'s webhooks whose value is a secret.
pub fn secret_headers(provider: Provider) -> &'static [&'static str] {
    if provider == Provider::Gitlab {
        &["x-gitlab-token"]
    } else {
        &[]
    }
}

fn context(repository_id: &str, name: &str) -> String {
    format!("repository:{repository_id}:event_header:{name}")
}

fn is_secret(provider: Provider, name: &str) -> bool {
    secret_headers(provider)
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}

/// An event's stored headers, their secret values sealed.
#[derive(Debug, Clone, Default, sqlx::Type)]
#[sqlx(transparent)]
pub struct SealedHeaders(sqlx::types::Json<Vec<(String, String)>>);

impl SealedHeaders {
    /// Seals the secret headers of a delivery about to be stored.
    pub fn seal(
        provider: Provider,
        repository_id: RepositoryId,
        key: &SecretKey,
        mut headers: Vec<(String, String)>,
    ) -> Self {
        seal_secret_headers(provider, &repository_id.to_string(), key, &mut headers);
        Self(sqlx::types::Json(headers))
    }

    /// The headers with their secret values opened, for the agent's replay,
    /// and how many did not open (sealed under another key) and were dropped.
    pub fn opened(
        &self,
        provider: Provider,
        repository_id: RepositoryId,
        key: &SecretKey,
    ) -> (Vec<(String, String)>, usize) {
        let mut headers = self.0.0.clone();
        let dropped =
            unseal_secret_headers(provider, &repository_id.to_string(), key, &mut headers);
        (headers, dropped)
    }

    /// The headers with their secret values shown as `[sealed]`.
    pub fn redacted(&self, provider: Provider) -> Vec<(String, String)> {
        let mut headers = self.0.0.clone();
        redact_secret_headers(provider, &mut headers);
        headers
    }

    /// Re-seals the secret values under the current key; true when one changed.
    pub(super) fn reseal(
        &mut self,
        provider: Provider,
        repository_id: RepositoryId,
        key: &SecretKey,
    ) -> anyhow::Result<bool> {
        reseal_secret_headers(provider, &repository_id.to_string(), key, &mut self.0.0)
    }

    /// The stored form, for an update that checks nothing changed meanwhile.
    pub(super) fn stored(&self) -> &sqlx::types::Json<Vec<(String, String)>> {
        &self.0
    }
}

type Header = (String, String);

fn seal_secret_headers(
    provider: Provider,
    repository_id: &str,
    key: &SecretKey,
    headers: &mut [Header],
) {
    for header in headers.iter_mut() {
        if is_secret(provider, header.0.as_str()) {
            let context = context(repository_id, &header.0.to_ascii_lowercase());
            let value = &mut header.1;
            let sealed = key.encrypt(value.as_bytes(), &context);
            *value = format!("{SEALED}{}", STANDARD.encode(sealed));
        }
    }
}

/// Opens the sealed headers of a stored event for the agent's replay. A value
/// that does not open (sealed under another key) is dropped rather than sent
/// sealed; returns how many were.
fn unseal_secret_headers(
    provider: Provider,
    repository_id: &str,
    key: &SecretKey,
    headers: &mut Vec<Header>,
) -> usize {
    let before = headers.len();
    headers.retain_mut(|header| {
        if !is_secret(provider, header.0.as_str()) {
            return true;
        }
        let context = context(repository_id, &header.0.to_ascii_lowercase());
        let value = &mut header.1;
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
fn reseal_secret_headers(
    provider: Provider,
    repository_id: &str,
    key: &SecretKey,
    headers: &mut [Header],
) -> anyhow::Result<bool> {
    let mut changed = false;
    for header in headers.iter_mut() {
        if !is_secret(provider, header.0.as_str()) {
            continue;
        }
        let context = context(repository_id, &header.0.to_ascii_lowercase());
        let value = &mut header.1;
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
fn redact_secret_headers(provider: Provider, headers: &mut [Header]) {
    for header in headers.iter_mut() {
        if is_secret(provider, header.0.as_str()) {
            header.1 = REDACTED.to_owned();
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
            unseal_secret_headers(Provider::Gitlab, "r-1", &key, &mut streamed),
            0
        );
        assert_eq!(streamed[1].1, "whsec_abc");
        // Bound to its repository: another one's sealed value does not open.
        let mut moved = stored.clone();
        assert_eq!(
            unseal_secret_headers(Provider::Gitlab, "r-2", &key, &mut moved),
            1
        );
        assert_eq!(moved.len(), 1);

        let mut shown = stored.clone();
        redact_secret_headers(Provider::Gitlab, &mut shown);
        assert_eq!(shown[1].1, REDACTED);
        // Other providers' headers of that name are ordinary.
        let mut github = vec![("x-gitlab-token".to_owned(), "v".to_owned())];
        seal_secret_headers(Provider::Github, "r-1", &key, &mut github);
        assert_eq!(github[0].1, "v");
    }
}
