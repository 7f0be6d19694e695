//! The apply path: a live tenant gets its namespace, its children (quota, Redis, server,
//! registry, network policies), its Auth registration and its status; children it no longer
//! wants are swept.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::Instrument;
use tracing::field::Empty;

use super::children::{Child, Marks};
use super::context::Context;
use super::error::{Error, Result};
use super::events::{self, Activity, Changes, Reason};
use super::outcome::{Outcome, TERMINATION_POLL};
use super::write::{self, Change};
use super::{namespace, status};
use crate::api::Tenant;
use crate::model::TenantModel;
use crate::model::state::{self, AUTH_REGISTERED, AuthState, NamespaceState, Observation, Replicas, TenantState};
use crate::resources::{network, quota, redis, registry, server};

/// Brings a live tenant to its desired state.
pub async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Outcome> {
    let name = tenant.name_any();
    let generation = tenant.meta().generation;
    let current = tenant.state();
    let model = match tenant.model() {
        Ok(model) => model,
        Err(invalid) => {
            // Admission rejects what it can; what it cannot (a quota too small for the tenant's own
            // pods, an object stored before a rule existed) is reported, and nothing is changed.
            // Retrying cannot help: the next spec change wakes the tenant.
            let message = format!("tenant {name}: {invalid}");
            let failed = state::invalid_spec(current.as_ref(), generation, message, &status::now());
            if status::write(&ctx.client, tenant, &failed).await? {
                events::phase_change(&ctx.recorder, tenant, &failed).await;
            }
            ctx.backoff.reset(&name);
            return Ok(Outcome::done(Action::await_change()));
        }
    };

    let mut changes = Changes::default();
    let namespace = namespace::ensure(&model, ctx, &mut changes).instrument(tracing::info_span!("namespace")).await?;
    let workloads = if namespace == NamespaceState::Ready {
        let mut children = Applier { ctx, model: &model, changes: &mut changes, marks: Marks::default() };
        Some(children.apply_all().await?)
    } else {
        None
    };
    changes.publish(&ctx.recorder, tenant).await;
    // After the children, so a slow Auth never delays the tenant's workloads.
    let auth = ensure_registered(tenant, current.as_ref(), ctx)
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
    let derived = state::derive(&observed, current.as_ref(), &status::now());
    async {
        if status::write(&ctx.client, tenant, &derived).await? {
            publish_auth_change(ctx, tenant, current.as_ref(), &derived).await;
            events::phase_change(&ctx.recorder, tenant, &derived).await;
        }
        Ok::<_, Error>(())
    }
    .instrument(tracing::info_span!("status", phase = derived.phase.map(|p| p.as_str())))
    .await?;
    if let AuthState::Failed { message, .. } = auth {
        return Ok(Outcome::fell_short(Action::requeue(ctx.backoff.next_delay(&name)), message));
    }
    ctx.backoff.reset(&name);
    Ok(Outcome::done(match namespace {
        NamespaceState::Terminating { .. } => Action::requeue(TERMINATION_POLL),
        _ => Action::requeue(ctx.settings.resync_interval),
    }))
}

/// Ready and desired pods of the tenant's workloads.
#[derive(Clone, Copy)]
struct Workloads {
    redis: Replicas,
    server: Replicas,
    registry: Replicas,
}

/// Applies the children of one tenant, marking each, then sweeps the unmarked ones.
struct Applier<'a> {
    ctx: &'a Context,
    model: &'a TenantModel,
    changes: &'a mut Changes,
    marks: Marks,
}

impl Applier<'_> {
    /// Server-side applies `desired` (skipped when the cached object already matches).
    async fn apply<K: Child>(&mut self, cache: &Store<K>, desired: K) -> Result<K> {
        let name = desired.name_any();
        self.marks.mark::<K>(&name);
        let api = Api::<K>::namespaced(self.ctx.client.clone(), &self.model.namespace);
        let live = cache.get(&ObjectRef::new(&name).within(&self.model.namespace));
        let applied = write::apply(&api, &self.model.name, live.as_deref(), &desired).await?;
        self.changes.record(applied.change, write::short_kind::<K>(), &name);
        Ok(applied.object)
    }

    /// Applies `desired` if the tenant wants one; unmarked, the sweep removes what exists.
    async fn apply_optional<K: Child>(&mut self, cache: &Store<K>, desired: Option<K>) -> Result<()> {
        if let Some(desired) = desired {
            self.apply(cache, desired).await?;
        }
        Ok(())
    }

    /// The Redis password Secret is created once, never adopted or rewritten: regenerating the
    /// password would lock the server out of its data.
    async fn create_redis_secret(&mut self) -> Result<()> {
        let (ctx, model) = (self.ctx, self.model);
        let name = redis::secret_name(model);
        self.marks.mark::<Secret>(&name);
        if ctx.children.secrets.get(&ObjectRef::new(&name).within(&model.namespace)).is_some() {
            return Ok(());
        }
        let api = Api::<Secret>::namespaced(ctx.client.clone(), &model.namespace);
        if write::create(&api, &model.name, &redis::secret(model, &redis::generate_password())).await?.is_some() {
            self.changes.record(Change::Created, "Secret", &name);
        }
        Ok(())
    }

    async fn apply_all(&mut self) -> Result<Workloads> {
        let (ctx, model) = (self.ctx, self.model);
        let children = &ctx.children;
        let platform = &ctx.settings.platform;
        // The budget first, so the tenant's pods are admitted against it from the start.
        async {
            self.apply_optional::<ResourceQuota>(&children.resource_quotas, quota::resource_quota(model)).await?;
            self.apply_optional::<LimitRange>(&children.limit_ranges, quota::limit_range(model)).await
        }
        .instrument(tracing::info_span!("quota"))
        .await?;
        let redis = async {
            self.create_redis_secret().await?;
            self.apply::<ConfigMap>(&children.config_maps, redis::config_map(model)).await?;
            self.apply::<Service>(&children.services, redis::service(model)).await?;
            self.apply::<StatefulSet>(&children.stateful_sets, redis::stateful_set(model)).await
        }
        .instrument(tracing::info_span!("redis"))
        .await?;
        let server = async {
            self.apply::<Service>(&children.services, server::service(model)).await?;
            self.apply::<Deployment>(&children.deployments, server::deployment(model, platform)).await
        }
        .instrument(tracing::info_span!("server"))
        .await?;
        let registry = async {
            self.apply::<Service>(&children.services, registry::service(model)).await?;
            let deployment =
                self.apply::<Deployment>(&children.deployments, registry::deployment(model, platform)).await?;
            self.apply_optional::<Ingress>(&children.ingresses, registry::ingress(model, platform)).await?;
            Ok::<_, Error>(deployment)
        }
        .instrument(tracing::info_span!("registry"))
        .await?;
        async {
            for policy in network::network_policies(model, platform) {
                self.apply::<NetworkPolicy>(&children.network_policies, policy).await?;
            }
            Ok::<_, Error>(())
        }
        .instrument(tracing::info_span!("network_policies"))
        .await?;
        // Everything wanted is marked: what is left over (a removed rule, budget or domain) goes.
        children.sweep(&ctx.client, &model.name, &model.namespace, &self.marks, self.changes).await?;

        let replicas = |desired: i32, ready: Option<i32>| Replicas { desired, ready: ready.unwrap_or(0) };
        Ok(Workloads {
            redis: replicas(model.redis.replicas, redis.status.as_ref().and_then(|s| s.ready_replicas)),
            server: replicas(model.server.replicas, server.status.as_ref().and_then(|s| s.ready_replicas)),
            registry: replicas(model.registry.replicas, registry.status.as_ref().and_then(|s| s.ready_replicas)),
        })
    }
}

/// Registers the tenant with Auth unless its status already records the registration: a
/// converged tenant costs Auth nothing, and only an unregistered one lists the tenants once.
async fn ensure_registered(tenant: &Tenant, current: Option<&TenantState>, ctx: &Context) -> AuthState {
    let Some(auth) = &ctx.auth else { return AuthState::NotConfigured };
    if current.is_some_and(TenantState::auth_registered) {
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
            AuthState::Failed { reason: error.reason().to_owned(), message: error.to_string() }
        }
    }
}

/// Reports a new Auth registration, or a new way of failing it, as an Event.
async fn publish_auth_change(ctx: &Context, tenant: &Tenant, before: Option<&TenantState>, after: &TenantState) {
    let Some(after) = after.condition(AUTH_REGISTERED) else { return };
    let before = before.and_then(|s| s.condition(AUTH_REGISTERED));
    if before.is_some_and(|b| b.status == after.status && b.reason == after.reason) {
        return;
    }
    let reason = match after.reason.as_str() {
        "Registered" => Reason::Registered,
        "AuthNotConfigured" => return,
        failure => Reason::Failed(failure.to_owned()),
    };
    events::publish(&ctx.recorder, tenant, reason, Activity::Register, after.message.clone()).await;
}
