//! The tenant's endpoint registry: Service, Deployment and, with a base domain, an Ingress.
//!
//! The registry tells NeuralLog clients where the tenant's services are. With a public base
//! domain it derives the public URLs itself (`https://api.<tenant>.<domain>` and so on); without
//! one it announces the in-cluster server and the platform's Auth.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, Service};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};

use super::endpoints::{self, REGISTRY_PORT};
use super::workload::{self, HttpComponent, env_value};
use super::{Platform, child_meta, component_labels};
use crate::model::TenantModel;

pub const APP: &str = "neurallog-registry";
pub const COMPONENT: &str = "registry";
/// The `node` user of the Node.js base image the registry is built on.
const REGISTRY_USER: i64 = 1000;
const HEALTH_PATH: &str = "/health";
/// API version the registry announces to clients.
const API_VERSION: &str = "v1";

/// The public host of the registry, when the tenant has a base domain.
pub fn public_host(model: &TenantModel) -> Option<String> {
    model.registry.base_domain.as_ref().map(|domain| format!("registry.{}.{domain}", model.name))
}

/// The registry's environment, following its contract (`TENANT_ID`, `PORT`, `BASE_DOMAIN`,
/// `API_VERSION`, and the `SERVER_URL`/`AUTH_URL` overrides).
pub fn env(model: &TenantModel, platform: &Platform) -> Vec<EnvVar> {
    let mut env = vec![
        env_value("PORT", REGISTRY_PORT.to_string()),
        env_value("TENANT_ID", model.name.clone()),
        env_value("API_VERSION", API_VERSION),
        env_value("LOG_LEVEL", "info"),
    ];
    match &model.registry.base_domain {
        Some(domain) => env.push(env_value("BASE_DOMAIN", domain.clone())),
        None => {
            env.push(env_value("SERVER_URL", endpoints::server_url(model)));
            if let Some(auth_url) = &platform.auth_url {
                env.push(env_value("AUTH_URL", auth_url.clone()));
            }
        }
    }
    env
}

fn component<'a>(model: &'a TenantModel, platform: &Platform) -> HttpComponent<'a> {
    HttpComponent {
        name: endpoints::registry_name(model),
        component: COMPONENT,
        app: APP,
        container: "registry",
        port: REGISTRY_PORT,
        image: model.operand.images(&platform.release).registry,
        replicas: model.registry.replicas,
        resources: &model.registry.resources,
        env: env(model, platform),
        health_path: HEALTH_PATH,
        user: REGISTRY_USER,
    }
}

/// The ClusterIP Service in front of the registry pods, port 3031 named `http`.
pub fn service(model: &TenantModel) -> Service {
    workload::service(model, &component(model, &Platform::default()))
}

/// The registry Deployment.
pub fn deployment(model: &TenantModel, platform: &Platform) -> Deployment {
    workload::deployment(model, component(model, platform))
}

/// The Ingress publishing the registry at `registry.<tenant>.<baseDomain>`; `None` without a
/// base domain.
pub fn ingress(model: &TenantModel, platform: &Platform) -> Option<Ingress> {
    let host = public_host(model)?;
    let labels = component_labels(&model.name, COMPONENT, APP);
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: endpoints::registry_name(model),
            port: Some(ServiceBackendPort { name: Some(workload::PORT_NAME.to_owned()), number: None }),
        }),
        ..IngressBackend::default()
    };
    Some(Ingress {
        metadata: child_meta(model, endpoints::registry_name(model), labels),
        spec: Some(IngressSpec {
            ingress_class_name: platform.ingress_class.clone(),
            tls: platform
                .ingress_tls_secret
                .as_ref()
                .map(|secret| vec![IngressTLS { hosts: Some(vec![host.clone()]), secret_name: Some(secret.clone()) }]),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_owned()),
                        path_type: "Prefix".to_owned(),
                        backend,
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestTenant;

    fn with_domain(domain: Option<&str>) -> TenantModel {
        let tenant = TestTenant::new("acme");
        match domain {
            Some(domain) => tenant.set("registry.baseDomain", domain.into()),
            None => tenant,
        }
        .valid_model()
    }

    fn value(env: &[EnvVar], name: &str) -> Option<String> {
        env.iter().find(|e| e.name == name).and_then(|e| e.value.clone())
    }

    #[test]
    fn env_follows_the_registry_contract() {
        let platform = Platform { auth_url: Some("http://auth.neurallog.svc:3000".into()), ..Platform::default() };
        let public = env(&with_domain(Some("neurallog.app")), &platform);
        assert_eq!(value(&public, "TENANT_ID").as_deref(), Some("acme"));
        assert_eq!(value(&public, "PORT").as_deref(), Some("3031"));
        assert_eq!(value(&public, "API_VERSION").as_deref(), Some("v1"));
        assert_eq!(value(&public, "BASE_DOMAIN").as_deref(), Some("neurallog.app"));
        assert_eq!(value(&public, "SERVER_URL"), None, "public URLs are derived from the base domain");

        let internal = env(&with_domain(None), &platform);
        assert_eq!(value(&internal, "BASE_DOMAIN"), None);
        assert_eq!(value(&internal, "SERVER_URL").as_deref(), Some("http://acme-server.tenant-acme.svc:3030"));
        assert_eq!(value(&internal, "AUTH_URL").as_deref(), Some("http://auth.neurallog.svc:3000"));
    }

    #[test]
    fn deployment_probes_health_on_port_3031() {
        let d = deployment(&with_domain(None), &Platform::default());
        assert_eq!(d.metadata.name.as_deref(), Some("acme-registry"));
        let pod = d.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 3031);
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/health"));
        assert_eq!(c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "50m");
        let svc = service(&with_domain(None)).spec.unwrap();
        assert_eq!(svc.ports.unwrap()[0].port, 3031);
    }

    #[test]
    fn ingress_only_with_a_base_domain_and_with_the_platform_class_and_tls() {
        assert!(ingress(&with_domain(None), &Platform::default()).is_none());
        let platform = Platform {
            ingress_class: Some("nginx".into()),
            ingress_tls_secret: Some("wildcard-tls".into()),
            ..Platform::default()
        };
        let spec = ingress(&with_domain(Some("neurallog.app")), &platform).unwrap().spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("registry.acme.neurallog.app"));
        let backend = rule.http.as_ref().unwrap().paths[0].backend.service.clone().unwrap();
        assert_eq!(backend.name, "acme-registry");
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("wildcard-tls"));
        assert_eq!(tls.hosts.as_deref(), Some(&["registry.acme.neurallog.app".to_owned()][..]));
    }
}
