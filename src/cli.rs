//! The `tenant-operator` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use std::sync::Arc;

use futures::FutureExt as _;

use crate::admin;
use crate::controller::{self, Settings};
use crate::metrics::Metrics;
use crate::telemetry::{self, TelemetryArgs};

/// NeuralLog Tenant Operator: gives every NeuralLog tenant an isolated environment.
#[derive(Debug, Parser)]
#[command(name = "tenant-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print the Tenant CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig file to use. Without it: $KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long)]
    pub context: Option<String>,
    /// Tenants reconciled in parallel. A slow or failing tenant holds only its own slot.
    #[arg(long, env = "TENANT_OPERATOR_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds between re-checks of a converged tenant, a safety net behind the watches.
    #[arg(long, env = "TENANT_OPERATOR_RESYNC_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..))]
    pub resync_seconds: u64,
    /// Address of the admin HTTP server: /metrics, /healthz and /readyz.
    #[arg(long, env = "TENANT_OPERATOR_ADMIN_ADDRESS", default_value = "0.0.0.0:8081")]
    pub admin_address: std::net::SocketAddr,
    /// Namespace of the cluster's ingress controller; its pods may reach every tenant's server.
    #[arg(long, env = "TENANT_OPERATOR_INGRESS_NAMESPACE")]
    pub ingress_namespace: Option<String>,
    /// Name of this instance in the Events it records (set to the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

async fn client(args: &RunArgs) -> anyhow::Result<Client> {
    let options = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None if args.context.is_some() => {
            Config::from_kubeconfig(&options).await.context("cannot load the kubeconfig")?
        }
        None => Config::infer().await.context("no kubeconfig and not running in a cluster")?,
    };
    Client::try_from(config).context("cannot build a Kubernetes client")
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

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&args.telemetry)?;
    let client = client(&args).await?;
    let settings = Settings {
        concurrency: args.concurrency,
        resync_interval: Duration::from_secs(args.resync_seconds),
        instance: args.instance.clone(),
        ingress_namespace: args.ingress_namespace.clone(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        concurrency = settings.concurrency,
        "starting the tenant controller"
    );
    let metrics = Arc::new(Metrics::default());
    let shutdown = shutdown_signal().shared();
    let admin = tokio::spawn(admin::serve(admin::bind(args.admin_address).await?, metrics.clone(), shutdown.clone()));
    let result = controller::run(client, settings, metrics, shutdown).await;
    tracing::info!("controller stopped");
    let admin_result = admin.await.context("admin server task failed")?;
    telemetry.shutdown();
    result.and(admin_result)
}

/// Runs the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Crd => {
            print!("{}", crate::api::crd_yaml().context("cannot render the CRD")?);
            Ok(())
        }
    }
}
