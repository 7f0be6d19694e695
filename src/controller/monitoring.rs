//! The ServiceMonitor and the PrometheusRule of [`crate::monitoring`], put in place by the leader
//! when it starts leading, in the operator's namespace, when the Prometheus Operator's CRDs exist
//! (discovery: no right on CRDs is needed). Each is applied only when it differs from what this
//! release wants, and is owned by the metrics Service, so that removing the operator removes them.

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::write::FIELD_MANAGER;
use crate::monitoring::{self, alerts};

const GROUP: &str = "monitoring.coreos.com";
const VERSION: &str = "v1";
/// The operator's metrics Service (config/manager/metrics_service.yaml), the owner of both.
pub const METRICS_SERVICE: &str = "neurallog-tenant-operator-metrics";

/// Puts both in place, or says why not; never fails the operator.
pub async fn ensure(client: &Client, namespace: &str) {
    match ensure_objects(client, namespace).await {
        Ok(applied) if applied.is_empty() => tracing::debug!(namespace, "monitoring objects in place"),
        Ok(applied) => tracing::info!(namespace, ?applied, "monitoring objects applied"),
        Err(error) => tracing::warn!(namespace, %error, "cannot put the ServiceMonitor and PrometheusRule in place"),
    }
}

/// The kinds applied (none when all were in place or the CRDs are absent).
async fn ensure_objects(client: &Client, namespace: &str) -> Result<Vec<&'static str>, kube::Error> {
    let served = match client.list_api_group_resources(&format!("{GROUP}/{VERSION}")).await {
        Ok(list) => list.resources,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!("no Prometheus Operator CRDs ({GROUP}): no ServiceMonitor or PrometheusRule");
            return Ok(Vec::new());
        }
        Err(error) => return Err(error),
    };
    let services = Api::<Service>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("metadata.name={METRICS_SERVICE}")))
        .await?;
    let owner = services.items.first().and_then(|service| {
        Some(json!([{
            "apiVersion": "v1",
            "kind": "Service",
            "name": METRICS_SERVICE,
            "uid": service.metadata.uid.clone()?,
        }]))
    });
    let wanted = [
        ("ServiceMonitor", "servicemonitors", monitoring::service_monitor(namespace)),
        ("PrometheusRule", "prometheusrules", alerts::prometheus_rule(namespace)),
    ];
    let mut applied = Vec::new();
    for (kind, plural, mut desired) in wanted {
        if !served.iter().any(|resource| resource.kind == kind) {
            continue;
        }
        if let Some(owner) = &owner {
            desired["metadata"]["ownerReferences"] = owner.clone();
        }
        let resource = ApiResource {
            group: GROUP.into(),
            version: VERSION.into(),
            api_version: format!("{GROUP}/{VERSION}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
        let current = api.get_opt(monitoring::NAME).await?;
        if current.is_some_and(|current| in_place(&current, &desired)) {
            continue;
        }
        api.patch(monitoring::NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
        applied.push(kind);
    }
    Ok(applied)
}

/// Whether `current` has the spec, the labels and the owners of `desired`.
fn in_place(current: &DynamicObject, desired: &Value) -> bool {
    let labels_there = desired["metadata"]["labels"].as_object().is_none_or(|labels| {
        let current_labels = current.metadata.labels.clone().unwrap_or_default();
        labels.iter().all(|(key, value)| current_labels.get(key).map(String::as_str) == value.as_str())
    });
    let owners =
        serde_json::to_value(current.metadata.owner_references.clone().unwrap_or_default()).unwrap_or_default();
    let owners_there = desired["metadata"]["ownerReferences"].as_array().is_none_or(|wanted| {
        wanted.iter().all(|owner| owners.as_array().is_some_and(|have| have.iter().any(|o| o["uid"] == owner["uid"])))
    });
    current.data["spec"] == desired["spec"] && labels_there && owners_there
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_object_is_in_place_only_with_its_spec_labels_and_owner() {
        let mut desired = monitoring::service_monitor("ops");
        desired["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Service", "name": "m", "uid": "u1"}]);
        assert!(in_place(&object(desired.clone()), &desired));
        let mut other_spec = desired.clone();
        other_spec["spec"]["endpoints"][0]["interval"] = json!("5s");
        assert!(!in_place(&object(other_spec), &desired));
        let mut no_owner = desired.clone();
        no_owner["metadata"]["ownerReferences"] = json!([]);
        assert!(!in_place(&object(no_owner), &desired));
        let mut no_labels = desired.clone();
        no_labels["metadata"]["labels"] = json!({});
        assert!(!in_place(&object(no_labels), &desired));
    }
}
