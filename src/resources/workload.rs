//! The shape shared by the tenant's HTTP components (server and registry): a ClusterIP Service
//! and a non-root Deployment with a read-only root filesystem, a writable `/tmp` and HTTP probes.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::{
    child_meta, component_labels, container_resources, restricted_container_security, restricted_pod_security,
    selector_labels,
};
use crate::model::{ContainerResources, TenantModel};

/// Name of the container port every HTTP component serves on.
pub const PORT_NAME: &str = "http";

/// One HTTP component of a tenant.
pub struct HttpComponent<'a> {
    /// Name of the Service and Deployment.
    pub name: String,
    /// Value of the `neurallog.io/component` label.
    pub component: &'a str,
    /// Value of the `app` label, part of the (immutable) pod selector.
    pub app: &'a str,
    /// Name of the container.
    pub container: &'a str,
    pub port: i32,
    pub image: String,
    pub replicas: i32,
    pub resources: &'a ContainerResources,
    pub env: Vec<EnvVar>,
    /// Path answering 200 when the process is up.
    pub health_path: &'a str,
    /// UID (and GID) the container runs as.
    pub user: i64,
}

/// A literal environment variable.
pub fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

fn http_probe(path: &str, initial_delay_seconds: i32, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay_seconds),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(5),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The ClusterIP Service in front of the component's pods, its port named `http`.
pub fn service(model: &TenantModel, component: &HttpComponent<'_>) -> Service {
    Service {
        metadata: child_meta(
            model,
            component.name.clone(),
            component_labels(&model.name, component.component, component.app),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&model.name, component.app)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: component.port,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The component's Deployment.
pub fn deployment(model: &TenantModel, component: HttpComponent<'_>) -> Deployment {
    let labels = component_labels(&model.name, component.component, component.app);
    let container = Container {
        name: component.container.to_owned(),
        image: Some(component.image),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: component.port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(component.env),
        resources: Some(container_resources(component.resources)),
        readiness_probe: Some(http_probe(component.health_path, 5, 10)),
        liveness_probe: Some(http_probe(component.health_path, 15, 20)),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    };
    Deployment {
        metadata: child_meta(model, component.name, labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(component.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&model.name, component.app)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security(component.user)),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            // Only when the budget has no room for a rolling update's extra pod: one pod is
            // replaced at a time instead. Otherwise Kubernetes' default (25% surge).
            strategy: model.rollout_without_surge.as_ref().map(|_| DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
