//! The apply path: a live tenant gets its namespace, its network isolation (before any
//! workload), its other children (quota, Redis, server, registry), its Auth registration and its
//! status; children it no longer wants are swept. A child the API server refuses does not stop
//! the others, the registration or the status, which names it.

use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::Instrument;
use tracing::field::Empty;

use super::cached::Cached;
use super::children::Marks;
use super::context::Context;
use super::error::{Error, Result};
use super::events::{self, Activity, Changes, Reason};
use super::kinds::Child;
use super::outcome::{Outcome, TERMINATION_POLL};
use super::write;
use super::{backups, namespace, password, status};
use crate::api::Tenant;
use crate::model::TenantModel;
use crate::model::operand::Component;
use crate::model::state::{
    self, AUTH_REGISTERED, AuthState, NamespaceState, Observation, RESTORED, Replicas, RestoreState, TenantState,
};
use crate::model::upgrade::{self, Decision};
use crate::resources::{access, network, quota, redis, registry, server};

/// Brings a live tenant to its desired state.
pub async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Outcome> {
    let name = tenant.name_any();
    let generation = tenant.meta().generation;
    let current = tenant.state();
    let mut model = match tenant.model() {
        Ok(model) => model,
        Err(invalid) => {
            // Admission rejects what it can; what it cannot (a quota too small for the tenant's own
            // pods, an object stored before a rule existed) is reported, and nothing is changed.
            // Retrying cannot help: the next spec change wakes the tenant.
            // Nothing of it moves until it is fixed: it holds no slot of the rollout meanwhile.
            ctx.rollout.forget(&name);
            let message = format!("tenant {name}: {invalid}");
            let failed = state::invalid_spec(current.as_ref(), generation, message, &status::now());
            if status::write(ctx, tenant, &failed).await? {
                events::phase_change(&ctx.recorder, tenant, current.as_ref(), &failed).await;
            }
            ctx.backoff.reset(&name);
            return Ok(Outcome::done(Action::await_change()));
        }
    };

    // A tenant created from a backup: its Redis is created once the backup's location is known,
    // its server and registry once Redis holds the backup.
    let restore_done = backups::restored(current.as_ref());
    let restore_blocked = if restore_done { None } else { backups::resolve_restore(&mut model, &ctx.backups).err() };
    let hold = Hold { redis: restore_blocked.is_some(), workloads: model.restore.is_some() && !restore_done };
    let model = model;

    let mut changes = Changes::default();
    let namespace = namespace::ensure(&model, ctx, &mut changes).instrument(tracing::info_span!("namespace")).await?;
    let (workloads, changes, failures) = if namespace == NamespaceState::Ready {
        let applied = Applier::new(ctx, tenant, &model, changes).apply_all(generation, hold).await;
        (Some(applied.workloads), applied.changes, applied.failures)
    } else {
        (None, changes, Vec::new())
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

    // After the children: their rollout says whether the next component may move.
    let upgrade = workloads.map(|workloads| decide_upgrade(&name, &model, ctx, workloads));
    let upgrading = upgrade.as_ref().is_some_and(Decision::upgrading);
    let backups = backups::summaries(&ctx.backups, &model);
    let next_backup =
        backups::schedule(tenant, &model, ctx, &backups).instrument(tracing::info_span!("backup_schedule")).await;
    let mut backup_observation = backups::observe(&backups);
    backup_observation.restored_from = model.restore.as_ref().and_then(|restore| restore.location.clone());
    backup_observation.restore = match (&model.restore, restore_blocked) {
        (None, _) => None,
        (Some(_), Some(blocked)) => Some(blocked),
        (Some(_), None) if restore_done => current
            .as_ref()
            .and_then(|state| state.condition(RESTORED))
            .map(|c| RestoreState::Restored { message: c.message.clone() }),
        (Some(_), None) => {
            let redis_ready =
                workloads.and_then(|w| w.redis).is_some_and(|redis| redis.settled && redis.replicas.ready > 0);
            Some(backups::restore_progress(ctx, &model, redis_ready).instrument(tracing::info_span!("restore")).await)
        }
    };
    let restoring =
        matches!(backup_observation.restore, Some(ref state) if !matches!(state, RestoreState::Restored { .. }));
    let observed = Observation {
        generation,
        namespace_name: model.namespace.clone(),
        namespace: namespace.clone(),
        redis: workloads.and_then(|w| w.redis.map(|w| w.replicas)),
        server: workloads.and_then(|w| w.server.map(|w| w.replicas)),
        registry: workloads.and_then(|w| w.registry.map(|w| w.replicas)),
        auth: auth.clone(),
        failures: failures.iter().map(ToString::to_string).collect(),
        rollout_without_surge: model.rollout_without_surge.clone(),
        upgrade,
        backups: backup_observation,
    };
    let derived = state::derive(&observed, current.as_ref(), &status::now());
    async {
        if status::write(ctx, tenant, &derived).await? {
            publish_auth_change(ctx, tenant, current.as_ref(), &derived).await;
            events::phase_change(&ctx.recorder, tenant, current.as_ref(), &derived).await;
            events::upgrade_change(&ctx.recorder, tenant, current.as_ref(), &derived).await;
            publish_restore_change(ctx, tenant, current.as_ref(), &derived).await;
        }
        Ok::<_, Error>(())
    }
    .instrument(tracing::info_span!("status", phase = derived.phase.map(|p| p.as_str())))
    .await?;
    // Once the status and its Events say it: a slot freed here is taken by another tenant only
    // after this one is recorded as done.
    if let Some(decision) = &observed.upgrade {
        ctx.rollout.record(&name, decision, &model.operand.overrides);
    }
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
    let wait = match namespace {
        NamespaceState::Terminating { .. } => TERMINATION_POLL,
        // A component that never comes Ready changes nothing that would wake the tenant: the
        // upgrade's deadline is checked on a clock.
        _ if upgrading => upgrade_poll(ctx.rollout.settings().ready_timeout),
        // Nor does an init container of the restore that fails: its pod is read on a clock.
        _ if restoring => RESTORE_POLL,
        _ => ctx.settings.resync_interval,
    };
    // The schedule's next backup is due on a clock too.
    Ok(Outcome::done(Action::requeue(next_backup.map_or(wait, |next| next.min(wait)))))
}

/// How often a restoring tenant's Redis pod is looked at.
const RESTORE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Reports a restore that finished or failed (or failed another way) as an Event and a metric.
async fn publish_restore_change(ctx: &Context, tenant: &Tenant, before: Option<&TenantState>, after: &TenantState) {
    let Some(after) = after.condition(RESTORED) else { return };
    let before = before.and_then(|state| state.condition(RESTORED));
    if before.is_some_and(|b| b.reason == after.reason && b.message == after.message) {
        return;
    }
    let reason = match after.reason.as_str() {
        "Restored" => Reason::Restored,
        "RestoreFailed" => Reason::RestoreFailed,
        _ => return,
    };
    if before.is_none_or(|b| b.reason != after.reason) {
        ctx.metrics.restore_finished(reason == Reason::Restored);
    }
    events::publish(
        &ctx.recorder,
        tenant,
        reason,
        Activity::Restore,
        format!("tenant {}: {}", tenant.name_any(), after.message),
    )
    .await;
}

/// What the apply leaves for later: the Redis of a restore whose backup is not found yet, and the
/// server and registry until the restore is done.
#[derive(Clone, Copy, Default)]
struct Hold {
    redis: bool,
    workloads: bool,
}

/// How often a moving tenant is looked at without a change: a few times within its deadline.
fn upgrade_poll(ready_timeout: std::time::Duration) -> std::time::Duration {
    (ready_timeout / 4).max(std::time::Duration::from_secs(5))
}

/// The tenant's workloads; `None` for one that does not exist.
#[derive(Clone, Copy)]
struct Workloads {
    redis: Option<Seen>,
    server: Option<Seen>,
    registry: Option<Seen>,
}

/// A workload as the apply left it.
#[derive(Clone, Copy)]
struct Seen {
    replicas: Replicas,
    /// Whether it runs the template just applied on every pod, Ready.
    settled: bool,
}

/// What one component of a workload kind reported from its apply: ready pods (if its status
/// says), and whether it runs its applied template, settled.
type Applied = Option<(Option<i32>, bool)>;

/// Decides the tenant's version for the status (and so for the next pass), asking the rollout
/// for a slot when it must start moving; traced as its own span. The rollout learns the decision
/// once the status holds it.
fn decide_upgrade(name: &str, model: &TenantModel, ctx: &Context, workloads: Workloads) -> Decision {
    let span = tracing::info_span!("upgrade", target_version = Empty, version = Empty, reason = Empty, message = Empty);
    let _entered = span.enter();
    let settled = |component: Component| {
        let seen = match component {
            Component::Redis => workloads.redis,
            Component::Server => workloads.server,
            Component::Registry => workloads.registry,
        };
        seen.is_some_and(|seen| seen.settled)
    };
    let operand = &model.operand;
    let pass = upgrade::Pass {
        policy: &operand.policy,
        overrides: &operand.overrides,
        release: &ctx.settings.platform.release,
        recorded: &operand.recorded,
        settled: &settled,
        now: jiff::Timestamp::now().as_second(),
        ready_timeout: ctx.rollout.settings().ready_timeout,
    };
    let decision = upgrade::decide(&pass, |target| ctx.rollout.admit(name, target));
    if let Some(target) = &decision.target {
        span.record("target_version", target.to_string());
    }
    if let Some(version) = &decision.version {
        span.record("version", version.to_string());
    }
    span.record("reason", decision.reason.as_str()).record("message", decision.message.as_str());
    decision
}

/// Applies the children of one tenant in stages, the writes of a stage at once, marking each
/// child; then sweeps the unmarked ones. A write the API server refuses is kept in `failures`, and
/// the others go on.
struct Applier<'a> {
    ctx: &'a Context,
    tenant: &'a Tenant,
    model: &'a TenantModel,
    // Shared by the concurrent writes of a stage; never locked across an await.
    changes: Mutex<Changes>,
    marks: Mutex<Marks>,
    failures: Mutex<Vec<Error>>,
}

/// The lock of a record no holder can leave half-written (each holds it for one push).
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unlocked<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// What applying the children did.
struct AppliedChildren {
    workloads: Workloads,
    changes: Changes,
    failures: Vec<Error>,
}

impl<'a> Applier<'a> {
    fn new(ctx: &'a Context, tenant: &'a Tenant, model: &'a TenantModel, changes: Changes) -> Self {
        Self { ctx, tenant, model, changes: Mutex::new(changes), marks: Mutex::default(), failures: Mutex::default() }
    }

    /// Server-side applies `desired` (nothing is sent when the cached child already holds it).
    /// `None` if the child neither exists nor could be created; else its ready pods, if it is a
    /// workload, and whether it runs the template applied, settled.
    async fn apply<K: Child>(&self, cache: &Store<Cached<K>>, desired: K) -> Applied {
        let name = desired.name_any();
        // Marked even when the write fails: the sweep must not delete what exists.
        locked(&self.marks).mark::<K>(&name);
        let api = Api::<K>::namespaced(self.ctx.client.clone(), &self.model.namespace);
        let cached = cache.get(&ObjectRef::new(&name).within(&self.model.namespace));
        let live = cached.as_deref().map(|cached| write::Live::Judged {
            resource_version: cached.meta().resource_version.as_deref(),
            holds: cached.held_hash(),
        });
        let cached_seen = cached.as_ref().map(|cached| (cached.ready_replicas(), cached.settled()));
        match write::apply(&api, &self.model.name, live, &desired).await {
            // It exists: held, or written.
            Ok(applied) => {
                locked(&self.changes).record(applied.change, write::short_kind::<K>(), &name);
                match applied.object {
                    Some(object) => Some((object.ready_replicas(), object.settled())),
                    None => cached_seen,
                }
            }
            Err(error) => {
                locked(&self.failures).push(error);
                // What runs is not what is wanted.
                cached_seen.map(|(ready, _)| (ready, false))
            }
        }
    }

    /// Leaves `desired` for later: marked, so the sweep keeps it if it exists, and not written.
    fn hold<K: Child>(&self, desired: &K) -> Applied {
        locked(&self.marks).mark::<K>(&desired.name_any());
        None
    }

    /// Applies `desired` if the tenant wants one; unmarked, the sweep removes what exists.
    async fn apply_optional<K: Child>(&self, cache: &Store<Cached<K>>, desired: Option<K>) {
        if let Some(desired) = desired {
            self.apply(cache, desired).await;
        }
    }

    /// The Redis password Secret (see [`password`]).
    async fn ensure_redis_secret(&self) {
        let name = redis::secret_name(&self.model.name);
        locked(&self.marks).mark::<Secret>(&name);
        match password::ensure(self.ctx, self.tenant, self.model).await {
            Ok(change) => locked(&self.changes).record(change, "Secret", &name),
            Err(error) => locked(&self.failures).push(error),
        }
    }

    /// Three stages, each waiting for the one before: network isolation (no workload ever runs in
    /// the namespace without its policies) with the operator's own access, the budget (the
    /// tenant's pods are admitted against it from the start), then everything else.
    async fn apply_all(self, generation: Option<i64>, hold: Hold) -> AppliedChildren {
        let (ctx, model) = (self.ctx, self.model);
        let children = &ctx.children;
        let platform = &ctx.settings.platform;
        let policies = network::network_policies(model, platform);
        futures::future::join(
            futures::future::join_all(
                policies.into_iter().map(|policy| self.apply(&children.network_policies, policy)),
            )
            .instrument(tracing::info_span!("network_policies")),
            // The operator's own read access to the password Secret, before it is needed.
            self.apply(&children.role_bindings, access::role_binding(model, &ctx.identity))
                .instrument(tracing::info_span!("access")),
        )
        .await;
        futures::future::join(
            self.apply_optional(&children.resource_quotas, quota::resource_quota(model)),
            self.apply_optional(&children.limit_ranges, quota::limit_range(model)),
        )
        .instrument(tracing::info_span!("quota"))
        .await;
        let redis = async {
            let (_, _, _, stateful_set) = futures::join!(
                self.ensure_redis_secret(),
                self.apply(&children.config_maps, redis::config_map(model)),
                self.apply(&children.services, redis::service(model)),
                async {
                    let stateful_set = redis::stateful_set(model, platform);
                    if hold.redis {
                        self.hold(&stateful_set)
                    } else {
                        self.apply(&children.stateful_sets, stateful_set).await
                    }
                },
            );
            stateful_set
        }
        .instrument(tracing::info_span!("redis"));
        let server = async {
            let (_, deployment) = futures::join!(self.apply(&children.services, server::service(model)), async {
                let deployment = server::deployment(model, platform);
                if hold.workloads {
                    self.hold(&deployment)
                } else {
                    self.apply(&children.deployments, deployment).await
                }
            },);
            deployment
        }
        .instrument(tracing::info_span!("server"));
        let registry = async {
            let (_, deployment, ()) = futures::join!(
                self.apply(&children.services, registry::service(model)),
                async {
                    let deployment = registry::deployment(model, platform);
                    if hold.workloads {
                        self.hold(&deployment)
                    } else {
                        self.apply(&children.deployments, deployment).await
                    }
                },
                self.apply_optional(&children.ingresses, registry::ingress(model, platform)),
            );
            deployment
        }
        .instrument(tracing::info_span!("registry"));
        let (redis, server, registry) = futures::join!(redis, server, registry);

        // Everything wanted is marked (also what failed): what is left over (a removed rule,
        // budget or domain) goes, unless this generation's leftovers are known to be gone.
        let (marks, mut changes, mut failures) =
            (unlocked(self.marks), unlocked(self.changes), unlocked(self.failures));
        let swept = generation.is_some() && ctx.swept().get(&model.uid) == generation.as_ref();
        if !swept {
            match children.sweep(&ctx.client, &model.name, &model.namespace, &marks, &mut changes).await {
                Ok(0) => {
                    if let Some(generation) = generation {
                        ctx.swept().insert(model.uid.clone(), generation);
                    }
                }
                Ok(_) => {}
                Err(error) => failures.push(error),
            }
        }

        // A workload that neither exists nor could be created counts as not created yet.
        let seen = |desired: i32, (ready, settled): (Option<i32>, bool)| Seen {
            replicas: Replicas { desired, ready: ready.unwrap_or(0) },
            settled,
        };
        let workloads = Workloads {
            redis: redis.map(|applied| seen(model.redis.replicas, applied)),
            server: server.map(|applied| seen(model.server.replicas, applied)),
            registry: registry.map(|applied| seen(model.registry.replicas, applied)),
        };
        AppliedChildren { workloads, changes, failures }
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
