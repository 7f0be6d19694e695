//! The `tenant-operator` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::api::ConversionService;
use crate::auth::{AuthSettings, TokenSecret};
use crate::controller::{RolloutSettings, Settings};
use crate::migration::MigrationSettings;
use crate::model::operand::{self, Images, Release};
use crate::resources::Platform;
use crate::runtime::{self, client::KubeSource, lease, lease::LeaseSettings};
use crate::telemetry::{Pod, TelemetryArgs};
use crate::webhook::{self, provision};

/// NeuralLog Tenant Operator: gives every NeuralLog tenant an isolated environment.
#[derive(Debug, Parser)]
#[command(name = "tenant-operator", version = env!("TENANT_OPERATOR_VERSION"), about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print a CustomResourceDefinition as YAML: the Tenant's (its conversion webhook included)
    /// or the TenantBackup's.
    Crd(CrdArgs),
    /// Print what the operator creates for Prometheus and Grafana: the alerting rules (a rule
    /// file, for promtool) or the dashboard (Grafana's JSON model).
    Monitoring {
        #[arg(value_enum)]
        what: MonitoringOutput,
    },
    /// What the backup Jobs and the restore's init container run in a tenant's namespace.
    Backup {
        #[command(subcommand)]
        command: crate::backup::command::BackupCommand,
    },
    /// Remove the Tenant API and what the operator made outside the tenant namespaces, keeping
    /// every tenant namespace with its data (marked retained, for a reinstall to adopt). Works
    /// whether or not the operator still runs; run it with an administrator's kubeconfig.
    Uninstall(UninstallArgs),
}

/// The cluster to talk to.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file to use. Without it: $KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long)]
    pub context: Option<String>,
}

impl KubeArgs {
    fn source(self) -> KubeSource {
        KubeSource { kubeconfig: self.kubeconfig, context: self.context }
    }
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The namespace the operator ran in, when it stays (OLM's `operators`): its Leases and the
    /// self-managed webhook certificate's Secret are deleted there too.
    #[arg(long)]
    pub operator_namespace: Option<String>,
    /// Seconds to wait for the CRD to be gone.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CrdKind {
    Tenants,
    Tenantbackups,
}

/// Where the printed CRD sends conversions between `v1` and `v2`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Which CRD.
    #[arg(value_enum, default_value_t = CrdKind::Tenants)]
    pub kind: CrdKind,
    /// Namespace of the conversion webhook's Service (the operator's namespace).
    #[arg(long, default_value = crate::api::DEFAULT_OPERATOR_NAMESPACE)]
    pub webhook_namespace: String,
    /// Name of the conversion webhook's Service (port 443, in front of the operator's webhook port).
    #[arg(long, default_value = crate::api::DEFAULT_WEBHOOK_SERVICE)]
    pub webhook_service: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MonitoringOutput {
    Rules,
    Dashboard,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Tenants reconciled in parallel. A slow or failing tenant holds only its own slot.
    #[arg(long, env = "TENANT_OPERATOR_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds between re-checks of a converged tenant, a safety net behind the watches.
    #[arg(long, env = "TENANT_OPERATOR_RESYNC_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..))]
    pub resync_seconds: u64,
    /// Tenants per page of the storage-version migration, and per progress checkpoint: a replica
    /// that stops mid-migration costs its successor at most one page again.
    #[arg(long, env = "TENANT_OPERATOR_MIGRATION_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub migration_page_size: u32,
    /// Address of the admin HTTP server: /healthz and /readyz (and /metrics with --metrics-insecure).
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
    /// The operator's own image, which the backup Jobs and the restore's init container run in
    /// the tenant namespaces (`tenant-operator backup`): set it to the image this pod runs.
    #[arg(long, env = "TENANT_OPERATOR_IMAGE", value_name = "IMAGE", default_value = concat!("neurallog/tenant-operator:", env!("CARGO_PKG_VERSION")))]
    pub operator_image: String,
    /// Run even when the admission policy that confines the operator's writes to the tenant
    /// namespaces cannot be put in place (no right to create it, an API server without
    /// ValidatingAdmissionPolicy, or a changed copy in the cluster). Without it the operator
    /// refuses to start.
    #[arg(long, env = "TENANT_OPERATOR_ALLOW_UNCONFINED")]
    pub allow_unconfined: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub operand: OperandArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub monitoring: MonitoringArgs,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
    /// Name of this pod (downward API): the instance in Events and traces, and the identity in
    /// leader election.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Namespace of this pod (downward API): in traces, and where the leader election Lease lives.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The metrics endpoint, the operand's metrics, and what the operator creates for Prometheus.
#[derive(Debug, clap::Args)]
pub struct MonitoringArgs {
    /// Address of the metrics server: /metrics over HTTPS (the conversion webhook's certificate),
    /// each request authenticated (TokenReview) and authorised (SubjectAccessReview: get on the
    /// non-resource URL /metrics, which the ClusterRole neurallog-tenant-operator-metrics-reader
    /// grants) by the API server.
    #[arg(long, env = "TENANT_OPERATOR_METRICS_ADDRESS", default_value = "0.0.0.0:8443")]
    pub metrics_address: std::net::SocketAddr,
    /// Serve /metrics over plain HTTP on the admin address instead, to anyone who reaches it, and
    /// no metrics server: for a process on a developer's machine, never in a cluster.
    #[arg(long, env = "TENANT_OPERATOR_METRICS_INSECURE")]
    pub metrics_insecure: bool,
    /// Seconds between two collections of every tenant's Redis metrics (INFO over the network);
    /// 0 turns them off. Only in a pod (KUBERNETES_SERVICE_HOST set): elsewhere no Redis is
    /// reachable by its Service's name.
    #[arg(long, env = "TENANT_OPERATOR_OPERAND_METRICS_SECONDS", default_value_t = 30)]
    pub operand_metrics_seconds: u64,
    /// Create the ServiceMonitor and the PrometheusRule in the operator's namespace when the
    /// Prometheus Operator's CRDs exist (checked at each start as leader); false never does.
    #[arg(long, env = "TENANT_OPERATOR_MONITORING_RESOURCES", default_value_t = true, action = clap::ArgAction::Set)]
    pub monitoring_resources: bool,
}

/// The NeuralLog release tenants run by default, and how a new one is rolled out. The images are
/// the `RELATED_IMAGE_*` variables OLM mirrors: a mirror changes them here, in one place, and the
/// images of every other version follow (their repositories, tagged with the version).
#[derive(Debug, clap::Args)]
pub struct OperandArgs {
    /// The NeuralLog version a tenant without spec.version runs.
    #[arg(long, env = "TENANT_OPERATOR_NEURALLOG_VERSION", value_name = "VERSION", default_value = operand::DEFAULT_VERSION)]
    pub neurallog_version: String,
    /// The NeuralLog server image of that version.
    #[arg(long, env = "RELATED_IMAGE_NEURALLOG_SERVER", value_name = "IMAGE", default_value = operand::DEFAULT_SERVER_IMAGE)]
    pub server_image: String,
    /// The endpoint registry image of that version.
    #[arg(long, env = "RELATED_IMAGE_NEURALLOG_REGISTRY", value_name = "IMAGE", default_value = operand::DEFAULT_REGISTRY_IMAGE)]
    pub registry_image: String,
    /// The Redis image of every tenant (the one this release was tested with).
    #[arg(long, env = "RELATED_IMAGE_REDIS", value_name = "IMAGE", default_value = operand::DEFAULT_REDIS_IMAGE)]
    pub redis_image: String,
    /// Tenants that move to another version at the same time, at most. The first tenant on a
    /// version moves alone: the others follow only once it is Ready.
    #[arg(long, env = "TENANT_OPERATOR_ROLLOUT_MAX_UPGRADING", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub rollout_max_upgrading: u16,
    /// Seconds a moving tenant has to run Ready on its new images; past them its upgrade fails and
    /// the rollout halts.
    #[arg(long, env = "TENANT_OPERATOR_ROLLOUT_READY_TIMEOUT_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..))]
    pub rollout_ready_timeout_seconds: u64,
}

impl OperandArgs {
    fn release(&self) -> anyhow::Result<Release> {
        let images = Images {
            redis: self.redis_image.clone(),
            server: self.server_image.clone(),
            registry: self.registry_image.clone(),
        };
        Release::new(&self.neurallog_version, images)
            .context("invalid NeuralLog release (--neurallog-version and the images)")
    }

    fn rollout(&self) -> RolloutSettings {
        RolloutSettings {
            max_upgrading: usize::from(self.rollout_max_upgrading),
            ready_timeout: Duration::from_secs(self.rollout_ready_timeout_seconds),
        }
    }
}

/// Leader election among the operator's replicas.
#[derive(Debug, clap::Args)]
pub struct LeaderElectionArgs {
    /// Elect a leader through a Lease, so that of several replicas only one reconciles (the
    /// others serve /metrics and the conversion webhook, and take over when it goes). Without it,
    /// run exactly one replica.
    #[arg(long, env = "TENANT_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "TENANT_OPERATOR_LEADER_ELECTION_LEASE", default_value = lease::DEFAULT_LEASE)]
    pub leader_election_lease: String,
    /// Namespace of the Lease; this pod's namespace when unset.
    #[arg(long, env = "TENANT_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Seconds a leader's claim lasts without renewal: how long the others wait after a leader
    /// dies without releasing the Lease.
    #[arg(long, env = "TENANT_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration_seconds: u64,
    /// Seconds before its claim runs out that the leader renews it.
    #[arg(long, env = "TENANT_OPERATOR_LEASE_RENEW_BEFORE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=299))]
    pub lease_renew_before_seconds: u64,
}

/// The CRD conversion webhook, served by every replica.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Address of the conversion webhook (HTTPS, `POST /convert`).
    #[arg(long, env = "TENANT_OPERATOR_WEBHOOK_ADDRESS", default_value = "0.0.0.0:9443")]
    pub webhook_address: std::net::SocketAddr,
    /// Directory of the webhook's serving certificate, `tls.crt` and `tls.key` (where OLM mounts
    /// it); re-read when it changes. Unused with --webhook-service.
    #[arg(long, env = "TENANT_OPERATOR_WEBHOOK_CERT_DIR", default_value = webhook::certificates::DEFAULT_DIR)]
    pub webhook_cert_dir: PathBuf,
    /// Self-managed certificate, for installs without OLM: the Service in front of the webhook,
    /// in this pod's namespace. The operator then keeps a CA and serving certificate in a Secret
    /// (--webhook-cert-secret), renews them, and points the Tenant CRD's conversion at this
    /// Service. Never with OLM, which does both itself.
    #[arg(long, env = "TENANT_OPERATOR_WEBHOOK_SERVICE")]
    pub webhook_service: Option<String>,
    /// The Secret of the self-managed certificate, in this pod's namespace.
    #[arg(long, env = "TENANT_OPERATOR_WEBHOOK_CERT_SECRET", default_value = provision::DEFAULT_SECRET)]
    pub webhook_cert_secret: String,
}

impl WebhookArgs {
    fn settings(&self) -> webhook::Settings {
        webhook::Settings { address: self.webhook_address, cert_dir: self.webhook_cert_dir.clone() }
    }

    fn self_managed(&self, pod: &Pod) -> anyhow::Result<Option<provision::SelfManaged>> {
        let Some(service) = self.webhook_service.clone() else { return Ok(None) };
        let namespace = pod.namespace.clone().context(
            "--webhook-service needs the operator's namespace (the Service's and the Secret's): POD_NAMESPACE",
        )?;
        Ok(Some(provision::SelfManaged {
            service,
            namespace,
            secret: self.webhook_cert_secret.clone(),
            check_interval: provision::DEFAULT_CHECK_INTERVAL,
        }))
    }
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

impl RunArgs {
    /// The runtime configuration these arguments describe.
    fn config(self) -> anyhow::Result<runtime::Config> {
        let pod = Pod { name: self.pod_name, namespace: self.pod_namespace };
        let leader_election =
            if self.leader_election.leader_elect { Some(self.leader_election.settings(&pod)?) } else { None };
        Ok(runtime::Config {
            kube: self.kube.source(),
            admin_address: self.admin_address,
            metrics_address: (!self.monitoring.metrics_insecure).then_some(self.monitoring.metrics_address),
            webhook: self.webhook.settings(),
            webhook_self_managed: self.webhook.self_managed(&pod)?,
            controller: Settings {
                concurrency: self.concurrency,
                resync_interval: Duration::from_secs(self.resync_seconds),
                instance: pod.name.clone(),
                platform: Platform {
                    ingress_namespace: self.ingress_namespace,
                    ingress_class: self.ingress_class,
                    ingress_tls_secret: self.ingress_tls_secret,
                    auth_url: self.auth.auth_url.clone(),
                    release: self.operand.release()?,
                    operator_image: self.operator_image,
                    operator_namespace: pod.namespace.clone(),
                },
                rollout: self.operand.rollout(),
                auth: self.auth.settings()?,
                auth_deregistration_deadline: Duration::from_secs(self.auth.auth_deregistration_deadline_seconds),
                // Outside a pod no Redis is reachable by its Service's name: asking would only send
                // lookups of cluster names to the host's resolver.
                operand_metrics_interval: (self.monitoring.operand_metrics_seconds > 0
                    && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())
                .then(|| Duration::from_secs(self.monitoring.operand_metrics_seconds)),
                monitoring_resources: self.monitoring.monitoring_resources,
            },
            migration: MigrationSettings {
                page_size: self.migration_page_size,
                progress_namespace: leader_election
                    .as_ref()
                    .map(|l| l.namespace.clone())
                    .or_else(|| pod.namespace.clone()),
                instance: pod.name.clone(),
                ..MigrationSettings::default()
            },
            leader_election,
            telemetry: self.telemetry,
            pod,
            allow_unconfined: self.allow_unconfined,
        })
    }
}

impl LeaderElectionArgs {
    fn settings(&self, pod: &Pod) -> anyhow::Result<LeaseSettings> {
        let namespace = self
            .leader_election_namespace
            .clone()
            .or_else(|| pod.namespace.clone())
            .context("--leader-elect needs the Lease's namespace: --leader-election-namespace or POD_NAMESPACE")?;
        let identity =
            pod.name.clone().context("--leader-elect needs a unique identity per replica: --pod-name or POD_NAME")?;
        if self.lease_renew_before_seconds >= self.lease_duration_seconds {
            anyhow::bail!(
                "--lease-renew-before-seconds ({}) must be below --lease-duration-seconds ({})",
                self.lease_renew_before_seconds,
                self.lease_duration_seconds
            );
        }
        Ok(LeaseSettings {
            name: self.leader_election_lease.clone(),
            namespace,
            identity,
            duration: Duration::from_secs(self.lease_duration_seconds),
            renew_before: Duration::from_secs(self.lease_renew_before_seconds),
        })
    }
}

/// Runs the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => runtime::run(args.config()?).await,
        Command::Uninstall(args) => {
            crate::tls::install_crypto_provider();
            let client = runtime::client::build(&args.kube.source(), std::sync::Arc::default()).await?;
            let uninstall = crate::uninstall::Uninstall {
                operator_namespace: args.operator_namespace,
                timeout: Duration::from_secs(args.timeout_seconds),
            };
            crate::uninstall::run(&client, &uninstall).await
        }
        Command::Crd(args) => {
            let yaml = match args.kind {
                CrdKind::Tenants => {
                    let service = ConversionService { namespace: args.webhook_namespace, name: args.webhook_service };
                    crate::api::crd_yaml(&service)
                }
                CrdKind::Tenantbackups => crate::api::backup_crd_yaml(),
            };
            print!("{}", yaml.context("cannot render the CRD")?);
            Ok(())
        }
        Command::Monitoring { what } => {
            print!(
                "{}",
                match what {
                    MonitoringOutput::Rules => crate::monitoring::rules_yaml(),
                    MonitoringOutput::Dashboard => crate::monitoring::dashboard_json(),
                }
            );
            Ok(())
        }
        Command::Backup { command } => {
            crate::tls::install_crypto_provider();
            crate::backup::command::run(command).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["tenant-operator", "run"].iter().chain(args)).expect("arguments parse");
        match cli.command {
            Command::Run(args) => *args,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn leader_election_takes_its_identity_and_namespace_from_the_pod() {
        let args = ["--leader-elect", "--pod-name", "op-0", "--pod-namespace", "neurallog-system", "--kubeconfig", "k"];
        let lease = run_args(&args).config().unwrap().leader_election.unwrap();
        assert_eq!((lease.identity.as_str(), lease.namespace.as_str()), ("op-0", "neurallog-system"));
        assert_eq!((lease.duration, lease.renew_before), (Duration::from_secs(15), Duration::from_secs(5)));
        assert!(run_args(&["--kubeconfig", "k"]).config().unwrap().leader_election.is_none());
    }

    #[test]
    fn the_webhook_serves_the_mounted_certificate_unless_it_manages_its_own() {
        let config = run_args(&["--kubeconfig", "k"]).config().unwrap();
        assert_eq!(config.webhook, webhook::Settings::default());
        assert_eq!(config.webhook.cert_dir, PathBuf::from("/tmp/k8s-webhook-server/serving-certs"));
        assert!(config.webhook_self_managed.is_none());

        let args = ["--webhook-address", "127.0.0.1:0", "--webhook-service", "hook", "--pod-namespace", "ops"];
        let config = run_args(&args).config().unwrap();
        assert_eq!(config.webhook.address, "127.0.0.1:0".parse().unwrap());
        let managed = config.webhook_self_managed.unwrap();
        assert_eq!((managed.host().as_str(), managed.secret.as_str()), ("hook.ops.svc", provision::DEFAULT_SECRET));

        let error = run_args(&["--webhook-service", "hook"]).config().unwrap_err().to_string();
        assert!(error.contains("POD_NAMESPACE"), "{error}");
    }

    #[test]
    fn leader_election_without_identity_namespace_or_renewal_room_is_refused() {
        let cases: [(&[&str], &str); 3] = [
            (&["--leader-elect", "--pod-namespace", "ns"], "POD_NAME"),
            (&["--leader-elect", "--pod-name", "op-0"], "POD_NAMESPACE"),
            (
                &[
                    "--leader-elect",
                    "--pod-name",
                    "op-0",
                    "--pod-namespace",
                    "ns",
                    "--lease-duration-seconds",
                    "5",
                    "--lease-renew-before-seconds",
                    "5",
                ],
                "must be below",
            ),
        ];
        for (args, expected) in cases {
            let error = run_args(args).config().unwrap_err().to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }
}
