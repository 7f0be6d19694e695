//! The path users take from 0.1.0: installed from the catalog, upgraded by their Subscription.
//! 0.1.0 runs as its own binary (built from the commit that released it); this checkout's bundle
//! replaces it. Nothing may be lost: every tenant reads the same through `v1`, means the same
//! through `v2`, is stored as `v2`; no child is re-created; a workload changes only by the rollout
//! of this release's NeuralLog images (a tenant on 0.1.0's default images moves onto them, in
//! waves, an image the tenant set stays); the tenant being deleted at upgrade time finishes. And
//! OLM refuses a bundle that would drop a stored version.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt as _};
use neurallog_tenant_operator::api::conversion;
use serde_json::{Value, json};

use testenv::operatorhub::{
    CRD, Entry, Env, INSTALL_PLAN_RETRY, WebhookRoute, bundle_dir, counter, head_csv, json_of, read_yaml,
    released_binary, released_csv, text,
};

const OLD: &str = "0.1.0";
/// Deleted while 0.1.0 runs and held (a finalizer on an object in its namespace) until 0.2.0 runs.
const DOOMED: &str = "doomed";
const HOLD_FINALIZER: &str = "e2e.neurallog.io/hold";

/// Tenants written through `v1` that together use every `v1` field, including what the web admin
/// sends (a create carrying a status, a replace whose metadata is just the name).
fn v1_tenants() -> Vec<Value> {
    let tenant = |name: &str, spec: Value| json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec});
    let mut tenants = vec![
        tenant("empty", json!({})),
        tenant(
            "acme",
            json!({
                "displayName": "Acme Corporation", "description": "Every field at once",
                "deletionPolicy": "Retain",
                "resources": {"cpu": {"request": "1", "limit": "4"}, "memory": {"request": "2Gi", "limit": "4Gi"}, "storage": {"limit": "20Gi"}},
                "server": {"replicas": 2, "image": "neurallog/server:latest",
                    "resources": {"cpu": {"request": "100m", "limit": "500m"}, "memory": {"request": "128Mi", "limit": "512Mi"}},
                    "env": [{"name": "LOG_LEVEL", "value": "debug"}]},
                "redis": {"replicas": 1, "image": "redis:7-alpine", "storage": "2Gi",
                    "resources": {"memory": {"request": "128Mi", "limit": "512Mi"}},
                    "config": {"maxmemory-policy": "allkeys-lru", "timeout": "300"}},
                "registry": {"replicas": 1, "baseDomain": "neurallog.app"},
                "networkPolicy": {"enabled": true, "allowedNamespaces": ["neurallog"],
                    "ingressRules": [{"description": "Prometheus scrapes the server", "from": {"app.kubernetes.io/name": "prometheus"},
                        "namespaces": ["monitoring"], "ports": [{"protocol": "TCP", "port": 3030}]}],
                    "egressRules": [{"description": "Payments webhooks", "to": {"app": "payments-webhooks"},
                        "namespaces": ["payments"], "ports": [{"protocol": "TCP", "port": 443}]}]},
            }),
        ),
        tenant("cpu-budget", json!({"resources": {"cpu": {"request": "500m", "limit": "8"}}})),
        tenant("memory-budget", json!({"resources": {"memory": {"limit": "16Gi"}}})),
        tenant(
            "storage-budget",
            json!({"resources": {"storage": {"request": "5Gi", "limit": "50Gi"}}, "redis": {"storage": "3Gi"}}),
        ),
        tenant(
            "env-references",
            json!({"server": {"env": [
                {"name": "PLAIN", "value": "x"},
                {"name": "EMPTY", "value": ""},
                {"name": "FROM_CONFIG", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api", "optional": true}}},
            ]}}),
        ),
        tenant(
            "server-sized",
            json!({"server": {"replicas": 3, "image": "neurallog/server:1.4.2",
            "resources": {"cpu": {"request": "250m"}, "memory": {"limit": "1Gi"}}}}),
        ),
        tenant(
            "redis-tuned",
            json!({"redis": {"config": {
                "maxmemory-policy": "volatile-lru", "appendfsync": "always", "loglevel": "warning", "timeout": "60",
                "tcp-keepalive": "120", "databases": "4", "maxclients": "500", "hz": "20", "save": "900 1 300 10",
                "notify-keyspace-events": "Ex", "slowlog-max-len": "256", "lazyfree-lazy-eviction": "yes",
            }}}),
        ),
        tenant(
            "redis-sized",
            json!({"redis": {"image": "redis:7.2-alpine", "storage": "1Gi",
            "resources": {"cpu": {"request": "50m", "limit": "1"}, "memory": {"request": "256Mi", "limit": "1Gi"}}}}),
        ),
        tenant(
            "registry-custom",
            json!({"registry": {"replicas": 2, "image": "neurallog/registry:2.0.0",
            "resources": {"cpu": {"limit": "200m"}}, "baseDomain": "logs.example.com"}}),
        ),
        tenant("open-network", json!({"networkPolicy": {"enabled": false}})),
        tenant("allowed-namespaces", json!({"networkPolicy": {"allowedNamespaces": ["neurallog", "ops"]}})),
        tenant(
            "ingress-rules",
            json!({"networkPolicy": {"ingressRules": [
                {"from": {"role": "scraper"}, "ports": [{"port": 3030}]},
                {"description": "DNS over UDP from the ops namespace", "namespaces": ["ops"], "ports": [{"protocol": "UDP", "port": 5353}]},
                {"description": "anything from the monitoring namespace", "namespaces": ["monitoring"]},
            ]}}),
        ),
        tenant(
            "egress-rules",
            json!({"networkPolicy": {"egressRules": [
                {"to": {"app": "smtp"}, "namespaces": ["mail"], "ports": [{"protocol": "TCP", "port": 587}]},
                {"description": "SCTP peer", "to": {"app": "sctp"}, "ports": [{"protocol": "SCTP", "port": 9899}]},
            ]}}),
        ),
        tenant("retained", json!({"deletionPolicy": "Retain"})),
        tenant("deleted-with-data", json!({"deletionPolicy": "Delete"})),
        tenant(
            "described",
            json!({"displayName": "Zürich Ops — ünïcode", "description": "A description\nover two lines"}),
        ),
        tenant(DOOMED, json!({"displayName": "Deleted during the upgrade"})),
    ];
    let mut labelled = tenant("labelled", json!({"displayName": "Labels and annotations"}));
    labelled["metadata"]["labels"] = json!({"team": "payments", "tier": "gold"});
    labelled["metadata"]["annotations"] = json!({"example.com/owner": "ops@example.com"});
    tenants.push(labelled);
    // The web admin creates with a status in the payload (the API server drops it).
    let mut web_admin =
        tenant("web-admin-create", json!({"displayName": "From the web admin", "resources": {"cpu": {"limit": "2"}}}));
    web_admin["status"] = json!({"phase": "Running"});
    tenants.push(web_admin);
    tenants
}

/// Created like the others, then replaced as the web admin does: metadata reduced to the name.
const WEB_ADMIN_REPLACED: &str = "web-admin-replace";

/// What must survive the upgrade untouched.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Every tenant as `v1` shows it (no resourceVersion or managed fields, which a migration changes).
    tenants: BTreeMap<String, Value>,
    /// `Kind namespace/name` → UID of every object in the tenants' namespaces, and the namespaces.
    children: BTreeMap<String, String>,
    /// `Kind namespace/name` → digest of each workload's pod template but its images.
    workloads: BTreeMap<String, String>,
    /// `Kind namespace/name` → the images of each workload's containers.
    images: BTreeMap<String, Vec<String>>,
}

/// The images of a pod template's containers, and the template without them.
fn split_images(template: Option<Value>) -> (Vec<String>, Option<Value>) {
    let mut template = template;
    let mut images = Vec::new();
    if let Some(containers) =
        template.as_mut().and_then(|t| t.pointer_mut("/spec/containers")).and_then(Value::as_array_mut)
    {
        for container in containers {
            if let Some(image) = container.get_mut("image").map(Value::take) {
                images.push(image.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    (images, template)
}

/// The image this release's NeuralLog version gives a workload's container: a tenant that set none
/// (or 0.1.0's schema default) moves onto it.
fn release_image(image: &str) -> &str {
    use neurallog_tenant_operator::model::operand;
    match image {
        operand::LEGACY_SERVER_IMAGE => operand::DEFAULT_SERVER_IMAGE,
        operand::LEGACY_REDIS_IMAGE => operand::DEFAULT_REDIS_IMAGE,
        operand::LEGACY_REGISTRY_IMAGE => operand::DEFAULT_REGISTRY_IMAGE,
        set => set,
    }
}

/// A short digest of a pod template, to compare templates by value.
fn digest(template: &Option<Value>) -> String {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    sha2::Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A tenant without what changes by itself: what a migration writes, what a release that knows
/// NeuralLog versions adds to the status, and when conditions last changed (a Redis that the
/// rollout restarts is briefly not Ready).
fn without_volatile(mut tenant: Value) -> Value {
    if let Some(metadata) = tenant.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    if let Some(status) = tenant.get_mut("status").and_then(Value::as_object_mut) {
        for field in ["version", "targetVersion", "previousVersion", "images"] {
            status.remove(field);
        }
        if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
            conditions.retain(|condition| condition["type"] != "Upgrading");
            for condition in conditions.iter_mut().filter_map(Value::as_object_mut) {
                // Kept as a field: the status still has to read as a status.
                condition.insert("lastTransitionTime".into(), json!("1970-01-01T00:00:00Z"));
            }
        }
    }
    tenant
}

async fn uids<K>(client: &Client, namespace: &str, out: &mut BTreeMap<String, String>) -> anyhow::Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    for object in Api::<K>::namespaced(client.clone(), namespace).list(&ListParams::default()).await?.items {
        out.insert(format!("{} {namespace}/{}", K::kind(&()), object.name_any()), object.uid().unwrap_or_default());
    }
    Ok(())
}

impl Snapshot {
    async fn take(env: &Env, names: &[String]) -> anyhow::Result<Self> {
        let client = &env.client;
        let v1 = env.tenants("v1");
        let mut snapshot = Self {
            tenants: BTreeMap::new(),
            children: BTreeMap::new(),
            workloads: BTreeMap::new(),
            images: BTreeMap::new(),
        };
        for name in names {
            let tenant = json_of(&v1.get(name).await?);
            let namespace = text(&tenant, "/status/namespace").to_owned();
            anyhow::ensure!(!namespace.is_empty(), "tenant {name} reports no namespace");
            snapshot.tenants.insert(name.clone(), without_volatile(tenant));
            let ns = Api::<Namespace>::all(client.clone()).get(&namespace).await?;
            snapshot.children.insert(format!("Namespace {namespace}"), ns.uid().unwrap_or_default());
            let out = &mut snapshot.children;
            uids::<ConfigMap>(client, &namespace, out).await?;
            uids::<Secret>(client, &namespace, out).await?;
            uids::<Service>(client, &namespace, out).await?;
            uids::<ServiceAccount>(client, &namespace, out).await?;
            uids::<Role>(client, &namespace, out).await?;
            uids::<RoleBinding>(client, &namespace, out).await?;
            uids::<NetworkPolicy>(client, &namespace, out).await?;
            uids::<Ingress>(client, &namespace, out).await?;
            uids::<PodDisruptionBudget>(client, &namespace, out).await?;
            uids::<PersistentVolumeClaim>(client, &namespace, out).await?;
            uids::<k8s_openapi::api::core::v1::ResourceQuota>(client, &namespace, out).await?;
            uids::<k8s_openapi::api::core::v1::LimitRange>(client, &namespace, out).await?;
            uids::<Deployment>(client, &namespace, out).await?;
            uids::<StatefulSet>(client, &namespace, out).await?;
            // Pods and ReplicaSets are not compared: the rollout of the release's images replaces
            // them, and a workload's template says whether anything else changed.
            for deployment in
                Api::<Deployment>::namespaced(client.clone(), &namespace).list(&ListParams::default()).await?.items
            {
                let (images, template) = split_images(deployment.spec.as_ref().map(|spec| json_of(&spec.template)));
                let key = format!("Deployment {namespace}/{}", deployment.name_any());
                snapshot.workloads.insert(key.clone(), format!("template {}", digest(&template)));
                snapshot.images.insert(key, images);
            }
            for set in
                Api::<StatefulSet>::namespaced(client.clone(), &namespace).list(&ListParams::default()).await?.items
            {
                let (images, template) = split_images(set.spec.as_ref().map(|spec| json_of(&spec.template)));
                let key = format!("StatefulSet {namespace}/{}", set.name_any());
                snapshot.workloads.insert(key.clone(), format!("template {}", digest(&template)));
                snapshot.images.insert(key, images);
            }
        }
        Ok(snapshot)
    }

    /// The differences to `after`, one line each.
    fn differences(&self, after: &Self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, before) in &self.tenants {
            match after.tenants.get(name) {
                None => lines.push(format!("tenant {name} is gone")),
                Some(now) if now != before => {
                    lines.push(format!("tenant {name} through v1 changed:\n  before {before}\n  after  {now}"))
                }
                Some(_) => {}
            }
        }
        for (what, before, now) in
            [("child", &self.children, &after.children), ("workload", &self.workloads, &after.workloads)]
        {
            for (key, value) in before {
                match now.get(key) {
                    None => lines.push(format!("{what} {key} is gone")),
                    Some(current) if current != value => lines.push(format!("{what} {key}: {value} became {current}")),
                    Some(_) => {}
                }
            }
        }
        for (key, before) in &self.images {
            let expected: Vec<&str> = before.iter().map(|image| release_image(image)).collect();
            match after.images.get(key) {
                Some(now) if *now == expected => {}
                now => lines.push(format!("workload {key} runs {now:?}: {before:?} should have become {expected:?}")),
            }
        }
        lines
    }

    /// How many objects of each kind `after` has that this snapshot had not: what a new version's
    /// first reconcile adds.
    fn added(&self, after: &Self) -> BTreeMap<String, usize> {
        let mut added = BTreeMap::new();
        for key in after.children.keys().filter(|key| !self.children.contains_key(*key)) {
            *added.entry(key.split(' ').next().unwrap_or_default().to_owned()).or_default() += 1;
        }
        added
    }
}

/// Creates `tenants` through `v1` and waits until each is `Running` and its status is of its
/// generation.
async fn create_and_converge(env: &Env, tenants: &[Value]) -> anyhow::Result<Vec<String>> {
    let v1 = env.tenants("v1");
    let mut names = Vec::new();
    for manifest in tenants {
        let object: DynamicObject = serde_json::from_value(manifest.clone())?;
        env.create(&v1, &object).await?;
        names.push(object.name_any());
    }
    wait_converged(env, &names).await?;
    Ok(names)
}

async fn wait_converged(env: &Env, names: &[String]) -> anyhow::Result<()> {
    let v1 = env.tenants("v1");
    for name in names {
        env.wait(&format!("tenant {name} to be Running at its generation"), async || {
            let tenant = json_of(&v1.get(name).await?);
            let current = tenant.pointer("/status/observedGeneration") == tenant.pointer("/metadata/generation");
            Ok((current && text(&tenant, "/status/phase") == "Running").then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// The web admin's replace: a whole new spec, metadata reduced to the name and the version it
/// read.
async fn replace_as_web_admin(env: &Env, name: &str) -> anyhow::Result<()> {
    let v1 = env.tenants("v1");
    let current = json_of(&v1.get(name).await?);
    let replacement: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "neurallog.io/v1", "kind": "Tenant",
        "metadata": {"name": name, "resourceVersion": current["metadata"]["resourceVersion"]},
        "spec": {"displayName": "Replaced by the web admin", "server": {"replicas": 1}},
        "status": current["status"],
    }))?;
    v1.replace(name, &PostParams::default(), &replacement).await?;
    Ok(())
}

/// Deletes [`DOOMED`] through `v1` while an object with a finalizer holds its namespace, so the
/// deletion is still under way when the operator is upgraded.
async fn start_deleting_doomed(env: &Env) -> anyhow::Result<String> {
    let v1 = env.tenants("v1");
    let namespace = text(&json_of(&v1.get(DOOMED).await?), "/status/namespace").to_owned();
    let hold = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("hold".into()),
            finalizers: Some(vec![HOLD_FINALIZER.into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(env.client.clone(), &namespace).create(&PostParams::default(), &hold).await?;
    v1.delete(DOOMED, &DeleteParams::default()).await?;
    let namespaces = Api::<Namespace>::all(env.client.clone());
    env.wait(&format!("namespace {namespace} of {DOOMED} to be terminating"), async || {
        let ns = namespaces.get(&namespace).await?;
        Ok(ns.status.and_then(|s| s.phase).filter(|phase| phase == "Terminating").map(drop))
    })
    .await?;
    Ok(namespace)
}

async fn release_doomed(env: &Env, namespace: &str) -> anyhow::Result<()> {
    Api::<ConfigMap>::namespaced(env.client.clone(), namespace)
        .patch("hold", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await?;
    let v2 = env.tenants("v2");
    env.wait(&format!("tenant {DOOMED} to be deleted"), async || Ok(v2.get_opt(DOOMED).await?.is_none().then_some(())))
        .await?;
    let namespaces = Api::<Namespace>::all(env.client.clone());
    env.wait(&format!("namespace {namespace} to be gone"), async || {
        Ok(namespaces.get_opt(namespace).await?.is_none().then_some(()))
    })
    .await
}

/// The value of tag `key` among Jaeger's `tags`.
fn jaeger_tag<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
    tags.as_array()?.iter().find(|tag| tag["key"] == key).map(|tag| &tag["value"])
}

/// The tenants a reconcile of this checkout's operator (its `service.version`) finished without
/// error for, from their traces in Jaeger: a reconcile's root span is exported once it ended.
fn reconciled_by_this_version(traces: &[Value]) -> std::collections::BTreeSet<String> {
    let mut tenants = std::collections::BTreeSet::new();
    for trace in traces {
        for span in trace["spans"].as_array().into_iter().flatten().filter(|s| s["operationName"] == "reconcile") {
            let process = &trace["processes"][span["processID"].as_str().unwrap_or_default()];
            if jaeger_tag(&process["tags"], "service.version").and_then(Value::as_str)
                != Some(env!("CARGO_PKG_VERSION"))
            {
                continue;
            }
            let tags = &span["tags"];
            let failed = jaeger_tag(tags, "otel.status_code").is_some_and(|code| code == "ERROR")
                || jaeger_tag(tags, "error").is_some_and(|error| error == true);
            if let Some(tenant) = jaeger_tag(tags, "tenant").and_then(Value::as_str).filter(|_| !failed) {
                tenants.insert(tenant.to_owned());
            }
        }
    }
    tenants
}

/// After 0.2.0 took over: what the upgrade promises, checked against `before`.
async fn assert_nothing_lost(
    env: &Env,
    names: &[String],
    before: &Snapshot,
    route: WebhookRoute,
) -> anyhow::Result<String> {
    let crds = Api::<CustomResourceDefinition>::all(env.client.clone());
    env.wait("the migration to trim storedVersions to [v2]", async || {
        let crd = crds.get(CRD).await?;
        Ok((crd.status.and_then(|s| s.stored_versions).unwrap_or_default() == ["v2"]).then_some(()))
    })
    .await?;

    // The new operator's first reconcile of a tenant may change what 0.1.0 made (a pod template,
    // say): compare only once it has reconciled every tenant, each at least once to the end
    // without error, as its traces in Jaeger show.
    let reconciled = env
        .wait("the new operator to have reconciled every tenant", async || {
            let traces = env.jaeger.traces("neurallog-tenant-operator").await?;
            let reconciled = reconciled_by_this_version(&traces);
            Ok(names.iter().all(|name| reconciled.contains(name)).then_some(reconciled.len()))
        })
        .await?;

    // The tenants on 0.1.0's default images move onto this release's, in waves.
    let v2 = env.tenants("v2");
    env.wait("every tenant's rollout to this release's NeuralLog images to end", async || {
        for name in names {
            let tenant = json_of(&v2.get(name).await?);
            let conditions =
                tenant.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            if !conditions.iter().any(|c| c["type"] == "Upgrading" && c["reason"] == "UpToDate") {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    let widest = widest_wave(&env.client).await?;
    anyhow::ensure!(
        (1..=MAX_UPGRADING).contains(&widest),
        "{widest} tenants upgraded at once, outside 1..={MAX_UPGRADING}"
    );

    // A changed pod template shows as a new ReplicaSet or revision once the controllers have
    // seen the change.
    let deployments = Api::<Deployment>::all(env.client.clone());
    let sets = Api::<StatefulSet>::all(env.client.clone());
    env.wait("the workload controllers to observe every workload", async || {
        let deployments = deployments.list(&ListParams::default()).await?.items;
        let sets = sets.list(&ListParams::default()).await?.items;
        let observed =
            deployments.iter().all(|d| d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation)
                && sets.iter().all(|s| s.status.as_ref().and_then(|s| s.observed_generation) == s.metadata.generation);
        Ok(observed.then_some(()))
    })
    .await?;
    // Reads through the webhook may fail for a while: OLM can put its bundle's conversion back
    // into the CRD after an install (docs/upgrading.md, 4.2) until its next check of the CSV.
    let after = env
        .wait("the tenants and their children, read after the upgrade", async || {
            Ok(Some(Snapshot::take(env, names).await?))
        })
        .await?;
    let differences = before.differences(&after);
    anyhow::ensure!(differences.is_empty(), "the upgrade changed what it must not:\n{}", differences.join("\n"));
    let added = before.added(&after);

    for (name, recorded) in &before.tenants {
        let expected = conversion::convert(recorded, "neurallog.io/v2")?;
        let read =
            env.wait(&format!("tenant {name} through v2"), async || Ok(Some(json_of(&v2.get(name).await?)))).await?;
        anyhow::ensure!(
            read["spec"] == expected["spec"],
            "tenant {name} through v2 means something else than its v1 form:\n  v2   {}\n  from {}",
            read["spec"],
            expected["spec"]
        );
        let stored = env.cluster.etcd_get(&format!("/registry/neurallog.io/tenants/{name}")).await?.unwrap_or_default();
        let stored: Value = serde_json::from_slice(&stored)?;
        anyhow::ensure!(
            text(&stored, "/apiVersion") == "neurallog.io/v2",
            "etcd holds tenant {name} as {}",
            text(&stored, "/apiVersion")
        );
    }

    let tunnels = env.cluster.connections(route.service);
    let converted =
        counter(&env.admin_get("operator-new", "/metrics").await?, "neurallog_tenant_operator_converted_objects_total");
    anyhow::ensure!(
        tunnels > 0 && converted > 0.0,
        "conversions did not reach the operator: {tunnels} connections, {converted} objects"
    );

    let trace = env
        .wait("the migration's trace in Jaeger", async || {
            let traces = env.jaeger.traces("neurallog-tenant-operator").await?;
            Ok(traces.into_iter().find(|trace| {
                trace["spans"]
                    .as_array()
                    .is_some_and(|spans| spans.iter().any(|s| s["operationName"] == "migrate storage version"))
            }))
        })
        .await?;
    Ok(format!(
        "{} tenants (reconciled by the new version: {reconciled}) and {} children unchanged but the images the rollout moved (at most {widest} tenants at once), stored as v2; added by the new version: {added:?}; {converted} objects converted over {tunnels} connections; migration trace {}",
        before.tenants.len(),
        before.children.len(),
        text(&trace, "/traceID")
    ))
}

/// As a rollout does it: once OLM has rolled the Deployment for CSV `new`, 0.1.0 stops and this
/// checkout's operator starts behind OLM's webhook Service; then OLM's InstallPlan settles.
async fn take_over(env: &Env, new: &str) -> anyhow::Result<WebhookRoute> {
    env.wait_installed(new).await?;
    env.stop_operator("operator-old").await?;
    let route = env
        .start_operator("operator-new", env!("CARGO_BIN_EXE_tenant-operator").as_ref())
        .await?
        .ok_or_else(|| anyhow::anyhow!("CSV {new} declares no conversion webhook"))?;
    env.wait_settled(new).await?;
    Ok(route)
}

/// The most tenants that were moving at once, from the Events that mark where each tenant's
/// upgrade started (`Upgrading`) and ended (`Upgraded`): read after the fact, so nothing is missed
/// however fast the rollout went.
async fn widest_wave(client: &Client) -> anyhow::Result<usize> {
    use k8s_openapi::api::events::v1::Event;
    let events = Api::<Event>::all(client.clone()).list(&ListParams::default()).await?.items;
    let mut moves = Vec::new();
    for event in &events {
        let (Some(reason), Some(at)) = (event.reason.as_deref(), event.event_time.as_ref()) else { continue };
        match reason {
            "Upgrading" => moves.push((at.0, 1_i32)),
            "Upgraded" => moves.push((at.0, -1)),
            _ => {}
        }
    }
    // An end sorts before a start at the same instant: the slot was freed first.
    moves.sort_unstable();
    let (mut moving, mut widest) = (0_i32, 0_i32);
    for (_, step) in &moves {
        moving += step;
        widest = widest.max(moving);
    }
    Ok(usize::try_from(widest).unwrap_or_default())
}

/// `--rollout-max-upgrading` of the installed operator: its default (the CSV sets none).
const MAX_UPGRADING: usize = 3;

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_from_0_1_0_with_manual_approval_loses_nothing() -> anyhow::Result<()> {
    let entries = [Entry::released(OLD), Entry::head(Some(OLD))?];
    let mut env =
        Env::start("e2e upgrade-manual", &crate::logs("upgrade-manual"), 30, &entries, INSTALL_PLAN_RETRY).await?;
    let outcome = upgrade_manually(&mut env).await;
    env.end(outcome).await
}

async fn upgrade_manually(env: &mut Env) -> anyhow::Result<()> {
    let (old, new) = (released_csv(OLD), head_csv()?);
    let old_binary = released_binary(OLD)?;
    env.begin("install", &format!("Subscription (Manual, startingCSV {old}), approve, CSV Succeeded"));
    env.subscribe(Some(&old), "Manual").await?;
    let plan = env.approve(&old).await?;
    env.wait_installed(&old).await?;
    env.done(format!("{old} Succeeded (InstallPlan {plan} approved)"));

    env.begin("operator", "the 0.1.0 binary, built from its release commit, as the CSV's ServiceAccount");
    env.start_operator("operator-old", &old_binary).await?;
    env.done("0.1.0 ready");

    env.begin("tenants", "tenants through v1 using every v1 field converge; one is being deleted");
    let mut tenants = v1_tenants();
    tenants.push(json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": WEB_ADMIN_REPLACED}, "spec": {}}));
    let mut names = create_and_converge(env, &tenants).await?;
    replace_as_web_admin(env, WEB_ADMIN_REPLACED).await?;
    wait_converged(env, &names).await?;
    let doomed_namespace = start_deleting_doomed(env).await?;
    names.retain(|name| name != DOOMED);
    let before = Snapshot::take(env, &names).await?;
    env.done(format!(
        "{} tenants Running, {} children recorded; {DOOMED} deleting",
        names.len(),
        before.children.len()
    ));

    env.begin("upgrade", &format!("approve {new}; 0.1.0 runs until OLM rolled the Deployment"));
    let subscriptions = env.olm_api("Subscription", "subscriptions");
    env.wait("the Subscription to be UpgradePending", async || {
        let subscription = json_of(&subscriptions.get(testenv::operatorhub::PACKAGE).await?);
        Ok((text(&subscription, "/status/state") == "UpgradePending").then_some(()))
    })
    .await?;
    let plan = env.approve(&new).await?;
    let route = take_over(env, &new).await?;
    let csvs = env.olm_api("ClusterServiceVersion", "clusterserviceversions");
    env.wait(&format!("CSV {old} to be gone"), async || Ok(csvs.get_opt(&old).await?.is_none().then_some(()))).await?;
    env.done(format!("{new} Succeeded (InstallPlan {plan}), {old} gone, conversion through OLM's Service"));

    env.begin(
        "after",
        "nothing lost: v1 unchanged, v2 same meaning, stored as v2, no child re-created, only the images rolled, in waves",
    );
    release_doomed(env, &doomed_namespace).await?;
    let summary = assert_nothing_lost(env, &names, &before, route).await?;
    env.done(summary);

    env.begin("converge", "the upgraded operator still converges: a v1 change and a new v1 tenant");
    let v1 = env.tenants("v1");
    env.wait("a v1 change of tenant empty to be accepted", async || {
        let change = Patch::Merge(json!({"spec": {"server": {"replicas": 3}}}));
        Ok(Some(v1.patch("empty", &PatchParams::default(), &change).await?))
    })
    .await?;
    let created = create_and_converge(env, &[json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": "after-upgrade"}, "spec": {"deletionPolicy": "Retain"}})]).await?;
    wait_converged(env, &names).await?;
    let namespace = before.tenants.get("empty").map(|t| text(t, "/status/namespace").to_owned()).unwrap_or_default();
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &namespace).get("empty-server").await?;
    let replicas = deployment.spec.and_then(|s| s.replicas);
    anyhow::ensure!(replicas == Some(3), "tenant empty's server has {replicas:?} replicas after its v1 change to 3");
    env.done(format!("{} tenants Running, {} created after the upgrade", names.len(), created.len()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_from_0_1_0_with_automatic_approval_loses_nothing() -> anyhow::Result<()> {
    let mut env = Env::start(
        "e2e upgrade-automatic",
        &crate::logs("upgrade-automatic"),
        6,
        &[Entry::released(OLD)],
        INSTALL_PLAN_RETRY,
    )
    .await?;
    let outcome = upgrade_automatically(&mut env).await;
    env.end(outcome).await
}

/// The catalog first offers 0.1.0 only; a catalog update brings this checkout's bundle, and OLM
/// upgrades without anyone approving.
async fn upgrade_automatically(env: &mut Env) -> anyhow::Result<()> {
    let (old, new) = (released_csv(OLD), head_csv()?);
    env.begin("install", "Subscription (Automatic) to a catalog offering 0.1.0");
    env.subscribe(None, "Automatic").await?;
    env.wait_installed(&old).await?;
    env.start_operator("operator-old", &released_binary(OLD)?).await?;
    let tenants: Vec<Value> = v1_tenants()
        .into_iter()
        .filter(|t| ["acme", "empty", "redis-tuned", "ingress-rules"].contains(&text(t, "/metadata/name")))
        .collect();
    let names = create_and_converge(env, &tenants).await?;
    let before = Snapshot::take(env, &names).await?;
    env.done(format!("{old} Succeeded, {} tenants Running", names.len()));

    env.begin("upgrade", "the catalog now offers this checkout's bundle; OLM upgrades by itself");
    env.replace_catalog(&[Entry::released(OLD), Entry::head(Some(OLD))?]).await?;
    let route = take_over(env, &new).await?;
    let plans = env.plans_of(&new).await?;
    anyhow::ensure!(
        plans.iter().all(|plan| text(plan, "/spec/approval") == "Automatic"),
        "the upgrade's InstallPlans: {plans:?}"
    );
    env.done(format!("{new} Succeeded without approval"));

    env.begin("after", "nothing lost");
    let summary = assert_nothing_lost(env, &names, &before, route).await?;
    env.done(summary);
    Ok(())
}

/// This checkout's bundle with `v1` gone from its CRD, as a careless next release would ship it.
fn bundle_dropping_v1(dir: &std::path::Path) -> anyhow::Result<Entry> {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::create_dir_all(dir.join("metadata"))?;
    std::fs::copy(bundle_dir().join("metadata/annotations.yaml"), dir.join("metadata/annotations.yaml"))?;
    let csv_name = format!("{}.v0.2.0-drops-v1", testenv::operatorhub::PACKAGE);
    for file in std::fs::read_dir(bundle_dir().join("manifests"))? {
        let path = file?.path();
        let mut manifest = read_yaml(&path)?;
        match text(&manifest, "/kind") {
            "CustomResourceDefinition" if text(&manifest, "/metadata/name") == CRD => {
                if let Some(versions) = manifest["spec"]["versions"].as_array_mut() {
                    versions.retain(|v| v["name"] != "v1");
                }
                manifest["spec"]["conversion"] = json!({"strategy": "None"});
            }
            "ClusterServiceVersion" => {
                manifest["metadata"]["name"] = json!(csv_name);
                manifest["spec"]["version"] = json!("0.2.0-drops-v1");
                if let Some(owned) = manifest["spec"]["customresourcedefinitions"]["owned"].as_array_mut() {
                    owned.retain(|crd| crd["version"] != "v1");
                }
                if let Some(webhooks) = manifest["spec"].as_object_mut() {
                    webhooks.remove("webhookdefinitions");
                }
            }
            _ => {}
        }
        std::fs::write(manifests.join(path.file_name().unwrap_or_default()), serde_yaml::to_string(&manifest)?)?;
    }
    Ok(Entry { csv: csv_name, replaces: Some(released_csv(OLD)), bundle: Some(dir.to_path_buf()) })
}

#[tokio::test(flavor = "multi_thread")]
async fn olm_refuses_a_bundle_dropping_a_stored_version_and_0_1_0_keeps_serving() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let bad = bundle_dropping_v1(scratch.path())?;
    let bad_csv = bad.csv.clone();
    // OLM fails the plan once its steps have failed for this long (a minute by default).
    let mut env = Env::start(
        "e2e refused-upgrade",
        &crate::logs("refused-upgrade"),
        4,
        &[Entry::released(OLD), bad],
        Duration::from_secs(5),
    )
    .await?;
    let outcome = refused(&mut env, &bad_csv).await;
    env.end(outcome).await
}

async fn refused(env: &mut Env, bad_csv: &str) -> anyhow::Result<()> {
    let old = released_csv(OLD);
    env.begin("install", "0.1.0 (Manual), its binary, a tenant through v1");
    env.subscribe(Some(&old), "Manual").await?;
    env.approve(&old).await?;
    env.wait_installed(&old).await?;
    env.start_operator("operator-old", &released_binary(OLD)?).await?;
    let first: Vec<Value> = v1_tenants().into_iter().filter(|t| text(t, "/metadata/name") == "acme").collect();
    create_and_converge(env, &first).await?;
    env.done(format!("{old} Succeeded, acme Running"));

    env.begin("refused", &format!("approve {bad_csv}, whose CRD drops the stored v1"));
    let plan = env.approve(bad_csv).await?;
    let plans = env.olm_api("InstallPlan", "installplans");
    let failed = env
        .wait(&format!("InstallPlan {plan} to fail"), async || {
            let plan = json_of(&plans.get(&plan).await?);
            Ok((text(&plan, "/status/phase") == "Failed").then_some(plan))
        })
        .await?;
    let messages: Vec<&str> =
        failed["status"]["conditions"].as_array().into_iter().flatten().map(|c| text(c, "/message")).collect();
    anyhow::ensure!(
        messages.iter().any(|m| m.contains("risk of data loss")),
        "InstallPlan {plan} failed for another reason: {messages:?}"
    );
    env.done(format!("InstallPlan {plan} Failed: {}", messages.join("; ")));

    env.begin("serving", "0.1.0 still installed and running, its CRD unchanged, still converging tenants");
    // OLM created the new CSV before the CRD step failed: the old one shows `Replacing` while the
    // new one never succeeds, and 0.1.0's Deployment stays as it was.
    let csvs = env.olm_api("ClusterServiceVersion", "clusterserviceversions");
    let old_phase = text(&json_of(&csvs.get(&old).await?), "/status/phase").to_owned();
    let bad_phase = match csvs.get_opt(bad_csv).await? {
        Some(csv) => text(&json_of(&csv), "/status/phase").to_owned(),
        None => "absent".to_owned(),
    };
    anyhow::ensure!(bad_phase != "Succeeded", "CSV {bad_csv} succeeded");
    let deployment = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
        env.client.clone(),
        testenv::operatorhub::INSTALL_NAMESPACE,
    )
    .get(testenv::operatorhub::PACKAGE)
    .await?;
    let owner = deployment.labels().get("olm.owner").cloned().unwrap_or_default();
    anyhow::ensure!(owner == old, "the operator Deployment now belongs to {owner}");
    let crd = Api::<CustomResourceDefinition>::all(env.client.clone()).get(CRD).await?;
    let versions: Vec<String> = crd.spec.versions.iter().map(|v| v.name.clone()).collect();
    anyhow::ensure!(versions == ["v1"], "the CRD's versions became {versions:?}");
    let second: Vec<Value> = v1_tenants().into_iter().filter(|t| text(t, "/metadata/name") == "redis-tuned").collect();
    create_and_converge(env, &second).await?;
    env.done(format!("{old} {old_phase}, {bad_csv} {bad_phase}, its Deployment unchanged; the CRD serves v1 only; a new tenant converged"));
    Ok(())
}
