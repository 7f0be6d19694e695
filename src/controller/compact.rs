//! The form in which the watch caches hold a child: the whole object as the JSON text the API
//! server sent (managed fields left out), and typed only the few metadata fields the caches are
//! keyed and filtered by. A typed Kubernetes object takes several times the memory of its JSON (a
//! typed ObjectMeta alone takes about 2.8 KiB for the 0.8 KiB of JSON of a child's metadata, and
//! every optional field of a pod template has its room inline), and the reconciler reads a cached
//! object only to compare it with the desired one, as JSON.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use kube::Resource;
use kube::api::ObjectMeta;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::resources::TENANT_LABEL;

/// A cached object of kind `K`.
pub struct Compact<K> {
    /// Only what the caches are keyed and filtered by (name, namespace, deletion timestamp, the
    /// tenant label and the controller owner reference) and what the watch resumes from (the
    /// resourceVersion). The rest is in `text`.
    metadata: ObjectMeta,
    /// The object, without apiVersion, kind and managed fields.
    text: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self { metadata: self.metadata.clone(), text: self.text.clone(), kind: PhantomData }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&K::kind(&())).field("metadata", &self.metadata).field("text", &self.text).finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
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

impl<K: Resource<DynamicType = ()>> Compact<K> {
    /// The whole object as JSON, as the API server sent it (without managed fields).
    pub fn to_json(&self) -> Value {
        // The text was written by `Deserialize` below from parsed JSON, so it parses; were it not
        // to, an empty object compares unequal to anything desired and is simply re-applied.
        let mut object: Map<String, Value> = serde_json::from_str(&self.text).unwrap_or_default();
        object.insert("apiVersion".to_owned(), K::api_version(&()).into());
        object.insert("kind".to_owned(), K::kind(&()).into());
        Value::Object(object)
    }
}

/// The typed subset of `metadata` that [`Compact`] keeps.
fn keyed(metadata: &Map<String, Value>) -> Result<ObjectMeta, serde_json::Error> {
    let mut keyed = Map::new();
    for field in ["name", "namespace", "resourceVersion", "deletionTimestamp"] {
        if let Some(value) = metadata.get(field) {
            keyed.insert(field.to_owned(), value.clone());
        }
    }
    if let Some(tenant) = metadata.get("labels").and_then(|labels| labels.get(TENANT_LABEL)) {
        keyed.insert("labels".to_owned(), serde_json::json!({ TENANT_LABEL: tenant }));
    }
    if let Some(owners) = metadata.get("ownerReferences").and_then(Value::as_array) {
        let controller: Vec<&Value> = owners.iter().filter(|owner| owner["controller"] == true).collect();
        keyed.insert("ownerReferences".to_owned(), serde_json::json!(controller));
    }
    serde_json::from_value(Value::Object(keyed))
}

impl<'de, K> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CompactVisitor(PhantomData))
    }
}

struct CompactVisitor<K>(PhantomData<fn() -> K>);

impl<'de, K> Visitor<'de> for CompactVisitor<K> {
    type Value = Compact<K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                // Known from `K`.
                "apiVersion" | "kind" => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    let value = map.next_value::<Value>()?;
                    object.insert(key, value);
                }
            }
        }
        let Some(Value::Object(metadata)) = object.get_mut("metadata") else {
            return Err(de::Error::missing_field("metadata"));
        };
        metadata.remove("managedFields");
        let metadata = keyed(metadata).map_err(de::Error::custom)?;
        let text = serde_json::to_string(&object).map_err(de::Error::custom)?.into_boxed_str();
        Ok(Compact { metadata, text, kind: PhantomData })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "acme-server",
                "namespace": "tenant-acme",
                "resourceVersion": "42",
                "labels": {"app": "server", TENANT_LABEL: "acme"},
                "annotations": {"neurallog.io/applied-hash": "0123"},
                "ownerReferences": [
                    {"apiVersion": "neurallog.io/v1", "kind": "Tenant", "name": "acme", "uid": "1", "controller": true},
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "2"}
                ]
            },
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "server", "image": "x"}]}}},
            "status": {"readyReplicas": 1}
        })
    }

    #[test]
    fn keeps_the_object_as_sent_without_managed_fields_and_types_only_the_keys() {
        let mut sent = deployment();
        sent["metadata"]["managedFields"] = json!([{"manager": "someone", "operation": "Update"}]);
        let compact: Compact<Deployment> = serde_json::from_value(sent).expect("parses");
        assert_eq!(compact.to_json(), deployment());
        let meta = compact.meta();
        assert_eq!(meta.name.as_deref(), Some("acme-server"));
        assert_eq!(meta.namespace.as_deref(), Some("tenant-acme"));
        // The watch resumes from it: without it, every event would restart the watch.
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.labels, Some([(TENANT_LABEL.to_owned(), "acme".to_owned())].into()));
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        assert_eq!(owners.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["acme"]);
        assert!(meta.annotations.is_none() && meta.managed_fields.is_none());
    }

    #[test]
    fn parses_from_text_as_watch_events_and_lists_arrive() {
        let text = serde_json::to_string(&json!({"type": "ADDED", "object": deployment()})).expect("text");
        let event: kube::core::WatchEvent<Compact<Deployment>> = serde_json::from_str(&text).expect("parses");
        let kube::core::WatchEvent::Added(compact) = event else { panic!("an Added event") };
        assert_eq!(compact.to_json()["status"]["readyReplicas"], 1);
    }

    #[test]
    fn an_object_without_metadata_is_refused() {
        let refused = serde_json::from_value::<Compact<Deployment>>(json!({"spec": {}}));
        assert!(refused.expect_err("no metadata").to_string().contains("metadata"));
    }
}
