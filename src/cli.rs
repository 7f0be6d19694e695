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
use crate::auth::{AuthSettings, TokenSecret};
use crate::controller::{self, Settings};
use crate::metrics::Metrics;
use crate::resources::Platform;
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
    /// Namespace of the cluster's ingress controller; its pods may reach every tenant's server
    /// and registry.
    #[arg(long, env = "TENANT_OPERATOR_INGRESS_NAMESPACE")]
    pub ingress_namespace: Option<String>,
    /// IngressClass of the registry Ingresses (tenants with `spec.registry.baseDomain`); the
    /// cluster's default class when unset.
    #[arg(long, env = "TENANT_OPERATOR_INGRESS_CLASS")]
    pub ingress_class: Option<String>,
    /// TLS Secret the registry Ingresses terminate TLS with; it must exist in each tenant
    /// namespace (for example issued there by cert-manager). No TLS when unset.
    #[arg(long, env = "TENANT_OPERATOR_INGRESS_TLS_SECRET")]
    pub ingress_tls_secret: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Name of this instance in the Events it records (set to the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Registration of tenants with NeuralLog Auth.
#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    /// Base URL of NeuralLog Auth (for example http://auth.neurallog.svc:3000). Without it tenants
    /// are not registered, and their AuthRegistered condition says so. Also handed to the tenants'
    /// server and registry as AUTH_URL.
    #[arg(long, env = "TENANT_OPERATOR_AUTH_URL")]
    pub auth_url: Option<String>,
    /// Secret holding the bearer token for Auth, as NAMESPACE/NAME (read with the operator's own
    /// identity, re-read when Auth answers 401).
    #[arg(long, env = "TENANT_OPERATOR_AUTH_TOKEN_SECRET", requires = "auth_url")]
    pub auth_token_secret: Option<String>,
    /// Key of the token in that Secret.
    #[arg(long, env = "TENANT_OPERATOR_AUTH_TOKEN_KEY", default_value = "token")]
    pub auth_token_key: String,
    /// Timeout of each request to Auth, in seconds.
    #[arg(long, env = "TENANT_OPERATOR_AUTH_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub auth_timeout_seconds: u64,
    /// Attempts per Auth call before the tenant is reported Degraded and retried with backoff;
    /// only timeouts, connection failures, 429 and 5xx are retried.
    #[arg(long, env = "TENANT_OPERATOR_AUTH_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub auth_attempts: u32,
    /// Seconds a deleted tenant keeps retrying deregistration from Auth before it is released
    /// anyway, with a Warning event naming what is left in Auth.
    #[arg(long, env = "TENANT_OPERATOR_AUTH_DEREGISTRATION_DEADLINE_SECONDS", default_value_t = 600)]
    pub auth_deregistration_deadline_seconds: u64,
}

impl AuthArgs {
    fn settings(&self) -> anyhow::Result<Option<AuthSettings>> {
        let Some(base_url) = self.auth_url.clone() else { return Ok(None) };
        let token = self
            .auth_token_secret
            .as_deref()
            .map(|secret| TokenSecret::parse(secret, &self.auth_token_key))
            .transpose()
            .context("invalid --auth-token-secret")?;
        Ok(Some(AuthSettings {
            base_url,
            token,
            timeout: Duration::from_secs(self.auth_timeout_seconds),
            attempts: self.auth_attempts,
        }))
    }
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
    // Before any TLS client exists: the OTLP exporter's and the Auth client's share ring with kube.
    crate::tls::install_crypto_provider();
    let telemetry = telemetry::init(&args.telemetry, args.instance.as_deref())?;
    let client = client(&args).await?;
    let settings = Settings {
        concurrency: args.concurrency,
        resync_interval: Duration::from_secs(args.resync_seconds),
        instance: args.instance.clone(),
        platform: Platform {
            ingress_namespace: args.ingress_namespace.clone(),
            ingress_class: args.ingress_class.clone(),
            ingress_tls_secret: args.ingress_tls_secret.clone(),
            auth_url: args.auth.auth_url.clone(),
        },
        auth: args.auth.settings()?,
        auth_deregistration_deadline: Duration::from_secs(args.auth.auth_deregistration_deadline_seconds),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        concurrency = settings.concurrency,
        auth = settings.auth.as_ref().map_or("not configured", |a| a.base_url.as_str()),
        "starting the tenant controller"
    );
    let metrics = Arc::new(Metrics::default());
    let shutdown = shutdown_signal().shared();
    let admin = tokio::spawn(admin::serve(admin::bind(args.admin_address).await?, metrics.clone(), shutdown.clone()));
    let result = controller::run(client, settings, metrics, shutdown).await;
    tracing::info!("controller stopped");
    let admin_result = if result.is_ok() {
        // Stopped by the signal, which the admin server heeds as well.
        admin.await.context("admin server task failed")?
    } else {
        // The controller could not start: exit with its error rather than wait for a signal.
        admin.abort();
        Ok(())
    };
    telemetry.shutdown().await;
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
