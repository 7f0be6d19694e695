//! The process' HTTPS servers (the conversion webhook, the metrics): TLS 1.2 and 1.3 on ring with a
//! certificate that can be swapped under the running listener, HTTP/1.1 only, a bounded time for a
//! handshake and for a request's headers (a stalled client holds only its own connection), and a
//! graceful stop that lets requests in flight finish for a bounded time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use std::sync::{PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A [`ResolvesServerCert`] whose certificate can be replaced while the server runs. Without one
/// every handshake fails (the client sees a handshake failure alert), which is what an API server
/// should see before the first certificate exists.
#[derive(Debug, Default)]
pub struct Reloading {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Reloading {
    /// Serves `key` from the next handshake on; true when it is the first.
    pub fn set(&self, key: CertifiedKey) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        current.replace(Arc::new(key)).is_none()
    }

    /// The certificate in force.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// Time a new connection has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection has to send a request's headers, which also closes a connection idle that
/// long between requests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time requests in flight have to finish after the server is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener`, with the certificate `resolver` holds (handshakes fail
/// while it holds none), until `shutdown` completes. `what` names the server in the logs.
pub async fn serve(
    listener: TcpListener,
    resolver: Arc<Reloading>,
    app: Router,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(resolver, what)?));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, server = what, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, server = what, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, server = what, "TLS handshake timed out"),
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, server = what, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(server = what, "connections still open after {SHUTDOWN_GRACE:?}; closed");
    }
    Ok(())
}

/// TLS 1.2 and 1.3 on ring, HTTP/1.1 offered by ALPN, the certificate from `resolver`.
fn server_config(resolver: Arc<Reloading>, what: &str) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_safe_default_protocol_versions()
        .with_context(|| format!("no TLS protocol version for the {what}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
