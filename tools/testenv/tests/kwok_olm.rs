//! The end-to-end environment on real components: a kwokctl cluster (fake node Ready, a volume
//! Available, etcd readable, the API server's webhook calls through the egress proxy, a
//! ServiceAccount's kubeconfig), OLM's operators, and `opm serve` of the repository's catalog,
//! which a CatalogSource connects to. Once everything is dropped, no process it started is left.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, PersistentVolume, Service, ServiceAccount};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use testenv::kwok::{KwokCluster, NODE};
use testenv::olm::{CatalogServer, Olm, render_bundle};

const NAMESPACE: &str = "kwok-olm";
/// How long each wait of the test may take.
const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn a_kwok_cluster_runs_olm_with_a_served_catalog_and_leaves_nothing_behind() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("kwok-olm-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let result = run(temp.path()).await;
    if result.is_err() {
        eprintln!("kwok_olm: logs kept in {}", temp.keep().display());
    }
    result
}

async fn run(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let step = |what: &str| eprintln!("kwok_olm: {:>6.1}s  {what}", started.elapsed().as_secs_f64());

    let cluster = KwokCluster::start(&dir.join("cluster"), 1).await?;
    step("cluster up, node Ready, volume Available");
    let name = cluster.name().to_owned();
    let components = processes_naming(&format!("/clusters/{name}/"));
    ensure!(components.len() == 5, "expected kwokctl's 5 components of {name}, found {components:#?}");
    let client = cluster.admin_client().await?;
    let node = Api::<Node>::all(client.clone()).get(NODE).await?;
    ensure!(node.spec.and_then(|spec| spec.pod_cidr).as_deref() == Some("10.244.0.0/22"));
    let volume = Api::<PersistentVolume>::all(client.clone()).get("testenv-volume-0").await?;
    ensure!(volume.status.and_then(|status| status.phase).as_deref() == Some("Available"));

    let stored = cluster.etcd_get("/registry/namespaces/default").await?.context("etcd has no namespace default")?;
    ensure!(stored.windows(b"default".len()).any(|window| window == b"default"), "etcd's value: {stored:?}");
    ensure!(cluster.etcd_get("/registry/namespaces/no-such-namespace").await?.is_none());
    step("etcd read");

    // A Service-referenced webhook: the API server dials the Service's ClusterIP through the proxy,
    // which forwards it to a listener here (that speaks no TLS: the call fails and is ignored).
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE, "labels": {"testenv-egress": "on"}}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "webhook"},
        "spec": {"ports": [{"port": 443, "targetPort": 9443}]},
    }))?;
    let service =
        Api::<Service>::namespaced(client.clone(), NAMESPACE).create(&PostParams::default(), &service).await?;
    let cluster_ip: IpAddr = service.spec.and_then(|spec| spec.cluster_ip).context("no cluster IP")?.parse()?;
    ensure!(
        matches!(cluster_ip, IpAddr::V4(ip) if ip.octets()[..3] == [10, 0, 0]),
        "{cluster_ip} is not in kwokctl's service range"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let webhook = listener.local_addr()?;
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let forwarded = cluster.forward_service(NAMESPACE, "webhook", 443, webhook).await?;
    ensure!(forwarded == SocketAddr::new(cluster_ip, 443), "forward_service returned {forwarded}");
    ensure!(cluster.forward_service(NAMESPACE, "webhook", 80, webhook).await.is_err(), "the Service has no port 80");
    let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "testenv-kwok-olm"},
        "webhooks": [{
            "name": "egress.testenv.neurallog.io",
            "clientConfig": {
                "service": {"namespace": NAMESPACE, "name": "webhook", "port": 443, "path": "/validate"},
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"testenv-egress": "on"}},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    }))?;
    let configurations = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    configurations.create(&PostParams::default(), &configuration).await?;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + TIMEOUT;
    // The API server learns of the configuration through its own watch: create until it calls.
    for attempt in 0.. {
        if cluster.connections(forwarded) > 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "the API server never dialed {forwarded} through the egress proxy");
        let probe: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("probe-{attempt}")}}))?;
        config_maps.create(&PostParams::default(), &probe).await?;
    }
    configurations.delete("testenv-kwok-olm", &DeleteParams::default()).await?;
    step("webhook call through the egress proxy");

    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "operator"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE).create(&PostParams::default(), &account).await?;
    let path = cluster.service_account_kubeconfig(NAMESPACE, "operator", &dir.join("operator.kubeconfig")).await?;
    let config =
        kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(&path)?, &KubeConfigOptions::default()).await?;
    let review = Api::<SelfSubjectReview>::all(kube::Client::try_from(config)?)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review.status.and_then(|status| status.user_info?.username);
    ensure!(user.as_deref() == Some("system:serviceaccount:kwok-olm:operator"), "the kubeconfig is of {user:?}");
    step("ServiceAccount kubeconfig");

    let olm = Olm::start(&cluster, &dir.join("olm"), Duration::from_secs(60), Duration::from_secs(300)).await?;
    step("OLM started");
    let root = testenv::repo_root();
    let catalog = dir.join("catalog");
    copy_dir(&root.join("catalog"), &catalog)?;
    let server = CatalogServer::serve(&catalog, &dir.join("opm")).await?;
    step("catalog served");
    let source: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "CatalogSource",
        "metadata": {"name": "neurallog", "namespace": "olm"},
        "spec": {"sourceType": "grpc", "address": server.address(), "displayName": "NeuralLog (kwok_olm)"},
    }))?;
    let resource = ApiResource {
        group: "operators.coreos.com".into(),
        version: "v1alpha1".into(),
        api_version: "operators.coreos.com/v1alpha1".into(),
        kind: "CatalogSource".into(),
        plural: "catalogsources".into(),
    };
    let sources = Api::<DynamicObject>::namespaced_with(client.clone(), "olm", &resource);
    sources.create(&PostParams::default(), &source).await?;
    let ready = |source: Option<&DynamicObject>| {
        source.is_some_and(|source| source.data["status"]["connectionState"]["lastObservedState"] == "READY")
    };
    tokio::time::timeout(TIMEOUT, kube::runtime::wait::await_condition(sources, "neurallog", ready))
        .await
        .context("the CatalogSource did not become READY")??;
    step("CatalogSource READY");

    let rendered = dir.join("head.yaml");
    render_bundle(&root.join("bundle"), &rendered)?;
    let rendered = fs::read_to_string(&rendered)?;
    ensure!(rendered.contains("schema: olm.bundle") && rendered.contains("package: neurallog-tenant-operator"));
    step("bundle rendered");

    drop(server);
    drop(olm);
    drop(cluster);
    step("all dropped");
    let dir_text = dir.display().to_string();
    let left: Vec<String> = processes_naming(&name).into_iter().chain(processes_naming(&dir_text)).collect();
    ensure!(left.is_empty(), "left running: {left:#?}");
    Ok(())
}

/// Every other process whose command line or environment contains `needle`: `pid: command line`.
fn processes_naming(needle: &str) -> Vec<String> {
    let own = std::process::id().to_string();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let contains = |bytes: &[u8]| bytes.windows(needle.len()).any(|window| window == needle.as_bytes());
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            if pid == own || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
            (contains(&cmdline) || contains(&environ))
                .then(|| format!("{pid}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// Copies the directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
