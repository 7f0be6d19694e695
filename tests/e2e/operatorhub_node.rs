//! OperatorHub's path on a real node: OLM runs in the cluster from its image, serves a catalog
//! image in a pod of its own (a CatalogSource of type `grpc` with `image:`), unpacks the bundle
//! image in its own Job, and deploys the operator from the image the CSV names, with OLM's serving
//! certificate behind OLM's Service; the operator's pods stay up, tenants created through `v1`
//! and `v2` run for real, and a tenant's network isolation holds under kube-router's enforcement
//! (`isolation_node`). Then the upgrades through the Subscription, from 0.2.0 and from 0.1.0
//! (straight to this checkout through its `skipRange`): each release's own binary in an image, its
//! own bundle image. Tenants created under it with their images set keep their pods; tenants that
//! left the images to the old schema's defaults (`:latest`) move to this checkout's default
//! NeuralLog version through the rollout, the first alone; no tenant loses a record or a Secret.
//! OperatorHub.io's own upgrade test too: the latest release's bundle image through `operator-sdk
//! run bundle`, then this checkout's through `operator-sdk run bundle-upgrade`. And this checkout
//! upgraded to its next release (`tools/images.sh next`) with NetworkPolicies enforced: a backup
//! taken before the upgrade restores after it.
//!
//! The catalog is made as OperatorHub's pipeline makes one: rendered from the bundle images in the
//! node's registry, so it holds each bundle's image and CSV metadata, not its manifests; its
//! channel is the one `tools/release` computes once this checkout is released. The
//! operator's image is pulled by the name the CSV gives it (`neurallog/tenant-operator:<version>`):
//! the node's containerd takes every registry's images from the local one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use neurallog_tenant_operator::model::operand::{
    DEFAULT_REDIS_IMAGE, DEFAULT_VERSION, LEGACY_REDIS_IMAGE, LEGACY_REGISTRY_IMAGE, LEGACY_SERVER_IMAGE,
};
use serde_json::json;
use testenv::node::RealNode;
use testenv::node::config::NODE_IP;
use testenv::object_store::{ObjectStore, SECRET_KEY};
use testenv::olm::catalog_image::{self, ChannelEntry};
use testenv::olm::in_cluster::{self, Settings};
use testenv::olm::run_bundle;
use testenv::operatorhub::{CRD, PACKAGE, head_csv, released_csv};
use testenv::timeline::Timeline;

use crate::backup_node::{self, BUCKET};
use crate::isolation_node::Isolation;
use crate::on_node::{
    OPERATOR_LABEL, OPERATOR_NAMESPACE, TenantImages, create_tenant, delete_tenant, exec, is_ready, on_a_node,
    operator_restarts, read_records, ready_operator_pods, tenant_v1, tenant_v2, wait, wait_running,
    wait_running_through, write_record,
};
use crate::rollout_node::{Record, redis_image, wait_versions, watch_upgrades};

const CATALOG_SOURCE: &str = "neurallog";
const SUBSCRIPTION: &str = "neurallog-tenant-operator";
/// The operator's Deployment, as the CSV names it.
const DEPLOYMENT: &str = "neurallog-tenant-operator";
/// How long OperatorHub's CI wants the operator's pod up without a restart: more than this.
const STABLE_FOR: Duration = Duration::from_secs(60);
/// Local volumes each scenario's node offers: a Redis claim per tenant.
const NODE_VOLUMES: usize = 4;
/// Tenants created under the old release without images, so holding its schema's defaults: they
/// follow the operator's default version.
const FOLLOWERS: [&str; 3] = ["delta", "epsilon", "zeta"];
/// `--rollout-max-upgrading`'s default, which the bundle keeps: the widest wave.
const DEFAULT_MAX_UPGRADING: usize = 3;
/// The upgrade scenarios' volumes: alpha, beta and the followers.
const UPGRADE_VOLUMES: usize = 5;
/// How often OLM re-checks every CSV, and how long it retries an InstallPlan's failing steps.
const OLM_WAKEUP: Duration = Duration::from_secs(10);
const INSTALL_PLAN_RETRY: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn olm_installs_the_operator_from_catalog_and_bundle_images_on_a_real_node() -> anyhow::Result<()> {
    on_a_node(
        "operatorhub-node",
        "e2e operatorhub on a real node",
        NODE_VOLUMES,
        true,
        keep_olm_logs,
        async |node, timeline, logs| install(node, timeline, logs).await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn olm_upgrades_from_0_2_0_with_real_pods_losing_nothing() -> anyhow::Result<()> {
    on_a_node(
        "operatorhub-node-upgrade-0.2.0",
        "e2e OLM upgrade from 0.2.0 on a real node",
        UPGRADE_VOLUMES,
        false,
        keep_olm_logs,
        async |node, timeline, logs| upgrade(node, timeline, logs, "0.2.0").await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn olm_upgrades_from_0_1_0_through_the_skip_range_with_real_pods_losing_nothing() -> anyhow::Result<()> {
    on_a_node(
        "operatorhub-node-upgrade-0.1.0",
        "e2e OLM upgrade from 0.1.0 on a real node",
        UPGRADE_VOLUMES,
        false,
        keep_olm_logs,
        async |node, timeline, logs| upgrade(node, timeline, logs, "0.1.0").await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_sdk_runs_the_previous_bundle_then_upgrades_to_this_one() -> anyhow::Result<()> {
    on_a_node(
        "operatorhub-node-run-bundle",
        "e2e operator-sdk run bundle and run bundle-upgrade on a real node",
        NODE_VOLUMES,
        false,
        keep_olm_logs,
        async |node, timeline, logs| run_bundle_upgrade(node, timeline, logs).await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_before_an_olm_upgrade_restores_after_it() -> anyhow::Result<()> {
    on_a_node(
        "operatorhub-node-upgrade-backup",
        "e2e a backup across an OLM upgrade on a real node",
        NODE_VOLUMES,
        true,
        keep_olm_logs,
        async |node, timeline, logs| upgrade_with_backup(node, timeline, logs).await,
    )
    .await
}

async fn install(node: &RealNode, timeline: &mut Timeline, logs: &Path) -> anyhow::Result<()> {
    let client = node.admin_client().await?;
    let csv = head_csv()?;

    timeline.begin("images", "push; the catalog rendered from the bundle image, built and pushed");
    // Pushed under the tag the CSV names; pulled through the registry mirror.
    let operator_image = node.push_image("operator")?;
    let bundle = node.push_image("bundle")?;
    let entries = [ChannelEntry { bundle: bundle.clone(), replaces: None, skip_range: None, skips: vec![] }];
    let catalog = catalog_image::build(node, &logs.join("catalog"), "install", "local", &entries)?;
    let images = TenantImages::push(node)?;
    timeline.done(format!("catalog {catalog}"));

    start_olm(node, timeline).await?;
    serve_catalog(node, &client, timeline, &catalog).await?;

    timeline.begin("subscribe", "OperatorGroup and Subscription; OLM unpacks the bundle image in a Job");
    subscribe(node, "local", None, "Automatic")?;
    wait_csv_succeeded(&client, &csv).await?;
    let unpack = unpack_job(&client, &bundle).await?;
    timeline.done(format!("CSV {csv} Succeeded; bundle unpacked by Job {unpack}"));

    timeline.begin(
        "operator",
        "its pods from the CSV's image, OLM's serving certificate, the webhook behind OLM's Service",
    );
    let (pods, service) = operator_as_olm_deployed(node, &client, &csv, &operator_image).await?;
    let service = service.context("this checkout's CSV declares no conversion webhook")?;
    let ready_at = Instant::now();
    timeline.done(format!("{} pods from {operator_image}; conversion through Service {service}", pods.len()));

    timeline.begin("tenants", "one through v1 (converted behind OLM's Service), one through v2: every pod Ready");
    create_tenant(&client, "v1", &tenant_v1("alpha", &images)).await?;
    create_tenant(&client, "v2", &tenant_v2("beta", "Delete", &images)).await?;
    // Comes up beside alpha and beta; proven below, while the operator must stay up.
    let isolation = Isolation::create(node, &client, &images).await?;
    for name in ["alpha", "beta"] {
        wait_running(&client, name).await?;
    }
    let record = "installed by OLM";
    write_record(&client, "alpha", "olm", record).await?;
    ensure_record(node, &client, "alpha", "olm", record).await?;
    timeline.done("alpha and beta Running; a record through alpha's server is in its Redis");

    isolation.prove(timeline).await?;

    timeline.begin("stable", "the operator's pods up for more than 60 s without a restart");
    // A span of time is the requirement: the restarts are watched through it, not waited out blind.
    while ready_at.elapsed() <= STABLE_FOR {
        ensure!(operator_restarts(&client).await? == 0, "an operator pod restarted");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    ensure!(operator_restarts(&client).await? == 0, "an operator pod restarted");
    ensure!(ready_operator_pods(&client).await?.len() == pods.len(), "an operator pod is no longer Ready");
    timeline.done(format!("0 restarts over {:.0}s", ready_at.elapsed().as_secs_f64()));
    Ok(())
}

/// From release `from` (its own operator image and bundle image) to this checkout's bundle through
/// the Subscription, with Manual approval so that tenants exist before the upgrade.
async fn upgrade(node: &RealNode, timeline: &mut Timeline, logs: &Path, from: &str) -> anyhow::Result<()> {
    let client = node.admin_client().await?;
    let (old, new) = (released_csv(from), head_csv()?);

    timeline.begin("images", "every release's operator and bundle image, this checkout's; the catalog over them");
    let old_operator = node.push_image(&format!("operator-{from}"))?;
    let new_operator = node.push_image("operator")?;
    let (channel, entries) = upgrade_channel(node)?;
    let catalog = catalog_image::build(node, &logs.join("catalog"), &format!("upgrade-{from}"), &channel, &entries)?;
    let images = TenantImages::push(node)?;
    // The old schema's default images, as a mirror serves them, and this checkout's defaults.
    for (built, served_as) in [
        ("server-1.0.0", LEGACY_SERVER_IMAGE.to_owned()),
        ("registry-1.0.0", LEGACY_REGISTRY_IMAGE.to_owned()),
        ("redis", format!("library/{LEGACY_REDIS_IMAGE}")),
    ] {
        node.push_image_as(built, &served_as)?;
    }
    for name in ["server-1.0.0", "registry-1.0.0", "redis-default"] {
        node.push_image(name)?;
    }
    timeline.done(format!("channel {channel}: {} bundles", entries.len()));

    start_olm(node, timeline).await?;
    serve_catalog(node, &client, timeline, &catalog).await?;

    timeline.begin("install", &format!("Subscription (Manual, startingCSV {old}), approved; CSV Succeeded"));
    subscribe(node, &channel, Some(&old), "Manual")?;
    approve(&client, &old).await?;
    operator_as_olm_deployed(node, &client, &old, &old_operator).await?;
    timeline.done(format!("{old} Succeeded, its pods from {old_operator}"));

    timeline.begin(
        "tenants",
        &format!("under {from} through v1: two with images set, three on the defaults; a record in each one's Redis"),
    );
    let mut tenants = vec![tenant_v1("alpha", &images), tenant_v1_deleting("beta", &images)];
    tenants.extend(FOLLOWERS.iter().map(|name| tenant_v1_on_defaults(name)));
    for tenant in &tenants {
        create_tenant(&client, "v1", tenant).await?;
    }
    let all: Vec<&str> = ["alpha", "beta"].into_iter().chain(FOLLOWERS).collect();
    for name in &all {
        wait_running_through(&client, "v1", name).await?;
        write_record(&client, name, "upgrade", &format!("{name} before the upgrade")).await?;
    }
    // Each workload rolled out, so that no pod of an earlier template is still going away.
    for name in &all {
        for workload in [
            format!("deployment/{name}-server"),
            format!("deployment/{name}-registry"),
            format!("statefulset/{name}-redis"),
        ] {
            node.wait_rollout(&format!("tenant-{name}"), &workload)?;
        }
    }
    let pods_before = tenant_pods(&client, &["alpha", "beta"]).await?;
    let secrets_before = tenant_secrets(&client, &all).await?;
    let stored_before = stored_versions(&client).await?;
    timeline
        .done(format!("{} pods of the tenants with images set; storedVersions {stored_before:?}", pods_before.len()));

    timeline.begin("upgrade", &format!("approve {new}: OLM rolls the Deployment to the new image"));
    let rollout = Arc::new(Mutex::new(Record::default()));
    rollout.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.reset(Instant::now());
    let watching = tokio::spawn(watch_upgrades(client.clone(), rollout.clone()));
    approve(&client, &new).await?;
    let csvs = olm_api(&client, "v1alpha1", "ClusterServiceVersion", Some(OPERATOR_NAMESPACE));
    wait(&format!("CSV {old} to be gone"), async || Ok(csvs.get_opt(&old).await?.is_none().then_some(()))).await?;
    operator_as_olm_deployed(node, &client, &new, &new_operator)
        .await?
        .1
        .context("this checkout's CSV declares no conversion webhook")?;
    timeline.done(format!("{new} Succeeded, {old} gone, pods from {new_operator}"));

    timeline.begin(
        "after",
        "every tenant on the new default, those on the old defaults through the rollout, the others' pods as they were; every record and Secret there; storedVersions [v2]",
    );
    // Only the new operator records a version: once every tenant has one, it has reconciled them all.
    let names: Vec<String> = all.iter().map(|name| name.to_string()).collect();
    wait_versions(&client, &names, DEFAULT_VERSION).await?;
    let followers: Vec<String> = FOLLOWERS.iter().map(|name| name.to_string()).collect();
    let rollout = rollout.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    watching.abort();
    ensure!(
        rollout.ever_upgrading == followers.iter().cloned().collect(),
        "the rollout moved {:?}, not exactly the tenants on the old defaults",
        rollout.ever_upgrading
    );
    ensure!(rollout.first_moved_alone(), "the first tenant did not move alone:\n{}", rollout.table());
    ensure!(rollout.widest <= DEFAULT_MAX_UPGRADING, "{} tenants moved at once", rollout.widest);
    for name in &all {
        wait_running(&client, name).await?;
        ensure_record(node, &client, name, "upgrade", &format!("{name} before the upgrade")).await?;
    }
    for name in FOLLOWERS {
        let redis = redis_image(&client, name).await?;
        ensure!(redis.ends_with(DEFAULT_REDIS_IMAGE), "{name}'s Redis runs {redis}, not {DEFAULT_REDIS_IMAGE}");
    }
    let pods_after = tenant_pods(&client, &["alpha", "beta"]).await?;
    ensure!(
        pods_after == pods_before,
        "the pods of the tenants with images set changed across the upgrade:\nbefore {pods_before:?}\nafter  {pods_after:?}"
    );
    let secrets_after = tenant_secrets(&client, &all).await?;
    ensure!(secrets_after == secrets_before, "the tenants' Secrets changed across the upgrade");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    wait("storedVersions trimmed to [v2]", async || {
        let stored = crds.get(CRD).await?.status.and_then(|s| s.stored_versions).unwrap_or_default();
        Ok((stored == ["v2"]).then_some(()))
    })
    .await?;
    timeline.done(format!(
        "{} pods unchanged, {} Secrets unchanged, records read back; the followers on {DEFAULT_VERSION}, widest wave {}; storedVersions {stored_before:?} -> [\"v2\"]",
        pods_after.len(),
        secrets_after.len(),
        rollout.widest
    ));
    println!("{}", rollout.table());
    Ok(())
}

/// OperatorHub.io's upgrade test: the latest release's bundle image installed with `operator-sdk run
/// bundle`, then this checkout's with `operator-sdk run bundle-upgrade`; a tenant made under the
/// release keeps its pods and its record.
async fn run_bundle_upgrade(node: &RealNode, timeline: &mut Timeline, logs: &Path) -> anyhow::Result<()> {
    let client = node.admin_client().await?;
    let releases = release::read_releases(&testenv::repo_root().join("catalog/releases.yaml"))?;
    let previous = releases.iter().filter(|r| !r.yanked).map(|r| r.version.to_string()).next_back();
    let previous = previous.context("catalog/releases.yaml lists no release")?;
    let (old, new) = (released_csv(&previous), head_csv()?);

    timeline.begin("images", &format!("{previous}'s operator and bundle images, this checkout's, opm-tools"));
    // operator-sdk pulls over HTTPS only: the images it pulls are named on the registry served so.
    let registry = node.registry_over_tls().await?;
    let old_operator = node.push_image(&format!("operator-{previous}"))?;
    let old_bundle = registry.name(&node.push_image(&format!("bundle-{previous}"))?);
    let new_operator = node.push_image("operator")?;
    let new_bundle = registry.name(&node.push_image("bundle")?);
    let opm_tools = registry.name(&node.push_image("opm-tools")?);
    node.push_image_as("opm-tools", run_bundle::DECOMPRESSION_IMAGE)?;
    let images = TenantImages::push(node)?;
    timeline.done(format!("{old_bundle} -> {new_bundle}"));

    start_olm(node, timeline).await?;

    timeline.begin("run bundle", &format!("operator-sdk run bundle {previous}'s bundle image"));
    node.apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}))?;
    run_bundle::run_bundle(node, &registry, OPERATOR_NAMESPACE, &old_bundle, &opm_tools, &logs.join("run-bundle.log"))?;
    wait_csv_succeeded(&client, &old).await?;
    operator_as_olm_deployed(node, &client, &old, &old_operator).await?;
    timeline.done(format!("{old} Succeeded, its pods from {old_operator}"));

    timeline.begin("tenant", &format!("alpha through v1 under {previous}, Running; a record in its Redis"));
    create_tenant(&client, "v1", &tenant_v1("alpha", &images)).await?;
    wait_running_through(&client, "v1", "alpha").await?;
    write_record(&client, "alpha", "upgrade", "before run bundle-upgrade").await?;
    for workload in ["deployment/alpha-server", "deployment/alpha-registry", "statefulset/alpha-redis"] {
        node.wait_rollout("tenant-alpha", workload)?;
    }
    let pods_before = tenant_pods(&client, &["alpha"]).await?;
    timeline.done(format!("{} pods", pods_before.len()));

    timeline.begin("bundle-upgrade", "operator-sdk run bundle-upgrade this checkout's bundle image");
    run_bundle::run_bundle_upgrade(
        node,
        &registry,
        OPERATOR_NAMESPACE,
        &new_bundle,
        &logs.join("run-bundle-upgrade.log"),
    )?;
    wait_csv_succeeded(&client, &new).await?;
    let csvs = olm_api(&client, "v1alpha1", "ClusterServiceVersion", Some(OPERATOR_NAMESPACE));
    wait(&format!("CSV {old} to be gone"), async || Ok(csvs.get_opt(&old).await?.is_none().then_some(()))).await?;
    operator_as_olm_deployed(node, &client, &new, &new_operator).await?;
    timeline.done(format!("{new} Succeeded, {old} gone, pods from {new_operator}"));

    timeline.begin("after", "alpha Running with the same pods, its record there");
    // Only the new operator records a version: once alpha has one, the new operator reconciled it.
    wait_versions(&client, &["alpha".to_owned()], DEFAULT_VERSION).await?;
    wait_running(&client, "alpha").await?;
    ensure_record(node, &client, "alpha", "upgrade", "before run bundle-upgrade").await?;
    let pods_after = tenant_pods(&client, &["alpha"]).await?;
    ensure!(pods_after == pods_before, "alpha's pods changed:\nbefore {pods_before:?}\nafter  {pods_after:?}");
    timeline.done(format!("{} pods unchanged, the record read back", pods_after.len()));
    Ok(())
}

/// This checkout installed through OLM, a tenant backed up, the upgrade to this checkout's next
/// release approved; then the tenant deleted with its data and restored from the backup by the
/// upgraded operator, from its own image.
async fn upgrade_with_backup(node: &RealNode, timeline: &mut Timeline, logs: &Path) -> anyhow::Result<()> {
    const TENANT: &str = "kept";
    const BACKUP: &str = "kept-before-upgrade";
    const RECORDS: usize = 300;
    let client = node.admin_client().await?;
    let (current, next) = (head_csv()?, next_csv()?);

    timeline.begin("images", "this checkout's operator and bundle images, its next release's; a catalog of both");
    let operator = node.push_image("operator")?;
    let next_operator = node.push_image("operator-next")?;
    let entries = [
        ChannelEntry { bundle: node.push_image("bundle")?, replaces: None, skip_range: None, skips: vec![] },
        ChannelEntry {
            bundle: node.push_image("bundle-next")?,
            replaces: Some(current.clone()),
            skip_range: None,
            skips: vec![],
        },
    ];
    let catalog = catalog_image::build(node, &logs.join("catalog"), "upgrade-next", "local", &entries)?;
    for name in ["server-1.0.0", "registry-1.0.0", "redis-default"] {
        node.push_image(name)?;
    }
    let mut store = ObjectStore::start(NODE_IP, logs, &[BUCKET])?;
    let endpoint = store.endpoint();
    timeline.done(format!("{current} -> {next}; the store at {endpoint}"));

    start_olm(node, timeline).await?;
    serve_catalog(node, &client, timeline, &catalog).await?;

    timeline.begin("install", &format!("Subscription (Manual, startingCSV {current}), approved"));
    subscribe(node, "local", Some(&current), "Manual")?;
    approve(&client, &current).await?;
    operator_as_olm_deployed(node, &client, &current, &operator).await?;
    timeline.done(format!("{current} Succeeded, its pods from {operator}"));

    timeline.begin("backup", &format!("tenant {TENANT}: {RECORDS} records, then a backup by hand"));
    let destination = json!({"backup": {"destination": {"s3": backup_node::s3(&endpoint)}}});
    create_tenant(&client, "v2", &backup_node::tenant(TENANT, destination)).await?;
    backup_node::give_credentials(node, &client, TENANT, SECRET_KEY).await?;
    wait_running(&client, TENANT).await?;
    for i in 0..RECORDS {
        write_record(&client, TENANT, "app", &backup_node::record(i)).await?;
    }
    backup_node::create_backup(&client, BACKUP, TENANT).await?;
    let taken = backup_node::finished(&client, BACKUP).await?;
    ensure!(taken["phase"] == "Succeeded", "the backup before the upgrade failed: {taken}");
    timeline.done(format!("{} bytes, sha256 {}", taken["sizeBytes"], taken["sha256"]));

    timeline.begin("upgrade", &format!("approve {next}: OLM rolls the Deployment to the next image"));
    approve(&client, &next).await?;
    let csvs = olm_api(&client, "v1alpha1", "ClusterServiceVersion", Some(OPERATOR_NAMESPACE));
    wait(&format!("CSV {current} to be gone"), async || Ok(csvs.get_opt(&current).await?.is_none().then_some(())))
        .await?;
    operator_as_olm_deployed(node, &client, &next, &next_operator).await?;
    timeline.done(format!("{next} Succeeded, {current} gone, pods from {next_operator}"));

    timeline.begin("restore", &format!("{TENANT} deleted with its data, created anew from {BACKUP}"));
    delete_tenant(&client, TENANT).await?;
    let namespaces = Api::<Namespace>::all(client.clone());
    wait(&format!("namespace tenant-{TENANT} to be gone"), async || {
        Ok(namespaces.get_opt(&format!("tenant-{TENANT}")).await?.is_none().then_some(()))
    })
    .await?;
    let restored = backup_node::tenant(TENANT, json!({"restoreFrom": {"backup": BACKUP}}));
    create_tenant(&client, "v2", &restored).await?;
    backup_node::give_credentials(node, &client, TENANT, SECRET_KEY).await?;
    wait_running(&client, TENANT).await?;
    let records = read_records(&client, TENANT, "app").await?;
    let expected: Vec<String> = (0..RECORDS).map(backup_node::record).collect();
    ensure!(records == expected, "the restored tenant holds the {RECORDS} records ({} read)", records.len());
    let restored = backup_node::condition(&client, TENANT, "Restored").await?.context("no Restored condition")?;
    ensure!(restored["status"] == "True", "Restored: {restored}");
    // The snapshot was fetched by the upgraded operator's image, which the CSV hands its pods.
    let redis =
        Api::<Pod>::namespaced(client.clone(), &format!("tenant-{TENANT}")).get(&format!("{TENANT}-redis-0")).await?;
    let fetched_by = redis
        .spec
        .iter()
        .flat_map(|spec| spec.init_containers.iter().flatten())
        .find(|container| container.name == "restore-fetch")
        .and_then(|container| container.image.clone())
        .context("the Redis pod has no restore-fetch container")?;
    let next_version = next.strip_prefix(&format!("{PACKAGE}.v")).unwrap_or_default();
    ensure!(fetched_by.ends_with(&format!(":{next_version}")), "the restore ran {fetched_by}, not the next release");
    let kept = backup_node::backups(&client).get(BACKUP).await?.data["status"].clone();
    ensure!(kept == taken, "the upgraded operator changed the backup's status:\nbefore {taken}\nafter  {kept}");
    store.stop();
    timeline.done(format!("{RECORDS} records equal, restored by {fetched_by}; the backup's status unchanged"));
    Ok(())
}

/// This checkout's CSV as its next patch release (its version without the pre-release part, patch
/// + 1): the bundle `tools/images.sh next` builds by the same rule.
fn next_csv() -> anyhow::Result<String> {
    let head = head_csv()?;
    let version = head.strip_prefix(&format!("{PACKAGE}.v")).context("the CSV's name carries no version")?;
    let version = semver::Version::parse(version).with_context(|| format!("{head} has no semantic version"))?;
    Ok(released_csv(&format!("{}.{}.{}", version.major, version.minor, version.patch + 1)))
}

/// The `candidate` channel `tools/release` computes once this checkout is released after every
/// release of `catalog/releases.yaml`, each entry's bundle image pushed into the node's registry.
fn upgrade_channel(node: &RealNode) -> anyhow::Result<(String, Vec<ChannelEntry>)> {
    let mut releases = release::read_releases(&testenv::repo_root().join("catalog/releases.yaml"))?;
    let head = head_csv()?;
    let head_version = head.strip_prefix(&format!("{PACKAGE}.v")).context("the CSV's name carries no version")?;
    releases.push(release::Release {
        version: semver::Version::parse(head_version)?,
        yanked: false,
        commit: String::new(),
        sha256: String::new(),
        images: BTreeMap::new(),
    });
    let channels = release::channels(PACKAGE, &releases)?;
    let channel = channels.into_iter().find(|c| c.name == "candidate").context("no candidate channel")?;
    let mut bundles = BTreeMap::new();
    for release in &releases {
        let version = release.version.to_string();
        let image =
            if release.version.to_string() == head_version { "bundle".to_owned() } else { format!("bundle-{version}") };
        bundles.insert(released_csv(&version), node.push_image(&image)?);
    }
    let entries = channel
        .entries
        .into_iter()
        .map(|entry| {
            let bundle =
                bundles.get(&entry.name).cloned().with_context(|| format!("no bundle image for {}", entry.name))?;
            Ok(ChannelEntry { bundle, replaces: entry.replaces, skip_range: entry.skip_range, skips: entry.skips })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((channel.name, entries))
}

/// OLM's images pushed, its operators installed as Deployments.
async fn start_olm(node: &RealNode, timeline: &mut Timeline) -> anyhow::Result<()> {
    timeline.begin("olm", "OLM's olm and catalog operators as Deployments from OLM's image");
    let settings = Settings {
        olm_image: node.push_image("olm")?,
        opm_image: node.push_image("base-opm")?,
        wakeup: OLM_WAKEUP,
        install_plan_retry: INSTALL_PLAN_RETRY,
    };
    in_cluster::install(node, &settings).await?;
    timeline.done("both rolled out");
    Ok(())
}

/// A grpc CatalogSource of the catalog image, and OLM's catalog pod serving it.
async fn serve_catalog(node: &RealNode, client: &Client, timeline: &mut Timeline, catalog: &str) -> anyhow::Result<()> {
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
    let sources = olm_api(client, "v1alpha1", "CatalogSource", Some(testenv::olm::NAMESPACE));
    wait("the CatalogSource READY", async || {
        let source = sources.get(CATALOG_SOURCE).await?;
        Ok((source.data["status"]["connectionState"]["lastObservedState"] == "READY").then_some(()))
    })
    .await?;
    let pod = pod_with_image(client, testenv::olm::NAMESPACE, catalog).await?;
    timeline.done(format!("pod {pod} Ready from {catalog}"));
    Ok(())
}

/// The operator's namespace, an AllNamespaces OperatorGroup and the Subscription.
fn subscribe(node: &RealNode, channel: &str, starting_csv: Option<&str>, approval: &str) -> anyhow::Result<()> {
    node.apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}))?;
    node.apply_json(&json!({
        "apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
        "metadata": {"name": "neurallog", "namespace": OPERATOR_NAMESPACE},
        "spec": {},
    }))?;
    let mut subscription = json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "metadata": {"name": SUBSCRIPTION, "namespace": OPERATOR_NAMESPACE},
        "spec": {
            "channel": channel, "name": PACKAGE,
            "source": CATALOG_SOURCE, "sourceNamespace": testenv::olm::NAMESPACE,
            "installPlanApproval": approval,
        },
    });
    if let Some(csv) = starting_csv {
        subscription["spec"]["startingCSV"] = json!(csv);
    }
    node.apply_json(&subscription)
}

/// Approves the InstallPlan that installs `csv`, as a user does (the plan the Subscription refers
/// to), and waits for the CSV to succeed. OLM can replace that plan with a second one for the same
/// CSV when an update of the first conflicts (seen here), so each is approved as it comes.
async fn approve(client: &Client, csv: &str) -> anyhow::Result<()> {
    let subscriptions = olm_api(client, "v1alpha1", "Subscription", Some(OPERATOR_NAMESPACE));
    let plans = olm_api(client, "v1alpha1", "InstallPlan", Some(OPERATOR_NAMESPACE));
    wait(&format!("{csv} approved and Succeeded"), async || {
        let subscription = subscriptions.get_opt(SUBSCRIPTION).await?;
        let referred = subscription.as_ref().and_then(|s| s.data["status"]["installPlanRef"]["name"].as_str());
        if let Some(plan) = referred {
            let plan = plans.get_opt(plan).await?;
            let installs_csv = plan.as_ref().is_some_and(|plan| {
                plan.data["spec"]["clusterServiceVersionNames"]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|name| name == csv))
            });
            if let Some(plan) = plan.filter(|plan| installs_csv && plan.data["spec"]["approved"] != true) {
                let approved = json!({"spec": {"approved": true}});
                plans.patch(&plan.name_any(), &PatchParams::default(), &Patch::Merge(approved)).await?;
            }
        }
        csv_succeeded(client, csv).await
    })
    .await
}

async fn wait_csv_succeeded(client: &Client, csv: &str) -> anyhow::Result<()> {
    wait(&format!("CSV {csv} Succeeded"), async || csv_succeeded(client, csv).await).await
}

/// Whether CSV `csv` has Succeeded; an error when it Failed.
async fn csv_succeeded(client: &Client, csv: &str) -> anyhow::Result<Option<()>> {
    let csvs = olm_api(client, "v1alpha1", "ClusterServiceVersion", Some(OPERATOR_NAMESPACE));
    let found = csvs.get_opt(csv).await?;
    if let Some(phase) = found.as_ref().and_then(|csv| csv.data["status"]["phase"].as_str())
        && phase == "Failed"
    {
        bail!(
            "CSV {csv} Failed: {}",
            found.as_ref().map(|c| c.data["status"]["message"].to_string()).unwrap_or_default()
        );
    }
    Ok(found.filter(|csv| csv.data["status"]["phase"] == "Succeeded").map(|_| ()))
}

/// The operator as OLM deployed CSV `csv`: the Deployment rolled out, every Ready pod running
/// `image` (pushed by digest, pulled by the CSV's name for it) and, when the CSV declares a webhook
/// (0.1.0's has none), OLM's serving certificate mounted and the CRD converting through OLM's
/// Service. Returns the pods and that Service's name.
async fn operator_as_olm_deployed(
    node: &RealNode,
    client: &Client,
    csv: &str,
    image: &str,
) -> anyhow::Result<(Vec<Pod>, Option<String>)> {
    node.wait_rollout(OPERATOR_NAMESPACE, &format!("deployment/{DEPLOYMENT}"))?;
    let digest = image.split_once('@').map(|(_, digest)| digest).context("the operator image has no digest")?;
    let pods = wait(&format!("every operator pod Ready from {digest}"), async || {
        let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE)
            .list(&ListParams::default().labels(OPERATOR_LABEL))
            .await?
            .items;
        let from_image = |pod: &Pod| {
            let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
            statuses.and_then(|s| s.first()).is_some_and(|s| s.image_id.ends_with(digest))
        };
        Ok((!pods.is_empty() && pods.iter().all(|pod| is_ready(pod) && from_image(pod))).then_some(pods))
    })
    .await?;
    let declared = olm_api(client, "v1alpha1", "ClusterServiceVersion", Some(OPERATOR_NAMESPACE)).get(csv).await?;
    if declared.data["spec"]["webhookdefinitions"].as_array().is_none_or(Vec::is_empty) {
        return Ok((pods, None));
    }
    for pod in &pods {
        let secrets: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|spec| spec.volumes.iter().flatten())
            .filter_map(|volume| volume.secret.as_ref()?.secret_name.as_deref())
            .collect();
        ensure!(
            secrets.iter().any(|secret| secret.ends_with("-service-cert")),
            "operator pod {} mounts no OLM serving certificate: {secrets:?}",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
    }
    // OLM points the CRD's conversion at its Service once the Deployment is up.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let service = wait("the CRD converting through OLM's Service", async || {
        let crd = crds.get(CRD).await?;
        let webhook = crd.spec.conversion.and_then(|c| c.webhook).and_then(|w| w.client_config);
        Ok(webhook
            .filter(|config| config.ca_bundle.is_some())
            .and_then(|config| config.service)
            .filter(|service| service.namespace == OPERATOR_NAMESPACE)
            .map(|service| service.name))
    })
    .await?;
    Ok((pods, Some(service)))
}

/// A `v1` tenant whose deletion policy is `Delete`.
fn tenant_v1_deleting(name: &str, images: &TenantImages) -> serde_json::Value {
    let mut tenant = tenant_v1(name, images);
    tenant["spec"]["deletionPolicy"] = json!("Delete");
    tenant
}

/// A `v1` tenant that names no images: the old release's schema fills in its defaults. Small CPU
/// requests, so that the node's two cores hold every tenant, both operators while OLM rolls them,
/// and a rollout's surge.
fn tenant_v1_on_defaults(name: &str) -> serde_json::Value {
    let small = json!({"cpu": {"request": "10m"}});
    json!({
        "apiVersion": "neurallog.io/v1", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "displayName": name,
            "deletionPolicy": "Delete",
            "server": {"resources": small},
            "redis": {"resources": small, "storage": "1Gi"},
            "registry": {"resources": small},
        },
    })
}

/// Every Secret of the tenants' namespaces: namespace/name -> (UID, data).
async fn tenant_secrets(
    client: &Client,
    tenants: &[&str],
) -> anyhow::Result<BTreeMap<String, (Option<String>, BTreeMap<String, k8s_openapi::ByteString>)>> {
    let mut secrets = BTreeMap::new();
    for tenant in tenants {
        let namespace = format!("tenant-{tenant}");
        for secret in Api::<Secret>::namespaced(client.clone(), &namespace).list(&ListParams::default()).await?.items {
            let name = format!("{namespace}/{}", secret.metadata.name.unwrap_or_default());
            secrets.insert(name, (secret.metadata.uid, secret.data.unwrap_or_default()));
        }
    }
    Ok(secrets)
}

/// `record` of the tenant's log `log` read back through its server and found in its Redis.
async fn ensure_record(node: &RealNode, client: &Client, tenant: &str, log: &str, record: &str) -> anyhow::Result<()> {
    let records = read_records(client, tenant, log).await?;
    ensure!(records.iter().any(|r| r == record), "{tenant}'s server reads {records:?}, not {record:?}");
    let namespace = format!("tenant-{tenant}");
    let key = format!("logs:{tenant}:{log}");
    let stored = exec(node, &namespace, &format!("{tenant}-redis-0"), &["redis-cli", "lrange", &key, "0", "-1"])?;
    ensure!(stored.contains(record), "{tenant}'s Redis holds {stored:?}, not {record:?}");
    Ok(())
}

/// Every pod of the tenants' namespaces: name -> (UID, restarts).
async fn tenant_pods(client: &Client, tenants: &[&str]) -> anyhow::Result<BTreeMap<String, (String, i32)>> {
    let mut pods = BTreeMap::new();
    for tenant in tenants {
        let list =
            Api::<Pod>::namespaced(client.clone(), &format!("tenant-{tenant}")).list(&ListParams::default()).await?;
        for pod in list.items.into_iter().filter(|pod| pod.metadata.deletion_timestamp.is_none()) {
            let restarts =
                pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).map(|s| s.restart_count).sum();
            pods.insert(pod.metadata.name.unwrap_or_default(), (pod.metadata.uid.unwrap_or_default(), restarts));
        }
    }
    Ok(pods)
}

async fn stored_versions(client: &Client) -> anyhow::Result<Vec<String>> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone()).get(CRD).await?;
    Ok(crd.status.and_then(|s| s.stored_versions).unwrap_or_default())
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
