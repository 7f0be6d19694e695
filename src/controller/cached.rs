//! What the child caches hold of a child: the few metadata fields they are keyed and filtered by,
//! the verdict on whether it still holds what the operator applied, and for a workload its ready
//! pods. No body, no managed fields: the verdict is reached once, when the watch delivers the
//! object (see [`Judge`]), and only the verdict is kept.
//!
//! Most kinds are watched metadata only (the API server sends no bodies); Deployments and
//! StatefulSets are watched whole, because their status says how many pods are ready, and
//! [`Workload`] reads nothing of them but that.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::rbac::v1::Subject;
use kube::Resource;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use serde::Deserialize;
use serde_json::Value;

use super::kinds::{Child, WorkloadStatus, controlling_tenant};
use super::ownership;
use super::write::{self, APPLIED_HASH_ANNOTATION};
use crate::api::Tenant;
use crate::resources::{Platform, TENANT_LABEL};

/// `Resource` of a stand-in type for kind `K`: same kind, group, version, plural and scope.
macro_rules! resource_of_kind {
    ($name:ident) => {
        impl<K: Resource<DynamicType = ()>> Resource for $name<K> {
            type DynamicType = ();
            type Scope = K::Scope;

            fn kind(dt: &()) -> Cow<'_, str> {
                K::kind(dt)
            }

            fn group(dt: &()) -> Cow<'_, str> {
                K::group(dt)
            }

            fn version(dt: &()) -> Cow<'_, str> {
                K::version(dt)
            }

            fn plural(dt: &()) -> Cow<'_, str> {
                K::plural(dt)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A cached child of kind `K`.
pub struct Cached<K> {
    /// Name, namespace, deletion timestamp, the tenant label and the controller owner reference
    /// (what the caches are keyed and filtered by), and the resourceVersion (what the watch
    /// resumes from and an apply's answer is compared with).
    metadata: ObjectMeta,
    /// The applied hash of the desired object this child holds in full, if it does.
    holds: Option<Box<str>>,
    ready_replicas: Option<i32>,
    /// Whether a workload runs its current template on every pod, Ready.
    settled: bool,
    kind: PhantomData<fn() -> K>,
}

resource_of_kind!(Cached);

impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            holds: self.holds.clone(),
            ready_replicas: self.ready_replicas,
            settled: self.settled,
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Cached<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&K::kind(&()))
            .field("metadata", &self.metadata)
            .field("holds", &self.holds)
            .field("ready_replicas", &self.ready_replicas)
            .field("settled", &self.settled)
            .finish()
    }
}

impl<K> Cached<K> {
    fn new(metadata: &ObjectMeta, holds: Option<Box<str>>, ready_replicas: Option<i32>, settled: bool) -> Self {
        let tenant = metadata.labels.as_ref().and_then(|labels| labels.get(TENANT_LABEL));
        let controller = metadata.owner_references.iter().flatten().filter(|owner| owner.controller == Some(true));
        let keys = ObjectMeta {
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            resource_version: metadata.resource_version.clone(),
            deletion_timestamp: metadata.deletion_timestamp.clone(),
            labels: tenant.map(|tenant| [(TENANT_LABEL.to_owned(), tenant.clone())].into()),
            owner_references: Some(controller.cloned().collect()).filter(|owners: &Vec<_>| !owners.is_empty()),
            ..ObjectMeta::default()
        };
        Self { metadata: keys, holds, ready_replicas, settled, kind: PhantomData }
    }

    /// A child cached without a verdict.
    pub fn unjudged(observed: &impl Observed<K>) -> Self {
        Self::new(observed.metadata(), None, observed.ready_replicas(), observed.settled())
    }

    /// The applied hash of the desired object this child holds in full, if it does.
    pub fn held_hash(&self) -> Option<&str> {
        self.holds.as_deref()
    }

    /// Ready pods, of a workload whose status says.
    pub fn ready_replicas(&self) -> Option<i32> {
        self.ready_replicas
    }

    /// Whether a workload runs its current template on every pod, Ready.
    pub fn settled(&self) -> bool {
        self.settled
    }
}

/// A workload as its watch delivers it: metadata, and of the rest only what says whether its
/// pods are ready and run its current template.
#[derive(Deserialize)]
#[serde(bound = "")]
pub struct Workload<K> {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: WorkloadSpec,
    #[serde(default)]
    status: WorkloadStatus,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
struct WorkloadSpec {
    replicas: Option<i32>,
}

resource_of_kind!(Workload);

impl<K> Clone for Workload<K> {
    fn clone(&self) -> Self {
        Self { metadata: self.metadata.clone(), spec: self.spec, status: self.status.clone(), kind: PhantomData }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Workload<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&K::kind(&())).field("metadata", &self.metadata).field("status", &self.status).finish()
    }
}

/// An object as a child watch delivers it, before it is judged and cached.
pub trait Observed<K> {
    fn metadata(&self) -> &ObjectMeta;
    fn ready_replicas(&self) -> Option<i32>;
    /// Whether a workload runs its current template on every pod, Ready; true for the rest.
    fn settled(&self) -> bool;
}

impl<K> Observed<K> for PartialObjectMeta<K> {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn ready_replicas(&self) -> Option<i32> {
        None
    }

    fn settled(&self) -> bool {
        true
    }
}

impl<K> Observed<K> for Workload<K> {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn ready_replicas(&self) -> Option<i32> {
        self.status.ready_replicas
    }

    fn settled(&self) -> bool {
        self.status.settled(self.metadata.generation, self.spec.replicas)
    }
}

/// Reaches the verdict on each child a watch delivers: it holds the desired object in full when
/// it carries that object's applied hash and the operator still owns every field of it (see
/// [`ownership`]). The desired object is built from the tenant in the tenant cache, as the
/// reconcile builds it. No verdict (a tenant not cached, or changed since the apply) only means
/// the next reconcile applies the child again.
#[derive(Clone)]
pub struct Judge {
    pub tenants: Store<Tenant>,
    pub platform: Platform,
    pub operator: Subject,
}

impl Judge {
    pub fn cache<K: Child>(&self, observed: &impl Observed<K>) -> Cached<K> {
        let metadata = observed.metadata();
        let owned = metadata.managed_fields.as_deref().and_then(ownership::applied_fields);
        let holds = owned.and_then(|owned| self.held_hash::<K>(metadata, owned));
        Cached::new(metadata, holds.map(Into::into), observed.ready_replicas(), observed.settled())
    }

    fn held_hash<K: Child>(&self, metadata: &ObjectMeta, owned: &Value) -> Option<String> {
        let hash = metadata.annotations.as_ref()?.get(APPLIED_HASH_ANNOTATION)?;
        let tenant = self.tenants.get(&controlling_tenant(metadata)?)?;
        let model = tenant.model().ok()?;
        if metadata.namespace.as_deref() != Some(model.namespace.as_str()) {
            return None;
        }
        let desired = K::desired(&model, &self.platform, &self.operator)
            .into_iter()
            .find(|desired| desired.meta().name == metadata.name)?;
        let body = write::stamped(&desired).ok()?;
        let held = write::applied_hash(&body) == Some(hash.as_str()) && ownership::holds_all(&body, owned);
        held.then(|| hash.clone())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_only_the_keys_of_the_metadata() {
        let metadata: ObjectMeta = serde_json::from_value(json!({
            "name": "acme-server",
            "namespace": "tenant-acme",
            "resourceVersion": "42",
            "labels": {"app": "server", TENANT_LABEL: "acme"},
            "annotations": {"neurallog.io/applied-hash": "0123"},
            "managedFields": [{"manager": "someone", "operation": "Update"}],
            "ownerReferences": [
                {"apiVersion": "neurallog.io/v1", "kind": "Tenant", "name": "acme", "uid": "1", "controller": true},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "2"}
            ]
        }))
        .expect("metadata");
        let cached = Cached::<Deployment>::new(&metadata, Some("0123".into()), Some(1), true);
        let meta = cached.meta();
        assert_eq!(meta.name.as_deref(), Some("acme-server"));
        assert_eq!(meta.namespace.as_deref(), Some("tenant-acme"));
        // The watch resumes from it: without it, every event would restart the watch.
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.labels, Some([(TENANT_LABEL.to_owned(), "acme".to_owned())].into()));
        let owners: Vec<&OwnerReference> = meta.owner_references.iter().flatten().collect();
        assert_eq!(owners.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["acme"]);
        assert!(meta.annotations.is_none() && meta.managed_fields.is_none());
        assert_eq!(cached.held_hash(), Some("0123"));
        assert_eq!(cached.ready_replicas(), Some(1));
    }

    #[test]
    fn a_workload_is_read_for_its_metadata_and_ready_pods_only() {
        let event = json!({"type": "ADDED", "object": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "acme-server", "namespace": "tenant-acme"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "server"}]}}},
            "status": {"readyReplicas": 1, "replicas": 2}
        }});
        let text = serde_json::to_string(&event).expect("text");
        let event: kube::core::WatchEvent<Workload<Deployment>> = serde_json::from_str(&text).expect("parses");
        let kube::core::WatchEvent::Added(workload) = event else { panic!("an Added event") };
        assert_eq!(Observed::ready_replicas(&workload), Some(1));
        assert_eq!(workload.metadata.name.as_deref(), Some("acme-server"));
        let no_status: Workload<Deployment> =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("parses without status");
        assert_eq!(Observed::ready_replicas(&no_status), None);
    }

    #[test]
    fn a_workload_is_settled_once_every_pod_runs_its_current_template_ready() {
        let status = |observed: i64, replicas: i32, ready: i32, updated: i32| WorkloadStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            ..WorkloadStatus::default()
        };
        assert!(status(2, 2, 2, 2).settled(Some(2), Some(2)));
        assert!(!status(1, 2, 2, 2).settled(Some(2), Some(2)), "the new generation not observed yet");
        assert!(!status(2, 3, 3, 2).settled(Some(2), Some(2)), "an old pod left (surge)");
        assert!(!status(2, 2, 1, 2).settled(Some(2), Some(2)), "a new pod not Ready");
        assert!(!status(2, 2, 2, 1).settled(Some(2), Some(2)), "an old pod still running");
        assert!(!WorkloadStatus::default().settled(Some(1), Some(1)), "no status yet");
        let revisions = |current: &str| WorkloadStatus {
            current_revision: Some(current.into()),
            update_revision: Some("r2".into()),
            ..status(2, 1, 1, 1)
        };
        assert!(revisions("r2").settled(Some(2), Some(1)));
        assert!(!revisions("r1").settled(Some(2), Some(1)), "a StatefulSet still rolling");
    }

    /// The managed fields of `object` as an apply of it records them, for a ConfigMap (maps only).
    fn applied_config_map(object: &Value) -> Value {
        fn set(value: &Value) -> Value {
            match value {
                Value::Object(fields) => fields.iter().map(|(key, value)| (format!("f:{key}"), set(value))).collect(),
                _ => json!({}),
            }
        }
        let mut fields = set(object);
        let fields = fields.as_object_mut().expect("an object");
        fields.remove("f:apiVersion");
        fields.remove("f:kind");
        let metadata = fields.get_mut("f:metadata").and_then(Value::as_object_mut).expect("metadata");
        metadata.remove("f:name");
        metadata.remove("f:namespace");
        let owner = &object["metadata"]["ownerReferences"][0]["uid"];
        metadata.insert("f:ownerReferences".into(), json!({ format!("k:{{\"uid\":{owner}}}"): {} }));
        json!([{"manager": write::FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields}])
    }

    #[test]
    fn a_child_is_judged_against_the_desired_object_of_its_cached_tenant() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::reflector;
        use kube::runtime::watcher::Event;

        let tenant = crate::fixtures::TestTenant::new("acme").tenant();
        let (tenants, mut writer) = reflector::store();
        let operator = Subject { kind: "User".into(), name: "operator".into(), ..Subject::default() };
        let judge = Judge { tenants, platform: Platform::default(), operator };
        let model = tenant.model().expect("a valid tenant");
        let desired = write::stamped(&crate::resources::redis::config_map(&model)).expect("stamps");
        let observed = |body: &Value| {
            let mut metadata = body["metadata"].clone();
            metadata["managedFields"] = applied_config_map(body);
            PartialObjectMeta::<ConfigMap> {
                metadata: serde_json::from_value(metadata).expect("metadata"),
                ..Default::default()
            }
        };
        let hash = write::applied_hash(&desired).expect("a hash").to_owned();

        assert_eq!(judge.cache(&observed(&desired)).held_hash(), None, "no verdict without its tenant");
        writer.apply_watcher_event(&Event::Apply(tenant));
        assert_eq!(judge.cache(&observed(&desired)).held_hash(), Some(hash.as_str()));

        let mut older = desired.clone();
        older["metadata"]["annotations"]["neurallog.io/applied-hash"] = json!("an older hash");
        assert_eq!(judge.cache(&observed(&older)).held_hash(), None, "applied before a change");
        let mut elsewhere = desired.clone();
        elsewhere["metadata"]["namespace"] = json!("somewhere-else");
        assert_eq!(judge.cache(&observed(&elsewhere)).held_hash(), None);
        let mut edited = observed(&desired);
        let fields = edited.metadata.managed_fields.as_mut().and_then(|m| m.first_mut()).expect("an entry");
        let set = &mut fields.fields_v1.as_mut().expect("fields").0;
        set.as_object_mut().expect("a set").remove("f:data");
        assert_eq!(judge.cache(&edited).held_hash(), None, "its data taken by someone else");
    }
}
