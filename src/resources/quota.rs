//! The tenant-wide budget: a ResourceQuota capping the namespace, and a LimitRange giving
//! containers that declare nothing defaults that fit it (a quota on CPU or memory rejects pods
//! without requests and limits, so without defaults such pods would never start).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use super::{COMPONENT_LABEL, child_meta, tenant_labels};
use crate::model::defaults::CONTAINER_RESOURCES;
use crate::model::{QuotaModel, TenantModel};
use crate::quantity::{Amount, Quantity};

pub const COMPONENT: &str = "quota";

fn labels(model: &TenantModel) -> BTreeMap<String, String> {
    let mut labels = tenant_labels(&model.name);
    labels.insert(COMPONENT_LABEL.to_owned(), COMPONENT.to_owned());
    labels
}

pub fn quota_name(model: &TenantModel) -> String {
    format!("{}-quota", model.name)
}

pub fn limit_range_name(model: &TenantModel) -> String {
    format!("{}-limits", model.name)
}

/// The smaller of two quantities (`cap` may be absent).
fn capped(value: Amount, cap: Option<&Amount>) -> Amount {
    match cap {
        Some(cap) if cap.value() < value.value() => cap.clone(),
        _ => value,
    }
}

/// The ResourceQuota, or `None` when the tenant sets no budget.
pub fn resource_quota(model: &TenantModel) -> Option<ResourceQuota> {
    let quota = model.quota.as_ref()?;
    let hard: BTreeMap<String, KubeQuantity> = [
        ("requests.cpu", &quota.requests_cpu),
        ("limits.cpu", &quota.limits_cpu),
        ("requests.memory", &quota.requests_memory),
        ("limits.memory", &quota.limits_memory),
        ("requests.storage", &quota.requests_storage),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_ref().map(|v| (key.to_owned(), v.to_kube())))
    .collect();
    Some(ResourceQuota {
        metadata: child_meta(model, quota_name(model), labels(model)),
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..ResourceQuotaSpec::default() }),
        ..ResourceQuota::default()
    })
}

/// Default request and limit of one resource, each capped by the quota and the request never
/// above the limit.
fn defaults(request: &str, limit: &str, request_cap: Option<&Amount>, limit_cap: Option<&Amount>) -> (Amount, Amount) {
    // The defaults are constants known to parse; a zero stands in for the impossible failure.
    let parse = |text: &str| Amount::parse(text).unwrap_or_else(|_| Amount::from(Quantity::default()));
    let limit = capped(parse(limit), limit_cap);
    let request = capped(capped(parse(request), request_cap), Some(&limit));
    (request, limit)
}

/// The LimitRange with container defaults, or `None` when the tenant sets no budget.
pub fn limit_range(model: &TenantModel) -> Option<LimitRange> {
    let QuotaModel { requests_cpu, limits_cpu, requests_memory, limits_memory, .. } = model.quota.as_ref()?;
    let container = CONTAINER_RESOURCES;
    let (cpu_request, cpu_limit) =
        defaults(container.cpu_request, container.cpu_limit, requests_cpu.as_ref(), limits_cpu.as_ref());
    let (memory_request, memory_limit) =
        defaults(container.memory_request, container.memory_limit, requests_memory.as_ref(), limits_memory.as_ref());
    let pair = |cpu: Amount, memory: Amount| {
        BTreeMap::from([("cpu".to_owned(), cpu.to_kube()), ("memory".to_owned(), memory.to_kube())])
    };
    Some(LimitRange {
        metadata: child_meta(model, limit_range_name(model), labels(model)),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_owned(),
                default_request: Some(pair(cpu_request, memory_request)),
                default: Some(pair(cpu_limit, memory_limit)),
                ..LimitRangeItem::default()
            }],
        }),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::TestTenant;

    fn budget(resources: serde_json::Value) -> TenantModel {
        TestTenant::new("acme").set("resources", resources).valid_model()
    }

    fn hard(model: &TenantModel) -> BTreeMap<String, String> {
        let quota = resource_quota(model).unwrap().spec.unwrap().hard.unwrap();
        quota.into_iter().map(|(k, v)| (k, v.0)).collect()
    }

    fn amount(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }

    #[test]
    fn no_budget_means_no_quota_and_no_limit_range() {
        let m = TestTenant::new("acme").valid_model();
        assert!(resource_quota(&m).is_none() && limit_range(&m).is_none());
        let empty = budget(json!({}));
        assert!(resource_quota(&empty).is_none() && limit_range(&empty).is_none());
    }

    #[test]
    fn every_dimension_set_is_enforced_and_storage_uses_its_limit() {
        let m = budget(json!({"cpu": {"request": "2", "limit": "4"}, "memory": {"request": "4Gi", "limit": "8Gi"},
                              "storage": {"request": "5Gi", "limit": "20Gi"}}));
        let expected = [
            ("limits.cpu", "4"),
            ("limits.memory", "8Gi"),
            ("requests.cpu", "2"),
            ("requests.memory", "4Gi"),
            ("requests.storage", "20Gi"),
        ];
        assert_eq!(hard(&m), expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let only_cpu_limit = TestTenant::new("acme").cpu_budget(None, Some("4")).valid_model();
        assert_eq!(hard(&only_cpu_limit).keys().collect::<Vec<_>>(), ["limits.cpu"]);
    }

    #[test]
    fn container_defaults_fit_a_small_budget() {
        let m = budget(json!({"cpu": {"request": "1", "limit": "2"}, "memory": {"request": "700Mi", "limit": "2Gi"}}));
        let item = &limit_range(&m).unwrap().spec.unwrap().limits[0];
        let get = |map: &Option<BTreeMap<String, KubeQuantity>>, key: &str| map.as_ref().unwrap()[key].0.clone();
        assert_eq!(get(&item.default_request, "cpu"), "100m");
        assert_eq!(get(&item.default, "memory"), "512Mi");
        let tiny = TestTenant::new("acme").cpu_budget(None, Some("2")).valid_model();
        let tiny_item = &limit_range(&tiny).unwrap().spec.unwrap().limits[0];
        assert_eq!(get(&tiny_item.default, "cpu"), "500m");
    }

    #[test]
    fn defaults_are_capped_and_the_request_never_exceeds_the_limit() {
        let (request, limit) = defaults("100m", "500m", Some(&amount("50m")), Some(&amount("80m")));
        assert_eq!((request.as_str(), limit.as_str()), ("50m", "80m"));
        let (request, limit) = defaults("100m", "500m", None, Some(&amount("60m")));
        assert_eq!((request.as_str(), limit.as_str()), ("60m", "60m"));
    }
}
