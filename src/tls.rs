//! TLS for the operator's own clients (NeuralLog Auth, the OTLP collector): rustls on ring, the
//! crypto provider kube already uses (see the root Cargo.toml).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls_platform_verifier::BuilderVerifierExt as _;

/// Makes ring the process-wide rustls crypto provider; call it first thing in `main`. Needed
/// because reqwest is built with `rustls-no-provider` (see Cargo.toml): any reqwest client built
/// without its own TLS config panics while none is installed. The clients built from
/// [`client_config`] do not depend on it. An already installed provider is kept.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Which servers a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The system's CA certificates.
    System,
    /// Only servers whose chain ends in one of these PEM certificates (a private CA).
    Pem(&'a [u8]),
    /// Nobody: for plain-HTTP clients, which never verify anything (redirects are not followed),
    /// so a system without CA certificates still works.
    Nobody,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("not a PEM certificate: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("no PEM certificate found")]
    NoCertificate,
}

/// A client TLS configuration that trusts `trust`.
pub fn client_config(trust: Trust<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    Ok(match trust {
        Trust::System => builder.with_platform_verifier()?.with_no_client_auth(),
        Trust::Pem(pem) => builder.with_root_certificates(roots(pem)?).with_no_client_auth(),
        Trust::Nobody => builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth(),
    })
}

/// The certificates of a PEM bundle as a root store.
fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        store.add(certificate?)?;
    }
    if store.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_a_default_crypto_provider() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn a_private_ca_is_trusted_and_anything_else_is_refused_with_a_reason() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        assert!(client_config(Trust::Pem(ca.pem().as_bytes())).is_ok());
        assert!(matches!(client_config(Trust::Pem(b"")), Err(TlsError::NoCertificate)));
        let garbage = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(client_config(Trust::Pem(garbage)).is_err());
        assert!(client_config(Trust::Nobody).is_ok());
    }
}
