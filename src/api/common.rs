//! What both Tenant versions share: the patterns and CEL rules their schemas validate with, and the
//! enums and status parts whose wire form is the same in both (each version re-exports them).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::REDIS_CONFIG_ALLOWED_KEYS;
use crate::model::state::{self, ComponentState, Phase};

/// A Kubernetes quantity the operator can compute with: at most 20 digits before the point and 18
/// after it, and an exponent within ±18 (the rules on each quantity also bound its size).
pub const QUANTITY_PATTERN: &str =
    r"^([0-9]{1,20}(\.[0-9]{0,18})?|\.[0-9]{1,18})([eE][+-]?(1[0-8]|[0-9])|[KMGTPE]i|[numkMGTPE])?$";

/// A Kubernetes label value (empty, or letters, digits, '-', '_' and '.' starting and ending with a
/// letter or digit; at most 63 characters by the schema's maxLength).
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// CEL: every key of a label map is a Kubernetes label key (an optional DNS-subdomain prefix and
/// `/`, then a name of at most 63 characters).
pub const LABEL_KEYS_RULE: &str = r"self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || size(k.split('/')[0]) <= 253))";

/// A container image reference: registry host (and port), path, tag and digest, as the
/// container runtime parses them; no whitespace or other characters that a Deployment would
/// carry but no runtime could pull.
pub const IMAGE_PATTERN: &str = r"^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*(:[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127})?(@sha256:[a-f0-9]{64})?$";

/// A NeuralLog version: `MAJOR.MINOR.PATCH` with an optional pre-release, as semver spells them.
/// Numbers have at most 9 digits, so that every version admitted fits the operator's parser and
/// the API server's CEL `semver()` alike; a numeric pre-release identifier has no leading zero.
pub const VERSION_PATTERN: &str = r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(-(0|[1-9][0-9]{0,8}|[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9][0-9]{0,8}|[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*))*)?$";

/// The images a tenant's components run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperandImages {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// What deleting the Tenant does to its data. `Delete` removes the namespace and everything in it.
/// `Retain` removes the workloads and the Auth registration but keeps the namespace and its
/// PersistentVolumeClaims (the Redis data); a Tenant created again with the same name adopts the
/// retained namespace and its data. Left out, the policy in force stays: `Delete` for a new
/// tenant, otherwise the last one set, so a replace of the whole object that omits the field never
/// turns `Retain` into `Delete`. The policy in force is recorded on the tenant namespace
/// (annotation `neurallog.io/deletion-policy`). Deleting the CustomResourceDefinition (an
/// uninstall) deletes no namespace, whatever the policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the namespace with everything in it, data included.
    Delete,
    /// Keep the namespace and its PersistentVolumeClaims; remove everything else.
    Retain,
}

/// A network protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

/// Phase of a whole tenant.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantPhase {
    /// Accepted; the namespace does not exist yet.
    Pending,
    /// Components are being created and none has failed.
    Provisioning,
    /// Every component is ready.
    Running,
    /// Some component is not fully ready after having been, or is only partly ready.
    Degraded,
    /// The operator cannot provision the tenant; the Ready condition says why.
    Failed,
    /// The tenant is being deleted.
    Terminating,
}

/// Health of one component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Phase of the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ComponentPhase>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods wanted.
    #[serde(default)]
    pub total_replicas: i32,
}

/// Phase of one component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentPhase {
    /// Not created yet.
    Pending,
    /// Created, no pod ready yet.
    Provisioning,
    /// Every pod ready.
    Running,
    /// Some but not all pods ready.
    Degraded,
    /// Cannot be provisioned.
    Failed,
}

/// A DNS-1123 subdomain (names of ConfigMaps and Secrets, base domains).
pub const SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1123 label (namespace names).
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// An environment variable name, as Kubernetes accepts it.
pub const ENV_NAME_PATTERN: &str = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$";

/// A key of a ConfigMap or Secret.
pub const DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// The tenant name rules, on the whole object of every version.
pub const NAME_PATTERN_RULE: &str = "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";
pub const NAME_PATTERN_MESSAGE: &str = "metadata.name must start with a lowercase letter, contain only lowercase letters, digits and '-', and end with a letter or digit, so that tenant-<name> and the child object names are valid";
pub const NAME_LENGTH_RULE: &str = "size(self.metadata.name) <= 46";
pub const NAME_LENGTH_MESSAGE: &str = "metadata.name must be at most 46 characters: the Redis StatefulSet <name>-redis needs room for its pods' controller-revision-hash label (63 characters)";

/// Redis directives whose values both versions check the same way: in `v2` each is a typed
/// field, in `v1` a string of `spec.redis.config` that must read as that type, so every `v1`
/// value has a `v2` form.
pub const REDIS_ENUM_DIRECTIVES: &[(&str, &[&str])] = &[
    (
        "maxmemory-policy",
        &[
            "noeviction",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ],
    ),
    ("appendfsync", &["always", "everysec", "no"]),
    ("loglevel", &["debug", "verbose", "notice", "warning", "nothing"]),
];

/// Redis directives with integer values, with their bounds (see [`REDIS_ENUM_DIRECTIVES`]).
pub const REDIS_INTEGER_DIRECTIVES: &[(&str, i64, i64)] = &[
    ("timeout", 0, 31_536_000),
    ("tcp-keepalive", 0, 31_536_000),
    ("databases", 1, 10_000),
    ("maxclients", 1, 1_000_000),
    ("hz", 1, 500),
];

/// Whether a directive has a typed field in `v2`.
pub fn is_typed_redis_directive(key: &str) -> bool {
    REDIS_ENUM_DIRECTIVES.iter().any(|(k, _)| *k == key) || REDIS_INTEGER_DIRECTIVES.iter().any(|(k, _, _)| *k == key)
}

/// CEL: every key of a directive map is on `keys`.
pub fn keys_rule(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    format!("self.all(k, k in [{}])", keys.join(", "))
}

/// The allow-listed directives that have no typed field in `v2` (its `spec.redis.config.extra`).
pub fn untyped_redis_directives() -> Vec<&'static str> {
    REDIS_CONFIG_ALLOWED_KEYS.iter().copied().filter(|k| !is_typed_redis_directive(k)).collect()
}

/// `appendonly` must stay `yes`: with `no`, a restart loses the logs written since the last
/// snapshot.
pub const APPENDONLY_RULE: &str = "!('appendonly' in self) || self['appendonly'] == 'yes'";
pub const APPENDONLY_MESSAGE: &str = "spec.redis.config.appendonly must be yes: with no, Redis keeps the tenant's logs only in memory between snapshots and a restart loses them";
pub const ONE_LINE_RULE: &str = "self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))";

impl From<Phase> for TenantPhase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Pending => TenantPhase::Pending,
            Phase::Provisioning => TenantPhase::Provisioning,
            Phase::Running => TenantPhase::Running,
            Phase::Degraded => TenantPhase::Degraded,
            Phase::Failed => TenantPhase::Failed,
            Phase::Terminating => TenantPhase::Terminating,
        }
    }
}

impl From<TenantPhase> for Phase {
    fn from(phase: TenantPhase) -> Self {
        match phase {
            TenantPhase::Pending => Phase::Pending,
            TenantPhase::Provisioning => Phase::Provisioning,
            TenantPhase::Running => Phase::Running,
            TenantPhase::Degraded => Phase::Degraded,
            TenantPhase::Failed => Phase::Failed,
            TenantPhase::Terminating => Phase::Terminating,
        }
    }
}

impl From<&ComponentState> for ComponentStatus {
    fn from(component: &ComponentState) -> Self {
        let phase = match component.phase {
            state::ComponentPhase::Pending => ComponentPhase::Pending,
            state::ComponentPhase::Provisioning => ComponentPhase::Provisioning,
            state::ComponentPhase::Running => ComponentPhase::Running,
            state::ComponentPhase::Degraded => ComponentPhase::Degraded,
            state::ComponentPhase::Failed => ComponentPhase::Failed,
        };
        ComponentStatus {
            phase: Some(phase),
            message: Some(component.message.clone()),
            ready_replicas: component.ready_replicas,
            total_replicas: component.total_replicas,
        }
    }
}

impl From<&ComponentStatus> for ComponentState {
    fn from(status: &ComponentStatus) -> Self {
        let phase = match status.phase {
            Some(ComponentPhase::Pending) | None => state::ComponentPhase::Pending,
            Some(ComponentPhase::Provisioning) => state::ComponentPhase::Provisioning,
            Some(ComponentPhase::Running) => state::ComponentPhase::Running,
            Some(ComponentPhase::Degraded) => state::ComponentPhase::Degraded,
            Some(ComponentPhase::Failed) => state::ComponentPhase::Failed,
        };
        ComponentState {
            phase,
            message: status.message.clone().unwrap_or_default(),
            ready_replicas: status.ready_replicas,
            total_replicas: status.total_replicas,
        }
    }
}

/// Schema defaults (`default:` in the CRD) of the fields both versions share, from the one place
/// defaults live; each version's own `defaults` module re-exports them beside its struct defaults.
pub mod schema_defaults {
    use super::Protocol;
    use crate::model::{self, defaults as d};

    pub fn server_replicas() -> Option<i32> {
        Some(d::SERVER_REPLICAS)
    }
    pub fn redis_replicas() -> Option<i32> {
        Some(d::REDIS_REPLICAS)
    }
    pub fn redis_storage() -> Option<String> {
        Some(d::REDIS_STORAGE.to_owned())
    }
    pub fn registry_replicas() -> Option<i32> {
        Some(d::REGISTRY_REPLICAS)
    }
    pub fn network_policy_enabled() -> Option<bool> {
        Some(d::NETWORK_POLICY_ENABLED)
    }
    pub fn protocol() -> Option<Protocol> {
        Some(match d::PROTOCOL {
            model::Protocol::Tcp => Protocol::Tcp,
            model::Protocol::Udp => Protocol::Udp,
            model::Protocol::Sctp => Protocol::Sctp,
        })
    }
}
