//! TLS for both listeners, with rustls, from HOOKRELAY_TLS_CERT/HOOKRELAY_TLS_KEY.
//! Plaintext stays the default (on loopback, or behind Envoy).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn read(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let cert = std::fs::read(&self.cert)
            .with_context(|| format!("cannot read HOOKRELAY_TLS_CERT {}", self.cert.display()))?;
        let key = std::fs::read(&self.key)
            .with_context(|| format!("cannot read HOOKRELAY_TLS_KEY {}", self.key.display()))?;
        Ok((cert, key))
    }

    /// The rustls configuration of both listeners (HTTP/2 and HTTP/1.1 by ALPN:
    /// gRPC needs HTTP/2, gRPC-Web and webhooks may use either).
    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let (cert, key) = self.read()?;
        let chain = certificates(&cert, &self.cert)?;
        let key = private_key(&key, &self.key)?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("HOOKRELAY_TLS_CERT and HOOKRELAY_TLS_KEY do not form a usable pair")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn certificates(pem: &[u8], path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", path.display());
    Ok(chain)
}

fn private_key(pem: &[u8], path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &pem[..])
        .with_context(|| format!("{} is not a PEM private key", path.display()))?
        .with_context(|| format!("{} holds no private key", path.display()))
}
