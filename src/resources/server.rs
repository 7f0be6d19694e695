//! The NeuralLog server: Service and Deployment.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, PodSpec, PodTemplateSpec,
    Probe, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::{
    child_meta, component_labels, container_resources, redis, restricted_container_security, restricted_pod_security,
    selector_labels,
};
use crate::model::TenantModel;

pub const PORT: i32 = 3030;
pub const APP: &str = "neurallog-server";
const COMPONENT: &str = "server";
/// The `node` user of the Node.js base image the server is built on.
const SERVER_USER: i64 = 1000;
/// The server answers `GET /` when it is up; it has no dedicated health route.
const HEALTH_PATH: &str = "/";

/// Name of the server Service and Deployment.
pub fn name(model: &TenantModel) -> String {
    format!("{}-server", model.name)
}

fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

/// The server's environment: the real server contract (Redis storage with authentication), then
/// the user's entries. A user entry overrides a built-in (or earlier user entry) of the same
/// name, as the last duplicate would in a pod; names stay unique because server-side apply
/// treats `env` as a map keyed by name.
pub fn env(model: &TenantModel) -> Vec<EnvVar> {
    let built_in = vec![
        value("NODE_ENV", "production"),
        value("PORT", PORT.to_string()),
        value("STORAGE_TYPE", "redis"),
        value("REDIS_HOST", redis::name(model)),
        value("REDIS_PORT", redis::PORT.to_string()),
        EnvVar {
            name: "REDIS_PASSWORD".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: redis::secret_name(model),
                    key: redis::PASSWORD_KEY.to_owned(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        value("LOG_LEVEL", "info"),
        value("TENANT_ID", model.name.clone()),
    ];
    let user = &model.server.env;
    let overridden = |name: &str, later: &[EnvVar]| later.iter().any(|e| e.name == name);
    let mut env: Vec<EnvVar> = built_in.into_iter().filter(|e| !overridden(&e.name, user)).collect();
    env.extend(user.iter().enumerate().filter(|(i, e)| !overridden(&e.name, &user[i + 1..])).map(|(_, e)| e.clone()));
    env
}

fn http_probe(initial_delay_seconds: i32, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(HEALTH_PATH.to_owned()),
            port: IntOrString::String("http".to_owned()),
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

/// The ClusterIP Service in front of the server pods, port 3030 named `http`.
pub fn service(model: &TenantModel) -> Service {
    Service {
        metadata: child_meta(model, name(model), component_labels(&model.name, COMPONENT, APP)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&model.name, APP)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The server Deployment, non-root with a read-only root filesystem and a writable `/tmp`.
pub fn deployment(model: &TenantModel) -> Deployment {
    let labels = component_labels(&model.name, COMPONENT, APP);
    let container = Container {
        name: "server".to_owned(),
        image: Some(model.server.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(env(model)),
        resources: Some(container_resources(&model.server.resources)),
        readiness_probe: Some(http_probe(5, 10)),
        liveness_probe: Some(http_probe(15, 20)),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    };
    Deployment {
        metadata: child_meta(model, name(model), labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(model.server.replicas),
            selector: LabelSelector { match_labels: Some(selector_labels(&model.name, APP)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security(SERVER_USER)),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1::{self, ServerSpec, TenantSpec};
    use crate::resources::test_support::model;

    fn env_names(model: &TenantModel) -> Vec<String> {
        env(model).into_iter().map(|e| e.name).collect()
    }

    #[test]
    fn env_follows_the_real_server_contract() {
        let m = model("acme", TenantSpec::default());
        let vars = env(&m);
        let get = |n: &str| vars.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(get("STORAGE_TYPE").value.as_deref(), Some("redis"));
        assert_eq!(get("REDIS_HOST").value.as_deref(), Some("acme-redis"));
        assert_eq!(get("REDIS_PORT").value.as_deref(), Some("6379"));
        assert_eq!(get("PORT").value.as_deref(), Some("3030"));
        assert_eq!(get("TENANT_ID").value.as_deref(), Some("acme"));
        let password = get("REDIS_PASSWORD").value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((password.name.as_str(), password.key.as_str()), ("acme-redis-auth", "password"));
        assert!(!env_names(&m).contains(&"REDIS_URL".to_owned()));
    }

    #[test]
    fn user_env_comes_after_the_built_in_entries_and_the_last_of_a_name_wins() {
        let var =
            |name: &str, value: &str| v1::EnvVar { name: name.into(), value: Some(value.into()), value_from: None };
        let spec = TenantSpec {
            server: Some(ServerSpec {
                env: vec![var("LOG_LEVEL", "debug"), var("FEATURE", "a"), var("FEATURE", "b")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let vars = env(&model("acme", spec));
        let names: Vec<&str> = vars.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], ["LOG_LEVEL", "FEATURE"]);
        assert_eq!(names.iter().filter(|n| **n == "LOG_LEVEL").count(), 1, "names are unique for server-side apply");
        assert_eq!(vars.iter().find(|e| e.name == "LOG_LEVEL").unwrap().value.as_deref(), Some("debug"));
        assert_eq!(vars.last().unwrap().value.as_deref(), Some("b"));
    }

    #[test]
    fn probes_hit_the_path_the_server_serves() {
        let d = deployment(&model("acme", TenantSpec::default()));
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        for probe in [c.readiness_probe.as_ref().unwrap(), c.liveness_probe.as_ref().unwrap()] {
            assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
        }
    }

    #[test]
    fn deployment_shape() {
        let spec = TenantSpec {
            server: Some(ServerSpec {
                replicas: Some(3),
                image: Some("example/server:2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = deployment(&model("acme", spec));
        assert_eq!(d.metadata.name.as_deref(), Some("acme-server"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.match_labels.unwrap()["app"], "neurallog-server");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("example/server:2"));
        assert_eq!(pod.containers[0].security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
        let resources = pod.containers[0].resources.clone().unwrap();
        assert_eq!(resources.limits.unwrap()["memory"].0, "512Mi");
    }

    #[test]
    fn service_exposes_port_3030_named_http() {
        let svc = service(&model("acme", TenantSpec::default())).spec.unwrap();
        let port = &svc.ports.unwrap()[0];
        assert_eq!((port.port, port.name.as_deref()), (3030, Some("http")));
    }
}
