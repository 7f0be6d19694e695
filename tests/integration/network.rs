//! NetworkPolicies follow the spec on a real API server: a removed rule deletes its policy and no
//! other (the others keep their names, contents and resourceVersions), and disabling isolation
//! removes every policy. (Whether they isolate needs a CNI, which the test cluster lacks; the
//! reachability table is unit-tested in `resources::network`.)

use std::collections::BTreeMap;

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

/// The custom policies in the namespace, by name: the app their rule admits, and the policy.
async fn custom_policies(api: &Api<NetworkPolicy>) -> BTreeMap<String, (String, NetworkPolicy)> {
    let custom = ListParams::default().labels("neurallog.io/policy=custom");
    api.list(&custom)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let spec = p.spec.as_ref().expect("a policy has a spec");
            let apps: Vec<String> = spec
                .ingress
                .iter()
                .flatten()
                .flat_map(|rule| rule.from.iter().flatten())
                .filter_map(|peer| peer.pod_selector.as_ref()?.match_labels.as_ref()?.get("app").cloned())
                .collect();
            assert_eq!(apps.len(), 1, "{}: one app per test rule: {apps:?}", p.name_any());
            (p.name_any(), (apps[0].clone(), p))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_follow_rule_changes_and_disabling_removes_them_all() {
    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    let rule = |app: &str| json!({"from": {"app": app}, "namespaces": ["monitoring"], "ports": [{"port": 3030}]});
    let rules = json!([rule("prometheus"), rule("grafana"), rule("loki")]);
    h.create_tenant(
        TestTenant::new("iso")
            .spec(json!({"networkPolicy": {"allowedNamespaces": ["web"], "ingressRules": rules}}))
            .manifest(),
    )
    .await
    .unwrap();
    let policies = h.namespaced::<NetworkPolicy>("tenant-iso");
    let custom = |names: &[String]| names.iter().filter(|n| n.starts_with("custom-ingress-")).count();
    let defaults =
        ["default-deny-ingress", "allow-redis-from-server", "allow-server-ingress", "allow-registry-ingress"];
    // Policies are applied one after another: wait for the whole set, not just the custom ones.
    wait_policies(&policies, "the default and three custom policies", |names| {
        custom(names) == 3 && defaults.iter().all(|d| names.iter().any(|n| n == d))
    })
    .await;
    let server_ingress = wait_for(&policies, "allow-server-ingress", "exists", |_| true).await;
    assert_eq!(server_ingress.labels()["neurallog.io/tenant"], "iso");
    let before = custom_policies(&policies).await;
    let apps: Vec<&str> = before.values().map(|(app, _)| app.as_str()).collect();
    assert_eq!(apps.len(), 3, "one policy per rule: {apps:?}");
    for app in ["prometheus", "grafana", "loki"] {
        assert!(apps.contains(&app), "a policy for {app}: {apps:?}");
    }

    // Rule 1 of 3 goes: exactly its policy is deleted; the policies of rules 0 and 2 stay as they
    // were, the very same objects, never written.
    let two_rules = json!({"spec": {"networkPolicy": {"ingressRules": [rule("prometheus"), rule("loki")]}}});
    h.tenants().patch("iso", &PatchParams::default(), &Patch::Merge(&two_rules)).await.unwrap();
    wait_policies(&policies, "two custom policies", |names| custom(names) == 2).await;
    let after = custom_policies(&policies).await;
    let removed: Vec<_> = before.iter().filter(|(name, _)| !after.contains_key(*name)).collect();
    assert_eq!(removed.len(), 1, "only the removed rule's policy goes: {:?}", before.keys());
    assert_eq!(removed[0].1.0, "grafana", "the removed policy, {}, is the removed rule's", removed[0].0);
    for (name, (app, policy)) in &after {
        let (app_before, policy_before) =
            before.get(name).unwrap_or_else(|| panic!("{name} (rule {app}) was not there before: {:?}", before.keys()));
        assert_eq!(app, app_before, "{name} admits what it admitted");
        assert_eq!(policy.spec, policy_before.spec, "{name}: its rule content is unchanged");
        assert_eq!(policy.uid(), policy_before.uid(), "{name} was not re-created");
        assert_eq!(policy.resource_version(), policy_before.resource_version(), "{name} was not written");
    }

    let disable = json!({"spec": {"networkPolicy": {"enabled": false}}});
    h.tenants().patch("iso", &PatchParams::default(), &Patch::Merge(&disable)).await.unwrap();
    wait_policies(&policies, "no policies", |names| names.is_empty()).await;
}
