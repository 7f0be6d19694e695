//! One reconcile of one tenant: finalizer, namespace, children (quota, Redis, server, registry,
//! network policies), Auth registration, status and events; and the helpers deletion shares.

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
use tracing::field::Empty;

use super::apply::{self, Change, FIELD_MANAGER};
use super::error::{Error, Result};
use super::status::{self, AuthState, NamespaceState, Observation, Replicas};
use super::{Context, deletion};
use crate::api::v1::{Tenant, TenantPhase, TenantStatus};
use crate::model::TenantModel;
use crate::resources::{self, namespace, network, quota, redis, registry, server};
use crate::telemetry;

/// Finalizer that keeps a Tenant until its namespace is gone.
pub const FINALIZER: &str = "neurallog.io/finalizer";
/// How often a tenant waiting for a namespace to terminate is looked at again (the namespace
/// watch usually wakes it sooner).
pub(super) const TERMINATION_POLL: Duration = Duration::from_secs(5);
/// Safety net behind the watch event that brings a newer copy of a tenant (after our own status
/// write, or a finalizer patch that found this copy stale).
pub(super) const NEWER_COPY_WAIT: Duration = Duration::from_secs(1);

/// What a reconcile changed, reported as one Event per kind of change.
#[derive(Default)]
pub(super) struct Changes {
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

    /// One Normal event per kind of change.
    pub(super) async fn publish(self, ctx: &Context, tenant: &Tenant) {
        for (reason, verb, objects) in [
            ("Created", "created", self.created),
            ("Updated", "updated", self.updated),
            ("Deleted", "deleted", self.deleted),
        ] {
            if !objects.is_empty() {
                let note = format!("{verb} {}", objects.join(", "));
                publish(ctx, tenant, EventType::Normal, reason, "Apply", note).await;
            }
        }
    }
}

/// One reconcile, traced as its own trace: the root span names the tenant, the generation and
/// resourceVersion it saw, and why it ran; its trace id goes into the logs and every Event.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let name = tenant.name_any();
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        parent: None,
        "reconcile",
        tenant = %name,
        generation = tenant.meta().generation.unwrap_or_default(),
        resource_version = tenant.resource_version().unwrap_or_default(),
        trigger = %ctx.triggers.take(&name),
        trace_id = Empty,
        span_id = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    );
    if let Some((trace_id, span_id)) = span.in_scope(telemetry::current_ids) {
        span.record("trace_id", trace_id).record("span_id", span_id);
    }
    let result = async {
        let result = async {
            ctx.caches.ready().await.map_err(|_| Error::CachesGone { tenant: name.clone() })?;
            if tenant.meta().deletion_timestamp.is_some() {
                if has_finalizer(&tenant) { deletion::cleanup(&tenant, &ctx).await } else { Ok(Action::await_change()) }
            } else {
                if !has_finalizer(&tenant) && add_finalizer(&ctx, &tenant).await? == FinalizerPatch::StaleCopy {
                    return Ok(Action::requeue(NEWER_COPY_WAIT));
                }
                apply_tenant(&tenant, &ctx).await
            }
        }
        .await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => {
                ctx.triggers.scheduled(&name, "requeued by the previous reconcile (resync or wait)");
                tracing::debug!(outcome = "ok", elapsed_ms, "reconcile finished");
            }
            Err(error) => {
                let current = tracing::Span::current();
                current.record("otel.status_code", "ERROR").record("otel.status_message", error.to_string());
                ctx.triggers.scheduled(&name, "retry after a failed reconcile");
                tracing::warn!(%error, "reconcile failed");
                tracing::debug!(outcome = "error", elapsed_ms, "reconcile finished");
                publish(&ctx, &tenant, EventType::Warning, error.reason(), "Reconcile", error.to_string()).await;
            }
        }
        result
    }
    .instrument(span)
    .await;
    ctx.metrics.reconciled(result.is_ok(), started.elapsed());
    result
}

pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&tenant.name_any());
    // The failure itself is logged (and traced) by the reconcile.
    tracing::debug!(tenant = %tenant.name_any(), retry_in = ?delay, reason = error.reason(), "retry scheduled");
    Action::requeue(delay)
}

fn has_finalizer(tenant: &Tenant) -> bool {
    tenant.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether a finalizer patch applied, or found that this copy of the tenant is older than the
/// stored one (the watch brings the newer copy, and the next pass patches from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FinalizerPatch {
    Applied,
    StaleCopy,
}

/// Sets the finalizer list guarded by the resourceVersion it was computed from, so a concurrent
/// change (another finalizer, a deletion, our own status write) fails the patch instead of being
/// overwritten.
async fn patch_finalizers(
    ctx: &Context,
    tenant: &Tenant,
    finalizers: Vec<String>,
    verb: &'static str,
) -> Result<FinalizerPatch> {
    let name = tenant.name_any();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tenant.resource_version()}});
    let span = apply::write_span(verb, "Tenant", &name);
    let result = Api::<Tenant>::all(ctx.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .instrument(span.clone())
        .await;
    match result {
        Ok(_) => {
            span.record("changed", true);
            Ok(FinalizerPatch::Applied)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            span.record("changed", false);
            Ok(FinalizerPatch::StaleCopy)
        }
        Err(source) => {
            Err(apply::failed(&span, Error::Api { tenant: name.clone(), verb, kind: "Tenant", name, source }))
        }
    }
}

async fn add_finalizer(ctx: &Context, tenant: &Tenant) -> Result<FinalizerPatch> {
    let mut finalizers = tenant.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    patch_finalizers(ctx, tenant, finalizers, "add finalizer to").await
}

pub(super) async fn remove_finalizer(ctx: &Context, tenant: &Tenant) -> Result<FinalizerPatch> {
    let finalizers = tenant.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    patch_finalizers(ctx, tenant, finalizers, "remove finalizer from").await
}

pub(super) async fn publish(
    ctx: &Context,
    tenant: &Tenant,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    // The reconcile's trace id leads from `kubectl describe` straight to the trace.
    let note = match telemetry::current_ids() {
        Some((trace_id, _)) => format!("{note} (trace {trace_id})"),
        None => note,
    };
    let event =
        Event { type_, reason: reason.to_owned(), note: Some(note), action: action.to_owned(), secondary: None };
    if let Err(error) = ctx.recorder.publish(&event, &tenant.object_ref(&())).await {
        tracing::warn!(tenant = %tenant.name_any(), %error, "cannot publish event");
    }
}

pub(super) fn now() -> Time {
    // The API server keeps whole seconds; rounding here makes a re-derived status compare equal.
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Writes the status with one server-side apply, and only when it differs from the current one.
pub(super) async fn write_status(ctx: &Context, tenant: &Tenant, status: &TenantStatus) -> Result<bool> {
    if tenant.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let name = tenant.name_any();
    let body = json!({"apiVersion": Tenant::api_version(&()), "kind": Tenant::kind(&()), "status": status});
    let verb = "update status of";
    let span = apply::write_span(verb, "Tenant", &name);
    Api::<Tenant>::all(ctx.client.clone())
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .instrument(span.clone())
        .await
        .map_err(|source| {
            apply::failed(&span, Error::Api { tenant: name.clone(), verb, kind: "Tenant", name, source })
        })?;
    span.record("changed", true);
    Ok(true)
}

/// Reports a phase change as an Event; failures and degradations as warnings.
pub(super) async fn publish_phase_change(ctx: &Context, tenant: &Tenant, status: &TenantStatus) {
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
    let name = tenant.name_any();
    let generation = tenant.meta().generation;
    let model = match TenantModel::from_v1(tenant) {
        Ok(model) => model,
        Err(invalid) => {
            // Admission rejects what it can; what it cannot (a quota too small for the tenant's own
            // pods, an object stored before a rule existed) is reported, and nothing is changed.
            // Retrying cannot help: the next spec change wakes the tenant.
            let message = format!("tenant {name}: {invalid}");
            let status = status::invalid_spec(tenant.status.as_ref(), generation, message, &now());
            if write_status(ctx, tenant, &status).await? {
                publish_phase_change(ctx, tenant, &status).await;
            }
            ctx.backoff.reset(&name);
            return Ok(Action::await_change());
        }
    };

    let mut changes = Changes::default();
    let namespace = ensure_namespace(&model, ctx, &mut changes).instrument(tracing::info_span!("namespace")).await?;
    let workloads =
        if namespace == NamespaceState::Ready { Some(ensure_children(&model, ctx, &mut changes).await?) } else { None };
    changes.publish(ctx, tenant).await;
    // After the children, so a slow Auth never delays the tenant's workloads.
    let auth = ensure_registered(tenant, ctx)
        .instrument(tracing::info_span!(
            "auth",
            registered = Empty,
            otel.status_code = Empty,
            otel.status_message = Empty
        ))
        .await;

    let observed = Observation {
        generation,
        namespace_name: model.namespace.clone(),
        namespace: namespace.clone(),
        redis: workloads.map(|w| w.redis),
        server: workloads.map(|w| w.server),
        registry: workloads.map(|w| w.registry),
        auth: auth.clone(),
    };
    let status = status::derive(&observed, tenant.status.as_ref(), &now());
    async {
        if write_status(ctx, tenant, &status).await? {
            publish_auth_change(ctx, tenant, &status).await;
            publish_phase_change(ctx, tenant, &status).await;
        }
        Ok::<_, Error>(())
    }
    .instrument(tracing::info_span!("status", phase = ?status.phase))
    .await?;
    if let AuthState::Failed { message, .. } = &auth {
        // The reconcile did not reach its goal: its trace says so at the root.
        tracing::Span::current().record("otel.status_code", "ERROR").record("otel.status_message", message.as_str());
        return Ok(Action::requeue(ctx.backoff.next_delay(&name)));
    }
    ctx.backoff.reset(&name);
    Ok(match namespace {
        NamespaceState::Terminating { .. } => Action::requeue(TERMINATION_POLL),
        _ => Action::requeue(ctx.settings.resync_interval),
    })
}

/// Registers the tenant with Auth unless its status already records the registration: a
/// converged tenant costs Auth nothing, and only an unregistered one lists the tenants once.
async fn ensure_registered(tenant: &Tenant, ctx: &Context) -> AuthState {
    let Some(auth) = &ctx.auth else { return AuthState::NotConfigured };
    if status::auth_registered(tenant.status.as_ref()) {
        tracing::Span::current().record("registered", "recorded in status");
        return AuthState::Registered;
    }
    let name = tenant.name_any();
    let registered = match auth.is_registered(&name).await {
        Ok(true) => Ok(()),
        Ok(false) => auth.register(&name).await,
        Err(error) => Err(error),
    };
    match registered {
        Ok(()) => AuthState::Registered,
        Err(error) => {
            let span = tracing::Span::current();
            span.record("otel.status_code", "ERROR").record("otel.status_message", error.to_string());
            tracing::warn!(tenant = %name, %error, "Auth registration failed");
            AuthState::Failed { reason: error.reason().to_owned(), message: error.to_string() }
        }
    }
}

/// Reports a new Auth registration, or a new way of failing it, as an Event.
async fn publish_auth_change(ctx: &Context, tenant: &Tenant, status: &TenantStatus) {
    let find = |s: Option<&TenantStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == status::AUTH_REGISTERED).cloned())
    };
    let (Some(after), before) = (find(Some(status)), find(tenant.status.as_ref())) else { return };
    if before.as_ref().is_some_and(|b| b.status == after.status && b.reason == after.reason) {
        return;
    }
    match after.reason.as_str() {
        "Registered" => publish(ctx, tenant, EventType::Normal, "Registered", "Register", after.message).await,
        "AuthNotConfigured" => {}
        reason => publish(ctx, tenant, EventType::Warning, reason, "Register", after.message).await,
    }
}

/// Metadata of the namespace `name`: from the cache, or, when the cache has not seen it (it may
/// lag behind a create), from the API server.
pub(super) async fn namespace_metadata(ctx: &Context, tenant: &str, name: &str) -> Result<Option<ObjectMeta>> {
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
    if !terminating && namespace::retained_for(&existing, &model.name) {
        // Kept by an earlier tenant of this name with deletionPolicy Retain: taking it over, data
        // included, is what re-creating the tenant is for.
        let live = Namespace { metadata: existing, ..Namespace::default() };
        apply::apply(&api, &model.name, Some(&live), &desired).await?;
        changes.record(
            Change::Updated,
            "Namespace",
            &format!("{name} (adopted with the data retained by an earlier tenant)"),
        );
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

/// A namespaced child kind the operator writes and caches.
pub(super) trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// The cached object `name` in the tenant namespace.
fn cached<K>(store: &Store<K>, model: &TenantModel, name: &str) -> Option<Arc<K>>
where
    K: Child,
{
    store.get(&ObjectRef::new(name).within(&model.namespace))
}

async fn ensure<K>(store: &Store<K>, ctx: &Context, model: &TenantModel, desired: K, changes: &mut Changes) -> Result<K>
where
    K: Child,
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

/// Ready and desired pods of the tenant's workloads.
#[derive(Clone, Copy)]
struct Workloads {
    redis: Replicas,
    server: Replicas,
    registry: Replicas,
}

async fn ensure_children(model: &TenantModel, ctx: &Context, changes: &mut Changes) -> Result<Workloads> {
    let caches = &ctx.caches;
    let platform = &ctx.settings.platform;
    // The budget first, so the tenant's pods are admitted against it from the start.
    async {
        ensure_optional(&caches.resource_quotas, ctx, model, quota::resource_quota(model), quota::COMPONENT, changes)
            .await?;
        ensure_optional(&caches.limit_ranges, ctx, model, quota::limit_range(model), quota::COMPONENT, changes).await
    }
    .instrument(tracing::info_span!("quota"))
    .await?;
    let redis = async {
        ensure_redis_secret(model, ctx, changes).await?;
        ensure::<ConfigMap>(&caches.config_maps, ctx, model, redis::config_map(model), changes).await?;
        ensure::<Service>(&caches.services, ctx, model, redis::service(model), changes).await?;
        ensure::<StatefulSet>(&caches.stateful_sets, ctx, model, redis::stateful_set(model), changes).await
    }
    .instrument(tracing::info_span!("redis"))
    .await?;
    let server = async {
        ensure::<Service>(&caches.services, ctx, model, server::service(model), changes).await?;
        ensure::<Deployment>(&caches.deployments, ctx, model, server::deployment(model, platform), changes).await
    }
    .instrument(tracing::info_span!("server"))
    .await?;
    let registry = async {
        ensure::<Service>(&caches.services, ctx, model, registry::service(model), changes).await?;
        let deployment =
            ensure::<Deployment>(&caches.deployments, ctx, model, registry::deployment(model, platform), changes)
                .await?;
        let ingress = registry::ingress(model, platform);
        ensure_optional(&caches.ingresses, ctx, model, ingress, registry::COMPONENT, changes).await?;
        Ok(deployment)
    }
    .instrument(tracing::info_span!("registry"))
    .await?;
    ensure_network_policies(model, ctx, changes).instrument(tracing::info_span!("network_policies")).await?;

    let ready = |status: Option<i32>| status.unwrap_or(0);
    Ok(Workloads {
        redis: Replicas {
            desired: model.redis.replicas,
            ready: ready(redis.status.as_ref().and_then(|s| s.ready_replicas)),
        },
        server: Replicas {
            desired: model.server.replicas,
            ready: ready(server.status.as_ref().and_then(|s| s.ready_replicas)),
        },
        registry: Replicas {
            desired: model.registry.replicas,
            ready: ready(registry.status.as_ref().and_then(|s| s.ready_replicas)),
        },
    })
}

/// Applies `desired` if the tenant wants it, and deletes the operator's other objects of that
/// kind and component (all of them when nothing is wanted).
async fn ensure_optional<K>(
    store: &Store<K>,
    ctx: &Context,
    model: &TenantModel,
    desired: Option<K>,
    component: &str,
    changes: &mut Changes,
) -> Result<()>
where
    K: Child,
{
    let wanted: Vec<String> = desired.iter().map(ResourceExt::name_any).collect();
    if let Some(desired) = desired {
        ensure(store, ctx, model, desired, changes).await?;
    }
    remove_unwanted(store, ctx, model, component, &wanted, changes).await
}

/// The names of the operator's objects of one tenant in a cache, optionally of one component.
pub(super) fn managed_names<K>(store: &Store<K>, namespace: &str, tenant: &str, component: Option<&str>) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let label = |object: &K, key: &str| object.labels().get(key).cloned();
    store
        .state()
        .iter()
        .filter(|object| object.meta().namespace.as_deref() == Some(namespace))
        .filter(|object| label(object, resources::TENANT_LABEL).as_deref() == Some(tenant))
        .filter(|object| component.is_none_or(|c| label(object, resources::COMPONENT_LABEL).as_deref() == Some(c)))
        .map(|object| object.name_any())
        .collect()
}

/// Deletes `names` in `namespace`; an object already gone counts as deleted.
pub(super) async fn delete_named<K>(
    ctx: &Context,
    tenant: &str,
    namespace: &str,
    names: Vec<String>,
    params: &DeleteParams,
    changes: &mut Changes,
) -> Result<()>
where
    K: Child,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    let kind = apply::short_kind::<K>();
    for name in names {
        let span = apply::write_span("delete", kind, &name);
        match api.delete(&name, params).instrument(span.clone()).await {
            Ok(_) => {
                span.record("changed", true);
                changes.deleted.push(format!("{kind} {name}"));
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                span.record("changed", false);
            }
            Err(source) => {
                let error = Error::Api { tenant: tenant.to_owned(), verb: "delete", kind, name, source };
                return Err(apply::failed(&span, error));
            }
        }
    }
    Ok(())
}

/// Deletes the operator's objects of `component` that are no longer wanted.
async fn remove_unwanted<K>(
    store: &Store<K>,
    ctx: &Context,
    model: &TenantModel,
    component: &str,
    wanted: &[String],
    changes: &mut Changes,
) -> Result<()>
where
    K: Child,
{
    let stale: Vec<String> = managed_names(store, &model.namespace, &model.name, Some(component))
        .into_iter()
        .filter(|name| !wanted.contains(name))
        .collect();
    delete_named::<K>(ctx, &model.name, &model.namespace, stale, &DeleteParams::default(), changes).await
}

/// Applies the wanted NetworkPolicies and deletes the operator's policies no longer wanted (a
/// removed rule, or all of them when disabled).
async fn ensure_network_policies(model: &TenantModel, ctx: &Context, changes: &mut Changes) -> Result<()> {
    let desired = network::network_policies(model, &ctx.settings.platform);
    let wanted: Vec<String> = desired.iter().map(ResourceExt::name_any).collect();
    for policy in desired {
        ensure::<NetworkPolicy>(&ctx.caches.network_policies, ctx, model, policy, changes).await?;
    }
    remove_unwanted(&ctx.caches.network_policies, ctx, model, network::COMPONENT_VALUE, &wanted, changes).await
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
