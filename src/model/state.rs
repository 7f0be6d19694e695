//! The observed state of a tenant, independent of the API version that stores it: phase,
//! conditions and per-component health, derived from what a reconcile observed. Pure, so every
//! phase transition is unit-tested; timestamps of unchanged conditions are carried over, so a
//! converged tenant derives exactly the state it already has and nothing is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::operand::Images;
use super::upgrade::{Decision, UPGRADING};
use crate::api::backup::BackupStatus;

pub const READY: &str = "Ready";
pub const NAMESPACE_READY: &str = "NamespaceReady";
pub const REDIS_READY: &str = "RedisReady";
pub const SERVER_READY: &str = "ServerReady";
pub const REGISTRY_READY: &str = "RegistryReady";
pub const AUTH_REGISTERED: &str = "AuthRegistered";
/// Present (True) only while the budget leaves no room for a rolling update's extra pods.
pub const ROLLOUT_WITHOUT_SURGE: &str = "RolloutWithoutSurge";
/// Whether the newest finished backup succeeded; present once one has finished.
pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
/// Whether the Redis of a tenant created from a backup holds it; only on such tenants.
pub const RESTORED: &str = "Restored";
/// Every condition type a tenant's status can carry.
pub const CONDITION_TYPES: [&str; 10] = [
    READY,
    NAMESPACE_READY,
    REDIS_READY,
    SERVER_READY,
    REGISTRY_READY,
    AUTH_REGISTERED,
    ROLLOUT_WITHOUT_SURGE,
    BACKUP_SUCCEEDED,
    RESTORED,
    super::upgrade::UPGRADING,
];
/// Every condition [`derive`], [`invalid_spec`] and [`deregistered`] write, as (type, status,
/// reason), in the order they write them. Besides these, `AuthRegistered` is False with the
/// reason of a failed Auth call ([`crate::auth::AuthError::reason`]), and `Upgrading` takes the
/// reasons of [`super::upgrade::Reason`].
pub const CONDITIONS: [(&str, bool, &str); 32] = [
    (READY, true, "AllComponentsReady"),
    (READY, false, "RestoreFailed"),
    (READY, false, "NamespaceNotReady"),
    (READY, false, "ChildNotApplied"),
    (READY, false, "AuthNotRegistered"),
    (READY, false, "ComponentsNotReady"),
    (READY, false, "InvalidSpec"),
    (NAMESPACE_READY, true, "Created"),
    (NAMESPACE_READY, false, "NamespaceConflict"),
    (NAMESPACE_READY, false, "NamespaceTerminating"),
    (REDIS_READY, false, "NotCreated"),
    (REDIS_READY, false, "Provisioning"),
    (REDIS_READY, true, "Running"),
    (REDIS_READY, false, "Degraded"),
    (SERVER_READY, false, "NotCreated"),
    (SERVER_READY, false, "Provisioning"),
    (SERVER_READY, true, "Running"),
    (SERVER_READY, false, "Degraded"),
    (REGISTRY_READY, false, "NotCreated"),
    (REGISTRY_READY, false, "Provisioning"),
    (REGISTRY_READY, true, "Running"),
    (REGISTRY_READY, false, "Degraded"),
    (AUTH_REGISTERED, false, "AuthNotConfigured"),
    (AUTH_REGISTERED, true, "Registered"),
    (AUTH_REGISTERED, false, DEREGISTERED),
    (ROLLOUT_WITHOUT_SURGE, true, "BudgetTooSmallForSurge"),
    (BACKUP_SUCCEEDED, true, "BackupSucceeded"),
    (BACKUP_SUCCEEDED, false, "BackupFailed"),
    (RESTORED, false, "WaitingForBackup"),
    (RESTORED, false, "Restoring"),
    (RESTORED, true, "Restored"),
    (RESTORED, false, "RestoreFailed"),
];
/// Reason of `AuthRegistered` once a deleted tenant is deregistered.
const DEREGISTERED: &str = "Deregistered";

/// Phase of a whole tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Provisioning,
    Running,
    Degraded,
    Failed,
    Terminating,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Pending, Phase::Provisioning, Phase::Running, Phase::Degraded, Phase::Failed, Phase::Terminating];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
        }
    }
}

/// Phase of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentPhase {
    Pending,
    Provisioning,
    Running,
    Degraded,
    Failed,
}

/// Health of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentState {
    pub phase: ComponentPhase,
    pub message: String,
    pub ready_replicas: i32,
    pub total_replicas: i32,
}

/// Everything the status of a tenant says, in any API version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantState {
    pub phase: Option<Phase>,
    pub conditions: Vec<Condition>,
    pub namespace: Option<String>,
    pub observed_generation: Option<i64>,
    pub server: Option<ComponentState>,
    pub redis: Option<ComponentState>,
    pub registry: Option<ComponentState>,
    /// The NeuralLog version last run Ready, the one wanted, and the one before.
    pub version: Option<String>,
    pub target_version: Option<String>,
    pub previous_version: Option<String>,
    /// The images in force (see [`super::upgrade`]).
    pub images: Option<Images>,
    /// The newest backup that succeeded, and where the tenant was restored from.
    pub backup: Option<BackupStatus>,
}

impl TenantState {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the tenant is recorded as registered with Auth (so no request is needed).
    pub fn auth_registered(&self) -> bool {
        self.condition(AUTH_REGISTERED).is_some_and(|c| c.status == "True")
    }

    /// Whether a deleted tenant is recorded as deregistered from Auth.
    pub fn auth_deregistered(&self) -> bool {
        self.condition(AUTH_REGISTERED).is_some_and(|c| c.reason == DEREGISTERED)
    }
}

/// State of the tenant namespace as the reconcile found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceState {
    /// Created by the operator for this tenant and usable.
    Ready,
    /// A namespace of that name exists and was not created for this tenant.
    Conflict { message: String },
    /// The tenant's namespace (or one left by an earlier tenant of the same name) is being
    /// deleted; it is re-created once it is gone.
    Terminating { message: String },
}

/// Ready and desired pods of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub desired: i32,
    pub ready: i32,
}

/// Registration of the tenant with NeuralLog Auth, as the reconcile found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// No Auth URL is configured, so registration is skipped.
    NotConfigured,
    Registered,
    /// Registration failed; `reason` is the condition reason.
    Failed {
        reason: String,
        message: String,
    },
}

/// What the reconcile observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub generation: Option<i64>,
    pub namespace_name: String,
    pub namespace: NamespaceState,
    /// `None` until the StatefulSet exists.
    pub redis: Option<Replicas>,
    /// `None` until the Deployment exists.
    pub server: Option<Replicas>,
    /// `None` until the Deployment exists.
    pub registry: Option<Replicas>,
    pub auth: AuthState,
    /// Children the API server refused, each message naming the child and the answer.
    pub failures: Vec<String>,
    /// Why the Deployments roll out without surge (the model's `rollout_without_surge`).
    pub rollout_without_surge: Option<String>,
    /// What this pass decided of the tenant's version; `None` when its workloads were not looked
    /// at (its namespace is not ready), which keeps what the status says.
    pub upgrade: Option<Decision>,
    /// The tenant's backups and restore.
    pub backups: BackupObservation,
}

/// A finished backup of the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedBackup {
    pub name: String,
    pub succeeded: bool,
    pub message: String,
    pub completed: Option<Time>,
    pub size_bytes: Option<i64>,
}

/// What the reconcile found of the tenant's backups and restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupObservation {
    /// The newest finished backup.
    pub latest: Option<FinishedBackup>,
    /// The newest that succeeded.
    pub last_success: Option<FinishedBackup>,
    /// `None` for a tenant that restores nothing.
    pub restore: Option<RestoreState>,
    /// Where the tenant's Redis is restored from, once known (then kept in the status).
    pub restored_from: Option<crate::api::backup::BackupLocation>,
}

/// How far a tenant created from a backup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreState {
    /// The backup is not ready to be read (or its location not known yet); nothing is written.
    Waiting {
        message: String,
    },
    /// The restore's init containers run.
    Restoring {
        message: String,
    },
    Restored {
        message: String,
    },
    /// It failed: the tenant is Failed with the backup and the reason named; nothing was written.
    Failed {
        message: String,
    },
}

fn component(name: &str, replicas: Option<Replicas>) -> ComponentState {
    let (phase, message) = match replicas {
        None => (ComponentPhase::Pending, format!("{name} has not been created yet")),
        Some(r) if r.ready <= 0 => {
            (ComponentPhase::Provisioning, format!("{name} is being provisioned: 0/{} replicas ready", r.desired))
        }
        Some(r) if r.ready < r.desired => {
            (ComponentPhase::Degraded, format!("{name} is degraded: {}/{} replicas ready", r.ready, r.desired))
        }
        Some(r) => (ComponentPhase::Running, format!("{name} is running: {}/{} replicas ready", r.ready, r.desired)),
    };
    let (ready_replicas, total_replicas) = replicas.map_or((0, 0), |r| (r.ready, r.desired));
    ComponentState { phase, message, ready_replicas, total_replicas }
}

/// A condition, keeping the previous transition time when its status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn component_condition(
    previous: &[Condition],
    type_: &str,
    state: &ComponentState,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let reason = match state.phase {
        ComponentPhase::Pending => "NotCreated",
        ComponentPhase::Provisioning => "Provisioning",
        ComponentPhase::Running => "Running",
        ComponentPhase::Degraded => "Degraded",
        ComponentPhase::Failed => "Failed",
    };
    let running = state.phase == ComponentPhase::Running;
    condition(previous, type_, running, reason, state.message.clone(), generation, now)
}

/// The state a tenant should have given what was observed and its current state.
pub fn derive(observed: &Observation, current: Option<&TenantState>, now: &Time) -> TenantState {
    let previous = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let previous_phase = current.and_then(|s| s.phase);
    let generation = observed.generation;
    let redis = component("Redis", observed.redis);
    let server = component("Server", observed.server);
    let registry = component("Registry", observed.registry);

    let (namespace_condition, blocked_phase) = match &observed.namespace {
        NamespaceState::Ready => {
            let message = format!("namespace {} is ready", observed.namespace_name);
            (condition(previous, NAMESPACE_READY, true, "Created", message, generation, now), None)
        }
        NamespaceState::Conflict { message } => (
            condition(previous, NAMESPACE_READY, false, "NamespaceConflict", message.clone(), generation, now),
            Some(Phase::Failed),
        ),
        NamespaceState::Terminating { message } => (
            condition(previous, NAMESPACE_READY, false, "NamespaceTerminating", message.clone(), generation, now),
            Some(Phase::Pending),
        ),
    };

    let auth_condition = match &observed.auth {
        AuthState::NotConfigured => condition(
            previous,
            AUTH_REGISTERED,
            false,
            "AuthNotConfigured",
            "no NeuralLog Auth URL is configured (--auth-url), so the tenant is not registered".to_owned(),
            generation,
            now,
        ),
        AuthState::Registered => condition(
            previous,
            AUTH_REGISTERED,
            true,
            "Registered",
            "the tenant is registered with NeuralLog Auth".to_owned(),
            generation,
            now,
        ),
        AuthState::Failed { reason, message } => {
            condition(previous, AUTH_REGISTERED, false, reason, message.clone(), generation, now)
        }
    };
    let auth_failed = matches!(observed.auth, AuthState::Failed { .. });
    let apply_failed = !observed.failures.is_empty();

    let components = [(&redis, "Redis"), (&server, "Server"), (&registry, "Registry")];
    let all_running = components.iter().all(|(c, _)| c.phase == ComponentPhase::Running);
    let any_degraded = components.iter().any(|(c, _)| c.phase == ComponentPhase::Degraded);
    let was_up = matches!(previous_phase, Some(Phase::Running | Phase::Degraded));
    let restore_failed = match &observed.backups.restore {
        Some(RestoreState::Failed { message }) => Some(message.clone()),
        _ => None,
    };
    let blocked_phase = blocked_phase.or(restore_failed.as_ref().map(|_| Phase::Failed));
    let phase = blocked_phase.unwrap_or(if all_running && !auth_failed && !apply_failed {
        Phase::Running
    } else if any_degraded || was_up || auth_failed || apply_failed {
        Phase::Degraded
    } else {
        Phase::Provisioning
    });

    let (ready_reason, ready_message) = match phase {
        Phase::Running => ("AllComponentsReady", "every component is ready".to_owned()),
        _ if restore_failed.is_some() => ("RestoreFailed", restore_failed.clone().unwrap_or_default()),
        _ if blocked_phase.is_some() => ("NamespaceNotReady", namespace_condition.message.clone()),
        _ if apply_failed => ("ChildNotApplied", observed.failures.join("; ")),
        _ if auth_failed => ("AuthNotRegistered", auth_condition.message.clone()),
        _ => {
            let waiting: Vec<&str> =
                components.iter().filter(|(c, _)| c.phase != ComponentPhase::Running).map(|(_, name)| *name).collect();
            ("ComponentsNotReady", format!("waiting for {}", waiting.join(", ")))
        }
    };

    let mut conditions = vec![
        condition(previous, READY, phase == Phase::Running, ready_reason, ready_message, generation, now),
        namespace_condition,
        component_condition(previous, REDIS_READY, &redis, generation, now),
        component_condition(previous, SERVER_READY, &server, generation, now),
        component_condition(previous, REGISTRY_READY, &registry, generation, now),
        auth_condition,
    ];
    if let Some(why) = &observed.rollout_without_surge {
        let reason = "BudgetTooSmallForSurge";
        conditions.push(condition(previous, ROLLOUT_WITHOUT_SURGE, true, reason, why.clone(), generation, now));
    }
    let backups = &observed.backups;
    if let Some(latest) = &backups.latest {
        let reason = if latest.succeeded { "BackupSucceeded" } else { "BackupFailed" };
        conditions.push(condition(
            previous,
            BACKUP_SUCCEEDED,
            latest.succeeded,
            reason,
            latest.message.clone(),
            generation,
            now,
        ));
    }
    if let Some(restore) = &backups.restore {
        let (ok, reason, message) = match restore {
            RestoreState::Waiting { message } => (false, "WaitingForBackup", message),
            RestoreState::Restoring { message } => (false, "Restoring", message),
            RestoreState::Restored { message } => (true, "Restored", message),
            RestoreState::Failed { message } => (false, "RestoreFailed", message),
        };
        conditions.push(condition(previous, RESTORED, ok, reason, message.clone(), generation, now));
    }
    let last = backups.last_success.as_ref();
    let backup_status = crate::api::backup::BackupStatus {
        last_backup: last.map(|b| b.name.clone()),
        last_backup_time: last.and_then(|b| b.completed.clone()),
        last_backup_size_bytes: last.and_then(|b| b.size_bytes),
        restored_from: backups.restored_from.clone(),
    };
    let mut state = TenantState {
        backup: (backup_status != crate::api::backup::BackupStatus::default()).then_some(backup_status),
        conditions,
        phase: Some(phase),
        namespace: Some(observed.namespace_name.clone()),
        observed_generation: generation,
        redis: Some(redis),
        server: Some(server),
        registry: Some(registry),
        ..TenantState::default()
    };
    match &observed.upgrade {
        Some(decision) => {
            let (upgrading, reason) = (decision.upgrading(), decision.reason.as_str());
            let message = decision.message.clone();
            state.conditions.push(condition(previous, UPGRADING, upgrading, reason, message, generation, now));
            state.version = decision.version.as_ref().map(ToString::to_string);
            state.target_version = decision.target.as_ref().map(ToString::to_string);
            state.previous_version = decision.previous.as_ref().map(ToString::to_string);
            state.images = Some(decision.images.clone());
        }
        None => {
            if let Some(current) = current {
                state.conditions.extend(current.condition(UPGRADING).cloned());
                state.version.clone_from(&current.version);
                state.target_version.clone_from(&current.target_version);
                state.previous_version.clone_from(&current.previous_version);
                state.images.clone_from(&current.images);
            }
        }
    }
    state
}

/// State of a tenant whose spec cannot be honoured: `Failed`, with the field named.
pub fn invalid_spec(
    current: Option<&TenantState>,
    generation: Option<i64>,
    message: String,
    now: &Time,
) -> TenantState {
    let previous = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut state = current.cloned().unwrap_or_default();
    state.conditions.retain(|c| c.type_ != READY);
    state.conditions.insert(0, condition(previous, READY, false, "InvalidSpec", message, generation, now));
    state.phase = Some(Phase::Failed);
    state.observed_generation = generation;
    state
}

/// State of a tenant being deleted.
pub fn terminating(current: Option<&TenantState>) -> TenantState {
    let mut state = current.cloned().unwrap_or_default();
    state.phase = Some(Phase::Terminating);
    state
}

/// State of a deleted tenant once Auth has forgotten it.
pub fn deregistered(current: Option<&TenantState>, message: String, now: &Time) -> TenantState {
    let previous = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = current.and_then(|s| s.observed_generation);
    let mut state = terminating(current);
    state.conditions.retain(|c| c.type_ != AUTH_REGISTERED);
    state.conditions.push(condition(previous, AUTH_REGISTERED, false, DEREGISTERED, message, generation, now));
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_000).unwrap())
    }
    fn later() -> Time {
        Time(jiff::Timestamp::from_second(2_000).unwrap())
    }

    fn observed(redis: Option<(i32, i32)>, server: Option<(i32, i32)>) -> Observation {
        let replicas = |(ready, desired)| Replicas { ready, desired };
        Observation {
            generation: Some(3),
            namespace_name: "tenant-acme".into(),
            namespace: NamespaceState::Ready,
            redis: redis.map(replicas),
            server: server.map(replicas),
            registry: Some(Replicas { ready: 1, desired: 1 }),
            auth: AuthState::Registered,
            failures: Vec::new(),
            rollout_without_surge: None,
            upgrade: None,
            backups: BackupObservation::default(),
        }
    }

    #[test]
    fn the_newest_finished_backup_is_a_condition_and_the_newest_success_is_in_the_status() {
        let now = Time(jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let finished = |name: &str, succeeded: bool| FinishedBackup {
            name: name.into(),
            succeeded,
            message: format!("backup {name}: done"),
            completed: Some(now.clone()),
            size_bytes: Some(1234),
        };
        let mut seen = observed(Some((1, 1)), Some((1, 1)));
        assert!(derive(&seen, None, &now).condition(BACKUP_SUCCEEDED).is_none(), "no backup yet, no condition");
        seen.backups.latest = Some(finished("b2", false));
        seen.backups.last_success = Some(finished("b1", true));
        let state = derive(&seen, None, &now);
        let condition = state.condition(BACKUP_SUCCEEDED).unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "BackupFailed"));
        assert_eq!(state.phase, Some(Phase::Running), "a failed backup leaves the tenant running");
        let backup = state.backup.unwrap();
        assert_eq!((backup.last_backup.as_deref(), backup.last_backup_size_bytes), (Some("b1"), Some(1234)));
    }

    #[test]
    fn a_failed_restore_fails_the_tenant_naming_why_and_a_finished_one_is_a_true_condition() {
        let now = Time(jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let mut seen = observed(None, None);
        let message = "restore from backup s3://logs/acme/b1: checksum mismatch".to_owned();
        seen.backups.restore = Some(RestoreState::Failed { message: message.clone() });
        let state = derive(&seen, None, &now);
        assert_eq!(state.phase, Some(Phase::Failed));
        let ready = state.condition(READY).unwrap();
        assert_eq!((ready.reason.as_str(), ready.message.as_str()), ("RestoreFailed", message.as_str()));
        assert_eq!(state.condition(RESTORED).unwrap().status, "False");

        let mut done = observed(Some((1, 1)), Some((1, 1)));
        done.backups.restore = Some(RestoreState::Restored { message: "Redis was restored".into() });
        let state = derive(&done, None, &now);
        assert_eq!(state.phase, Some(Phase::Running));
        assert_eq!(state.condition(RESTORED).unwrap().status, "True");
    }

    #[test]
    fn a_rollout_without_surge_is_a_condition_only_while_it_lasts() {
        let mut tight = observed(Some((1, 1)), Some((1, 1)));
        tight.rollout_without_surge = Some("spec.resources.cpu.limit: no room".into());
        let state = derive(&tight, None, &now());
        let surge = state.condition(ROLLOUT_WITHOUT_SURGE).expect("the condition");
        assert_eq!((surge.status.as_str(), surge.reason.as_str()), ("True", "BudgetTooSmallForSurge"));
        assert_eq!(state.phase, Some(Phase::Running), "the tenant is provisioned all the same");
        let roomy = derive(&observed(Some((1, 1)), Some((1, 1))), Some(&state), &now());
        assert!(roomy.condition(ROLLOUT_WITHOUT_SURGE).is_none());
    }

    fn phase_of(o: &Observation, current: Option<&TenantState>) -> Phase {
        derive(o, current, &now()).phase.unwrap()
    }

    #[test]
    fn nothing_ready_is_provisioning_partial_is_degraded_all_is_running() {
        assert_eq!(phase_of(&observed(None, None), None), Phase::Provisioning);
        assert_eq!(phase_of(&observed(Some((0, 1)), Some((0, 2))), None), Phase::Provisioning);
        assert_eq!(phase_of(&observed(Some((1, 1)), Some((0, 2))), None), Phase::Provisioning);
        assert_eq!(phase_of(&observed(Some((1, 1)), Some((1, 2))), None), Phase::Degraded);
        assert_eq!(phase_of(&observed(Some((1, 1)), Some((2, 2))), None), Phase::Running);
    }

    #[test]
    fn a_failed_auth_registration_degrades_a_ready_tenant_and_says_why() {
        let mut o = observed(Some((1, 1)), Some((1, 1)));
        o.auth = AuthState::Failed { reason: "AuthTimeout".into(), message: "tenant acme: register timed out".into() };
        let state = derive(&o, None, &now());
        assert_eq!(state.phase, Some(Phase::Degraded));
        let ready = &state.conditions[0];
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "AuthNotRegistered"));
        let auth = state.condition(AUTH_REGISTERED).unwrap();
        assert_eq!((auth.reason.as_str(), auth.message.as_str()), ("AuthTimeout", "tenant acme: register timed out"));
        assert!(!state.auth_registered());
    }

    #[test]
    fn without_auth_configured_the_tenant_still_runs_and_the_condition_says_so() {
        let mut o = observed(Some((1, 1)), Some((1, 1)));
        o.auth = AuthState::NotConfigured;
        let state = derive(&o, None, &now());
        assert_eq!(state.phase, Some(Phase::Running));
        let auth = state.condition(AUTH_REGISTERED).unwrap();
        assert_eq!((auth.status.as_str(), auth.reason.as_str()), ("False", "AuthNotConfigured"));
    }

    #[test]
    fn registration_and_deregistration_are_read_back_from_the_state() {
        let state = derive(&observed(None, None), None, &now());
        assert!(state.auth_registered() && !state.auth_deregistered());
        let gone = deregistered(Some(&state), "deregistered".into(), &later());
        assert!(!gone.auth_registered() && gone.auth_deregistered());
        assert_eq!(gone.phase, Some(Phase::Terminating));
        assert_eq!(gone.conditions.iter().filter(|c| c.type_ == AUTH_REGISTERED).count(), 1);
    }

    #[test]
    fn a_refused_child_keeps_a_ready_tenant_from_saying_running_and_is_named() {
        let mut o = observed(Some((1, 1)), Some((1, 1)));
        o.failures = vec!["tenant acme: apply ConfigMap acme-redis-config: denied (422)".into()];
        let state = derive(&o, None, &now());
        assert_eq!(state.phase, Some(Phase::Degraded));
        let ready = &state.conditions[0];
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ChildNotApplied"));
        assert!(ready.message.contains("ConfigMap acme-redis-config") && ready.message.contains("denied"));
    }

    #[test]
    fn losing_readiness_after_running_is_degraded_not_provisioning() {
        let running = derive(&observed(Some((1, 1)), Some((1, 1))), None, &now());
        assert_eq!(phase_of(&observed(Some((0, 1)), Some((1, 1))), Some(&running)), Phase::Degraded);
    }

    #[test]
    fn namespace_problems_block_the_phase() {
        let mut o = observed(None, None);
        o.namespace = NamespaceState::Conflict { message: "namespace tenant-acme exists".into() };
        let state = derive(&o, None, &now());
        assert_eq!(state.phase, Some(Phase::Failed));
        let ns = state.condition(NAMESPACE_READY).unwrap();
        assert_eq!((ns.status.as_str(), ns.reason.as_str()), ("False", "NamespaceConflict"));
        o.namespace = NamespaceState::Terminating { message: "waiting".into() };
        assert_eq!(phase_of(&o, None), Phase::Pending);
    }

    #[test]
    fn component_states_report_ready_and_total_replicas() {
        let state = derive(&observed(Some((1, 1)), Some((1, 3))), None, &now());
        let server = state.server.unwrap();
        assert_eq!((server.ready_replicas, server.total_replicas), (1, 3));
        assert_eq!(server.phase, ComponentPhase::Degraded);
        assert_eq!(server.message, "Server is degraded: 1/3 replicas ready");
    }

    #[test]
    fn an_unchanged_observation_derives_an_identical_state() {
        let o = observed(Some((1, 1)), Some((0, 1)));
        let first = derive(&o, None, &now());
        assert_eq!(derive(&o, Some(&first), &later()), first);
    }

    #[test]
    fn transition_time_moves_only_when_the_condition_status_changes() {
        let first = derive(&observed(Some((0, 1)), Some((0, 1))), None, &now());
        let second = derive(&observed(Some((1, 1)), Some((0, 1))), Some(&first), &later());
        let time = |s: &TenantState, t: &str| s.condition(t).unwrap().last_transition_time.clone();
        assert_eq!(time(&second, REDIS_READY), later());
        assert_eq!(time(&second, SERVER_READY), now());
        assert!(second.conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn invalid_spec_fails_the_tenant_and_names_the_field() {
        let state = invalid_spec(None, Some(2), "spec.redis.replicas: 3 is outside 1..=1".into(), &now());
        assert_eq!(state.phase, Some(Phase::Failed));
        assert_eq!(state.conditions[0].reason, "InvalidSpec");
        assert!(state.conditions[0].message.contains("spec.redis.replicas"));
    }

    /// `CONDITIONS` is what the state functions write, no more and no less: each observation
    /// varies one thing from a running tenant.
    #[test]
    fn conditions_lists_every_condition_written() {
        let running = observed(Some((1, 1)), Some((1, 1)));
        let mut seen = vec![running.clone()];
        let mut vary = |change: &dyn Fn(&mut Observation)| {
            let mut o = running.clone();
            change(&mut o);
            seen.push(o);
        };
        vary(&|o| o.namespace = NamespaceState::Conflict { message: "taken".into() });
        vary(&|o| o.namespace = NamespaceState::Terminating { message: "going".into() });
        for replicas in [None, Some(Replicas { ready: 0, desired: 2 }), Some(Replicas { ready: 1, desired: 2 })] {
            vary(&|o| o.redis = replicas);
            vary(&|o| o.server = replicas);
            vary(&|o| o.registry = replicas);
        }
        vary(&|o| o.failures = vec!["refused".into()]);
        vary(&|o| o.auth = AuthState::NotConfigured);
        vary(&|o| o.auth = AuthState::Failed { reason: "CallFailed".into(), message: "failed".into() });
        vary(&|o| o.rollout_without_surge = Some("no room".into()));
        for succeeded in [true, false] {
            let backup =
                FinishedBackup { name: "b".into(), succeeded, message: "m".into(), completed: None, size_bytes: None };
            vary(&|o| o.backups.latest = Some(backup.clone()));
        }
        let message = String::from("m");
        for restore in [
            RestoreState::Waiting { message: message.clone() },
            RestoreState::Restoring { message: message.clone() },
            RestoreState::Restored { message: message.clone() },
            RestoreState::Failed { message },
        ] {
            vary(&|o| o.backups.restore = Some(restore.clone()));
        }
        let mut states: Vec<TenantState> = seen.iter().map(|o| derive(o, None, &now())).collect();
        states.push(invalid_spec(None, None, "bad".into(), &now()));
        states.push(deregistered(None, "gone".into(), &now()));

        let written: std::collections::BTreeSet<(String, bool, String)> = states
            .iter()
            .flat_map(|s| &s.conditions)
            .filter(|c| c.reason != "CallFailed")
            .map(|c| (c.type_.clone(), c.status == "True", c.reason.clone()))
            .collect();
        let listed = CONDITIONS.iter().map(|(t, s, r)| ((*t).to_owned(), *s, (*r).to_owned())).collect();
        assert_eq!(written, listed);
        assert!(CONDITIONS.iter().all(|(t, ..)| CONDITION_TYPES.contains(t)));
    }
}
