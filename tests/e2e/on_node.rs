//! What the scenarios on a real node share: tenants with their pods' images, waiting for them to
//! run, their server's records, `kubectl exec`, polls with a deadline, and running a scenario on a
//! fresh node with its timeline and, after a failure, its logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};
use testenv::node::{NodeOptions, RealNode};
use testenv::timeline::Timeline;

/// Where the operator runs, whether installed with kustomize or by OLM.
pub(crate) const OPERATOR_NAMESPACE: &str = "neurallog-system";
/// The label of the operator's pods, in `config/manager` and the CSV alike.
pub(crate) const OPERATOR_LABEL: &str = "app.kubernetes.io/name=neurallog-tenant-operator";
/// How long any one wait may take.
const DEADLINE: Duration = Duration::from_secs(180);

/// The images of a tenant's pods, pushed into the node's registry and named by digest.
#[derive(Clone)]
pub(crate) struct TenantImages {
    pub(crate) server: String,
    pub(crate) redis: String,
    pub(crate) registry: String,
}

impl TenantImages {
    pub(crate) fn push(node: &RealNode) -> anyhow::Result<Self> {
        Ok(Self {
            server: node.push_image("server")?,
            redis: node.push_image("redis")?,
            registry: node.push_image("registry")?,
        })
    }
}

pub(crate) fn tenant_v1(name: &str, images: &TenantImages) -> Value {
    json!({
        "apiVersion": "neurallog.io/v1", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "displayName": name,
            "deletionPolicy": "Retain",
            "server": {"replicas": 1, "image": images.server},
            "redis": {"replicas": 1, "image": images.redis, "storage": "1Gi"},
            "registry": {"replicas": 1, "image": images.registry},
        },
    })
}

pub(crate) fn tenant_v2(name: &str, deletion: &str, images: &TenantImages) -> Value {
    json!({
        "apiVersion": "neurallog.io/v2", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "displayName": name,
            "deletionPolicy": deletion,
            "quota": {"requests": {"cpu": "1", "memory": "2Gi", "storage": "5Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
            "server": {"replicas": 1, "image": images.server},
            "redis": {"replicas": 1, "image": images.redis, "storage": "1Gi"},
            "registry": {"replicas": 1, "image": images.registry},
        },
    })
}

pub(crate) fn tenants(client: &Client, version: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", version, "Tenant"));
    Api::all_with(client.clone(), &resource)
}

/// Creates a tenant. Until kube-proxy has programmed the webhook Service's endpoints, the API
/// server's call to the conversion webhook is refused: a `v1` create is retried until then, as a
/// client would.
pub(crate) async fn create_tenant(client: &Client, version: &str, tenant: &Value) -> anyhow::Result<()> {
    let api = tenants(client, version);
    let object: DynamicObject = serde_json::from_value(tenant.clone())?;
    let name = object.metadata.name.clone().unwrap_or_default();
    wait(&format!("the API server to take tenant {name} through {version}"), async || {
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(Some(Ok(()))),
            Err(kube::Error::Api(status)) if status.message.contains("conversion webhook") => {
                Err(anyhow::anyhow!("{}", status.message))
            }
            Err(error) => Ok(Some(Err(anyhow::Error::from(error).context(format!("cannot create tenant {name}"))))),
        }
    })
    .await?
}

pub(crate) async fn delete_tenant(client: &Client, name: &str) -> anyhow::Result<()> {
    let api = tenants(client, "v2");
    api.delete(name, &DeleteParams::default()).await?;
    wait(&format!("tenant {name} to be gone"), async || Ok(api.get_opt(name).await?.is_none().then_some(()))).await
}

/// Waits for the tenant's phase `Running` and every pod in its namespace Ready (but finished ones).
pub(crate) async fn wait_running(client: &Client, name: &str) -> anyhow::Result<()> {
    wait_running_through(client, "v2", name).await
}

/// [`wait_running`], the tenant read through API `version` (a release that serves only `v1`).
pub(crate) async fn wait_running_through(client: &Client, version: &str, name: &str) -> anyhow::Result<()> {
    let api = tenants(client, version);
    let pods = Api::<Pod>::namespaced(client.clone(), &format!("tenant-{name}"));
    wait(&format!("tenant {name} Running with every pod Ready"), async || {
        let tenant = api.get(name).await?;
        if tenant.data["status"]["phase"] != "Running" {
            return Ok(None);
        }
        let list = pods.list(&ListParams::default()).await?;
        // A backup Job's pod that finished is not one of the tenant's workloads.
        let running: Vec<&Pod> = list
            .items
            .iter()
            .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded"))
            .collect();
        Ok((running.len() >= 3 && running.iter().all(|pod| is_ready(pod))).then_some(()))
    })
    .await
}

pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The server's Service address, reached from the host through kube-proxy.
pub(crate) async fn server_address(client: &Client, tenant: &str) -> anyhow::Result<SocketAddr> {
    let service = Api::<Service>::namespaced(client.clone(), &format!("tenant-{tenant}"))
        .get(&format!("{tenant}-server"))
        .await?;
    let ip = service.spec.and_then(|s| s.cluster_ip).context("the server Service has no ClusterIP")?;
    Ok(SocketAddr::new(ip.parse()?, 3030))
}

pub(crate) async fn write_record(client: &Client, tenant: &str, log: &str, record: &str) -> anyhow::Result<()> {
    let url = format!("http://{}/logs/{log}", server_address(client, tenant).await?);
    // Until kube-proxy has programmed the Service's endpoints, the connection is refused.
    let response = wait(&format!("POST {url}"), async || {
        Ok(Some(reqwest::Client::new().post(&url).body(record.to_owned()).send().await?))
    })
    .await?;
    ensure!(response.status().as_u16() == 201, "POST {url}: {} {}", response.status(), response.text().await?);
    Ok(())
}

pub(crate) async fn read_records(client: &Client, tenant: &str, log: &str) -> anyhow::Result<Vec<String>> {
    let url = format!("http://{}/logs/{log}", server_address(client, tenant).await?);
    wait(&format!("GET {url}"), async || {
        let response = reqwest::Client::new().get(&url).send().await?;
        Ok(if response.status().is_success() { Some(response.json::<Vec<String>>().await?) } else { None })
    })
    .await
}

/// `kubectl exec` in the pod's first container; its standard output and error together.
pub(crate) fn exec(node: &RealNode, namespace: &str, pod: &str, command: &[&str]) -> anyhow::Result<String> {
    let output = node.kubectl_command(&["-n", namespace, "exec", pod, "--"]).args(command).output()?;
    Ok(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// Polls `check` until it yields a value, for at most [`DEADLINE`]; an error counts as "not yet"
/// and is reported if the deadline passes.
pub(crate) async fn wait<T>(what: &str, check: impl AsyncFnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    wait_within(what, DEADLINE, check).await
}

/// [`wait`] for at most `limit`, for what takes longer by design (a rollout across a fleet).
pub(crate) async fn wait_within<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(error) => error.context(format!("timed out after {limit:?} waiting for {what}")),
                None => anyhow::anyhow!("timed out after {limit:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After a failure: every operator pod's log (the current and the previous container's) next to the
/// node's.
pub(crate) fn keep_operator_logs(node: &RealNode, logs: &Path) {
    let mut outputs = BTreeMap::new();
    for previous in [false, true] {
        let mut args = vec!["-n", OPERATOR_NAMESPACE, "logs", "-l", OPERATOR_LABEL, "--prefix", "--tail=-1"];
        if previous {
            args.push("--previous");
        }
        if let Ok(output) = node.kubectl_command(&args).output() {
            outputs.insert(if previous { "operator-previous.log" } else { "operator.log" }, output.stdout);
        }
    }
    for (name, content) in outputs {
        let _ = std::fs::write(logs.join(name), content);
    }
}

/// The operator's Ready pods, those being deleted left out.
pub(crate) async fn ready_operator_pods(client: &Client) -> anyhow::Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = pods.list(&ListParams::default().labels(OPERATOR_LABEL)).await?;
    Ok(list.items.into_iter().filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod)).collect())
}

/// The restarts of every container of the operator's pods, summed.
pub(crate) async fn operator_restarts(client: &Client) -> anyhow::Result<i32> {
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = pods.list(&ListParams::default().labels(OPERATOR_LABEL)).await?;
    Ok(list
        .items
        .iter()
        .flat_map(|pod| pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .map(|status| status.restart_count)
        .sum())
}

/// Runs `scenario` on a fresh node (`volumes` local volumes, NetworkPolicies `enforced` or not) with
/// its logs in `.local/e2e/<name>`, prints its timeline, and after a failure keeps the operator's
/// logs and what `keep_more` keeps (the enforcer's log is the node's `kube-router.log`).
pub(crate) async fn on_a_node(
    name: &str,
    title: &str,
    volumes: usize,
    enforced: bool,
    keep_more: fn(&RealNode, &Path),
    scenario: impl AsyncFnOnce(&RealNode, &mut Timeline, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // reqwest (the server's HTTP) is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs = crate::logs(name);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let mut timeline = Timeline::default();
    let enforcer = if enforced { ", kube-router enforcing NetworkPolicies" } else { "" };
    timeline.begin("node", &format!("control plane, containerd, kubelet, kube-proxy, registry, cluster DNS{enforcer}"));
    let started = Instant::now();
    let options = NodeOptions { volumes, dir: Some(logs.join("node")), network_policies: enforced };
    let node = RealNode::start(options).await?;
    timeline.done(format!("Ready in {:.1}s", started.elapsed().as_secs_f64()));
    let outcome = scenario(&node, &mut timeline, &logs).await;
    if outcome.is_err() {
        keep_operator_logs(&node, &logs);
        keep_more(&node, &logs);
    }
    timeline.print(title, outcome.is_ok(), &logs);
    drop(node);
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&logs);
    }
    outcome
}
