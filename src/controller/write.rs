//! Every write the controller sends goes through [`send`]: one span per write, named after it,
//! with `changed` recorded and an error that names the tenant and the object. Children are
//! server-side applied with one field manager, and the apply is skipped when the live object
//! already matches.
//!
//! "Matches" is decided without a request: the live object (from the watch cache) must carry the
//! hash of the desired object in an annotation, which catches every change of what the operator
//! wants (including removed fields), and must still contain every desired value, which catches
//! hand edits and deletions by others. Quantities compare by value, because the API server
//! rewrites `1024Mi` as `1Gi`.

use std::fmt::Debug;
use std::future::Future;

use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::error::{Error, Result};
use crate::quantity::same_quantity;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "neurallog-tenant-operator";
/// Annotation holding the hash of the desired object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "neurallog.io/applied-hash";

/// What a write did to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// What [`apply`] did: the object the API server answered with, unless nothing was sent.
pub struct Applied<K> {
    pub object: Option<K>,
    pub change: Change,
}

/// Serialises `desired` and stamps it with the hash of its own content.
fn stamped<K: Serialize>(desired: &K) -> serde_json::Result<Value> {
    let mut value = serde_json::to_value(desired)?;
    // serde_json's map is ordered by key, so the text (and the hash) is deterministic.
    let digest = Sha256::digest(serde_json::to_vec(&value)?);
    let hash: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(APPLIED_HASH_ANNOTATION.to_owned(), Value::String(hash));
        }
    }
    Ok(value)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Whether `live` contains every value of `desired` (extra live fields are server defaults or
/// other managers' fields and do not matter).
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(key, dv)| match l.get(key) {
            Some(lv) => covers(lv, dv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| covers(lv, dv)),
        (Value::String(d), Value::String(l)) => d == l || same_quantity(d, l),
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

/// What a write is about, for its span and its error.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub tenant: &'a str,
    pub verb: &'static str,
    pub kind: &'static str,
    pub name: &'a str,
}

/// Sends one write inside its own span; `changed` tells from the answer whether anything
/// changed.
pub async fn send<T>(
    target: Target<'_>,
    request: impl Future<Output = kube::Result<T>>,
    changed: impl FnOnce(&T) -> bool,
) -> Result<T> {
    let Target { tenant, verb, kind, name } = target;
    let span = tracing::info_span!(
        "write",
        otel.name = format!("{verb} {kind} {name}"),
        verb,
        kind,
        name = %name,
        changed = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty
    );
    match request.instrument(span.clone()).await {
        Ok(done) => {
            span.record("changed", changed(&done));
            Ok(done)
        }
        Err(source) => {
            let error = Error::Api { tenant: tenant.to_owned(), verb, kind, name: name.to_owned(), source };
            span.record("otel.status_code", "ERROR").record("otel.status_message", error.to_string());
            Err(error)
        }
    }
}

/// [`send`], where an API answer with a code in `tolerated` (404 for something already gone, 409
/// for something that exists or changed meanwhile) is `None` and counts as unchanged.
pub async fn send_tolerating<T>(
    target: Target<'_>,
    tolerated: &[u16],
    request: impl Future<Output = kube::Result<T>>,
    changed: impl FnOnce(&T) -> bool,
) -> Result<Option<T>> {
    let request = async {
        match request.await {
            Ok(done) => Ok(Some(done)),
            Err(kube::Error::Api(status)) if tolerated.contains(&status.code) => Ok(None),
            Err(error) => Err(error),
        }
    };
    send(target, request, |done| done.as_ref().is_some_and(changed)).await
}

/// Server-side applies `desired` unless `live` (the object as last seen, as JSON) already matches
/// it.
pub async fn apply<K>(api: &Api<K>, tenant: &str, live: Option<&Value>, desired: &K) -> Result<Applied<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let kind = short_kind::<K>();
    let name = desired.name_any();
    let body = stamped(desired).map_err(|source| Error::Serialize {
        tenant: tenant.to_owned(),
        kind,
        name: name.clone(),
        source,
    })?;
    if live.is_some_and(|live| covers(live, &body)) {
        // No request, so no span: a converged tenant's trace stays short.
        return Ok(Applied { object: None, change: Change::Unchanged });
    }
    let target = Target { tenant, verb: "apply", kind, name: &name };
    let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&body));
    let request = api.patch(&name, &params, &patch);
    // The API server keeps the resourceVersion when an apply changes nothing.
    let live_version = live.and_then(|live| live.pointer("/metadata/resourceVersion")).and_then(Value::as_str);
    let change = |object: &K| match live {
        None => Change::Created,
        Some(_) if live_version != object.meta().resource_version.as_deref() => Change::Updated,
        Some(_) => Change::Unchanged,
    };
    let object = send(target, request, |object| change(object) != Change::Unchanged).await?;
    Ok(Applied { change: change(&object), object: Some(object) })
}

/// The JSON [`apply`] compares with, of an object of kind `K` known by its metadata only.
pub fn metadata_only<K: Resource<DynamicType = ()>>(metadata: &ObjectMeta) -> Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": serde_json::to_value(metadata).unwrap_or(Value::Null),
    })
}

/// Creates `desired` (stamped like [`apply`] would) unless an object of that name exists, in which
/// case `None` is returned and nothing is changed. Used where adopting an existing object would be
/// wrong: the namespace, and the Secret whose password must never be regenerated.
pub async fn create<K>(api: &Api<K>, tenant: &str, desired: &K) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let kind = short_kind::<K>();
    let name = desired.name_any();
    let body = stamped(desired).and_then(serde_json::from_value::<K>).map_err(|source| Error::Serialize {
        tenant: tenant.to_owned(),
        kind,
        name: name.clone(),
        source,
    })?;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
    let target = Target { tenant, verb: "create", kind, name: &name };
    send_tolerating(target, &[409], api.create(&params, &body), |_| true).await
}

/// The kind of `K` as a static string, for messages and span fields.
pub fn short_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    // Resource::kind returns a Cow that is borrowed for every compiled-in type.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::super::compact::Compact;
    use super::*;
    use serde_json::json;

    #[test]
    fn live_objects_with_server_defaults_cover_the_desired_object() {
        let desired = json!({"spec": {"ports": [{"port": 3030, "name": "http"}], "selector": {"app": "x"}}});
        let live = json!({"spec": {"ports": [{"port": 3030, "name": "http", "protocol": "TCP"}],
                                   "selector": {"app": "x"}, "clusterIP": "10.0.0.1"}});
        assert!(covers(&live, &desired));
    }

    #[test]
    fn hand_edits_and_removed_items_are_detected() {
        let desired = json!({"spec": {"replicas": 2, "env": [{"name": "A"}, {"name": "B"}]}});
        assert!(!covers(&json!({"spec": {"replicas": 5, "env": [{"name": "A"}, {"name": "B"}]}}), &desired));
        assert!(!covers(&json!({"spec": {"replicas": 2, "env": [{"name": "A"}]}}), &desired));
        assert!(!covers(&json!({"spec": {}}), &desired));
    }

    #[test]
    fn quantities_compare_by_value_and_empty_values_match_absent_ones() {
        let desired = json!({"limits": {"memory": "1024Mi", "cpu": "1.5"}, "emptyDir": {}, "list": []});
        let live = json!({"limits": {"memory": "1Gi", "cpu": "1500m"}, "emptyDir": {}});
        assert!(covers(&live, &desired));
        assert!(!covers(&json!({"limits": {"memory": "1G", "cpu": "1500m"}}), &desired));
    }

    /// `desired` as the API server would store it (stamped) and the watch cache keep it.
    fn cached<K: Resource<DynamicType = ()> + Serialize>(desired: &K) -> Value {
        let stored = serde_json::to_string(&stamped(desired).expect("stamps")).expect("text");
        serde_json::from_str::<Compact<K>>(&stored).expect("caches").to_json()
    }

    #[test]
    fn every_child_once_applied_and_cached_counts_as_converged() {
        use crate::resources::{Platform, network, redis, registry, server};
        let model = crate::fixtures::TestTenant::new("acme")
            .set("registry.baseDomain", json!("example.org"))
            .cpu_budget(Some("1"), Some("4"))
            .model()
            .expect("a valid tenant");
        let platform = Platform::default();
        fn converged<K: Resource<DynamicType = ()> + Serialize>(desired: &K) {
            let body = stamped(desired).expect("stamps");
            assert!(covers(&cached(desired), &body), "{}", K::kind(&()));
        }
        network::network_policies(&model, &platform).iter().for_each(converged);
        converged(&crate::resources::quota::resource_quota(&model).expect("a quota"));
        converged(&crate::resources::quota::limit_range(&model).expect("limits"));
        converged(&redis::config_map(&model));
        converged(&redis::service(&model));
        converged(&redis::stateful_set(&model));
        converged(&server::service(&model));
        converged(&server::deployment(&model, &platform));
        converged(&registry::service(&model));
        converged(&registry::deployment(&model, &platform));
        converged(&registry::ingress(&model, &platform).expect("an ingress"));
        let namespace = crate::resources::namespace::namespace(&model, None);
        let stored: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(stamped(&namespace).expect("stamps")).expect("a namespace");
        assert!(covers(
            &metadata_only::<k8s_openapi::api::core::v1::Namespace>(&stored.metadata),
            &stamped(&namespace).expect("stamps")
        ));
    }

    #[test]
    fn the_hash_changes_with_the_content_and_detects_removed_fields() {
        let with_optional = json!({"metadata": {"name": "a"}, "spec": {"optional": true}});
        let without = json!({"metadata": {"name": "a"}, "spec": {}});
        let (a, b) = (stamped(&with_optional).unwrap(), stamped(&without).unwrap());
        assert_ne!(a["metadata"]["annotations"], b["metadata"]["annotations"]);
        // The live object still has the removed field, but not the new hash: it must be applied.
        assert!(!covers(&a, &b));
        assert_eq!(stamped(&without).unwrap(), b);
    }
}
