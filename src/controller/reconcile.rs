//! One reconcile of one tenant: finalizer, namespace, Redis, server, status, events.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::Instrument;

use super::Context;
use super::apply::{self, Change, FIELD_MANAGER};
use super::error::{Error, Result};
use super::status::{self, NamespaceState, Observation, Replicas};
use crate::api::v1::{Tenant, TenantPhase, TenantStatus};
use crate::model::{TenantModel, namespace_name};
use crate::resources::{self, namespace, network, redis, server};

/// Finalizer that keeps a Tenant until its namespace is gone.
pub const FINALIZER: &str = "neurallog.io/finalizer";
/// How often a tenant waiting for a namespace to terminate is looked at again (the namespace
/// watch usually wakes it sooner).
const TERMINATION_POLL: Duration = Duration::from_secs(5);

/// What a reconcile changed, reported as one Event per kind of change.
#[derive(Default)]
struct Changes {
    created: Vec<String>,
    updated: Vec<String>,
    deleted: Vec<String>,
}

impl Changes {
    fn record(&mut self, change: Change, kind: &str, name: &str) {
        match change {
            Change::Created => self.created.push(format!("{kind} {name}")),
            Change::Updated => self.updated.push(format!("{kind} {name}")),
            Change::Unchanged => {}
        }
    }
}

pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let name = tenant.name_any();
    let started = std::time::Instant::now();
    let span = tracing::info_span!("reconcile", tenant = %name);
    let result = async {
        ctx.caches.ready().await.map_err(|_| Error::CachesGone { tenant: name.clone() })?;
        if tenant.meta().deletion_timestamp.is_some() {
            if has_finalizer(&tenant) { cleanup(&tenant, &ctx).await } else { Ok(Action::await_change()) }
        } else {
            if !has_finalizer(&tenant) {
                add_finalizer(&ctx, &tenant).await?;
            }
            apply_tenant(&tenant, &ctx).await
        }
    }
    .instrument(span)
    .await;
    ctx.metrics.reconciled(result.is_ok(), started.elapsed());
    match &result {
        Ok(_) => ctx.backoff.reset(&name),
        Err(error) => {
            publish(&ctx, &tenant, EventType::Warning, error.reason(), "Reconcile", error.to_string()).await;
        }
    }
    result
}

pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&tenant.name_any());
    tracing::warn!(tenant = %tenant.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn has_finalizer(tenant: &Tenant) -> bool {
    tenant.finalizers().iter().any(|f| f == FINALIZER)
}

/// Sets the finalizer list guarded by the resourceVersion it was computed from, so a concurrent
/// change (another finalizer, a deletion) fails the patch instead of being overwritten.
async fn patch_finalizers(ctx: &Context, tenant: &Tenant, finalizers: Vec<String>, verb: &'static str) -> Result<()> {
    let name = tenant.name_any();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tenant.resource_version()}});
    Api::<Tenant>::all(ctx.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Api { tenant: name.clone(), verb, kind: "Tenant", name, source })?;
    Ok(())
}

async fn add_finalizer(ctx: &Context, tenant: &Tenant) -> Result<()> {
    let mut finalizers = tenant.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    patch_finalizers(ctx, tenant, finalizers, "add finalizer to").await
}

async fn remove_finalizer(ctx: &Context, tenant: &Tenant) -> Result<()> {
    let finalizers = tenant.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    patch_finalizers(ctx, tenant, finalizers, "remove finalizer from").await
}

async fn publish(ctx: &Context, tenant: &Tenant, type_: EventType, reason: &str, action: &str, note: String) {
    let event =
        Event { type_, reason: reason.to_owned(), note: Some(note), action: action.to_owned(), secondary: None };
    if let Err(error) = ctx.recorder.publish(&event, &tenant.object_ref(&())).await {
        tracing::warn!(tenant = %tenant.name_any(), %error, "cannot publish event");
    }
}

fn now() -> Time {
    // The API server keeps whole seconds; rounding here makes a re-derived status compare equal.
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Writes the status with one server-side apply, and only when it differs from the current one.
async fn write_status(ctx: &Context, tenant: &Tenant, status: &TenantStatus) -> Result<bool> {
    if tenant.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let name = tenant.name_any();
    let body = json!({"apiVersion": Tenant::api_version(&()), "kind": Tenant::kind(&()), "status": status});
    Api::<Tenant>::all(ctx.client.clone())
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|source| Error::Api {
            tenant: name.clone(),
            verb: "update status of",
            kind: "Tenant",
            name,
            source,
        })?;
    Ok(true)
}

/// Reports a phase change as an Event; failures and degradations as warnings.
async fn publish_phase_change(ctx: &Context, tenant: &Tenant, status: &TenantStatus) {
    let before = tenant.status.as_ref().and_then(|s| s.phase);
    let Some(after) = status.phase else { return };
    if before == Some(after) {
        return;
    }
    let ready =
        status.conditions.iter().find(|c| c.type_ == status::READY).map(|c| c.message.clone()).unwrap_or_default();
    let type_ = match after {
        TenantPhase::Failed | TenantPhase::Degraded => EventType::Warning,
        _ => EventType::Normal,
    };
    publish(ctx, tenant, type_, &format!("{after:?}"), "Reconcile", format!("tenant is {after:?}: {ready}")).await;
}

async fn apply_tenant(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let generation = tenant.meta().generation;
    let model = match TenantModel::from_v1(tenant) {
        Ok(model) => model,
        Err(invalid) => {
            // Admission should have rejected this; it can only be an object stored before a rule
            // existed. Report it and wait for a spec change: retrying cannot help.
            let message = format!("tenant {}: {invalid}", tenant.name_any());
            let status = status::invalid_spec(tenant.status.as_ref(), generation, message, &now());
            if write_status(ctx, tenant, &status).await? {
                publish_phase_change(ctx, tenant, &status).await;
            }
            return Ok(Action::await_change());
        }
    };

    let mut changes = Changes::default();
    let namespace = ensure_namespace(&model, ctx, &mut changes).await?;
    let (redis, server) = if namespace == NamespaceState::Ready {
        ensure_children(&model, ctx, &mut changes).await?
    } else {
        (None, None)
    };

    if !changes.created.is_empty() {
        publish(ctx, tenant, EventType::Normal, "Created", "Apply", format!("created {}", changes.created.join(", ")))
            .await;
    }
    if !changes.updated.is_empty() {
        publish(ctx, tenant, EventType::Normal, "Updated", "Apply", format!("updated {}", changes.updated.join(", ")))
            .await;
    }

    let observed = Observation {
        generation,
        namespace_name: model.namespace.clone(),
        namespace: namespace.clone(),
        redis,
        server,
    };
    let status = status::derive(&observed, tenant.status.as_ref(), &now());
    if write_status(ctx, tenant, &status).await? {
        publish_phase_change(ctx, tenant, &status).await;
    }
    Ok(match namespace {
        NamespaceState::Terminating { .. } => Action::requeue(TERMINATION_POLL),
        _ => Action::requeue(ctx.settings.resync_interval),
    })
}

/// Metadata of the namespace `name`: from the cache, or, when the cache has not seen it (it may
/// lag behind a create), from the API server.
async fn namespace_metadata(ctx: &Context, tenant: &str, name: &str) -> Result<Option<ObjectMeta>> {
    if let Some(cached) = ctx.caches.namespaces.get(&ObjectRef::new(name)) {
        return Ok(Some(cached.metadata.clone()));
    }
    Api::<Namespace>::all(ctx.client.clone())
        .get_metadata_opt(name)
        .await
        .map(|found| found.map(|ns| ns.metadata))
        .map_err(|source| Error::Api {
            tenant: tenant.to_owned(),
            verb: "get",
            kind: "Namespace",
            name: name.to_owned(),
            source,
        })
}

async fn ensure_namespace(model: &TenantModel, ctx: &Context, changes: &mut Changes) -> Result<NamespaceState> {
    let api = Api::<Namespace>::all(ctx.client.clone());
    let desired = namespace::namespace(model);
    let name = &model.namespace;
    let existing = match namespace_metadata(ctx, &model.name, name).await? {
        Some(existing) => existing,
        None => match apply::create(&api, &model.name, &desired).await? {
            Some(_) => {
                changes.record(Change::Created, "Namespace", name);
                return Ok(NamespaceState::Ready);
            }
            // Created by someone else in between: judge it like any existing namespace.
            None => {
                api.get_metadata(name)
                    .await
                    .map_err(|source| Error::Api {
                        tenant: model.name.clone(),
                        verb: "get",
                        kind: "Namespace",
                        name: name.clone(),
                        source,
                    })?
                    .metadata
            }
        },
    };
    let terminating = existing.deletion_timestamp.is_some();
    if namespace::created_for(&existing, &model.uid) {
        if terminating {
            return Ok(NamespaceState::Terminating {
                message: format!("namespace {name} is being deleted; the operator re-creates it once it is gone"),
            });
        }
        let live = Namespace { metadata: existing, ..Namespace::default() };
        let applied = apply::apply(&api, &model.name, Some(&live), &desired).await?;
        changes.record(applied.change, "Namespace", name);
        return Ok(NamespaceState::Ready);
    }
    if terminating && namespace::created_for_name(&existing, &model.name) {
        return Ok(NamespaceState::Terminating {
            message: format!(
                "namespace {name} of an earlier tenant named {} is still terminating; waiting for it to be gone",
                model.name
            ),
        });
    }
    Ok(NamespaceState::Conflict {
        message: format!(
            "namespace {name} already exists and was not created by the operator for this tenant; it is left untouched. Delete or rename it, or give the tenant another name"
        ),
    })
}

/// The cached object `name` in the tenant namespace.
fn cached<K>(store: &Store<K>, model: &TenantModel, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    store.get(&ObjectRef::new(name).within(&model.namespace))
}

async fn ensure<K>(store: &Store<K>, ctx: &Context, model: &TenantModel, desired: K, changes: &mut Changes) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let name = desired.name_any();
    let api = Api::<K>::namespaced(ctx.client.clone(), &model.namespace);
    let live = cached(store, model, &name);
    let applied = apply::apply(&api, &model.name, live.as_deref(), &desired).await?;
    changes.record(applied.change, apply::short_kind::<K>(), &name);
    Ok(applied.object)
}

/// The Redis password Secret is created once, never adopted or rewritten: regenerating the
/// password would lock the server out of its data.
async fn ensure_redis_secret(model: &TenantModel, ctx: &Context, changes: &mut Changes) -> Result<()> {
    let name = redis::secret_name(model);
    if ctx.caches.secrets.get(&ObjectRef::new(&name).within(&model.namespace)).is_some() {
        return Ok(());
    }
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &model.namespace);
    if apply::create(&api, &model.name, &redis::secret(model, &redis::generate_password())).await?.is_some() {
        changes.record(Change::Created, "Secret", &name);
    }
    Ok(())
}

async fn ensure_children(
    model: &TenantModel,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<(Option<Replicas>, Option<Replicas>)> {
    let caches = &ctx.caches;
    ensure_redis_secret(model, ctx, changes).await?;
    ensure::<ConfigMap>(&caches.config_maps, ctx, model, redis::config_map(model), changes).await?;
    ensure::<Service>(&caches.services, ctx, model, redis::service(model), changes).await?;
    let redis = ensure::<StatefulSet>(&caches.stateful_sets, ctx, model, redis::stateful_set(model), changes).await?;
    ensure::<Service>(&caches.services, ctx, model, server::service(model), changes).await?;
    let server = ensure::<Deployment>(&caches.deployments, ctx, model, server::deployment(model), changes).await?;
    ensure_network_policies(model, ctx, changes).await?;

    let redis_ready = redis.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let server_ready = server.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    Ok((
        Some(Replicas { desired: model.redis.replicas, ready: redis_ready }),
        Some(Replicas { desired: model.server.replicas, ready: server_ready }),
    ))
}

/// Applies the wanted NetworkPolicies and deletes the operator's policies no longer wanted (a
/// removed rule, or all of them when disabled).
async fn ensure_network_policies(model: &TenantModel, ctx: &Context, changes: &mut Changes) -> Result<()> {
    let desired = network::network_policies(model, ctx.settings.ingress_namespace.as_deref());
    let wanted: Vec<String> = desired.iter().map(|p| p.name_any()).collect();
    for policy in desired {
        ensure::<NetworkPolicy>(&ctx.caches.network_policies, ctx, model, policy, changes).await?;
    }
    let stale = ctx.caches.network_policies.state().into_iter().filter(|p| {
        p.metadata.namespace.as_deref() == Some(model.namespace.as_str())
            && p.labels().get(resources::COMPONENT_LABEL).map(String::as_str) == Some(network::COMPONENT_VALUE)
            && !wanted.contains(&p.name_any())
    });
    let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &model.namespace);
    for policy in stale {
        let name = policy.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => changes.deleted.push(format!("NetworkPolicy {name}")),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Api {
                    tenant: model.name.clone(),
                    verb: "delete",
                    kind: "NetworkPolicy",
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Deletion: delete the namespace the operator created for this tenant, wait until it is gone,
/// then release the finalizer. A namespace the operator did not create is never touched.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let status = status::terminating(tenant.status.as_ref());
    if write_status(ctx, tenant, &status).await? {
        publish_phase_change(ctx, tenant, &status).await;
    }
    let namespace = namespace_name(&name);
    let uid = tenant.uid().unwrap_or_default();
    match namespace_metadata(ctx, &name, &namespace).await? {
        Some(existing) if namespace::created_for(&existing, &uid) => {
            if existing.deletion_timestamp.is_none() {
                Api::<Namespace>::all(ctx.client.clone())
                    .delete(&namespace, &DeleteParams::background())
                    .await
                    .map_err(|source| Error::Api {
                        tenant: name.clone(),
                        verb: "delete",
                        kind: "Namespace",
                        name: namespace.clone(),
                        source,
                    })?;
                publish(
                    ctx,
                    tenant,
                    EventType::Normal,
                    "Deleting",
                    "Delete",
                    format!("deleting namespace {namespace} and everything in it"),
                )
                .await;
            }
            Ok(Action::requeue(TERMINATION_POLL))
        }
        _ => {
            remove_finalizer(ctx, tenant).await?;
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_list_only_what_changed() {
        let mut changes = Changes::default();
        changes.record(Change::Created, "Namespace", "tenant-a");
        changes.record(Change::Unchanged, "Service", "a-redis");
        changes.record(Change::Updated, "Deployment", "a-server");
        assert_eq!(changes.created, ["Namespace tenant-a"]);
        assert_eq!(changes.updated, ["Deployment a-server"]);
    }
}
