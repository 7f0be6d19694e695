//! The operator installed the way OperatorHub users get it, on a [`KwokCluster`]: a catalog made of
//! released bundles and the one this checkout builds, OLM subscribed to it, the operator run as
//! OLM's Deployment would run it (its arguments, its ServiceAccount, OLM's serving certificate
//! behind OLM's Service), traces into Jaeger, polls with deadlines and a timeline of the steps.
//! Used by the end-to-end tests (`tests/e2e`) and `make run OLM=1`.

use std::fmt::Display;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::jaeger::Jaeger;
use crate::kwok::KwokCluster;
use crate::olm::{CatalogServer, Olm, render_bundle};
use crate::timeline::Timeline;
use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub const PACKAGE: &str = "neurallog-tenant-operator";
/// Where the scenarios install the operator (an AllNamespaces OperatorGroup).
pub const INSTALL_NAMESPACE: &str = "neurallog-system";
const CATALOG_NAMESPACE: &str = "olm";
const CATALOG_SOURCE: &str = "neurallog";
/// The channel each run composes from the catalog's bundles.
const CHANNEL: &str = "local";
pub const CRD: &str = "tenants.neurallog.io";
/// How long any one wait may take.
const DEADLINE: Duration = Duration::from_secs(180);
/// How long OLM retries an InstallPlan's failing steps before it fails the plan: its default, a
/// minute, covers an upgrade's window in which the new webhook is not served yet (an InstallPlan
/// that runs its CRD step again lists the tenants through it).
pub const INSTALL_PLAN_RETRY: Duration = Duration::from_secs(60);
/// How often `olm` re-checks every CSV (its default is 5 minutes). An InstallPlan whose status
/// write conflicted runs its CRD step again and overwrites the conversion OLM wrote for the CSV;
/// OLM restores it on its next check of that CSV (see [`Env::wait_installed`]).
const OLM_WAKEUP: Duration = Duration::from_secs(10);

/// The CSV name of a released version.
pub fn released_csv(version: &str) -> String {
    format!("{PACKAGE}.v{version}")
}

/// The CSV this checkout's `bundle/` holds.
pub fn head_csv() -> anyhow::Result<String> {
    let csv = read_yaml(&bundle_dir().join(format!("manifests/{PACKAGE}.clusterserviceversion.yaml")))?;
    csv.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned).context("bundle/ has a CSV without a name")
}

pub fn bundle_dir() -> PathBuf {
    crate::repo_root().join("bundle")
}

pub fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

/// The binary of a released version, built from the commit `catalog/releases.yaml` records for it
/// (tools/released-operator.sh, cached by version and commit).
pub fn released_binary(version: &str) -> anyhow::Result<PathBuf> {
    let output = Command::new(crate::repo_root().join("tools/released-operator.sh"))
        .arg(version)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run tools/released-operator.sh")?;
    if !output.status.success() {
        bail!("tools/released-operator.sh {version} failed");
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// One entry of the scenario's channel: a CSV, what it replaces, and the bundle directory to
/// render when the catalog does not hold it already (the head bundle before it is released, or a
/// bundle a scenario made).
pub struct Entry {
    pub csv: String,
    pub replaces: Option<String>,
    pub bundle: Option<PathBuf>,
}

impl Entry {
    pub fn released(version: &str) -> Self {
        Self { csv: released_csv(version), replaces: None, bundle: None }
    }

    /// This checkout's bundle, replacing `replaces`.
    pub fn head(replaces: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self { csv: head_csv()?, replaces: replaces.map(released_csv), bundle: Some(bundle_dir()) })
    }
}

/// `catalog/` as released plus the channel `local` of `entries` (rendering the bundles it lacks),
/// written to `dir`.
pub fn compose_catalog(dir: &Path, entries: &[Entry]) -> anyhow::Result<PathBuf> {
    let catalog = dir.to_path_buf();
    copy_dir(&crate::repo_root().join("catalog"), &catalog)?;
    let package_dir = catalog.join(PACKAGE);
    let mut channel = json!({"schema": "olm.channel", "package": PACKAGE, "name": CHANNEL, "entries": []});
    for entry in entries {
        // Released bundles are named after their CSV (tools/catalog.sh).
        let file = package_dir.join(format!("bundles/{}.yaml", entry.csv));
        if let (false, Some(bundle)) = (file.exists(), &entry.bundle) {
            render_bundle(bundle, &file)?;
        }
        let mut item = json!({"name": entry.csv});
        if let Some(replaces) = &entry.replaces {
            item["replaces"] = json!(replaces);
        }
        if let Some(entries) = channel["entries"].as_array_mut() {
            entries.push(item);
        }
    }
    let mut channels = std::fs::OpenOptions::new().append(true).open(package_dir.join("channels.yaml"))?;
    write!(channels, "---\n{}", serde_yaml::to_string(&channel)?)?;
    Ok(catalog)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A running operator binary.
struct OperatorProcess {
    name: String,
    child: Child,
    log: PathBuf,
    admin: SocketAddr,
}

/// Where the API server calls the operator's conversion webhook: the `ClusterIP:port` of OLM's
/// Service, which testenv's egress proxy forwards to the operator.
#[derive(Clone, Copy, Debug)]
pub struct WebhookRoute {
    pub service: SocketAddr,
}

/// One scenario's world. Dropped, it stops the operators it started, then OLM, opm, Jaeger and the
/// cluster; the working directory is removed after a success (unless `E2E_KEEP=1`) and kept, with
/// the cluster's state, after a failure.
pub struct Env {
    operators: Mutex<Vec<OperatorProcess>>,
    timeline: Timeline,
    name: String,
    pub dir: PathBuf,
    pub client: Client,
    pub jaeger: Jaeger,
    catalog: CatalogServer,
    _olm: Olm,
    pub cluster: KwokCluster,
    succeeded: bool,
    /// Last, so that the directory goes only after the cluster working in it was deleted.
    logs: RemovedOnSuccess,
}

/// Removes a run's directory when dropped after a success, unless `E2E_KEEP=1`.
struct RemovedOnSuccess {
    dir: PathBuf,
    remove: bool,
}

impl Drop for RemovedOnSuccess {
    fn drop(&mut self) {
        if self.remove && std::env::var_os("E2E_KEEP").is_none_or(|keep| keep != "1") {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn olm_resource(kind: &str, plural: &str) -> ApiResource {
    let (group, version) = match kind {
        "OperatorGroup" => ("operators.coreos.com", "v1"),
        _ => ("operators.coreos.com", "v1alpha1"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn tenant_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("neurallog.io", version, "Tenant"), "tenants")
}

/// `object` as JSON, for reading fields by pointer.
pub fn json_of(object: &impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

pub fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

impl Env {
    /// A cluster with `volumes` PersistentVolumes, OLM, Jaeger and `catalog` served and connected.
    /// `name` names the run in what it prints; `dir` (emptied first) gets every log.
    /// `install_plan_retry` is OLM's `--install-plan-retry-timeout`.
    pub async fn start(
        name: &str,
        dir: &Path,
        volumes: usize,
        entries: &[Entry],
        install_plan_retry: Duration,
    ) -> anyhow::Result<Self> {
        let dir = dir.to_path_buf();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        println!("{name}: logs in {}", dir.display());
        let mut timeline = Timeline::default();
        timeline.begin("cluster", "kwokctl --runtime binary, a fake node, volumes for Redis");
        let cluster = KwokCluster::start(&dir, volumes).await?;
        let client = cluster.admin_client().await?;
        timeline.done("cluster up, node Ready");
        timeline.begin("olm", "OLM's CRDs, the olm and catalog operators, Jaeger, opm serving the catalog");
        let olm = Olm::start(&cluster, &dir, install_plan_retry, OLM_WAKEUP).await?;
        let jaeger = Jaeger::start().await?;
        let catalog_dir = compose_catalog(&dir.join("catalog"), entries)?;
        let catalog = CatalogServer::serve(&catalog_dir, &dir).await?;
        let mut env = Self {
            operators: Mutex::new(Vec::new()),
            timeline,
            name: name.to_owned(),
            logs: RemovedOnSuccess { dir: dir.clone(), remove: false },
            dir,
            client,
            jaeger,
            catalog,
            _olm: olm,
            cluster,
            succeeded: false,
        };
        env.catalog_source_at(&env.catalog.address()).await?;
        env.done(format!("olm and catalog running, catalog READY at {}", env.catalog.address()));
        Ok(env)
    }

    pub fn begin(&mut self, step: &str, what: &str) {
        self.timeline.begin(step, what);
    }

    pub fn done(&mut self, outcome: impl Display) {
        self.timeline.done(outcome);
    }

    /// Ends the scenario with its outcome: after a failure, the cluster's objects are written to
    /// the working directory, which is kept.
    pub async fn end(mut self, outcome: anyhow::Result<()>) -> anyhow::Result<()> {
        match &outcome {
            Ok(()) => self.succeeded = true,
            Err(_) => {
                if let Err(error) = self.save_state().await {
                    eprintln!("{}: could not save the cluster's state: {error:#}", self.name);
                }
            }
        }
        outcome
    }

    async fn save_state(&self) -> anyhow::Result<()> {
        let kubectl = |args: &[&str], file: &str| -> anyhow::Result<()> {
            let output = Command::new(self.cluster.kubectl())
                .arg("--kubeconfig")
                .arg(self.cluster.kubeconfig())
                .args(args)
                .output()?;
            std::fs::write(self.dir.join(file), [output.stdout, output.stderr].concat())?;
            Ok(())
        };
        kubectl(&["get", "all,events", "-A", "-o", "wide"], "cluster-state.txt")?;
        kubectl(
            &["get", "catalogsources,subscriptions,installplans,csv,operatorgroups", "-A", "-o", "yaml"],
            "olm-objects.yaml",
        )?;
        kubectl(&["get", "crd", CRD, "-o", "yaml", "--show-managed-fields"], "crd.yaml")?;
        kubectl(&["get", "tenants.v2.neurallog.io", "-o", "yaml"], "tenants.yaml")?;
        kubectl(&["get", "deployments,statefulsets", "-A", "-o", "yaml", "--show-managed-fields"], "workloads.yaml")?;
        Ok(())
    }

    /// Points the CatalogSource at `address` (created on first use) and waits until OLM has
    /// connected: a new address is how OLM sees a catalog's new content at once.
    pub async fn catalog_source_at(&self, address: &str) -> anyhow::Result<()> {
        let sources = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            CATALOG_NAMESPACE,
            &olm_resource("CatalogSource", "catalogsources"),
        );
        let source = json!({
            "apiVersion": "operators.coreos.com/v1alpha1",
            "kind": "CatalogSource",
            "metadata": {"name": CATALOG_SOURCE, "namespace": CATALOG_NAMESPACE},
            "spec": {"sourceType": "grpc", "address": address, "displayName": "NeuralLog (local)"},
        });
        sources
            .patch(CATALOG_SOURCE, &PatchParams::apply("testenv").force(), &Patch::Apply(&source))
            .await
            .context("cannot apply the CatalogSource")?;
        self.wait(&format!("the CatalogSource to connect to {address}"), async || {
            let source = json_of(&sources.get(CATALOG_SOURCE).await?);
            Ok((text(&source, "/status/connectionState/address") == address
                && text(&source, "/status/connectionState/lastObservedState") == "READY")
                .then_some(()))
        })
        .await
    }

    /// Serves `entries` from a new `opm serve` and points the CatalogSource at it.
    pub async fn replace_catalog(&mut self, entries: &[Entry]) -> anyhow::Result<()> {
        let dir = self.dir.join("catalog-2");
        let catalog = CatalogServer::serve(&compose_catalog(&dir, entries)?, &self.dir).await?;
        self.catalog_source_at(&catalog.address()).await?;
        self.catalog = catalog;
        Ok(())
    }

    /// The install namespace, an AllNamespaces OperatorGroup and a Subscription to the channel.
    pub async fn subscribe(&self, starting_csv: Option<&str>, approval: &str) -> anyhow::Result<()> {
        self.subscribe_with_env(starting_csv, approval, &[]).await
    }

    /// [`subscribe`](Self::subscribe), with environment variables for the operator's container in
    /// the Subscription's `spec.config.env`: how an OLM install configures the operator.
    pub async fn subscribe_with_env(
        &self,
        starting_csv: Option<&str>,
        approval: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(INSTALL_NAMESPACE.into()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &namespace).await?;
        let group: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
            "metadata": {"name": "global", "namespace": INSTALL_NAMESPACE}, "spec": {},
        }))?;
        self.olm_api("OperatorGroup", "operatorgroups").create(&PostParams::default(), &group).await?;
        let mut spec = json!({
            "name": PACKAGE, "channel": CHANNEL, "source": CATALOG_SOURCE,
            "sourceNamespace": CATALOG_NAMESPACE, "installPlanApproval": approval,
        });
        if let Some(csv) = starting_csv {
            spec["startingCSV"] = json!(csv);
        }
        if !env.is_empty() {
            let env: Vec<Value> = env.iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
            spec["config"] = json!({ "env": env });
        }
        let subscription: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
            "metadata": {"name": PACKAGE, "namespace": INSTALL_NAMESPACE}, "spec": spec,
        }))?;
        self.olm_api("Subscription", "subscriptions").create(&PostParams::default(), &subscription).await?;
        Ok(())
    }

    pub fn olm_api(&self, kind: &str, plural: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), INSTALL_NAMESPACE, &olm_resource(kind, plural))
    }

    pub fn tenants(&self, version: &str) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &tenant_resource(version))
    }

    /// A client with the identity of the installed operator: the ServiceAccount its Deployment
    /// names, with a token of its own.
    pub async fn operator_client(&self) -> anyhow::Result<kube::Client> {
        let deployment = Api::<Deployment>::namespaced(self.client.clone(), INSTALL_NAMESPACE).get(PACKAGE).await?;
        let service_account = deployment
            .spec
            .and_then(|spec| spec.template.spec)
            .and_then(|pod| pod.service_account_name)
            .context("the operator Deployment names no ServiceAccount")?;
        let path = self.dir.join("operator-identity.kubeconfig");
        let kubeconfig = self.cluster.service_account_kubeconfig(INSTALL_NAMESPACE, &service_account, &path).await?;
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Waits for the InstallPlan that installs `csv` to ask for approval, approves it and returns
    /// its name.
    pub async fn approve(&self, csv: &str) -> anyhow::Result<String> {
        let plans = self.olm_api("InstallPlan", "installplans");
        let plan = self
            .wait(&format!("the InstallPlan of {csv} to require approval"), async || {
                Ok(plans.list(&ListParams::default()).await?.items.into_iter().find(|plan| {
                    let plan = json_of(plan);
                    text(&plan, "/status/phase") == "RequiresApproval"
                        && plan["spec"]["clusterServiceVersionNames"]
                            .as_array()
                            .is_some_and(|names| names.contains(&json!(csv)))
                }))
            })
            .await?;
        let name = plan.name_any();
        plans.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"approved": true}}))).await?;
        Ok(name)
    }

    /// Creates `object` through `api`, retrying what fails for a while: right after an install
    /// OLM may put the bundle's conversion back into the CRD until its next check of the CSV
    /// (see [`Env::wait_installed`]), and a client meets that as failed requests, never as wrong
    /// data. An object that exists already counts as created (an earlier attempt did it).
    pub async fn create(&self, api: &Api<DynamicObject>, object: &DynamicObject) -> anyhow::Result<()> {
        let name = object.name_any();
        self.wait(&format!("tenant {name} to be created"), async || {
            match api.create(&PostParams::default(), object).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Some(())),
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    /// The InstallPlans that list `csv`, as JSON.
    pub async fn plans_of(&self, csv: &str) -> anyhow::Result<Vec<Value>> {
        let plans = self.olm_api("InstallPlan", "installplans").list(&ListParams::default()).await?;
        Ok(plans
            .items
            .iter()
            .map(json_of)
            .filter(|plan| {
                plan["spec"]["clusterServiceVersionNames"].as_array().is_some_and(|n| n.contains(&json!(csv)))
            })
            .collect())
    }

    /// Waits until CSV `csv` is `Succeeded` and the operator's Deployment is available with its
    /// template: OLM has rolled it, so this is when a pod of the new version would start.
    pub async fn wait_installed(&self, csv: &str) -> anyhow::Result<()> {
        let csvs = self.olm_api("ClusterServiceVersion", "clusterserviceversions");
        self.wait(&format!("CSV {csv} to succeed"), async || {
            let found = csvs.get_opt(csv).await?.map(|c| json_of(&c));
            Ok(found.filter(|c| text(c, "/status/phase") == "Succeeded").map(drop))
        })
        .await?;
        let deployments = Api::<Deployment>::namespaced(self.client.clone(), INSTALL_NAMESPACE);
        self.wait(&format!("the Deployment of {csv} to be available"), async || {
            let deployment = deployments.get(PACKAGE).await?;
            let owned_by_csv = deployment.labels().get("olm.owner").is_some_and(|owner| owner == csv);
            let status = deployment.status.unwrap_or_default();
            let rolled = status.observed_generation == deployment.metadata.generation
                && status.updated_replicas == status.replicas
                && status.available_replicas == status.replicas;
            Ok((owned_by_csv && rolled).then_some(()))
        })
        .await
    }

    /// Waits until every InstallPlan of `csv` is complete and, when the CSV declares a conversion
    /// webhook, the CRD converts through the Service OLM made for it, with OLM's CA. OLM checks the
    /// latter when the CSV turns `Succeeded` but not after: an InstallPlan that runs its CRD step
    /// again (after a conflict on its own status) puts the bundle's `spec.conversion` back, and OLM
    /// repairs it on its next check of the CSV.
    pub async fn wait_settled(&self, csv: &str) -> anyhow::Result<()> {
        self.wait(&format!("the InstallPlans of {csv} to complete"), async || {
            let plans = self.plans_of(csv).await?;
            Ok((!plans.is_empty() && plans.iter().all(|plan| text(plan, "/status/phase") == "Complete")).then_some(()))
        })
        .await?;
        if self.conversion_webhook(csv).await?.is_some() {
            let crds = Api::<CustomResourceDefinition>::all(self.client.clone());
            self.wait("the CRD to convert through OLM's webhook Service with its CA", async || {
                let crd = json_of(&crds.get(CRD).await?);
                let config = &crd["spec"]["conversion"]["webhook"]["clientConfig"];
                Ok((text(&crd, "/spec/conversion/strategy") == "Webhook"
                    && text(config, "/service/name") == format!("{PACKAGE}-service")
                    && text(config, "/service/namespace") == INSTALL_NAMESPACE
                    && !text(config, "/caBundle").is_empty())
                .then_some(()))
            })
            .await?;
        }
        Ok(())
    }

    /// The Service OLM makes for `csv`'s conversion webhook (`<deployment>-service` in the install
    /// namespace) and its port, when the CSV declares one.
    async fn conversion_webhook(&self, csv: &str) -> anyhow::Result<Option<(String, u16)>> {
        let csv = json_of(&self.olm_api("ClusterServiceVersion", "clusterserviceversions").get(csv).await?);
        let hooks = csv["spec"]["webhookdefinitions"].as_array().cloned().unwrap_or_default();
        let Some(hook) = hooks.iter().find(|hook| hook["type"] == "ConversionWebhook") else { return Ok(None) };
        let port = u16::try_from(hook["containerPort"].as_u64().unwrap_or(443))?;
        Ok(Some((format!("{}-service", text(hook, "/deploymentName").replace('.', "-")), port)))
    }

    /// Starts `binary` as OLM's Deployment runs it now: its container's arguments and environment
    /// (the downward API from its newest pod), as its ServiceAccount; on loopback ports of its own,
    /// its traces to Jaeger. When the CRD converts through a webhook Service, the operator serves
    /// the certificate OLM issued for that Service, and the API server's calls to the Service reach
    /// it. Returns once it reports ready.
    pub async fn start_operator(&self, name: &str, binary: &Path) -> anyhow::Result<Option<WebhookRoute>> {
        let deployment = Api::<Deployment>::namespaced(self.client.clone(), INSTALL_NAMESPACE).get(PACKAGE).await?;
        let template = deployment.spec.map(|spec| spec.template).unwrap_or_default();
        let pod_spec = template.spec.unwrap_or_default();
        let container = pod_spec.containers.first().context("the operator Deployment has no container")?;
        let service_account =
            pod_spec.service_account_name.clone().context("the operator Deployment names no ServiceAccount")?;
        let pods = Api::<Pod>::namespaced(self.client.clone(), INSTALL_NAMESPACE)
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={PACKAGE}")))
            .await?;
        let pod = pods
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .max_by_key(|pod| pod.metadata.creation_timestamp.clone())
            .map(json_of)
            .context("the operator Deployment has no pod")?;

        let mut command = Command::new(binary);
        command.args(container.args.iter().flatten());
        command.env_remove("KUBECONFIG");
        for variable in container.env.iter().flatten() {
            let value = match variable.value_from.as_ref().and_then(|from| from.field_ref.as_ref()) {
                Some(field) => text(&pod, &format!("/{}", field.field_path.replace('.', "/"))).to_owned(),
                None => variable.value.clone().unwrap_or_default(),
            };
            command.env(&variable.name, value);
        }
        let kubeconfig = self
            .cluster
            .service_account_kubeconfig(
                INSTALL_NAMESPACE,
                &service_account,
                &self.dir.join(format!("{name}.kubeconfig")),
            )
            .await?;
        let admin = SocketAddr::from(([127, 0, 0, 1], crate::free_port()?));
        command
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("TENANT_OPERATOR_ADMIN_ADDRESS", admin.to_string())
            // Its metrics in the clear on that port, for the test to read (releases before 0.3.0
            // serve them there anyway); tests/integration/metrics.rs proves the secure server.
            .env("TENANT_OPERATOR_METRICS_INSECURE", "true")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", self.jaeger.otlp_grpc_endpoint());

        let owner = deployment.metadata.labels.as_ref().and_then(|l| l.get("olm.owner")).cloned().unwrap_or_default();
        let route = match self.conversion_webhook(&owner).await? {
            Some((service, port)) => {
                let namespace = INSTALL_NAMESPACE;
                let certs = self.dir.join(format!("{name}-certs"));
                std::fs::create_dir_all(&certs)?;
                let secret_name = format!("{service}-cert");
                let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
                    .get(&secret_name)
                    .await
                    .with_context(|| format!("OLM's serving certificate Secret {namespace}/{secret_name}"))?;
                for key in ["tls.crt", "tls.key"] {
                    let value = secret
                        .data
                        .as_ref()
                        .and_then(|data| data.get(key))
                        .with_context(|| format!("Secret {secret_name} has no {key}"))?;
                    std::fs::write(certs.join(key), &value.0)?;
                }
                let listen = SocketAddr::from(([127, 0, 0, 1], crate::free_port()?));
                command
                    .env("TENANT_OPERATOR_WEBHOOK_ADDRESS", listen.to_string())
                    .env("TENANT_OPERATOR_WEBHOOK_CERT_DIR", &certs);
                let service = self.cluster.forward_service(namespace, &service, port, listen).await?;
                Some(WebhookRoute { service })
            }
            None => {
                command.env("TENANT_OPERATOR_WEBHOOK_ADDRESS", "127.0.0.1:0");
                None
            }
        };

        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        crate::dies_with_parent(&mut command);
        std::fs::write(
            self.dir.join(format!("{name}.cmdline")),
            format!("{command:?}\nidentity: system:serviceaccount:{INSTALL_NAMESPACE}:{service_account}\n"),
        )?;
        let child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        lock(&self.operators).push(OperatorProcess { name: name.to_owned(), child, log, admin });
        self.wait(&format!("operator {name} to be ready (/readyz)"), async || {
            Ok(http_get(admin, "/readyz").await.ok().filter(|(status, _)| *status == 200).map(drop))
        })
        .await?;
        Ok(route)
    }

    /// Stops operator `name` as the kubelet would (SIGTERM, then SIGKILL after the grace period).
    pub async fn stop_operator(&self, name: &str) -> anyhow::Result<()> {
        let Some(mut operator) = ({
            let mut operators = lock(&self.operators);
            operators.iter().position(|o| o.name == name).map(|i| operators.remove(i))
        }) else {
            bail!("no operator {name} is running");
        };
        stop(&mut operator.child, Duration::from_secs(30)).await
    }

    /// GET `path` on operator `name`'s admin server: its metrics, its health.
    pub async fn admin_get(&self, name: &str, path: &str) -> anyhow::Result<String> {
        let admin = lock(&self.operators)
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.admin)
            .with_context(|| format!("no operator {name}"))?;
        let (status, body) = http_get(admin, path).await?;
        if status != 200 {
            bail!("GET {path} on operator {name}: {status}");
        }
        Ok(body)
    }

    /// Polls `check` until it yields a value, for at most [`DEADLINE`]. An error counts as "not
    /// yet" (an API call failing in an upgrade's conversion window is part of the story) and is
    /// reported if the deadline passes; an operator that exits fails the wait at once.
    pub async fn wait<T>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + DEADLINE;
        let mut last_error = None;
        loop {
            match check().await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(error) => last_error = Some(error),
            }
            for operator in lock(&self.operators).iter_mut() {
                if let Ok(Some(status)) = operator.child.try_wait() {
                    bail!(
                        "operator {} exited with {status} while waiting for {what}; its log: {}",
                        operator.name,
                        operator.log.display()
                    );
                }
            }
            if Instant::now() >= deadline {
                return Err(match last_error {
                    Some(error) => error.context(format!("timed out after {DEADLINE:?} waiting for {what}")),
                    None => anyhow::anyhow!("timed out after {DEADLINE:?} waiting for {what}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for operator in lock(&self.operators).iter_mut() {
            let _ = operator.child.kill();
            let _ = operator.child.wait();
        }
        self.timeline.print(&self.name, self.succeeded, &self.dir);
        self.logs.remove = self.succeeded;
    }
}

/// SIGTERM, then SIGKILL once `grace` has passed.
async fn stop(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    let pid = i32::try_from(child.id())?;
    Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let deadline = Instant::now() + grace;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A plain HTTP/1.0 GET on loopback: status code and body.
pub async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status =
        response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("no HTTP status line")?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The value of a counter (summed over its labels) in a Prometheus text exposition.
pub fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
