//! The Tenant API. `v1` is the only version until release 0.2.0 adds `v2`; the reconciler works
//! on the version-independent [`crate::model`], so a new API version only needs a mapping.

pub mod v1;

use kube::CustomResourceExt;

/// The CRD as served by this release, in the YAML form committed at `config/crd/bases/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&v1::Tenant::crd())
}

/// Defaults shared by the schema (`default:` in the CRD) and the operator, so the two never drift.
pub mod defaults {
    use super::v1::{DeletionPolicy, NetworkPolicySpec, Protocol, RedisSpec, RegistrySpec, ServerSpec};

    pub const SERVER_IMAGE: &str = "neurallog/server:latest";
    pub const REDIS_IMAGE: &str = "redis:7-alpine";
    pub const REGISTRY_IMAGE: &str = "neurallog/registry:latest";
    pub const REDIS_STORAGE: &str = "1Gi";

    pub fn server() -> Option<ServerSpec> {
        Some(ServerSpec { replicas: server_replicas(), image: server_image(), ..ServerSpec::default() })
    }
    pub fn redis() -> Option<RedisSpec> {
        Some(RedisSpec {
            replicas: redis_replicas(),
            image: redis_image(),
            storage: redis_storage(),
            ..RedisSpec::default()
        })
    }
    pub fn registry() -> Option<RegistrySpec> {
        Some(RegistrySpec { replicas: registry_replicas(), image: registry_image(), ..RegistrySpec::default() })
    }
    pub fn registry_replicas() -> Option<i32> {
        Some(1)
    }
    pub fn registry_image() -> Option<String> {
        Some(REGISTRY_IMAGE.to_owned())
    }
    pub fn deletion_policy() -> Option<DeletionPolicy> {
        Some(DeletionPolicy::Delete)
    }
    pub fn network_policy() -> Option<NetworkPolicySpec> {
        Some(NetworkPolicySpec { enabled: network_policy_enabled(), ..NetworkPolicySpec::default() })
    }
    pub fn server_replicas() -> Option<i32> {
        Some(1)
    }
    pub fn server_image() -> Option<String> {
        Some(SERVER_IMAGE.to_owned())
    }
    pub fn redis_replicas() -> Option<i32> {
        Some(1)
    }
    pub fn redis_image() -> Option<String> {
        Some(REDIS_IMAGE.to_owned())
    }
    pub fn redis_storage() -> Option<String> {
        Some(REDIS_STORAGE.to_owned())
    }
    pub fn network_policy_enabled() -> Option<bool> {
        Some(true)
    }
    pub fn protocol() -> Option<Protocol> {
        Some(Protocol::Tcp)
    }
}

#[cfg(test)]
mod tests {
    /// The committed CRD is what the code generates: regenerate it with `make generate`.
    #[test]
    fn committed_crd_is_up_to_date() {
        let committed = include_str!("../../config/crd/bases/neurallog.io_tenants.yaml");
        assert!(
            committed == super::crd_yaml().unwrap(),
            "config/crd/bases/neurallog.io_tenants.yaml is stale: run `make generate` and commit the result"
        );
    }
}
