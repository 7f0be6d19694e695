//! `kubectl apply -k config/default` is a complete install, and the ServiceAccount it creates
//! holds every permission the operator needs and no more: the operator, running with exactly that
//! identity, takes a tenant through its whole life.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use neurallog_tenant_operator::auth::AuthSettings;
use neurallog_tenant_operator::controller::Settings;
use neurallog_tenant_operator::fixtures::TestTenant;
use serde_json::json;
use testenv::auth::AuthStandIn;

use crate::support::{Harness, condition, poll, wait_deleted, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn the_kustomize_install_grants_exactly_what_a_tenants_whole_life_needs() {
    let mut h = Harness::bare(&["namespace", "garbagecollector"]).await;
    h.install_default_config().await;
    // Every write below passes the admission policy too.
    h.wait_confinement_enforced().await;

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

/// What the installed ServiceAccount must not do, by RBAC (reading Secrets anywhere, binding
/// itself to any other role) and by the admission policy of `config/admission` (writing outside
/// the tenant namespaces it created, or touching a namespace it did not create).
#[tokio::test(flavor = "multi_thread")]
async fn the_installed_service_account_reaches_nothing_outside_the_tenant_namespaces() {
    let mut h = Harness::bare(&[]).await;
    h.install_default_config().await;
    let operator = kube::Client::try_from(h.service_account_config().await).unwrap();
    let refused = |result: Result<(), kube::Error>, what: &str| -> String {
        match result {
            Err(kube::Error::Api(status)) if status.code == 403 => status.message,
            other => panic!("{what}: expected 403, got {other:?}"),
        }
    };
    let message = h.wait_confinement_enforced().await;
    assert!(message.contains("tenant namespaces it created") && message.contains("kube-system"), "{message}");
    let system_deployments = Api::<Deployment>::namespaced(operator.clone(), "kube-system");
    let deployment = intruder();
    let create = system_deployments.create(&PostParams::default(), &deployment).await.map(drop);
    refused(create, "create a Deployment in kube-system");

    // Secrets: none readable outside the tenant namespaces, not even listed as metadata.
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "precious"}, "stringData": {"k": "v"}})).unwrap();
    Api::<Secret>::namespaced(h.admin.clone(), "kube-system").create(&PostParams::default(), &secret).await.unwrap();
    let system_secrets = Api::<Secret>::namespaced(operator.clone(), "kube-system");
    refused(system_secrets.get("precious").await.map(drop), "read a Secret in kube-system");
    refused(system_secrets.list(&ListParams::default()).await.map(drop), "list Secrets in kube-system");
    let all_secrets = Api::<Secret>::all(operator.clone());
    refused(all_secrets.list_metadata(&ListParams::default()).await.map(drop), "list every Secret's metadata");
    let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
    let patched = system_secrets.patch("precious", &PatchParams::default(), &Patch::Merge(&touch)).await.map(drop);
    refused(patched, "patch (and so read back) a Secret in kube-system");

    // Namespaces it did not create: not deleted, not relabelled; none created but tenant ones.
    let namespaces = Api::<Namespace>::all(operator.clone());
    let foreign: Namespace = serde_json::from_value(json!({"metadata": {"name": "foreign"}})).unwrap();
    Api::<Namespace>::all(h.admin.clone()).create(&PostParams::default(), &foreign).await.unwrap();
    refused(namespaces.delete("foreign", &DeleteParams::default()).await.map(drop), "delete a foreign namespace");
    let claim = json!({"metadata": {"labels": {"neurallog.io/managed-by": "tenant-operator"}}});
    let relabelled = namespaces.patch("foreign", &PatchParams::default(), &Patch::Merge(&claim)).await.map(drop);
    refused(relabelled, "claim a foreign namespace by labelling it");
    let managed = |name: &str| -> Namespace {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"neurallog.io/managed-by": "tenant-operator"}}}),
        )
        .unwrap()
    };
    let other = namespaces.create(&PostParams::default(), &managed("not-a-tenant")).await.map(drop);
    refused(other, "create a namespace that is not tenant-<name>");
    let unlabelled: Namespace = serde_json::from_value(json!({"metadata": {"name": "tenant-unlabelled"}})).unwrap();
    refused(namespaces.create(&PostParams::default(), &unlabelled).await.map(drop), "create an unlabelled namespace");

    // In a namespace of its own it may work, but bind itself to nothing but its Secrets reader.
    namespaces.create(&PostParams::default(), &managed("tenant-own")).await.unwrap();
    let binding = |role: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": format!("to-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "neurallog-tenant-operator", "namespace": "neurallog-system"}],
        }))
        .unwrap()
    };
    let bindings = Api::<RoleBinding>::namespaced(operator.clone(), "tenant-own");
    bindings.create(&PostParams::default(), &binding("neurallog-tenant-operator-tenant-secrets")).await.unwrap();
    let escalated = bindings.create(&PostParams::default(), &binding("cluster-admin")).await.map(drop);
    refused(escalated, "bind itself to cluster-admin");
    let elsewhere = Api::<RoleBinding>::namespaced(operator.clone(), "kube-system");
    let binding_elsewhere =
        elsewhere.create(&PostParams::default(), &binding("neurallog-tenant-operator-tenant-secrets")).await.map(drop);
    refused(binding_elsewhere, "grant itself Secrets in kube-system");
}

/// A Deployment the operator has no business creating.
fn intruder() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "intruder"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}},
                 "spec": {"containers": [{"name": "x", "image": "x"}]}}}
    }))
    .unwrap()
}

impl Harness {
    /// Waits until the admission policy of `config/admission` refuses the installed
    /// ServiceAccount a (dry-run) Deployment in kube-system, which it does a moment after it is
    /// created; returns the refusal.
    async fn wait_confinement_enforced(&self) -> String {
        let operator = kube::Client::try_from(self.service_account_config().await).unwrap();
        let deployments = Api::<Deployment>::namespaced(operator, "kube-system");
        let dry_run = PostParams { dry_run: true, ..PostParams::default() };
        poll("the admission policy is enforced", async || match deployments.create(&dry_run, &intruder()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
            _ => None,
        })
        .await
    }
}

/// `kubectl delete -k config/default` while the operator runs (as the installed ServiceAccount):
/// the CRD goes, and with it every Tenant, but no tenant namespace or volume is deleted, whichever
/// the operator sees first: the CRD terminating (it keeps each namespace whole) or its own RBAC
/// gone (it can delete nothing).
#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_kustomize_install_deletes_no_tenant_namespace() {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let mut h = Harness::bare(&["namespace", "garbagecollector"]).await;
    h.install_default_config().await;
    h.wait_confinement_enforced().await;
    let _operator = h.start_operator_as(h.service_account_config().await, Settings::default()).await;
    for (name, policy) in [("gone-delete", "Delete"), ("gone-retain", "Retain")] {
        h.create_tenant(TestTenant::new(name).spec(json!({"deletionPolicy": policy})).manifest()).await.unwrap();
        wait_for(&h.tenants(), name, "is provisioned", |t| condition(t, "NamespaceReady").is_some()).await;
    }
    let rendered = h.kubectl(&["kustomize", testenv::repo_root().join("config/default").to_str().unwrap()], None);
    h.kubectl(&["delete", "--wait=false", "-f", "-"], Some(rendered.as_bytes()));

    // Done when nothing more can happen: the CRD is gone (every Tenant released), or the
    // operator's ClusterRoleBinding is (it may delete nothing any more).
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    let bindings = Api::<ClusterRoleBinding>::all(h.admin.clone());
    poll("the uninstall has run its course", async || {
        let crd_gone = crds.get_opt("tenants.neurallog.io").await.unwrap().is_none();
        let rbac_gone = bindings.get_opt("neurallog-tenant-operator").await.unwrap().is_none();
        (crd_gone || rbac_gone).then_some(())
    })
    .await;
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    for name in ["gone-delete", "gone-retain"] {
        let kept = namespaces.get(&format!("tenant-{name}")).await.unwrap();
        assert!(kept.metadata.deletion_timestamp.is_none(), "{name}: an uninstall deletes no namespace");
    }
}
