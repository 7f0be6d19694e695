//! TLS for the operator's own clients (NeuralLog Auth, the OTLP collector): rustls on ring, the
//! crypto provider kube already uses (see the root Cargo.toml), which its servers use too.

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

/// The ring provider, which the whole crate uses, clients and servers.
pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
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

    /// A private CA, and a serving certificate for `localhost` it issued.
    struct Issued {
        ca_pem: String,
        chain: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    }

    fn issue(ca_name: &str) -> Issued {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        Issued {
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    /// A TLS server on loopback presenting `issued`'s certificate, which answers each connection
    /// with one line once its handshake succeeded.
    async fn serve(issued: Issued) -> std::net::SocketAddr {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(issued.chain, issued.key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        use tokio::io::AsyncWriteExt as _;
                        let _ = tls.write_all(b"hello\n").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        address
    }

    /// A TLS handshake with the server at `address` as `localhost`, trusting `trust`; then reads
    /// the server's line.
    async fn handshake(trust: Trust<'_>, address: std::net::SocketAddr) -> Result<String, std::io::Error> {
        use tokio::io::AsyncReadExt as _;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(trust).unwrap()));
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        let mut line = String::new();
        tls.read_to_string(&mut line).await?;
        Ok(line)
    }

    /// The rustls error a refused handshake failed with.
    fn refusal(result: Result<String, std::io::Error>) -> rustls::Error {
        let error = result.expect_err("the handshake is refused");
        let inner = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).cloned();
        inner.unwrap_or_else(|| panic!("not a TLS refusal: {error}"))
    }

    #[tokio::test]
    async fn a_private_ca_is_trusted_and_anything_else_is_refused_with_a_reason() {
        let (ours, theirs) = (issue("our private CA"), issue("another CA"));
        let our_ca = ours.ca_pem.clone();
        let their_ca = theirs.ca_pem.clone();
        let (our_server, their_server) = (serve(ours).await, serve(theirs).await);

        // Trusting our CA: a real handshake with the server it issued for completes.
        assert_eq!(handshake(Trust::Pem(our_ca.as_bytes()), our_server).await.unwrap(), "hello\n");
        // A server whose certificate another CA issued is refused, for that reason.
        let refused = refusal(handshake(Trust::Pem(our_ca.as_bytes()), their_server).await);
        assert!(
            matches!(refused, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
            "{refused:?}"
        );
        // And the other way round; trusting nobody refuses both.
        assert_eq!(handshake(Trust::Pem(their_ca.as_bytes()), their_server).await.unwrap(), "hello\n");
        refusal(handshake(Trust::Pem(their_ca.as_bytes()), our_server).await);
        refusal(handshake(Trust::Nobody, our_server).await);
        refusal(handshake(Trust::Nobody, their_server).await);

        // Trust that is not a certificate is refused when the client is built.
        assert!(matches!(client_config(Trust::Pem(b"")), Err(TlsError::NoCertificate)));
        let garbage = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(client_config(Trust::Pem(garbage)).is_err());
    }
}
