//! The kinds of child object a tenant has, listed once. The list drives the watch caches the
//! reconciler reads instead of the API server, the watches that wake a tenant when one of its
//! children changes, the wait until every cache is filled, and the mark-and-sweep prune: a
//! reconcile marks every child it wants, and the sweep deletes the operator's other children of
//! the tenant (all of them for a Retain deletion, which marks nothing).

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::cached::{Cached, Judge, Observed, Workload};
use super::error::Result;
use super::events::Changes;
use super::kinds::{Child, controlling_tenant};
use super::triggers::Triggers;
use super::write::{self, Target, short_kind};
use crate::api::Tenant;
use crate::resources::{TENANT_LABEL, managed_selector};

/// The children a reconcile wants, by kind and name: the sweep keeps these.
#[derive(Debug, Default)]
pub struct Marks(HashSet<(&'static str, String)>);

impl Marks {
    pub fn mark<K: Resource<DynamicType = ()>>(&mut self, name: &str) {
        self.0.insert((short_kind::<K>(), name.to_owned()));
    }

    fn contains<K: Resource<DynamicType = ()>>(&self, name: &str) -> bool {
        self.0.contains(&(short_kind::<K>(), name.to_owned()))
    }
}

/// Objects per page of a watch's first list. A page is held whole, managed fields included, until
/// its objects are cached: small pages keep that peak small at any fleet size.
const LIST_PAGE: u32 = 100;

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reader of a cache looks at before it is cached: the managed fields (a record of
/// every field per writer, often as large as the object) and kubectl's copy of the object.
fn slim<C: Resource>(object: &mut C) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// A watch of whole objects that fills a cache (with [`slim`] objects, listed [`LIST_PAGE`] at a
/// time) and yields every touched object; the receiver turns true once the cache holds its first
/// full list. For tenants, whose every field the reconcile reads.
pub fn cached_watch<C>(
    api: Api<C>,
    config: watcher::Config,
) -> (Store<C>, impl Stream<Item = Result<C, watcher::Error>> + Send + 'static, Listed)
where
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let (listed_tx, listed) = tokio::sync::watch::channel(false);
    let watch = watcher(api, config.page_size(LIST_PAGE)).default_backoff();
    let events = watch.modify(slim).reflect(writer).inspect_ok(move |event| {
        // After `reflect`: the store holds the list by now.
        if matches!(event, watcher::Event::InitDone) {
            listed_tx.send_replace(true);
        }
    });
    (store, events.touched_objects(), Listed(listed))
}

/// Turns true once a cache holds its first full list. Unlike a kube store's readiness, which
/// wakes only its latest waiter, any number of tasks may wait on it.
#[derive(Clone)]
pub struct Listed(tokio::sync::watch::Receiver<bool>);

impl Listed {
    pub async fn wait(mut self) {
        // Fails only when the watch is gone, and with it everything that waits.
        let _ = self.0.wait_for(|listed| *listed).await;
    }
}

/// A metadata-only watch (the API server sends no bodies) that fills a cache of [`slim`]
/// metadata. For kinds whose content the operator never reads, such as namespaces.
pub fn metadata_watch<K>(
    client: &Client,
    config: watcher::Config,
) -> (Store<PartialObjectMeta<K>>, impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let watch = watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config.page_size(LIST_PAGE));
    (store, watch.default_backoff().modify(slim).reflect(writer).touched_objects())
}

/// The events of a child watch, as delivered.
type Delivered<O> = BoxStream<'static, Result<watcher::Event<O>, watcher::Error>>;

/// Children of kind `K` metadata only.
fn metadata_events<K: Child>(client: &Client, config: watcher::Config) -> Delivered<PartialObjectMeta<K>> {
    watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config).boxed()
}

/// Workloads of kind `K`, read for their metadata and ready pods.
fn workload_events<K: Child>(client: &Client, config: watcher::Config) -> Delivered<Workload<K>> {
    watcher(Api::<Workload<K>>::all(client.clone()), config).boxed()
}

/// A child watch that starts once the tenants are cached, caches each child as its verdict (see
/// [`Judge`]) and yields every touched child.
fn child_watch<K, O>(
    delivered: Delivered<O>,
    judge: Judge,
    tenants_listed: Listed,
) -> (Store<Cached<K>>, impl Stream<Item = Result<Cached<K>, watcher::Error>> + Send + 'static)
where
    K: Child,
    O: Observed<K> + Send + 'static,
{
    let (store, writer) = reflector::store();
    let judged = delivered.default_backoff().map_ok(move |event| match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(judge.cache(&object)),
        watcher::Event::InitApply(object) => watcher::Event::InitApply(judge.cache(&object)),
        // Gone: its keys are all the store needs to drop it.
        watcher::Event::Delete(object) => watcher::Event::Delete(Cached::unjudged(&object)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    });
    // Child verdicts need the tenants.
    let started = futures::stream::once(async move {
        tenants_listed.wait().await;
        judged
    })
    .flatten();
    (store, started.reflect(writer).touched_objects())
}

/// Maps a child's watch event to its tenant, noting it as that tenant's trigger.
fn tenant_woken_by<C>(
    triggers: &Arc<Triggers>,
    kind: &'static str,
) -> impl Fn(Result<C, watcher::Error>) -> std::future::Ready<Option<ObjectRef<Tenant>>> + Send + 'static
where
    C: Resource,
{
    let triggers = triggers.clone();
    move |event| {
        let tenant = event.ok().and_then(|child| {
            let tenant = controlling_tenant(child.meta())?;
            let namespace = child.meta().namespace.clone().unwrap_or_default();
            let name = child.meta().name.clone().unwrap_or_default();
            triggers.event(&tenant.name, || format!("{kind} {namespace}/{name} changed"));
            Some(tenant)
        });
        std::future::ready(tenant)
    }
}

/// The names of the operator's objects of one tenant in a cache, with whether each is already
/// being deleted.
fn managed<C>(store: &Store<C>, namespace: &str, tenant: &str) -> Vec<(String, bool)>
where
    C: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|object| object.meta().namespace.as_deref() == Some(namespace))
        .filter(|object| object.labels().get(TENANT_LABEL).map(String::as_str) == Some(tenant))
        .map(|object| (object.name_any(), object.meta().deletion_timestamp.is_some()))
        .collect()
}

/// The sweep of one kind: deletes the tenant's unmarked objects of kind `K` listed in `store`
/// and returns how many unmarked objects still exist.
async fn sweep_kind<K: Child>(
    store: &Store<Cached<K>>,
    client: &Client,
    (tenant, namespace): (&str, &str),
    marks: &Marks,
    params: DeleteParams,
    changes: &mut Changes,
) -> Result<usize> {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let kind = short_kind::<K>();
    let mut remaining = 0;
    for (name, deleting) in managed(store, namespace, tenant) {
        if marks.contains::<K>(&name) {
            continue;
        }
        remaining += 1;
        if deleting {
            // Already on its way out: a second delete would only be another write.
            continue;
        }
        let target = Target { tenant, verb: "delete", kind, name: &name };
        if write::send_tolerating(target, &[404], api.delete(&name, &params), |_| true).await?.is_some() {
            changes.deleted(kind, &name);
        }
    }
    Ok(remaining)
}

/// Lists the child kinds once: `field: Kind => how it is watched, deletion params;`.
macro_rules! child_kinds {
    ($($field:ident: $kind:ty => $events:ident, $delete:ident;)+) => {
        /// Watch caches of every child kind, filled by the controller's watches (children carry
        /// the managed-by label, which the watches select on).
        #[derive(Clone)]
        pub struct Children {
            $(pub $field: Store<Cached<$kind>>,)+
        }

        impl Children {
            /// Starts a watch per kind, each once the tenants are cached: the caches, and one
            /// stream of the tenants their events concern.
            pub fn watch(
                client: &Client,
                triggers: &Arc<Triggers>,
                judge: &Judge,
                tenants_listed: &Listed,
            ) -> (Self, BoxStream<'static, ObjectRef<Tenant>>) {
                let selected = watcher::Config::default().labels(&managed_selector()).page_size(LIST_PAGE);
                let mut wakes = Vec::new();
                $(
                    let delivered = $events::<$kind>(client, selected.clone());
                    let ($field, events) = child_watch(delivered, judge.clone(), tenants_listed.clone());
                    wakes.push(events.filter_map(tenant_woken_by(triggers, short_kind::<$kind>())).boxed());
                )+
                (Self { $($field,)+ }, futures::stream::select_all(wakes).boxed())
            }

            /// Waits until every cache holds a full list. A store wakes only its latest waiter:
            /// one task waits here and tells the others.
            pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
                $(self.$field.wait_until_ready().await?;)+
                Ok(())
            }

            /// Deletes every child of `tenant` in `namespace` that is not marked, workloads in
            /// the foreground (their pods go first); returns how many unmarked children still
            /// exist.
            pub async fn sweep(
                &self,
                client: &Client,
                tenant: &str,
                namespace: &str,
                marks: &Marks,
                changes: &mut Changes,
            ) -> Result<usize> {
                let mut remaining = 0;
                $(
                    remaining += sweep_kind::<$kind>(
                        &self.$field, client, (tenant, namespace), marks, DeleteParams::$delete(), changes,
                    )
                    .await?;
                )+
                Ok(remaining)
            }
        }
    };
}

child_kinds! {
    deployments: Deployment => workload_events, foreground;
    stateful_sets: StatefulSet => workload_events, foreground;
    services: Service => metadata_events, background;
    config_maps: ConfigMap => metadata_events, background;
    role_bindings: RoleBinding => metadata_events, background;
    network_policies: NetworkPolicy => metadata_events, background;
    ingresses: Ingress => metadata_events, background;
    resource_quotas: ResourceQuota => metadata_events, background;
    limit_ranges: LimitRange => metadata_events, background;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    #[test]
    fn cached_objects_keep_neither_managed_fields_nor_kubectls_copy() {
        let mut config_map = ConfigMap::default();
        config_map.metadata.owner_references = Some(vec![OwnerReference::default()]);
        config_map.metadata.managed_fields = Some(vec![Default::default()]);
        config_map.metadata.annotations = Some(
            [(LAST_APPLIED.to_owned(), "{}".to_owned()), ("neurallog.io/applied-hash".to_owned(), "1".to_owned())]
                .into(),
        );
        slim(&mut config_map);
        assert!(config_map.metadata.managed_fields.is_none());
        let annotations = config_map.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["neurallog.io/applied-hash"]);
        assert!(config_map.metadata.owner_references.is_some(), "what the reconciler reads stays");
    }

    #[test]
    fn marks_are_per_kind() {
        let mut marks = Marks::default();
        marks.mark::<Service>("acme-server");
        assert!(marks.contains::<Service>("acme-server"));
        assert!(!marks.contains::<Deployment>("acme-server"));
    }
}
