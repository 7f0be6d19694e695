//! Test harness: a real control plane per test, the CRD and the operator's ClusterRole from
//! `config/`, and the controller running in-process as the RBAC-restricted operator user, with
//! every write it sends recorded.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use neurallog_tenant_operator::api::v1::Tenant;
use neurallog_tenant_operator::controller::{self, Settings};
use neurallog_tenant_operator::metrics::Metrics;
use neurallog_tenant_operator::readiness::Readiness;
use neurallog_tenant_operator::webhook;
use serde::de::DeserializeOwned;
use serde_json::json;
use testenv::{ControlPlane, Options, Pki, repo_root};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Numbers the operator instances of a test process, for their log file names.
static OPERATORS: AtomicUsize = AtomicUsize::new(0);

/// How long any single expectation may take before the test fails. Generous: CI machines are
/// small and run tests in parallel; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Requests a process sent with a method other than GET, as "METHOD resource" → count, from its
/// metrics in the OpenMetrics text form. Reviews (a SelfSubjectReview at start-up) are questions
/// sent as creates, and store nothing: not writes.
fn writes_in(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let labels = name.strip_prefix("neurallog_tenant_operator_api_requests_total{")?.strip_suffix('}')?;
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{key}=\"")).map(|v| v.trim_end_matches('"')))
            };
            let (method, resource) = (label("method")?, label("resource")?);
            if method == "GET" || resource.ends_with("reviews") {
                return None;
            }
            Some((format!("{method} {resource}"), value.parse().ok()?))
        })
        .collect()
}

/// The writes a client counted in `metrics` sent, by "METHOD resource".
pub fn writes_of(metrics: &Metrics) -> BTreeMap<String, f64> {
    writes_in(&metrics.encode().expect("metrics encode"))
}

/// A reconcile the operator finished, as its root span (`reconcile`) recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub tenant: String,
    /// The tenant's resourceVersion the reconcile worked from.
    pub resource_version: String,
    /// Why it ran: the first watch event since the previous reconcile, or what scheduled it.
    pub trigger: String,
}

impl Reconciled {
    /// Whether it worked from the tenant at `resource_version` or later (etcd's resourceVersions
    /// are increasing numbers, which the test API server's are).
    pub fn saw_version(&self, resource_version: &str) -> bool {
        let number = |v: &str| v.parse::<u64>().expect("a numeric resourceVersion");
        number(&self.resource_version) >= number(resource_version)
    }
}

impl tracing::field::Visit for Reconciled {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
        let slot = match field.name() {
            "tenant" => &mut self.tenant,
            "resource_version" => &mut self.resource_version,
            "trigger" => &mut self.trigger,
            _ => return,
        };
        *slot = format!("{value:?}");
    }
}

/// Collects the reconciles an in-process operator finished: a reconcile's root span closes once
/// everything it sent (writes, Auth calls, Events) has been answered.
struct ReconcileLayer(tokio::sync::watch::Sender<Vec<Reconciled>>);

impl<S> tracing_subscriber::Layer<S> for ReconcileLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Reconciled::default();
        attributes.record(&mut fields);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_close(&self, id: tracing::span::Id, context: tracing_subscriber::layer::Context<'_, S>) {
        let finished = context.span(&id).and_then(|span| span.extensions_mut().remove::<Reconciled>());
        if let Some(finished) = finished {
            self.0.send_modify(|all| all.push(finished));
        }
    }
}

/// The root span of every reconcile, and nothing else.
fn is_reconcile(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && metadata.name() == "reconcile" && metadata.target().starts_with("neurallog_tenant_operator")
}

/// An operator instance running in-process.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    /// Every reconcile it finished, in the order they finished.
    pub reconciles: tokio::sync::watch::Receiver<Vec<Reconciled>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Operator {
    /// Stops it the way SIGTERM does: reconciles in flight finish, then it returns.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("operator stops")
                .expect("operator task")
                .expect("operator run");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// The writes it sent so far, by "METHOD resource".
    pub fn writes(&self) -> BTreeMap<String, f64> {
        writes_in(&self.metrics.encode().expect("metrics encode"))
    }

    /// How many reconciles it has finished so far.
    pub fn reconciled_so_far(&self) -> usize {
        self.reconciles.borrow().len()
    }

    /// Waits (without polling) until the operator has finished a reconcile of `tenant` that
    /// satisfies `check`, and returns it. Proof that what a change caused is done: a reconcile
    /// that worked from the changed tenant, or that a child's change triggered, started after
    /// the operator saw the change.
    pub async fn wait_reconciled(&self, tenant: &str, what: &str, check: impl Fn(&Reconciled) -> bool) -> Reconciled {
        self.wait_reconciled_since(0, tenant, what, check).await
    }

    /// As [`Self::wait_reconciled`], among the reconciles finished after the first `since`.
    pub async fn wait_reconciled_since(
        &self,
        since: usize,
        tenant: &str,
        what: &str,
        check: impl Fn(&Reconciled) -> bool,
    ) -> Reconciled {
        let matches = |r: &Reconciled| r.tenant == tenant && check(r);
        let mut reconciles = self.reconciles.clone();
        let found = tokio::time::timeout(DEADLINE, reconciles.wait_for(|all| all.iter().skip(since).any(matches)))
            .await
            .unwrap_or_else(|_| {
                panic!("{tenant}: no reconcile {what} within {DEADLINE:?}: {:?}", self.reconciles.borrow())
            })
            .expect("the operator's reconcile log");
        found.iter().skip(since).find(|r| matches(r)).cloned().expect("found above")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        // Dropping a runtime may block, which an async test must not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub struct Harness {
    pub plane: ControlPlane,
    pub admin: Client,
    /// The conversion webhook the CRD calls, once the CRD is installed.
    pub webhook: Option<ConversionWebhook>,
    /// The self-managed webhook of `config/default`, once installed.
    self_managed: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The operator's conversion webhook, served in-process over TLS on loopback with a certificate
/// of the test CA, from a directory the way OLM mounts it; the CRD calls it by URL.
pub struct ConversionWebhook {
    pub pki: Pki,
    pub cert_dir: PathBuf,
    pub address: std::net::SocketAddr,
    pub metrics: Arc<Metrics>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How often the test webhook re-reads its certificate directory.
pub const CERT_POLL: Duration = Duration::from_millis(200);

impl ConversionWebhook {
    /// Starts it with a fresh loopback certificate in `cert_dir`.
    pub async fn start(cert_dir: PathBuf) -> Self {
        let pki = Pki::new().expect("test CA");
        std::fs::create_dir_all(&cert_dir).expect("certificate directory");
        Self::write_pair(&pki, &cert_dir);
        let settings =
            webhook::Settings { address: "127.0.0.1:0".parse().expect("address"), cert_dir: cert_dir.clone() };
        let certificates = webhook::Certificates::Directory { path: cert_dir.clone(), poll_interval: CERT_POLL };
        let server = webhook::Webhook::bind(&settings, certificates).await.expect("webhook binds");
        let address = server.local_addr();
        let metrics = Arc::new(Metrics::default());
        // Served until the harness drops it.
        let task = tokio::spawn(server.serve(metrics.clone(), std::future::pending()));
        Self { pki, cert_dir, address, metrics, task: Some(task) }
    }

    /// Writes a new serving pair the way the kubelet updates a mounted Secret.
    pub fn write_pair(pki: &Pki, cert_dir: &Path) {
        pki.write_loopback_pair(cert_dir, "neurallog-tenant-operator-webhook").expect("serving pair written");
    }

    /// The URL the CRD calls.
    pub fn url(&self) -> String {
        format!("https://{}{}", self.address, webhook::PATH)
    }
}

impl Drop for ConversionWebhook {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Which kube-controller-manager controllers a test's control plane runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controllers {
    /// None: the API server and etcd only.
    None,
    /// The namespace controller and the garbage collector, which deleting a tenant needs.
    Deletion,
}

impl Harness {
    /// A control plane with the CRD and the operator's role installed.
    pub async fn start(controllers: Controllers) -> Self {
        Self::with_controllers(match controllers {
            Controllers::None => &[],
            Controllers::Deletion => &["namespace", "garbagecollector"],
        })
        .await
    }

    /// A control plane running these kube-controller-manager controllers, with the CRD and the
    /// operator's role installed.
    pub async fn with_controllers(controllers: &[&str]) -> Self {
        let mut harness = Self::bare(controllers).await;
        harness.install_crd().await;
        harness.plane.grant_operator(&repo_root().join("config/rbac")).await.expect("role installs");
        harness
    }

    /// A control plane with nothing of the operator's installed.
    pub async fn bare(controllers: &[&str]) -> Self {
        let controllers = controllers.iter().map(|c| c.to_string()).collect();
        let plane =
            ControlPlane::start(Options { controllers, ..Options::default() }).await.expect("control plane starts");
        let admin = plane.admin_client().await.expect("admin client");
        Self { plane, admin, webhook: None, self_managed: None }
    }

    /// Starts the conversion webhook and installs the CRD from `config/` calling it.
    pub async fn install_crd(&mut self) {
        let webhook = ConversionWebhook::start(self.plane.dir().join("webhook-certs")).await;
        let crd = repo_root().join("config/crd/bases/neurallog.io_tenants.yaml");
        self.plane.install_crd_converting(&crd, &webhook.url(), &webhook.pki.ca_pem).await.expect("CRD installs");
        // A reinstall after the Tenant CRD alone was deleted finds it still there.
        let crds =
            Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
                self.admin.clone(),
            );
        if crds.get_opt(neurallog_tenant_operator::api::backup::CRD_NAME).await.expect("CRDs readable").is_none() {
            let backups = repo_root().join("config/crd/bases/neurallog.io_tenantbackups.yaml");
            self.plane.install_crd(&backups).await.expect("the TenantBackup CRD installs");
        }
        self.webhook = Some(webhook);
    }

    /// Starts the controller as the operator user, recording its writes.
    pub async fn start_operator(&self) -> Operator {
        self.start_operator_with(Settings { concurrency: 4, ..Settings::default() }).await
    }

    /// Starts the controller with `settings`, as the operator user, recording its writes.
    pub async fn start_operator_with(&self, settings: Settings) -> Operator {
        let config = self.plane.operator_config().await.expect("operator kubeconfig");
        self.start_operator_as(config, settings).await
    }

    /// Starts the controller with `settings` and the identity of `config`, recording its writes.
    pub async fn start_operator_as(&self, config: kube::Config, settings: Settings) -> Operator {
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
        // The operator logs into the control plane's directory, which a failing test keeps.
        let log = std::fs::File::create(
            self.plane.dir().join(format!("operator-{}.log", OPERATORS.fetch_add(1, Ordering::Relaxed))),
        )
        .expect("operator log file");
        let (reconciled, reconciles) = tokio::sync::watch::channel(Vec::new());
        // The log's filter is the log's alone: the reconcile log sees every reconcile whatever
        // RUST_LOG says.
        let filter =
            tracing_subscriber::EnvFilter::new(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(Mutex::new(log)).with_filter(filter))
            .with(ReconcileLayer(reconciled).with_filter(tracing_subscriber::filter::filter_fn(is_reconcile)));
        // A runtime of its own, every thread of which reports to this operator's subscriber: the
        // controller spawns each reconcile as a task of its own, which a subscriber attached to
        // the operator's future would not see.
        let dispatch = tracing::Dispatch::new(subscriber);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("operator")
            .enable_all()
            .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&dispatch)))
            .build()
            .expect("the operator's runtime");
        let metrics_for_run = metrics.clone();
        let run = async move {
            let client = neurallog_tenant_operator::runtime::client::counted(config, metrics_for_run.clone())?;
            let result =
                controller::run(client, settings, metrics_for_run, Arc::new(Readiness::default()), async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = &result {
                tracing::error!("operator stopped: {error:#}");
            }
            result
        };
        let task = runtime.spawn(run);
        Operator { metrics, reconciles, stop: Some(stop), task: Some(task), runtime: Some(runtime) }
    }

    pub fn tenants(&self) -> Api<Tenant> {
        Api::all(self.admin.clone())
    }

    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.admin.clone(), namespace)
    }

    /// Creates a tenant from JSON, as `kubectl create` would (no client-side typing).
    pub async fn create_tenant(&self, manifest: serde_json::Value) -> Result<DynamicObject, kube::Error> {
        let resource = ApiResource::erase::<Tenant>(&());
        let object: DynamicObject = serde_json::from_value(manifest).expect("manifest is an object");
        Api::<DynamicObject>::all_with(self.admin.clone(), &resource).create(&PostParams::default(), &object).await
    }
}

/// Operator settings that register tenants with `auth`: each request times out after `timeout`,
/// two attempts per call.
pub fn settings_with_auth(auth: &testenv::auth::AuthStandIn, timeout: Duration) -> Settings {
    Settings {
        concurrency: 4,
        auth: Some(neurallog_tenant_operator::auth::AuthSettings {
            base_url: auth.url(),
            token: None,
            timeout,
            attempts: 2,
        }),
        ..Settings::default()
    }
}

/// The Service `config/default` puts in front of the self-managed webhook.
pub const WEBHOOK_SERVICE: &str = "neurallog-tenant-operator-webhook";

/// The identity `kubectl apply -k config/default` creates for the operator.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:neurallog-system:neurallog-tenant-operator";

impl Harness {
    /// Runs kubectl as the admin; panics with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut child = Command::new(self.plane.kubectl())
            .arg("--kubeconfig")
            .arg(self.plane.admin_kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// Applies (or, with `delete`, deletes and does not wait) a kustomization of `config/`.
    pub fn kustomize(&self, kustomization: &str, delete: bool) {
        let rendered = self.kubectl(&["kustomize", repo_root().join(kustomization).to_str().unwrap()], None);
        let verb: &[&str] = if delete { &["delete", "--wait=false"] } else { &["apply", "--server-side"] };
        self.kubectl(&[verb, &["-f", "-"]].concat(), Some(rendered.as_bytes()));
    }

    /// Installs what the README's install without OLM installs: `kubectl apply -k config/crd`
    /// (the CRD), then `kubectl apply -k config/default` (RBAC, ServiceAccount, webhook Service,
    /// admission policy, manager Deployment; no pods run here); then runs, as the installed
    /// ServiceAccount, what each replica runs of the self-managed webhook (certificate Secret, the
    /// CRD's conversion, the HTTPS server), with the API server's calls to the webhook Service
    /// routed to it. Returns once a conversion through the Service succeeds.
    pub async fn install_default_config(&mut self) {
        self.kustomize("config/crd", false);
        self.kustomize("config/default", false);
        self.kubectl(&["wait", "--for=condition=Established", "crd/tenants.neurallog.io", "--timeout=60s"], None);
        let client = Client::try_from(self.service_account_config().await).unwrap();
        let settings = webhook::provision::SelfManaged {
            service: WEBHOOK_SERVICE.into(),
            namespace: "neurallog-system".into(),
            secret: webhook::provision::DEFAULT_SECRET.into(),
            check_interval: webhook::provision::DEFAULT_CHECK_INTERVAL,
        };
        let (certificates, provisioner) = webhook::provision::start(client, settings);
        let settings = webhook::Settings { address: "127.0.0.1:0".parse().unwrap(), cert_dir: PathBuf::new() };
        let server = webhook::Webhook::bind(&settings, certificates).await.expect("webhook binds");
        let address = server.local_addr();
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(async move {
            tokio::spawn(provisioner);
            server.serve(metrics, std::future::pending()).await
        });
        self.plane.forward_service("neurallog-system", WEBHOOK_SERVICE, 443, address).await.expect("Service forwarded");
        self.self_managed = Some(task);
        // A v1 read of a v2 object goes through the webhook.
        let v1 = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("neurallog.io", "v1", "Tenant"));
        let probe = Api::<DynamicObject>::all_with(self.admin.clone(), &v1);
        let manifest = json!({"apiVersion": "neurallog.io/v2", "kind": "Tenant", "metadata": {"name": "conversion-probe"}, "spec": {}});
        let v2 = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("neurallog.io", "v2", "Tenant"));
        Api::<DynamicObject>::all_with(self.admin.clone(), &v2)
            .create(&PostParams::default(), &serde_json::from_value(manifest).unwrap())
            .await
            .expect("a v2 tenant needs no conversion");
        poll("the self-managed webhook converts", async || probe.get("conversion-probe").await.ok()).await;
        probe.delete("conversion-probe", &Default::default()).await.expect("probe deleted");
    }

    /// The admin's client configuration, impersonating the installed ServiceAccount.
    pub async fn service_account_config(&self) -> kube::Config {
        let mut config = self.plane.admin_config().await.unwrap();
        config.auth_info.impersonate = Some(SERVICE_ACCOUNT.to_owned());
        config.auth_info.impersonate_groups =
            Some(vec!["system:serviceaccounts".to_owned(), "system:authenticated".to_owned()]);
        config
    }

    /// A kubeconfig file for the installed ServiceAccount (the admin, impersonating it), for
    /// operator processes.
    pub fn service_account_kubeconfig(&self) -> PathBuf {
        let admin = std::fs::read_to_string(self.plane.admin_kubeconfig()).unwrap();
        let mut kubeconfig: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
        for user in kubeconfig["users"].as_sequence_mut().unwrap() {
            user["user"]["as"] = SERVICE_ACCOUNT.into();
            user["user"]["as-groups"] = vec!["system:serviceaccounts", "system:authenticated"].into();
        }
        let path = self.plane.dir().join("service-account.kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
        path
    }
}

/// The operator binary running as a process, its log in the control plane's directory.
pub struct OperatorProcess {
    pub name: String,
    pub log: PathBuf,
    admin: String,
    child: tokio::process::Child,
}

impl OperatorProcess {
    /// Starts `tenant-operator run` with `args`, the pod name `name`, a free admin port, a free
    /// webhook port and a serving certificate of its own in its certificate directory, as OLM
    /// mounts one (a replica without one is not ready). Its metrics are served in the clear on the
    /// admin port (`--metrics-insecure`), unless `args` give a `--metrics-address`.
    pub fn start(h: &Harness, name: &str, kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let admin = format!("127.0.0.1:{}", testenv::free_port().unwrap());
        let log = h.plane.dir().join(format!("{name}.log"));
        let cert_dir = h.plane.dir().join(format!("{name}-webhook-certs"));
        std::fs::create_dir_all(&cert_dir).expect("certificate directory");
        Pki::new().and_then(|pki| pki.write_loopback_pair(&cert_dir, name)).expect("serving pair written");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenant-operator"))
            .arg("run")
            .args(["--admin-address", &admin, "--webhook-address", "127.0.0.1:0", "--pod-name", name, "--kubeconfig"])
            .arg(kubeconfig)
            .arg("--webhook-cert-dir")
            .arg(&cert_dir)
            .args(args)
            .args((!args.contains(&"--metrics-address")).then_some("--metrics-insecure"))
            .envs(env.iter().copied())
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("operator starts");
        Self { name: name.to_owned(), log, admin, child }
    }

    fn pid(&self) -> String {
        self.child.id().expect("still running").to_string()
    }

    /// SIGKILL: no shutdown, no lease release.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) {
        let killed = Command::new("kill").args(["-TERM", &self.pid()]).status().unwrap();
        assert!(killed.success());
        let exit = tokio::time::timeout(DEADLINE, self.child.wait()).await.expect("exits after SIGTERM").unwrap();
        assert!(exit.success(), "{}: clean exit after SIGTERM: {exit}", self.name);
    }

    /// GET of an admin path: status and body (None while it is not serving yet).
    pub async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        // The workspace's reqwest has no TLS provider of its own (see Cargo.toml).
        neurallog_tenant_operator::tls::install_crypto_provider();
        let response = reqwest::get(format!("http://{}{path}", self.admin)).await.ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    /// Its metrics, as `name{labels}` → value (None while it is not serving yet).
    pub async fn metrics(&self) -> Option<BTreeMap<String, f64>> {
        let (_, text) = self.admin_get("/metrics").await?;
        Some(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.rsplit_once(' '))
                .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
                .collect(),
        )
    }

    /// Requests it sent with a method other than GET, by "METHOD resource".
    pub async fn writes(&self) -> BTreeMap<String, f64> {
        let (_, text) = self.admin_get("/metrics").await.expect("metrics are served");
        writes_in(&text)
    }

    /// Its `/readyz` answer: status code and body.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        self.admin_get("/readyz").await
    }
}

/// Stands in for the kubelets this control plane lacks: every Deployment and StatefulSet is
/// reported with all its replicas ready, as the workload controllers would once pods run.
pub struct KubeletStandIn(JoinHandle<()>);

impl Drop for KubeletStandIn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Harness {
    pub fn mark_workloads_ready(&self) -> KubeletStandIn {
        let client = self.admin.clone();
        KubeletStandIn(tokio::spawn(async move {
            let deployments = watcher(Api::<Deployment>::all(client.clone()), watcher::Config::default())
                .applied_objects()
                .map_ok(|d| {
                    (
                        d.metadata.clone(),
                        d.spec.and_then(|s| s.replicas),
                        d.status.and_then(|s| s.ready_replicas),
                        "deployments",
                    )
                });
            let stateful_sets = watcher(Api::<StatefulSet>::all(client.clone()), watcher::Config::default())
                .applied_objects()
                .map_ok(|s| {
                    (
                        s.metadata.clone(),
                        s.spec.and_then(|s| s.replicas),
                        s.status.map(|s| s.ready_replicas.unwrap_or(0)),
                        "statefulsets",
                    )
                });
            let mut objects = std::pin::pin!(futures::stream::select(deployments, stateful_sets));
            while let Some(Ok((meta, wanted, ready, kind))) = objects.next().await {
                let wanted = wanted.unwrap_or(1);
                if ready == Some(wanted) || meta.deletion_timestamp.is_some() {
                    continue;
                }
                let status = json!({"status": {"replicas": wanted, "readyReplicas": wanted, "availableReplicas": wanted,
                                               "updatedReplicas": wanted, "currentReplicas": wanted}});
                let (namespace, name) = (meta.namespace.unwrap_or_default(), meta.name.unwrap_or_default());
                let params = PatchParams::default();
                // A workload deleted in between is not an error.
                let _ = match kind {
                    "deployments" => Api::<Deployment>::namespaced(client.clone(), &namespace)
                        .patch_status(&name, &params, &Patch::Merge(&status))
                        .await
                        .map(drop),
                    _ => Api::<StatefulSet>::namespaced(client.clone(), &namespace)
                        .patch_status(&name, &params, &Patch::Merge(&status))
                        .await
                        .map(drop),
                };
            }
        }))
    }
}

/// Polls `check` until it returns `Some`, for conditions that span several objects (one watch on
/// a name does not fit).
pub async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A condition of a tenant's status.
pub fn condition(tenant: &Tenant, type_: &str) -> Option<Condition> {
    tenant.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Waits (on a watch) until `name` satisfies `condition`, and returns it.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, condition: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let found = tokio::time::timeout(
        DEADLINE,
        await_condition(api.clone(), name, move |object: Option<&K>| object.is_some_and(&condition)),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: {what} within {DEADLINE:?}"))
    .expect("watch works");
    found.expect("object exists")
}

/// Waits (on a watch) until `name` is gone.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, conditions::is_deleted(uid)))
        .await
        .unwrap_or_else(|_| panic!("{name} not deleted within {DEADLINE:?}"))
        .expect("watch works");
}

/// The tenant's phase, as a string.
pub fn phase(tenant: &Tenant) -> Option<String> {
    tenant.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"))
}
