//! The storage-version migration on a real API server and etcd, after an upgrade from 0.1.0:
//! tenants created through 0.1.0's CRD (v1 stored) are rewritten at v2 in etcd, the CRD's
//! `storedVersions` trimmed; a run interrupted resumes without re-patching finished pages; users'
//! writes during it are never lost or undone; the trim is refused when the CRD stores another
//! version.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use neurallog_tenant_operator::metrics::Metrics;
use neurallog_tenant_operator::migration::{
    self, CRD_NAME, MigrationSettings, Outcome, PROGRESS_LEASE, Pause, PausePoint, Trim,
};
use serde_json::json;
use testenv::repo_root;
use tokio::sync::oneshot;

use crate::support::{ConversionWebhook, DEADLINE, Harness, OperatorProcess, poll, writes_of};

/// The operator's namespace, where its Leases live.
const NAMESPACE: &str = "neurallog-system";

fn version(h: &Harness, version: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", version, "Tenant"));
    Api::all_with(h.admin.clone(), &resource)
}

fn name(i: usize) -> String {
    format!("t-{i:03}")
}

async fn create_v1(h: &Harness, name: &str) {
    let manifest = json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": name},
                          "spec": {"displayName": format!("Tenant {name}")}});
    version(h, "v1")
        .create(&PostParams::default(), &serde_json::from_value(manifest).unwrap())
        .await
        .expect("v1 create");
}

/// The apiVersion etcd holds a tenant at, or `None` when it holds none.
async fn stored_version(h: &Harness, name: &str) -> Option<String> {
    let bytes = h.plane.etcd_get(&format!("/registry/neurallog.io/tenants/{name}")).await.expect("etcd answers")?;
    let object: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON object in etcd");
    object["apiVersion"].as_str().map(str::to_owned)
}

fn stored_versions(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.status.as_ref().and_then(|s| s.stored_versions.clone()).unwrap_or_default()
}

async fn crd(h: &Harness) -> CustomResourceDefinition {
    Api::<CustomResourceDefinition>::all(h.admin.clone()).get(CRD_NAME).await.expect("the CRD")
}

/// A plane upgraded from 0.1.0: `count` tenants created through 0.1.0's CRD (v1 stored), then
/// 0.2.0's CRD in its place calling the in-process webhook, the operator's roles granted
/// (ClusterRole, and the Lease Role in its namespace).
async fn upgraded(count: usize) -> Harness {
    let mut h = Harness::bare(&[]).await;
    h.plane.install_crd(&repo_root().join("tests/fixtures/crd-0.1.0.yaml")).await.expect("0.1.0's CRD installs");
    futures::future::join_all((0..count).map(|i| {
        let h = &h;
        async move { create_v1(h, &name(i)).await }
    }))
    .await;
    let webhook = ConversionWebhook::start(h.plane.dir().join("webhook-certs")).await;
    let crd = repo_root().join("config/crd/bases/neurallog.io_tenants.yaml");
    h.plane.replace_crd_converting(&crd, &webhook.url(), &webhook.pki.ca_pem).await.expect("0.2.0's CRD replaces it");
    h.webhook = Some(webhook);
    h.plane.grant_operator(&repo_root().join("config/rbac")).await.expect("role installs");
    grant_leases(&h).await;
    let v2 = version(&h, "v2");
    poll("v2 is served", async || v2.list(&ListParams::default().limit(1)).await.ok()).await;
    h
}

/// The operator's Lease Role (config/rbac) in its namespace, bound to the operator user.
async fn grant_leases(h: &Harness) {
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    Api::<Namespace>::all(h.admin.clone()).create(&PostParams::default(), &namespace).await.expect("namespace");
    let text = std::fs::read_to_string(repo_root().join("config/rbac/leader_election_role.yaml")).unwrap();
    let role: Role = serde_yaml::from_str(&text).expect("a Role");
    let role_name = role.metadata.name.clone().unwrap();
    Api::<Role>::namespaced(h.admin.clone(), NAMESPACE).create(&PostParams::default(), &role).await.expect("role");
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some(role_name.clone()), ..ObjectMeta::default() },
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: role_name },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: testenv::OPERATOR_USER.into(),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(h.admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let operator = Client::try_from(h.plane.operator_config().await.unwrap()).unwrap();
    let leases = Api::<Lease>::namespaced(operator, NAMESPACE);
    poll("the operator may read Leases", async || leases.list(&ListParams::default()).await.ok()).await;
}

/// The operator's client, its requests counted in the returned metrics.
async fn operator(h: &Harness) -> (Client, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let config = h.plane.operator_config().await.unwrap();
    (neurallog_tenant_operator::runtime::client::counted(config, metrics.clone()).unwrap(), metrics)
}

fn settings(page_size: u32) -> MigrationSettings {
    MigrationSettings { page_size, progress_namespace: Some(NAMESPACE.into()), ..MigrationSettings::default() }
}

async fn resource_versions(h: &Harness) -> BTreeMap<String, String> {
    version(h, "v2")
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| (t.metadata.name.unwrap(), t.metadata.resource_version.unwrap()))
        .collect()
}

async fn progress(h: &Harness) -> BTreeMap<String, String> {
    let lease = Api::<Lease>::namespaced(h.admin.clone(), NAMESPACE).get_opt(PROGRESS_LEASE).await.unwrap();
    lease.and_then(|l| l.metadata.annotations).unwrap_or_default()
}

/// Every tenant `0..count` is stored at v2 in etcd, and `storedVersions` says only v2.
async fn assert_migrated(h: &Harness, count: usize) {
    for i in 0..count {
        assert_eq!(stored_version(h, &name(i)).await.as_deref(), Some("neurallog.io/v2"), "{}", name(i));
    }
    assert_eq!(stored_versions(&crd(h).await), ["v2"]);
}

fn patches(metrics: &Metrics) -> f64 {
    writes_of(metrics).get("PATCH tenants").copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_rewrites_every_v1_tenant_at_v2_trims_stored_versions_and_then_sends_nothing() {
    let count = 12;
    let h = upgraded(count).await;
    assert_eq!(stored_version(&h, &name(0)).await.as_deref(), Some("neurallog.io/v1"), "0.1.0 stored v1");
    assert_eq!(stored_versions(&crd(&h).await), ["v1", "v2"]);

    let (client, metrics) = operator(&h).await;
    let outcome = migration::run(client, settings(5), metrics.clone()).await.expect("migration runs");
    let Outcome::Migrated(counts) = outcome else { panic!("not migrated: {outcome:?}") };
    assert_eq!((counts.migrated, counts.skipped, counts.failed), (count as u64, 0, 0));
    assert_migrated(&h, count).await;
    assert!(progress(&h).await.keys().all(|k| !k.starts_with("migration.neurallog.io/")), "progress cleared");
    let text = metrics.encode().unwrap();
    assert!(text.contains("storage_migration_objects_total{result=\"migrated\"} 12"), "{text}");
    assert!(text.contains("storage_migration_remaining 0"), "{text}");
    assert_eq!(patches(&metrics), count as f64, "one patch per tenant: {:?}", writes_of(&metrics));
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(h.admin.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let reasons: Vec<_> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(
        reasons.contains(&"StorageMigrationStarted".into()) && reasons.contains(&"StorageMigrated".into()),
        "{reasons:?}"
    );

    // A second run: nothing to do, nothing sent, nothing rewritten.
    let before = resource_versions(&h).await;
    let (client, metrics) = operator(&h).await;
    let outcome = migration::run(client, settings(5), metrics.clone()).await.expect("migration runs");
    assert_eq!(outcome, Outcome::AlreadyMigrated);
    assert!(writes_of(&metrics).is_empty(), "no write: {:?}", writes_of(&metrics));
    assert_eq!(resource_versions(&h).await, before);

    // Even the patches themselves, sent again to tenants at v2, rewrite nothing.
    let tenants = Api::<neurallog_tenant_operator::api::Tenant>::all(h.admin.clone());
    for (name, rv) in &before {
        let patch = json!({"metadata": {"resourceVersion": rv}});
        let after = tenants.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        assert_eq!(after.metadata.resource_version.as_ref(), Some(rv), "{name} not rewritten");
    }
}

/// Settings whose pass holds for ever at `point`, and what tells the test it got there.
fn held_at(page: u32, point: PausePoint) -> (MigrationSettings, oneshot::Receiver<()>) {
    let (reached, reached_rx) = oneshot::channel();
    let reached = std::sync::Mutex::new(Some(reached));
    let pause = Pause::new(move |at| {
        let reached = (at == point).then(|| reached.lock().unwrap().take()).flatten();
        async move {
            if let Some(reached) = reached {
                let _ = reached.send(());
                std::future::pending::<()>().await;
            }
        }
    });
    (MigrationSettings { pause: Some(pause), ..settings(page) }, reached_rx)
}

/// Waits until a held pass has reached its pause point.
async fn reached(point: oneshot::Receiver<()>) {
    tokio::time::timeout(DEADLINE, point).await.expect("the pass reaches its pause point").expect("pass alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_migration_resumes_after_its_last_page() {
    let (count, page) = (40, 5);
    let h = upgraded(count).await;
    let mut sent = 0.0;
    // Stopped twice mid-run, each time held right after a page's progress was saved: after page 1,
    // then (resuming) after page 4.
    for stop_after in [1, 4] {
        let (client, metrics) = operator(&h).await;
        let (settings, at) = held_at(page, PausePoint::PageDone(stop_after));
        let task = tokio::spawn(migration::run(client, settings, metrics.clone()));
        reached(at).await;
        assert!(!task.is_finished(), "held mid-run");
        assert_eq!(progress(&h).await.get("migration.neurallog.io/pages"), Some(&stop_after.to_string()));
        task.abort();
        let _ = task.await;
        sent += patches(&metrics);
    }
    let persisted = progress(&h).await;
    assert!(persisted.contains_key("migration.neurallog.io/continue"), "{persisted:?}");
    assert_eq!(sent, (4 * page) as f64, "pages 1 to 4 patched once each");

    let (client, metrics) = operator(&h).await;
    let outcome = migration::run(client, settings(page), metrics.clone()).await.expect("migration runs");
    assert!(matches!(outcome, Outcome::Migrated(c) if c.failed == 0), "{outcome:?}");
    sent += patches(&metrics);
    assert_migrated(&h, count).await;
    // Stopped after a saved page, a run costs nothing again: finished pages are never re-patched.
    assert_eq!(sent, count as f64, "{sent} patches for {count} tenants");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_resumed_after_its_continue_token_expired_still_visits_every_tenant() {
    let (count, page) = (30, 5);
    let h = upgraded(count).await;
    let (client, metrics) = operator(&h).await;
    let (settings_held, at) = held_at(page, PausePoint::PageDone(1));
    let task = tokio::spawn(migration::run(client, settings_held, metrics.clone()));
    reached(at).await;
    task.abort();
    let _ = task.await;
    let mut sent = patches(&metrics);
    // The persisted token's snapshot is compacted away: the next list answers 410 Gone. (The
    // API server serves recent tokens from its watch cache, so the token is also aged.)
    h.plane.etcd_compact().await.expect("etcd compacts");
    let leases = Api::<Lease>::namespaced(h.admin.clone(), NAMESPACE);
    let token = progress(&h).await.get("migration.neurallog.io/continue").cloned().expect("a persisted token");
    let aged = testenv::continue_token_at(&token, 2).expect("a continue token");
    let patch = json!({"metadata": {"annotations": {"migration.neurallog.io/continue": aged}}});
    leases.patch(PROGRESS_LEASE, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let v2 = version(&h, "v2");
    let gone = v2.list_metadata(&ListParams::default().limit(5).continue_token(&aged)).await;
    assert!(matches!(&gone, Err(kube::Error::Api(s)) if s.code == 410), "{gone:?}");

    let (client, metrics) = operator(&h).await;
    let outcome = migration::run(client, settings(page), metrics.clone()).await.expect("migration runs");
    assert!(matches!(outcome, Outcome::Migrated(c) if c.failed == 0), "{outcome:?}");
    sent += patches(&metrics);
    assert_migrated(&h, count).await;
    let bound = (count + page as usize) as f64;
    assert!(sent <= bound, "{sent} patches for {count} tenants, bound {bound}");
}

/// What users do to tenant `i` during the migration: every fifth deleted, every third (of the
/// others) relabelled and edited through v1; the rest are left alone.
fn touched(i: usize) -> bool {
    i.is_multiple_of(5) || i.is_multiple_of(3)
}

/// A tenant's spec through v1 and v2, its labels and annotations: what a migration must not
/// change.
async fn contents(h: &Harness, name: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let v1 = version(h, "v1").get(name).await.unwrap();
    let v2 = version(h, "v2").get(name).await.unwrap();
    let meta = json!({"labels": v2.metadata.labels, "annotations": v2.metadata.annotations});
    (v1.data["spec"].clone(), v2.data["spec"].clone(), meta)
}

#[tokio::test(flavor = "multi_thread")]
async fn users_writes_during_the_migration_are_neither_lost_nor_undone() {
    let (count, page) = (60, 4);
    let pages = count / page;
    let h = upgraded(count).await;
    let mut untouched_before = BTreeMap::new();
    for i in (0..count).filter(|i| !touched(*i)) {
        untouched_before.insert(name(i), contents(&h, &name(i)).await);
    }

    // The pass stops after each page until the test lets it go on; users write meanwhile.
    let (paused, mut pauses) = tokio::sync::mpsc::unbounded_channel::<(PausePoint, oneshot::Sender<()>)>();
    let pause = Pause::new(move |point| {
        let (resume, resumed) = oneshot::channel();
        let paused = paused.send((point, resume)).is_ok();
        async move {
            if paused {
                let _ = resumed.await;
            }
        }
    });
    let (client, metrics) = operator(&h).await;
    let settings = MigrationSettings { concurrency: 4, pause: Some(pause), ..settings(page as u32) };
    let migration = tokio::spawn(migration::run(client, settings, metrics));
    let v1s = version(&h, "v1");
    let v2s = version(&h, "v2");
    // Tenant i is written while the pass stands after page 1 + i % 14 (of 15): some on pages the
    // pass has visited, some on pages still to come. Ten new tenants too, half per version.
    let mut written_ahead = 0;
    let mut points = Vec::new();
    while let Some((point, resume)) = tokio::time::timeout(DEADLINE, pauses.recv()).await.expect("the pass goes on") {
        points.push(point);
        if let PausePoint::PageDone(done) = point {
            for i in (0..count).filter(|i| (1 + i % 14) as u64 == done) {
                // The list pages go by name, `page` at a time: tenant i is on page i / page + 1.
                let ahead = (i / page + 1) as u64 > done;
                if i % 5 == 0 {
                    v1s.delete(&name(i), &DeleteParams::default()).await.expect("delete");
                    written_ahead += usize::from(ahead);
                } else if i % 3 == 0 {
                    let patch = json!({"metadata": {"labels": {"edited": "yes"}}, "spec": {"displayName": format!("edited {i}")}});
                    v1s.patch(&name(i), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("update");
                    written_ahead += usize::from(ahead);
                }
                if i % 6 == 0 {
                    let new = format!("new-{i:03}");
                    if i % 12 == 0 {
                        create_v1(&h, &new).await;
                    } else {
                        let manifest = json!({"apiVersion": "neurallog.io/v2", "kind": "Tenant", "metadata": {"name": new}, "spec": {}});
                        v2s.create(&PostParams::default(), &serde_json::from_value(manifest).unwrap())
                            .await
                            .expect("v2 create");
                    }
                }
            }
        }
        let _ = resume.send(());
    }
    let outcome = migration.await.unwrap().expect("migration runs");
    let expected_points: Vec<PausePoint> =
        (1..=pages as u64).map(PausePoint::PageDone).chain([PausePoint::BeforeTrim]).collect();
    assert_eq!(points, expected_points, "the pass stood after every page, then before the trim");
    assert!(written_ahead > 0, "some writes landed on pages the pass had yet to visit");
    // The pass lists one snapshot: a tenant written (or deleted) before its page came is found
    // changed (409) or gone (404), and skipped; every other tenant is rewritten.
    let Outcome::Migrated(counts) = outcome else { panic!("not migrated: {outcome:?}") };
    assert_eq!(
        (counts.migrated, counts.skipped, counts.failed),
        ((count - written_ahead) as u64, written_ahead as u64, 0)
    );

    for i in 0..count {
        let found = v1s.get_opt(&name(i)).await.unwrap();
        if i % 5 == 0 {
            assert!(found.is_none(), "{} came back", name(i));
            assert_eq!(stored_version(&h, &name(i)).await, None, "{} is gone from etcd", name(i));
            continue;
        }
        let found = found.expect("still there");
        if i % 3 == 0 {
            assert_eq!(found.data["spec"]["displayName"], format!("edited {i}"), "{}", name(i));
            assert_eq!(found.metadata.labels.as_ref().and_then(|l| l.get("edited")).map(String::as_str), Some("yes"));
        }
        assert_eq!(stored_version(&h, &name(i)).await.as_deref(), Some("neurallog.io/v2"), "{}", name(i));
    }
    for (name, before) in &untouched_before {
        assert_eq!(&contents(&h, name).await, before, "{name}, which nobody wrote, is as it was");
    }
    for i in (0..count).filter(|i| i % 6 == 0) {
        assert_eq!(stored_version(&h, &format!("new-{i:03}")).await.as_deref(), Some("neurallog.io/v2"));
    }
    assert_eq!(stored_versions(&crd(&h).await), ["v2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trim_is_refused_when_the_crd_stores_another_version() {
    let h = upgraded(3).await;
    // Someone puts v1 back as the storage version after the objects were migrated.
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    let mut changed = crd(&h).await;
    for version in &mut changed.spec.versions {
        version.storage = version.name == "v1";
    }
    crds.replace(CRD_NAME, &PostParams::default(), &changed).await.expect("storage version changed");

    let (client, metrics) = operator(&h).await;
    let decision = migration::trim(client.clone(), None).await.expect("trim decides");
    assert!(matches!(&decision, Trim::Refused(reason) if reason.contains("v1")), "{decision:?}");
    let outcome = migration::run(client, settings(5), metrics.clone()).await.expect("migration runs");
    assert!(matches!(outcome, Outcome::Refused { .. }), "{outcome:?}");
    assert_eq!(stored_versions(&crd(&h).await), ["v1", "v2"], "nothing trimmed");
    // Nothing written but the Warning that says why.
    assert_eq!(writes_of(&metrics).keys().collect::<Vec<_>>(), ["POST events"], "{:?}", writes_of(&metrics));
    assert_eq!(crd_events(&h, "StorageMigrationRefused").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_version_switched_away_and_back_during_a_pass_is_not_trimmed_but_passed_again() {
    let count = 10;
    let h = upgraded(count).await;
    let began = crd(&h).await.metadata.generation;
    // During the pass, v1 is the storage version for a while: a tenant written then is v1 again.
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    let switch = async |storage: &str| {
        let mut changed = crd(&h).await;
        for version in &mut changed.spec.versions {
            version.storage = version.name == storage;
        }
        crds.replace(CRD_NAME, &PostParams::default(), &changed).await.expect("storage version switched");
    };
    // Every tenant at v2 first (as a pass would leave them), then v1 stored for a while.
    for i in 0..count {
        let touched = json!({"metadata": {"labels": {"touched": "v2"}}});
        version(&h, "v2").patch(&name(i), &PatchParams::default(), &Patch::Merge(&touched)).await.unwrap();
    }
    assert_eq!(stored_version(&h, &name(0)).await.as_deref(), Some("neurallog.io/v2"));
    switch("v1").await;
    // The API server takes up a new storage version on its own time: write until it has.
    let mut attempt = 0;
    poll("a tenant written as v1 again", async || {
        attempt += 1;
        let touched = json!({"metadata": {"labels": {"touched": format!("v1-{attempt}")}}});
        version(&h, "v1").patch(&name(0), &PatchParams::default(), &Patch::Merge(&touched)).await.ok()?;
        (stored_version(&h, &name(0)).await.as_deref() == Some("neurallog.io/v1")).then_some(())
    })
    .await;
    switch("v2").await;

    let (client, metrics) = operator(&h).await;
    assert_eq!(migration::trim(client.clone(), began).await.expect("trim decides"), Trim::Changed);
    assert_eq!(stored_versions(&crd(&h).await), ["v1", "v2"], "nothing trimmed");
    // A pass that begins now sees the CRD as it is, and may trim.
    let outcome = migration::run(client, settings(4), metrics).await.expect("migration runs");
    assert!(matches!(outcome, Outcome::Migrated(c) if c.failed == 0), "{outcome:?}");
    assert_migrated(&h, count).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_migrates_on_its_own_after_an_upgrade_in_one_trace() {
    let count = 8;
    let jaeger = testenv::jaeger::Jaeger::start().await.expect("jaeger starts");
    let h = upgraded(count).await;
    let args = ["--leader-elect", "--lease-duration-seconds", "10", "--lease-renew-before-seconds", "5"];
    let env = [
        ("POD_NAMESPACE", NAMESPACE.to_owned()),
        ("RUST_LOG", "info,kube=warn".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_grpc_endpoint()),
        ("OTEL_SERVICE_NAME", "migrating-operator".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let leader = OperatorProcess::start(&h, "operator-a", h.plane.operator_kubeconfig(), &args, &env);
    poll("storedVersions trimmed by the leader", async || (stored_versions(&crd(&h).await) == ["v2"]).then_some(()))
        .await;
    assert_migrated(&h, count).await;
    let metrics = poll("the leader's metrics", async || leader.metrics().await).await;
    // The controller starts beside it and writes the tenants too (finalizer, status), which also
    // stores them at v2: those count as skipped.
    let result = |r: &str| {
        let key = format!("neurallog_tenant_operator_storage_migration_objects_total{{result=\"{r}\"}}");
        metrics.get(&key).copied().unwrap_or(0.0)
    };
    assert_eq!((result("migrated") + result("skipped"), result("failed")), (count as f64, 0.0), "{metrics:?}");
    leader.terminate().await;

    // One trace: the run, its page, the trim.
    let names = poll("the migration's trace in Jaeger", async || {
        let traces = jaeger.traces("migrating-operator").await.ok()?;
        traces.iter().find_map(|trace| {
            let names: Vec<String> = trace["spans"]
                .as_array()?
                .iter()
                .filter_map(|s| s["operationName"].as_str().map(str::to_owned))
                .collect();
            names.iter().any(|n| n == "migrate storage version").then_some(names)
        })
    })
    .await;
    assert!(names.iter().any(|n| n == "migrate page 1"), "{names:?}");
    assert!(names.iter().any(|n| n == "update CustomResourceDefinition tenants.neurallog.io status"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_mid_migration_is_succeeded_by_one_that_resumes_after_the_last_page() {
    let (count, page) = (60, 5);
    let h = upgraded(count).await;
    let args = [
        "--leader-elect",
        "--lease-duration-seconds",
        "4",
        "--lease-renew-before-seconds",
        "2",
        "--migration-page-size",
        "5",
    ];
    let env = [("POD_NAMESPACE", NAMESPACE), ("RUST_LOG", "info,kube=warn")];
    let visits = |metrics: &BTreeMap<String, f64>| -> f64 {
        metrics
            .iter()
            .filter(|(k, _)| k.starts_with("neurallog_tenant_operator_storage_migration_objects_total"))
            .map(|(_, v)| v)
            .sum()
    };
    // Killed (SIGKILL, no cleanup) at several points of the pass: each leader holds its pass
    // right after saving the page the test kills it at (a test-only hold of the test build).
    let mut persisted_pages = 0;
    for (round, kill_at) in [2u64, 6].into_iter().enumerate() {
        let held = kill_at.to_string();
        let env: Vec<(&str, &str)> =
            env.iter().copied().chain([(migration::HOLD_AFTER_PAGE_VARIABLE, held.as_str())]).collect();
        let first =
            OperatorProcess::start(&h, &format!("operator-{round}"), h.plane.operator_kubeconfig(), &args, &env);
        poll("pages persisted", async || {
            let pages: u64 = progress(&h).await.get("migration.neurallog.io/pages")?.parse().ok()?;
            (pages >= kill_at).then_some(())
        })
        .await;
        first.kill().await;
        persisted_pages = progress(&h).await["migration.neurallog.io/pages"].parse::<u64>().unwrap();
        assert_eq!(persisted_pages, kill_at, "the leader held its pass after page {kill_at}");
        assert!(stored_versions(&crd(&h).await).contains(&"v1".to_owned()), "killed before the trim");
    }
    let successor = OperatorProcess::start(&h, "operator-last", h.plane.operator_kubeconfig(), &args, &env);
    poll("storedVersions trimmed by the successor", async || (stored_versions(&crd(&h).await) == ["v2"]).then_some(()))
        .await;
    assert_migrated(&h, count).await;
    // The successor visited exactly what the last kill left: the pages not yet persisted.
    let visited = visits(&poll("the successor's metrics", async || successor.metrics().await).await);
    let left = (count as u64 - persisted_pages * page) as f64;
    assert_eq!(visited, left, "the successor visited {visited} tenants; {left} were left after page {persisted_pages}");
    eprintln!("killed at pages 2 and 6; the successor visited {visited} of {count}");
}

/// How many times the client behind `metrics` read CustomResourceDefinitions.
fn crd_reads(metrics: &Metrics) -> f64 {
    let text = metrics.encode().unwrap();
    let key = "neurallog_tenant_operator_api_requests_total{method=\"GET\",resource=\"customresourcedefinitions\"} ";
    text.lines().find_map(|line| line.strip_prefix(key)).map_or(0.0, |count| count.parse().unwrap())
}

/// The operator's Events about the CRD with `reason`.
async fn crd_events(h: &Harness, reason: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(h.admin.clone(), "default");
    let all = events.list(&ListParams::default()).await.unwrap().items;
    all.into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(CRD_NAME))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("CustomResourceDefinition"))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_that_cannot_start_says_why_in_one_warning_event_on_the_crd_per_cause() {
    // No CRD yet: every run fails at its start, and is tried again.
    let h = Harness::bare(&[]).await;
    h.plane.grant_operator(&repo_root().join("config/rbac")).await.expect("role installs");
    let (client, metrics) = operator(&h).await;
    let settings = MigrationSettings { first_retry: std::time::Duration::from_millis(100), ..settings(5) };
    let task = tokio::spawn(migration::run_until_done(client, settings, metrics.clone()));
    poll("three runs that could not read the CRD", async || (crd_reads(&metrics) >= 3.0).then_some(())).await;
    let failed = crd_events(&h, "StorageMigrationFailed").await;
    assert_eq!(failed.len(), 1, "one Event: {failed:?}");
    let event = &failed[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.clone().unwrap_or_default();
    assert!(note.contains(&format!("CustomResourceDefinition {CRD_NAME}")) && note.contains("not found"), "{note}");
    assert!(event.series.is_none(), "published once, not once per retry: {event:?}");

    // Then a CRD that stores v1 only (0.1.0's): the migration is refused, which says why.
    h.plane.install_crd(&repo_root().join("tests/fixtures/crd-0.1.0.yaml")).await.expect("0.1.0's CRD installs");
    tokio::time::timeout(DEADLINE, task).await.expect("a refused migration stops").expect("no panic");
    let refused = crd_events(&h, "StorageMigrationRefused").await;
    assert_eq!(refused.len(), 1, "one Event: {refused:?}");
    let event = &refused[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.clone().unwrap_or_default();
    assert!(
        note.contains(&format!("CustomResourceDefinition {CRD_NAME}")) && note.contains("stores [\"v1\"]"),
        "{note}"
    );
    assert_eq!(event.regarding.as_ref().and_then(|r| r.uid.clone()), crd(&h).await.metadata.uid);
    assert!(writes_of(&metrics).keys().all(|write| write.ends_with(" events")), "{:?}", writes_of(&metrics));
    assert_eq!(crd_events(&h, "StorageMigrationFailed").await.len(), 1, "the first cause, still once");
}
