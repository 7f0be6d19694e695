//! The tenant namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ObjectMeta;

use super::{TENANT_UID_ANNOTATION, tenant_labels};
use crate::model::{DeletionPolicy, TenantModel, defaults, namespace_name};

/// Label marking a namespace kept after its tenant was deleted with `deletionPolicy: Retain`.
pub const RETAINED_LABEL: &str = "neurallog.io/retained";
/// Annotation on the namespace recording the deletion policy in force for its tenant.
pub const DELETION_POLICY_ANNOTATION: &str = "neurallog.io/deletion-policy";

/// The namespace `tenant-<name>`: tenant labels, the Pod Security `restricted` profile enforced,
/// the UID of the Tenant it was created for (which is how the operator tells its own namespace
/// from a foreign one of the same name) and the deletion policy in force. It has no owner
/// reference: the operator deletes it explicitly, so the garbage collector never removes a
/// namespace the tenant's deletion policy would keep.
///
/// `existing` is the namespace as it is now, when it was created for this tenant: a spec that
/// leaves the policy out keeps the one recorded there.
pub fn namespace(model: &TenantModel, existing: Option<&ObjectMeta>) -> Namespace {
    let in_force = model.deletion_policy.or_else(|| existing.and_then(recorded_policy));
    build(&model.name, &model.uid, in_force.unwrap_or(defaults::DELETION_POLICY), false)
}

/// The namespace of a deleted tenant kept with its data (`deletionPolicy: Retain`, or an
/// uninstall): marked as retained, so a Tenant created later with the same name adopts it and its
/// data (whose own policy then applies). It records `Retain`, so every further pass of the
/// cleanup keeps it too.
pub fn retained(tenant: &str, uid: &str) -> Namespace {
    build(tenant, uid, DeletionPolicy::Retain, true)
}

/// The deletion policy recorded on a namespace the operator created. A value the operator did not
/// write (edited by hand) reads as `Retain`: when in doubt, data is kept.
pub fn recorded_policy(namespace: &ObjectMeta) -> Option<DeletionPolicy> {
    let recorded = namespace.annotations.as_ref()?.get(DELETION_POLICY_ANNOTATION)?;
    Some(if recorded == policy_name(DeletionPolicy::Delete) { DeletionPolicy::Delete } else { DeletionPolicy::Retain })
}

fn policy_name(policy: DeletionPolicy) -> &'static str {
    match policy {
        DeletionPolicy::Delete => "Delete",
        DeletionPolicy::Retain => "Retain",
    }
}

fn build(tenant: &str, uid: &str, policy: DeletionPolicy, retained: bool) -> Namespace {
    let mut labels = tenant_labels(tenant);
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(format!("pod-security.kubernetes.io/{mode}"), "restricted".to_owned());
        labels.insert(format!("pod-security.kubernetes.io/{mode}-version"), "latest".to_owned());
    }
    if retained {
        labels.insert(RETAINED_LABEL.to_owned(), "true".to_owned());
    }
    let annotations = BTreeMap::from([
        (TENANT_UID_ANNOTATION.to_owned(), uid.to_owned()),
        (DELETION_POLICY_ANNOTATION.to_owned(), policy_name(policy).to_owned()),
    ]);
    Namespace {
        metadata: ObjectMeta {
            name: Some(namespace_name(tenant)),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Whether a namespace is one the operator retained for a deleted tenant named `tenant`.
pub fn retained_for(namespace: &ObjectMeta, tenant: &str) -> bool {
    created_for_name(namespace, tenant)
        && namespace.labels.as_ref().and_then(|l| l.get(RETAINED_LABEL)).map(String::as_str) == Some("true")
}

/// Whether a namespace was created by this operator for the tenant incarnation with `uid`.
pub fn created_for(namespace: &ObjectMeta, uid: &str) -> bool {
    namespace.annotations.as_ref().and_then(|a| a.get(TENANT_UID_ANNOTATION)).map(String::as_str) == Some(uid)
}

/// Whether a namespace was created by this operator for some tenant named `tenant` (this one or
/// an earlier one of the same name).
pub fn created_for_name(namespace: &ObjectMeta, tenant: &str) -> bool {
    let labels = namespace.labels.as_ref();
    labels.and_then(|l| l.get(super::TENANT_LABEL)).map(String::as_str) == Some(tenant)
        && labels.and_then(|l| l.get(super::MANAGED_BY_LABEL)).map(String::as_str) == Some(super::MANAGED_BY_VALUE)
        && namespace.annotations.as_ref().is_some_and(|a| a.contains_key(TENANT_UID_ANNOTATION))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestTenant;

    #[test]
    fn namespace_enforces_restricted_pod_security_and_records_the_tenant() {
        let m = TestTenant::new("acme").valid_model();
        let ns = namespace(&m, None);
        let labels = ns.metadata.labels.as_ref().unwrap();
        assert_eq!(ns.metadata.name.as_deref(), Some("tenant-acme"));
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(labels["neurallog.io/tenant"], "acme");
        assert_eq!(labels["neurallog.io/managed-by"], "tenant-operator");
        assert!(ns.metadata.owner_references.is_none());
        assert!(created_for(&ns.metadata, &m.uid));
        assert!(created_for_name(&ns.metadata, "acme"));
    }

    #[test]
    fn a_namespace_without_the_uid_or_with_another_uid_is_foreign() {
        let m = TestTenant::new("acme").valid_model();
        let mut ns = namespace(&m, None);
        ns.metadata.annotations = None;
        assert!(!created_for(&ns.metadata, &m.uid));
        assert!(!created_for_name(&ns.metadata, "acme"));
        let other = TestTenant::new("acme").valid_model();
        let mut other_ns = namespace(&other, None);
        other_ns.metadata.annotations =
            Some(BTreeMap::from([(TENANT_UID_ANNOTATION.to_owned(), "old-uid".to_owned())]));
        assert!(!created_for(&other_ns.metadata, &m.uid));
        assert!(created_for_name(&other_ns.metadata, "acme"));
        assert!(!retained_for(&other_ns.metadata, "acme"));
    }

    #[test]
    fn a_retained_namespace_is_recognised_for_its_tenant_name_only() {
        let kept = retained("acme", "old-uid");
        assert!(retained_for(&kept.metadata, "acme"));
        assert!(!retained_for(&kept.metadata, "other"));
        assert!(!retained_for(&namespace(&TestTenant::new("acme").valid_model(), None).metadata, "acme"));
    }

    #[test]
    fn a_spec_without_a_policy_keeps_the_recorded_one_and_a_stated_policy_replaces_it() {
        let recorded = |ns: &Namespace| recorded_policy(&ns.metadata);
        let fresh = namespace(&TestTenant::new("acme").valid_model(), None);
        assert_eq!(recorded(&fresh), Some(DeletionPolicy::Delete), "a new tenant gets the default");
        let retain = TestTenant::new("acme").spec(serde_json::json!({"deletionPolicy": "Retain"})).valid_model();
        let retaining = namespace(&retain, None);
        assert_eq!(recorded(&retaining), Some(DeletionPolicy::Retain));
        let omitted = TestTenant::new("acme").valid_model();
        let kept = namespace(&omitted, Some(&retaining.metadata));
        assert_eq!(recorded(&kept), Some(DeletionPolicy::Retain), "a replace leaving it out keeps Retain");
        let delete = TestTenant::new("acme").spec(serde_json::json!({"deletionPolicy": "Delete"})).valid_model();
        assert_eq!(recorded(&namespace(&delete, Some(&kept.metadata))), Some(DeletionPolicy::Delete));
        let mut edited = kept.metadata.clone();
        edited.annotations.as_mut().unwrap().insert(DELETION_POLICY_ANNOTATION.to_owned(), "delete".to_owned());
        assert_eq!(recorded_policy(&edited), Some(DeletionPolicy::Retain), "an unknown value keeps data");
        let kept = retained("acme", "uid");
        assert_eq!(recorded(&kept), Some(DeletionPolicy::Retain), "a retained namespace stays retained");
        assert_eq!(recorded(&namespace(&omitted, None)), Some(DeletionPolicy::Delete), "an adopter starts afresh");
    }
}
