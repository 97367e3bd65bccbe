//! The signing keys of trusted issuers, found by OpenID discovery and shared
//! by every request.
//!
//! `issuer/.well-known/openid-configuration` names the `jwks_uri`; its key set
//! is kept for `MAX_AGE`, and fetched again sooner when a token names a key id
//! it does not hold (the issuer rotated), at most once per `MIN_REFRESH` per
//! issuer, with one fetch in flight per issuer. When a refetch fails, the keys
//! already held keep verifying. At most `MAX_ISSUERS` issuers are held; the one
//! used longest ago makes room. Only issuers some tenant trusts are ever
//! fetched: the exchange looks the token's `iss` up in the database first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use url::Url;

use crate::outbound::{FetchError, Fetcher};

pub const MAX_AGE: Duration = Duration::from_secs(3600);
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
pub const MAX_ISSUERS: usize = 512;
/// Keys past this many in one set are ignored.
const MAX_KEYS: usize = 64;

/// One verification key of an issuer.
pub struct IssuerKey {
    pub kid: Option<String>,
    /// The algorithms this key may verify: the JWK's `alg`, else its type's.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

struct KeySet {
    keys: Vec<Arc<IssuerKey>>,
    fetched_at: Instant,
}

#[derive(Default)]
struct Entry {
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching: one fetch per issuer at a time. The last
    /// attempt, and its error if it failed with no keys to fall back on.
    fetching: tokio::sync::Mutex<Option<(Instant, Option<FetchError>)>>,
    last_used: Mutex<Option<Instant>>,
}

/// The shared cache.
pub struct IssuerKeys {
    fetcher: Fetcher,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys").finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(serde::Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl IssuerKeys {
    pub fn new(fetcher: Fetcher) -> Self {
        Self {
            fetcher,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    fn entry(&self, issuer: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("issuer keys");
        if !entries.contains_key(issuer) && entries.len() >= MAX_ISSUERS {
            let oldest = entries
                .iter()
                .min_by_key(|(_, entry)| *entry.last_used.lock().expect("issuer key use"))
                .map(|(issuer, _)| issuer.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(issuer.to_owned()).or_default().clone();
        *entry.last_used.lock().expect("issuer key use") = Some(Instant::now());
        entry
    }

    /// The key of `issuer` that verifies a token with `kid` and `alg`.
    pub async fn key(
        &self,
        issuer: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<IssuerKey>, FetchError> {
        let entry = self.entry(issuer);
        let held = entry.keys.read().expect("issuer keys").clone();
        let fresh = held
            .as_ref()
            .is_some_and(|set| set.fetched_at.elapsed() < MAX_AGE);
        if fresh && let Some(found) = held.as_ref().and_then(|set| find(set, kid, alg)) {
            return Ok(found);
        }
        let set = self.refresh(issuer, &entry, held).await?;
        find(&set, kid, alg).ok_or_else(|| {
            FetchError::Refused(match kid {
                Some(kid) => {
                    format!("the issuer publishes no {alg:?} key with the token's key id `{kid}`")
                }
                None => {
                    format!("the token names no key id, and the issuer has no single {alg:?} key")
                }
            })
        })
    }

    /// Fetches the key set again, unless another request just did (or is).
    async fn refresh(
        &self,
        issuer: &str,
        entry: &Entry,
        held: Option<Arc<KeySet>>,
    ) -> Result<Arc<KeySet>, FetchError> {
        let mut fetching = entry.fetching.lock().await;
        let current = entry.keys.read().expect("issuer keys").clone();
        let someone_else_fetched = match (&current, &held) {
            (Some(current), Some(held)) => !Arc::ptr_eq(current, held),
            (Some(_), None) => true,
            _ => false,
        };
        let too_soon = fetching
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < MIN_REFRESH);
        if let Some(current) = &current
            && (someone_else_fetched || too_soon)
        {
            return Ok(current.clone());
        }
        // An issuer that failed a moment ago is not asked again until
        // MIN_REFRESH has passed: its failure is the answer meanwhile.
        if too_soon && let Some((_, Some(error))) = fetching.as_ref() {
            return Err(error.clone());
        }
        let result = self.fetch(issuer).await;
        *fetching = Some((Instant::now(), result.as_ref().err().cloned()));
        match result {
            Ok(keys) => {
                let set = Arc::new(KeySet {
                    keys,
                    fetched_at: Instant::now(),
                });
                *entry.keys.write().expect("issuer keys") = Some(set.clone());
                Ok(set)
            }
            Err(error) => match current {
                Some(stale) if matches!(error, FetchError::Unavailable(_)) => {
                    tracing::warn!(%issuer, %error, "cannot refresh the issuer's keys; keeping those held");
                    Ok(stale)
                }
                _ => Err(error),
            },
        }
    }

    async fn fetch(&self, issuer: &str) -> Result<Vec<Arc<IssuerKey>>, FetchError> {
        let base = issuer.trim_end_matches('/');
        let discovery_url = Url::parse(&format!("{base}/.well-known/openid-configuration"))
            .map_err(|e| FetchError::Refused(format!("the issuer is not a URL: {e}")))?;
        let discovery: Discovery = self.fetcher.json(&discovery_url).await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if discovery.issuer != issuer {
            return Err(FetchError::Refused(format!(
                "{discovery_url} names the issuer `{}`, not `{issuer}`",
                discovery.issuer
            )));
        }
        let jwks_uri = Url::parse(&discovery.jwks_uri)
            .map_err(|e| FetchError::Refused(format!("the issuer's jwks_uri is not a URL: {e}")))?;
        let raw: RawKeySet = self.fetcher.json(&jwks_uri).await?;
        let keys: Vec<Arc<IssuerKey>> = raw
            .keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| verification_key(&jwk).map(Arc::new))
            .collect();
        tracing::info!(%issuer, keys = keys.len(), "fetched the issuer's signing keys");
        Ok(keys)
    }
}

/// The key for a token: the one with its kid, or without a kid the only one
/// that may verify `alg`.
fn find(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Option<Arc<IssuerKey>> {
    let mut candidates = set
        .keys
        .iter()
        .filter(|key| key.algorithms.contains(&alg))
        .filter(|key| kid.is_none() || key.kid.as_deref() == kid);
    let first = candidates.next()?;
    match kid {
        Some(_) => Some(first.clone()),
        None => candidates.next().is_none().then(|| first.clone()),
    }
}

/// A public signature key: RSA, EC P-256/P-384 or Ed25519. Symmetric keys
/// (`oct`), encryption keys and anything else are skipped.
fn verification_key(jwk: &Jwk) -> Option<IssuerKey> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(declared) => {
            let declared = signature_algorithm(declared)?;
            if !family.contains(&declared) {
                return None;
            }
            vec![declared]
        }
    };
    Some(IssuerKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

fn signature_algorithm(algorithm: KeyAlgorithm) -> Option<Algorithm> {
    Some(match algorithm {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(json: serde_json::Value) -> Jwk {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_public_signature_keys_are_used() {
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "a",
            "x": "lbs7JF3XCbMY3cHuqkeVO0BcXjAhI1LYu053OU1VpWA",
            "y": "SuxdFqbSyaMmtG2A-3-RzDy7VL3noGg1GnSzo5e_V8s"});
        let key = verification_key(&jwk(ec.clone())).unwrap();
        assert_eq!(key.algorithms, vec![Algorithm::ES256]);
        let mut encryption = ec.clone();
        encryption["use"] = "enc".into();
        assert!(verification_key(&jwk(encryption)).is_none());
        let mut mismatched = ec;
        mismatched["alg"] = "RS256".into();
        assert!(verification_key(&jwk(mismatched)).is_none());
        // A shared secret in a key set would let anyone who reads it sign.
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert!(verification_key(&jwk(oct)).is_none());
    }

    #[test]
    fn a_token_without_a_key_id_needs_a_single_candidate() {
        let key = |kid: &str| {
            Arc::new(IssuerKey {
                kid: Some(kid.into()),
                algorithms: vec![Algorithm::ES256],
                key: DecodingKey::from_secret(b"unused"),
            })
        };
        let one = KeySet {
            keys: vec![key("a")],
            fetched_at: Instant::now(),
        };
        assert!(find(&one, None, Algorithm::ES256).is_some());
        assert!(find(&one, None, Algorithm::RS256).is_none());
        assert!(find(&one, Some("b"), Algorithm::ES256).is_none());
        let two = KeySet {
            keys: vec![key("a"), key("b")],
            fetched_at: Instant::now(),
        };
        assert!(find(&two, None, Algorithm::ES256).is_none());
        assert_eq!(
            find(&two, Some("b"), Algorithm::ES256)
                .unwrap()
                .kid
                .as_deref(),
            Some("b")
        );
    }

    #[tokio::test]
    async fn an_issuer_that_fails_is_asked_again_only_after_min_refresh() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/.well-known/openid-configuration",
            axum::routing::get({
                let hits = hits.clone();
                move || async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let keys = IssuerKeys::new(
            Fetcher::new(crate::outbound::OutboundPolicy {
                allow_http: true,
                allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
            })
            .unwrap(),
        );
        for kid in ["a", "b", "c", "d"] {
            let result = keys.key(&issuer, Some(kid), Algorithm::ES256).await;
            assert!(matches!(result, Err(FetchError::Unavailable(_))));
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "one fetch, then its failure is the answer"
        );
    }
}
