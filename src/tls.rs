//! Process-wide TLS set-up.

/// Makes ring the process-wide rustls crypto provider; call it first thing in `main`. Needed
/// because reqwest is built with `rustls-no-provider` (see Cargo.toml): any reqwest client built
/// without its own TLS config, like the OTLP/HTTP exporter's, panics while none is installed.
/// [`AuthClient`](crate::auth::AuthClient) itself does not depend on it. An already installed
/// provider is kept.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
}
