//! HTTPS: the server's certificate and key, loaded once at start (rustls, ring provider).
//! The handshakes happen in [`crate::listen`], under its connection limits.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// A certificate chain and its key, ready to accept TLS connections. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Why a certificate or key cannot be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsConfig {
    /// Reads a PEM certificate chain (the server's certificate first, then any
    /// intermediates) and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                TlsError(format!(
                    "cannot read the TLS {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "key")?;
        Self::build(
            &cert_pem,
            &key_pem,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// As [`TlsConfig::from_pem_files`], from PEM text in memory.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Self::build(cert_pem, key_pem, "(certificate)", "(key)")
    }

    fn build(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_name: &str,
        key_name: &str,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                TlsError(format!(
                    "the TLS certificate {cert_name} is not valid PEM: {e}"
                ))
            })?;
        if chain.is_empty() {
            return Err(TlsError(format!(
                "the TLS certificate {cert_name} holds no certificate \
                 (-----BEGIN CERTIFICATE-----)"
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            TlsError(match e {
                rustls::pki_types::pem::Error::NoItemsFound => format!(
                    "the TLS key {key_name} holds no private key (PEM: PRIVATE KEY, RSA \
                     PRIVATE KEY or EC PRIVATE KEY)"
                ),
                e => format!("the TLS key {key_name} is not valid PEM: {e}"),
            })
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                TlsError(format!(
                    "cannot use the TLS certificate {cert_name} with the key {key_name}: {e}"
                ))
            })?;
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}
