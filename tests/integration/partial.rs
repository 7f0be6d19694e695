//! A child the API server refuses stops nothing else: an admission policy denies the tenant's
//! ConfigMaps, and the isolation, the other children, the registration and a status naming the
//! refused child all happen anyway; once the policy goes, the tenant converges.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use neurallog_tenant_operator::fixtures::TestTenant;
use serde_json::json;
use testenv::auth::AuthStandIn;

use crate::support::{Controllers, Harness, condition, phase, poll, wait_for};

/// Denies every ConfigMap in the namespaces of tenant `guarded` (and in a probe namespace that
/// carries the same label).
const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-configmaps}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}
  validations:
    - {expression: "false", message: "configmaps are refused here"}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-configmaps}
spec:
  policyName: no-configmaps
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {neurallog.io/tenant: guarded}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_child_stops_neither_isolation_nor_the_others_nor_registration_nor_the_status() {
    let auth = AuthStandIn::start().await.unwrap();
    let h = Harness::start(Controllers::None).await;
    h.kubectl(&["apply", "-f", "-"], Some(POLICY.as_bytes()));
    // The API server enforces a new policy once it has seen it: probe until a ConfigMap is refused.
    let probe: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "probe", "labels": {"neurallog.io/tenant": "guarded"}}}))
            .unwrap();
    Api::<Namespace>::all(h.admin.clone()).create(&PostParams::default(), &probe).await.unwrap();
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    poll("the admission policy refuses ConfigMaps", async || {
        let config_map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
        h.namespaced::<ConfigMap>("probe").create(&dry_run, &config_map).await.is_err().then_some(())
    })
    .await;

    let settings = crate::support::settings_with_auth(&auth, Duration::from_secs(5));
    let _operator = h.start_operator_with(settings).await;
    h.create_tenant(TestTenant::new("guarded").manifest()).await.unwrap();

    let refused = wait_for(&h.tenants(), "guarded", "names the refused child", |t| {
        condition(t, "Ready").is_some_and(|c| c.reason == "ChildNotApplied")
            && condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
    })
    .await;
    let ready = condition(&refused, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("ConfigMap guarded-redis-config")
            && ready.message.contains("configmaps are refused here"),
        "{}",
        ready.message
    );
    assert_eq!(phase(&refused).as_deref(), Some("Degraded"));
    assert_eq!(auth.registered(), ["guarded"]);

    // Isolation and every other child exist.
    let policies = h.namespaced::<NetworkPolicy>("tenant-guarded").list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = policies.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
    for expected in
        ["default-deny-ingress", "allow-redis-from-server", "allow-server-ingress", "allow-registry-ingress"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    let deployments = h.namespaced::<Deployment>("tenant-guarded");
    for name in ["guarded-server", "guarded-registry"] {
        assert!(deployments.get_opt(name).await.unwrap().is_some(), "{name}");
    }
    assert!(h.namespaced::<StatefulSet>("tenant-guarded").get_opt("guarded-redis").await.unwrap().is_some());

    // The policy goes: the retry applies the ConfigMap and the failure leaves the status.
    h.kubectl(&["delete", "validatingadmissionpolicybinding", "no-configmaps"], None);
    wait_for(&h.namespaced::<ConfigMap>("tenant-guarded"), "guarded-redis-config", "is applied", |_| true).await;
    wait_for(&h.tenants(), "guarded", "no longer reports the refusal", |t| {
        condition(t, "Ready").is_some_and(|c| c.reason != "ChildNotApplied")
    })
    .await;
    Api::<Namespace>::all(h.admin.clone()).delete("probe", &DeleteParams::default()).await.unwrap();
}
