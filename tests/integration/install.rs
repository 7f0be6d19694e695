//! `kubectl apply -k config/default` is a complete install, and the ServiceAccount it creates
//! holds every permission the operator needs and no more: the operator, running with exactly that
//! identity, takes a tenant through its whole life.

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use neurallog_tenant_operator::fixtures::TestTenant;
use neurallog_tenant_operator::runtime::preflight;
use serde_json::json;
use testenv::auth::AuthStandIn;

use crate::support::{Harness, Operator, condition, poll, settings_with_auth, wait_deleted, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn the_kustomize_install_grants_exactly_what_a_tenants_whole_life_needs() {
    let mut h = Harness::bare(&["namespace", "garbagecollector"]).await;
    h.install_default_config().await;
    // Every write below passes the admission policy too.
    h.wait_confinement_enforced().await;

    // The operator runs as the installed ServiceAccount (impersonated), nothing else.
    let config = h.service_account_config().await;
    let auth = AuthStandIn::start().await.unwrap();
    let settings = settings_with_auth(&auth, AUTH_TIMEOUT);
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

/// The tenants of an uninstall: one per deletion policy, each provisioned by the operator running
/// as the installed ServiceAccount and registered with Auth.
const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const UNINSTALLED: [(&str, &str); 2] = [("gone-delete", "Delete"), ("gone-retain", "Retain")];

impl Harness {
    /// The kustomize install, enforced, with the operator running as its ServiceAccount and the
    /// tenants of [`UNINSTALLED`] provisioned and registered with Auth; their UIDs.
    async fn with_uninstalled_tenants() -> (Harness, AuthStandIn, Operator, Vec<String>) {
        let mut h = Harness::bare(&["namespace", "garbagecollector"]).await;
        h.install_default_config().await;
        h.wait_confinement_enforced().await;
        let auth = AuthStandIn::start().await.unwrap();
        let settings = settings_with_auth(&auth, AUTH_TIMEOUT);
        let operator = h.start_operator_as(h.service_account_config().await, settings).await;
        let uids = h.create_uninstalled_tenants().await;
        (h, auth, operator, uids)
    }

    /// Creates the tenants of [`UNINSTALLED`] and waits until each is provisioned and registered;
    /// returns their UIDs.
    async fn create_uninstalled_tenants(&self) -> Vec<String> {
        let mut uids = Vec::new();
        for (name, policy) in UNINSTALLED {
            let manifest = TestTenant::new(name).spec(json!({"deletionPolicy": policy})).manifest();
            self.create_tenant(manifest).await.unwrap();
            let tenant = wait_for(&self.tenants(), name, "is provisioned and registered", |t| {
                condition(t, "NamespaceReady").is_some_and(|c| c.status == "True")
                    && condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
            })
            .await;
            uids.push(tenant.uid().unwrap());
        }
        uids
    }

    /// Every tenant namespace is there, not terminating, still created for the tenant's
    /// incarnation `uid`, and marked retained, with its workloads in it (an uninstall keeps it
    /// whole).
    async fn assert_kept_whole(&self, uids: &[String]) {
        for ((name, _), uid) in UNINSTALLED.iter().zip(uids) {
            let namespace = Api::<Namespace>::all(self.admin.clone()).get(&format!("tenant-{name}")).await.unwrap();
            assert!(namespace.metadata.deletion_timestamp.is_none(), "{name}: an uninstall deletes no namespace");
            assert_eq!(namespace.annotations()["neurallog.io/tenant-uid"], *uid, "{name}");
            assert_eq!(namespace.labels().get("neurallog.io/retained").map(String::as_str), Some("true"), "{name}");
            let deployments = self.namespaced::<Deployment>(&format!("tenant-{name}"));
            assert!(deployments.get_opt(&format!("{name}-server")).await.unwrap().is_some(), "{name}: workloads kept");
        }
    }

    /// Reinstalled, the tenants created again adopt their namespaces.
    async fn assert_reinstall_adopts(&mut self, auth: &AuthStandIn) {
        self.install_default_config().await;
        let _operator =
            self.start_operator_as(self.service_account_config().await, settings_with_auth(auth, AUTH_TIMEOUT)).await;
        for (name, policy) in UNINSTALLED {
            let manifest = TestTenant::new(name).spec(json!({"deletionPolicy": policy})).manifest();
            self.create_tenant(manifest).await.unwrap();
            let adopted = wait_for(&self.tenants(), name, "adopts its namespace", |t| {
                condition(t, "NamespaceReady").is_some_and(|c| c.status == "True")
            })
            .await;
            let namespace = Api::<Namespace>::all(self.admin.clone()).get(&format!("tenant-{name}")).await.unwrap();
            assert_eq!(namespace.annotations()["neurallog.io/tenant-uid"], adopted.uid().unwrap(), "{name}");
        }
    }
}

/// The uninstall with the operator running (as the installed ServiceAccount): `kubectl delete -k
/// config/crd` deletes every Tenant; the operator keeps each namespace whole and releases each
/// finalizer, so the CRD is gone; then `kubectl delete -k config/default` removes the operator.
/// The tenants stay registered, and a reinstall adopts their namespaces.
#[tokio::test(flavor = "multi_thread")]
async fn uninstalling_the_api_while_the_operator_runs_finishes_and_keeps_every_tenant() {
    let (mut h, auth, operator, uids) = Harness::with_uninstalled_tenants().await;

    h.kustomize("config/crd", true);
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    poll("the CRD is gone (every finalizer released)", async || {
        crds.get_opt("tenants.neurallog.io").await.unwrap().is_none().then_some(())
    })
    .await;
    h.assert_kept_whole(&uids).await;
    let registered = auth.registered();
    assert!(
        UNINSTALLED.iter().all(|(name, _)| registered.iter().any(|r| r == name)),
        "still registered: {registered:?}"
    );
    operator.stop().await;

    h.kustomize("config/default", true);
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    poll("the operator's namespace is gone", async || {
        namespaces.get_opt("neurallog-system").await.unwrap().is_none().then_some(())
    })
    .await;
    h.assert_kept_whole(&uids).await;
    h.assert_reinstall_adopts(&auth).await;
}

/// The operator deleted first: `kubectl delete -k config/default` finishes and leaves the API,
/// every Tenant (finalizer and all) and every tenant namespace untouched; `tenant-operator
/// uninstall` then does what the operator would have done, removes what the operator made at run
/// time, and finishes. A reinstall adopts the namespaces.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_operator_gone_first_the_uninstall_command_finishes_and_keeps_every_tenant() {
    let (mut h, auth, operator, uids) = Harness::with_uninstalled_tenants().await;
    operator.stop().await;

    h.kustomize("config/default", true);
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    poll("the operator's namespace is gone", async || {
        namespaces.get_opt("neurallog-system").await.unwrap().is_none().then_some(())
    })
    .await;
    for ((name, _), uid) in UNINSTALLED.iter().zip(&uids) {
        let tenant = h.tenants().get(name).await.unwrap();
        assert_eq!(tenant.uid().as_ref(), Some(uid), "{name}: removing the operator deletes no Tenant");
        assert!(tenant.metadata.deletion_timestamp.is_none(), "{name}");
        let namespace = namespaces.get(&format!("tenant-{name}")).await.unwrap();
        assert!(namespace.metadata.deletion_timestamp.is_none(), "{name}");
    }

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tenant-operator"))
        .args(["uninstall", "--timeout-seconds", "120", "--kubeconfig"])
        .arg(h.plane.admin_kubeconfig())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "uninstall: {printed}{}", String::from_utf8_lossy(&output.stderr));
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    assert!(crds.get_opt("tenants.neurallog.io").await.unwrap().is_none(), "the API is gone: {printed}");
    h.assert_kept_whole(&uids).await;
    for (name, _) in UNINSTALLED {
        let bindings = h.namespaced::<RoleBinding>(&format!("tenant-{name}"));
        assert!(bindings.get_opt("neurallog-tenant-operator").await.unwrap().is_none(), "{name}: {printed}");
        let secrets = h.namespaced::<Secret>(&format!("tenant-{name}"));
        let password = secrets.get(&format!("{name}-redis-auth")).await.unwrap();
        assert!(password.finalizers().is_empty(), "{name}: the password Secret is kept, unheld");
    }
    let policies = Api::<ValidatingAdmissionPolicy>::all(h.admin.clone());
    assert!(policies.get_opt("neurallog-tenant-operator-confinement").await.unwrap().is_none(), "{printed}");
    let registered = auth.registered();
    assert!(
        UNINSTALLED.iter().all(|(name, _)| registered.iter().any(|r| r == name)),
        "still registered: {registered:?}"
    );
    h.assert_reinstall_adopts(&auth).await;
}

/// A CRD that serves `v1` beside the stored `v2` without the conversion webhook would store `v1`
/// writes unconverted: the operator refuses to start against it, naming the fix; the generated
/// CRD passes.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_refuses_a_crd_that_would_store_v1_writes_unconverted() {
    let h = Harness::bare(&[]).await;
    let mut crd = neurallog_tenant_operator::api::crd(&Default::default());
    crd.spec.conversion = None;
    let crds = Api::<CustomResourceDefinition>::all(h.admin.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let error = preflight::check_crd(&h.admin, false).await.unwrap_err().to_string();
    assert!(error.contains("conversion strategy None") && error.contains("config/crd"), "{error}");
    preflight::check_crd(&h.admin, true).await.expect("the self-managed webhook points the CRD itself");

    let generated = neurallog_tenant_operator::api::crd(&Default::default());
    let body = serde_json::to_value(&generated).unwrap();
    let params = PatchParams::apply("test").force();
    crds.patch("tenants.neurallog.io", &params, &Patch::Apply(&body)).await.unwrap();
    preflight::check_crd(&h.admin, false).await.expect("the generated CRD converts");
    crds.delete("tenants.neurallog.io", &DeleteParams::default()).await.unwrap();
    poll("the CRD is gone", async || crds.get_opt("tenants.neurallog.io").await.unwrap().is_none().then_some(())).await;
    let error = preflight::check_crd(&h.admin, false).await.unwrap_err().to_string();
    assert!(error.contains("not installed") && error.contains("config/crd"), "{error}");
}

/// As the installed ServiceAccount, the operator creates its confinement policy when it is
/// missing, which is then enforced; it can neither change nor delete it, and refuses to run
/// against a changed copy unless told to.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_puts_its_confinement_in_place_and_cannot_loosen_it() {
    let mut h = Harness::bare(&[]).await;
    h.install_default_config().await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(h.admin.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(h.admin.clone());
    let name = preflight::CONFINEMENT_NAME;
    bindings.delete(name, &DeleteParams::default()).await.unwrap();
    policies.delete(name, &DeleteParams::default()).await.unwrap();

    let operator = kube::Client::try_from(h.service_account_config().await).unwrap();
    preflight::confine(&operator, false).await.expect("creates the policy");
    assert!(policies.get_opt(name).await.unwrap().is_some() && bindings.get_opt(name).await.unwrap().is_some());
    h.wait_confinement_enforced().await;
    preflight::confine(&operator, false).await.expect("a second replica finds it in place");

    let own_policies = Api::<ValidatingAdmissionPolicy>::all(operator.clone());
    let loosen = json!({"spec": {"failurePolicy": "Ignore"}});
    for (what, result) in [
        ("patch", own_policies.patch(name, &PatchParams::default(), &Patch::Merge(&loosen)).await.map(drop)),
        ("delete", own_policies.delete(name, &DeleteParams::default()).await.map(drop)),
        (
            "delete its binding",
            Api::<ValidatingAdmissionPolicyBinding>::all(operator.clone())
                .delete(name, &DeleteParams::default())
                .await
                .map(drop),
        ),
    ] {
        assert!(matches!(result, Err(kube::Error::Api(ref s)) if s.code == 403), "{what}: {result:?}");
    }

    // Changed by someone else: the operator never changes it back, and refuses to run on it.
    policies.patch(name, &PatchParams::default(), &Patch::Merge(&loosen)).await.unwrap();
    let error = preflight::confine(&operator, false).await.unwrap_err().to_string();
    assert!(error.contains("differs") && error.contains("--allow-unconfined"), "{error}");
    preflight::confine(&operator, true).await.expect("--allow-unconfined runs all the same");
    assert_eq!(policies.get(name).await.unwrap().spec.unwrap().failure_policy.as_deref(), Some("Ignore"));
}
