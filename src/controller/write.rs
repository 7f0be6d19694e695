//! Every write the controller sends goes through [`send`]: one span per write, named after it,
//! with `changed` recorded and an error that names the tenant and the object. Children are
//! server-side applied with one field manager, and the apply is skipped when the live object
//! already matches.
//!
//! "Matches" is decided without a request: the live object must carry the hash of the desired
//! object in an annotation, which catches every change of what the operator wants (including
//! removed fields), and must still hold every desired value, which catches hand edits and
//! deletions by others. A cached child has its verdict on that from its watch (the child caches
//! reach it from managed fields); a namespace, known by its metadata, is compared value by value
//! ([`covers`]), quantities by value because the API server rewrites `1024Mi` as `1Gi`.

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
pub fn stamped<K: Serialize>(desired: &K) -> serde_json::Result<Value> {
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

/// The hash a stamped object carries.
pub fn applied_hash(stamped: &Value) -> Option<&str> {
    stamped.pointer("/metadata/annotations")?.get(APPLIED_HASH_ANNOTATION)?.as_str()
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

/// What is known of the object an apply would write, if it exists.
#[derive(Debug, Clone, Copy)]
pub enum Live<'a> {
    /// A cached child: its resourceVersion, and the applied hash of the desired object it holds in
    /// full, if any.
    Judged { resource_version: Option<&'a str>, holds: Option<&'a str> },
    /// An object known by its metadata as JSON (see [`metadata_only`]), compared value by value.
    Metadata(&'a Value),
}

impl Live<'_> {
    fn resource_version(&self) -> Option<&str> {
        match self {
            Live::Judged { resource_version, .. } => *resource_version,
            Live::Metadata(live) => live.pointer("/metadata/resourceVersion").and_then(Value::as_str),
        }
    }

    fn matches(&self, body: &Value) -> bool {
        match self {
            Live::Judged { holds, .. } => holds.is_some() && *holds == applied_hash(body),
            Live::Metadata(live) => covers(live, body),
        }
    }
}

/// Server-side applies `desired` unless `live` already matches it.
pub async fn apply<K>(api: &Api<K>, tenant: &str, live: Option<Live<'_>>, desired: &K) -> Result<Applied<K>>
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
    if live.is_some_and(|live| live.matches(&body)) {
        // No request, so no span: a converged tenant's trace stays short.
        return Ok(Applied { object: None, change: Change::Unchanged });
    }
    let target = Target { tenant, verb: "apply", kind, name: &name };
    let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&body));
    let request = api.patch(&name, &params, &patch);
    // The API server keeps the resourceVersion when an apply changes nothing.
    let live_version = live.as_ref().and_then(Live::resource_version);
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

    #[test]
    fn a_judged_child_matches_only_the_desired_object_it_holds() {
        let desired = json!({"metadata": {"name": "a"}, "spec": {"replicas": 2}});
        let body = stamped(&desired).expect("stamps");
        let hash = applied_hash(&body).expect("a hash");
        let judged = |holds| Live::Judged { resource_version: Some("1"), holds };
        assert!(judged(Some(hash)).matches(&body));
        assert!(!judged(None).matches(&body), "no verdict: applied again");
        let changed = stamped(&json!({"metadata": {"name": "a"}, "spec": {"replicas": 3}})).expect("stamps");
        assert!(!judged(Some(hash)).matches(&changed));
    }

    #[test]
    fn a_namespace_known_by_its_metadata_matches_its_desired_metadata() {
        use crate::resources::namespace::namespace;
        use k8s_openapi::api::core::v1::Namespace;
        let model = crate::fixtures::TestTenant::new("acme").model().expect("a valid tenant");
        let desired = stamped(&namespace(&model, None)).expect("stamps");
        let stored: Namespace = serde_json::from_value(desired.clone()).expect("a namespace");
        let live = metadata_only::<Namespace>(&stored.metadata);
        assert!(Live::Metadata(&live).matches(&desired));
        let mut edited = stored.metadata.clone();
        edited.labels.get_or_insert_default().clear();
        assert!(!Live::Metadata(&metadata_only::<Namespace>(&edited)).matches(&desired));
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
