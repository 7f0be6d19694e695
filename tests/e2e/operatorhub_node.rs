//! OperatorHub's path on a real node: OLM runs in the cluster from its image, serves a catalog
//! image in a pod of its own (a CatalogSource of type `grpc` with `image:`), unpacks the bundle
//! image in its own Job, and deploys the operator from the image the CSV names, with OLM's serving
//! certificate behind OLM's Service; the operator's pods stay up, and tenants created through `v1`
//! and `v2` run for real.
//!
//! The catalog is made as OperatorHub's pipeline makes one: rendered from the bundle image in the
//! node's registry, so it holds the bundle's image and CSV metadata, not its manifests. The
//! operator's image is pulled by the name the CSV gives it (`neurallog/tenant-operator:<version>`):
//! the node's containerd takes every registry's images from the local one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::json;
use testenv::node::{NodeOptions, RealNode};
use testenv::olm::catalog_image::{self, ChannelEntry};
use testenv::olm::in_cluster::{self, Settings};
use testenv::operatorhub::{CRD, head_csv};
use testenv::timeline::Timeline;

use crate::on_node::{
    OPERATOR_LABEL, OPERATOR_NAMESPACE, TenantImages, create_tenant, exec, keep_operator_logs, read_records, tenant_v1,
    tenant_v2, wait, wait_running, write_record,
};

const CATALOG_SOURCE: &str = "neurallog";
const CHANNEL: &str = "local";
const SUBSCRIPTION: &str = "neurallog-tenant-operator";
/// The operator's Deployment, as the CSV names it.
const DEPLOYMENT: &str = "neurallog-tenant-operator";
/// How long OperatorHub's CI wants the operator's pod up without a restart: more than this.
const STABLE_FOR: Duration = Duration::from_secs(60);
/// How often OLM re-checks every CSV, and how long it retries an InstallPlan's failing steps.
const OLM_WAKEUP: Duration = Duration::from_secs(10);
const INSTALL_PLAN_RETRY: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn olm_installs_the_operator_from_catalog_and_bundle_images_on_a_real_node() -> anyhow::Result<()> {
    // reqwest (the server's HTTP) is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs = crate::logs("operatorhub-node");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let mut timeline = Timeline::default();
    timeline.begin("node", "control plane, containerd, kubelet, kube-proxy, registry, cluster DNS");
    let started = Instant::now();
    let node = RealNode::start(NodeOptions { volumes: 4, dir: Some(logs.join("node")) }).await?;
    timeline.done(format!("Ready in {:.1}s", started.elapsed().as_secs_f64()));
    let outcome = install(&node, &mut timeline, &logs).await;
    if outcome.is_err() {
        keep_operator_logs(&node, &logs);
        keep_olm_logs(&node, &logs);
    }
    timeline.print("e2e operatorhub on a real node", outcome.is_ok(), &logs);
    drop(node);
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&logs);
    }
    outcome
}

async fn install(node: &RealNode, timeline: &mut Timeline, logs: &Path) -> anyhow::Result<()> {
    let client = node.admin_client().await?;
    let csv = head_csv()?;

    timeline.begin("images", "push; the catalog rendered from the bundle image, built and pushed");
    // Pushed under the tag the CSV names; pulled through the registry mirror.
    let operator_image = node.push_image("operator")?;
    let bundle = node.push_image("bundle")?;
    let settings = Settings {
        olm_image: node.push_image("olm")?,
        opm_image: node.push_image("base-opm")?,
        wakeup: OLM_WAKEUP,
        install_plan_retry: INSTALL_PLAN_RETRY,
    };
    let entries = [ChannelEntry { bundle: bundle.clone(), replaces: None, skip_range: None }];
    let catalog = catalog_image::build(node, &logs.join("catalog"), "install", CHANNEL, &entries)?;
    let images = TenantImages::push(node)?;
    timeline.done(format!("catalog {catalog}"));

    timeline.begin("olm", "OLM's olm and catalog operators as Deployments from OLM's image");
    in_cluster::install(node, &settings).await?;
    timeline.done("both rolled out");

    timeline.begin("catalog", "a grpc CatalogSource with the catalog image: OLM's catalog pod serves it");
    node.apply_json(&json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "CatalogSource",
        "metadata": {"name": CATALOG_SOURCE, "namespace": testenv::olm::NAMESPACE},
        "spec": {
            "sourceType": "grpc",
            "image": catalog,
            "displayName": "NeuralLog (this checkout)",
            "publisher": "NeuralLog",
            "grpcPodConfig": {"securityContextConfig": "restricted"},
        },
    }))?;
    let sources = olm_api(&client, "v1alpha1", "CatalogSource", Some(testenv::olm::NAMESPACE));
    wait("the CatalogSource READY", async || {
        let source = sources.get(CATALOG_SOURCE).await?;
        Ok((source.data["status"]["connectionState"]["lastObservedState"] == "READY").then_some(()))
    })
    .await?;
    let catalog_pod = pod_with_image(&client, testenv::olm::NAMESPACE, &catalog).await?;
    timeline.done(format!("pod {catalog_pod} Ready from the catalog image"));

    timeline.begin("subscribe", "OperatorGroup and Subscription; OLM unpacks the bundle image in a Job");
    node.apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}))?;
    node.apply_json(&json!({
        "apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
        "metadata": {"name": "neurallog", "namespace": OPERATOR_NAMESPACE},
        "spec": {},
    }))?;
    node.apply_json(&json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "metadata": {"name": SUBSCRIPTION, "namespace": OPERATOR_NAMESPACE},
        "spec": {
            "channel": CHANNEL, "name": testenv::operatorhub::PACKAGE,
            "source": CATALOG_SOURCE, "sourceNamespace": testenv::olm::NAMESPACE,
            "installPlanApproval": "Automatic",
        },
    }))?;
    let csvs = olm_api(&client, "v1alpha1", "ClusterServiceVersion", Some(OPERATOR_NAMESPACE));
    wait(&format!("CSV {csv} Succeeded"), async || {
        let found = csvs.get_opt(&csv).await?;
        Ok(found.filter(|csv| csv.data["status"]["phase"] == "Succeeded").map(|_| ()))
    })
    .await?;
    let unpack = unpack_job(&client, &bundle).await?;
    timeline.done(format!("CSV {csv} Succeeded; bundle unpacked by Job {unpack}"));

    timeline.begin(
        "operator",
        "its pods from the CSV's image, OLM's serving certificate, the webhook behind OLM's Service",
    );
    node.wait_rollout(OPERATOR_NAMESPACE, &format!("deployment/{DEPLOYMENT}"))?;
    let ready_at = Instant::now();
    let pods = operator_pods(&client).await?;
    let digest =
        operator_image.split_once('@').map(|(_, digest)| digest).context("the operator image has no digest")?;
    for pod in &pods {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let status = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|s| s.first());
        let image_id = status.map(|s| s.image_id.as_str()).unwrap_or_default();
        ensure!(image_id.ends_with(digest), "operator pod {name} runs {image_id}, not the pushed {digest}");
        let secrets: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|spec| spec.volumes.iter().flatten())
            .filter_map(|volume| volume.secret.as_ref()?.secret_name.as_deref())
            .collect();
        ensure!(
            secrets.iter().any(|secret| secret.ends_with("-service-cert")),
            "operator pod {name} mounts no OLM serving certificate: {secrets:?}"
        );
    }
    let crd = Api::<CustomResourceDefinition>::all(client.clone()).get(CRD).await?;
    let webhook = crd.spec.conversion.as_ref().and_then(|c| c.webhook.as_ref()).and_then(|w| w.client_config.as_ref());
    let service = webhook.and_then(|c| c.service.as_ref()).context("the CRD converts through no Service")?;
    ensure!(
        service.namespace == OPERATOR_NAMESPACE && webhook.and_then(|c| c.ca_bundle.as_ref()).is_some(),
        "the CRD's conversion webhook is not OLM's: {webhook:?}"
    );
    timeline.done(format!("{} pods from {digest}; conversion through Service {}", pods.len(), service.name));

    timeline.begin("tenants", "one through v1 (converted behind OLM's Service), one through v2: every pod Ready");
    create_tenant(&client, "v1", &tenant_v1("alpha", &images)).await?;
    create_tenant(&client, "v2", &tenant_v2("beta", "Delete", &images)).await?;
    for name in ["alpha", "beta"] {
        wait_running(&client, name).await?;
    }
    let record = "installed by OLM";
    write_record(&client, "alpha", "olm", record).await?;
    let records = read_records(&client, "alpha", "olm").await?;
    ensure!(records.iter().any(|r| r == record), "alpha's server reads {records:?}");
    let stored = exec(node, "tenant-alpha", "alpha-redis-0", &["redis-cli", "lrange", "logs:alpha:olm", "0", "-1"])?;
    ensure!(stored.contains(record), "alpha's Redis holds {stored:?}");
    timeline.done("alpha and beta Running; a record through alpha's server is in its Redis");

    timeline.begin("stable", "the operator's pods up for more than 60 s without a restart");
    // A span of time is the requirement: the restarts are watched through it, not waited out blind.
    while ready_at.elapsed() <= STABLE_FOR {
        ensure!(restarts(&client).await? == 0, "an operator pod restarted");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    ensure!(restarts(&client).await? == 0, "an operator pod restarted");
    ensure!(operator_pods(&client).await?.len() == pods.len(), "an operator pod is no longer Ready");
    timeline.done(format!("0 restarts over {:.0}s", ready_at.elapsed().as_secs_f64()));
    Ok(())
}

/// An API of one of OLM's kinds, in a namespace or across all.
fn olm_api(client: &Client, version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("operators.coreos.com", version, kind));
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// The Ready pod of `namespace` running `image`.
async fn pod_with_image(client: &Client, namespace: &str, image: &str) -> anyhow::Result<String> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    wait(&format!("a Ready pod from {image} in {namespace}"), async || {
        Ok(pods.list(&ListParams::default()).await?.items.into_iter().find_map(|pod| {
            let runs = pod.spec.as_ref()?.containers.iter().any(|c| c.image.as_deref() == Some(image));
            (runs && is_ready(&pod)).then(|| pod.metadata.name.clone().unwrap_or_default())
        }))
    })
    .await
}

/// The Job OLM ran to unpack `bundle`: one of its containers runs the bundle image, and it
/// succeeded.
async fn unpack_job(client: &Client, bundle: &str) -> anyhow::Result<String> {
    let jobs = Api::<Job>::namespaced(client.clone(), testenv::olm::NAMESPACE);
    let list = jobs.list(&ListParams::default()).await?;
    let job = list
        .items
        .into_iter()
        .find(|job| {
            job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).is_some_and(|spec| {
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .any(|c| c.image.as_deref() == Some(bundle))
            })
        })
        .with_context(|| format!("no Job of OLM's ran the bundle image {bundle}"))?;
    let name = job.metadata.name.clone().unwrap_or_default();
    let succeeded = job.status.and_then(|s| s.succeeded).unwrap_or(0);
    ensure!(succeeded >= 1, "OLM's unpack Job {name} has not succeeded");
    Ok(name)
}

async fn operator_pods(client: &Client) -> anyhow::Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = pods.list(&ListParams::default().labels(OPERATOR_LABEL)).await?;
    Ok(list.items.into_iter().filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod)).collect())
}

async fn restarts(client: &Client) -> anyhow::Result<i32> {
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = pods.list(&ListParams::default().labels(OPERATOR_LABEL)).await?;
    Ok(list
        .items
        .iter()
        .flat_map(|pod| pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .map(|status| status.restart_count)
        .sum())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// After a failure: OLM's objects and its operators' logs next to the node's.
fn keep_olm_logs(node: &RealNode, logs: &Path) {
    let namespace = testenv::olm::NAMESPACE;
    let commands: [(&str, Vec<&str>); 3] = [
        ("olm-operator.log", vec!["-n", namespace, "logs", "deployment/olm-operator", "--tail=-1"]),
        ("catalog-operator.log", vec!["-n", namespace, "logs", "deployment/catalog-operator", "--tail=-1"]),
        (
            "olm-objects.yaml",
            vec![
                "get",
                "-A",
                "-o",
                "yaml",
                "catalogsources,subscriptions,installplans,clusterserviceversions,jobs,pods",
            ],
        ),
    ];
    for (file, args) in commands {
        if let Ok(output) = node.kubectl_command(&args).output() {
            let _ = std::fs::write(logs.join(file), [output.stdout, output.stderr].concat());
        }
    }
}
