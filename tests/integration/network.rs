//! NetworkPolicies follow the spec on a real API server: a removed rule deletes its policy and
//! disabling isolation removes every policy. (Whether they isolate needs a CNI, which the test
//! cluster lacks; the reachability table is unit-tested in `resources::network`.)

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::support::{Controllers, Harness, poll, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

async fn policy_names(api: &Api<NetworkPolicy>) -> Vec<String> {
    let mut names: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

/// Waits until the tenant's policy names satisfy `check`.
async fn wait_policies(api: &Api<NetworkPolicy>, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    poll(what, async || {
        let names = policy_names(api).await;
        check(&names).then_some(names)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_follow_rule_changes_and_disabling_removes_them_all() {
    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    let rule = |app: &str| json!({"from": {"app": app}, "namespaces": ["monitoring"], "ports": [{"port": 3030}]});
    h.create_tenant(TestTenant::new("iso").spec(json!({"networkPolicy": {"allowedNamespaces": ["web"], "ingressRules": [rule("prometheus"), rule("grafana")]}})).manifest())
        .await
        .unwrap();
    let policies = h.namespaced::<NetworkPolicy>("tenant-iso");
    let custom = |names: &[String]| names.iter().filter(|n| n.starts_with("custom-ingress-")).count();
    let defaults =
        ["default-deny-ingress", "allow-redis-from-server", "allow-server-ingress", "allow-registry-ingress"];
    // Policies are applied one after another: wait for the whole set, not just the custom ones.
    let first = wait_policies(&policies, "the default and two custom policies", |names| {
        custom(names) == 2 && defaults.iter().all(|d| names.iter().any(|n| n == d))
    })
    .await;
    let server_ingress = wait_for(&policies, "allow-server-ingress", "exists", |_| true).await;
    assert_eq!(server_ingress.labels()["neurallog.io/tenant"], "iso");

    let one_rule = json!({"spec": {"networkPolicy": {"ingressRules": [rule("grafana")]}}});
    h.tenants().patch("iso", &PatchParams::default(), &Patch::Merge(&one_rule)).await.unwrap();
    let second = wait_policies(&policies, "one custom policy", |names| custom(names) == 1).await;
    let removed: Vec<_> = first.iter().filter(|n| !second.contains(n)).collect();
    assert_eq!(removed.len(), 1, "only the removed rule's policy goes: {removed:?}");

    let disable = json!({"spec": {"networkPolicy": {"enabled": false}}});
    h.tenants().patch("iso", &PatchParams::default(), &Patch::Merge(&disable)).await.unwrap();
    wait_policies(&policies, "no policies", |names| names.is_empty()).await;
}
