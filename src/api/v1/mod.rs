//! `neurallog.io/v1` `Tenant`, deprecated in favour of `v2` and served through the conversion
//! webhook: wire-compatible with the original operator's schema (every field and JSON name kept),
//! with the validation the original lacked and the `Degraded` tenant phase the web admin already
//! shows. The controller never reads it; it exists as a schema and a conversion
//! ([`crate::api::conversion`]).
//!
//! The CRD is generated from these types (`tenant-operator crd`); doc comments become the
//! descriptions `kubectl explain` prints, so they are written for platform engineers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    APPENDONLY_MESSAGE, APPENDONLY_RULE, DATA_KEY_PATTERN, ENV_NAME_PATTERN, IMAGE_PATTERN, LABEL_KEYS_RULE,
    LABEL_VALUE_PATTERN, NAME_LENGTH_MESSAGE, NAME_LENGTH_RULE, NAME_PATTERN_MESSAGE, NAME_PATTERN_RULE,
    NAMESPACE_PATTERN, ONE_LINE_RULE, QUANTITY_PATTERN, REDIS_ENUM_DIRECTIVES, REDIS_INTEGER_DIRECTIVES,
    SUBDOMAIN_PATTERN, keys_rule,
};
pub use super::common::{ComponentPhase, ComponentStatus, DeletionPolicy, OperandImages, Protocol, TenantPhase};
use crate::model::REDIS_CONFIG_ALLOWED_KEYS;

/// Desired state of a NeuralLog tenant. Every field is optional; `kubectl get tenant -o yaml`
/// shows the defaults the API server filled in.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "neurallog.io",
    version = "v1",
    kind = "Tenant",
    plural = "tenants",
    singular = "tenant",
    shortname = "nlt",
    category = "neurallog",
    status = "TenantStatus",
    derive = "PartialEq",
    deprecated = "neurallog.io/v1 Tenant is deprecated; use neurallog.io/v2 Tenant (the same objects; kubectl explain tenants.v2.neurallog.io)",
    doc = "A NeuralLog tenant: an isolated namespace tenant-<name> with its own NeuralLog server, Redis and endpoint registry, network isolation and quotas, registered with NeuralLog Auth; managed by the NeuralLog Tenant Operator.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase", description = "Tenant phase"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace", description = "Namespace holding the tenant's workloads"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether every component is ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(NAME_PATTERN_RULE).message(NAME_PATTERN_MESSAGE),
    validation = Rule::new(NAME_LENGTH_RULE).message(NAME_LENGTH_MESSAGE),
    // On the whole object, so that no way of writing an update escapes it: a replace that leaves
    // the field or its parent out gets the default again, and one that sets either to null
    // would otherwise skip a rule on the field itself.
    validation = Rule::new("!has(oldSelf.spec.redis) || !has(oldSelf.spec.redis.storage) || (has(self.spec.redis) && has(self.spec.redis.storage) && self.spec.redis.storage == oldSelf.spec.redis.storage)")
        .message("spec.redis.storage is immutable: the data volume of an existing Redis cannot be resized by the operator (an update that leaves it out or sets it or spec.redis to null would change it too)")
        .field_path(".spec.redis.storage")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Human-readable name shown by the NeuralLog web admin. Not used by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,

    /// Free-text description shown by the NeuralLog web admin. Not used by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,

    /// Tenant-wide budget, enforced in the tenant namespace by a ResourceQuota `<name>-quota`:
    /// `cpu` and `memory` requests and limits cap the sum over all pods, and `storage` (its limit,
    /// else its request) caps the storage all PersistentVolumeClaims may request. A LimitRange
    /// `<name>-limits` gives containers that declare nothing default requests and limits that fit
    /// the budget. The operator's own pods (server, Redis, registry, plus one extra pod per
    /// Deployment during a rolling update) must fit, or the tenant is Failed with the shortfall
    /// named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The tenant's NeuralLog server (Deployment and Service `<name>-server`, port 3030).
    #[serde(default = "defaults::server", skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,

    /// The tenant's Redis, which stores the server's logs (StatefulSet and headless Service
    /// `<name>-redis`, port 6379, password-protected).
    #[serde(default = "defaults::redis", skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,

    /// The tenant's endpoint registry (Deployment and Service `<name>-registry`, port 3031), which
    /// tells NeuralLog clients where the tenant's services are. With `baseDomain`, it is published
    /// by an Ingress at `registry.<name>.<baseDomain>`.
    #[serde(default = "defaults::registry", skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,

    /// Network isolation of the tenant namespace: ingress is denied by default; Redis is
    /// reachable only from the server; the server and the registry from each other and, on their
    /// HTTP ports, from the allowed namespaces and the operator's ingress namespace
    /// (--ingress-namespace); the rules given here open or limit the server only.
    #[serde(default = "defaults::network_policy", skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// What deleting the Tenant does to its data; left out, the policy in force stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// CPU, memory and storage, each as a request and a limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// CPU request and limit, in cores (for example `100m` or `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<ResourceLimit>,
    /// Memory request and limit, in bytes (for example `128Mi` or `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceLimit>,
    /// Storage request and limit (for example `10Gi`). Not used by component resources; Redis
    /// storage is `spec.redis.storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ResourceLimit>,
}

/// A request and a limit, as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "!has(self.request) || !has(self.limit) || !isQuantity(self.request) || !isQuantity(self.limit) || quantity(self.request).compareTo(quantity(self.limit)) <= 0"
).message("request must not be greater than limit").field_path(".request"))]
#[x_kube(validation = Rule::new("!has(self.limit) || !isQuantity(self.limit) || quantity(self.limit).compareTo(quantity('1E')) <= 0")
    .message("limit must be at most 1E").field_path(".limit"))]
#[x_kube(validation = Rule::new("!has(self.request) || !isQuantity(self.request) || quantity(self.request).compareTo(quantity('1E')) <= 0")
    .message("request must be at most 1E").field_path(".request"))]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimit {
    /// Maximum the container may use, as a Kubernetes quantity (for example `500m`, `512Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = QUANTITY_PATTERN),
        length(max = 32)
    )]
    pub limit: Option<String>,
    /// Amount reserved for the container, as a Kubernetes quantity (for example `100m`, `128Mi`).
    /// When only a limit is set and it is below the operator's default request, the request
    /// follows the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = QUANTITY_PATTERN),
        length(max = 32)
    )]
    pub request: Option<String>,
}

/// The NeuralLog server Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Number of server pods.
    #[serde(default = "defaults::server_replicas", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: Option<i32>,

    /// Container image of the NeuralLog server. Left out, the image of the tenant's NeuralLog version (the
    /// operator's `RELATED_IMAGE_SERVER` for its default version, that repository tagged with any
    /// other). Set, it replaces that image for this tenant and changes with the spec, not with
    /// rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_PATTERN), length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory of each server container. Defaults: requests 100m CPU and 128Mi memory,
    /// limits 500m CPU and 512Mi memory; each value can be set on its own. Storage is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables for the server container. They come after the operator's own
    /// variables, so an entry with the same name overrides the built-in value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

/// An environment variable: a literal `value` or a reference in `valueFrom`, not both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))")
    .message("env entry must set either value or valueFrom, not both"))]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Name of the variable.
    #[schemars(regex(pattern = ENV_NAME_PATTERN), length(min = 1, max = 256))]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub value: Option<String>,
    /// Value read from a key of a ConfigMap or Secret in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value comes from: exactly one of a ConfigMap key or a Secret
/// key in the tenant namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.configMapKeyRef) != has(self.secretKeyRef)")
    .message("valueFrom must set exactly one of configMapKeyRef or secretKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a ConfigMap in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
}

/// A key of a ConfigMap or Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// Name of the ConfigMap or Secret.
    #[schemars(
        regex(pattern = SUBDOMAIN_PATTERN),
        length(min = 1, max = 253)
    )]
    pub name: String,
    /// Key within it.
    #[schemars(regex(pattern = DATA_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
    /// Whether the pod may start when the object or key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// The Redis StatefulSet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "!has(self.resources) || !has(self.resources.memory) || !has(self.resources.memory.limit) || !isQuantity(self.resources.memory.limit) || quantity(self.resources.memory.limit).compareTo(quantity('64Mi')) >= 0"
).message("spec.redis.resources.memory.limit must be at least 64Mi: Redis holds the tenant's logs in memory (maxmemory is 80% of the limit) and with less would evict them almost as soon as they are written").field_path(".resources.memory.limit"))]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Number of Redis pods. Only 1 is supported until replication exists: more pods would be
    /// unrelated primaries behind one Service.
    #[serde(default = "defaults::redis_replicas", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1))]
    pub replicas: Option<i32>,

    /// Container image of Redis. Left out, the Redis image of the operator release (tested
    /// with every NeuralLog version it offers). Set, it replaces that image for this tenant and
    /// changes with the spec, not with rollouts. The Redis volume is kept across image changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_PATTERN), length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory of the Redis container. Defaults: requests 100m CPU and 128Mi memory,
    /// limits 300m CPU and 256Mi memory. Redis `maxmemory` is set to 80% of the memory limit,
    /// which must be at least 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Size of the Redis data volume, as a Kubernetes quantity. Cannot be changed after creation
    /// (the rule is on the Tenant, so that no form of update escapes it).
    #[serde(default = "defaults::redis_storage", skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = QUANTITY_PATTERN),
        length(max = 32)
    )]
    #[x_kube(validation = Rule::new("!isQuantity(self) || quantity(self).compareTo(quantity('1E')) <= 0")
        .message("spec.redis.storage must be at most 1E"))]
    pub storage: Option<String>,

    /// Extra redis.conf directives, one `key value` line each. Only tuning directives are
    /// accepted (see the allow-list in the validation message); values may not contain newlines.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(validation = Rule::new(keys_rule(REDIS_CONFIG_ALLOWED_KEYS)).message(Message::Message(redis_config_key_message())))]
    #[x_kube(validation = Rule::new(APPENDONLY_RULE).message(APPENDONLY_MESSAGE))]
    #[x_kube(validation = Rule::new(ONE_LINE_RULE).message("spec.redis.config values must not contain line breaks"))]
    #[x_kube(validation = Rule::new(redis_typed_values_rule()).message(Message::Message(redis_typed_values_message())))]
    pub config: BTreeMap<String, String>,
}

fn redis_config_key_message() -> String {
    format!("spec.redis.config keys must be one of: {}", REDIS_CONFIG_ALLOWED_KEYS.join(", "))
}

/// CEL: the directives `v2` types hold values of their type (one of the named words, or a decimal
/// integer within bounds).
fn redis_typed_values_rule() -> String {
    let words = REDIS_ENUM_DIRECTIVES.iter().map(|(key, values)| {
        let values: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
        format!("(!('{key}' in self) || self['{key}'] in [{}])", values.join(", "))
    });
    let integers = REDIS_INTEGER_DIRECTIVES.iter().map(|(key, min, max)| {
        format!(
            "(!('{key}' in self) || (self['{key}'].matches('^(0|[1-9][0-9]{{0,9}})$') && int(self['{key}']) >= {min} && int(self['{key}']) <= {max}))"
        )
    });
    words.chain(integers).collect::<Vec<_>>().join(" && ")
}

fn redis_typed_values_message() -> String {
    let words = REDIS_ENUM_DIRECTIVES.iter().map(|(key, values)| format!("{key} one of {}", values.join(", ")));
    let integers =
        REDIS_INTEGER_DIRECTIVES.iter().map(|(key, min, max)| format!("{key} an integer from {min} to {max}"));
    format!("spec.redis.config values: {}", words.chain(integers).collect::<Vec<_>>().join("; "))
}

/// The tenant's endpoint registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Number of registry pods.
    #[serde(default = "defaults::registry_replicas", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: Option<i32>,
    /// Container image of the registry. Left out, the image of the tenant's NeuralLog version (the
    /// operator's `RELATED_IMAGE_REGISTRY` for its default version, that repository tagged with any
    /// other). Set, it replaces that image for this tenant and changes with the spec, not with
    /// rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_PATTERN), length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory of each registry container. Defaults: requests 50m CPU and 64Mi memory,
    /// limits 200m CPU and 128Mi memory. Storage is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Base domain of the tenant's public endpoints, such as `neurallog.app`: the registry then
    /// announces `https://api.<name>.<baseDomain>` and is published at
    /// `registry.<name>.<baseDomain>`. Without it the registry announces in-cluster URLs and has
    /// no Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = SUBDOMAIN_PATTERN),
        length(min = 1, max = 200)
    )]
    pub base_domain: Option<String>,
}

/// Network isolation of the tenant namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Whether the operator manages NetworkPolicies for the tenant.
    #[serde(default = "defaults::network_policy_enabled", skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespaces whose pods may reach the tenant's server and registry on their HTTP ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(regex(pattern = NAMESPACE_PATTERN), length(min = 1, max = 63))
    )]
    pub allowed_namespaces: Vec<String>,
    /// Extra ingress rules for the server pods, one NetworkPolicy each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ingress_rules: Vec<NetworkPolicyRule>,
    /// Extra egress rules for the server pods. With any of them, the server's egress is limited to
    /// these rules plus DNS and the tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub egress_rules: Vec<NetworkPolicyRule>,
}

/// One custom network rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyRule {
    /// What the rule is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Labels of the pods allowed to connect (ingress rules): Kubernetes label keys and values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    #[x_kube(validation = Rule::new(LABEL_KEYS_RULE).message("every key of from must be a Kubernetes label key ([prefix/]name: a DNS subdomain of at most 253 characters, and a name of at most 63 letters, digits, '-', '_' or '.' starting and ending with a letter or digit)"))]
    pub from: BTreeMap<String, String>,
    /// Labels of the pods that may be reached (egress rules): Kubernetes label keys and values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    #[x_kube(validation = Rule::new(LABEL_KEYS_RULE).message("every key of to must be a Kubernetes label key ([prefix/]name: a DNS subdomain of at most 253 characters, and a name of at most 63 letters, digits, '-', '_' or '.' starting and ending with a letter or digit)"))]
    pub to: BTreeMap<String, String>,
    /// Namespaces the peer pods (`from` or `to`) live in. Empty means the tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(regex(pattern = NAMESPACE_PATTERN), length(min = 1, max = 63))
    )]
    pub namespaces: Vec<String>,
    /// Ports the rule opens; none means all ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<NetworkPolicyPort>,
}

/// A port and protocol.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPort {
    /// Protocol of the port.
    #[serde(default = "defaults::protocol", skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Port number; 0 means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i32>,
}

/// Observed state of a tenant, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Standard conditions: `Ready`, one per component (`NamespaceReady`, `RedisReady`,
    /// `ServerReady`, `RegistryReady`), `AuthRegistered`, and `RolloutWithoutSurge` while the
    /// budget leaves no room for surge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Summary of the tenant's state, derived from its components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,
    /// Name of the tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Health of the NeuralLog server Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_status: Option<ComponentStatus>,
    /// Health of the Redis StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_status: Option<ComponentStatus>,
    /// Health of the endpoint registry Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_status: Option<ComponentStatus>,
    /// The NeuralLog version the tenant last ran Ready on every component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The NeuralLog version the tenant should run: the operator's default, or the version a
    /// `v2` client pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// The version it ran before `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// The images of the NeuralLog version the operator applies now, one component at a time
    /// during an upgrade. A component given an image in the spec runs that one instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<OperandImages>,
    /// The newest backup that succeeded, and where the tenant was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<super::backup::BackupStatus>,
}

/// Schema defaults (`default:` in the CRD), from the one place defaults live.
mod defaults {
    use super::{NetworkPolicySpec, RedisSpec, RegistrySpec, ServerSpec};
    pub use crate::api::common::schema_defaults::*;

    pub fn server() -> Option<ServerSpec> {
        Some(ServerSpec { replicas: server_replicas(), ..ServerSpec::default() })
    }
    pub fn redis() -> Option<RedisSpec> {
        Some(RedisSpec { replicas: redis_replicas(), storage: redis_storage(), ..RedisSpec::default() })
    }
    pub fn registry() -> Option<RegistrySpec> {
        Some(RegistrySpec { replicas: registry_replicas(), ..RegistrySpec::default() })
    }
    pub fn network_policy() -> Option<NetworkPolicySpec> {
        Some(NetworkPolicySpec { enabled: network_policy_enabled(), ..NetworkPolicySpec::default() })
    }
}
