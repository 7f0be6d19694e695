//! The status writer: renders a tenant's state into the stored version's status and writes it
//! with one server-side apply, only when it differs from what is stored; the phase and conditions
//! it holds are the tenant's status series in the metrics, written or not.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::error::Result;
use super::write::{self, FIELD_MANAGER, Target};
use crate::api::{Tenant, TenantStatus};
use crate::model::state::TenantState;

/// Writes `state` as the tenant's status unless it is already that; returns whether it wrote.
pub async fn write(ctx: &Context, tenant: &Tenant, state: &TenantState) -> Result<bool> {
    let name = tenant.name_any();
    let conditions: Vec<(&str, &str)> =
        state.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
    ctx.metrics.set_tenant_status(&name, state.phase.map(|phase| phase.as_str()), &conditions);
    let status = TenantStatus::from(state);
    if tenant.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let body = json!({"apiVersion": Tenant::api_version(&()), "kind": Tenant::kind(&()), "status": status});
    let target = Target { tenant: &name, verb: "update status of", kind: "Tenant", name: &name };
    let api = Api::<Tenant>::all(ctx.client.clone());
    write::send(
        target,
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)),
        |_| true,
    )
    .await?;
    Ok(true)
}

/// The time conditions record. The API server keeps whole seconds; rounding here makes a
/// re-derived state compare equal to the stored one.
pub fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}
