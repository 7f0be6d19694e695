//! The Events the controller records about a tenant: typed reasons, each with its event type, and
//! every note ending with the reconcile's trace id, which leads from `kubectl describe` straight
//! to the trace.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource as _, ResourceExt as _};

use super::write::Change;
use crate::api::Tenant;
use crate::model::state::{Phase, READY, TenantState};
use crate::model::upgrade::{Reason as UpgradeReason, UPGRADING};
use crate::telemetry;

/// Why an Event is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Created,
    Updated,
    Deleted,
    /// The namespace of a deleted tenant is being deleted.
    Deleting,
    /// The namespace of a deleted tenant is kept, its workloads removed.
    Retaining,
    /// The tenant was deleted by an uninstall (its CustomResourceDefinition is being deleted):
    /// its namespace is kept whole.
    Uninstalled,
    Registered,
    Deregistered,
    /// The Redis password Secret was deleted while its tenant uses it; its deletion is held.
    PasswordHeld,
    /// The Redis password Secret was lost; a new password was made and Redis and the server
    /// restarted onto it.
    PasswordReplaced,
    /// Deregistration kept failing past its deadline; the tenant was released anyway.
    AuthDeregistrationAbandoned,
    /// A tenant namespace outlived its Tenant, deleted without its cleanup (its finalizer was
    /// gone): the namespace is cleaned up by the deletion policy recorded on it.
    Orphaned,
    /// The tenant entered a phase.
    Phase(Phase),
    /// The tenant's `Upgrading` condition took another reason.
    Upgrade(UpgradeReason),
    /// A backup's Job was started.
    BackupStarted,
    /// A backup was written and verified.
    BackupSucceeded,
    /// A backup failed; nothing of it is kept.
    BackupFailed,
    /// The schedule created a backup.
    BackupScheduled,
    /// Retention deleted a scheduled backup past the count kept.
    BackupExpired,
    /// A deleted backup's objects could not be deleted from the store and are kept there.
    BackupObjectsKept,
    /// A new tenant's Redis was restored from a backup.
    Restored,
    /// A restore failed; nothing was written.
    RestoreFailed,
    /// Something failed, named by the failure's own reason (`AuthTimeout`, `ApiRequestFailed`).
    Failed(String),
}

/// The `Upgrading` reasons left to the condition, never an Event: waiting, and a new tenant's
/// first start (a rollout would otherwise send one Event per waiting tenant).
const UPGRADE_REASONS_UNREPORTED: [UpgradeReason; 2] = [UpgradeReason::Waiting, UpgradeReason::Installing];

impl Reason {
    /// Every reason recorded but `Failed`'s, which are the failures' own
    /// ([`super::error::Error::reason`], [`crate::auth::AuthError::reason`]): each phase entered,
    /// and each `Upgrading` reason reported.
    pub fn all() -> Vec<Reason> {
        let mut all = vec![
            Reason::Created,
            Reason::Updated,
            Reason::Deleted,
            Reason::Deleting,
            Reason::Retaining,
            Reason::Uninstalled,
            Reason::Registered,
            Reason::Deregistered,
            Reason::PasswordHeld,
            Reason::PasswordReplaced,
            Reason::AuthDeregistrationAbandoned,
            Reason::Orphaned,
        ];
        all.extend(Phase::ALL.map(Reason::Phase));
        let reported = UpgradeReason::ALL.into_iter().filter(|r| !UPGRADE_REASONS_UNREPORTED.contains(r));
        all.extend(reported.map(Reason::Upgrade));
        all.extend([
            Reason::BackupStarted,
            Reason::BackupSucceeded,
            Reason::BackupFailed,
            Reason::BackupScheduled,
            Reason::BackupExpired,
            Reason::BackupObjectsKept,
            Reason::Restored,
            Reason::RestoreFailed,
        ]);
        all
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reason::Created => "Created",
            Reason::Updated => "Updated",
            Reason::Deleted => "Deleted",
            Reason::Deleting => "Deleting",
            Reason::Retaining => "Retaining",
            Reason::Uninstalled => "Uninstalled",
            Reason::PasswordHeld => "PasswordHeld",
            Reason::PasswordReplaced => "PasswordReplaced",
            Reason::Registered => "Registered",
            Reason::Deregistered => "Deregistered",
            Reason::AuthDeregistrationAbandoned => "AuthDeregistrationAbandoned",
            Reason::Orphaned => "Orphaned",
            Reason::Phase(phase) => phase.as_str(),
            Reason::Upgrade(UpgradeReason::UpToDate) => "Upgraded",
            Reason::Upgrade(reason) => reason.as_str(),
            Reason::BackupStarted => "BackupStarted",
            Reason::BackupSucceeded => "BackupSucceeded",
            Reason::BackupFailed => "BackupFailed",
            Reason::BackupScheduled => "BackupScheduled",
            Reason::BackupExpired => "BackupExpired",
            Reason::BackupObjectsKept => "BackupObjectsKept",
            Reason::Restored => "Restored",
            Reason::RestoreFailed => "RestoreFailed",
            Reason::Failed(reason) => reason,
        }
    }

    pub fn event_type(&self) -> EventType {
        match self {
            Reason::Failed(_)
            | Reason::AuthDeregistrationAbandoned
            | Reason::Orphaned
            | Reason::PasswordHeld
            | Reason::PasswordReplaced
            | Reason::BackupFailed
            | Reason::BackupObjectsKept
            | Reason::RestoreFailed
            | Reason::Phase(Phase::Failed | Phase::Degraded)
            | Reason::Upgrade(UpgradeReason::UpgradeFailed | UpgradeReason::RolloutHalted) => EventType::Warning,
            _ => EventType::Normal,
        }
    }
}

/// What the controller was doing when it recorded an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Apply,
    Reconcile,
    Register,
    Delete,
    Upgrade,
    Backup,
    Restore,
}

impl Activity {
    fn as_str(self) -> &'static str {
        match self {
            Activity::Apply => "Apply",
            Activity::Reconcile => "Reconcile",
            Activity::Register => "Register",
            Activity::Delete => "Delete",
            Activity::Upgrade => "Upgrade",
            Activity::Backup => "Backup",
            Activity::Restore => "Restore",
        }
    }
}

/// Records an Event about `tenant`. A failure to record is logged, never fatal.
pub async fn publish(recorder: &Recorder, tenant: &Tenant, reason: Reason, activity: Activity, note: String) {
    publish_about(recorder, &tenant.object_ref(&()), reason, activity, note).await;
}

/// Records an Event about any object (a tenant's namespace whose Tenant is gone, say).
pub async fn publish_about(
    recorder: &Recorder,
    regarding: &ObjectReference,
    reason: Reason,
    activity: Activity,
    note: String,
) {
    let event = Event {
        type_: reason.event_type(),
        reason: reason.as_str().to_owned(),
        note: Some(note),
        action: activity.as_str().to_owned(),
        secondary: None,
    };
    telemetry::publish_event(recorder, regarding, event).await;
}

/// Reports a phase change as an Event; failures and degradations as warnings.
pub async fn phase_change(recorder: &Recorder, tenant: &Tenant, before: Option<&TenantState>, after: &TenantState) {
    let before = before.and_then(|s| s.phase);
    let Some(phase) = after.phase else { return };
    if before == Some(phase) {
        return;
    }
    let ready = after.condition(READY).map(|c| c.message.clone()).unwrap_or_default();
    let note = format!("tenant is {}: {ready}", phase.as_str());
    publish(recorder, tenant, Reason::Phase(phase), Activity::Reconcile, note).await;
}

/// Reports where the tenant's upgrade went: started, done, failed, halted or held back. Waiting
/// and a new tenant's first start are left to the condition (a rollout would otherwise send one
/// Event per waiting tenant).
pub async fn upgrade_change(recorder: &Recorder, tenant: &Tenant, before: Option<&TenantState>, after: &TenantState) {
    let reason_of = |state: &TenantState| state.condition(UPGRADING).and_then(|c| UpgradeReason::parse(&c.reason));
    let Some(condition) = after.condition(UPGRADING) else { return };
    let (before, Some(after)) = (before.and_then(reason_of), reason_of(after)) else { return };
    let report = match after {
        _ if UPGRADE_REASONS_UNREPORTED.contains(&after) => false,
        // Only the end of an upgrade: a tenant that was never moving has nothing to report.
        UpgradeReason::UpToDate => matches!(before, Some(UpgradeReason::Upgrading | UpgradeReason::UpgradeFailed)),
        _ => before != Some(after),
    };
    if report {
        let note = format!("tenant {}: {}", tenant.name_any(), condition.message);
        publish(recorder, tenant, Reason::Upgrade(after), Activity::Upgrade, note).await;
    }
}

/// What a reconcile changed, reported as one Event per kind of change.
#[derive(Debug, Default)]
pub struct Changes {
    created: Vec<String>,
    updated: Vec<String>,
    deleted: Vec<String>,
}

impl Changes {
    pub fn record(&mut self, change: Change, kind: &str, name: &str) {
        match change {
            Change::Created => self.created.push(format!("{kind} {name}")),
            Change::Updated => self.updated.push(format!("{kind} {name}")),
            Change::Unchanged => {}
        }
    }

    pub fn deleted(&mut self, kind: &str, name: &str) {
        self.deleted.push(format!("{kind} {name}"));
    }

    /// One Normal event per kind of change.
    pub async fn publish(self, recorder: &Recorder, tenant: &Tenant) {
        for (reason, verb, objects) in [
            (Reason::Created, "created", self.created),
            (Reason::Updated, "updated", self.updated),
            (Reason::Deleted, "deleted", self.deleted),
        ] {
            if !objects.is_empty() {
                let note = format!("{verb} {}", objects.join(", "));
                publish(recorder, tenant, reason, Activity::Apply, note).await;
            }
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
        changes.deleted("Ingress", "a-registry");
        assert_eq!(changes.created, ["Namespace tenant-a"]);
        assert_eq!(changes.updated, ["Deployment a-server"]);
        assert_eq!(changes.deleted, ["Ingress a-registry"]);
    }

    /// `all` holds every variant but `Failed`, each reason once. `kind` numbers the variants in
    /// declaration order, `Failed` last: a variant added fails to compile there until it is
    /// numbered, and this test until `all` holds it.
    #[test]
    fn all_holds_every_reason_once() {
        let kind = |reason: &Reason| match reason {
            Reason::Created => 0,
            Reason::Updated => 1,
            Reason::Deleted => 2,
            Reason::Deleting => 3,
            Reason::Retaining => 4,
            Reason::Uninstalled => 5,
            Reason::Registered => 6,
            Reason::Deregistered => 7,
            Reason::PasswordHeld => 8,
            Reason::PasswordReplaced => 9,
            Reason::AuthDeregistrationAbandoned => 10,
            Reason::Orphaned => 11,
            Reason::Phase(_) => 12,
            Reason::Upgrade(_) => 13,
            Reason::BackupStarted => 14,
            Reason::BackupSucceeded => 15,
            Reason::BackupFailed => 16,
            Reason::BackupScheduled => 17,
            Reason::BackupExpired => 18,
            Reason::BackupObjectsKept => 19,
            Reason::Restored => 20,
            Reason::RestoreFailed => 21,
            Reason::Failed(_) => 22,
        };
        let all = Reason::all();
        let kinds: std::collections::BTreeSet<u8> = all.iter().map(kind).collect();
        let every_but_failed = (0..kind(&Reason::Failed(String::new()))).collect();
        assert_eq!(kinds, every_but_failed);
        let names: std::collections::BTreeSet<&str> = all.iter().map(Reason::as_str).collect();
        assert_eq!(names.len(), all.len(), "each reason once");
        assert!(Phase::ALL.iter().all(|p| all.contains(&Reason::Phase(*p))));
        assert!(all.contains(&Reason::Upgrade(UpgradeReason::UpToDate)));
        assert!(!all.contains(&Reason::Upgrade(UpgradeReason::Waiting)));
    }

    #[test]
    fn failures_and_bad_phases_are_warnings() {
        assert_eq!(Reason::Failed("AuthTimeout".into()).event_type(), EventType::Warning);
        assert_eq!(Reason::Phase(Phase::Degraded).event_type(), EventType::Warning);
        assert_eq!(Reason::Phase(Phase::Running).event_type(), EventType::Normal);
        assert_eq!(Reason::Phase(Phase::Running).as_str(), "Running");
        assert_eq!(Reason::Deregistered.event_type(), EventType::Normal);
    }
}
