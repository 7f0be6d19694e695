//! The finalizer that keeps a Tenant until its namespace (or, for Retain, its workloads) and its
//! Auth registration are gone.

use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::error::Result;
use super::write::{self, Target};
use crate::api::Tenant;

pub const FINALIZER: &str = "neurallog.io/finalizer";

pub fn has_finalizer(tenant: &Tenant) -> bool {
    tenant.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether a finalizer patch applied, or found that this copy of the tenant is older than the
/// stored one (the watch brings the newer copy, and the next pass patches from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizerPatch {
    Applied,
    StaleCopy,
}

/// Sets the finalizer list guarded by the resourceVersion it was computed from, so a concurrent
/// change (another finalizer, a deletion, our own status write) fails the patch instead of being
/// overwritten.
async fn patch(
    client: &Client,
    tenant: &ObjectMeta,
    finalizers: Vec<String>,
    verb: &'static str,
) -> Result<FinalizerPatch> {
    let name = tenant.name.clone().unwrap_or_default();
    let body = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tenant.resource_version}});
    let target = Target { tenant: &name, verb, kind: "Tenant", name: &name };
    let api = Api::<Tenant>::all(client.clone());
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    let request = api.patch(&name, &params, &patch);
    // 404: the tenant went meanwhile; nothing is left to hold or release.
    Ok(match write::send_tolerating(target, &[404, 409], request, |_| true).await? {
        Some(_) => FinalizerPatch::Applied,
        None => FinalizerPatch::StaleCopy,
    })
}

pub async fn add(client: &Client, tenant: &Tenant) -> Result<FinalizerPatch> {
    let mut finalizers = tenant.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    patch(client, &tenant.metadata, finalizers, "add finalizer to").await
}

/// Releases the tenant whose metadata is `tenant` (the whole object is not needed).
pub async fn remove(client: &Client, tenant: &ObjectMeta) -> Result<FinalizerPatch> {
    let finalizers = tenant.finalizers.iter().flatten().filter(|f| *f != FINALIZER).cloned().collect();
    patch(client, tenant, finalizers, "remove finalizer from").await
}
