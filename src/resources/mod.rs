//! Pure builders of a tenant's desired child objects. Each function maps a [`TenantModel`] to the
//! objects the operator server-side applies; nothing here talks to the API server, so every shape
//! is unit-tested without a cluster.

pub mod access;
pub mod backup;
mod backup_store;
pub mod endpoints;
pub mod namespace;
pub mod network;
pub mod quota;
pub mod redis;
pub mod registry;
mod restore;
pub mod server;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
use kube::api::ObjectMeta;

use crate::model::TenantModel;
use crate::model::operand::Release;
use crate::quantity::Amount;

/// Label naming the tenant an object belongs to.
pub const TENANT_LABEL: &str = "neurallog.io/tenant";
/// Label marking objects this operator manages (also the watch selector for children).
pub const MANAGED_BY_LABEL: &str = "neurallog.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "tenant-operator";
/// Label naming the tenant component an object belongs to.
pub const COMPONENT_LABEL: &str = "neurallog.io/component";
/// Annotation on the namespace recording the UID of the Tenant it was created for.
pub const TENANT_UID_ANNOTATION: &str = "neurallog.io/tenant-uid";

/// Operator-level settings that shape every tenant's objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    /// Namespace of the cluster's ingress controller, allowed to reach every tenant's server and
    /// registry.
    pub ingress_namespace: Option<String>,
    /// IngressClass of the registry Ingresses; the cluster default when `None`.
    pub ingress_class: Option<String>,
    /// TLS Secret (in each tenant namespace) the registry Ingresses terminate TLS with.
    pub ingress_tls_secret: Option<String>,
    /// NeuralLog Auth URL handed to the tenant's server and registry.
    pub auth_url: Option<String>,
    /// The NeuralLog version and images this release runs by default.
    pub release: Release,
    /// The operator's own image, which the backup and restore pods run.
    pub operator_image: String,
    /// The namespace the operator's pods run in, whose pods may reach every tenant's Redis to
    /// collect its metrics; `None` outside a cluster.
    pub operator_namespace: Option<String>,
}

/// Selector for everything this operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}

/// Labels every object of a tenant carries.
pub fn tenant_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT_LABEL.to_owned(), tenant.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "neurallog".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), tenant.to_owned()),
    ])
}

/// The pod selector of one component: stable for the life of the tenant, since selectors of
/// Deployments and StatefulSets are immutable.
pub fn selector_labels(tenant: &str, app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), app.to_owned()), (TENANT_LABEL.to_owned(), tenant.to_owned())])
}

/// Labels of one component's objects and pods.
pub fn component_labels(tenant: &str, component: &str, app: &str) -> BTreeMap<String, String> {
    let mut labels = tenant_labels(tenant);
    labels.extend(selector_labels(tenant, app));
    labels.insert(COMPONENT_LABEL.to_owned(), component.to_owned());
    labels.insert("app.kubernetes.io/name".to_owned(), app.to_owned());
    labels
}

/// Metadata of a namespaced child: in the tenant namespace, controlled by the Tenant.
pub fn child_meta(model: &TenantModel, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(model.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![model.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Pod-level security settings that satisfy the Pod Security `restricted` profile.
pub fn restricted_pod_security(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }),
        ..PodSecurityContext::default()
    }
}

/// Container-level security settings that satisfy the Pod Security `restricted` profile.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

/// Kubernetes resource requirements from the model's resolved values.
pub fn container_resources(r: &crate::model::ContainerResources) -> k8s_openapi::api::core::v1::ResourceRequirements {
    let pair = |cpu: &Amount, memory: &Amount| {
        BTreeMap::from([("cpu".to_owned(), cpu.to_kube()), ("memory".to_owned(), memory.to_kube())])
    };
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(pair(&r.cpu_request, &r.memory_request)),
        limits: Some(pair(&r.cpu_limit, &r.memory_limit)),
        ..Default::default()
    }
}
