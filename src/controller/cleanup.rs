//! The cleanup path. Per the tenant's deletion policy, the namespace is deleted (`Delete`) or kept
//! with its volumes while every other object the operator made goes (`Retain`); the tenant is
//! deregistered from Auth; the finalizer is released only once that is done. A namespace the
//! operator did not create for this tenant is never touched. Tenants deleted because their
//! CustomResourceDefinition is (an uninstall) are not being deleted by their owners: their
//! namespaces are kept whole and they stay registered.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta};
use kube::runtime::controller::Action;
use kube::{Client, CustomResourceExt as _, ResourceExt};
use tracing::Instrument as _;

use super::children::Marks;
use super::context::Context;
use super::error::{Error, Result};
use super::events::{self, Activity, Changes, Reason};
use super::finalizer::{self, FinalizerPatch};
use super::outcome::{NEWER_COPY_WAIT, Outcome, TERMINATION_POLL};
use super::write::{self, Change, Target};
use super::{namespace, password, status};
use crate::api::Tenant;
use crate::model::state::{self, TenantState};
use crate::model::{DeletionPolicy, defaults, namespace_name};
use crate::resources::namespace as builders;

/// Takes a deleted tenant one step closer to having its finalizer released.
pub async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Outcome> {
    let name = tenant.name_any();
    let current = tenant.state();
    let terminating = state::terminating(current.as_ref());
    let status_written = status::write(ctx, tenant, &terminating).await?;
    if status_written {
        events::phase_change(&ctx.recorder, tenant, current.as_ref(), &terminating).await;
    }
    let namespace = namespace_name(&name);
    let uid = tenant.uid().unwrap_or_default();
    let ours = namespace::metadata(ctx, &name, &namespace).await?.filter(|ns| builders::created_for(ns, &uid));
    let uninstall = uninstalling(ctx, &name).await?;
    // Held while the tenant lived, the password Secret now goes with the namespace, or stays
    // unheld with a retained namespace's volume or after an uninstall.
    if ours.is_some() && !password::release(&ctx.client, &name, &namespace).await? {
        return Ok(Outcome::done(Action::requeue(NEWER_COPY_WAIT)));
    }
    let mut changes = Changes::default();
    let removing = match ours {
        None => None,
        Some(existing) if uninstall => {
            keep_whole(ctx, tenant, &existing).instrument(tracing::info_span!("keep_namespace")).await?;
            None
        }
        Some(existing) => match policy_in_force(tenant, &existing) {
            DeletionPolicy::Delete => {
                delete_namespace(ctx, tenant, &existing).instrument(tracing::info_span!("delete_namespace")).await?
            }
            DeletionPolicy::Retain => {
                retain_namespace(ctx, tenant, &existing, &mut changes)
                    .instrument(tracing::info_span!("retain_namespace"))
                    .await?
            }
        },
    };
    changes.publish(&ctx.recorder, tenant).await;

    if !uninstall
        && let Some(later) = deregister(tenant, current.as_ref(), ctx).instrument(tracing::info_span!("auth")).await?
    {
        return Ok(later);
    }
    if let Some(waiting) = removing {
        tracing::debug!(tenant = %name, waiting, "waiting before releasing the finalizer");
        return Ok(Outcome::done(Action::requeue(TERMINATION_POLL)));
    }
    if status_written {
        // Released on the next pass, guarded by the resourceVersion this write produced.
        return Ok(Outcome::done(Action::requeue(NEWER_COPY_WAIT)));
    }
    if finalizer::remove(&ctx.client, &tenant.metadata).await? == FinalizerPatch::StaleCopy {
        return Ok(Outcome::done(Action::requeue(NEWER_COPY_WAIT)));
    }
    ctx.deregistered().remove(&uid);
    ctx.swept().remove(&uid);
    ctx.backoff.reset(&name);
    Ok(Outcome::done(Action::await_change()))
}

/// The policy the spec states, else the one recorded on the namespace, else the default.
fn policy_in_force(tenant: &Tenant, namespace: &ObjectMeta) -> DeletionPolicy {
    tenant.deletion_policy().or_else(|| builders::recorded_policy(namespace)).unwrap_or(defaults::DELETION_POLICY)
}

/// Whether the Tenant CustomResourceDefinition is being deleted (or is gone): every Tenant is then
/// deleted by the API server, not by its owner. An answer the operator cannot get is an error,
/// so no namespace is deleted on a guess.
async fn uninstalling(ctx: &Context, tenant: &str) -> Result<bool> {
    Ok(installed_crd(ctx, tenant).await?.is_none())
}

/// The Tenant CustomResourceDefinition's metadata, unless it is being deleted or is gone.
pub(super) async fn installed_crd(ctx: &Context, tenant: &str) -> Result<Option<ObjectMeta>> {
    let crd = Tenant::crd_name();
    let api = Api::<CustomResourceDefinition>::all(ctx.client.clone());
    let found = api.get_metadata_opt(crd).await.map_err(|source| Error::Api {
        tenant: tenant.to_owned(),
        verb: "get",
        kind: "CustomResourceDefinition",
        name: crd.to_owned(),
        source,
    })?;
    Ok(found.map(|crd| crd.metadata).filter(|crd| crd.deletion_timestamp.is_none()))
}

/// Keeps the namespace of a tenant deleted by an uninstall with everything in it, marked as
/// retained so that the Tenant, created again after a reinstall, adopts it.
async fn keep_whole(ctx: &Context, tenant: &Tenant, existing: &ObjectMeta) -> Result<()> {
    let namespace = existing.name.clone().unwrap_or_default();
    let (name, uid) = (tenant.name_any(), tenant.uid().unwrap_or_default());
    if mark_retained(&ctx.client, &name, &uid, existing).await? != Change::Unchanged {
        let note = format!(
            "the Tenant CustomResourceDefinition is being deleted (an uninstall, not a deletion of the tenant): keeping namespace {namespace} with everything in it, and the tenant's registration in NeuralLog Auth"
        );
        events::publish(&ctx.recorder, tenant, Reason::Uninstalled, Activity::Delete, note).await;
    }
    Ok(())
}

/// Marks the namespace of the tenant `name` (incarnation `uid`) as retained, for a Tenant of the
/// same name to adopt.
pub async fn mark_retained(client: &Client, name: &str, uid: &str, existing: &ObjectMeta) -> Result<Change> {
    let api = Api::<Namespace>::all(client.clone());
    let live = write::metadata_only::<Namespace>(existing);
    Ok(write::apply(&api, name, Some(write::Live::Metadata(&live)), &builders::retained(name, uid)).await?.change)
}

/// Deletes the tenant's namespace; `Some(what)` while it still exists.
async fn delete_namespace(ctx: &Context, tenant: &Tenant, existing: &ObjectMeta) -> Result<Option<String>> {
    let name = existing.name.clone().unwrap_or_default();
    if existing.deletion_timestamp.is_none() {
        let tenant_name = tenant.name_any();
        let target = Target { tenant: &tenant_name, verb: "delete", kind: "Namespace", name: &name };
        let api = Api::<Namespace>::all(ctx.client.clone());
        write::send_tolerating(target, &[404], api.delete(&name, &DeleteParams::background()), |_| true).await?;
        let note = format!("deleting namespace {name} and everything in it");
        events::publish(&ctx.recorder, tenant, Reason::Deleting, Activity::Delete, note).await;
    }
    Ok(Some(format!("namespace {name} to be deleted")))
}

/// Keeps the namespace and its PersistentVolumeClaims, marked as retained, and deletes every
/// other object the operator made there (the sweep with nothing marked); `Some(what)` while any
/// of them still exists.
async fn retain_namespace(
    ctx: &Context,
    tenant: &Tenant,
    existing: &ObjectMeta,
    changes: &mut Changes,
) -> Result<Option<String>> {
    let (name, uid) = (tenant.name_any(), tenant.uid().unwrap_or_default());
    let namespace = existing.name.clone().unwrap_or_default();
    if mark_retained(&ctx.client, &name, &uid, existing).await? != Change::Unchanged {
        let note = format!("keeping namespace {namespace} and its volumes; removing the workloads");
        events::publish(&ctx.recorder, tenant, Reason::Retaining, Activity::Delete, note).await;
    }
    let remaining = ctx.children.sweep(&ctx.client, &name, &namespace, &Marks::default(), changes).await?;
    // The password Secret stays with the volume it protects (released above, kept by name: the
    // operator does not watch Secrets).
    password::keep(ctx, &name, &namespace).await?;
    Ok((remaining > 0).then(|| format!("{remaining} objects in the retained namespace {namespace} to be deleted")))
}

/// Deregisters a deleted tenant from Auth (once: the status records it). `Some(outcome)` asks to
/// come back later (after recording the deregistration, or to retry); after the deregistration
/// deadline the tenant is released anyway, with a Warning naming what is left in Auth.
async fn deregister(tenant: &Tenant, current: Option<&TenantState>, ctx: &Context) -> Result<Option<Outcome>> {
    let Some(auth) = &ctx.auth else { return Ok(None) };
    let uid = tenant.uid().unwrap_or_default();
    if current.is_some_and(TenantState::auth_deregistered) || ctx.deregistered().contains(&uid) {
        return Ok(None);
    }
    let name = tenant.name_any();
    match auth.deregister(&name).await {
        Ok(()) => {
            ctx.deregistered().insert(uid.clone());
            let message = format!("tenant {name} is deregistered from NeuralLog Auth");
            let deregistered = state::deregistered(current, message.clone(), &status::now());
            status::write(ctx, tenant, &deregistered).await?;
            events::publish(&ctx.recorder, tenant, Reason::Deregistered, Activity::Delete, message).await;
            // The status write moved the resourceVersion the finalizer patch is guarded by: the
            // next pass (woken by that write) releases the finalizer.
            Ok(Some(Outcome::done(Action::requeue(NEWER_COPY_WAIT))))
        }
        Err(error) => {
            let deleting_since = tenant.metadata.deletion_timestamp.as_ref().map(|t| t.0);
            let waited = deleting_since.map(|since| jiff::Timestamp::now().duration_since(since));
            let deadline = ctx.settings.auth_deregistration_deadline;
            if waited.is_some_and(|w| w.unsigned_abs() >= deadline) {
                let note = format!(
                    "{error}; giving up after {}s: tenant {name} may remain registered in NeuralLog Auth (DELETE /api/tenants/{name} removes it)",
                    deadline.as_secs()
                );
                events::publish(&ctx.recorder, tenant, Reason::AuthDeregistrationAbandoned, Activity::Delete, note)
                    .await;
                return Ok(None);
            }
            let reason = Reason::Failed(error.reason().to_owned());
            events::publish(&ctx.recorder, tenant, reason, Activity::Delete, error.to_string()).await;
            Ok(Some(Outcome::fell_short(Action::requeue(ctx.backoff.next_delay(&name)), error.to_string())))
        }
    }
}
