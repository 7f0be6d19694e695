//! The NeuralLog server: Service and Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector, Service};

use super::endpoints::{self, SERVER_PORT};
use super::workload::{self, HttpComponent, env_value};
use super::{Platform, redis};
use crate::model::TenantModel;

pub const APP: &str = "neurallog-server";
const COMPONENT: &str = "server";
/// The `node` user of the Node.js base image the server is built on.
const SERVER_USER: i64 = 1000;
/// The server answers `GET /` when it is up; it has no dedicated health route.
const HEALTH_PATH: &str = "/";

/// The server's environment: the real server contract (Redis storage with authentication, the
/// tenant's registry, the platform's Auth), then the user's entries. A user entry overrides a
/// built-in (or earlier user entry) of the same name, as the last duplicate would in a pod; names
/// stay unique because server-side apply treats `env` as a map keyed by name.
pub fn env(model: &TenantModel, platform: &Platform) -> Vec<EnvVar> {
    let mut built_in = vec![
        env_value("NODE_ENV", "production"),
        env_value("PORT", SERVER_PORT.to_string()),
        env_value("STORAGE_TYPE", "redis"),
        env_value("REDIS_HOST", redis::name(model)),
        env_value("REDIS_PORT", redis::PORT.to_string()),
        EnvVar {
            name: "REDIS_PASSWORD".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: redis::secret_name(&model.name),
                    key: redis::PASSWORD_KEY.to_owned(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        env_value("LOG_LEVEL", "info"),
        env_value("TENANT_ID", model.name.clone()),
        env_value("REGISTRY_URL", endpoints::registry_url(model)),
    ];
    if let Some(auth_url) = &platform.auth_url {
        built_in.push(env_value("AUTH_URL", auth_url.clone()));
    }
    let user = &model.server.env;
    let overridden = |name: &str, mut later: std::slice::Iter<'_, EnvVar>| later.any(|e| e.name == name);
    let mut env: Vec<EnvVar> = built_in.into_iter().filter(|e| !overridden(&e.name, user.iter())).collect();
    let mut rest = user.iter();
    while let Some(var) = rest.next() {
        if !overridden(&var.name, rest.clone()) {
            env.push(var.clone());
        }
    }
    env
}

fn component<'a>(model: &'a TenantModel, platform: &Platform) -> HttpComponent<'a> {
    HttpComponent {
        name: endpoints::server_name(model),
        component: COMPONENT,
        app: APP,
        container: "server",
        port: SERVER_PORT,
        image: model.operand.images(&platform.release).server,
        replicas: model.server.replicas,
        resources: &model.server.resources,
        env: env(model, platform),
        health_path: HEALTH_PATH,
        user: SERVER_USER,
    }
}

/// The ClusterIP Service in front of the server pods, port 3030 named `http`.
pub fn service(model: &TenantModel) -> Service {
    workload::service(model, &component(model, &Platform::default()))
}

/// The server Deployment.
pub fn deployment(model: &TenantModel, platform: &Platform) -> Deployment {
    workload::deployment(model, component(model, platform))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::fixtures::TestTenant;

    fn plain() -> TenantModel {
        TestTenant::new("acme").valid_model()
    }

    fn env_names(model: &TenantModel) -> Vec<String> {
        env(model, &Platform::default()).into_iter().map(|e| e.name).collect()
    }

    #[test]
    fn env_follows_the_real_server_contract() {
        let m = plain();
        let vars = env(&m, &Platform::default());
        let get = |n: &str| vars.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(get("STORAGE_TYPE").value.as_deref(), Some("redis"));
        assert_eq!(get("REDIS_HOST").value.as_deref(), Some("acme-redis"));
        assert_eq!(get("REDIS_PORT").value.as_deref(), Some("6379"));
        assert_eq!(get("PORT").value.as_deref(), Some("3030"));
        assert_eq!(get("TENANT_ID").value.as_deref(), Some("acme"));
        let password = get("REDIS_PASSWORD").value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((password.name.as_str(), password.key.as_str()), ("acme-redis-auth", "password"));
        assert_eq!(get("REGISTRY_URL").value.as_deref(), Some("http://acme-registry.tenant-acme.svc:3031"));
        assert!(!env_names(&m).contains(&"REDIS_URL".to_owned()));
        assert!(!env_names(&m).contains(&"AUTH_URL".to_owned()), "no Auth URL is invented");
        let platform = Platform { auth_url: Some("http://auth.neurallog.svc:3000".into()), ..Platform::default() };
        let with_auth = env(&m, &platform);
        let auth = with_auth.iter().find(|e| e.name == "AUTH_URL").unwrap();
        assert_eq!(auth.value.as_deref(), Some("http://auth.neurallog.svc:3000"));
    }

    #[test]
    fn user_env_comes_after_the_built_in_entries_and_the_last_of_a_name_wins() {
        let user_env = json!([{"name": "LOG_LEVEL", "value": "debug"}, {"name": "FEATURE", "value": "a"},
                              {"name": "FEATURE", "value": "b"}]);
        let vars = env(&TestTenant::new("acme").set("server.env", user_env).valid_model(), &Platform::default());
        let names: Vec<&str> = vars.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], ["LOG_LEVEL", "FEATURE"]);
        assert_eq!(names.iter().filter(|n| **n == "LOG_LEVEL").count(), 1, "names are unique for server-side apply");
        assert_eq!(vars.iter().find(|e| e.name == "LOG_LEVEL").unwrap().value.as_deref(), Some("debug"));
        assert_eq!(vars.last().unwrap().value.as_deref(), Some("b"));
    }

    #[test]
    fn probes_hit_the_path_the_server_serves() {
        let d = deployment(&plain(), &Platform::default());
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        for probe in [c.readiness_probe.as_ref().unwrap(), c.liveness_probe.as_ref().unwrap()] {
            assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
        }
    }

    #[test]
    fn deployment_shape() {
        let m =
            TestTenant::new("acme").set("server", json!({"replicas": 3, "image": "example/server:2"})).valid_model();
        let d = deployment(&m, &Platform::default());
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
        let svc = service(&plain()).spec.unwrap();
        let port = &svc.ports.unwrap()[0];
        assert_eq!((port.port, port.name.as_deref()), (3030, Some("http")));
    }
}
