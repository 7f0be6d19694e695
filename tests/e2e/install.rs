//! A fresh install of this checkout's bundle from the catalog: OLM installs it (CSV `Succeeded`,
//! CRD established, Deployment available), the operator runs as its pod would, the CSV's examples
//! (`v1` through OLM's webhook Service, and `v2`) converge, and uninstalling leaves what it should.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use serde_json::Value;

use testenv::operatorhub::{Entry, Env, INSTALL_NAMESPACE, INSTALL_PLAN_RETRY, PACKAGE, head_csv, json_of, text};

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
    env.done(format!("{} Running", names.join(", ")));

    env.begin("uninstall", "delete the Subscription and the CSV");
    env.stop_operator("operator").await?;
    env.olm_api("Subscription", "subscriptions").delete(PACKAGE, &DeleteParams::default()).await?;
    csvs.delete(&csv, &DeleteParams::default()).await?;
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), INSTALL_NAMESPACE);
    env.wait("the operator Deployment to be garbage-collected", async || {
        Ok(deployments.get_opt(PACKAGE).await?.is_none().then_some(()))
    })
    .await?;
    // OLM removes the RBAC of the CSV's permissions; the bundle's standalone ClusterRole (the
    // Secrets reader the operator binds in each tenant namespace) stays, like the tenants whose
    // RoleBindings still name it.
    let owned = ListParams::default().labels(&format!("olm.owner={csv}"));
    let roles = Api::<ClusterRole>::all(env.client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(env.client.clone());
    env.wait("the CSV's cluster roles and bindings to be removed", async || {
        let roles: Vec<String> = roles.list(&owned).await?.items.into_iter().filter_map(|r| r.metadata.name).collect();
        let bindings = bindings.list(&owned).await?.items.len();
        Ok((roles == ["neurallog-tenant-operator-tenant-secrets"] && bindings == 0).then_some(()))
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
    Ok(())
}
