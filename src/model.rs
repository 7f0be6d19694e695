//! The version-independent view of a tenant that the reconciler and the builders work on.
//!
//! Every API version maps into [`TenantModel`] with defaults applied and quantities checked, so
//! the builders never see an optional field or an unparsed string, and a tenant that slipped past
//! admission (stored before a rule existed) is reported instead of panicking the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::defaults;
use crate::api::v1;
use crate::quantity::Quantity;

/// Longest tenant name whose child names are all valid (see the CRD's name rule).
pub const MAX_TENANT_NAME_LEN: usize = 46;

/// A tenant spec the operator cannot honour, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

impl InvalidSpec {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// A tenant with every default applied and every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantModel {
    /// The tenant's name, also its ID towards NeuralLog services.
    pub name: String,
    /// The UID of the Tenant object; marks the namespace created for this incarnation.
    pub uid: String,
    /// Controller owner reference for namespaced children.
    pub owner: OwnerReference,
    /// `tenant-<name>`.
    pub namespace: String,
    pub server: ServerModel,
    pub redis: RedisModel,
    pub registry: RegistryModel,
    pub network: NetworkModel,
    /// The tenant-wide budget; `None` when `spec.resources` sets nothing.
    pub quota: Option<QuotaModel>,
    pub deletion_policy: DeletionPolicy,
}

/// What deleting the tenant does to its namespace and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicy {
    Delete,
    Retain,
}

/// The endpoint registry.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryModel {
    pub replicas: i32,
    pub image: String,
    pub resources: ContainerResources,
    /// Public base domain; `None` means in-cluster endpoints and no Ingress.
    pub base_domain: Option<String>,
}

/// Hard limits of the tenant namespace, as quantity strings known to parse. Each is optional:
/// only the dimensions the tenant sets are limited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaModel {
    pub requests_cpu: Option<String>,
    pub limits_cpu: Option<String>,
    pub requests_memory: Option<String>,
    pub limits_memory: Option<String>,
    /// Total storage the tenant's PersistentVolumeClaims may request.
    pub requests_storage: Option<String>,
}

/// Network isolation of the tenant namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkModel {
    /// Whether the operator manages NetworkPolicies at all.
    pub enabled: bool,
    /// Namespaces whose pods may reach the server's HTTP port.
    pub allowed_namespaces: Vec<String>,
    pub ingress_rules: Vec<PeerRule>,
    pub egress_rules: Vec<PeerRule>,
}

/// A custom rule: which pods (in which namespaces) on which ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PeerRule {
    /// Labels of the peer pods; empty selects every pod of those namespaces.
    pub pods: BTreeMap<String, String>,
    /// Namespaces of the peer pods; empty means the tenant namespace.
    pub namespaces: Vec<String>,
    /// (protocol, port) pairs; port `None` is every port; no pairs is every port and protocol.
    pub ports: Vec<(String, Option<i32>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerModel {
    pub replicas: i32,
    pub image: String,
    pub resources: ContainerResources,
    /// User variables, already in Kubernetes form, applied after the built-in ones.
    pub env: Vec<core::EnvVar>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisModel {
    pub replicas: i32,
    pub image: String,
    pub resources: ContainerResources,
    pub storage: String,
    /// User directives from `spec.redis.config`, already checked against the allow-list.
    pub config: BTreeMap<String, String>,
}

/// Requests and limits of one container, as quantity strings that are known to parse.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerResources {
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
}

impl ContainerResources {
    /// The memory limit in bytes (parsed when the model was built, so it cannot fail here).
    pub fn memory_limit_bytes(&self) -> i128 {
        Quantity::parse(&self.memory_limit).map(Quantity::whole_units).unwrap_or_default()
    }
}

struct ResourceDefaults {
    cpu_request: &'static str,
    cpu_limit: &'static str,
    memory_request: &'static str,
    memory_limit: &'static str,
}

const SERVER_RESOURCES: ResourceDefaults =
    ResourceDefaults { cpu_request: "100m", cpu_limit: "500m", memory_request: "128Mi", memory_limit: "512Mi" };
const REDIS_RESOURCES: ResourceDefaults =
    ResourceDefaults { cpu_request: "100m", cpu_limit: "300m", memory_request: "128Mi", memory_limit: "256Mi" };
const REGISTRY_RESOURCES: ResourceDefaults =
    ResourceDefaults { cpu_request: "50m", cpu_limit: "200m", memory_request: "64Mi", memory_limit: "128Mi" };

impl TenantModel {
    /// Maps a `v1` Tenant, applying the operator's defaults and checking what the schema checks,
    /// so that objects stored before a validation rule existed are reported, not acted on.
    pub fn from_v1(tenant: &v1::Tenant) -> Result<Self, InvalidSpec> {
        let name = tenant.name_any();
        check_tenant_name(&name)?;
        let owner = tenant
            .controller_owner_ref(&())
            .ok_or_else(|| InvalidSpec::new("metadata.uid", "the tenant has no UID yet"))?;
        let spec = &tenant.spec;
        let server = spec.server.clone().or_else(defaults::server).unwrap_or_default();
        let redis = spec.redis.clone().or_else(defaults::redis).unwrap_or_default();
        let registry = spec.registry.clone().or_else(defaults::registry).unwrap_or_default();

        let model = Self {
            namespace: namespace_name(&name),
            uid: owner.uid.clone(),
            owner,
            server: ServerModel {
                replicas: replicas("spec.server.replicas", server.replicas, 1, 1..=100)?,
                image: image("spec.server.image", server.image, defaults::SERVER_IMAGE)?,
                resources: resources("spec.server.resources", server.resources.as_ref(), &SERVER_RESOURCES)?,
                env: server.env.iter().enumerate().map(|(i, e)| env_var(i, e)).collect::<Result<_, _>>()?,
            },
            redis: RedisModel {
                replicas: replicas("spec.redis.replicas", redis.replicas, 1, 1..=1)?,
                image: image("spec.redis.image", redis.image, defaults::REDIS_IMAGE)?,
                resources: resources("spec.redis.resources", redis.resources.as_ref(), &REDIS_RESOURCES)?,
                storage: quantity_or("spec.redis.storage", redis.storage.as_deref(), defaults::REDIS_STORAGE)?,
                config: redis_config(&redis.config)?,
            },
            registry: RegistryModel {
                replicas: replicas("spec.registry.replicas", registry.replicas, 1, 1..=10)?,
                image: image("spec.registry.image", registry.image, defaults::REGISTRY_IMAGE)?,
                resources: resources("spec.registry.resources", registry.resources.as_ref(), &REGISTRY_RESOURCES)?,
                base_domain: registry.base_domain,
            },
            network: network(spec.network_policy.clone().or_else(defaults::network_policy).unwrap_or_default()),
            quota: quota(spec.resources.as_ref())?,
            deletion_policy: match spec.deletion_policy.unwrap_or_default() {
                v1::DeletionPolicy::Delete => DeletionPolicy::Delete,
                v1::DeletionPolicy::Retain => DeletionPolicy::Retain,
            },
            name,
        };
        model.check_components_fit_the_quota()?;
        Ok(model)
    }

    /// Rejects a quota too small for the operator's own pods, which would otherwise leave a
    /// rollout stuck on "exceeded quota" with nothing on the Tenant saying why. A Deployment's
    /// rolling update briefly runs a quarter more pods (rounded up), so those count too.
    fn check_components_fit_the_quota(&self) -> Result<(), InvalidSpec> {
        let Some(quota) = &self.quota else { return Ok(()) };
        let surge = |replicas: i32| i128::from(replicas) + (i128::from(replicas) + 3) / 4;
        let pods = [
            (&self.server.resources, surge(self.server.replicas)),
            (&self.redis.resources, i128::from(self.redis.replicas)),
            (&self.registry.resources, surge(self.registry.replicas)),
        ];
        let total = |value: fn(&ContainerResources) -> &str| {
            pods.iter().fold(Quantity::default(), |sum, (resources, count)| {
                sum.plus(Quantity::parse(value(resources)).unwrap_or_default().times(*count))
            })
        };
        let storage = Quantity::parse(&self.redis.storage).unwrap_or_default().times(self.redis.replicas.into());
        let checks = [
            ("spec.resources.cpu.request", &quota.requests_cpu, total(|r| &r.cpu_request), "CPU requests"),
            ("spec.resources.cpu.limit", &quota.limits_cpu, total(|r| &r.cpu_limit), "CPU limits"),
            ("spec.resources.memory.request", &quota.requests_memory, total(|r| &r.memory_request), "memory requests"),
            ("spec.resources.memory.limit", &quota.limits_memory, total(|r| &r.memory_limit), "memory limits"),
            ("spec.resources.storage", &quota.requests_storage, storage, "storage"),
        ];
        for (field, allowed, needed, what) in checks {
            let Some(allowed) = allowed else { continue };
            if Quantity::parse(allowed).is_ok_and(|allowed| needed > allowed) {
                return Err(InvalidSpec::new(
                    field,
                    format!(
                        "the quota allows {allowed} of {what} but the tenant's own pods need {needed} (server {}, Redis {}, registry {} replicas, plus one rolling-update pod per Deployment): raise it or lower the component resources",
                        self.server.replicas, self.redis.replicas, self.registry.replicas
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The tenant-wide quota from `spec.resources`; storage is capped by its limit, else its request.
fn quota(spec: Option<&v1::ResourceRequirements>) -> Result<Option<QuotaModel>, InvalidSpec> {
    let Some(spec) = spec else { return Ok(None) };
    let checked = |field: &str, value: Option<&String>| -> Result<Option<String>, InvalidSpec> {
        value.map(|v| quantity_or(field, Some(v), "0")).transpose()
    };
    let storage = spec.storage.as_ref().and_then(|s| s.limit.as_ref().or(s.request.as_ref()));
    let quota = QuotaModel {
        requests_cpu: checked("spec.resources.cpu.request", spec.cpu.as_ref().and_then(|c| c.request.as_ref()))?,
        limits_cpu: checked("spec.resources.cpu.limit", spec.cpu.as_ref().and_then(|c| c.limit.as_ref()))?,
        requests_memory: checked(
            "spec.resources.memory.request",
            spec.memory.as_ref().and_then(|m| m.request.as_ref()),
        )?,
        limits_memory: checked("spec.resources.memory.limit", spec.memory.as_ref().and_then(|m| m.limit.as_ref()))?,
        requests_storage: checked("spec.resources.storage", storage)?,
    };
    Ok((quota != QuotaModel::default()).then_some(quota))
}

/// The namespace that holds a tenant's workloads.
pub fn namespace_name(tenant: &str) -> String {
    format!("tenant-{tenant}")
}

fn check_tenant_name(name: &str) -> Result<(), InvalidSpec> {
    let bytes = name.as_bytes();
    let valid = name.len() <= MAX_TENANT_NAME_LEN
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.last().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if valid {
        Ok(())
    } else {
        Err(InvalidSpec::new(
            "metadata.name",
            format!(
                "{name:?} cannot form tenant-<name> and the child names: use at most {MAX_TENANT_NAME_LEN} lowercase letters, digits and '-', starting with a letter"
            ),
        ))
    }
}

fn replicas(
    field: &str,
    value: Option<i32>,
    default: i32,
    range: std::ops::RangeInclusive<i32>,
) -> Result<i32, InvalidSpec> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(InvalidSpec::new(field, format!("{value} is outside {}..={}", range.start(), range.end())))
    }
}

fn image(field: &str, value: Option<String>, default: &str) -> Result<String, InvalidSpec> {
    match value {
        None => Ok(default.to_owned()),
        Some(image) if image.trim().is_empty() || image.contains(char::is_whitespace) => {
            Err(InvalidSpec::new(field, format!("{image:?} is not an image reference")))
        }
        Some(image) => Ok(image),
    }
}

fn quantity_or(field: &str, value: Option<&str>, default: &str) -> Result<String, InvalidSpec> {
    let value = value.unwrap_or(default);
    Quantity::parse(value).map_err(|e| InvalidSpec::new(field, e.to_string()))?;
    Ok(value.to_owned())
}

/// Resolves one resource (cpu or memory) to a (request, limit) pair. A limit set alone below the
/// default request pulls the request down with it, as Kubernetes does for a limit without request.
fn request_and_limit(
    field: &str,
    user: Option<&v1::ResourceLimit>,
    default_request: &str,
    default_limit: &str,
) -> Result<(String, String), InvalidSpec> {
    let user_request = user.and_then(|u| u.request.as_deref());
    let user_limit = user.and_then(|u| u.limit.as_deref());
    let limit = quantity_or(&format!("{field}.limit"), user_limit, default_limit)?;
    let request = quantity_or(&format!("{field}.request"), user_request, default_request)?;
    let (request_q, limit_q) = (Quantity::parse(&request), Quantity::parse(&limit));
    match (request_q, limit_q) {
        (Ok(r), Ok(l)) if r > l && user_request.is_none() => Ok((limit.clone(), limit)),
        (Ok(r), Ok(l)) if r > l => Err(InvalidSpec::new(
            format!("{field}.request"),
            format!("request {request} must not be greater than limit {limit}"),
        )),
        _ => Ok((request, limit)),
    }
}

fn resources(
    field: &str,
    user: Option<&v1::ResourceRequirements>,
    defaults: &ResourceDefaults,
) -> Result<ContainerResources, InvalidSpec> {
    let (cpu_request, cpu_limit) = request_and_limit(
        &format!("{field}.cpu"),
        user.and_then(|u| u.cpu.as_ref()),
        defaults.cpu_request,
        defaults.cpu_limit,
    )?;
    let (memory_request, memory_limit) = request_and_limit(
        &format!("{field}.memory"),
        user.and_then(|u| u.memory.as_ref()),
        defaults.memory_request,
        defaults.memory_limit,
    )?;
    Ok(ContainerResources { cpu_request, cpu_limit, memory_request, memory_limit })
}

fn env_var(index: usize, var: &v1::EnvVar) -> Result<core::EnvVar, InvalidSpec> {
    let field = format!("spec.server.env[{index}]");
    let value_from = match (&var.value, &var.value_from) {
        (Some(_), Some(_)) => {
            return Err(InvalidSpec::new(field, "set either value or valueFrom, not both"));
        }
        (_, None) => None,
        (None, Some(source)) => Some(match (&source.config_map_key_ref, &source.secret_key_ref) {
            (Some(r), None) => core::EnvVarSource {
                config_map_key_ref: Some(core::ConfigMapKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: r.optional,
                }),
                ..Default::default()
            },
            (None, Some(r)) => core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: r.optional,
                }),
                ..Default::default()
            },
            _ => {
                return Err(InvalidSpec::new(
                    format!("{field}.valueFrom"),
                    "set exactly one of configMapKeyRef or secretKeyRef",
                ));
            }
        }),
    };
    Ok(core::EnvVar { name: var.name.clone(), value: var.value.clone(), value_from })
}

fn peer_rule(rule: &v1::NetworkPolicyRule, pods: &BTreeMap<String, String>) -> PeerRule {
    let ports = rule
        .ports
        .iter()
        .map(|p| {
            let protocol = match p.protocol.unwrap_or_default() {
                v1::Protocol::Tcp => "TCP",
                v1::Protocol::Udp => "UDP",
                v1::Protocol::Sctp => "SCTP",
            };
            (protocol.to_owned(), p.port.filter(|port| *port != 0))
        })
        .collect();
    PeerRule { pods: pods.clone(), namespaces: rule.namespaces.clone(), ports }
}

fn network(spec: v1::NetworkPolicySpec) -> NetworkModel {
    NetworkModel {
        enabled: spec.enabled.unwrap_or(true),
        allowed_namespaces: spec.allowed_namespaces,
        ingress_rules: spec.ingress_rules.iter().map(|r| peer_rule(r, &r.from)).collect(),
        egress_rules: spec.egress_rules.iter().map(|r| peer_rule(r, &r.to)).collect(),
    }
}

fn redis_config(config: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, InvalidSpec> {
    for (key, value) in config {
        if !v1::REDIS_CONFIG_ALLOWED_KEYS.contains(&key.as_str()) {
            return Err(InvalidSpec::new(
                format!("spec.redis.config.{key}"),
                "this directive is reserved to the operator or unknown",
            ));
        }
        if value.contains(['\n', '\r']) {
            return Err(InvalidSpec::new(format!("spec.redis.config.{key}"), "values must not contain line breaks"));
        }
    }
    Ok(config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    pub(crate) fn tenant(name: &str, spec: v1::TenantSpec) -> v1::Tenant {
        v1::Tenant {
            metadata: ObjectMeta { name: Some(name.into()), uid: Some(format!("uid-{name}")), ..Default::default() },
            spec,
            status: None,
        }
    }

    fn limit(request: Option<&str>, limit: Option<&str>) -> Option<v1::ResourceLimit> {
        Some(v1::ResourceLimit { request: request.map(Into::into), limit: limit.map(Into::into) })
    }

    #[test]
    fn empty_spec_gets_the_documented_defaults() {
        let model = TenantModel::from_v1(&tenant("acme", v1::TenantSpec::default())).unwrap();
        assert_eq!(model.namespace, "tenant-acme");
        assert_eq!(model.server.replicas, 1);
        assert_eq!(model.server.image, "neurallog/server:latest");
        assert_eq!(model.redis.image, "redis:7-alpine");
        assert_eq!(model.redis.storage, "1Gi");
        assert_eq!(
            model.server.resources,
            ContainerResources {
                cpu_request: "100m".into(),
                cpu_limit: "500m".into(),
                memory_request: "128Mi".into(),
                memory_limit: "512Mi".into()
            }
        );
        assert_eq!(model.redis.resources.memory_limit, "256Mi");
        assert!(model.owner.controller.unwrap());
    }

    #[test]
    fn a_limit_alone_below_the_default_request_pulls_the_request_down() {
        let spec = v1::TenantSpec {
            server: Some(v1::ServerSpec {
                resources: Some(v1::ResourceRequirements { cpu: limit(None, Some("50m")), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let model = TenantModel::from_v1(&tenant("acme", spec)).unwrap();
        assert_eq!(model.server.resources.cpu_request, "50m");
        assert_eq!(model.server.resources.cpu_limit, "50m");
    }

    #[test]
    fn invalid_values_are_reported_with_their_field() {
        let cases: Vec<(v1::TenantSpec, &str)> = vec![
            (
                v1::TenantSpec {
                    redis: Some(v1::RedisSpec {
                        resources: Some(v1::ResourceRequirements {
                            memory: limit(Some("1Gi"), Some("1x")),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.redis.resources.memory.limit",
            ),
            (
                v1::TenantSpec {
                    server: Some(v1::ServerSpec {
                        resources: Some(v1::ResourceRequirements {
                            cpu: limit(Some("2"), Some("1")),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.server.resources.cpu.request",
            ),
            (
                v1::TenantSpec {
                    server: Some(v1::ServerSpec { replicas: Some(0), ..Default::default() }),
                    ..Default::default()
                },
                "spec.server.replicas",
            ),
            (
                v1::TenantSpec {
                    redis: Some(v1::RedisSpec { replicas: Some(3), ..Default::default() }),
                    ..Default::default()
                },
                "spec.redis.replicas",
            ),
            (
                v1::TenantSpec {
                    server: Some(v1::ServerSpec {
                        env: vec![v1::EnvVar {
                            name: "A".into(),
                            value: Some("x".into()),
                            value_from: Some(v1::EnvVarSource::default()),
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.server.env[0]",
            ),
            (
                v1::TenantSpec {
                    server: Some(v1::ServerSpec {
                        env: vec![v1::EnvVar {
                            name: "A".into(),
                            value: None,
                            value_from: Some(v1::EnvVarSource::default()),
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.server.env[0].valueFrom",
            ),
            (
                v1::TenantSpec {
                    redis: Some(v1::RedisSpec {
                        config: [("rename-command".to_string(), "FLUSHALL x".to_string())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.redis.config.rename-command",
            ),
            (
                v1::TenantSpec {
                    redis: Some(v1::RedisSpec {
                        config: [("timeout".to_string(), "0\nrequirepass x".to_string())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "spec.redis.config.timeout",
            ),
        ];
        for (spec, field) in cases {
            let err = TenantModel::from_v1(&tenant("acme", spec)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn a_budget_must_fit_the_tenants_own_pods_including_a_rolling_update() {
        let budget = |cpu_limit: &str| v1::TenantSpec {
            resources: Some(v1::ResourceRequirements { cpu: limit(None, Some(cpu_limit)), ..Default::default() }),
            ..Default::default()
        };
        // Server (1 + 1 surge) x 500m + Redis 300m + registry (1 + 1 surge) x 200m = 1700m.
        assert!(TenantModel::from_v1(&tenant("acme", budget("1700m"))).is_ok());
        let err = TenantModel::from_v1(&tenant("acme", budget("1600m"))).unwrap_err();
        assert_eq!(err.field, "spec.resources.cpu.limit");
        assert!(err.message.contains("allows 1600m") && err.message.contains("need 1700m"), "{}", err.message);

        let storage = v1::TenantSpec {
            resources: Some(v1::ResourceRequirements { storage: limit(Some("512Mi"), None), ..Default::default() }),
            ..Default::default()
        };
        let err = TenantModel::from_v1(&tenant("acme", storage)).unwrap_err();
        assert_eq!(err.field, "spec.resources.storage");
    }

    #[test]
    fn names_that_cannot_form_child_names_are_rejected() {
        for name in ["1acme", "acme-", "Acme", "ac.me", &"a".repeat(MAX_TENANT_NAME_LEN + 1)] {
            let err = TenantModel::from_v1(&tenant(name, v1::TenantSpec::default())).unwrap_err();
            assert_eq!(err.field, "metadata.name");
        }
        assert!(TenantModel::from_v1(&tenant(&"a".repeat(MAX_TENANT_NAME_LEN), v1::TenantSpec::default())).is_ok());
    }

    #[test]
    fn env_references_map_to_kubernetes_selectors() {
        let spec = v1::TenantSpec {
            server: Some(v1::ServerSpec {
                env: vec![v1::EnvVar {
                    name: "API_KEY".into(),
                    value: None,
                    value_from: Some(v1::EnvVarSource {
                        secret_key_ref: Some(v1::KeySelector {
                            name: "tenant-secrets".into(),
                            key: "api-key".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let model = TenantModel::from_v1(&tenant("acme", spec)).unwrap();
        let selector = model.server.env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str(), selector.optional),
            ("tenant-secrets", "api-key", Some(true))
        );
    }
}
