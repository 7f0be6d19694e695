//! NeuralLog versions rolled out across a fleet on a real node, with the stand-in images of three
//! versions (`make images`: the operator's default, 1.1.0 whose server is unready by design, and
//! its fix 1.1.1), pulled by the names the operator gives them:
//! - 12 tenants follow the default, one pins it; each runs Ready on it;
//! - the default moves to the broken 1.1.0 with another Redis image: one tenant moves first, its
//!   server never comes Ready, its upgrade fails and the rollout halts; every other tenant keeps
//!   its version and its pods, and says why;
//! - the default moves to 1.1.1: the rollout resumes and completes, never more than
//!   `--rollout-max-upgrading` tenants moving at once; the pinned tenant's pods are never touched;
//!   a record written before the Redis image change is still there;
//! - admission refuses a downgrade and a new major version, naming `spec.version`, and allows the
//!   rollback of one tenant to its previous version, which keeps its records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use testenv::node::RealNode;
use testenv::timeline::Timeline;

use crate::on_node::{
    OPERATOR_NAMESPACE, create_tenant, on_a_node, read_records, tenants, wait, wait_within, write_record,
};

/// Tenants following the default.
const FLEET: usize = 12;
/// `--rollout-max-upgrading` of the scenario.
const MAX_UPGRADING: usize = 3;
/// `--rollout-ready-timeout-seconds` while the default is the broken version, which fails within
/// it; then the default's, for the fixed version (three components restart one after another).
const BROKEN_READY_TIMEOUT_SECONDS: u64 = 30;
const READY_TIMEOUT_SECONDS: u64 = 600;
const DEPLOYMENT: &str = "deployment/neurallog-tenant-operator";
const PINNED: &str = "pinned";

#[tokio::test(flavor = "multi_thread")]
async fn new_neurallog_versions_roll_out_in_waves_and_a_broken_one_halts_them() -> anyhow::Result<()> {
    on_a_node(
        "rollout-node",
        "e2e NeuralLog rollout on a real node",
        FLEET + 2,
        false,
        |_, _| {},
        async |node, timeline, _| scenario(node, timeline).await,
    )
    .await
}

fn fleet_names() -> Vec<String> {
    (1..=FLEET).map(|i| format!("fleet-{i:02}")).collect()
}

/// A `v2` tenant with the default images and small CPU requests (13 tenants on two cores).
fn tenant(name: &str, version: Option<&str>) -> Value {
    let small = json!({"requests": {"cpu": "10m"}});
    let mut tenant = json!({
        "apiVersion": "neurallog.io/v2", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": "Delete",
            "server": {"resources": small},
            "redis": {"resources": small, "storage": "1Gi"},
            "registry": {"resources": small},
        },
    });
    if let Some(version) = version {
        tenant["spec"]["version"] = json!(version);
    }
    tenant
}

async fn scenario(node: &RealNode, timeline: &mut Timeline) -> anyhow::Result<()> {
    let client = node.admin_client().await?;

    timeline.begin("images", "the stand-ins of NeuralLog 1.0.0, 1.1.0 (unready by design), 1.1.1 and two Redis images");
    for name in ["server-1.0.0", "registry-1.0.0", "server-1.1.0", "registry-1.1.0", "server-1.1.1", "registry-1.1.1"] {
        node.push_image(name)?;
    }
    node.push_image("redis-default")?;
    let other_redis = node.push_image("redis")?;
    timeline.done(format!("pushed; the new Redis image is {other_redis}"));

    timeline.begin("install", "the kustomize install, the built-in default NeuralLog version and images");
    let operator = node.push_image("operator")?;
    let max_upgrading = MAX_UPGRADING.to_string();
    node.install_operator(&operator, &[("TENANT_OPERATOR_ROLLOUT_MAX_UPGRADING", max_upgrading.as_str())])?;
    node.wait_rollout(OPERATOR_NAMESPACE, DEPLOYMENT)?;
    timeline.done("rolled out");

    timeline.begin("fleet", &format!("{FLEET} tenants on the default, tenant {PINNED} with spec.version 1.0.0"));
    let started = Instant::now();
    for name in fleet_names() {
        create_tenant(&client, "v2", &tenant(&name, None)).await?;
    }
    create_tenant(&client, "v2", &tenant(PINNED, Some("1.0.0"))).await?;
    let mut all = fleet_names();
    all.push(PINNED.to_owned());
    wait_versions(&client, &all, "1.0.0").await?;
    write_record(&client, "fleet-01", "before-redis-change", "kept across the Redis image change").await?;
    let pinned_pods = pod_uids(&client, PINNED).await?;
    timeline.done(format!("every tenant Ready on 1.0.0 in {:.0}s", started.elapsed().as_secs_f64()));

    let record = Arc::new(Mutex::new(Record::default()));
    let watching = tokio::spawn(watch_upgrades(client.clone(), record.clone()));

    timeline.begin("broken", "the default moves to 1.1.0 (server unready by design) and another Redis image");
    let before: BTreeMap<String, BTreeSet<String>> = {
        let mut pods = BTreeMap::new();
        for name in fleet_names() {
            pods.insert(name.clone(), pod_uids(&client, &name).await?);
        }
        pods
    };
    let started = Instant::now();
    record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.reset(started);
    set_default(node, "1.1.0", &other_redis, BROKEN_READY_TIMEOUT_SECONDS)?;
    let failed = wait("one tenant's upgrade to fail and the others to be halted", async || {
        let reasons = upgrade_reasons(&client).await?;
        let failed: Vec<&String> =
            reasons.iter().filter(|(_, reason)| reason.as_str() == "UpgradeFailed").map(|(name, _)| name).collect();
        let halted = reasons.iter().filter(|(_, reason)| reason.as_str() == "RolloutHalted").count();
        Ok((failed.len() == 1 && halted == FLEET - 1).then(|| failed[0].clone()))
    })
    .await?;
    let moved: BTreeSet<String> = record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.ever_upgrading.clone();
    ensure!(moved == BTreeSet::from([failed.clone()]), "only the first tenant moved to the broken version: {moved:?}");
    for (name, uids) in &before {
        if *name != failed {
            ensure!(pod_uids(&client, name).await? == *uids, "tenant {name}'s pods were touched by the halted rollout");
        }
    }
    ensure!(pod_uids(&client, PINNED).await? == pinned_pods, "the pinned tenant's pods were touched");
    let events = events_of(node, &failed)?;
    ensure!(events.contains("UpgradeFailed"), "no UpgradeFailed Event for {failed}: {events}");
    timeline.done(format!(
        "{failed} failed after {:.0}s; {} others halted with their pods untouched",
        started.elapsed().as_secs_f64(),
        FLEET - 1
    ));

    timeline.begin("fixed", "the default moves to 1.1.1: the rollout resumes and completes");
    let started = Instant::now();
    record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.reset(started);
    set_default(node, "1.1.1", &other_redis, READY_TIMEOUT_SECONDS)?;
    wait_versions(&client, &fleet_names(), "1.1.1").await?;
    let record = record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    watching.abort();
    ensure!(
        record.widest <= MAX_UPGRADING,
        "{} tenants upgraded at once, more than --rollout-max-upgrading {MAX_UPGRADING}",
        record.widest
    );
    ensure!(record.widest > 1, "the waves never overlapped: {}", record.widest);
    ensure!(record.first_moved_alone(), "the first tenant did not move alone:\n{}", record.table());
    ensure!(pod_uids(&client, PINNED).await? == pinned_pods, "the pinned tenant's pods were touched");
    let pinned = tenants(&client, "v2").get(PINNED).await?;
    let pinned_reason = condition(&pinned.data["status"], "Upgrading").map(|c| c["reason"].clone());
    ensure!(
        pinned.data["status"]["version"] == "1.0.0" && pinned_reason == Some(json!("UpToDate")),
        "the pinned tenant moved or waits to: {}",
        pinned.data["status"]
    );
    let records = read_records(&client, "fleet-01", "before-redis-change").await?;
    ensure!(records == ["kept across the Redis image change"], "Redis lost a record: {records:?}");
    let redis_image = redis_image(&client, "fleet-01").await?;
    ensure!(redis_image == other_redis, "fleet-01's Redis runs {redis_image}, not {other_redis}");
    timeline.done(format!(
        "{FLEET} tenants on 1.1.1 in {:.0}s, at most {} at once; the record survived the Redis image change",
        started.elapsed().as_secs_f64(),
        record.widest
    ));
    println!("{}", record.table());

    timeline.begin("admission", "a downgrade and a new major version are refused, naming spec.version");
    for (version, expected) in [("0.9.0", "may not be lower"), ("2.0.0", "new major version")] {
        let patch = json!({"spec": {"version": version}});
        let refused = tenants(&client, "v2").patch(PINNED, &PatchParams::default(), &Patch::Merge(&patch)).await;
        let message = match refused {
            Err(kube::Error::Api(status)) => status.message,
            other => anyhow::bail!("spec.version {version} was not refused: {other:?}"),
        };
        ensure!(message.contains("spec.version") && message.contains(expected), "{version}: {message}");
    }
    timeline.done("both refused");

    timeline.begin("rollback", "fleet-01 back to status.previousVersion, the one downgrade admission allows");
    let started = Instant::now();
    let previous = tenants(&client, "v2").get("fleet-01").await?.data["status"]["previousVersion"].clone();
    ensure!(previous == "1.0.0", "fleet-01's previous version is {previous}");
    let patch = json!({"spec": {"version": previous}});
    tenants(&client, "v2").patch("fleet-01", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_versions(&client, &["fleet-01".to_owned()], "1.0.0").await?;
    let rolled_back = tenants(&client, "v2").get("fleet-01").await?;
    ensure!(
        rolled_back.data["status"]["previousVersion"] == "1.1.1",
        "after the rollback: {}",
        rolled_back.data["status"]
    );
    let records = read_records(&client, "fleet-01", "before-redis-change").await?;
    ensure!(records == ["kept across the Redis image change"], "Redis lost a record in the rollback: {records:?}");
    timeline.done(format!("fleet-01 Ready on 1.0.0 in {:.0}s, previousVersion 1.1.1", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Moves the operator's default to NeuralLog `version` (the stand-ins' names, as the operator
/// derives them) with the Redis image `redis`, as an operator upgrade would, and gives a moving
/// tenant `ready_timeout` seconds.
fn set_default(node: &RealNode, version: &str, redis: &str, ready_timeout: u64) -> anyhow::Result<()> {
    let env = [
        format!("TENANT_OPERATOR_ROLLOUT_READY_TIMEOUT_SECONDS={ready_timeout}"),
        format!("TENANT_OPERATOR_NEURALLOG_VERSION={version}"),
        format!("RELATED_IMAGE_NEURALLOG_SERVER=neurallog/server:{version}"),
        format!("RELATED_IMAGE_NEURALLOG_REGISTRY=neurallog/registry:{version}"),
        format!("RELATED_IMAGE_REDIS={redis}"),
    ];
    let mut args = vec!["-n", OPERATOR_NAMESPACE, "set", "env", DEPLOYMENT];
    args.extend(env.iter().map(String::as_str));
    let output = node.kubectl_command(&args).output()?;
    ensure!(output.status.success(), "kubectl set env: {}", String::from_utf8_lossy(&output.stderr));
    node.wait_rollout(OPERATOR_NAMESPACE, DEPLOYMENT)
}

/// Waits until every tenant of `names` runs Ready on `version` with nothing left to move: the
/// first tenant, then the others in waves, each restarting three components one after another.
pub(crate) async fn wait_versions(client: &Client, names: &[String], version: &str) -> anyhow::Result<()> {
    let api = tenants(client, "v2");
    let limit = Duration::from_secs(600);
    wait_within(&format!("{} tenants Ready on NeuralLog {version}", names.len()), limit, async || {
        for name in names {
            let tenant = api.get(name).await?;
            let status = &tenant.data["status"];
            let up_to_date = condition(status, "Upgrading").is_some_and(|c| c["reason"] == "UpToDate");
            if status["version"] != version || status["phase"] != "Running" || !up_to_date {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Each fleet tenant's `Upgrading` reason.
async fn upgrade_reasons(client: &Client) -> anyhow::Result<BTreeMap<String, String>> {
    let mut reasons = BTreeMap::new();
    for name in fleet_names() {
        let tenant = tenants(client, "v2").get(&name).await?;
        let reason = condition(&tenant.data["status"], "Upgrading").and_then(|c| c["reason"].as_str());
        reasons.insert(name, reason.unwrap_or_default().to_owned());
    }
    Ok(reasons)
}

/// The tenant's pods, those already being deleted left out: a workload counts as rolled out while
/// a replaced pod is still shutting down.
async fn pod_uids(client: &Client, tenant: &str) -> anyhow::Result<BTreeSet<String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), &format!("tenant-{tenant}"));
    let list = pods.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.metadata.uid)
        .collect())
}

pub(crate) async fn redis_image(client: &Client, tenant: &str) -> anyhow::Result<String> {
    let pod =
        Api::<Pod>::namespaced(client.clone(), &format!("tenant-{tenant}")).get(&format!("{tenant}-redis-0")).await?;
    pod.spec.and_then(|spec| spec.containers.into_iter().next()).and_then(|c| c.image).context("no Redis image")
}

/// The reasons of the Events about a tenant, one per line.
fn events_of(node: &RealNode, tenant: &str) -> anyhow::Result<String> {
    let selector = format!("involvedObject.name={tenant}");
    let output = node
        .kubectl_command(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.reason}{'\\n'}{end}",
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What the tenants' watch saw of their upgrades.
#[derive(Clone, Default)]
pub(crate) struct Record {
    /// When the phase being recorded began.
    since: Option<Instant>,
    /// The tenants `Upgrading` now, by the watch.
    upgrading: BTreeSet<String>,
    /// The most at once.
    pub(crate) widest: usize,
    /// Every tenant seen `Upgrading` in this phase.
    pub(crate) ever_upgrading: BTreeSet<String>,
    /// Per tenant: when it started moving and when it was up to date, from the phase's start.
    timeline: BTreeMap<String, (Option<Duration>, Option<Duration>)>,
}

impl Record {
    pub(crate) fn reset(&mut self, since: Instant) {
        *self = Self { since: Some(since), upgrading: self.upgrading.clone(), ..Self::default() };
    }

    fn saw(&mut self, tenant: &DynamicObject) {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        let reason =
            condition(&tenant.data["status"], "Upgrading").and_then(|c| c["reason"].as_str()).unwrap_or_default();
        let at = self.since.get_or_insert_with(Instant::now).elapsed();
        let entry = self.timeline.entry(name.clone()).or_default();
        if reason == "Upgrading" {
            entry.0.get_or_insert(at);
            self.ever_upgrading.insert(name.clone());
            self.upgrading.insert(name);
        } else {
            if reason == "UpToDate" && entry.0.is_some() {
                entry.1.get_or_insert(at);
            }
            self.upgrading.remove(&name);
        }
        self.widest = self.widest.max(self.upgrading.len());
    }

    /// Whether the first tenant to move was up to date before any other started: on images no
    /// tenant has run yet, the rollout moves one tenant alone.
    pub(crate) fn first_moved_alone(&self) -> bool {
        let mut moves: Vec<(Duration, Option<Duration>)> =
            self.timeline.values().filter_map(|(start, ready)| start.map(|start| (start, *ready))).collect();
        moves.sort();
        match moves.split_first() {
            Some(((_, Some(first_ready)), others)) => others.iter().all(|(start, _)| start >= first_ready),
            Some(((_, None), _)) => false,
            None => true,
        }
    }

    /// Each tenant's start and Ready, in seconds from the phase's start.
    pub(crate) fn table(&self) -> String {
        let mut rows: Vec<_> = self.timeline.iter().filter(|(_, (start, _))| start.is_some()).collect();
        rows.sort_by_key(|(_, (start, _))| *start);
        let seconds =
            |at: &Option<Duration>| at.map_or_else(|| "-".to_owned(), |at| format!("{:.1}", at.as_secs_f64()));
        let mut table = String::from("tenant      started  ready (s from the default's move)\n");
        for (name, (start, ready)) in rows {
            table.push_str(&format!("{name:<11} {:>7}  {:>5}\n", seconds(start), seconds(ready)));
        }
        table
    }
}

/// Records every tenant's `Upgrading` condition as the watch delivers it (each change in order).
/// The watch outlives its errors (an operator upgrade replaces the CRD under it, and the API server
/// ends its watches then): it backs off and watches again.
pub(crate) async fn watch_upgrades(client: Client, record: Arc<Mutex<Record>>) -> anyhow::Result<()> {
    let events = watcher(tenants(&client, "v2"), watcher::Config::default()).default_backoff().applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let (Ok(tenant), Ok(mut record)) = (event, record.lock()) {
            record.saw(&tenant);
        }
    }
    Ok(())
}
