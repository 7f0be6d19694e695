//! What every reconcile shares, and how the controller is configured.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::Subject;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use super::backoff::ErrorBackoff;
use super::children::Children;
use super::rollout::{Rollout, RolloutSettings};
use super::triggers::Triggers;
use crate::api::backup::TenantBackup;
use crate::auth::{AuthClient, AuthSettings};
use crate::metrics::Metrics;
use crate::resources::Platform;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tenants reconciled at the same time; one slow tenant holds one slot, never the others.
    pub concurrency: u16,
    /// Re-check of a converged tenant, a safety net behind the watches.
    pub resync_interval: Duration,
    /// Name of this operator instance in Events (the pod name in a cluster).
    pub instance: Option<String>,
    /// Cluster-level settings that shape every tenant's objects.
    pub platform: Platform,
    /// NeuralLog Auth; `None` skips registration.
    pub auth: Option<AuthSettings>,
    /// How new NeuralLog versions reach the tenants.
    pub rollout: RolloutSettings,
    /// How long after its deletion started a tenant keeps retrying deregistration from Auth
    /// before it is released anyway (with a Warning event), so an Auth outage cannot block
    /// deletion forever.
    pub auth_deregistration_deadline: Duration,
    /// How often each tenant's Redis is asked for its metrics; `None`: never.
    pub operand_metrics_interval: Option<Duration>,
    /// Put the ServiceMonitor and PrometheusRule in place in the operator's namespace
    /// (`platform.operator_namespace`) when the Prometheus Operator's CRDs exist.
    pub monitoring_resources: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            resync_interval: Duration::from_secs(600),
            instance: None,
            platform: Platform::default(),
            auth: None,
            rollout: RolloutSettings::default(),
            auth_deregistration_deadline: Duration::from_secs(600),
            operand_metrics_interval: None,
            monitoring_resources: false,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The identity the operator runs as, which each tenant namespace's RoleBinding names.
    pub identity: Subject,
    /// Every namespace, metadata only: a foreign `tenant-<name>` is seen coming and going.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub children: Children,
    /// Turns true once every watch cache holds a full list.
    synced: watch::Receiver<bool>,
    pub recorder: Recorder,
    pub settings: Settings,
    pub auth: Option<AuthClient>,
    pub backoff: ErrorBackoff,
    pub triggers: Arc<Triggers>,
    pub metrics: Arc<Metrics>,
    pub rollout: Rollout,
    /// Every TenantBackup: a tenant's schedule, retention, status and restore read them here.
    pub backups: Store<TenantBackup>,
    /// UIDs of deleted tenants already deregistered from Auth. The status records it too, but the
    /// watch cache may not have that status yet when the next pass runs.
    deregistered: Mutex<HashSet<String>>,
    /// Per tenant UID, the generation whose leftover children a sweep has found all gone. A sweep
    /// reads the cache of every child kind whole, so a converged tenant skips it until its spec
    /// changes or another process takes over (children it no longer wants appear only then).
    swept: Mutex<HashMap<String, i64>>,
    /// Keys of the conditions this process has already warned about once (a reconcile that finds
    /// the same thing again stays quiet).
    warned: Mutex<HashSet<String>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        identity: Subject,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        children: Children,
        synced: watch::Receiver<bool>,
        recorder: Recorder,
        settings: Settings,
        auth: Option<AuthClient>,
        triggers: Arc<Triggers>,
        metrics: Arc<Metrics>,
        rollout: Rollout,
        backups: Store<TenantBackup>,
    ) -> Self {
        Self {
            client,
            identity,
            namespaces,
            children,
            synced,
            recorder,
            settings,
            auth,
            backoff: ErrorBackoff::default(),
            triggers,
            metrics,
            rollout,
            backups,
            deregistered: Mutex::default(),
            swept: Mutex::default(),
            warned: Mutex::default(),
        }
    }

    /// Waits until every watch cache holds a full list, so a restarted operator never mistakes
    /// an unlisted child for a missing one and rewrites it; `false` if the caches are gone.
    pub async fn caches_synced(&self) -> bool {
        self.synced.clone().wait_for(|synced| *synced).await.is_ok()
    }

    /// The generation of each tenant (by UID) whose leftovers are known to be gone.
    pub fn swept(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.swept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `true` the first time it is asked about `key` in this process.
    pub fn warned_once(&self, key: &str) -> bool {
        self.warned.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key.to_owned())
    }

    /// UIDs of the deleted tenants this process has deregistered from Auth.
    pub fn deregistered(&self) -> MutexGuard<'_, HashSet<String>> {
        self.deregistered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
