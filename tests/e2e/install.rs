//! A fresh install of this checkout's bundle from the catalog: OLM installs it (CSV `Succeeded`,
//! CRD established, Deployment available), the operator runs as its pod would, the CSV's examples
//! (`v1` through OLM's webhook Service, and `v2`) converge, the operator's own admission policy
//! confines its ServiceAccount, uninstalling leaves what it should, and `tenant-operator uninstall`
//! then removes the API and keeps every tenant namespace.

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use testenv::operatorhub::{CRD, Entry, Env, INSTALL_NAMESPACE, INSTALL_PLAN_RETRY, PACKAGE, head_csv, json_of, text};

#[tokio::test(flavor = "multi_thread")]
async fn install_from_the_catalog_run_the_examples_and_uninstall() -> anyhow::Result<()> {
    let mut env =
        Env::start("e2e install", &crate::logs("install"), 2, &[Entry::head(None)?], INSTALL_PLAN_RETRY).await?;
    let outcome = install(&mut env).await;
    env.end(outcome).await
}

async fn install(env: &mut Env) -> anyhow::Result<()> {
    let csv = head_csv()?;
    env.begin("install", "Subscription (Automatic), InstallPlan, CSV Succeeded, Deployment available");
    env.subscribe(None, "Automatic").await?;
    env.wait_installed(&csv).await?;
    env.done(format!("{csv} Succeeded"));

    env.begin("operator", "tenant-operator as the CSV's ServiceAccount, with its Deployment's args and env");
    let route = env.start_operator("operator", env!("CARGO_BIN_EXE_tenant-operator").as_ref()).await?;
    anyhow::ensure!(route.is_some(), "the installed CSV declares no conversion webhook");
    env.wait_settled(&csv).await?;
    env.done("ready; the CRD converts through OLM's webhook Service, routed to it");

    env.begin("examples", "the CSV's alm-examples, v1 and v2, converge");
    let csvs = env.olm_api("ClusterServiceVersion", "clusterserviceversions");
    let installed = json_of(&csvs.get(&csv).await?);
    let examples: Vec<Value> = serde_json::from_str(text(&installed, "/metadata/annotations/alm-examples"))?;
    anyhow::ensure!(examples.len() >= 2, "the CSV has {} examples, expected one per served version", examples.len());
    let mut names = Vec::new();
    let (examples, backups): (Vec<Value>, Vec<Value>) =
        examples.into_iter().partition(|example| text(example, "/kind") == "Tenant");
    for example in examples {
        let version = text(&example, "/apiVersion").rsplit('/').next().unwrap_or_default().to_owned();
        let mut tenant: DynamicObject = serde_json::from_value(example)?;
        // The examples show one tenant in each version's shape: one name each here.
        let name = format!("{}-{version}", tenant.metadata.name.clone().unwrap_or_default());
        tenant.metadata.name = Some(name.clone());
        env.create(&env.tenants(&version), &tenant).await?;
        names.push(name);
    }
    let tenants = env.tenants("v2");
    for name in &names {
        env.wait(&format!("tenant {name} to reach phase Running"), async || {
            Ok((text(&json_of(&tenants.get(name).await?), "/status/phase") == "Running").then_some(()))
        })
        .await?;
    }
    // The TenantBackup example, for the v2 tenant: without a destination (the sample has none) it
    // fails saying so.
    let backup_resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", "v1", "TenantBackup"));
    let backup_api = Api::<DynamicObject>::all_with(env.client.clone(), &backup_resource);
    let mut failed = Vec::new();
    for example in backups {
        let mut backup: DynamicObject = serde_json::from_value(example)?;
        let tenant = format!("{}-v2", backup.data["spec"]["tenant"].as_str().unwrap_or_default());
        backup.data["spec"]["tenant"] = Value::String(tenant.clone());
        let name = backup.metadata.name.clone().unwrap_or_default();
        backup_api.create(&PostParams::default(), &backup).await?;
        env.wait(&format!("backup {name} of {tenant} to fail for want of a destination"), async || {
            let status = json_of(&backup_api.get(&name).await?);
            Ok((text(&status, "/status/phase") == "Failed"
                && text(&status, "/status/message").contains("has no spec.backup.destination"))
            .then_some(()))
        })
        .await?;
        failed.push(name);
    }
    env.done(format!("{} Running; {} Failed without a destination", names.join(", "), failed.join(", ")));

    env.begin(
        "confinement",
        "the operator's own admission policy refuses its ServiceAccount outside the tenant namespaces",
    );
    let refusals = confinement(env).await?;
    env.done(refusals);

    env.begin("uninstall", "delete the Subscription and the CSV");
    env.stop_operator("operator").await?;
    env.olm_api("Subscription", "subscriptions").delete(PACKAGE, &DeleteParams::default()).await?;
    csvs.delete(&csv, &DeleteParams::default()).await?;
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), INSTALL_NAMESPACE);
    env.wait("the operator Deployment to be garbage-collected", async || {
        Ok(deployments.get_opt(PACKAGE).await?.is_none().then_some(()))
    })
    .await?;
    // OLM removes the RBAC of the CSV's permissions; the bundle's standalone ClusterRoles stay: the
    // Secrets reader the operator binds in each tenant namespace (like the tenants whose
    // RoleBindings still name it), and the metrics reader Prometheus may be bound to.
    let owned = ListParams::default().labels(&format!("olm.owner={csv}"));
    let roles = Api::<ClusterRole>::all(env.client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(env.client.clone());
    env.wait("the CSV's cluster roles and bindings to be removed", async || {
        let roles: Vec<String> = roles.list(&owned).await?.items.into_iter().filter_map(|r| r.metadata.name).collect();
        let bindings = bindings.list(&owned).await?.items.len();
        let kept = ["neurallog-tenant-operator-metrics-reader", "neurallog-tenant-operator-tenant-secrets"];
        Ok((roles == kept && bindings == 0).then_some(()))
    })
    .await?;
    anyhow::ensure!(csvs.list(&ListParams::default()).await?.items.is_empty(), "a CSV is left after uninstall");
    let namespaces = Api::<Namespace>::all(env.client.clone());
    for name in &names {
        let tenant = json_of(&tenants.get(name).await?);
        let namespace = text(&tenant, "/status/namespace");
        anyhow::ensure!(
            namespaces.get_opt(namespace).await?.is_some(),
            "namespace {namespace} of tenant {name} was removed"
        );
    }
    env.done("CSV, Deployment and the CSV's RBAC gone; CRD, tenants and their namespaces kept");

    env.begin(
        "remove the API",
        "tenant-operator uninstall with the operator gone: the CRD goes, every namespace stays",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tenant-operator"))
        .args(["uninstall", "--timeout-seconds", "120", "--operator-namespace", INSTALL_NAMESPACE, "--kubeconfig"])
        .arg(env.cluster.kubeconfig())
        .env_remove("KUBECONFIG")
        .output()?;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "uninstall failed: {printed}{}", String::from_utf8_lossy(&output.stderr));
    let crds = Api::<CustomResourceDefinition>::all(env.client.clone());
    anyhow::ensure!(crds.get_opt(CRD).await?.is_none(), "the CRD is still there: {printed}");
    for name in &names {
        let namespace = namespaces.get(&format!("tenant-{name}")).await?;
        let retained = namespace.metadata.labels.unwrap_or_default().get("neurallog.io/retained").cloned();
        anyhow::ensure!(
            namespace.metadata.deletion_timestamp.is_none() && retained.as_deref() == Some("true"),
            "namespace tenant-{name} is not kept retained"
        );
    }
    let policies = Api::<ValidatingAdmissionPolicy>::all(env.client.clone());
    anyhow::ensure!(policies.get_opt(CONFINEMENT).await?.is_none(), "the admission policy is left: {printed}");
    anyhow::ensure!(roles.get_opt(SECRETS_READER).await?.is_none(), "the Secrets reader is left: {printed}");
    env.done("CRD gone; namespaces kept and retained; admission policy and Secrets reader removed");
    Ok(())
}

const CONFINEMENT: &str = "neurallog-tenant-operator-confinement";
const SECRETS_READER: &str = "neurallog-tenant-operator-tenant-secrets";

/// With OLM, which cannot carry an admission policy, the operator put its own in place at start-up;
/// its ServiceAccount (a token of its own) is refused what RBAC alone would allow it: a RoleBinding
/// to the Secrets reader in kube-system, a Deployment there, a change to its own policy; and what
/// RBAC refuses: reading a Secret outside the tenant namespaces.
async fn confinement(env: &Env) -> anyhow::Result<String> {
    let policies = Api::<ValidatingAdmissionPolicy>::all(env.client.clone());
    anyhow::ensure!(policies.get_opt(CONFINEMENT).await?.is_some(), "the operator did not create its admission policy");
    let operator = env.operator_client().await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "read-kube-system-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SECRETS_READER},
        "subjects": [{"kind": "ServiceAccount", "name": PACKAGE, "namespace": INSTALL_NAMESPACE}],
    }))?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "intruder"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}},
                 "spec": {"containers": [{"name": "x", "image": "x"}]}}}
    }))?;
    let loosen = json!({"spec": {"failurePolicy": "Ignore"}});
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    // The policy takes effect a moment after it is created: the first refusal is waited for.
    let bindings = Api::<RoleBinding>::namespaced(operator.clone(), "kube-system");
    let first = env
        .wait("the operator's admission policy to refuse a RoleBinding in kube-system", async || {
            Ok(match bindings.create(&dry_run, &binding).await {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                _ => None,
            })
        })
        .await?;
    anyhow::ensure!(first.contains("tenant namespaces it created"), "refused by something else: {first}");
    let attempts = [
        (
            "create a Deployment in kube-system",
            Api::<Deployment>::namespaced(operator.clone(), "kube-system")
                .create(&dry_run, &deployment)
                .await
                .map(drop),
        ),
        (
            "read a Secret in kube-system",
            Api::<Secret>::namespaced(operator.clone(), "kube-system").list(&ListParams::default()).await.map(drop),
        ),
        (
            "loosen its own policy",
            Api::<ValidatingAdmissionPolicy>::all(operator.clone())
                .patch(CONFINEMENT, &PatchParams::default(), &Patch::Merge(&loosen))
                .await
                .map(drop),
        ),
        (
            "delete its own policy",
            Api::<ValidatingAdmissionPolicy>::all(operator.clone())
                .delete(CONFINEMENT, &DeleteParams::default())
                .await
                .map(drop),
        ),
    ];
    for (what, result) in attempts {
        anyhow::ensure!(
            matches!(&result, Err(kube::Error::Api(status)) if status.code == 403),
            "the operator's ServiceAccount may {what}: {result:?}"
        );
    }
    Ok("refused: RoleBinding to the Secrets reader and Deployment in kube-system (admission), Secrets in kube-system, changing or deleting its policy (RBAC)".to_owned())
}
