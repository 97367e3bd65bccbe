//! jsonwebtoken's signatures computed by ring, which the server already links
//! for rustls, instead of RustCrypto.
//!
//! Every authenticated request verifies an ES256 token, and every token
//! endpoint call signs one. On this project's 2-core VM, RustCrypto took 246 µs
//! per verification and 392 µs per signature (the PKCS#8 key is parsed again
//! for every signature); ring takes 57 µs and 18 µs. ring verifies ES256,
//! ES384, RS256/384/512 and PS256/384/512 and signs ES256 here; EdDSA, RSA
//! signing and the JWK key utilities stay with jsonwebtoken's RustCrypto
//! provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    self as ring_signature, EcdsaKeyPair, RsaPublicKeyComponents, UnparsedPublicKey,
};

/// Makes ring jsonwebtoken's provider for this process. Call it before the
/// first token is signed or verified; later calls do nothing.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory: new_signer,
        verifier_factory: new_verifier,
        key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
    });
    // Err: a provider was chosen already (jsonwebtoken was used first).
    let _ = provider.install_default();
}

/// The parsed signing keys, by their PKCS#8 bytes: parsing derives the public
/// key, which costs more than a signature. The server has a handful of keys.
fn key_pair(der: &[u8]) -> Result<Arc<EcdsaKeyPair>> {
    static KEYS: OnceLock<Mutex<HashMap<Vec<u8>, Arc<EcdsaKeyPair>>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .expect("signing keys");
    if let Some(pair) = keys.get(der) {
        return Ok(pair.clone());
    }
    let pair = EcdsaKeyPair::from_pkcs8(
        &ring_signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        der,
        &SystemRandom::new(),
    )
    .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    if keys.len() >= 64 {
        keys.clear();
    }
    let pair = Arc::new(pair);
    keys.insert(der.to_vec(), pair.clone());
    Ok(pair)
}

struct Es256Signer(Arc<EcdsaKeyPair>);

impl Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, Error> {
        self.0
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| Error::new())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    match algorithm {
        Algorithm::ES256 if key.family() == AlgorithmFamily::Ec => {
            Ok(Box::new(Es256Signer(key_pair(key.as_bytes())?)))
        }
        _ => (rust_crypto::DEFAULT_PROVIDER.signer_factory)(algorithm, key),
    }
}

/// A public key as ring takes it.
enum PublicKey {
    /// SEC1 points, PKCS#1 DER RSA keys.
    Encoded(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

struct RingVerifier {
    algorithm: Algorithm,
    parameters: &'static dyn ring_signature::VerificationAlgorithm,
    key: PublicKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), Error> {
        let verified = match &self.key {
            PublicKey::Encoded(bytes) => {
                UnparsedPublicKey::new(self.parameters, bytes).verify(message, signature)
            }
            PublicKey::Rsa { n, e } => {
                let parameters = rsa_parameters(self.algorithm).ok_or_else(Error::new)?;
                RsaPublicKeyComponents { n, e }.verify(parameters, message, signature)
            }
        };
        verified.map_err(|_| Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_parameters(algorithm: Algorithm) -> Option<&'static ring_signature::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let parameters: &'static dyn ring_signature::VerificationAlgorithm = match algorithm {
        Algorithm::ES256 => &ring_signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &ring_signature::ECDSA_P384_SHA384_FIXED,
        other => match rsa_parameters(*other) {
            Some(rsa) => rsa,
            None => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
        },
    };
    let expected = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        _ => AlgorithmFamily::Rsa,
    };
    // A key of another family never verifies (an RSA key for ES256, say).
    if key.family() != expected {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => PublicKey::Encoded(bytes.clone()),
        DecodingKeyKind::RsaModulusExponent { n, e } => PublicKey::Rsa {
            n: n.clone(),
            e: e.clone(),
        },
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        parameters,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Header, Validation};
    use p256::pkcs8::EncodePrivateKey;

    use super::*;

    /// Tokens signed by one provider verify with the other, and a wrong key
    /// or a changed token does not verify.
    #[test]
    fn ring_and_rustcrypto_agree() {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let point = p256::EncodedPoint::from(secret.public_key());
        let decoding = DecodingKey::from_ec_der(point.as_bytes());
        let message = b"header.claims";

        let by_ring = new_signer(&Algorithm::ES256, &encoding).unwrap();
        let by_rustcrypto =
            (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, &encoding).unwrap();
        let ring_verifier = new_verifier(&Algorithm::ES256, &decoding).unwrap();
        let rustcrypto_verifier =
            (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::ES256, &decoding).unwrap();
        for signer in [&by_ring, &by_rustcrypto] {
            let signature = signer.try_sign(message).unwrap();
            assert!(ring_verifier.verify(message, &signature).is_ok());
            assert!(rustcrypto_verifier.verify(message, &signature).is_ok());
            assert!(ring_verifier.verify(b"header.claimz", &signature).is_err());
        }
        let other = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let other_point = p256::EncodedPoint::from(other.public_key());
        let other_verifier = new_verifier(
            &Algorithm::ES256,
            &DecodingKey::from_ec_der(other_point.as_bytes()),
        )
        .unwrap();
        assert!(
            other_verifier
                .verify(message, &by_ring.try_sign(message).unwrap())
                .is_err()
        );
        // An EC key never verifies RS256, and an HMAC secret never verifies ES256.
        assert!(new_verifier(&Algorithm::RS256, &decoding).is_err());
        assert!(new_verifier(&Algorithm::ES256, &DecodingKey::from_secret(b"k")).is_err());

        // Whole tokens, through jsonwebtoken with ring installed.
        install();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}),
            &encoding,
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_aud = false;
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).is_ok());
    }
}
