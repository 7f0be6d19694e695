//! A converged tenant costs the API server no writes: not on a restart of the operator, not on
//! reconciles forced by unrelated changes to the tenant or its children.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::{Harness, phase, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn a_converged_tenant_gets_zero_writes_from_further_reconciles() {
    let h = Harness::start(false).await;
    let first = h.start_operator().await;
    h.create_tenant(json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": "quiet"},
                          "spec": {"redis": {"config": {"timeout": "60", "hz": "20"}}}}))
        .await
        .unwrap();
    wait_for(&h.tenants(), "quiet", "is Provisioning", |t| phase(t).as_deref() == Some("Provisioning")).await;
    wait_for(&h.namespaced::<Deployment>("tenant-quiet"), "quiet-server", "exists", |_| true).await;
    let first_writes = first.writes.snapshot();
    first.stop().await;
    println!("first convergence: {} writes: {first_writes:#?}", first_writes.len());

    // A fresh operator lists everything and reconciles the tenant: nothing to change.
    let second = h.start_operator().await;
    second.wait_reconciles_beyond(0).await;

    // Changes that are not the operator's business still trigger reconciles.
    for round in 0..3 {
        let before = second.metrics.reconcile_count();
        let poke = json!({"metadata": {"annotations": {"example.org/poke": round.to_string()}}});
        if round % 2 == 0 {
            h.tenants().patch("quiet", &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
        } else {
            h.namespaced::<ConfigMap>("tenant-quiet")
                .patch("quiet-redis-config", &PatchParams::default(), &Patch::Merge(&poke))
                .await
                .unwrap();
        }
        second.wait_reconciles_beyond(before).await;
    }
    assert_eq!(second.writes.snapshot(), Vec::<String>::new(), "a converged tenant must not be written");
    second.stop().await;
}
