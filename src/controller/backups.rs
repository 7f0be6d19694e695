//! Backups and restores, the operator's side. For a tenant (called from its apply): the restore's
//! source resolved and its progress read, the schedule's due backup created, retention applied,
//! and what its status says of them. For a TenantBackup (its own controller, on the leader): the
//! Job that takes it, its outcome on its status, and on deletion the Job that deletes its objects
//! from the store. The store's credentials are only ever read by those pods.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{controller, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::context::Context;
use super::events::{self, Activity, Reason};
use super::write::FIELD_MANAGER;
use crate::api::Tenant;
use crate::api::backup::{BackupLocation, BackupPhase, TenantBackup, TenantBackupSpec, TenantBackupStatus};
use crate::backup::Metadata;
use crate::metrics::BACKUP_CONTROLLER;
use crate::model::TenantModel;
use crate::model::backup::{self as plan, BackupSummary, RestoreSource};
use crate::model::state::{BackupObservation, FinishedBackup, RESTORED, RestoreState, TenantState};
use crate::resources::backup::{self as jobs, BackupJob};
use crate::resources::{TENANT_LABEL, managed_selector};

/// Finalizer on a TenantBackup: its objects in the store are deleted before it goes.
pub const FINALIZER: &str = "neurallog.io/backup-objects";
/// How often a running backup or restore is looked at when nothing wakes it.
const POLL: Duration = Duration::from_secs(10);

/// The condition of a TenantBackup: True once the backup is complete and verified.
pub const SUCCEEDED: &str = "Succeeded";
/// `Succeeded` while its Job takes the backup, once it is verified, once it failed: (status,
/// reason).
const TAKING: (bool, &str) = (false, "Running");
const VERIFIED: (bool, &str) = (true, "BackupSucceeded");
const FAILED: (bool, &str) = (false, "BackupFailed");
/// Every (status, reason) of `Succeeded`.
pub const SUCCEEDED_REASONS: [(bool, &str); 3] = [TAKING, VERIFIED, FAILED];

fn timestamp(time: &Time) -> jiff::Timestamp {
    time.0
}

/// The backups of this tenant (not of an earlier one of the same name), as the schedule, retention
/// and status see them.
pub fn summaries(backups: &Store<TenantBackup>, model: &TenantModel) -> Vec<(BackupSummary, Arc<TenantBackup>)> {
    backups
        .state()
        .into_iter()
        .filter(|backup| backup.spec.tenant == model.name)
        .filter(|backup| {
            let uid = backup.status.as_ref().and_then(|s| s.tenant_uid.as_deref());
            uid.is_none_or(|uid| uid == model.uid)
        })
        .map(|backup| {
            let scheduled_at = backup
                .annotations()
                .get(plan::SCHEDULED_AT_ANNOTATION)
                .filter(|_| backup.labels().contains_key(plan::SCHEDULED_LABEL))
                .and_then(|at| at.parse().ok());
            let status = backup.status.as_ref();
            let summary = BackupSummary {
                name: backup.name_any(),
                scheduled_at,
                phase: status.and_then(|s| s.phase),
                created: backup.metadata.creation_timestamp.as_ref().map(timestamp),
                completed: status.and_then(|s| s.completion_time.as_ref()).map(timestamp),
                deleting: backup.metadata.deletion_timestamp.is_some(),
            };
            (summary, backup)
        })
        .collect()
}

/// What the tenant's status says of its finished backups.
pub fn observe(backups: &[(BackupSummary, Arc<TenantBackup>)]) -> BackupObservation {
    let finished = |backup: &TenantBackup| {
        let status = backup.status.clone().unwrap_or_default();
        let succeeded = status.phase == Some(BackupPhase::Succeeded);
        let message = status.message.clone().unwrap_or_default();
        FinishedBackup {
            name: backup.name_any(),
            succeeded,
            message: format!("backup {}: {message}", backup.name_any()),
            completed: status.completion_time.clone(),
            size_bytes: status.size_bytes,
        }
    };
    let mut done: Vec<&(BackupSummary, Arc<TenantBackup>)> = backups
        .iter()
        .filter(|(summary, _)| matches!(summary.phase, Some(BackupPhase::Succeeded | BackupPhase::Failed)))
        .collect();
    done.sort_by_key(|(summary, _)| std::cmp::Reverse(summary.completed));
    BackupObservation {
        latest: done.first().map(|(_, backup)| finished(backup)),
        last_success: done
            .iter()
            .find(|(summary, _)| summary.phase == Some(BackupPhase::Succeeded))
            .map(|(_, backup)| finished(backup)),
        restore: None,
        restored_from: None,
    }
}

/// Whether the tenant's status records its restore as done.
pub fn restored(current: Option<&TenantState>) -> bool {
    current.and_then(|state| state.condition(RESTORED)).is_some_and(|c| c.status == "True")
}

/// Where the backup a new tenant restores from is, found once: `Err` says why it cannot be read
/// yet (or ever), and nothing is created for its Redis meanwhile.
pub fn resolve_restore(model: &mut TenantModel, backups: &Store<TenantBackup>) -> Result<(), RestoreState> {
    let Some(restore) = model.restore.as_mut() else { return Ok(()) };
    if restore.location.is_some() {
        return Ok(());
    }
    let name = match &restore.source {
        Some(RestoreSource::Location(location)) => {
            restore.location = Some(location.clone());
            return Ok(());
        }
        Some(RestoreSource::Backup(name)) => name.clone(),
        None => return Ok(()),
    };
    let Some(backup) = backups.get(&ObjectRef::new(&name)) else {
        return Err(RestoreState::Failed {
            message: format!("restore from backup {name}: TenantBackup {name} does not exist"),
        });
    };
    let status = backup.status.clone().unwrap_or_default();
    match (status.phase, status.location) {
        (Some(BackupPhase::Succeeded), Some(location)) => {
            restore.location = Some(location);
            Ok(())
        }
        (Some(BackupPhase::Failed), _) => Err(RestoreState::Failed {
            message: format!("restore from backup {name}: it failed ({})", status.message.unwrap_or_default()),
        }),
        (phase, _) => Err(RestoreState::Waiting {
            message: format!(
                "waiting for backup {name} to succeed (it is {}); nothing is written meanwhile",
                phase.map_or("Pending", BackupPhase::as_str)
            ),
        }),
    }
}

/// How far the restore of a tenant whose Redis exists is: done once Redis runs Ready (its init
/// containers restored first), failed when one of them said so, else under way.
pub async fn restore_progress(ctx: &Context, model: &TenantModel, redis_ready: bool) -> RestoreState {
    let from =
        model.restore.as_ref().and_then(|r| r.location.as_ref()).map(BackupLocation::describe).unwrap_or_default();
    if redis_ready {
        return RestoreState::Restored { message: format!("Redis was restored from backup {from}") };
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &model.namespace);
    let selector = format!("app={},{TENANT_LABEL}={}", crate::resources::redis::APP, model.name);
    let pods = pods.list(&ListParams::default().labels(&selector)).await.map(|list| list.items).unwrap_or_default();
    restore_state(&from, &pods)
}

/// How far the restore from backup `from` is, by the Redis pods' init containers: a container that
/// failed fails the restore with what it said; one the kubelet cannot start yet (its credentials
/// Secret or key missing, which the user may still create) keeps it waiting, saying why.
fn restore_state(from: &str, pods: &[Pod]) -> RestoreState {
    let statuses =
        pods.iter().flat_map(|pod| pod.status.iter().flat_map(|s| s.init_container_statuses.iter().flatten()));
    let mut waiting_for = None;
    for status in statuses {
        let terminated = status
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| status.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
        if let Some(terminated) = terminated.filter(|t| t.exit_code != 0) {
            let said = terminated.message.clone().unwrap_or_else(|| format!("exit code {}", terminated.exit_code));
            return RestoreState::Failed { message: format!("{} failed: {}", status.name, said.trim()) };
        }
        if let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref())
            && waiting.reason.as_deref() == Some("CreateContainerConfigError")
        {
            waiting_for =
                Some(format!("{} cannot start: {}", status.name, waiting.message.as_deref().unwrap_or_default()));
        }
    }
    let message = format!("restoring Redis from backup {from}");
    RestoreState::Restoring { message: waiting_for.map_or(message.clone(), |why| format!("{message}; {why}")) }
}

/// Creates the scheduled backup that is due and deletes those retention no longer keeps; the time
/// until the next one is due.
pub async fn schedule(
    tenant: &Tenant,
    model: &TenantModel,
    ctx: &Context,
    backups: &[(BackupSummary, Arc<TenantBackup>)],
) -> Option<Duration> {
    let now = jiff::Timestamp::now();
    let created = tenant.metadata.creation_timestamp.as_ref().map_or(now, timestamp);
    let backup = model.backup.as_ref();
    let schedule = backup.and_then(|backup| backup.schedule.as_ref());
    // When the newest scheduled backup was due, for the overdue alert (none before the tenant).
    let latest_due = schedule.and_then(|schedule| schedule.latest_due(now)).filter(|due| *due >= created);
    ctx.metrics.set_backup_due(&model.name, latest_due.map(|due| due.as_second()));
    let (backup, schedule) = (backup?, schedule?);
    let summaries: Vec<BackupSummary> = backups.iter().map(|(summary, _)| summary.clone()).collect();
    let api = Api::<TenantBackup>::all(ctx.client.clone());
    if let Some(due) = plan::due(schedule, created, now, &summaries) {
        let name = plan::scheduled_name(&model.name, due);
        let mut labels = crate::resources::tenant_labels(&model.name);
        labels.insert(plan::SCHEDULED_LABEL.to_owned(), "true".to_owned());
        let object = TenantBackup {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                annotations: Some([(plan::SCHEDULED_AT_ANNOTATION.to_owned(), due.to_string())].into()),
                ..Default::default()
            },
            spec: TenantBackupSpec { tenant: model.name.clone() },
            status: None,
        };
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        match api.create(&params, &object).await {
            Ok(_) => {
                let note = format!("backup {name} created for the schedule {:?} (due {due})", schedule.as_str());
                events::publish(&ctx.recorder, tenant, Reason::BackupScheduled, Activity::Backup, note).await;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                tracing::warn!(tenant = %model.name, backup = %name, %error, "cannot create the scheduled backup")
            }
        }
    }
    for name in plan::expired(&summaries, backup.keep) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                let note =
                    format!("backup {name} deleted: the schedule keeps the newest {} that succeeded", backup.keep);
                events::publish(&ctx.recorder, tenant, Reason::BackupExpired, Activity::Backup, note).await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::warn!(tenant = %model.name, backup = %name, %error, "cannot delete an expired backup")
            }
        }
    }
    let next = schedule.next_after(now)?;
    let wait = next.duration_since(now).unsigned_abs();
    // A second past the minute, so the due time is in the past when the tenant is looked at.
    Some(wait + Duration::from_secs(1))
}

// The TenantBackup controller.

/// What the TenantBackup controller shares.
struct BackupContext {
    ctx: Arc<Context>,
    tenants: Store<Tenant>,
    jobs: Store<Job>,
}

/// Runs the TenantBackup controller until `shutdown`; `backups` is the watch the tenant controller
/// caches too.
pub async fn run(
    ctx: Arc<Context>,
    tenants: Store<Tenant>,
    backups: (Store<TenantBackup>, impl futures::Stream<Item = Result<TenantBackup, watcher::Error>> + Send + 'static),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let selector = format!("{},app={}", managed_selector(), jobs::APP);
    let job_api = Api::<Job>::all(ctx.client.clone());
    let (job_store, job_events, _) =
        super::children::cached_watch(job_api, watcher::Config::default().labels(&selector));
    // A Job's event wakes the TenantBackup it works for (its controller owner, cluster-scoped).
    let job_wakes = job_events.filter_map(|job| {
        let owner = job.ok().and_then(|job| {
            job.owner_references().iter().find(|o| o.kind == TenantBackup::kind(&())).map(|o| ObjectRef::new(&o.name))
        });
        std::future::ready(owner)
    });
    let (store, events) = backups;
    let shared = Arc::new(BackupContext { ctx, tenants, jobs: job_store });
    Controller::for_stream(events, store)
        .reconcile_on(job_wakes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result
                && !matches!(error, controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(..))
            {
                tracing::warn!(%error, "backup controller error");
            }
        })
        .await;
}

#[derive(Debug, thiserror::Error)]
#[error("backup {backup}: {source}")]
struct BackupError {
    backup: String,
    source: kube::Error,
}

fn error_policy(_: Arc<TenantBackup>, error: &BackupError, _: Arc<BackupContext>) -> Action {
    tracing::warn!(%error, "backup reconcile failed");
    Action::requeue(POLL)
}

async fn reconcile(backup: Arc<TenantBackup>, shared: Arc<BackupContext>) -> Result<Action, BackupError> {
    let name = backup.name_any();
    let span =
        tracing::info_span!("backup", backup = %name, tenant = %backup.spec.tenant, phase = tracing::field::Empty);
    let wrap = |source| BackupError { backup: name.clone(), source };
    let started = std::time::Instant::now();
    let _worker = shared.ctx.metrics.worker(BACKUP_CONTROLLER);
    let trace_id = span.in_scope(crate::telemetry::current_ids).map(|(trace_id, _)| trace_id);
    let result = async {
        if backup.metadata.deletion_timestamp.is_some() {
            return finalize(&backup, &shared).await.map_err(wrap);
        }
        let api = Api::<TenantBackup>::all(shared.ctx.client.clone());
        if !backup.finalizers().iter().any(|f| f == FINALIZER) {
            let mut finalizers = backup.finalizers().to_vec();
            finalizers.push(FINALIZER.to_owned());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": backup.resource_version()}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(wrap)?;
            return Ok(Action::await_change());
        }
        let status = backup.status.clone().unwrap_or_default();
        if matches!(status.phase, Some(BackupPhase::Succeeded | BackupPhase::Failed)) {
            return Ok(Action::await_change());
        }
        let next = advance(&backup, status.clone(), &shared).await.map_err(wrap)?;
        tracing::Span::current().record("phase", next.phase.map_or("Pending", BackupPhase::as_str));
        if next != status {
            write_status(&api, &name, &next).await.map_err(wrap)?;
            announce(&backup, &status, &next, &shared).await;
        }
        Ok(match next.phase {
            Some(BackupPhase::Succeeded | BackupPhase::Failed) => Action::await_change(),
            _ => Action::requeue(POLL),
        })
    }
    .instrument(span)
    .await;
    shared.ctx.metrics.reconciled(BACKUP_CONTROLLER, result.is_ok(), started.elapsed(), trace_id);
    result
}

fn failed(mut status: TenantBackupStatus, message: String) -> TenantBackupStatus {
    status.phase = Some(BackupPhase::Failed);
    status.completion_time = Some(super::status::now());
    status.conditions = vec![succeeded_condition(FAILED, &message)];
    status.message = Some(message);
    status
}

fn succeeded_condition((ok, reason): (bool, &str), message: &str) -> Condition {
    Condition {
        type_: SUCCEEDED.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: super::status::now(),
    }
}

/// The next status of a backup that is not finished: its Job created, watched, and its outcome
/// read from the Job's pod.
async fn advance(
    backup: &TenantBackup,
    status: TenantBackupStatus,
    shared: &BackupContext,
) -> Result<TenantBackupStatus, kube::Error> {
    let ctx = &shared.ctx;
    let tenant_name = &backup.spec.tenant;
    let Some(tenant) = shared.tenants.get(&ObjectRef::new(tenant_name)) else {
        return Ok(failed(status, format!("tenant {tenant_name} does not exist")));
    };
    let model = match tenant.model() {
        Ok(model) => model,
        Err(invalid) => return Ok(failed(status, format!("tenant {tenant_name}: {invalid}"))),
    };
    let Some(plan) = &model.backup else {
        return Ok(failed(status, format!("tenant {tenant_name} has no spec.backup.destination")));
    };
    let name = backup.name_any();
    let Some(location) = status.location.clone().or_else(|| plan::location(&plan.destination, tenant_name, &name))
    else {
        return Ok(failed(status, format!("tenant {tenant_name} has no spec.backup.destination")));
    };
    let job_name = jobs::job_name(&name, "");
    let jobs_api = Api::<Job>::namespaced(ctx.client.clone(), &model.namespace);
    let mut job = shared.jobs.get(&ObjectRef::new(&job_name).within(&model.namespace));
    if job.is_none() && status.phase == Some(BackupPhase::Running) {
        // The Job just created may not be in the cache yet: only a read says it is gone.
        job = jobs_api.get_opt(&job_name).await?.map(Arc::new);
    }
    let Some(job) = job else {
        if status.phase == Some(BackupPhase::Running) {
            return Ok(failed(
                status,
                format!("its Job {job_name} in {} was deleted before it finished", model.namespace),
            ));
        }
        let version = tenant.status.as_ref().and_then(|s| s.version.clone());
        let spec = BackupJob {
            tenant: tenant_name,
            namespace: &model.namespace,
            backup: &name,
            owner: owner(backup),
            location: &location,
            neurallog_version: version.unwrap_or_else(|| ctx.settings.platform.release.version.to_string()),
        };
        let job = jobs::backup_job(&model, &ctx.settings.platform, &spec);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        match jobs_api.create(&params, &job).await {
            Ok(_) => {}
            Err(kube::Error::Api(conflict)) if conflict.code == 409 => {}
            Err(kube::Error::Api(refused)) => {
                return Ok(failed(
                    status,
                    format!("its Job {job_name} in {} was refused: {}", model.namespace, refused.message),
                ));
            }
            Err(error) => return Err(error),
        }
        return Ok(TenantBackupStatus {
            phase: Some(BackupPhase::Running),
            job: Some(job_name.clone()),
            tenant_uid: Some(model.uid.clone()),
            location: Some(location),
            start_time: Some(super::status::now()),
            message: Some(format!("Job {job_name} in {} takes the backup", model.namespace)),
            conditions: vec![succeeded_condition(TAKING, "the backup is being taken")],
            ..status
        });
    };
    let job_status = job.status.clone().unwrap_or_default();
    let condition =
        |type_: &str| job_status.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True").cloned();
    if condition("Complete").is_some() {
        let report = report(ctx, &model.namespace, &job_name).await;
        let Some(metadata) = report.as_deref().and_then(|line| serde_json::from_str::<Metadata>(line).ok()) else {
            return Ok(failed(status, format!("its Job {job_name} finished without a report: {report:?}")));
        };
        let message = format!(
            "{} bytes of RDB {} (Redis {}, NeuralLog {}) at {}",
            metadata.size_bytes,
            metadata.rdb_version,
            metadata.redis_version,
            metadata.neurallog_version,
            location.describe()
        );
        return Ok(TenantBackupStatus {
            phase: Some(BackupPhase::Succeeded),
            conditions: vec![succeeded_condition(VERIFIED, &message)],
            completion_time: Some(super::status::now()),
            size_bytes: i64::try_from(metadata.size_bytes).ok(),
            sha256: Some(metadata.sha256),
            neurallog_version: Some(metadata.neurallog_version),
            redis_version: Some(metadata.redis_version),
            rdb_version: i32::try_from(metadata.rdb_version).ok(),
            message: Some(message),
            location: Some(location),
            ..status
        });
    }
    if let Some(failure) = condition("Failed") {
        let said = report(ctx, &model.namespace, &job_name).await;
        let why = said.unwrap_or_else(|| {
            format!("{}: {}", failure.reason.unwrap_or_default(), failure.message.unwrap_or_default())
        });
        return Ok(failed(status, why));
    }
    Ok(status)
}

/// The last line a Job's pod left in its termination message (the newest pod's).
async fn report(ctx: &Context, namespace: &str, job: &str) -> Option<String> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let listed = pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await.ok()?;
    let mut pods = listed.items;
    pods.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(timestamp));
    pods.iter()
        .rev()
        .find_map(|pod| {
            let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
            statuses.iter().find_map(|status| status.state.as_ref()?.terminated.as_ref()?.message.clone())
        })
        .map(|message| message.trim().to_owned())
        .filter(|message| !message.is_empty())
}

fn owner(backup: &TenantBackup) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    backup.controller_owner_ref(&()).unwrap_or_default()
}

async fn write_status(api: &Api<TenantBackup>, name: &str, status: &TenantBackupStatus) -> Result<(), kube::Error> {
    let body = json!({"apiVersion": TenantBackup::api_version(&()), "kind": TenantBackup::kind(&()), "status": status});
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Events and metrics for a backup that changed phase.
async fn announce(
    backup: &TenantBackup,
    before: &TenantBackupStatus,
    after: &TenantBackupStatus,
    shared: &BackupContext,
) {
    if before.phase == after.phase {
        return;
    }
    let ctx = &shared.ctx;
    let tenant = &backup.spec.tenant;
    let message = after.message.clone().unwrap_or_default();
    let reason = match after.phase {
        Some(BackupPhase::Running) => Reason::BackupStarted,
        Some(BackupPhase::Succeeded) => {
            let completed = after.completion_time.as_ref().map_or(0, |t| t.0.as_second());
            let started = after.start_time.as_ref().map_or(completed, |t| t.0.as_second());
            let took = Duration::from_secs(u64::try_from(completed - started).unwrap_or(0));
            ctx.metrics.backup_succeeded(tenant, completed, after.size_bytes.unwrap_or(0), took);
            Reason::BackupSucceeded
        }
        Some(BackupPhase::Failed) => {
            ctx.metrics.backup_failed(tenant);
            tracing::warn!(backup = %backup.name_any(), %tenant, %message, "backup failed");
            Reason::BackupFailed
        }
        _ => return,
    };
    let note = format!("backup {} of tenant {tenant}: {message}", backup.name_any());
    events::publish_about(&ctx.recorder, &backup.object_ref(&()), reason, Activity::Backup, note).await;
}

/// A deleted TenantBackup: its objects are deleted from the store by a Job in its tenant's
/// namespace, then it goes. Without that namespace (the tenant and its data are gone) the objects
/// are kept, and an Event says where.
async fn finalize(backup: &TenantBackup, shared: &BackupContext) -> Result<Action, kube::Error> {
    if !backup.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ctx = &shared.ctx;
    let name = backup.name_any();
    let tenant = &backup.spec.tenant;
    let namespace = crate::model::namespace_name(tenant);
    let location = backup.status.as_ref().and_then(|s| s.location.clone());
    let release = |note: Option<String>| async {
        if let Some(note) = note {
            events::publish_about(
                &ctx.recorder,
                &backup.object_ref(&()),
                Reason::BackupObjectsKept,
                Activity::Delete,
                note,
            )
            .await;
        }
        let finalizers: Vec<String> = backup.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": backup.resource_version()}});
        let api = Api::<TenantBackup>::all(ctx.client.clone());
        match api.patch(&backup.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(gone)) if gone.code == 404 => Ok(Action::await_change()),
            Err(error) => Err(error),
        }
    };
    let Some(location) = location else { return release(None).await };
    // An uninstall deletes the CRD, and with it every TenantBackup: their objects are kept.
    let crds = Api::<CustomResourceDefinition>::all(ctx.client.clone());
    let crd = crds.get_metadata_opt(crate::api::backup::CRD_NAME).await?;
    if crd.is_none_or(|crd| crd.metadata.deletion_timestamp.is_some()) {
        let note = format!(
            "the TenantBackup CustomResourceDefinition is being deleted (an uninstall): the objects of backup {name} stay at {}",
            location.describe()
        );
        return release(Some(note)).await;
    }
    let namespace_usable =
        ctx.namespaces.get(&ObjectRef::new(&namespace)).is_some_and(|ns| ns.metadata.deletion_timestamp.is_none());
    if !namespace_usable {
        let note = format!(
            "the objects of backup {name} stay at {}: namespace {namespace}, which holds the store's credentials, is gone",
            location.describe()
        );
        return release(Some(note)).await;
    }
    let job_name = jobs::job_name(&name, "-delete");
    match shared.jobs.get(&ObjectRef::new(&job_name).within(&namespace)) {
        None => {
            let spec = BackupJob {
                tenant,
                namespace: &namespace,
                backup: &name,
                owner: owner(backup),
                location: &location,
                neurallog_version: String::new(),
            };
            let job = jobs::deletion_job(&ctx.settings.platform, &spec);
            let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
            match Api::<Job>::namespaced(ctx.client.clone(), &namespace).create(&params, &job).await {
                Ok(_) => Ok(Action::requeue(POLL)),
                Err(kube::Error::Api(conflict)) if conflict.code == 409 => Ok(Action::requeue(POLL)),
                Err(kube::Error::Api(refused)) => {
                    release(Some(format!(
                        "the objects of backup {name} stay at {}: {}",
                        location.describe(),
                        refused.message
                    )))
                    .await
                }
                Err(error) => Err(error),
            }
        }
        Some(job) => {
            let conditions = job.status.clone().unwrap_or_default().conditions.unwrap_or_default();
            let holds = |type_: &str| conditions.iter().any(|c| c.type_ == type_ && c.status == "True");
            if holds("Complete") {
                release(None).await
            } else if holds("Failed") {
                let said = report(ctx, &namespace, &job_name).await.unwrap_or_default();
                release(Some(format!("the objects of backup {name} stay at {}: {said}", location.describe()))).await
            } else {
                Ok(Action::requeue(POLL))
            }
        }
    }
}

/// The TenantBackup watch, shared by both controllers: the tenants' cache of their backups and
/// the backup controller's own events.
pub fn watch(
    client: &kube::Client,
) -> (Store<TenantBackup>, impl futures::Stream<Item = Result<TenantBackup, watcher::Error>> + Send + 'static) {
    let (store, events, _) =
        super::children::cached_watch(Api::<TenantBackup>::all(client.clone()), watcher::Config::default());
    (store, events.map_ok(|backup| backup))
}

impl BackupPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupPhase::Pending => "Pending",
            BackupPhase::Running => "Running",
            BackupPhase::Succeeded => "Succeeded",
            BackupPhase::Failed => "Failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    use super::*;

    fn pod(statuses: Vec<ContainerStatus>) -> Pod {
        Pod {
            status: Some(PodStatus { init_container_statuses: Some(statuses), ..PodStatus::default() }),
            ..Pod::default()
        }
    }

    fn status(name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus { name: name.to_owned(), state: Some(state), ..ContainerStatus::default() }
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: Some(message.into()) }),
            ..ContainerState::default()
        }
    }

    #[test]
    fn a_missing_credentials_secret_keeps_the_restore_waiting_and_says_so() {
        let pods =
            [pod(vec![status("restore-fetch", waiting("CreateContainerConfigError", "secret \"store\" not found"))])];
        let RestoreState::Restoring { message } = restore_state("s3://b/k", &pods) else {
            panic!("a Secret the user may still create fails nothing");
        };
        assert!(message.contains("s3://b/k") && message.contains("secret \"store\" not found"), "{message}");
    }

    #[test]
    fn a_failed_init_container_fails_the_restore_with_what_it_said() {
        let failed = |exit_code, message: Option<&str>| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                message: message.map(str::to_owned),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        let pods = [pod(vec![status("restore-fetch", failed(1, Some("checksum mismatch\n")))])];
        let RestoreState::Failed { message } = restore_state("s3://b/k", &pods) else { panic!("not failed") };
        assert_eq!(message, "restore-fetch failed: checksum mismatch");
        // A failure kubelet is retrying (the last state) fails it too, and one without a message says its code.
        let retrying = ContainerStatus {
            last_state: Some(failed(2, None)),
            ..status("restore-load", waiting("CrashLoopBackOff", "back-off"))
        };
        let RestoreState::Failed { message } = restore_state("s3://b/k", &[pod(vec![retrying])]) else {
            panic!("not failed")
        };
        assert_eq!(message, "restore-load failed: exit code 2");
        let succeeded = status("restore-fetch", failed(0, None));
        assert!(matches!(restore_state("s3://b/k", &[pod(vec![succeeded])]), RestoreState::Restoring { .. }));
    }
}
