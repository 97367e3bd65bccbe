//! JWT signing keys, shared by every replica.
//!
//! The keys come from HOOKRELAY_JWT_KEY_FILE (EC P-256 → ES256, RSA → RS256; the
//! first file signs, all verify), or are kept in the database, encrypted: one is
//! generated (ES256) on first start, and `hookrelay keys rotate` adds more.
//! Every key that is not retired is listed in the JWKS and verifies; the newest
//! whose `signs_from` has come signs. Every replica reloads them every few
//! seconds, so a rotation needs no restart. The `kid` is the key's RFC 7638
//! thumbprint.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::Principal;
use crate::domain::{Scopes, TenantId, TrustedIssuerId};
use crate::secrets::SecretKey;
use crate::store::signing_key::{self, SigningKey};

/// The claims of a hookrelay access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    pub scope: String,
    pub tenant_id: uuid::Uuid,
    /// Set on tokens exchanged for a workload's own (RFC 8693): the trusted
    /// issuer it was accepted under. Deleting it revokes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_issuer: Option<TrustedIssuerId>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("{0}")]
    Invalid(String),
}

struct Signer {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
}

struct KeySet {
    signer: Signer,
    verifiers: HashMap<String, (Algorithm, DecodingKey)>,
    jwks: JwkSet,
}

enum Source {
    File,
    Database { pool: PgPool, secret_key: SecretKey },
}

/// Issues and verifies access tokens.
pub struct Keys {
    set: RwLock<Arc<KeySet>>,
    source: Source,
    /// None until the first reload: a replica that just started must still
    /// learn a key another replica rotated in a moment ago.
    last_refresh: std::sync::Mutex<Option<Instant>>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        _ => "ES256",
    }
}

/// The public JWK of `key`, with its thumbprint as `kid`.
fn public_jwk(key: &EncodingKey, algorithm: Algorithm) -> anyhow::Result<Jwk> {
    let mut jwk = Jwk::from_encoding_key(key, algorithm).context("cannot derive the public key")?;
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .context("cannot compute the key id")?;
    jwk.common.key_id = Some(kid);
    Ok(jwk)
}

/// The key set of `signers`, in order of preference: the first that may sign
/// signs (else the last, the oldest), and all verify and are published.
fn key_set(signers: Vec<(Signer, Jwk, bool)>) -> anyhow::Result<KeySet> {
    let mut verifiers = HashMap::new();
    let mut keys = Vec::new();
    let mut chosen = None;
    let mut fallback = None;
    for (signer, jwk, may_sign) in signers {
        let decoding = DecodingKey::from_jwk(&jwk).context("bad public key")?;
        verifiers.insert(signer.kid.clone(), (signer.algorithm, decoding));
        keys.push(jwk);
        if may_sign && chosen.is_none() {
            chosen = Some(signer);
        } else {
            fallback = Some(signer);
        }
    }
    let signer = chosen.or(fallback).context("no signing key")?;
    Ok(KeySet {
        signer,
        verifiers,
        jwks: JwkSet { keys },
    })
}

impl Keys {
    pub async fn load(
        key_files: &[std::path::PathBuf],
        pool: &PgPool,
        secret_key: &SecretKey,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        super::crypto::install();
        let (set, source) = match key_files {
            [_, ..] => (from_pem_files(key_files)?, Source::File),
            [] => (
                from_database(pool, secret_key).await?,
                Source::Database {
                    pool: pool.clone(),
                    secret_key: secret_key.clone(),
                },
            ),
        };
        Ok(Self {
            set: RwLock::new(Arc::new(set)),
            source,
            last_refresh: std::sync::Mutex::new(None),
            issuer,
            audience,
            ttl,
        })
    }

    fn current(&self) -> Arc<KeySet> {
        self.set.read().expect("key set lock").clone()
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` of the tokens it issues.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn jwks(&self) -> JwkSet {
        self.current().jwks.clone()
    }

    /// Signs an access token; returns it with its lifetime in seconds: the
    /// configured one, or less when `expires_by` (Unix seconds) comes sooner.
    pub fn issue(
        &self,
        tenant_id: TenantId,
        principal: &Principal,
        scopes: &Scopes,
        expires_by: Option<u64>,
    ) -> anyhow::Result<(String, u64)> {
        let set = self.current();
        let iat = now();
        let exp = expires_by.map_or(iat + self.ttl.as_secs(), |by| {
            by.min(iat + self.ttl.as_secs())
        });
        anyhow::ensure!(exp > iat, "the token would expire before it is issued");
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.subject().to_owned(),
            aud: self.audience.clone(),
            exp,
            iat,
            nbf: iat,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes.to_string(),
            tenant_id: tenant_id.as_uuid(),
            trusted_issuer: match principal {
                Principal::Client(_) => None,
                Principal::Workload { trusted_issuer, .. } => Some(*trusted_issuer),
            },
        };
        let mut header = Header::new(set.signer.algorithm);
        header.kid = Some(set.signer.kid.clone());
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &set.signer.key)?;
        Ok((token, exp - iat))
    }

    /// Checks signature, algorithm, exp, nbf, iss and aud. Keys are in memory, so
    /// this is synchronous (the gRPC interceptor calls it too).
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError::Invalid("malformed token".into()))?;
        let kid = header
            .kid
            .ok_or_else(|| VerifyError::Invalid("the token has no key id".into()))?;
        let set = self.current();
        let (algorithm, key) = set.verifiers.get(&kid).ok_or(VerifyError::UnknownKey)?;
        let mut validation = Validation::new(*algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| VerifyError::Invalid(format!("invalid token: {}", reason(&e))))
    }

    /// Reloads keys from the database (another replica may have rotated them).
    /// At most once every few seconds, so unknown-kid tokens cannot hammer it.
    pub async fn refresh(&self) -> anyhow::Result<bool> {
        let Source::Database { .. } = &self.source else {
            return Ok(false);
        };
        {
            let mut last = self.last_refresh.lock().expect("refresh lock");
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(5)) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        self.reload().await?;
        Ok(true)
    }

    /// Reloads keys from the database now: a rotated-in key is published, and
    /// signs once its time has come; a retired one stops verifying.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let Source::Database { pool, secret_key } = &self.source else {
            return Ok(());
        };
        let set = from_database(pool, secret_key).await?;
        *self.set.write().expect("key set lock") = Arc::new(set);
        Ok(())
    }

    /// Reloads every `every` until `stop`, so every replica follows a rotation.
    pub async fn follow(
        self: Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if matches!(self.source, Source::File) {
            return;
        }
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            if let Err(error) = self.reload().await {
                tracing::warn!(error = %format!("{error:#}"), "cannot reload the signing keys");
            }
        }
    }
}

fn from_pem_files(paths: &[std::path::PathBuf]) -> anyhow::Result<KeySet> {
    let signers = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let (signer, jwk) = from_pem_file(path)?;
            Ok((signer, jwk, i == 0))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    key_set(signers)
}

fn from_pem_file(path: &Path) -> anyhow::Result<(Signer, Jwk)> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (key, algorithm) = if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
        (key, Algorithm::ES256)
    } else if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
        (key, Algorithm::RS256)
    } else {
        bail!(
            "{} holds neither a PKCS#8 EC P-256 key nor an RSA private key",
            path.display()
        );
    };
    let jwk = public_jwk(&key, algorithm).with_context(|| {
        format!(
            "{}: only P-256 EC and RSA keys are supported",
            path.display()
        )
    })?;
    let kid = jwk.common.key_id.clone().expect("set by public_jwk");
    Ok((
        Signer {
            kid,
            algorithm,
            key,
        },
        jwk,
    ))
}

async fn from_database(pool: &PgPool, secret_key: &SecretKey) -> anyhow::Result<KeySet> {
    let mut stored = signing_key::active(pool, secret_key).await?;
    if stored.is_empty() {
        stored = signing_key::insert_if_none(pool, secret_key, &generate()?).await?;
    }
    let signers = stored
        .into_iter()
        .map(|stored| {
            let may_sign = stored.signs;
            let der = &stored.private_key_der;
            let (algorithm, key) = match stored.algorithm.as_str() {
                "ES256" => (Algorithm::ES256, EncodingKey::from_ec_der(der)),
                "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_der(der)),
                other => bail!(
                    "stored signing key {} has unknown algorithm {other}",
                    stored.kid
                ),
            };
            let jwk: Jwk =
                serde_json::from_value(stored.public_jwk).context("stored public key")?;
            Ok((
                Signer {
                    kid: stored.kid,
                    algorithm,
                    key,
                },
                jwk,
                may_sign,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    key_set(signers)
}

/// A new ES256 key.
pub fn generate() -> anyhow::Result<SigningKey> {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = secret.to_pkcs8_der().context("cannot encode the new key")?;
    let algorithm = Algorithm::ES256;
    let key = EncodingKey::from_ec_der(der.as_bytes());
    let jwk = public_jwk(&key, algorithm)?;
    let kid = jwk.common.key_id.clone().expect("set by public_jwk");
    Ok(SigningKey {
        private_key_der: der.as_bytes().to_vec(),
        kid,
        algorithm: algorithm_name(algorithm).to_owned(),
        public_jwk: serde_json::to_value(&jwk)?,
        signs: true,
    })
}

/// A short, stable reason for a rejected token: what a client can act on, not
/// the library's internals (which claim failed to parse, at which column).
fn reason(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "wrong algorithm",
        ErrorKind::MissingRequiredClaim(_) => "missing claim",
        ErrorKind::InvalidSubject => "wrong subject",
        ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::Base64(_)
        | ErrorKind::InvalidToken => "malformed",
        _ => "rejected",
    }
}
