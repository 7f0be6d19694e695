//! The apply path: a live tenant gets its namespace, its network isolation (before any
//! workload), its other children (quota, Redis, server, registry), its Auth registration and its
//! status; children it no longer wants are swept. A child the API server refuses does not stop
//! the others, the registration or the status, which names it.

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
                events::phase_change(&ctx.recorder, tenant, current.as_ref(), &failed).await;
            }
            ctx.backoff.reset(&name);
            return Ok(Outcome::done(Action::await_change()));
        }
    };

    let mut changes = Changes::default();
    let namespace = namespace::ensure(&model, ctx, &mut changes).instrument(tracing::info_span!("namespace")).await?;
    let mut failures = Vec::new();
    let workloads = if namespace == NamespaceState::Ready {
        let mut children =
            Applier { ctx, model: &model, changes: &mut changes, marks: Marks::default(), failures: &mut failures };
        Some(children.apply_all().await)
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
        redis: workloads.and_then(|w| w.redis),
        server: workloads.and_then(|w| w.server),
        registry: workloads.and_then(|w| w.registry),
        auth: auth.clone(),
        failures: failures.iter().map(ToString::to_string).collect(),
    };
    let derived = state::derive(&observed, current.as_ref(), &status::now());
    async {
        if status::write(&ctx.client, tenant, &derived).await? {
            publish_auth_change(ctx, tenant, current.as_ref(), &derived).await;
            events::phase_change(&ctx.recorder, tenant, current.as_ref(), &derived).await;
        }
        Ok::<_, Error>(())
    }
    .instrument(tracing::info_span!("status", phase = derived.phase.map(|p| p.as_str())))
    .await?;
    for failure in &failures {
        let reason = Reason::Failed(failure.reason().to_owned());
        events::publish(&ctx.recorder, tenant, reason, Activity::Apply, failure.to_string()).await;
    }
    let mut shortfall = observed.failures;
    if let AuthState::Failed { message, .. } = auth {
        shortfall.push(message);
    }
    if !shortfall.is_empty() {
        return Ok(Outcome::fell_short(Action::requeue(ctx.backoff.next_delay(&name)), shortfall.join("; ")));
    }
    ctx.backoff.reset(&name);
    Ok(Outcome::done(match namespace {
        NamespaceState::Terminating { .. } => Action::requeue(TERMINATION_POLL),
        _ => Action::requeue(ctx.settings.resync_interval),
    }))
}

/// Ready and desired pods of the tenant's workloads; `None` for one that does not exist.
#[derive(Clone, Copy)]
struct Workloads {
    redis: Option<Replicas>,
    server: Option<Replicas>,
    registry: Option<Replicas>,
}

/// Applies the children of one tenant, marking each, then sweeps the unmarked ones. A write the
/// API server refuses is kept in `failures`, and the others go on.
struct Applier<'a> {
    ctx: &'a Context,
    model: &'a TenantModel,
    changes: &'a mut Changes,
    marks: Marks,
    failures: &'a mut Vec<Error>,
}

impl Applier<'_> {
    /// Server-side applies `desired` (skipped when the cached object already matches). Returns
    /// the object as it now is: the applied one, or, when the write failed, the cached one.
    async fn apply<K: Child>(&mut self, cache: &Store<K>, desired: K) -> Option<K> {
        let name = desired.name_any();
        // Marked even when the write fails: the sweep must not delete what exists.
        self.marks.mark::<K>(&name);
        let api = Api::<K>::namespaced(self.ctx.client.clone(), &self.model.namespace);
        let live = cache.get(&ObjectRef::new(&name).within(&self.model.namespace));
        match write::apply(&api, &self.model.name, live.as_deref(), &desired).await {
            Ok(applied) => {
                self.changes.record(applied.change, write::short_kind::<K>(), &name);
                Some(applied.object)
            }
            Err(error) => {
                self.failures.push(error);
                live.map(|live| (*live).clone())
            }
        }
    }

    /// Applies `desired` if the tenant wants one; unmarked, the sweep removes what exists.
    async fn apply_optional<K: Child>(&mut self, cache: &Store<K>, desired: Option<K>) {
        if let Some(desired) = desired {
            self.apply(cache, desired).await;
        }
    }

    /// The Redis password Secret is created once, never adopted or rewritten: regenerating the
    /// password would lock the server out of its data.
    async fn create_redis_secret(&mut self) {
        let (ctx, model) = (self.ctx, self.model);
        let name = redis::secret_name(model);
        self.marks.mark::<Secret>(&name);
        if ctx.children.secrets.get(&ObjectRef::new(&name).within(&model.namespace)).is_some() {
            return;
        }
        let api = Api::<Secret>::namespaced(ctx.client.clone(), &model.namespace);
        match write::create(&api, &model.name, &redis::secret(model, &redis::generate_password())).await {
            Ok(Some(_)) => self.changes.record(Change::Created, "Secret", &name),
            Ok(None) => {}
            Err(error) => self.failures.push(error),
        }
    }

    async fn apply_all(&mut self) -> Workloads {
        let (ctx, model) = (self.ctx, self.model);
        let children = &ctx.children;
        let platform = &ctx.settings.platform;
        // Isolation first: no workload ever runs in the namespace without its policies.
        async {
            for policy in network::network_policies(model, platform) {
                self.apply::<NetworkPolicy>(&children.network_policies, policy).await;
            }
        }
        .instrument(tracing::info_span!("network_policies"))
        .await;
        // Then the budget, so the tenant's pods are admitted against it from the start.
        async {
            self.apply_optional::<ResourceQuota>(&children.resource_quotas, quota::resource_quota(model)).await;
            self.apply_optional::<LimitRange>(&children.limit_ranges, quota::limit_range(model)).await;
        }
        .instrument(tracing::info_span!("quota"))
        .await;
        let redis = async {
            self.create_redis_secret().await;
            self.apply::<ConfigMap>(&children.config_maps, redis::config_map(model)).await;
            self.apply::<Service>(&children.services, redis::service(model)).await;
            self.apply::<StatefulSet>(&children.stateful_sets, redis::stateful_set(model)).await
        }
        .instrument(tracing::info_span!("redis"))
        .await;
        let server = async {
            self.apply::<Service>(&children.services, server::service(model)).await;
            self.apply::<Deployment>(&children.deployments, server::deployment(model, platform)).await
        }
        .instrument(tracing::info_span!("server"))
        .await;
        let registry = async {
            self.apply::<Service>(&children.services, registry::service(model)).await;
            let deployment =
                self.apply::<Deployment>(&children.deployments, registry::deployment(model, platform)).await;
            self.apply_optional::<Ingress>(&children.ingresses, registry::ingress(model, platform)).await;
            deployment
        }
        .instrument(tracing::info_span!("registry"))
        .await;
        // Everything wanted is marked (also what failed): what is left over (a removed rule,
        // budget or domain) goes.
        if let Err(error) = children.sweep(&ctx.client, &model.name, &model.namespace, &self.marks, self.changes).await
        {
            self.failures.push(error);
        }

        // A workload that neither exists nor could be created counts as not created yet.
        let replicas = |desired: i32, ready: Option<i32>| Replicas { desired, ready: ready.unwrap_or(0) };
        Workloads {
            redis: redis.map(|s| replicas(model.redis.replicas, s.status.and_then(|s| s.ready_replicas))),
            server: server.map(|d| replicas(model.server.replicas, d.status.and_then(|s| s.ready_replicas))),
            registry: registry.map(|d| replicas(model.registry.replicas, d.status.and_then(|s| s.ready_replicas))),
        }
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
