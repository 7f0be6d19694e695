//! Deleting a tenant: per its deletion policy, the namespace goes (`Delete`) or stays with its
//! volumes while everything else the operator made goes (`Retain`); the tenant is deregistered
//! from Auth; the finalizer is released only once that is done.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, ObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tracing::Instrument as _;

use super::Context;
use super::apply::{self, Change};
use super::error::{Error, Result};
use super::reconcile::{
    Changes, Child, FinalizerPatch, NEWER_COPY_WAIT, TERMINATION_POLL, delete_named, managed_names, namespace_metadata,
    now, publish, publish_phase_change, remove_finalizer, write_status,
};
use super::status;
use crate::api::v1::{DeletionPolicy, Tenant};
use crate::model::namespace_name;
use crate::resources::namespace;

/// Deletion. Per the tenant's deletion policy, the namespace is deleted (`Delete`) or kept with
/// its volumes while every other object the operator made goes (`Retain`); the tenant is
/// deregistered from Auth; the finalizer is released once the namespace (or the workloads) are
/// gone. A namespace the operator did not create for this tenant is never touched.
pub(super) async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let status = status::terminating(tenant.status.as_ref());
    let status_written = write_status(ctx, tenant, &status).await?;
    if status_written {
        publish_phase_change(ctx, tenant, &status).await;
    }
    let namespace = namespace_name(&name);
    let uid = tenant.uid().unwrap_or_default();
    let ours = namespace_metadata(ctx, &name, &namespace).await?.filter(|ns| namespace::created_for(ns, &uid));
    let mut changes = Changes::default();
    let removing = match ours {
        None => None,
        Some(existing) => match tenant.spec.deletion_policy.unwrap_or_default() {
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
    changes.publish(ctx, tenant).await;

    if let Some(retry) = deregister(tenant, ctx).instrument(tracing::info_span!("auth")).await? {
        return Ok(retry);
    }
    if let Some(waiting) = removing {
        tracing::debug!(tenant = %name, waiting, "waiting before releasing the finalizer");
        return Ok(Action::requeue(TERMINATION_POLL));
    }
    if status_written {
        // Released on the next pass, guarded by the resourceVersion this write produced.
        return Ok(Action::requeue(NEWER_COPY_WAIT));
    }
    if remove_finalizer(ctx, tenant).await? == FinalizerPatch::StaleCopy {
        return Ok(Action::requeue(NEWER_COPY_WAIT));
    }
    ctx.deregistered().remove(&uid);
    ctx.backoff.reset(&name);
    Ok(Action::await_change())
}

/// Deletes the tenant's namespace; `Some(what)` while it still exists.
async fn delete_namespace(ctx: &Context, tenant: &Tenant, existing: &ObjectMeta) -> Result<Option<String>> {
    let name = existing.name.clone().unwrap_or_default();
    if existing.deletion_timestamp.is_none() {
        let span = apply::write_span("delete", "Namespace", &name);
        Api::<Namespace>::all(ctx.client.clone())
            .delete(&name, &DeleteParams::background())
            .instrument(span.clone())
            .await
            .map_err(|source| {
                let error = Error::Api {
                    tenant: tenant.name_any(),
                    verb: "delete",
                    kind: "Namespace",
                    name: name.clone(),
                    source,
                };
                apply::failed(&span, error)
            })?;
        span.record("changed", true);
        let note = format!("deleting namespace {name} and everything in it");
        publish(ctx, tenant, EventType::Normal, "Deleting", "Delete", note).await;
    }
    Ok(Some(format!("namespace {name} to be deleted")))
}

/// Keeps the namespace and its PersistentVolumeClaims, marked as retained, and deletes every
/// other object the operator made there (workloads in the foreground, so their pods are gone
/// before they are); `Some(what)` while any of them still exists.
async fn retain_namespace(
    ctx: &Context,
    tenant: &Tenant,
    existing: &ObjectMeta,
    changes: &mut Changes,
) -> Result<Option<String>> {
    let name = tenant.name_any();
    let namespace = existing.name.clone().unwrap_or_default();
    let uid = tenant.uid().unwrap_or_default();
    let api = Api::<Namespace>::all(ctx.client.clone());
    let live = Namespace { metadata: existing.clone(), ..Namespace::default() };
    let marked = apply::apply(&api, &name, Some(&live), &namespace::retained(&name, &uid)).await?;
    if marked.change != Change::Unchanged {
        let note = format!("keeping namespace {namespace} and its volumes; removing the workloads");
        publish(ctx, tenant, EventType::Normal, "Retaining", "Delete", note).await;
    }

    let caches = &ctx.caches;
    let (ns, t) = (namespace.as_str(), name.as_str());
    let (workloads, others) = (DeleteParams::foreground(), DeleteParams::background());
    let remaining = [
        delete_managed::<Deployment, _>(&caches.deployments, ctx, ns, t, &workloads, changes).await?,
        delete_managed::<StatefulSet, _>(&caches.stateful_sets, ctx, ns, t, &workloads, changes).await?,
        delete_managed::<Service, _>(&caches.services, ctx, ns, t, &others, changes).await?,
        delete_managed::<ConfigMap, _>(&caches.config_maps, ctx, ns, t, &others, changes).await?,
        delete_managed::<Secret, _>(&caches.secrets, ctx, ns, t, &others, changes).await?,
        delete_managed::<NetworkPolicy, _>(&caches.network_policies, ctx, ns, t, &others, changes).await?,
        delete_managed::<Ingress, _>(&caches.ingresses, ctx, ns, t, &others, changes).await?,
        delete_managed::<ResourceQuota, _>(&caches.resource_quotas, ctx, ns, t, &others, changes).await?,
        delete_managed::<LimitRange, _>(&caches.limit_ranges, ctx, ns, t, &others, changes).await?,
    ]
    .iter()
    .sum::<usize>();
    Ok((remaining > 0).then(|| format!("{remaining} objects in the retained namespace {namespace} to be deleted")))
}

/// Deletes every object of kind `K` the operator made for `tenant` in `namespace`, as listed by
/// `store` (which may cache only metadata); returns how many were still there.
async fn delete_managed<K, S>(
    store: &Store<S>,
    ctx: &Context,
    namespace: &str,
    tenant: &str,
    params: &DeleteParams,
    changes: &mut Changes,
) -> Result<usize>
where
    K: Child,
    S: Resource<DynamicType = ()> + Clone + 'static,
{
    let names = managed_names(store, namespace, tenant, None);
    let found = names.len();
    delete_named::<K>(ctx, tenant, namespace, names, params, changes).await?;
    Ok(found)
}

/// Deregisters a deleted tenant from Auth (once: the status records it). `Some(action)` asks to
/// come back later (after recording the deregistration, or to retry); after the deregistration
/// deadline the tenant is released anyway, with a Warning naming what is left in Auth.
async fn deregister(tenant: &Tenant, ctx: &Context) -> Result<Option<Action>> {
    let Some(auth) = &ctx.auth else { return Ok(None) };
    let uid = tenant.uid().unwrap_or_default();
    if status::auth_deregistered(tenant.status.as_ref()) || ctx.deregistered().contains(&uid) {
        return Ok(None);
    }
    let name = tenant.name_any();
    match auth.deregister(&name).await {
        Ok(()) => {
            ctx.deregistered().insert(uid.clone());
            let message = format!("tenant {name} is deregistered from NeuralLog Auth");
            let status = status::deregistered(tenant.status.as_ref(), message.clone(), &now());
            write_status(ctx, tenant, &status).await?;
            publish(ctx, tenant, EventType::Normal, "Deregistered", "Delete", message).await;
            // The status write moved the resourceVersion the finalizer patch is guarded by: the
            // next pass (woken by that write) releases the finalizer.
            Ok(Some(Action::requeue(NEWER_COPY_WAIT)))
        }
        Err(error) => {
            let deleting_since = tenant.meta().deletion_timestamp.as_ref().map(|t| t.0);
            let waited = deleting_since.map(|since| jiff::Timestamp::now().duration_since(since));
            let deadline = ctx.settings.auth_deregistration_deadline;
            if waited.is_some_and(|w| w.unsigned_abs() >= deadline) {
                let note = format!(
                    "{error}; giving up after {}s: tenant {name} may remain registered in NeuralLog Auth (DELETE /api/tenants/{name} removes it)",
                    deadline.as_secs()
                );
                publish(ctx, tenant, EventType::Warning, "AuthDeregistrationAbandoned", "Delete", note).await;
                return Ok(None);
            }
            publish(ctx, tenant, EventType::Warning, error.reason(), "Delete", error.to_string()).await;
            Ok(Some(Action::requeue(ctx.backoff.next_delay(&name))))
        }
    }
}
