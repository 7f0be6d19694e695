//! `v2` ↔ the version-independent model: a `v2` Tenant's spec maps to a [`TenantModel`] (defaults
//! applied, values checked as the schema checks them, so objects stored before a rule existed are
//! reported rather than acted on), and a [`TenantState`] renders as a `v2` status and back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::{
    ComponentStatus, EnvVar, LabelSelector, NetworkPolicy, OperandImages, Peer, Port, Quota, RedisConfig, Resources,
    Tenant, TenantStatus,
};
use crate::model::backup::{self, BackupModel, RestoreModel, RestoreSource, Schedule};
use crate::model::operand::{self, Images};
use crate::model::state::{ComponentState, TenantState};
use crate::model::upgrade::{self, Overrides, Recorded, VersionPolicy};
use crate::model::{
    self, DeletionPolicy, Identity, InvalidSpec, NAMESPACE_NAME_LABEL, NetworkModel, OperandModel, PeerRule, Peers,
    Protocol, QuotaModel, RedisModel, RegistryModel, ServerModel, TenantModel, defaults,
};

impl Tenant {
    /// The tenant as the reconciler sees it.
    pub fn model(&self) -> Result<TenantModel, InvalidSpec> {
        let identity = Identity::of(self)?;
        let spec = &self.spec;
        let server = spec.server.clone().unwrap_or_default();
        let redis = spec.redis.clone().unwrap_or_default();
        let registry = spec.registry.clone().unwrap_or_default();
        let (policy, overrides) = self.operand_spec()?;
        let backup = self.backup_model()?;
        TenantModel::new(
            identity,
            ServerModel {
                replicas: model::replicas("spec.server.replicas", server.replicas, defaults::SERVER_REPLICAS, 1..=100)?,
                resources: resources("spec.server.resources", server.resources.as_ref(), &defaults::SERVER_RESOURCES)?,
                env: server.env.iter().enumerate().map(|(i, e)| env_var(i, e)).collect::<Result<_, _>>()?,
            },
            RedisModel {
                replicas: model::replicas("spec.redis.replicas", redis.replicas, defaults::REDIS_REPLICAS, 1..=1)?,
                resources: resources("spec.redis.resources", redis.resources.as_ref(), &defaults::REDIS_RESOURCES)?,
                storage: model::amount("spec.redis.storage", redis.storage.as_deref(), defaults::REDIS_STORAGE)?,
                config: model::redis_config(
                    "spec.redis.config.extra",
                    &redis.config.as_ref().map(RedisConfig::directives).unwrap_or_default(),
                )?,
            },
            RegistryModel {
                replicas: model::replicas(
                    "spec.registry.replicas",
                    registry.replicas,
                    defaults::REGISTRY_REPLICAS,
                    1..=10,
                )?,
                resources: resources(
                    "spec.registry.resources",
                    registry.resources.as_ref(),
                    &defaults::REGISTRY_RESOURCES,
                )?,
                base_domain: registry.exposure.map(|exposure| exposure.base_domain),
            },
            network(spec.network_policy.as_ref()),
            quota(spec.quota.as_ref())?,
            self.deletion_policy(),
        )
        .and_then(|model| {
            let mut model = TenantModel {
                operand: OperandModel {
                    policy: policy.clone(),
                    overrides: overrides.clone(),
                    recorded: self.recorded(),
                },
                restore: self.restore_model(),
                ..model
            };
            if backup.is_some() {
                // Its backup pod must fit the budget too.
                model.backup = backup;
                model.check_components_fit_the_quota()?;
            }
            Ok(model)
        })
    }

    /// The tenant's backups, its schedule checked.
    fn backup_model(&self) -> Result<Option<BackupModel>, InvalidSpec> {
        let Some(backup) = &self.spec.backup else { return Ok(None) };
        let schedule =
            backup.schedule.as_deref().map(|text| Schedule::parse("spec.backup.schedule", text)).transpose()?;
        let keep = backup.keep.and_then(|keep| usize::try_from(keep).ok()).filter(|keep| *keep > 0);
        Ok(Some(BackupModel {
            schedule,
            keep: keep.unwrap_or(backup::DEFAULT_KEEP),
            destination: backup.destination.clone(),
        }))
    }

    /// What the tenant's Redis starts from: the spec's source, and where the status records it
    /// was found.
    fn restore_model(&self) -> Option<RestoreModel> {
        let source = self.spec.restore_from.as_ref().and_then(|from| match (&from.backup, &from.location) {
            (Some(name), _) => Some(RestoreSource::Backup(name.clone())),
            (None, Some(location)) => Some(RestoreSource::Location(location.clone())),
            (None, None) => None,
        });
        let recorded = self.status.as_ref().and_then(|s| s.backup.as_ref()).and_then(|b| b.restored_from.clone());
        (source.is_some() || recorded.is_some()).then_some(RestoreModel { source, location: recorded })
    }

    /// How the spec chooses the version, and the images it sets.
    fn operand_spec(&self) -> Result<(VersionPolicy, Overrides), InvalidSpec> {
        let spec = &self.spec;
        let pinned = spec
            .version
            .as_deref()
            .map(|text| {
                operand::parse_version(text).ok_or_else(|| {
                    InvalidSpec::new("spec.version", format!("{text:?} is not a version (MAJOR.MINOR.PATCH)"))
                })
            })
            .transpose()?;
        let upgrade = spec.upgrade.clone().unwrap_or_default();
        let policy = VersionPolicy {
            pinned,
            automatic: upgrade.automatic.unwrap_or(true),
            allow_major: upgrade.allow_major_version.unwrap_or(false),
        };
        let image = |field: &str, value: Option<&String>, legacy: &str| {
            model::image_override(field, value.map(String::as_str), legacy)
        };
        let overrides = Overrides {
            redis: image(
                "spec.redis.image",
                spec.redis.as_ref().and_then(|r| r.image.as_ref()),
                operand::LEGACY_REDIS_IMAGE,
            )?,
            server: image(
                "spec.server.image",
                spec.server.as_ref().and_then(|s| s.image.as_ref()),
                operand::LEGACY_SERVER_IMAGE,
            )?,
            registry: image(
                "spec.registry.image",
                spec.registry.as_ref().and_then(|r| r.image.as_ref()),
                operand::LEGACY_REGISTRY_IMAGE,
            )?,
        };
        Ok((policy, overrides))
    }

    /// The images the spec sets itself, when the spec can be read.
    pub fn image_overrides(&self) -> Option<Overrides> {
        self.operand_spec().ok().map(|(_, overrides)| overrides)
    }

    /// What the status records of the tenant's versions. A value that does not parse (only the
    /// operator writes them) counts as unrecorded.
    pub fn recorded(&self) -> Recorded {
        let Some(status) = &self.status else { return Recorded::default() };
        let version = |text: &Option<String>| text.as_deref().and_then(operand::parse_version);
        let upgrading = status.conditions.iter().find(|c| c.type_ == upgrade::UPGRADING);
        let images = TenantState::from(status).images;
        Recorded {
            version: version(&status.version),
            target: version(&status.target_version),
            previous: version(&status.previous_version),
            images,
            reason: upgrading.and_then(|c| upgrade::Reason::parse(&c.reason)),
            since: upgrading.map(|c| c.last_transition_time.0.as_second()),
            exists: true,
        }
    }

    /// The deletion policy the spec states, readable even when the rest of the spec is not.
    pub fn deletion_policy(&self) -> Option<DeletionPolicy> {
        self.spec.deletion_policy.map(|policy| match policy {
            super::DeletionPolicy::Delete => DeletionPolicy::Delete,
            super::DeletionPolicy::Retain => DeletionPolicy::Retain,
        })
    }

    /// The state the status records, if any.
    pub fn state(&self) -> Option<TenantState> {
        self.status.as_ref().map(TenantState::from)
    }
}

impl RedisConfig {
    /// The settings as redis.conf directives: the typed ones in Redis' spelling, then the extras.
    pub fn directives(&self) -> BTreeMap<String, String> {
        let mut directives = self.extra.clone();
        let typed: [(&str, Option<String>); 8] = [
            ("maxmemory-policy", self.maxmemory_policy.as_ref().map(word)),
            ("appendfsync", self.appendfsync.as_ref().map(word)),
            ("loglevel", self.loglevel.as_ref().map(word)),
            ("timeout", self.timeout.map(|v| v.to_string())),
            ("tcp-keepalive", self.tcp_keepalive.map(|v| v.to_string())),
            ("databases", self.databases.map(|v| v.to_string())),
            ("maxclients", self.maxclients.map(|v| v.to_string())),
            ("hz", self.hz.map(|v| v.to_string())),
        ];
        for (key, value) in typed {
            if let Some(value) = value {
                directives.insert(key.to_owned(), value);
            }
        }
        directives
    }
}

/// A typed Redis setting's spelling in redis.conf: its serde name.
pub(crate) fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(word)) => word,
        _ => String::new(),
    }
}

fn resources(
    field: &str,
    user: Option<&Resources>,
    defaults: &defaults::ResourceDefaults,
) -> Result<model::ContainerResources, InvalidSpec> {
    let requests = user.and_then(|u| u.requests.as_ref());
    let limits = user.and_then(|u| u.limits.as_ref());
    let cpu = (requests.and_then(|r| r.cpu.as_deref()), limits.and_then(|l| l.cpu.as_deref()));
    let memory = (requests.and_then(|r| r.memory.as_deref()), limits.and_then(|l| l.memory.as_deref()));
    model::container_resources(field, cpu, memory, defaults)
}

/// The tenant-wide quota from `spec.quota`.
fn quota(spec: Option<&Quota>) -> Result<Option<QuotaModel>, InvalidSpec> {
    let Some(spec) = spec else { return Ok(None) };
    let requests = spec.requests.as_ref();
    let limits = spec.limits.as_ref();
    Ok(Some(QuotaModel {
        requests_cpu: model::optional_amount("spec.quota.requests.cpu", requests.and_then(|r| r.cpu.as_deref()))?,
        limits_cpu: model::optional_amount("spec.quota.limits.cpu", limits.and_then(|l| l.cpu.as_deref()))?,
        requests_memory: model::optional_amount(
            "spec.quota.requests.memory",
            requests.and_then(|r| r.memory.as_deref()),
        )?,
        limits_memory: model::optional_amount("spec.quota.limits.memory", limits.and_then(|l| l.memory.as_deref()))?,
        requests_storage: model::optional_amount(
            "spec.quota.requests.storage",
            requests.and_then(|r| r.storage.as_deref()),
        )?,
    }))
}

fn env_var(index: usize, var: &EnvVar) -> Result<core::EnvVar, InvalidSpec> {
    let field = format!("spec.server.env[{index}]");
    let value_from = match (&var.value, &var.value_from) {
        (Some(_), Some(_)) => return Err(InvalidSpec::new(field, "set either value or valueFrom, not both")),
        (_, None) => None,
        (None, Some(source)) => Some(match (&source.config_map_key_ref, &source.secret_key_ref, &source.field_ref) {
            (Some(r), None, None) => core::EnvVarSource {
                config_map_key_ref: Some(core::ConfigMapKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: r.optional,
                }),
                ..Default::default()
            },
            (None, Some(r), None) => core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: r.optional,
                }),
                ..Default::default()
            },
            (None, None, Some(r)) => core::EnvVarSource {
                field_ref: Some(core::ObjectFieldSelector { field_path: r.field_path.clone(), api_version: None }),
                ..Default::default()
            },
            _ => {
                return Err(InvalidSpec::new(
                    format!("{field}.valueFrom"),
                    "set exactly one of configMapKeyRef, secretKeyRef or fieldRef",
                ));
            }
        }),
    };
    Ok(core::EnvVar { name: var.name.clone(), value: var.value.clone(), value_from })
}

/// The peers of a rule in the form `v1` states them, when they have one: one peer selecting pods
/// by labels only (the tenant namespace), or one such peer per namespace named by its
/// `kubernetes.io/metadata.name`, all with the same pod labels.
pub(crate) fn named_peers(peers: &[Peer]) -> Option<(BTreeMap<String, String>, Vec<String>)> {
    let plain = |selector: &LabelSelector| selector.match_expressions.is_empty().then(|| selector.match_labels.clone());
    let first = peers.first()?;
    let pods = plain(first.pod_selector.as_ref()?)?;
    if first.namespace_selector.is_none() {
        return (peers.len() == 1).then_some((pods, Vec::new()));
    }
    let namespaces = peers
        .iter()
        .map(|peer| {
            if plain(peer.pod_selector.as_ref()?)? != pods {
                return None;
            }
            let labels = plain(peer.namespace_selector.as_ref()?)?;
            match labels.iter().next() {
                Some((key, name)) if labels.len() == 1 && key == NAMESPACE_NAME_LABEL => Some(name.clone()),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some((pods, namespaces))
}

fn selector(selector: &LabelSelector) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: (!selector.match_labels.is_empty()).then(|| selector.match_labels.clone()),
        match_expressions: (!selector.match_expressions.is_empty()).then(|| {
            selector
                .match_expressions
                .iter()
                .map(|requirement| meta::LabelSelectorRequirement {
                    key: requirement.key.clone(),
                    operator: word(&requirement.operator),
                    values: (!requirement.values.is_empty()).then(|| requirement.values.clone()),
                })
                .collect()
        }),
    }
}

fn peer_rule(peers: &[Peer], ports: &[Port]) -> PeerRule {
    let peers = match named_peers(peers) {
        Some((pods, namespaces)) => Peers::Named { pods, namespaces },
        None => Peers::Selected {
            peers: peers
                .iter()
                .map(|peer| NetworkPolicyPeer {
                    pod_selector: peer.pod_selector.as_ref().map(selector),
                    namespace_selector: peer.namespace_selector.as_ref().map(selector),
                    ..NetworkPolicyPeer::default()
                })
                .collect(),
        },
    };
    let ports = ports
        .iter()
        .map(|p| {
            let protocol = match p.protocol {
                Some(super::Protocol::Tcp) => Protocol::Tcp,
                Some(super::Protocol::Udp) => Protocol::Udp,
                Some(super::Protocol::Sctp) => Protocol::Sctp,
                None => defaults::PROTOCOL,
            };
            (protocol, p.port)
        })
        .collect();
    PeerRule { peers, ports }
}

fn network(spec: Option<&NetworkPolicy>) -> NetworkModel {
    let Some(spec) = spec else {
        return NetworkModel {
            enabled: defaults::NETWORK_POLICY_ENABLED,
            allowed_namespaces: Vec::new(),
            ingress_rules: Vec::new(),
            egress_rules: Vec::new(),
        };
    };
    NetworkModel {
        enabled: spec.enabled.unwrap_or(defaults::NETWORK_POLICY_ENABLED),
        allowed_namespaces: spec.allowed_namespaces.clone(),
        ingress_rules: spec.ingress.iter().map(|r| peer_rule(&r.from, &r.ports)).collect(),
        egress_rules: spec.egress.iter().map(|r| peer_rule(&r.to, &r.ports)).collect(),
    }
}

impl From<&TenantState> for TenantStatus {
    fn from(state: &TenantState) -> Self {
        TenantStatus {
            conditions: state.conditions.clone(),
            phase: state.phase.map(Into::into),
            namespace: state.namespace.clone(),
            observed_generation: state.observed_generation,
            server: state.server.as_ref().map(ComponentStatus::from),
            redis: state.redis.as_ref().map(ComponentStatus::from),
            registry: state.registry.as_ref().map(ComponentStatus::from),
            version: state.version.clone(),
            target_version: state.target_version.clone(),
            previous_version: state.previous_version.clone(),
            images: state.images.as_ref().map(|images| OperandImages {
                redis: Some(images.redis.clone()),
                server: Some(images.server.clone()),
                registry: Some(images.registry.clone()),
            }),
            backup: state.backup.clone(),
        }
    }
}

impl From<&TenantStatus> for TenantState {
    fn from(status: &TenantStatus) -> Self {
        TenantState {
            phase: status.phase.map(Into::into),
            conditions: status.conditions.clone(),
            namespace: status.namespace.clone(),
            observed_generation: status.observed_generation,
            server: status.server.as_ref().map(ComponentState::from),
            redis: status.redis.as_ref().map(ComponentState::from),
            registry: status.registry.as_ref().map(ComponentState::from),
            version: status.version.clone(),
            target_version: status.target_version.clone(),
            previous_version: status.previous_version.clone(),
            images: status.images.as_ref().and_then(|images| {
                Some(Images {
                    redis: images.redis.clone()?,
                    server: images.server.clone()?,
                    registry: images.registry.clone()?,
                })
            }),
            backup: status.backup.clone(),
        }
    }
}
