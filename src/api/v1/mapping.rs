//! `v1` ↔ the version-independent model: a `v1` Tenant's spec maps to a [`TenantModel`] (defaults
//! applied, values checked as the schema checks them, so objects stored before a rule existed are
//! reported rather than acted on), and a [`TenantState`] renders as a `v1` status and back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;

use super::{
    ComponentPhase, ComponentStatus, EnvVar, NetworkPolicyRule, NetworkPolicySpec, ResourceLimit, ResourceRequirements,
    Tenant, TenantPhase, TenantStatus,
};
use crate::model::state::{self, ComponentState, Phase, TenantState};
use crate::model::{
    self, DeletionPolicy, Identity, InvalidSpec, NetworkModel, PeerRule, Protocol, QuotaModel, RedisModel,
    RegistryModel, ServerModel, TenantModel, defaults,
};

impl Tenant {
    /// The tenant as the reconciler sees it.
    pub fn model(&self) -> Result<TenantModel, InvalidSpec> {
        let identity = Identity::of(self)?;
        let spec = &self.spec;
        let server = spec.server.clone().unwrap_or_default();
        let redis = spec.redis.clone().unwrap_or_default();
        let registry = spec.registry.clone().unwrap_or_default();
        TenantModel::new(
            identity,
            ServerModel {
                replicas: model::replicas("spec.server.replicas", server.replicas, defaults::SERVER_REPLICAS, 1..=100)?,
                image: model::image("spec.server.image", server.image.as_deref(), defaults::SERVER_IMAGE)?,
                resources: resources("spec.server.resources", server.resources.as_ref(), &defaults::SERVER_RESOURCES)?,
                env: server.env.iter().enumerate().map(|(i, e)| env_var(i, e)).collect::<Result<_, _>>()?,
            },
            RedisModel {
                replicas: model::replicas("spec.redis.replicas", redis.replicas, defaults::REDIS_REPLICAS, 1..=1)?,
                image: model::image("spec.redis.image", redis.image.as_deref(), defaults::REDIS_IMAGE)?,
                resources: resources("spec.redis.resources", redis.resources.as_ref(), &defaults::REDIS_RESOURCES)?,
                storage: model::amount("spec.redis.storage", redis.storage.as_deref(), defaults::REDIS_STORAGE)?,
                config: model::redis_config("spec.redis.config", &redis.config)?,
            },
            RegistryModel {
                replicas: model::replicas(
                    "spec.registry.replicas",
                    registry.replicas,
                    defaults::REGISTRY_REPLICAS,
                    1..=10,
                )?,
                image: model::image("spec.registry.image", registry.image.as_deref(), defaults::REGISTRY_IMAGE)?,
                resources: resources(
                    "spec.registry.resources",
                    registry.resources.as_ref(),
                    &defaults::REGISTRY_RESOURCES,
                )?,
                base_domain: registry.base_domain,
            },
            network(spec.network_policy.as_ref()),
            quota(spec.resources.as_ref())?,
            self.deletion_policy(),
        )
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

fn request_limit(value: Option<&ResourceLimit>) -> (Option<&str>, Option<&str>) {
    (value.and_then(|v| v.request.as_deref()), value.and_then(|v| v.limit.as_deref()))
}

fn resources(
    field: &str,
    user: Option<&ResourceRequirements>,
    defaults: &defaults::ResourceDefaults,
) -> Result<model::ContainerResources, InvalidSpec> {
    let cpu = request_limit(user.and_then(|u| u.cpu.as_ref()));
    let memory = request_limit(user.and_then(|u| u.memory.as_ref()));
    model::container_resources(field, cpu, memory, defaults)
}

/// The tenant-wide quota from `spec.resources`; storage is capped by its limit, else its request.
fn quota(spec: Option<&ResourceRequirements>) -> Result<Option<QuotaModel>, InvalidSpec> {
    let Some(spec) = spec else { return Ok(None) };
    let (cpu_request, cpu_limit) = request_limit(spec.cpu.as_ref());
    let (memory_request, memory_limit) = request_limit(spec.memory.as_ref());
    let (storage_request, storage_limit) = request_limit(spec.storage.as_ref());
    Ok(Some(QuotaModel {
        requests_cpu: model::optional_amount("spec.resources.cpu.request", cpu_request)?,
        limits_cpu: model::optional_amount("spec.resources.cpu.limit", cpu_limit)?,
        requests_memory: model::optional_amount("spec.resources.memory.request", memory_request)?,
        limits_memory: model::optional_amount("spec.resources.memory.limit", memory_limit)?,
        requests_storage: model::optional_amount("spec.resources.storage", storage_limit.or(storage_request))?,
    }))
}

fn env_var(index: usize, var: &EnvVar) -> Result<core::EnvVar, InvalidSpec> {
    let field = format!("spec.server.env[{index}]");
    let value_from = match (&var.value, &var.value_from) {
        (Some(_), Some(_)) => return Err(InvalidSpec::new(field, "set either value or valueFrom, not both")),
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

fn peer_rule(rule: &NetworkPolicyRule, pods: &BTreeMap<String, String>) -> PeerRule {
    let ports = rule
        .ports
        .iter()
        .map(|p| {
            let protocol = match p.protocol {
                Some(super::Protocol::Tcp) => Protocol::Tcp,
                Some(super::Protocol::Udp) => Protocol::Udp,
                Some(super::Protocol::Sctp) => Protocol::Sctp,
                None => defaults::PROTOCOL,
            };
            (protocol, p.port.filter(|port| *port != 0))
        })
        .collect();
    PeerRule { pods: pods.clone(), namespaces: rule.namespaces.clone(), ports }
}

fn network(spec: Option<&NetworkPolicySpec>) -> NetworkModel {
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
        ingress_rules: spec.ingress_rules.iter().map(|r| peer_rule(r, &r.from)).collect(),
        egress_rules: spec.egress_rules.iter().map(|r| peer_rule(r, &r.to)).collect(),
    }
}

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

impl From<&TenantState> for TenantStatus {
    fn from(state: &TenantState) -> Self {
        TenantStatus {
            conditions: state.conditions.clone(),
            phase: state.phase.map(TenantPhase::from),
            namespace: state.namespace.clone(),
            observed_generation: state.observed_generation,
            server_status: state.server.as_ref().map(ComponentStatus::from),
            redis_status: state.redis.as_ref().map(ComponentStatus::from),
            registry_status: state.registry.as_ref().map(ComponentStatus::from),
        }
    }
}

impl From<&TenantStatus> for TenantState {
    fn from(status: &TenantStatus) -> Self {
        TenantState {
            phase: status.phase.map(Phase::from),
            conditions: status.conditions.clone(),
            namespace: status.namespace.clone(),
            observed_generation: status.observed_generation,
            server: status.server_status.as_ref().map(ComponentState::from),
            redis: status.redis_status.as_ref().map(ComponentState::from),
            registry: status.registry_status.as_ref().map(ComponentState::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::TestTenant;
    use crate::model::state::{AuthState, NamespaceState, Observation, Replicas};

    #[test]
    fn empty_spec_gets_the_documented_defaults() {
        let model = TestTenant::new("acme").model().unwrap();
        assert_eq!(model.namespace, "tenant-acme");
        assert_eq!(model.server.replicas, 1);
        assert_eq!(model.server.image, "neurallog/server:latest");
        assert_eq!(model.redis.image, "redis:7-alpine");
        assert_eq!(model.redis.storage.as_str(), "1Gi");
        let server = &model.server.resources;
        let spelled = [&server.cpu_request, &server.cpu_limit, &server.memory_request, &server.memory_limit]
            .map(|a| a.as_str().to_owned());
        assert_eq!(spelled, ["100m", "500m", "128Mi", "512Mi"]);
        assert_eq!(model.redis.resources.memory_limit.as_str(), "256Mi");
        assert_eq!(model.deletion_policy, None, "left out: the policy in force stays");
        assert!(model.owner.controller.unwrap());
    }

    #[test]
    fn invalid_values_are_reported_with_their_field() {
        let cases = [
            (
                json!({"redis": {"resources": {"memory": {"request": "1Gi", "limit": "1x"}}}}),
                "spec.redis.resources.memory.limit",
            ),
            (
                json!({"server": {"resources": {"cpu": {"request": "2", "limit": "1"}}}}),
                "spec.server.resources.cpu.request",
            ),
            (json!({"server": {"replicas": 0}}), "spec.server.replicas"),
            (json!({"redis": {"replicas": 3}}), "spec.redis.replicas"),
            (json!({"server": {"env": [{"name": "A", "value": "x", "valueFrom": {}}]}}), "spec.server.env[0]"),
            (json!({"server": {"env": [{"name": "A", "valueFrom": {}}]}}), "spec.server.env[0].valueFrom"),
            (json!({"redis": {"config": {"rename-command": "FLUSHALL x"}}}), "spec.redis.config.rename-command"),
            (json!({"resources": {"cpu": {"limit": "1x"}}}), "spec.resources.cpu.limit"),
        ];
        for (spec, field) in cases {
            let err = TestTenant::new("acme").spec(spec).model().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn env_references_map_to_kubernetes_selectors() {
        let spec = json!({"server": {"env": [{"name": "API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "tenant-secrets", "key": "api-key", "optional": true}}}]}});
        let model = TestTenant::new("acme").spec(spec).model().unwrap();
        let selector = model.server.env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str(), selector.optional),
            ("tenant-secrets", "api-key", Some(true))
        );
    }

    #[test]
    fn rules_map_ports_with_the_default_protocol_and_every_port_for_zero() {
        let spec = json!({"networkPolicy": {"ingressRules": [{"from": {"app": "x"}, "ports": [{"port": 0}, {"port": 53, "protocol": "UDP"}]}]}});
        let model = TestTenant::new("acme").spec(spec).model().unwrap();
        assert_eq!(model.network.ingress_rules[0].ports, [(Protocol::Tcp, None), (Protocol::Udp, Some(53))]);
        assert!(model.network.enabled);
    }

    #[test]
    fn a_state_survives_its_round_trip_through_the_v1_status() {
        let observed = Observation {
            generation: Some(2),
            namespace_name: "tenant-acme".into(),
            namespace: NamespaceState::Ready,
            redis: Some(Replicas { desired: 1, ready: 1 }),
            server: Some(Replicas { desired: 2, ready: 1 }),
            registry: None,
            auth: AuthState::Registered,
            failures: Vec::new(),
            rollout_without_surge: Some("spec.resources.cpu.limit: no room for surge".into()),
        };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::from_second(1).unwrap());
        let state = state::derive(&observed, None, &now);
        let status = TenantStatus::from(&state);
        assert_eq!(status.phase, Some(TenantPhase::Degraded));
        assert_eq!(TenantState::from(&status), state);
    }
}
