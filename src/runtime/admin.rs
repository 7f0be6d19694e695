//! The admin HTTP server, on every replica: `/healthz` (liveness) and `/readyz` (the conversion
//! webhook serving with a certificate; the body also says the part in leader election and the
//! watch caches' state: see [`crate::readiness`]), plain HTTP for the kubelet's probes. `/metrics`
//! is served here only with `--metrics-insecure`; otherwise by [`super::metrics_server`].

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::readiness::Readiness;

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

async fn metrics(State(shared): State<Shared>) -> Response {
    super::metrics_server::metrics_response(&shared.metrics)
}

async fn ready(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    match shared.readiness.check() {
        (true, why) => (StatusCode::OK, why),
        (false, why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Binds the admin address, so a taken port fails the start instead of a later request.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))
}

/// Serves until `shutdown` completes; `/metrics` too when `with_metrics`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    with_metrics: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut app = Router::new().route("/healthz", get(|| async { StatusCode::OK })).route("/readyz", get(ready));
    if with_metrics {
        app = app.route("/metrics", get(self::metrics));
    }
    let app = app.with_state(Shared { metrics, readiness });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("admin server failed")
}
