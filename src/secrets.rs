//! Secrets at rest and on the wire.
//!
//! - Client secrets are 256-bit random values, stored as SHA-256 hashes. A slow
//!   password hash (argon2) buys nothing against a 256-bit search space and would
//!   make every token request cost tens of milliseconds.
//! - Webhook secrets and generated JWT signing keys must be recovered, so they are
//!   encrypted with XChaCha20-Poly1305 under the key-encryption key
//!   (HOOKRELAY_SECRET_KEY). The associated data binds each ciphertext to its row
//!   and purpose, so ciphertexts cannot be swapped between rows.
//! - Secrets are compared in constant time.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::Provider;

const NONCE_LEN: usize = 24;

/// The key-encryption key, and during a change of key the previous one:
/// everything is sealed with the current key, and opens with either
/// (`hookrelay secrets rekey` then re-seals the rest). Its Debug output never
/// shows a key.
#[derive(Clone)]
pub struct SecretKey(XChaCha20Poly1305, Option<XChaCha20Poly1305>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn generate() -> Self {
        Self(
            XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng)),
            None,
        )
    }

    /// 32 bytes, base64 encoded (surrounding whitespace ignored).
    pub fn from_base64(value: &SecretString) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(value.expose_secret().trim())
            .context("not valid base64")?;
        if bytes.len() != 32 {
            bail!("must decode to 32 bytes, got {}", bytes.len());
        }
        Ok(Self(
            XChaCha20Poly1305::new_from_slice(&bytes).expect("the length is checked"),
            None,
        ))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let contents =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_base64(&SecretString::from(contents))
            .with_context(|| format!("bad key in {}", path.display()))
    }

    /// Reads the key from `path`, or generates it there with mode 0600.
    pub fn load_or_generate(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            let mode = fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} must not be readable by group or others (mode {:o})",
                    path.display(),
                    mode & 0o777
                );
            }
            return Self::from_file(path);
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the directory {}", parent.display()))?;
        }
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(file, "{}", STANDARD.encode(key))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self(XChaCha20Poly1305::new(&key), None))
    }

    /// This key, which seals, and `previous`, which still opens what it sealed.
    pub fn with_previous(self, previous: SecretKey) -> Self {
        Self(self.0, Some(previous.0))
    }

    /// Whether a previous key is configured (a change of key is under way).
    pub fn has_previous(&self) -> bool {
        self.1.is_some()
    }

    /// nonce ‖ ciphertext, authenticated together with `context`.
    pub fn encrypt(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens `sealed` with the current key, or else the previous one.
    pub fn decrypt(&self, sealed: &[u8], context: &str) -> anyhow::Result<Vec<u8>> {
        self.open_current(sealed, context)
            .or_else(|| {
                self.1
                    .as_ref()
                    .and_then(|previous| open(previous, sealed, context))
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot decrypt {context}: wrong HOOKRELAY_SECRET_KEY or corrupted data"
                )
            })
    }

    fn open_current(&self, sealed: &[u8], context: &str) -> Option<Vec<u8>> {
        open(&self.0, sealed, context)
    }

    /// `sealed` sealed with the current key: None when it already is,
    /// otherwise re-sealed (Err when neither key opens it).
    pub fn reseal(&self, sealed: &[u8], context: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if self.open_current(sealed, context).is_some() {
            return Ok(None);
        }
        let plain = self.decrypt(sealed, context)?;
        Ok(Some(self.encrypt(&plain, context)))
    }
}

fn open(cipher: &XChaCha20Poly1305, sealed: &[u8], context: &str) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: context.as_bytes(),
            },
        )
        .ok()
}

/// A new client secret: `hrs_` and 256 random bits, base64url.
pub fn generate_client_secret() -> SecretString {
    SecretString::from(format!(
        "hrs_{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    ))
}

/// A new webhook secret: 256 random bits as 64 hex digits, easy to paste into GitHub.
/// A new webhook secret in the form the provider's settings page takes:
/// `whsec_<base64 of 32 bytes>` for GitLab (valid both as a secret token and
/// as a signing token) and Standard Webhooks senders, 64 hex digits otherwise.
pub fn generate_webhook_secret(provider: Provider) -> SecretString {
    let bytes = rand::random::<[u8; 32]>();
    SecretString::from(match provider {
        Provider::Gitlab | Provider::Standard => format!("whsec_{}", STANDARD.encode(bytes)),
        _ => hex::encode(bytes),
    })
}

/// The stored form of a client secret.
pub fn hash_client_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `secret` hashes to `stored`, in constant time.
pub fn verify_client_secret(secret: &str, stored: &[u8]) -> bool {
    Sha256::digest(secret.as_bytes())
        .as_slice()
        .ct_eq(stored)
        .into()
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}
