//! `kubectl apply -k config/default` is a complete install, and the ServiceAccount it creates
//! holds every permission the operator needs and no more: the operator, running with exactly that
//! identity, takes a tenant through its whole life.

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use neurallog_tenant_operator::auth::AuthSettings;
use neurallog_tenant_operator::controller::Settings;
use neurallog_tenant_operator::fixtures::TestTenant;
use serde_json::json;
use testenv::auth::AuthStandIn;

use crate::support::{Harness, condition, poll, wait_deleted, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn the_kustomize_install_grants_exactly_what_a_tenants_whole_life_needs() {
    let h = Harness::bare(&["namespace", "garbagecollector"]).await;
    h.install_default_config();

    // The operator runs as the installed ServiceAccount (impersonated), nothing else.
    let config = h.service_account_config().await;
    let auth = AuthStandIn::start().await.unwrap();
    let settings = Settings {
        concurrency: 4,
        auth: Some(AuthSettings {
            base_url: auth.url(),
            token: None,
            timeout: std::time::Duration::from_secs(5),
            attempts: 2,
        }),
        ..Settings::default()
    };
    let _operator = h.start_operator_as(config, settings).await;

    let rule = json!({"from": {"app": "prometheus"}, "namespaces": ["monitoring"], "ports": [{"port": 3030}]});
    h.create_tenant(
        TestTenant::new("life")
            .spec(json!({"registry": {"baseDomain": "neurallog.example"},
                 "resources": {"cpu": {"request": "2", "limit": "4"}, "memory": {"request": "2Gi", "limit": "4Gi"}},
                 "networkPolicy": {"ingressRules": [rule]}}))
            .manifest(),
    )
    .await
    .unwrap();
    wait_for(&h.tenants(), "life", "is provisioned and registered", |t| {
        condition(t, "AuthRegistered").is_some_and(|c| c.status == "True") && condition(t, "RegistryReady").is_some()
    })
    .await;
    wait_for(&h.namespaced::<Ingress>("tenant-life"), "life-registry", "exists", |_| true).await;
    wait_for(&h.namespaced::<ResourceQuota>("tenant-life"), "life-quota", "exists", |_| true).await;

    // Changes that delete children: the custom rule, the budget and the base domain go.
    let shrink =
        json!({"spec": {"resources": null, "registry": {"baseDomain": null}, "networkPolicy": {"ingressRules": null}}});
    h.tenants().patch("life", &PatchParams::default(), &Patch::Merge(&shrink)).await.unwrap();
    let policies = h.namespaced::<NetworkPolicy>("tenant-life");
    let quotas = h.namespaced::<ResourceQuota>("tenant-life");
    let limits = h.namespaced::<LimitRange>("tenant-life");
    let ingresses = h.namespaced::<Ingress>("tenant-life");
    poll("the unwanted children are deleted", async || {
        let custom = policies
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|p| p.name_any().starts_with("custom-"));
        let quota = quotas.get_opt("life-quota").await.unwrap().is_some();
        let range = limits.get_opt("life-limits").await.unwrap().is_some();
        let ingress = ingresses.get_opt("life-registry").await.unwrap().is_some();
        (!custom && !quota && !range && !ingress).then_some(())
    })
    .await;

    // Deletion: namespace gone, Auth deregistered, finalizer released.
    let uid = h.tenants().get("life").await.unwrap().uid().unwrap();
    h.tenants().delete("life", &DeleteParams::default()).await.unwrap();
    wait_deleted(&h.tenants(), "life", &uid).await;
    assert!(Api::<Namespace>::all(h.admin.clone()).get_opt("tenant-life").await.unwrap().is_none());
    assert!(auth.registered().is_empty());

    // Events were recorded with the same identity, and no request was ever forbidden.
    let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap().items;
    let reasons: Vec<&str> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
    for expected in ["Created", "Registered", "Deleted", "Deregistered"] {
        assert!(reasons.contains(&expected), "{expected} event in {reasons:?}");
    }
    let forbidden: Vec<&str> =
        events.iter().filter_map(|e| e.note.as_deref()).filter(|n| n.contains("(403)")).collect();
    assert!(forbidden.is_empty(), "forbidden requests: {forbidden:?}");
}
