//! Deleting tenants safely: `Retain` keeps the namespace and the Redis volume, a re-created tenant
//! adopts them, and a tenant re-created while its old namespace terminates waits, then converges.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Service};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::{Controllers, Harness, condition, poll, wait_deleted, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_namespace_and_volume_and_a_new_tenant_adopts_them() {
    // The StatefulSet controller creates the Redis volume claim; the garbage collector finishes
    // foreground deletions.
    let h = Harness::with_controllers(&["namespace", "garbagecollector", "statefulset"]).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("keep").spec(json!({"deletionPolicy": "Retain"})).manifest()).await.unwrap();
    let claims = h.namespaced::<PersistentVolumeClaim>("tenant-keep");
    let claim = wait_for(&claims, "redis-data-keep-redis-0", "is created by the StatefulSet", |_| true).await;
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
