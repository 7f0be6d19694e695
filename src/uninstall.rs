//! `tenant-operator uninstall`: removes the Tenant API and what the operator made outside the
//! tenant namespaces, keeping every tenant namespace with its data, whether or not the operator
//! still runs. Deleting the CRD deletes every Tenant; each holds the operator's finalizer, which a
//! running operator releases once it has kept the namespace whole. Without the operator nothing
//! releases it and the CRD stays `Terminating`: this command does what the operator would (marks
//! each namespace retained, so a Tenant of the same name created after a reinstall adopts it, and
//! releases the finalizers), then removes what is left. Tenants stay registered in NeuralLog Auth,
//! as with an uninstall by a running operator.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Client, CustomResourceExt as _, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

use crate::api::Tenant;
use crate::api::backup::TenantBackup;
use crate::controller::backups::FINALIZER as BACKUP_FINALIZER;
use crate::controller::{self, FINALIZER, FinalizerPatch};
use crate::migration::PROGRESS_LEASE;
use crate::model::namespace_name;
use crate::resources::access;
use crate::resources::namespace as builders;
use crate::runtime::preflight::CONFINEMENT_NAME;
use crate::webhook::provision::DEFAULT_SECRET;

/// What to remove, and for how long to wait for the API to go.
#[derive(Debug, Clone)]
pub struct Uninstall {
    /// The namespace the operator ran in, whose Leases and webhook Secret go too when it is not
    /// deleted with the operator (OLM's `operators`).
    pub operator_namespace: Option<String>,
    pub timeout: Duration,
}

/// Runs the uninstall, printing a line per step.
pub async fn run(client: &Client, uninstall: &Uninstall) -> anyhow::Result<()> {
    let crd = Tenant::crd_name();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let deadline = tokio::time::Instant::now() + uninstall.timeout;
    if let Some(found) = crds.get_metadata_opt(crd).await.with_context(|| format!("cannot read the CRD {crd}"))? {
        if found.metadata.deletion_timestamp.is_none() {
            crds.delete(crd, &DeleteParams::background())
                .await
                .with_context(|| format!("cannot delete the CRD {crd}"))?;
            println!("deleting CustomResourceDefinition {crd}: the API server deletes every Tenant");
        }
        let tenants = Api::<Tenant>::all(client.clone());
        loop {
            let listed = match tenants.list_metadata(&ListParams::default()).await {
                Ok(listed) => listed.items,
                // The CRD and with it the Tenants are gone.
                Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
                Err(error) => return Err(error).context("cannot list the Tenants"),
            };
            for tenant in listed.iter().filter(|t| t.finalizers().iter().any(|f| f == FINALIZER)) {
                release(client, tenant).await?;
            }
            if crds.get_metadata_opt(crd).await.with_context(|| format!("cannot read the CRD {crd}"))?.is_none() {
                println!("CustomResourceDefinition {crd} is gone");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the CRD {crd} is still there after {}s: `kubectl get tenants` and `kubectl get crd {crd} -o yaml` show what holds it",
                    uninstall.timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    remove_backups(client, deadline, uninstall.timeout).await?;
    remove_leftovers(client, uninstall).await
}

/// Deletes the TenantBackup CRD, releasing each backup's finalizer: every backup's objects stay in
/// the store, where a new tenant restores from them by location.
async fn remove_backups(client: &Client, deadline: tokio::time::Instant, timeout: Duration) -> anyhow::Result<()> {
    let crd = crate::api::backup::CRD_NAME;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let Some(found) = crds.get_metadata_opt(crd).await.with_context(|| format!("cannot read the CRD {crd}"))? else {
        return Ok(());
    };
    if found.metadata.deletion_timestamp.is_none() {
        crds.delete(crd, &DeleteParams::background()).await.with_context(|| format!("cannot delete the CRD {crd}"))?;
        println!("deleting CustomResourceDefinition {crd}: every backup stays in its store");
    }
    let backups = Api::<TenantBackup>::all(client.clone());
    loop {
        let listed = match backups.list_metadata(&ListParams::default()).await {
            Ok(listed) => listed.items,
            Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
            Err(error) => return Err(error).context("cannot list the TenantBackups"),
        };
        for backup in listed.iter().filter(|b| b.finalizers().iter().any(|f| f == BACKUP_FINALIZER)) {
            let finalizers: Vec<&String> = backup.finalizers().iter().filter(|f| *f != BACKUP_FINALIZER).collect();
            let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": backup.resource_version()}});
            match backups.patch(&backup.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => println!("backup {}: finalizer released, its objects kept", backup.name_any()),
                // Gone, or changed since the list: the next round sees it again.
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot release backup {}", backup.name_any()));
                }
            }
        }
        if crds.get_metadata_opt(crd).await.with_context(|| format!("cannot read the CRD {crd}"))?.is_none() {
            println!("CustomResourceDefinition {crd} is gone");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the CRD {crd} is still there after {}s: `kubectl get tenantbackups` shows what holds it",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps the namespace of a deleted tenant whole, marked retained for its adopter, and releases
/// the tenant's finalizer once nothing in the namespace is held for it any more; a write that
/// meets a newer copy waits for the next round, which reads it anew.
async fn release(client: &Client, tenant: &PartialObjectMeta<Tenant>) -> anyhow::Result<()> {
    let (name, uid) = (tenant.name_any(), tenant.uid().unwrap_or_default());
    let namespace = namespace_name(&name);
    let namespaces = Api::<Namespace>::all(client.clone());
    let found =
        namespaces.get_metadata_opt(&namespace).await.with_context(|| format!("cannot read namespace {namespace}"))?;
    if let Some(existing) = found.filter(|ns| builders::created_for(&ns.metadata, &uid)) {
        if existing.metadata.deletion_timestamp.is_some() {
            // The tenant's own deletion (policy Delete) had started it; nothing can keep it now.
            println!("tenant {name}: namespace {namespace} was already being deleted");
        } else {
            controller::mark_retained(client, &name, &uid, &existing.metadata).await?;
            println!("tenant {name}: namespace {namespace} kept with its data, marked neurallog.io/retained=true");
        }
        if !controller::release_password(client, &name, &namespace).await? {
            return Ok(());
        }
    }
    if controller::release_finalizer(client, &tenant.metadata).await? == FinalizerPatch::Applied {
        println!("tenant {name}: finalizer released");
    }
    Ok(())
}

/// What the operator made at run time outside the kustomize install and the CSV, and what a CSV's
/// removal leaves: the admission policy, the tenant-Secrets and metrics reader ClusterRoles, the
/// RoleBinding to
/// it in each kept tenant namespace, and, in the operator's namespace, the Leases and the
/// self-managed webhook certificate.
async fn remove_leftovers(client: &Client, uninstall: &Uninstall) -> anyhow::Result<()> {
    delete(Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()), CONFINEMENT_NAME).await?;
    delete(Api::<ValidatingAdmissionPolicy>::all(client.clone()), CONFINEMENT_NAME).await?;
    // Removed with config/default; a CSV's removal leaves it (OLM installs it as a bundle object).
    delete(Api::<ClusterRole>::all(client.clone()), access::SECRETS_ROLE).await?;
    delete(Api::<ClusterRole>::all(client.clone()), crate::monitoring::METRICS_READER_ROLE).await?;
    let namespaces = Api::<Namespace>::all(client.clone());
    let managed = ListParams::default().labels(&crate::resources::managed_selector());
    for namespace in namespaces.list_metadata(&managed).await.context("cannot list the tenant namespaces")?.items {
        let namespace = namespace.name_any();
        delete(Api::<RoleBinding>::namespaced(client.clone(), &namespace), access::ROLE_BINDING).await?;
    }
    if let Some(namespace) = &uninstall.operator_namespace {
        let leases = Api::<Lease>::namespaced(client.clone(), namespace);
        delete(leases.clone(), crate::runtime::lease::DEFAULT_LEASE).await?;
        delete(leases, PROGRESS_LEASE).await?;
        delete(Api::<Secret>::namespaced(client.clone(), namespace), DEFAULT_SECRET).await?;
    }
    println!("uninstalled: every tenant namespace is kept; reinstall and create the Tenants again to adopt them");
    Ok(())
}

/// Deletes one object if it is there, saying so.
async fn delete<K>(api: Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => println!("deleted {kind} {name}"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error).with_context(|| format!("cannot delete {kind} {name}")),
    }
    Ok(())
}
