//! The Tenant controller: watches tenants and every child kind, and reconciles each tenant on
//! any change to it or its children.

pub mod apply;
mod deletion;
pub mod error;
mod reconcile;
pub mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub use reconcile::FINALIZER;

use crate::api::v1::Tenant;
use crate::auth::{AuthClient, AuthSettings};
use crate::metrics::Metrics;
use crate::resources::{Platform, managed_selector};

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
    /// How long after its deletion started a tenant keeps retrying deregistration from Auth
    /// before it is released anyway (with a Warning event), so an Auth outage cannot block
    /// deletion forever.
    pub auth_deregistration_deadline: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            resync_interval: Duration::from_secs(600),
            instance: None,
            platform: Platform::default(),
            auth: None,
            auth_deregistration_deadline: Duration::from_secs(600),
        }
    }
}

/// Watch caches of the tenants' children, filled by the controller's own watches and read by the
/// reconciler instead of the API server. Namespaces and Secrets are cached as metadata only:
/// the operator never needs a Secret's data after creating it, and should not hold passwords.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub config_maps: Store<ConfigMap>,
    pub services: Store<Service>,
    pub stateful_sets: Store<StatefulSet>,
    pub deployments: Store<Deployment>,
    pub network_policies: Store<NetworkPolicy>,
    pub ingresses: Store<Ingress>,
    pub resource_quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
}

impl Caches {
    /// Waits until every cache holds a full list, so a restarted operator never mistakes an
    /// unlisted child for a missing one and rewrites it.
    async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.namespaces.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.stateful_sets.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.network_policies.wait_until_ready().await?;
        self.ingresses.wait_until_ready().await?;
        self.resource_quotas.wait_until_ready().await?;
        self.limit_ranges.wait_until_ready().await
    }
}

/// Per-tenant exponential backoff after failed reconciles, reset by a success.
#[derive(Default)]
struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key.to_owned()).or_default();
        let delay = Self::BASE.saturating_mul(2u32.saturating_pow(*count)).min(Self::MAX);
        *count = count.saturating_add(1);
        delay
    }

    fn reset(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }
}

/// Why each tenant's next reconcile runs, for its trace. kube keeps the reason from reconcilers,
/// so the controller notes it where it sees it: in the watch streams (an event wins) and when a
/// reconcile schedules the next one (kept unless an event comes first).
#[derive(Default)]
struct Triggers {
    pending: Mutex<HashMap<String, (String, bool)>>,
}

impl Triggers {
    /// A watch event about the tenant; the first one since the last reconcile is kept.
    fn event(&self, tenant: &str, why: impl FnOnce() -> String) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match pending.get(tenant) {
            Some((_, true)) => {}
            _ => {
                pending.insert(tenant.to_owned(), (why(), true));
            }
        }
    }

    /// The reconcile the controller scheduled itself (a resync, a retry), unless an event is due.
    fn scheduled(&self, tenant: &str, why: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.entry(tenant.to_owned()).or_insert_with(|| (why.to_owned(), false));
    }

    /// Why the reconcile starting now runs.
    fn take(&self, tenant: &str) -> String {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.remove(tenant).map_or_else(|| "operator start or resync".to_owned(), |(why, _)| why)
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    caches: Caches,
    recorder: Recorder,
    settings: Settings,
    auth: Option<AuthClient>,
    backoff: ErrorBackoff,
    triggers: Arc<Triggers>,
    /// UIDs of deleted tenants already deregistered from Auth. The status records it too, but the
    /// watch cache may not have that status yet when the next pass runs.
    deregistered: Mutex<std::collections::HashSet<String>>,
    metrics: Arc<Metrics>,
}

impl Context {
    /// UIDs of the deleted tenants this process has deregistered from Auth.
    fn deregistered(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.deregistered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A watch of `api` that fills a cache and yields every touched object as a reconcile trigger.
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer).touched_objects();
    (store, stream)
}

/// The tenant that controls a child. kube's `owns` would key a cluster-scoped owner by the child's
/// namespace too, so one tenant could be reconciled twice at once under two keys; mapping here
/// keeps exactly one key per tenant.
fn controlling_tenant<K: Resource>(child: &K) -> Option<ObjectRef<Tenant>> {
    let api_version = Tenant::api_version(&());
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true) && owner.kind == "Tenant" && owner.api_version == api_version)
        .map(|owner| ObjectRef::new(&owner.name))
}

/// Maps a child event to the tenant that controls the child, noting it as that tenant's trigger.
fn child_trigger<K>(triggers: &Arc<Triggers>) -> impl Fn(K) -> Option<ObjectRef<Tenant>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()>,
{
    let triggers = triggers.clone();
    move |child| {
        let tenant = controlling_tenant(&child)?;
        let namespace = child.meta().namespace.clone().unwrap_or_default();
        triggers.event(&tenant.name, || format!("{} {namespace}/{} changed", K::kind(&()), child.name_any()));
        Some(tenant)
    }
}

/// The tenant a namespace event concerns: namespaces are named `tenant-<name>`.
fn tenant_of_namespace(namespace: &PartialObjectMeta<Namespace>) -> Option<ObjectRef<Tenant>> {
    let name = namespace.metadata.name.as_deref()?;
    name.strip_prefix("tenant-").map(ObjectRef::new)
}

/// Runs the controller until `shutdown` completes, then finishes the reconciles in flight.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let tenants = Api::<Tenant>::all(client.clone());
    tenants
        .list_metadata(&ListParams::default().limit(1))
        .await
        .context("cannot list tenants.neurallog.io: is the CRD installed (tenant-operator crd | kubectl apply -f -) and may this identity list it?")?;

    let children = watcher::Config::default().labels(&managed_selector());
    // Every namespace is watched (metadata only) so a foreign `tenant-<name>` is seen coming and going.
    let (namespaces, namespace_events) = cached_watch(Api::all(client.clone()), watcher::Config::default());
    let (secrets, secret_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (config_maps, config_map_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (services, service_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (stateful_sets, stateful_set_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (deployments, deployment_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (network_policies, network_policy_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (ingresses, ingress_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (resource_quotas, resource_quota_events) = cached_watch(Api::all(client.clone()), children.clone());
    let (limit_ranges, limit_range_events) = cached_watch(Api::all(client.clone()), children);

    let auth = settings
        .auth
        .clone()
        .map(|auth| AuthClient::new(auth, client.clone()))
        .transpose()
        .context("invalid NeuralLog Auth settings")?;
    let triggers = Arc::new(Triggers::default());
    let reporter = Reporter { controller: "neurallog-tenant-operator".into(), instance: settings.instance.clone() };
    let concurrency = settings.concurrency;
    let caches = Caches {
        namespaces,
        secrets,
        config_maps,
        services,
        stateful_sets,
        deployments,
        network_policies,
        ingresses,
        resource_quotas,
        limit_ranges,
    };
    let readiness = (caches.clone(), metrics.clone());
    tokio::spawn(async move {
        if readiness.0.ready().await.is_ok() {
            readiness.1.set_caches_ready();
        }
    });
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        caches,
        settings,
        auth,
        backoff: ErrorBackoff::default(),
        triggers: triggers.clone(),
        deregistered: Mutex::default(),
        metrics,
    });

    let (tenant_store, tenant_events) = cached_watch(tenants, watcher::Config::default());
    let own_changes = triggers.clone();
    let tenant_events = tenant_events.map_ok(move |tenant: Tenant| {
        own_changes.event(&tenant.name_any(), || {
            format!("tenant changed (generation {})", tenant.meta().generation.unwrap_or_default())
        });
        tenant
    });
    Controller::for_stream(tenant_events, tenant_store)
        .watches_stream(secret_events, child_trigger(&triggers))
        .watches_stream(config_map_events, child_trigger(&triggers))
        .watches_stream(service_events, child_trigger(&triggers))
        .watches_stream(stateful_set_events, child_trigger(&triggers))
        .watches_stream(deployment_events, child_trigger(&triggers))
        .watches_stream(network_policy_events, child_trigger(&triggers))
        .watches_stream(ingress_events, child_trigger(&triggers))
        .watches_stream(resource_quota_events, child_trigger(&triggers))
        .watches_stream(limit_range_events, child_trigger(&triggers))
        .watches_stream(namespace_events, {
            let triggers = triggers.clone();
            move |namespace| {
                let tenant = tenant_of_namespace(&namespace)?;
                triggers.event(&tenant.name, || format!("namespace {} changed", namespace.name_any()));
                Some(tenant)
            }
        })
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((tenant, _)) => tracing::debug!(tenant = %tenant.name, "reconciled"),
                // Failed reconciles are logged by the error policy, with their retry delay.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap_and_resets_on_success() {
        let backoff = ErrorBackoff::default();
        let delays: Vec<_> = (0..3).map(|_| backoff.next_delay("acme")).collect();
        assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]);
        assert_eq!(backoff.next_delay("other"), Duration::from_secs(1), "tenants back off independently");
        for _ in 0..20 {
            backoff.next_delay("acme");
        }
        assert_eq!(backoff.next_delay("acme"), ErrorBackoff::MAX);
        backoff.reset("acme");
        assert_eq!(backoff.next_delay("acme"), Duration::from_secs(1));
    }

    #[test]
    fn child_events_map_to_the_controlling_tenant_without_a_namespace() {
        let mut config_map = ConfigMap::default();
        config_map.metadata.namespace = Some("tenant-acme".into());
        assert!(controlling_tenant(&config_map).is_none());
        let owner = |kind: &str, controller| k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "neurallog.io/v1".into(),
            kind: kind.into(),
            name: "acme".into(),
            uid: "uid".into(),
            controller: Some(controller),
            ..Default::default()
        };
        config_map.metadata.owner_references = Some(vec![owner("Other", true), owner("Tenant", false)]);
        assert!(controlling_tenant(&config_map).is_none());
        config_map.metadata.owner_references = Some(vec![owner("Tenant", true)]);
        assert_eq!(controlling_tenant(&config_map), Some(ObjectRef::new("acme")));
    }

    #[test]
    fn namespace_events_map_to_their_tenant() {
        let ns = |name: &str| PartialObjectMeta::<Namespace> {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(tenant_of_namespace(&ns("tenant-acme")).map(|r| r.name), Some("acme".to_owned()));
        assert!(tenant_of_namespace(&ns("kube-system")).is_none());
    }
}
