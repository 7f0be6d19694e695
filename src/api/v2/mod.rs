//! `neurallog.io/v2` `Tenant`, the storage version and the only one the controller reads and
//! writes. Standard Kubernetes shapes: resources as `requests`/`limits` maps, environment
//! variables as the core `EnvVar`, network peers as pod and namespace label selectors, typed Redis
//! settings (allow-listed extras kept as directives), the registry's public exposure as its own
//! object. `v1` objects convert to and from it losslessly ([`crate::api::conversion`]).
//!
//! The CRD is generated from these types (`tenant-operator crd`); doc comments become the
//! descriptions `kubectl explain` prints, so they are written for platform engineers.

mod mapping;

pub(crate) use mapping::named_peers;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::backup::{BackupSpec, BackupStatus, RestoreFrom};
use super::common::{
    APPENDONLY_MESSAGE, APPENDONLY_RULE, DATA_KEY_PATTERN, ENV_NAME_PATTERN, IMAGE_PATTERN, LABEL_KEYS_RULE,
    LABEL_VALUE_PATTERN, NAME_LENGTH_MESSAGE, NAME_LENGTH_RULE, NAME_PATTERN_MESSAGE, NAME_PATTERN_RULE,
    NAMESPACE_PATTERN, ONE_LINE_RULE, QUANTITY_PATTERN, SUBDOMAIN_PATTERN, VERSION_PATTERN, keys_rule,
    untyped_redis_directives,
};
pub use super::common::{ComponentPhase, ComponentStatus, DeletionPolicy, OperandImages, Protocol, TenantPhase};

/// Desired state of a NeuralLog tenant. Every field is optional; `kubectl get tenant -o yaml`
/// shows the defaults the API server filled in.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "neurallog.io",
    version = "v2",
    kind = "Tenant",
    plural = "tenants",
    singular = "tenant",
    shortname = "nlt",
    category = "neurallog",
    status = "TenantStatus",
    derive = "PartialEq",
    doc = "A NeuralLog tenant: an isolated namespace tenant-<name> with its own NeuralLog server, Redis and endpoint registry, network isolation and quotas, registered with NeuralLog Auth; managed by the NeuralLog Tenant Operator.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase", description = "Tenant phase"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace", description = "Namespace holding the tenant's workloads"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether every component is ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(NAME_PATTERN_RULE).message(NAME_PATTERN_MESSAGE),
    validation = Rule::new(NAME_LENGTH_RULE).message(NAME_LENGTH_MESSAGE),
    // On the whole object, so that no way of writing an update escapes it (see v1).
    validation = Rule::new("!has(oldSelf.spec.redis) || !has(oldSelf.spec.redis.storage) || (has(self.spec.redis) && has(self.spec.redis.storage) && self.spec.redis.storage == oldSelf.spec.redis.storage)")
        .message("spec.redis.storage is immutable: the data volume of an existing Redis cannot be resized by the operator (an update that leaves it out or sets it or spec.redis to null would change it too)")
        .field_path(".spec.redis.storage"),
    validation = Rule::new(VERSION_DOWNGRADE_RULE).message(VERSION_DOWNGRADE_MESSAGE).field_path(".spec.version"),
    validation = Rule::new(VERSION_MAJOR_RULE).message(VERSION_MAJOR_MESSAGE).field_path(".spec.version"),
    validation = Rule::new("!has(self.spec.restoreFrom) || (has(oldSelf.spec.restoreFrom) && self.spec.restoreFrom == oldSelf.spec.restoreFrom)")
        .message("spec.restoreFrom is set only when a tenant is created: a restore writes only into a new, empty Redis")
        .field_path(".spec.restoreFrom")
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

    /// The NeuralLog version the tenant runs (`MAJOR.MINOR.PATCH`). Left out, the tenant follows
    /// the operator's default, taken in waves when an operator upgrade moves it. A lower version
    /// than the one running is refused, but for a rollback to `status.previousVersion`; a new major
    /// version needs `spec.upgrade.allowMajorVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 64))]
    pub version: Option<String>,

    /// How the tenant takes new NeuralLog versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgrade>,

    /// What deleting the Tenant does to its data; left out, the policy in force stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Tenant-wide budget, enforced in the tenant namespace by a ResourceQuota `<name>-quota`:
    /// `requests` and `limits` of `cpu` and `memory` cap the sum over all pods, and
    /// `requests.storage` caps the storage all PersistentVolumeClaims may request. A LimitRange
    /// `<name>-limits` gives containers that declare nothing default requests and limits that fit
    /// the budget. The operator's own pods (server, Redis, registry, and a backup pod when
    /// `spec.backup` is set) must fit, or the tenant is Failed with the shortfall named; a budget without room for a rolling update's extra pod
    /// makes the Deployments roll out without surge (condition `RolloutWithoutSurge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,

    /// The tenant's NeuralLog server (Deployment and Service `<name>-server`, port 3030).
    #[serde(default = "defaults::server", skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,

    /// The tenant's Redis, which stores the server's logs (StatefulSet and headless Service
    /// `<name>-redis`, port 6379, password-protected).
    #[serde(default = "defaults::redis", skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,

    /// The tenant's endpoint registry (Deployment and Service `<name>-registry`, port 3031), which
    /// tells NeuralLog clients where the tenant's services are.
    #[serde(default = "defaults::registry", skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,

    /// Network isolation of the tenant namespace: ingress is denied by default; Redis is
    /// reachable only from the server; the server and the registry from each other and, on their
    /// HTTP ports, from the allowed namespaces and the operator's ingress namespace
    /// (--ingress-namespace); the rules given here open or limit the server only.
    #[serde(default = "defaults::network_policy", skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicy>,

    /// Backups of the tenant's logs (its Redis): where they go, when, and how many are kept. Each
    /// backup is a TenantBackup, run as a Job in the tenant namespace under its budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// A backup the new tenant's Redis starts from, restored into its empty volume before the
    /// server starts. Only when the tenant is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
}

/// The version a new `spec.version` is compared with: the one running, else the one pinned before.
/// Empty on a create, and when neither is known. Only a changed `spec.version` is checked, so a
/// status update never trips the rules.
macro_rules! version_rule {
    ($check:literal) => {
        concat!(
            "!has(self.spec.version) || (has(oldSelf.spec.version) && oldSelf.spec.version == self.spec.version) || ",
            "(has(self.status) && has(self.status.version) && isSemver(self.status.version) ",
            "? [self.status.version] : has(oldSelf.spec.version) && isSemver(oldSelf.spec.version) ? [oldSelf.spec.version] : [])",
            ".all(before, ",
            $check,
            ")"
        )
    };
}

/// A lower version than the one running, unless it is the one it ran before (a rollback).
const VERSION_DOWNGRADE_RULE: &str = version_rule!(
    "!semver(self.spec.version).isLessThan(semver(before)) || (has(self.status) && has(self.status.previousVersion) && self.spec.version == self.status.previousVersion)"
);
const VERSION_DOWNGRADE_MESSAGE: &str = "spec.version may not be lower than the version the tenant runs (status.version): a downgrade is refused; the one way back is a rollback to status.previousVersion";
/// A new major version, unless allowed.
const VERSION_MAJOR_RULE: &str = version_rule!(
    "semver(self.spec.version).major() <= semver(before).major() || (has(self.spec.upgrade) && has(self.spec.upgrade.allowMajorVersion) && self.spec.upgrade.allowMajorVersion)"
);
const VERSION_MAJOR_MESSAGE: &str =
    "spec.version is a new major version: set spec.upgrade.allowMajorVersion to true to move across it";

/// How a tenant takes new NeuralLog versions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Upgrade {
    /// Whether a tenant without `spec.version` takes a new default of the operator (through the
    /// rollout, in waves). `false` keeps the version it runs and leaves it out of rollouts, also
    /// one in progress (its failure then halts nobody). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic: Option<bool>,
    /// Whether the version may move to a new major version: a `spec.version`, or the operator's
    /// default. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_major_version: Option<bool>,
}

/// The tenant-wide budget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(not_above("requests.cpu", "limits.cpu")).message("requests.cpu must not be greater than limits.cpu").field_path(".requests.cpu"))]
#[x_kube(validation = Rule::new(not_above("requests.memory", "limits.memory")).message("requests.memory must not be greater than limits.memory").field_path(".requests.memory"))]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// What all pods together may request: `cpu`, `memory`, and `storage` (the sum of every
    /// PersistentVolumeClaim's request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<QuotaRequests>,
    /// What all pods' limits may add up to: `cpu` and `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
}

/// Requests of the whole tenant, as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(at_most_1e("cpu")).message("cpu must be at most 1E").field_path(".cpu"))]
#[x_kube(validation = Rule::new(at_most_1e("memory")).message("memory must be at most 1E").field_path(".memory"))]
#[x_kube(validation = Rule::new(at_most_1e("storage")).message("storage must be at most 1E").field_path(".storage"))]
#[serde(rename_all = "camelCase")]
pub struct QuotaRequests {
    /// CPU, in cores (for example `500m` or `4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    pub cpu: Option<String>,
    /// Memory, in bytes (for example `2Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    pub memory: Option<String>,
    /// Storage of all PersistentVolumeClaims together (for example `20Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    pub storage: Option<String>,
}

/// CPU and memory, as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(at_most_1e("cpu")).message("cpu must be at most 1E").field_path(".cpu"))]
#[x_kube(validation = Rule::new(at_most_1e("memory")).message("memory must be at most 1E").field_path(".memory"))]
#[serde(rename_all = "camelCase")]
pub struct ResourceList {
    /// CPU, in cores (for example `100m` or `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    pub cpu: Option<String>,
    /// Memory, in bytes (for example `128Mi` or `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    pub memory: Option<String>,
}

/// CPU and memory of one container, as a container's `resources` says them. A value left out
/// takes the component's default; a limit set alone below the default request pulls the request
/// down to it, a request set alone above the default limit lifts the limit to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(not_above("requests.cpu", "limits.cpu")).message("requests.cpu must not be greater than limits.cpu").field_path(".requests.cpu"))]
#[x_kube(validation = Rule::new(not_above("requests.memory", "limits.memory")).message("requests.memory must not be greater than limits.memory").field_path(".requests.memory"))]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Amount reserved for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
    /// Maximum the container may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
}

/// CEL: `request` (a dotted path under self) is not above `limit`, when both are set.
fn not_above(request: &str, limit: &str) -> String {
    let present = |path: &str| {
        let (parent, leaf) = path.split_once('.').unwrap_or((path, ""));
        format!("has(self.{parent}) && has(self.{parent}.{leaf}) && isQuantity(self.{path})")
    };
    format!(
        "!({}) || !({}) || quantity(self.{request}).compareTo(quantity(self.{limit})) <= 0",
        present(request),
        present(limit)
    )
}

/// CEL: the quantity `field` of self, when set, is at most 1E.
fn at_most_1e(field: &str) -> String {
    format!("!has(self.{field}) || !isQuantity(self.{field}) || quantity(self.{field}).compareTo(quantity('1E')) <= 0")
}

/// The NeuralLog server Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Server {
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
    /// limits 500m CPU and 512Mi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Extra environment variables for the server container, as a container's `env` takes them.
    /// They come after the operator's own variables, so an entry with the same name overrides the
    /// built-in value.
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
    /// Where the value comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value comes from: exactly one of a ConfigMap key, a Secret key
/// (both in the tenant namespace) or a field of the server pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.configMapKeyRef), has(self.secretKeyRef), has(self.fieldRef)].filter(x, x).size() == 1")
    .message("valueFrom must set exactly one of configMapKeyRef, secretKeyRef or fieldRef"))]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a ConfigMap in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A field of the server pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldSelector>,
}

/// A key of a ConfigMap or Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// Name of the ConfigMap or Secret.
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub name: String,
    /// Key within it.
    #[schemars(regex(pattern = DATA_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
    /// Whether the pod may start when the object or key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A field of the pod, by its path.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldSelector {
    /// Path of the field: one of the pod fields Kubernetes exposes to environment variables.
    #[schemars(extend("enum" = [
        "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
        "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"
    ]))]
    pub field_path: String,
}

/// The Redis StatefulSet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "!has(self.resources) || !has(self.resources.limits) || !has(self.resources.limits.memory) || !isQuantity(self.resources.limits.memory) || quantity(self.resources.limits.memory).compareTo(quantity('64Mi')) >= 0"
).message("spec.redis.resources.limits.memory must be at least 64Mi: Redis holds the tenant's logs in memory (maxmemory is 80% of the limit) and with less would evict them almost as soon as they are written").field_path(".resources.limits.memory"))]
#[serde(rename_all = "camelCase")]
pub struct Redis {
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
    pub resources: Option<Resources>,

    /// Size of the Redis data volume, as a Kubernetes quantity. Cannot be changed after creation
    /// (the rule is on the Tenant, so that no form of update escapes it).
    #[serde(default = "defaults::redis_storage", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("!isQuantity(self) || quantity(self).compareTo(quantity('1E')) <= 0")
        .message("spec.redis.storage must be at most 1E"))]
    pub storage: Option<String>,

    /// Redis settings beyond the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RedisConfig>,
}

/// Redis settings: the common ones typed, other tuning directives in `extra`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedisConfig {
    /// What Redis evicts when it reaches `maxmemory` (directive `maxmemory-policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmemory_policy: Option<MaxmemoryPolicy>,
    /// How often the append-only file is synced to disk (directive `appendfsync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appendfsync: Option<Appendfsync>,
    /// Verbosity of the Redis log (directive `loglevel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglevel: Option<LogLevel>,
    /// Seconds after which an idle client is disconnected; 0 never (directive `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub timeout: Option<i64>,
    /// Seconds between TCP keepalive probes to clients; 0 none (directive `tcp-keepalive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub tcp_keepalive: Option<i64>,
    /// Number of logical databases (directive `databases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub databases: Option<i64>,
    /// Most clients connected at once (directive `maxclients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub maxclients: Option<i64>,
    /// Frequency of Redis' background tasks, per second (directive `hz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub hz: Option<i64>,
    /// Other redis.conf tuning directives, one `directive value` line each. Only the directives in
    /// the validation message are accepted (everything about networking, files, authentication,
    /// modules and commands is the operator's), values on one line; `appendonly` must be `yes`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(validation = Rule::new(keys_rule(&untyped_redis_directives())).message(Message::Message(extra_keys_message())))]
    #[x_kube(validation = Rule::new(APPENDONLY_RULE).message(APPENDONLY_MESSAGE))]
    #[x_kube(validation = Rule::new(ONE_LINE_RULE).message("spec.redis.config.extra values must not contain line breaks"))]
    pub extra: BTreeMap<String, String>,
}

fn extra_keys_message() -> String {
    format!(
        "spec.redis.config.extra keys must be one of: {} (the others have typed fields)",
        untyped_redis_directives().join(", ")
    )
}

/// Redis' eviction policies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    Noeviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

/// Redis' append-only file sync policies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Appendfsync {
    Always,
    Everysec,
    No,
}

/// Redis' log levels.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    Debug,
    Verbose,
    Notice,
    Warning,
    Nothing,
}

/// The tenant's endpoint registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
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
    /// limits 200m CPU and 128Mi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Publishing the tenant's endpoints outside the cluster. Without it the registry announces
    /// in-cluster URLs and has no Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
}

/// The registry's public exposure.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// Base domain of the tenant's public endpoints, such as `neurallog.app`: the registry then
    /// announces `https://api.<name>.<baseDomain>` and is published by an Ingress at
    /// `registry.<name>.<baseDomain>`.
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 200))]
    pub base_domain: String,
}

/// Network isolation of the tenant namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    /// Whether the operator manages NetworkPolicies for the tenant.
    #[serde(default = "defaults::network_policy_enabled", skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespaces whose pods may reach the tenant's server and registry on their HTTP ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = NAMESPACE_PATTERN), length(min = 1, max = 63)))]
    pub allowed_namespaces: Vec<String>,
    /// Extra ingress rules for the server pods, one NetworkPolicy each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ingress: Vec<IngressRule>,
    /// Extra egress rules for the server pods. With any of them, the server's egress is limited to
    /// these rules plus DNS and the tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub egress: Vec<EgressRule>,
}

/// Who may reach the server pods, on which ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// What the rule is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// The pods allowed to connect.
    #[schemars(length(min = 1, max = 32))]
    pub from: Vec<Peer>,
    /// Ports the rule opens; none means all ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<Port>,
}

/// Whom the server pods may reach, on which ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// What the rule is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// The pods the server may reach.
    #[schemars(length(min = 1, max = 32))]
    pub to: Vec<Peer>,
    /// Ports the rule opens; none means all ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<Port>,
}

/// Pods, as a NetworkPolicy peer selects them: `podSelector` alone selects pods of the tenant
/// namespace, `namespaceSelector` alone every pod of the selected namespaces, both the selected
/// pods of the selected namespaces. Namespaces are selected by their labels;
/// `kubernetes.io/metadata.name` is each namespace's name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.podSelector) || has(self.namespaceSelector)")
    .message("a peer must set podSelector, namespaceSelector or both"))]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Labels of the pods; `{}` selects every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Labels of the namespaces; `{}` selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// A Kubernetes label selector: every `matchLabels` pair and every `matchExpressions` requirement
/// must hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    #[x_kube(validation = Rule::new(LABEL_KEYS_RULE).message("every key of matchLabels must be a Kubernetes label key ([prefix/]name: a DNS subdomain of at most 253 characters, and a name of at most 63 letters, digits, '-', '_' or '.' starting and ending with a letter or digit)"))]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// A requirement on one label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)")
    .message("values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist").field_path(".values"))]
#[x_kube(validation = Rule::new(format!("[self.key].{}", LABEL_KEYS_RULE.trim_start_matches("self.")))
    .message("key must be a Kubernetes label key").field_path(".key"))]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// The label's key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the label relates to `values`.
    pub operator: SelectorOperator,
    /// Label values (for `In` and `NotIn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = LABEL_VALUE_PATTERN), length(max = 63)))]
    pub values: Vec<String>,
}

/// Operators of a label requirement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SelectorOperator {
    #[default]
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A port and protocol.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Protocol of the port.
    #[serde(default = "defaults::protocol", skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Port number; left out, every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Observed state of a tenant, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Summary of the tenant's state, derived from its components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,
    /// Standard conditions, each with the generation it describes: `Ready`, one per component
    /// (`NamespaceReady`, `RedisReady`, `ServerReady`, `RegistryReady`), `AuthRegistered`,
    /// `Upgrading` (moving to another NeuralLog version), `BackupSucceeded` (the newest finished
    /// backup), `Restored` (on a tenant created from a backup), and `RolloutWithoutSurge` while the
    /// budget leaves no room for surge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Health of the NeuralLog server Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ComponentStatus>,
    /// Health of the Redis StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<ComponentStatus>,
    /// Health of the endpoint registry Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<ComponentStatus>,
    /// The NeuralLog version the tenant last ran Ready on every component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The NeuralLog version the tenant should run: `spec.version`, or the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// The version it ran before `version`: the one a rollback may return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// The images of the NeuralLog version the operator applies now, one component at a time
    /// during an upgrade. A component given an image in the spec runs that one instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<OperandImages>,
    /// The newest backup that succeeded, and where the tenant was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// Schema defaults (`default:` in the CRD), from the one place defaults live.
mod defaults {
    use super::{NetworkPolicy, Redis, Registry, Server};
    pub use crate::api::common::schema_defaults::*;

    pub fn server() -> Option<Server> {
        Some(Server { replicas: server_replicas(), ..Server::default() })
    }
    pub fn redis() -> Option<Redis> {
        Some(Redis { replicas: redis_replicas(), storage: redis_storage(), ..Redis::default() })
    }
    pub fn registry() -> Option<Registry> {
        Some(Registry { replicas: registry_replicas(), ..Registry::default() })
    }
    pub fn network_policy() -> Option<NetworkPolicy> {
        Some(NetworkPolicy { enabled: network_policy_enabled(), ..NetworkPolicy::default() })
    }
}
