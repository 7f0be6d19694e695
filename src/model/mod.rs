//! The version-independent view of a tenant that the reconciler and the builders work on.
//!
//! Every API version maps into [`TenantModel`] (the mapping lives beside each version's types)
//! with defaults applied and values parsed into types, so the builders never see an optional
//! field or an unparsed string, and a tenant that slipped past admission (stored before a rule
//! existed) is reported instead of panicking the operator. [`state`] is the other direction: the
//! version-independent status each version renders.

pub mod backup;
pub mod defaults;
pub mod operand;
pub mod redis_info;
pub mod state;
pub mod upgrade;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::quantity::{Amount, Quantity};
use defaults::ResourceDefaults;
use operand::{Images, Release};
use upgrade::{Overrides, Recorded, VersionPolicy};

/// Longest tenant name whose child names are all valid (see the CRD's name rule).
pub const MAX_TENANT_NAME_LEN: usize = 46;

/// The redis.conf directives a tenant may set. Everything that controls networking, files,
/// authentication, modules or commands is reserved to the operator.
pub const REDIS_CONFIG_ALLOWED_KEYS: &[&str] = &[
    "maxmemory",
    "maxmemory-policy",
    "maxmemory-samples",
    "maxclients",
    "timeout",
    "tcp-keepalive",
    "databases",
    "loglevel",
    "save",
    "appendonly",
    "appendfsync",
    "notify-keyspace-events",
    "hz",
    "lazyfree-lazy-eviction",
    "lazyfree-lazy-expire",
    "slowlog-log-slower-than",
    "slowlog-max-len",
    "latency-monitor-threshold",
    "hash-max-listpack-entries",
    "hash-max-listpack-value",
    "list-max-listpack-size",
    "set-max-intset-entries",
    "zset-max-listpack-entries",
    "zset-max-listpack-value",
];

/// The label every namespace carries with its own name, by which network rules select namespaces.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A tenant spec the operator cannot honour, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

impl InvalidSpec {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
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
    /// The tenant-wide budget; `None` when the spec sets none.
    pub quota: Option<QuotaModel>,
    /// The deletion policy as the spec states it; `None` keeps the one in force (recorded on the
    /// tenant namespace), so a replace that leaves the field out never changes it.
    pub deletion_policy: Option<DeletionPolicy>,
    /// Why the Deployments roll out without surge, when the budget fits the tenant's pods but not
    /// a rolling update's extra ones; `None` when it fits both (or there is no budget).
    pub rollout_without_surge: Option<String>,
    /// Which NeuralLog version and images the tenant runs.
    pub operand: OperandModel,
    /// Its backups, when the spec asks for them.
    pub backup: Option<backup::BackupModel>,
    /// What its Redis starts from, for a tenant created from a backup.
    pub restore: Option<backup::RestoreModel>,
}

/// The tenant's NeuralLog version: how it chooses one, the images its spec sets, and what its
/// status records it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperandModel {
    pub policy: VersionPolicy,
    pub overrides: Overrides,
    pub recorded: Recorded,
}

impl OperandModel {
    /// The images in force, which the children are built with: what the status records (decided
    /// by the pass before, see [`upgrade`]); the images a tenant from before 0.3.0 was given; for a
    /// new tenant, those of the version it should run. The spec's images replace their component's.
    pub fn images(&self, release: &Release) -> Images {
        let recorded = self.recorded.images.clone().or_else(|| self.recorded.exists.then(Images::legacy));
        let images =
            recorded.unwrap_or_else(|| release.images_of(self.policy.pinned.as_ref().unwrap_or(&release.version)));
        self.overrides.apply(images)
    }
}

/// What deleting the tenant does to its namespace and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicy {
    Delete,
    Retain,
}

/// A network protocol, spelled as Kubernetes spells it (also in the content hash of policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// The endpoint registry.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryModel {
    pub replicas: i32,
    pub resources: ContainerResources,
    /// Public base domain; `None` means in-cluster endpoints and no Ingress.
    pub base_domain: Option<String>,
}

/// Hard limits of the tenant namespace. Each is optional: only the dimensions the tenant sets
/// are limited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaModel {
    pub requests_cpu: Option<Amount>,
    pub limits_cpu: Option<Amount>,
    pub requests_memory: Option<Amount>,
    pub limits_memory: Option<Amount>,
    /// Total storage the tenant's PersistentVolumeClaims may request.
    pub requests_storage: Option<Amount>,
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

/// A custom rule: which pods (in which namespaces) on which ports. Serialised, it names the rule's
/// NetworkPolicy (a content hash), so its form must not change for rules that exist.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerRule {
    #[serde(flatten)]
    pub peers: Peers,
    /// (protocol, port) pairs; port `None` is every port; no pairs is every port and protocol.
    pub ports: Vec<(Protocol, Option<i32>)>,
}

/// The peers of a custom rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Peers {
    /// Pods with these labels (none: every pod) in each named namespace, or in the tenant
    /// namespace when none is named: every rule `v1` can state, hashed as 0.1.0 hashed it.
    Named { pods: BTreeMap<String, String>, namespaces: Vec<String> },
    /// Any pod and namespace label selectors.
    Selected { peers: Vec<NetworkPolicyPeer> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerModel {
    pub replicas: i32,
    pub resources: ContainerResources,
    /// User variables, already in Kubernetes form, applied after the built-in ones.
    pub env: Vec<core::EnvVar>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisModel {
    pub replicas: i32,
    pub resources: ContainerResources,
    pub storage: Amount,
    /// User directives, already checked against the allow-list.
    pub config: BTreeMap<String, String>,
}

/// Requests and limits of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerResources {
    pub cpu_request: Amount,
    pub cpu_limit: Amount,
    pub memory_request: Amount,
    pub memory_limit: Amount,
}

/// The name, UID and owner reference of a tenant, from its metadata (any API version).
pub struct Identity {
    pub name: String,
    pub uid: String,
    pub owner: OwnerReference,
}

impl Identity {
    /// Checks that the name can form every child name and that the object has a UID.
    pub fn of<K: Resource<DynamicType = ()>>(tenant: &K) -> Result<Self, InvalidSpec> {
        let name = tenant.name_any();
        check_tenant_name(&name)?;
        let owner = tenant
            .controller_owner_ref(&())
            .ok_or_else(|| InvalidSpec::new("metadata.uid", "the tenant has no UID yet"))?;
        Ok(Self { name, uid: owner.uid.clone(), owner })
    }
}

impl TenantModel {
    /// The model of a tenant from its identity and its mapped parts; checks what spans several
    /// fields.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        identity: Identity,
        server: ServerModel,
        redis: RedisModel,
        registry: RegistryModel,
        network: NetworkModel,
        quota: Option<QuotaModel>,
        deletion_policy: Option<DeletionPolicy>,
    ) -> Result<Self, InvalidSpec> {
        let Identity { name, uid, owner } = identity;
        let mut model = Self {
            namespace: namespace_name(&name),
            name,
            uid,
            owner,
            server,
            redis,
            registry,
            network,
            quota: quota.filter(|q| *q != QuotaModel::default()),
            deletion_policy,
            rollout_without_surge: None,
            operand: OperandModel::default(),
            backup: None,
            restore: None,
        };
        model.check_components_fit_the_quota()?;
        Ok(model)
    }

    /// Rejects a quota too small for the operator's own pods, which would otherwise leave a
    /// rollout stuck on "exceeded quota" with nothing on the Tenant saying why. A Deployment's
    /// rolling update briefly runs a quarter more pods (rounded up): a budget that fits the pods
    /// but not those keeps the tenant, and its Deployments roll out without surge.
    pub(crate) fn check_components_fit_the_quota(&mut self) -> Result<(), InvalidSpec> {
        let Some(quota) = &self.quota else { return Ok(()) };
        if let Some(shortfall) = self.quota_shortfall(quota, false) {
            return Err(shortfall);
        }
        self.rollout_without_surge = self.quota_shortfall(quota, true).map(|shortfall| {
            format!(
                "{}: {}; the server and the registry therefore roll out without surge, one pod replaced at a time (with a single replica, a short outage during each rollout)",
                shortfall.field, shortfall.message
            )
        });
        Ok(())
    }

    /// The first budget the tenant's own pods exceed, with (`surge`) or without the extra pods of
    /// a Deployment's rolling update.
    fn quota_shortfall(&self, quota: &QuotaModel, surge: bool) -> Option<InvalidSpec> {
        let pods = |replicas: i32, rolls: bool| {
            let replicas = i128::from(replicas);
            if surge && rolls { replicas + (replicas + 3) / 4 } else { replicas }
        };
        // A tenant with backups runs a backup pod beside its own now and then.
        let backup_pod = self.backup.as_ref().and_then(|_| {
            let none = (None, None);
            container_resources("backup", none, none, &defaults::BACKUP_RESOURCES).ok()
        });
        let mut pods = vec![
            (&self.server.resources, pods(self.server.replicas, true)),
            (&self.redis.resources, pods(self.redis.replicas, false)),
            (&self.registry.resources, pods(self.registry.replicas, true)),
        ];
        pods.extend(backup_pod.as_ref().map(|resources| (resources, 1)));
        let total = |value: fn(&ContainerResources) -> &Amount| {
            pods.iter()
                .fold(Quantity::default(), |sum, (resources, count)| sum.plus(value(resources).value().times(*count)))
        };
        let storage = self.redis.storage.value().times(self.redis.replicas.into());
        let checks = [
            ("spec.quota.requests.cpu", &quota.requests_cpu, total(|r| &r.cpu_request), "CPU requests"),
            ("spec.quota.limits.cpu", &quota.limits_cpu, total(|r| &r.cpu_limit), "CPU limits"),
            ("spec.quota.requests.memory", &quota.requests_memory, total(|r| &r.memory_request), "memory requests"),
            ("spec.quota.limits.memory", &quota.limits_memory, total(|r| &r.memory_limit), "memory limits"),
            ("spec.quota.requests.storage", &quota.requests_storage, storage, "storage"),
        ];
        let counted = if surge { ", plus the extra pods of a rolling update" } else { "" };
        checks.into_iter().find_map(|(field, allowed, needed, what)| {
            let allowed = allowed.as_ref()?;
            (needed > allowed.value()).then(|| {
                InvalidSpec::new(
                    field,
                    format!(
                        "the quota allows {allowed} of {what} but the tenant's own pods need {needed} (server {}, Redis {}, registry {} replicas{}{counted})",
                        self.server.replicas,
                        self.redis.replicas,
                        self.registry.replicas,
                        if self.backup.is_some() { ", a backup pod" } else { "" },
                    ),
                )
            })
        })
    }
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

/// Checks a replica count, `default` when unset.
pub fn replicas(
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

/// Checks an image the spec sets for a component. `None` when unset, or when it is the image
/// 0.1.0 and 0.2.0 wrote as a schema default (`legacy`): that tenant follows the release's images.
pub fn image_override(field: &str, value: Option<&str>, legacy: &str) -> Result<Option<String>, InvalidSpec> {
    match value {
        None => Ok(None),
        Some(image) if image == legacy => Ok(None),
        Some(image) if image.trim().is_empty() || image.contains(char::is_whitespace) => {
            Err(InvalidSpec::new(field, format!("{image:?} is not an image reference")))
        }
        Some(image) => Ok(Some(image.to_owned())),
    }
}

/// Parses a quantity, `default` when unset.
pub fn amount(field: &str, value: Option<&str>, default: &str) -> Result<Amount, InvalidSpec> {
    Amount::parse(value.unwrap_or(default)).map_err(|e| InvalidSpec::new(field, e.to_string()))
}

/// Parses an optional quantity.
pub fn optional_amount(field: &str, value: Option<&str>) -> Result<Option<Amount>, InvalidSpec> {
    value.map(|v| amount(field, Some(v), v)).transpose()
}

/// Resolves one resource (`cpu` or `memory`) of a container to a (request, limit) pair. A limit
/// set alone below the default request pulls the request down with it, as Kubernetes does for a
/// limit without request; a request set alone above the default limit lifts the limit to it (the
/// container may use what it asked for). `field` names the container's resources
/// (`spec.server.resources`), whose `requests.<resource>` and `limits.<resource>` are read.
pub fn request_and_limit(
    field: &str,
    resource: &str,
    request: Option<&str>,
    limit: Option<&str>,
    default_request: &str,
    default_limit: &str,
) -> Result<(Amount, Amount), InvalidSpec> {
    let request_field = format!("{field}.requests.{resource}");
    let limit_amount = amount(&format!("{field}.limits.{resource}"), limit, default_limit)?;
    let request_amount = amount(&request_field, request, default_request)?;
    if request_amount.value() > limit_amount.value() {
        if request.is_none() {
            return Ok((limit_amount.clone(), limit_amount));
        }
        if limit.is_none() {
            return Ok((request_amount.clone(), request_amount));
        }
        return Err(InvalidSpec::new(
            request_field,
            format!("request {request_amount} must not be greater than limit {limit_amount}"),
        ));
    }
    Ok((request_amount, limit_amount))
}

/// The requests and limits of a container from what the spec sets (`None` for each value left
/// out, as (request, limit) pairs) and the component's defaults. `field` names the component's
/// resources.
pub fn container_resources(
    field: &str,
    cpu: (Option<&str>, Option<&str>),
    memory: (Option<&str>, Option<&str>),
    defaults: &ResourceDefaults,
) -> Result<ContainerResources, InvalidSpec> {
    let (cpu_request, cpu_limit) =
        request_and_limit(field, "cpu", cpu.0, cpu.1, defaults.cpu_request, defaults.cpu_limit)?;
    let (memory_request, memory_limit) =
        request_and_limit(field, "memory", memory.0, memory.1, defaults.memory_request, defaults.memory_limit)?;
    Ok(ContainerResources { cpu_request, cpu_limit, memory_request, memory_limit })
}

/// Checks user redis.conf directives against the allow-list; values must stay on one line.
pub fn redis_config(field: &str, config: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, InvalidSpec> {
    for (key, value) in config {
        if !REDIS_CONFIG_ALLOWED_KEYS.contains(&key.as_str()) {
            return Err(InvalidSpec::new(
                format!("{field}.{key}"),
                "this directive is reserved to the operator or unknown",
            ));
        }
        if value.contains(['\n', '\r']) {
            return Err(InvalidSpec::new(format!("{field}.{key}"), "values must not contain line breaks"));
        }
    }
    Ok(config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestTenant;

    #[test]
    fn a_tenant_with_backups_needs_room_in_its_budget_for_a_backup_pod() {
        // The default pods request 250m CPU: a budget of exactly that fits them, not a backup pod.
        let mut model = TestTenant::new("acme").cpu_budget(Some("250m"), None).valid_model();
        model.backup = Some(backup::BackupModel {
            schedule: None,
            keep: 1,
            destination: crate::api::backup::BackupDestination::default(),
        });
        let error = model.check_components_fit_the_quota().unwrap_err();
        assert_eq!(error.field, "spec.quota.requests.cpu");
        assert!(error.message.contains("300m") && error.message.contains("a backup pod"), "{}", error.message);
    }

    #[test]
    fn names_that_cannot_form_child_names_are_rejected() {
        for name in ["1acme", "acme-", "Acme", "ac.me", &"a".repeat(MAX_TENANT_NAME_LEN + 1)] {
            let err = TestTenant::new(name).model().unwrap_err();
            assert_eq!(err.field, "metadata.name");
        }
        assert!(TestTenant::new(&"a".repeat(MAX_TENANT_NAME_LEN)).model().is_ok());
    }

    #[test]
    fn a_limit_alone_below_the_default_request_pulls_the_request_down_and_a_request_alone_lifts_the_limit() {
        let (request, limit) =
            request_and_limit("spec.server.resources", "cpu", None, Some("50m"), "100m", "500m").unwrap();
        assert_eq!((request.as_str(), limit.as_str()), ("50m", "50m"));
        let (request, limit) =
            request_and_limit("spec.server.resources", "cpu", Some("2"), None, "100m", "500m").unwrap();
        assert_eq!((request.as_str(), limit.as_str()), ("2", "2"));
        let err = request_and_limit("spec.server.resources", "cpu", Some("2"), Some("1"), "100m", "500m").unwrap_err();
        assert_eq!(err.field, "spec.server.resources.requests.cpu");
    }

    #[test]
    fn a_budget_must_fit_the_tenants_own_pods_and_without_room_for_surge_rolls_out_without_it() {
        // Server (1 + 1 surge) x 500m + Redis 300m + registry (1 + 1 surge) x 200m = 1700m.
        let roomy = TestTenant::new("acme").cpu_budget(None, Some("1700m")).valid_model();
        assert_eq!(roomy.rollout_without_surge, None);
        // Without surge: 500m + 300m + 200m = 1000m.
        let tight = TestTenant::new("acme").cpu_budget(None, Some("1600m")).valid_model();
        let why = tight.rollout_without_surge.expect("no room for surge");
        assert!(why.starts_with("spec.quota.limits.cpu") && why.contains("need 1700m"), "{why}");
        let err = TestTenant::new("acme").cpu_budget(None, Some("999m")).model().unwrap_err();
        assert_eq!(err.field, "spec.quota.limits.cpu");
        assert!(err.message.contains("allows 999m") && err.message.contains("need 1"), "{}", err.message);

        let err = TestTenant::new("acme").storage_budget(Some("512Mi"), None).model().unwrap_err();
        assert_eq!(err.field, "spec.quota.requests.storage");
    }

    #[test]
    fn redis_directives_off_the_allow_list_or_over_several_lines_are_refused() {
        let config = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let err = redis_config("spec.redis.config", &config("rename-command", "FLUSHALL x")).unwrap_err();
        assert_eq!(err.field, "spec.redis.config.rename-command");
        let err = redis_config("spec.redis.config", &config("timeout", "0\nrequirepass x")).unwrap_err();
        assert_eq!(err.field, "spec.redis.config.timeout");
        assert!(redis_config("spec.redis.config", &config("timeout", "60")).is_ok());
    }
}
