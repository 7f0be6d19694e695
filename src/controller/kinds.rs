//! The kinds of child object a tenant has, and what each is: the objects of that kind a tenant
//! wants (from the pure builders), and the tenant that controls one.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{RoleBinding, Subject};
use kube::Resource;
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{GROUP, KIND, Tenant};
use crate::model::TenantModel;
use crate::resources::{Platform, access, network, quota, redis, registry, server};

/// A namespaced kind the operator applies.
pub trait Child:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Every object of this kind the tenant wants (the builders the reconcile applies).
    fn desired(model: &TenantModel, platform: &Platform, operator: &Subject) -> Vec<Self>;

    /// Ready pods, of a workload.
    fn ready_replicas(&self) -> Option<i32> {
        None
    }

    /// Whether a workload runs its current template on every pod, Ready; true for the rest.
    fn settled(&self) -> bool {
        true
    }
}

impl Child for Deployment {
    fn desired(model: &TenantModel, platform: &Platform, _: &Subject) -> Vec<Self> {
        vec![server::deployment(model, platform), registry::deployment(model, platform)]
    }

    fn ready_replicas(&self) -> Option<i32> {
        self.status.as_ref().and_then(|status| status.ready_replicas)
    }

    fn settled(&self) -> bool {
        let status = self.status.clone().unwrap_or_default();
        let status = WorkloadStatus {
            observed_generation: status.observed_generation,
            replicas: status.replicas,
            ready_replicas: status.ready_replicas,
            updated_replicas: status.updated_replicas,
            current_revision: None,
            update_revision: None,
        };
        status.settled(self.metadata.generation, self.spec.as_ref().and_then(|spec| spec.replicas))
    }
}

impl Child for StatefulSet {
    fn desired(model: &TenantModel, platform: &Platform, _: &Subject) -> Vec<Self> {
        vec![redis::stateful_set(model, platform)]
    }

    fn ready_replicas(&self) -> Option<i32> {
        self.status.as_ref().and_then(|status| status.ready_replicas)
    }

    fn settled(&self) -> bool {
        let Some(status) = self.status.clone() else { return false };
        let status = WorkloadStatus {
            observed_generation: status.observed_generation,
            replicas: Some(status.replicas),
            ready_replicas: status.ready_replicas,
            updated_replicas: status.updated_replicas,
            current_revision: status.current_revision,
            update_revision: status.update_revision,
        };
        status.settled(self.metadata.generation, self.spec.as_ref().and_then(|spec| spec.replicas))
    }
}

impl Child for Service {
    fn desired(model: &TenantModel, _: &Platform, _: &Subject) -> Vec<Self> {
        vec![redis::service(model), server::service(model), registry::service(model)]
    }
}

impl Child for ConfigMap {
    fn desired(model: &TenantModel, _: &Platform, _: &Subject) -> Vec<Self> {
        vec![redis::config_map(model)]
    }
}

impl Child for RoleBinding {
    fn desired(model: &TenantModel, _: &Platform, operator: &Subject) -> Vec<Self> {
        vec![access::role_binding(model, operator)]
    }
}

impl Child for NetworkPolicy {
    fn desired(model: &TenantModel, platform: &Platform, _: &Subject) -> Vec<Self> {
        network::network_policies(model, platform)
    }
}

impl Child for Ingress {
    fn desired(model: &TenantModel, platform: &Platform, _: &Subject) -> Vec<Self> {
        registry::ingress(model, platform).into_iter().collect()
    }
}

impl Child for ResourceQuota {
    fn desired(model: &TenantModel, _: &Platform, _: &Subject) -> Vec<Self> {
        quota::resource_quota(model).into_iter().collect()
    }
}

impl Child for LimitRange {
    fn desired(model: &TenantModel, _: &Platform, _: &Subject) -> Vec<Self> {
        quota::limit_range(model).into_iter().collect()
    }
}

/// The fields Deployments and StatefulSets share in their status, and the revisions of the
/// latter.
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub observed_generation: Option<i64>,
    pub replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
}

impl WorkloadStatus {
    /// Whether the workload of this generation and replicas runs its current template on every
    /// pod, all of them Ready, and no pod of an older one is left.
    pub fn settled(&self, generation: Option<i64>, replicas: Option<i32>) -> bool {
        let desired = replicas.unwrap_or(1);
        self.observed_generation >= generation
            && self.updated_replicas.unwrap_or(0) >= desired
            && self.ready_replicas.unwrap_or(0) >= desired
            && self.replicas.unwrap_or(0) == self.updated_replicas.unwrap_or(0)
            && (self.current_revision.is_none() || self.current_revision == self.update_revision)
    }
}

/// The tenant that controls a child: its controller owner reference of kind Tenant in the API
/// group, whatever the version (children written under an older storage version still count).
/// kube's `owns` would key a cluster-scoped owner by the child's namespace too, so one tenant
/// could be reconciled twice at once under two keys; mapping here keeps one key per tenant.
pub fn controlling_tenant(child: &ObjectMeta) -> Option<ObjectRef<Tenant>> {
    child
        .owner_references
        .iter()
        .flatten()
        .find(|owner| {
            let group = owner.api_version.split_once('/').map_or("", |(group, _)| group);
            owner.controller == Some(true) && owner.kind == KIND && group == GROUP
        })
        .map(|owner| ObjectRef::new(&owner.name))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn owned_by(api_version: &str, kind: &str, controller: bool) -> ConfigMap {
        let mut config_map = ConfigMap::default();
        config_map.metadata.namespace = Some("tenant-acme".into());
        config_map.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "acme".into(),
            uid: "uid".into(),
            controller: Some(controller),
            ..Default::default()
        }]);
        config_map
    }

    #[test]
    fn children_map_to_their_controlling_tenant_in_any_version_without_a_namespace() {
        assert!(controlling_tenant(&ConfigMap::default().metadata).is_none());
        for version in ["neurallog.io/v1", "neurallog.io/v2"] {
            assert_eq!(controlling_tenant(&owned_by(version, "Tenant", true).metadata), Some(ObjectRef::new("acme")));
        }
        assert!(controlling_tenant(&owned_by("neurallog.io/v1", "Tenant", false).metadata).is_none());
        assert!(controlling_tenant(&owned_by("neurallog.io/v1", "Other", true).metadata).is_none());
        assert!(controlling_tenant(&owned_by("example.org/v1", "Tenant", true).metadata).is_none());
    }
}
