//! Deleting tenants safely: `Retain` keeps the namespace and the Redis volume, a re-created tenant
//! adopts them, a replace that leaves the policy out keeps it, an uninstall deletes no namespace,
//! and a tenant re-created while its old namespace terminates waits, then converges.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{CustomResourceExt as _, ResourceExt};
use neurallog_tenant_operator::api::v1::Tenant;
use serde_json::json;

use crate::support::{Controllers, Harness, condition, poll, wait_deleted, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

const POLICY: &str = "neurallog.io/deletion-policy";

#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_namespace_and_volume_and_a_new_tenant_adopts_them() {
    // The StatefulSet controller creates the Redis volume claim; the garbage collector finishes
    // foreground deletions.
    let h = Harness::with_controllers(&["namespace", "garbagecollector", "statefulset"]).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("keep").spec(json!({"deletionPolicy": "Retain"})).manifest()).await.unwrap();
    let claims = h.namespaced::<PersistentVolumeClaim>("tenant-keep");
    let claim = wait_for(&claims, "redis-data-keep-redis-0", "is created by the StatefulSet", |_| true).await;
    let secrets = h.namespaced::<Secret>("tenant-keep");
    let password = wait_for(&secrets, "keep-redis-auth", "is created", |_| true).await;
    let first = h.tenants().get("keep").await.unwrap();

    h.tenants().delete("keep", &DeleteParams::default()).await.unwrap();
    wait_deleted(&h.tenants(), "keep", &first.uid().unwrap()).await;

    let namespace = Api::<Namespace>::all(h.admin.clone()).get("tenant-keep").await.unwrap();
    assert!(namespace.metadata.deletion_timestamp.is_none(), "the namespace is kept");
    assert_eq!(namespace.labels().get("neurallog.io/retained").map(String::as_str), Some("true"));
    let kept = claims.get("redis-data-keep-redis-0").await.unwrap();
    assert_eq!(kept.uid(), claim.uid(), "the Redis volume claim is kept");
    assert!(kept.metadata.deletion_timestamp.is_none());
    let empty = |items: usize, kind: &str| assert_eq!(items, 0, "no {kind} is left in the retained namespace");
    let all = ListParams::default();
    empty(h.namespaced::<Deployment>("tenant-keep").list(&all).await.unwrap().items.len(), "Deployment");
    empty(h.namespaced::<StatefulSet>("tenant-keep").list(&all).await.unwrap().items.len(), "StatefulSet");
    empty(h.namespaced::<Service>("tenant-keep").list(&all).await.unwrap().items.len(), "Service");
    let config_maps = h.namespaced::<ConfigMap>("tenant-keep").list(&all).await.unwrap();
    assert!(config_maps.items.iter().all(|c| c.labels().get("neurallog.io/tenant").is_none()), "no managed ConfigMap");
    let kept_password = secrets.get("keep-redis-auth").await.unwrap();
    assert_eq!(kept_password.uid(), password.uid(), "the password Secret is kept with the volume");
    assert!(kept_password.finalizers().is_empty(), "released");
    assert!(kept_password.owner_references().is_empty(), "no longer the deleted tenant's");

    h.create_tenant(TestTenant::new("keep").manifest()).await.unwrap();
    let adopted = wait_for(&h.tenants(), "keep", "adopts the namespace", |t| {
        condition(t, "NamespaceReady").is_some_and(|c| c.status == "True")
    })
    .await;
    let namespace = Api::<Namespace>::all(h.admin.clone()).get("tenant-keep").await.unwrap();
    assert_eq!(namespace.annotations()["neurallog.io/tenant-uid"], adopted.uid().unwrap());
    assert!(!namespace.labels().contains_key("neurallog.io/retained"));
    wait_for(&h.namespaced::<StatefulSet>("tenant-keep"), "keep-redis", "is re-created", |_| true).await;
    assert_eq!(claims.get("redis-data-keep-redis-0").await.unwrap().uid(), claim.uid(), "same data volume");
    let held = wait_for(&secrets, "keep-redis-auth", "is held by the new tenant", |s| {
        s.owner_references().iter().any(|o| Some(&o.uid) == adopted.uid().as_ref()) && !s.finalizers().is_empty()
    })
    .await;
    assert_eq!(held.uid(), password.uid(), "the same password Secret");
    assert_eq!(held.data, password.data, "the same password");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_recreated_while_its_old_namespace_terminates_waits_then_converges() {
    let h = Harness::start(Controllers::Deletion).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("again").manifest()).await.unwrap();
    wait_for(&h.namespaced::<Deployment>("tenant-again"), "again-server", "is created", |_| true).await;

    // Something in the namespace holds its deletion, as a slow volume or a finalizer would.
    let held = ConfigMap {
        metadata: ObjectMeta {
            name: Some("held".into()),
            finalizers: Some(vec!["example.org/hold".into()]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let config_maps = h.namespaced::<ConfigMap>("tenant-again");
    config_maps.create(&PostParams::default(), &held).await.unwrap();

    let first = h.tenants().get("again").await.unwrap();
    h.tenants().delete("again", &DeleteParams::default()).await.unwrap();
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    let old =
        wait_for(&namespaces, "tenant-again", "is terminating", |n| n.metadata.deletion_timestamp.is_some()).await;
    // A user gives up waiting and removes the finalizer by hand: the old Tenant goes at once.
    let release = json!({"metadata": {"finalizers": null}});
    h.tenants().patch("again", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    wait_deleted(&h.tenants(), "again", &first.uid().unwrap()).await;

    h.create_tenant(TestTenant::new("again").manifest()).await.unwrap();
    let waiting = wait_for(&h.tenants(), "again", "waits for the old namespace", |t| {
        condition(t, "NamespaceReady").is_some_and(|c| c.reason == "NamespaceTerminating")
    })
    .await;
    let second_uid = waiting.uid().unwrap();
    poll("an event says the tenant waits", async || {
        let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap();
        events
            .items
            .into_iter()
            .find(|e| {
                e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(second_uid.as_str())
                    && e.note.as_deref().is_some_and(|n| n.contains("still terminating"))
            })
            .map(drop)
    })
    .await;

    config_maps.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    wait_deleted(&namespaces, "tenant-again", &old.uid().unwrap()).await;
    let converged = wait_for(&h.tenants(), "again", "converges in a new namespace", |t| {
        condition(t, "NamespaceReady").is_some_and(|c| c.status == "True")
    })
    .await;
    let namespace = namespaces.get("tenant-again").await.unwrap();
    assert_eq!(namespace.annotations()["neurallog.io/tenant-uid"], converged.uid().unwrap());
    wait_for(&h.namespaced::<Deployment>("tenant-again"), "again-server", "is re-created", |_| true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uninstall_deletes_no_namespace_and_a_reinstalled_tenant_adopts_its_data() {
    let mut h = Harness::with_controllers(&["namespace", "garbagecollector", "statefulset"]).await;
    let _operator = h.start_operator().await;
    let policies = [("dropped", json!({})), ("kept", json!({"deletionPolicy": "Retain"}))];
    let mut claims = Vec::new();
    for (name, spec) in &policies {
        h.create_tenant(TestTenant::new(name).spec(spec.clone()).manifest()).await.unwrap();
        let api = h.namespaced::<PersistentVolumeClaim>(&format!("tenant-{name}"));
        let claim = wait_for(&api, &format!("redis-data-{name}-redis-0"), "is created", |_| true).await;
        wait_for(&h.tenants(), name, "has its finalizer", |t| !t.finalizers().is_empty()).await;
        claims.push((api, claim));
    }

    // `kubectl delete crd`, as `kubectl delete -k config/default` does while the operator runs:
    // the API server deletes every Tenant, and the operator sees each deletion.
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    let crd = crds.get(Tenant::crd_name()).await.unwrap();
    crds.delete(Tenant::crd_name(), &DeleteParams::default()).await.unwrap();
    wait_deleted(&crds, Tenant::crd_name(), &crd.uid().unwrap()).await;

    let namespaces = Api::<Namespace>::all(h.admin.clone());
    for ((name, _), (api, claim)) in policies.iter().zip(&claims) {
        let namespace = namespaces.get(&format!("tenant-{name}")).await.unwrap();
        assert!(namespace.metadata.deletion_timestamp.is_none(), "{name}: an uninstall deletes no namespace");
        assert_eq!(namespace.labels().get("neurallog.io/retained").map(String::as_str), Some("true"), "{name}");
        let kept = api.get(&claim.name_any()).await.unwrap();
        assert_eq!(kept.uid(), claim.uid(), "{name}: the Redis volume claim is kept");
    }
    let uninstalled = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap();
    let notes = uninstalled.items.iter().filter(|e| e.reason.as_deref() == Some("Uninstalled")).count();
    assert_eq!(notes, 2, "one Uninstalled event per tenant");

    // Reinstalled, the tenants created again adopt their namespaces and volumes.
    h.install_crd().await;
    for ((name, spec), (api, claim)) in policies.iter().zip(&claims) {
        h.create_tenant(TestTenant::new(name).spec(spec.clone()).manifest()).await.unwrap();
        let adopted = wait_for(&h.tenants(), name, "adopts its namespace", |t| {
            condition(t, "NamespaceReady").is_some_and(|c| c.status == "True")
        })
        .await;
        let namespace = namespaces.get(&format!("tenant-{name}")).await.unwrap();
        assert_eq!(namespace.annotations()["neurallog.io/tenant-uid"], adopted.uid().unwrap());
        assert_eq!(api.get(&claim.name_any()).await.unwrap().uid(), claim.uid(), "{name}: same data volume");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replace_that_leaves_the_deletion_policy_out_keeps_retain_and_delete_takes_an_explicit_value() {
    let h = Harness::start(Controllers::Deletion).await;
    let _operator = h.start_operator().await;
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    let recorded = async |want: &str| {
        wait_for(&namespaces, "tenant-admin", &format!("records {want}"), |n| {
            n.annotations().get(POLICY).map(String::as_str) == Some(want)
        })
        .await
    };
    h.create_tenant(TestTenant::new("admin").spec(json!({"deletionPolicy": "Retain"})).manifest()).await.unwrap();
    recorded("Retain").await;

    // The NeuralLog web admin replaces the whole object through v1: metadata with the name only,
    // and a spec that knows nothing of the deletion policy.
    let resource = ApiResource::erase::<Tenant>(&());
    let raw = Api::<DynamicObject>::all_with(h.admin.clone(), &resource);
    // As the web admin does: read, replace, and again on a conflict.
    let replace_as_web_admin = async || {
        poll("the web admin's replace goes through", async || {
            let current = h.tenants().get("admin").await.unwrap();
            let payload = json!({
                "apiVersion": "neurallog.io/v1",
                "kind": "Tenant",
                "metadata": {"name": "admin", "resourceVersion": current.resource_version()},
                "spec": {"displayName": "Admin", "server": {"replicas": 2}},
            });
            let payload: DynamicObject = serde_json::from_value(payload).unwrap();
            match raw.replace("admin", &PostParams::default(), &payload).await {
                Err(kube::Error::Api(status)) if status.code == 409 => None,
                replaced => Some(replaced.unwrap()),
            }
        })
        .await
    };
    let replaced = replace_as_web_admin().await;
    assert!(replaced.data["spec"].get("deletionPolicy").is_none(), "nothing defaults the left-out policy");
    wait_for(&h.tenants(), "admin", "sees the new generation with its finalizer back", |t| {
        t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation && !t.finalizers().is_empty()
    })
    .await;
    assert_eq!(recorded("Retain").await.annotations()[POLICY], "Retain", "the replace kept Retain");

    // Only an explicit value changes it.
    let delete = json!({"spec": {"deletionPolicy": "Delete"}});
    h.tenants().patch("admin", &PatchParams::default(), &Patch::Merge(&delete)).await.unwrap();
    recorded("Delete").await;
    let retain = json!({"spec": {"deletionPolicy": "Retain"}});
    h.tenants().patch("admin", &PatchParams::default(), &Patch::Merge(&retain)).await.unwrap();
    recorded("Retain").await;
    let uid = replace_as_web_admin().await.uid().unwrap();
    wait_for(&h.tenants(), "admin", "has its finalizer back", |t| !t.finalizers().is_empty()).await;

    // Deleted after the replace, the tenant is retained, not deleted.
    h.tenants().delete("admin", &DeleteParams::default()).await.unwrap();
    wait_deleted(&h.tenants(), "admin", &uid).await;
    let namespace = namespaces.get("tenant-admin").await.unwrap();
    assert!(namespace.metadata.deletion_timestamp.is_none(), "the namespace is kept");
    assert_eq!(namespace.labels().get("neurallog.io/retained").map(String::as_str), Some("true"));
}

/// The race a whole-object replace opens: the NeuralLog web admin's replace leaves out
/// `metadata.finalizers`, which removes the operator's finalizer, and a deletion that comes before
/// the next reconcile puts it back lets the Tenant go at once, without its cleanup. Made
/// deterministic by stopping the operator for the window. Started again, the operator finds each
/// namespace that outlived its Tenant and cleans it up by the policy recorded on it: `Delete`
/// deletes it, `Retain` keeps it (and its volume) without workloads, marked for adoption; both
/// tenants are deregistered from Auth, and an Event on the namespace says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_released_by_a_replace_and_deleted_in_the_window_is_still_cleaned_up() {
    use testenv::auth::AuthStandIn;

    let h = Harness::with_controllers(&["namespace", "garbagecollector", "statefulset"]).await;
    let auth = AuthStandIn::start().await.unwrap();
    let settings = crate::support::settings_with_auth(&auth, std::time::Duration::from_secs(5));
    let operator = h.start_operator_with(settings.clone()).await;
    let cases = [("race-delete", "Delete"), ("race-retain", "Retain")];
    for (name, policy) in cases {
        h.create_tenant(TestTenant::new(name).spec(json!({"deletionPolicy": policy})).manifest()).await.unwrap();
        wait_for(&h.tenants(), name, "is provisioned and registered", |t| {
            condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
        })
        .await;
        let claims = h.namespaced::<PersistentVolumeClaim>(&format!("tenant-{name}"));
        wait_for(&claims, &format!("redis-data-{name}-redis-0"), "is created", |_| true).await;
    }
    operator.stop().await;

    let namespaces = Api::<Namespace>::all(h.admin.clone());
    for (name, _) in cases {
        release_in_the_window(&h, name).await;
    }
    let registered = auth.registered();
    assert!(cases.iter().all(|(name, _)| registered.iter().any(|r| r == name)), "{registered:?}");

    let _operator = h.start_operator_with(settings).await;
    // Deleted (its Redis claim, protected without a kubelet here, keeps it terminating).
    poll("the Delete tenant's namespace is being deleted", async || {
        let namespace = namespaces.get_opt("tenant-race-delete").await.unwrap();
        namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    let kept = wait_for(&namespaces, "tenant-race-retain", "is marked retained", |n| {
        n.labels().get("neurallog.io/retained").map(String::as_str) == Some("true")
    })
    .await;
    assert!(kept.metadata.deletion_timestamp.is_none(), "Retain keeps the namespace");
    let claims = h.namespaced::<PersistentVolumeClaim>("tenant-race-retain");
    assert!(claims.get_opt("redis-data-race-retain-redis-0").await.unwrap().is_some(), "and its volume");
    for kind_empty in [
        h.namespaced::<Deployment>("tenant-race-retain").list(&ListParams::default()).await.unwrap().items.is_empty(),
        h.namespaced::<StatefulSet>("tenant-race-retain").list(&ListParams::default()).await.unwrap().items.is_empty(),
        h.namespaced::<ConfigMap>("tenant-race-retain")
            .list(&ListParams::default().labels("neurallog.io/managed-by=tenant-operator"))
            .await
            .unwrap()
            .items
            .is_empty(),
    ] {
        assert!(kind_empty, "no workload is left in the retained namespace");
    }
    poll("both tenants are deregistered from Auth", async || {
        let registered = auth.registered();
        cases.iter().all(|(name, _)| !registered.iter().any(|r| r == name)).then_some(())
    })
    .await;
    let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap().items;
    for (name, _) in cases {
        let namespace = format!("tenant-{name}");
        let orphaned = events.iter().any(|e| {
            e.reason.as_deref() == Some("Orphaned")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(namespace.as_str())
        });
        assert!(orphaned, "an Orphaned event on {namespace}");
    }
}

/// An uninstall done by hand the wrong way: the operator gone, the finalizers removed, the CRD
/// deleted, then everything installed again. The namespace left behind predates the new CRD, so
/// the operator cannot tell it from a tenant that went with the old one: it keeps it whole (no
/// policy applied, even `Delete`), marks it retained for adoption, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_older_than_the_crd_is_kept_whatever_its_policy() {
    let mut h = Harness::with_controllers(&["namespace", "garbagecollector"]).await;
    let operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("stripped").manifest()).await.unwrap();
    wait_for(&h.tenants(), "stripped", "is provisioned", |t| {
        condition(t, "NamespaceReady").is_some_and(|c| c.status == "True")
    })
    .await;
    operator.stop().await;
    let unheld = json!({"metadata": {"finalizers": null}});
    h.tenants().patch("stripped", &PatchParams::default(), &Patch::Merge(&unheld)).await.unwrap();
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    let crd = crds.get(Tenant::crd_name()).await.unwrap();
    crds.delete(Tenant::crd_name(), &DeleteParams::default()).await.unwrap();
    wait_deleted(&crds, Tenant::crd_name(), &crd.uid().unwrap()).await;

    // The new CRD must be measurably younger than the namespace (timestamps are in seconds).
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    let made = namespaces.get("tenant-stripped").await.unwrap().metadata.creation_timestamp.unwrap();
    let clock = h.namespaced::<ConfigMap>("default");
    poll("the API server's clock has moved past the namespace's creation", async || {
        let probe: ConfigMap = serde_json::from_value(json!({"metadata": {"generateName": "clock-"}})).unwrap();
        let created = clock.create(&PostParams::default(), &probe).await.unwrap();
        (created.metadata.creation_timestamp.unwrap().0 > made.0).then_some(())
    })
    .await;
    h.install_crd().await;
    let _operator = h.start_operator().await;
    let kept = wait_for(&namespaces, "tenant-stripped", "is marked retained", |n| {
        n.labels().get("neurallog.io/retained").map(String::as_str) == Some("true")
    })
    .await;
    assert!(kept.metadata.deletion_timestamp.is_none(), "its Delete policy is not applied");
    assert_eq!(kept.annotations()[POLICY], "Retain");
    wait_for(&h.namespaced::<Deployment>("tenant-stripped"), "stripped-server", "is kept", |_| true).await;
    let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap().items;
    let explained = events.iter().any(|e| {
        e.reason.as_deref() == Some("Orphaned")
            && e.note.as_deref().is_some_and(|n| n.contains("predates the Tenant CRD"))
    });
    assert!(explained, "an Orphaned event says why the namespace is kept");
}

/// The window a whole-object replace opens, with the operator stopped: a replace through v1
/// without finalizers (the web admin's), then the deletion, which the API server completes at
/// once; the tenant's namespace outlives it.
async fn release_in_the_window(h: &Harness, name: &str) {
    let v1 = ApiResource::erase::<Tenant>(&());
    let raw = Api::<DynamicObject>::all_with(h.admin.clone(), &v1);
    let current = raw.get(name).await.unwrap();
    assert!(!current.finalizers().is_empty(), "{name}: held before the replace");
    let payload = json!({
        "apiVersion": "neurallog.io/v1", "kind": "Tenant",
        "metadata": {"name": name, "resourceVersion": current.resource_version()},
        "spec": current.data["spec"].clone(),
    });
    let replaced = raw.replace(name, &PostParams::default(), &serde_json::from_value(payload).unwrap()).await.unwrap();
    assert!(replaced.finalizers().is_empty(), "{name}: the replace dropped the finalizer");
    raw.delete(name, &DeleteParams::default()).await.unwrap();
    assert!(raw.get_opt(name).await.unwrap().is_none(), "{name}: released without cleanup");
    let namespace = Api::<Namespace>::all(h.admin.clone()).get(&format!("tenant-{name}")).await.unwrap();
    assert!(namespace.metadata.deletion_timestamp.is_none(), "{name}: the namespace outlived its tenant");
}

/// The namespace of a tenant released without its cleanup is not deleted while Auth cannot
/// deregister the tenant: the operator retries, and deletes it once Auth answers, so no tenant
/// stays registered without its namespace.
#[tokio::test(flavor = "multi_thread")]
async fn an_orphaned_namespace_waits_for_auth_before_it_goes() {
    use testenv::auth::{AuthStandIn, Behaviour};

    let h = Harness::with_controllers(&["namespace", "garbagecollector"]).await;
    let auth = AuthStandIn::start().await.unwrap();
    let settings = crate::support::settings_with_auth(&auth, std::time::Duration::from_secs(5));
    let operator = h.start_operator_with(settings.clone()).await;
    h.create_tenant(TestTenant::new("auth-down").manifest()).await.unwrap();
    wait_for(&h.tenants(), "auth-down", "is registered", |t| {
        condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
    })
    .await;
    operator.stop().await;
    release_in_the_window(&h, "auth-down").await;

    auth.set_behaviour(Some("auth-down"), Behaviour::Fail(503));
    let _operator = h.start_operator_with(settings).await;
    let deregistrations = || auth.requests().iter().filter(|(m, p)| m == "DELETE" && p.ends_with("/auth-down")).count();
    // Two checks, each of whose attempts Auth failed (two attempts per check).
    poll("the deregistration is tried again", async || (deregistrations() >= 4).then_some(())).await;
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    let waiting = namespaces.get("tenant-auth-down").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_none(), "not deleted while the tenant is still registered");
    assert!(auth.registered().iter().any(|t| t == "auth-down"));

    auth.clear_behaviours();
    poll("the namespace goes once Auth deregistered the tenant", async || {
        let namespace = namespaces.get_opt("tenant-auth-down").await.unwrap();
        namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    assert!(!auth.registered().iter().any(|t| t == "auth-down"), "deregistered");
}
