//! Workload identity federation: a workload's own JWT (GitHub Actions, a
//! Kubernetes service account, any OpenID provider) exchanged for a hookrelay
//! access token under a tenant's trusted issuer (RFC 8693).
//!
//! A subject token is accepted only when, in order:
//! 1. it is a signed JWT (no `alg: none`, no shared-secret algorithms) of at
//!    most `MAX_SUBJECT_TOKEN` bytes;
//! 2. some trusted issuer names its `iss` and one of its audiences (the token
//!    is not trusted yet: this only picks which issuer's keys to fetch, and
//!    only issuers a tenant registered are ever fetched);
//! 3. its signature verifies with the issuer's published key for its `kid`
//!    and `alg` (`issuer_keys`);
//! 4. `exp`, `nbf` and `iat` hold within `LEEWAY`, and `sub` is present;
//! 5. exactly one trusted issuer matches its audience and every claim
//!    condition. None, or several (two of one tenant's), is a refusal: an
//!    exchange never guesses the tenant or the scopes.

pub mod issuer_keys;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sqlx::PgPool;

use crate::domain::{ClaimConditions, Scopes, TenantId, TrustedIssuerId};
use crate::outbound::{FetchError, Fetcher};
use issuer_keys::IssuerKeys;

/// Larger subject tokens are refused unread (GitHub's are about 1.5 KB).
pub const MAX_SUBJECT_TOKEN: usize = 16 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY: u64 = 30;
/// Audiences of one token considered; more is not a real token.
const MAX_AUDIENCES: usize = 16;

/// A subject token that passed every check.
#[derive(Debug, Clone)]
pub struct Exchanged {
    pub tenant_id: TenantId,
    pub trusted_issuer_id: TrustedIssuerId,
    pub scopes: Scopes,
    pub suspended: bool,
    pub issuer: String,
    pub subject: String,
    /// The subject token's `exp` (Unix seconds).
    pub expires_at: u64,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// `invalid_grant`: the token fails a check. The reason names the check,
    /// never a key or the trusted issuers of any tenant.
    #[error("{0}")]
    Invalid(String),
    /// The issuer's keys cannot be fetched right now: retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] crate::error::Error),
}

/// The exchange's shared state: the issuers' key cache.
#[derive(Debug)]
pub struct Federation {
    keys: IssuerKeys,
}

impl Federation {
    pub fn new(fetcher: Fetcher) -> Self {
        crate::auth::crypto::install();
        Self {
            keys: IssuerKeys::new(fetcher),
        }
    }

    /// Whether plain http issuers are allowed (local tests only).
    pub fn allows_http(&self) -> bool {
        self.keys.fetcher().policy().allow_http
    }

    /// Checks `token` (see the module doc) and finds its one trusted issuer.
    pub async fn verify(&self, pool: &PgPool, token: &str) -> Result<Exchanged, ExchangeError> {
        let invalid = |why: &str| ExchangeError::Invalid(why.to_owned());
        if token.len() > MAX_SUBJECT_TOKEN {
            return Err(invalid("the subject token is too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the subject token is not a signed JWT"))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(invalid(
                "the subject token must be signed with the issuer's public key, not a shared secret",
            ));
        }
        // Read, not trusted: `iss` and `aud` only choose the candidates.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
            .map_err(|_| invalid("the subject token is not a signed JWT"))?
            .claims;
        let issuer = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("the subject token has no issuer"))?
            .to_owned();
        let audiences = audiences(&unverified);
        let no_match =
            || invalid("no trusted issuer accepts this token's issuer, audience and claims");
        if !crate::store::trusted_issuer::is_trusted(pool, &issuer, &audiences).await? {
            return Err(no_match());
        }

        let key = self
            .keys
            .key(&issuer, header.kid.as_deref(), header.alg)
            .await
            .map_err(|error| match error {
                FetchError::Refused(why) => {
                    ExchangeError::Invalid(format!("the subject token cannot be verified: {why}"))
                }
                FetchError::Unavailable(why) => {
                    ExchangeError::Unavailable(format!("cannot fetch the issuer's keys: {why}"))
                }
            })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "the subject token has expired",
                    ErrorKind::ImmatureSignature => "the subject token is not valid yet",
                    ErrorKind::InvalidSignature => "the subject token's signature does not verify",
                    ErrorKind::InvalidAlgorithm => {
                        "the subject token's algorithm does not match the issuer's key"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "the subject token lacks exp, iss or sub",
                    _ => "the subject token is invalid",
                })
            })?
            .claims;
        let now = now();
        if claims
            .get("iat")
            .and_then(Value::as_u64)
            .is_some_and(|iat| iat > now + LEEWAY)
        {
            return Err(invalid("the subject token was issued in the future"));
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|sub| !sub.is_empty())
            .ok_or_else(|| invalid("the subject token has no subject"))?
            .to_owned();
        let expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);

        let audiences = self::audiences(&claims);
        // Exactly one must accept: two found is already too many.
        let mut matched = crate::store::trusted_issuer::accepting(
            pool,
            &issuer,
            &audiences,
            |candidate| {
                ClaimConditions::parse(candidate.claims.clone())
                    .is_ok_and(|conditions| conditions.accept(|name| claim(&claims, name)))
            },
            2,
        )
        .await?;
        if matched.len() > 1 {
            return Err(invalid(
                "more than one trusted issuer accepts this token; narrow their claims",
            ));
        }
        let found = matched.pop().ok_or_else(no_match)?;
        Ok(Exchanged {
            tenant_id: found.tenant_id,
            trusted_issuer_id: found.issuer.id,
            scopes: found.issuer.scopes,
            suspended: found.suspended,
            issuer,
            subject,
            expires_at,
        })
    }
}

/// The `aud` claim: one string or an array of them.
fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_AUDIENCES)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A claim as conditions see it: strings as they are, numbers and booleans
/// as text; objects, arrays and null match nothing.
fn claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_and_claims_read_as_conditions_expect() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "aud": ["a", "b", 3], "run_attempt": 2, "ephemeral": true,
            "repository": "acme/app", "nested": {"x": 1}, "none": null
        }))
        .unwrap();
        assert_eq!(audiences(&claims), vec!["a", "b"]);
        assert_eq!(claim(&claims, "run_attempt").as_deref(), Some("2"));
        assert_eq!(claim(&claims, "ephemeral").as_deref(), Some("true"));
        assert_eq!(claim(&claims, "repository").as_deref(), Some("acme/app"));
        assert_eq!(claim(&claims, "nested"), None);
        assert_eq!(claim(&claims, "none"), None);
        assert_eq!(claim(&claims, "missing"), None);
        let single: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"aud": "only"})).unwrap();
        assert_eq!(audiences(&single), vec!["only"]);
    }
}
