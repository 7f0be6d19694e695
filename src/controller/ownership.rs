//! Whether a child still holds what the operator applied, told from its managed fields instead of
//! its body: the caches then need no bodies.
//!
//! Server-side apply records, per field manager, the set of fields it owns (`fieldsV1`). Whoever
//! changes or removes a field the operator applied takes it out of the operator's set: another
//! writer's change moves the field to that writer, a removal drops it for everyone. So the object
//! still holds every desired value exactly when the operator's own set still has every field of
//! the desired object. Fields others add beside the operator's do not count: an apply would not
//! remove them either.
//!
//! The set mirrors the object: `f:<name>` for a field, `k:<json of the key fields>` for an item of
//! a keyed list, `v:<json>` for an item of a set, `i:<index>` for an item of a positional list,
//! and `{}` for a leaf or for something owned whole (an atomic list or struct). That last reading
//! holds for an apply's set only, where a map with fields is never a member by itself; the
//! `Update` set of a create lists the maps it created too, so there a map whose fields another
//! writer took also reads `{}`. Hence children are applied, never created with a POST.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde_json::{Map, Value};

use super::write::FIELD_MANAGER;

/// The operator's own applied field set, if it has one.
pub fn applied_fields(managed: &[ManagedFieldsEntry]) -> Option<&Value> {
    managed
        .iter()
        .find(|entry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.operation.as_deref() == Some("Apply")
                && entry.subresource.as_deref().is_none_or(str::is_empty)
                && entry.fields_type.as_deref() == Some("FieldsV1")
        })
        .and_then(|entry| entry.fields_v1.as_ref())
        .map(|fields| &fields.0)
}

/// Whether `owned` (an applied field set) has every field of `desired` (the object as the
/// operator applies it). Identity and type (`apiVersion`, `kind`, `metadata.name`,
/// `metadata.namespace`) are not fields. An empty map is a field like any other (`{}` selects
/// every pod); an empty list need not be owned, as an apply of one may record nothing.
pub fn holds_all(desired: &Value, owned: &Value) -> bool {
    let Value::Object(desired) = desired else { return false };
    desired.iter().all(|(key, value)| match key.as_str() {
        "apiVersion" | "kind" => true,
        "metadata" => {
            let Value::Object(metadata) = value else { return holds_field(owned, key, value) };
            let fields: Map<String, Value> = metadata
                .iter()
                .filter(|(field, _)| !matches!(field.as_str(), "name" | "namespace"))
                .map(|(field, value)| (field.clone(), value.clone()))
                .collect();
            holds_field(owned, key, &Value::Object(fields))
        }
        _ => holds_field(owned, key, value),
    })
}

/// Whether `owned` (the set of the object holding the field) has field `key` with all of `value`.
fn holds_field(owned: &Value, key: &str, value: &Value) -> bool {
    if is_empty(value) {
        return true;
    }
    owned.get(format!("f:{key}")).is_some_and(|field| holds(value, field))
}

/// Whether the set `owned` of one value has all of `desired`.
fn holds(desired: &Value, owned: &Value) -> bool {
    if owned.as_object().is_some_and(Map::is_empty) {
        // A leaf, or owned whole.
        return true;
    }
    match desired {
        Value::Object(fields) => fields.iter().all(|(key, value)| holds_field(owned, key, value)),
        Value::Array(items) => items.iter().enumerate().all(|(index, item)| {
            if is_empty(item) {
                return true;
            }
            item_set(owned, index, item).is_some_and(|set| holds(item, set))
        }),
        // A scalar with a non-empty set: never recorded so; a set says nothing against it.
        _ => true,
    }
}

/// The set of list item `item` (at `index`) in the set of its list.
fn item_set<'a>(list: &'a Value, index: usize, item: &Value) -> Option<&'a Value> {
    let items = list.as_object()?;
    if let Some(set) = items.get(&format!("v:{item}")) {
        return Some(set);
    }
    if let Some(set) = items.get(&format!("i:{index}")) {
        return Some(set);
    }
    items.iter().find(|(name, _)| keyed_by(name, item)).map(|(_, set)| set)
}

/// Whether `name` is `k:{...}` with key fields that `item` has, or leaves to the server's
/// default (a port's protocol).
fn keyed_by(name: &str, item: &Value) -> bool {
    let Some(key) = name.strip_prefix("k:") else { return false };
    let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else { return false };
    key.iter().all(|(field, value)| item.get(field).is_none_or(|own| own == value))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    use super::*;

    /// A Deployment as the operator applies it.
    fn desired() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "acme-server",
                "namespace": "tenant-acme",
                "labels": {"app": "server"},
                "annotations": {"neurallog.io/applied-hash": "0123"},
                "ownerReferences": [{"apiVersion": "neurallog.io/v2", "kind": "Tenant", "name": "acme", "uid": "u1", "controller": true}]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "server"}},
                "template": {"spec": {
                    "containers": [{
                        "name": "server",
                        "image": "neurallog/server:1",
                        "args": ["--port", "3030"],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 3030, "name": "http"}],
                        "resources": {"limits": {"memory": "1Gi"}}
                    }],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "securityContext": {}
                }}
            }
        })
    }

    /// The operator's field set after applying [`desired`], as the API server records it.
    fn applied() -> Value {
        json!({
            "f:metadata": {
                "f:annotations": {"f:neurallog.io/applied-hash": {}},
                "f:labels": {"f:app": {}},
                "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}
            },
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {"f:spec": {
                    "f:containers": {"k:{\"name\":\"server\"}": {
                        ".": {},
                        "f:args": {},
                        "f:env": {
                            "k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}},
                            "k:{\"name\":\"B\"}": {".": {}, "f:name": {}, "f:value": {}}
                        },
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":3030,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}, "f:name": {}
                        }},
                        "f:resources": {"f:limits": {"f:memory": {}}}
                    }},
                    "f:securityContext": {},
                    "f:volumes": {"k:{\"name\":\"data\"}": {".": {}, "f:emptyDir": {}, "f:name": {}}}
                }}
            }
        })
    }

    /// `set` without the field at `path`, as the API server would record it: a field none of
    /// whose fields are left is gone too.
    fn without(mut set: Value, path: &[&str]) -> Value {
        fn remove(node: &mut Value, path: &[&str]) {
            let Some((first, rest)) = path.split_first() else { return };
            let fields = node.as_object_mut().expect("a set");
            if rest.is_empty() {
                fields.remove(*first).expect("the field exists");
                return;
            }
            let child = fields.get_mut(*first).expect("the path exists");
            remove(child, rest);
            if child.as_object().is_some_and(Map::is_empty) {
                fields.remove(*first);
            }
        }
        remove(&mut set, path);
        set
    }

    #[test]
    fn an_untouched_object_holds_everything_applied() {
        assert!(holds_all(&desired(), &applied()));
    }

    #[test]
    fn a_field_changed_or_removed_by_someone_else_is_missed() {
        let spec = ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"server\"}"];
        for path in [
            vec!["f:spec", "f:replicas"],
            vec!["f:metadata", "f:labels", "f:app"],
            vec!["f:metadata", "f:annotations", "f:neurallog.io/applied-hash"],
            vec!["f:metadata", "f:ownerReferences", "k:{\"uid\":\"u1\"}"],
            [&spec[..], &["f:image"]].concat(),
            [&spec[..], &["f:args"]].concat(),
            [&spec[..], &["f:env", "k:{\"name\":\"B\"}"]].concat(),
            [&spec[..], &["f:env", "k:{\"name\":\"A\"}", "f:value"]].concat(),
            [&spec[..], &["f:resources", "f:limits", "f:memory"]].concat(),
            vec!["f:spec", "f:template", "f:spec", "f:volumes", "k:{\"name\":\"data\"}"],
        ] {
            assert!(!holds_all(&desired(), &without(applied(), &path)), "{path:?}");
        }
    }

    #[test]
    fn a_new_desired_value_is_not_held_until_applied() {
        let mut more = desired();
        let env = more["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().expect("env");
        env.push(json!({"name": "C", "value": "3"}));
        assert!(!holds_all(&more, &applied()));
        let mut other_owner = desired();
        other_owner["metadata"]["ownerReferences"][0]["uid"] = json!("u2");
        assert!(!holds_all(&other_owner, &applied()));
    }

    #[test]
    fn empty_maps_are_fields_and_empty_lists_need_no_ownership() {
        let volume = ["f:spec", "f:template", "f:spec", "f:volumes", "k:{\"name\":\"data\"}", "f:emptyDir"];
        assert!(!holds_all(&desired(), &without(applied(), &volume)), "emptyDir: {{}} is a field");
        let mut no_args = desired();
        no_args["spec"]["template"]["spec"]["containers"][0]["args"] = json!([]);
        let args = ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"server\"}", "f:args"];
        assert!(holds_all(&no_args, &without(applied(), &args)));
    }

    #[test]
    fn a_key_field_left_to_the_server_default_matches_and_another_value_does_not() {
        // The port's key has the defaulted protocol the desired port leaves out.
        let mut udp = desired();
        udp["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("UDP");
        assert!(!holds_all(&udp, &applied()));
    }

    #[test]
    fn sets_and_positional_items_are_found() {
        let desired = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"list": [{"x": 1}]}});
        let owned = json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}},
                           "f:spec": {"f:list": {"i:0": {"f:x": {}}}}});
        assert!(holds_all(&desired, &owned));
        assert!(!holds_all(&desired, &without(owned, &["f:metadata", "f:finalizers", "v:\"b\""])));
    }

    #[test]
    fn only_the_operators_apply_of_the_object_itself_counts() {
        let entry = |manager: &str, operation: &str, subresource: Option<&str>| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: subresource.map(Into::into),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(json!({ format!("f:{manager}-{operation}"): {} }))),
            ..Default::default()
        };
        let others = [
            entry("kubectl-edit", "Update", None),
            entry(FIELD_MANAGER, "Update", None),
            entry(FIELD_MANAGER, "Apply", Some("status")),
        ];
        assert_eq!(applied_fields(&others), None);
        let with_own = [&others[..], &[entry(FIELD_MANAGER, "Apply", None)]].concat();
        assert_eq!(applied_fields(&with_own), Some(&json!({ format!("f:{FIELD_MANAGER}-Apply"): {} })));
    }
}
