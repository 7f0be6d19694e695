//! A converged tenant costs the API server no writes: not on a restart of the operator, not on
//! reconciles forced by unrelated changes to the tenant or its children.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use neurallog_tenant_operator::controller::Settings;
use neurallog_tenant_operator::resources::Platform;
use serde_json::json;
use testenv::auth::AuthStandIn;

use crate::support::{Controllers, Harness, condition, phase, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

#[tokio::test(flavor = "multi_thread")]
async fn a_converged_tenant_gets_zero_writes_from_further_reconciles() {
    let auth = AuthStandIn::start().await.unwrap();
    let h = Harness::start(Controllers::None).await;
    let settings = || Settings {
        platform: Platform { ingress_namespace: Some("ingress-nginx".into()), ..Platform::default() },
        ..crate::support::settings_with_auth(&auth, Duration::from_secs(5))
    };
    let first = h.start_operator_with(settings()).await;
    // Every kind of child: quota and limit range, registry with Ingress, custom network rules.
    h.create_tenant(TestTenant::new("quiet").spec(json!({
            "redis": {"config": {"timeout": "60", "hz": "20"}},
            "registry": {"baseDomain": "neurallog.example"},
            "resources": {"cpu": {"request": "2", "limit": "4"}, "memory": {"request": "2Gi", "limit": "4Gi"}},
            "networkPolicy": {"allowedNamespaces": ["web"],
                              "ingressRules": [{"from": {"app": "prometheus"}, "namespaces": ["monitoring"], "ports": [{"port": 3030}]}],
                              "egressRules": [{"to": {"app": "api"}, "namespaces": ["payments"], "ports": [{"port": 443}]}]}})).manifest())
    .await
    .unwrap();
    // The status is the last write of a reconcile; once it reports registration, all is applied.
    wait_for(&h.tenants(), "quiet", "is provisioned and registered", |t| {
        phase(t).as_deref() == Some("Provisioning")
            && condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
    })
    .await;
    wait_for(&h.namespaced::<Ingress>("tenant-quiet"), "quiet-registry", "exists", |_| true).await;
    let first_writes = first.writes();
    first.stop().await;
    println!("first convergence: {} writes: {first_writes:#?}", first_writes.values().sum::<f64>());
    let auth_requests = auth.requests();

    // A fresh operator lists everything and reconciles the tenant: nothing to change.
    let second = h.start_operator_with(settings()).await;
    second.wait_reconciled("quiet", "after the restart", |_| true).await;

    // Changes that are not the operator's business still trigger reconciles. Each round waits
    // for the reconcile the poke caused to have finished (not just any reconcile): one that
    // worked from the poked tenant, or that the poked child triggered.
    for round in 0..3 {
        let poke = json!({"metadata": {"annotations": {"example.org/poke": round.to_string()}}});
        if round % 2 == 0 {
            let poked = h.tenants().patch("quiet", &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
            let version = poked.metadata.resource_version.expect("a resourceVersion");
            second
                .wait_reconciled("quiet", &format!("of the poked tenant ({version})"), |r| r.saw_version(&version))
                .await;
        } else {
            let since = second.reconciled_so_far();
            h.namespaced::<ConfigMap>("tenant-quiet")
                .patch("quiet-redis-config", &PatchParams::default(), &Patch::Merge(&poke))
                .await
                .unwrap();
            let trigger = "ConfigMap tenant-quiet/quiet-redis-config changed";
            second
                .wait_reconciled_since(since, "quiet", "triggered by the poked ConfigMap", |r| r.trigger == trigger)
                .await;
        }
    }
    assert_eq!(second.writes(), BTreeMap::new(), "a converged tenant must not be written");
    assert_eq!(auth.requests(), auth_requests, "a registered tenant costs Auth nothing");
    second.stop().await;
}
