//! The process: what runs on every replica and what runs only on the leader, under one shutdown.
//!
//! - Every replica: the [`admin`] server (`/healthz`, `/readyz`), the [`metrics_server`]
//!   (`/metrics` over HTTPS, authenticated and authorised), the leader election ([`lease`]) and
//!   the conversion webhook ([`crate::webhook`]; the API server calls whichever replica the
//!   Service picks), with its self-managed certificate where configured.
//! - The leader only (or the one process, with leader election off): the controller, and beside
//!   it the storage-version migration ([`migration`]), a task of its own so it never holds up a
//!   reconcile. Losing the lease drops both at once, so a replica that is no longer the leader
//!   stops writing mid-reconcile (the migration's progress is kept; the next leader resumes it).
//! - On SIGTERM or Ctrl-C: the controller finishes the reconciles in flight, then the Lease is
//!   released (the next leader starts without waiting it out), then the servers (admin and
//!   webhook) stop and the traces are flushed.

mod admin;
pub mod client;
pub mod lease;
pub mod metrics_server;
pub mod preflight;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::Shared;
use kube::Client;

use crate::controller::{self, Settings};
use crate::metrics::Metrics;
use crate::migration::{self, MigrationSettings};
use crate::readiness::{Readiness, Role};
use crate::telemetry::{self, Pod, TelemetryArgs};
use crate::webhook::{self, Certificates, Webhook, provision};
use client::KubeSource;
use lease::LeaseSettings;

/// Everything the process needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub kube: KubeSource,
    pub admin_address: SocketAddr,
    /// Where `/metrics` is served over HTTPS; `None` serves it on the admin address, in the clear.
    pub metrics_address: Option<SocketAddr>,
    /// The conversion webhook's address and mounted certificate.
    pub webhook: webhook::Settings,
    /// The certificate issued and the CRD pointed at the webhook by the operator itself (installs
    /// without OLM); `None` serves the mounted certificate and leaves the CRD alone.
    pub webhook_self_managed: Option<provision::SelfManaged>,
    pub controller: Settings,
    /// The storage-version migration the leader runs beside the controller.
    pub migration: MigrationSettings,
    /// `None` runs without leader election: exactly one process may run then.
    pub leader_election: Option<LeaseSettings>,
    pub telemetry: TelemetryArgs,
    /// The pod this process runs in, for its traces.
    pub pod: Pod,
    /// Run even when the admission policy confining the operator cannot be put in place.
    pub allow_unconfined: bool,
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await.unwrap_or_default(),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or_default();
}

/// Runs the process until SIGTERM or Ctrl-C, or until the controller cannot start.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Before any TLS client exists: the OTLP exporter's and the Auth client's share ring with kube.
    crate::tls::install_crypto_provider();
    let telemetry = telemetry::init(&config.telemetry, &config.pod)?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let client = client::build(&config.kube, metrics.clone()).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        concurrency = config.controller.concurrency,
        auth = config.controller.auth.as_ref().map_or("not configured", |a| a.base_url.as_str()),
        "starting the tenant operator"
    );
    preflight::check_crd(&client, config.webhook_self_managed.is_some()).await?;
    preflight::confine(&client, config.allow_unconfined).await?;
    let shutdown = shutdown_signal().boxed().shared();

    // Every replica: both ports bound first, so a taken one fails the start.
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving_stopped = serving_stopped.map(drop).shared();
    let admin_listener = admin::bind(config.admin_address).await?;
    let (certificates, provisioning) = match config.webhook_self_managed {
        Some(settings) => {
            let (certificates, provision) = provision::start(client.clone(), settings);
            (certificates, Some(tokio::spawn(provision)))
        }
        None => {
            tracing::info!(dir = %config.webhook.cert_dir.display(), "conversion webhook certificate from its mounted Secret");
            (Certificates::directory(&config.webhook.cert_dir), None)
        }
    };
    let webhook = Webhook::bind(&config.webhook, certificates).await?;
    readiness.follow_webhook_certificate(webhook.certificate());
    let metrics_server = match config.metrics_address {
        Some(address) => {
            let listener = admin::bind(address).await?;
            tracing::info!(%address, path = metrics_server::PATH, "metrics over HTTPS, for authorised tokens");
            let app =
                metrics_server::router(metrics.clone(), Arc::new(metrics_server::Authorizer::new(client.clone())));
            let serving =
                crate::https::serve(listener, webhook.certificate(), app, "metrics server", serving_stopped.clone());
            Some(tokio::spawn(serving))
        }
        None => {
            tracing::warn!("metrics served in the clear on the admin address to anyone (--metrics-insecure)");
            None
        }
    };
    let webhook = tokio::spawn(webhook.serve(metrics.clone(), serving_stopped.clone()));
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        readiness.clone(),
        config.metrics_address.is_none(),
        serving_stopped,
    ));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let election = match config.leader_election {
        Some(settings) => {
            tracing::info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "leader election on");
            Some(tokio::spawn(lease::elect(client.clone(), settings, readiness.clone(), async {
                let _ = released.await;
            })))
        }
        None => {
            tracing::info!("leader election off: this process reconciles on its own, so run exactly one");
            readiness.set_role(Role::Alone);
            None
        }
    };

    // The leader only.
    let result = lead(client, config.controller, config.migration, metrics, readiness, shutdown).await;
    tracing::info!("controller stopped");

    // Released only now, after the reconciles in flight have finished.
    let _ = release.send(());
    if let Some(election) = election {
        election.await.context("leader election task failed")?;
    }
    if let Some(provisioning) = provisioning {
        provisioning.abort();
    }
    let _ = stop_serving.send(());
    let admin_result = admin.await.context("admin server task failed")?;
    let webhook_result = webhook.await.context("conversion webhook task failed")?;
    let metrics_result = match metrics_server {
        Some(server) => server.await.context("metrics server task failed")?,
        None => Ok(()),
    };
    telemetry.shutdown().await;
    result.and(admin_result).and(webhook_result).and(metrics_result)
}

type Shutdown = Shared<futures::future::BoxFuture<'static, ()>>;

/// Aborts a spawned task when dropped: the migration stops with the leadership that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the controller and the storage-version migration whenever this process reconciles, until
/// `shutdown`. Returns early with the controller's error when it cannot start (the CRD is
/// missing, say).
async fn lead(
    client: Client,
    settings: Settings,
    migration: MigrationSettings,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut roles = readiness.roles();
    loop {
        tokio::select! {
            () = shutdown.clone() => return Ok(()),
            role = roles.wait_for(|role| role.reconciles()) => if role.is_err() { return Ok(()) },
        }
        metrics.set_leader(true);
        let mut lost_roles = readiness.roles();
        let lost = lost_roles.wait_for(|role| !role.reconciles());
        let _migration =
            AbortOnDrop(tokio::spawn(migration::run_until_done(client.clone(), migration.clone(), metrics.clone())));
        let controller =
            controller::run(client.clone(), settings.clone(), metrics.clone(), readiness.clone(), shutdown.clone());
        let stopped = tokio::select! {
            result = controller => Some(result),
            _ = lost => None,
        };
        metrics.set_leader(false);
        readiness.set_caches_synced(false);
        match stopped {
            Some(result) => return result,
            None => tracing::warn!("no longer the leader: stopped reconciling"),
        }
    }
}
