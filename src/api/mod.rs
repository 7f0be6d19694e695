//! The Tenant API. Each version's types live in their own module, beside their mapping to the
//! version-independent [`crate::model`]. The controller works on the stored version only, through
//! the aliases below, so changing the storage version is a change here and nowhere else in it.

pub mod conversion;
pub mod v1;

use kube::CustomResourceExt;

/// The version the API server stores, and the only one the controller reads and writes.
pub use v1 as stored;
/// A Tenant in the stored version.
pub type Tenant = stored::Tenant;
/// A Tenant's status in the stored version.
pub type TenantStatus = stored::TenantStatus;

/// API group of every version.
pub const GROUP: &str = "neurallog.io";
/// Kind of the Tenant in every version.
pub const KIND: &str = "Tenant";

/// The CRD as served by this release, in the YAML form committed at `config/crd/bases/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&v1::Tenant::crd())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::model::defaults;

    /// The committed CRD is what the code generates: regenerate it with `make generate`.
    #[test]
    fn committed_crd_is_up_to_date() {
        let committed = include_str!("../../config/crd/bases/neurallog.io_tenants.yaml");
        assert!(
            committed == super::crd_yaml().unwrap(),
            "config/crd/bases/neurallog.io_tenants.yaml is stale: run `make generate` and commit the result"
        );
    }

    /// The schema of `spec.<path>` in the generated CRD (every served version).
    fn schemas(path: &str) -> Vec<Value> {
        let crd: Value = serde_yaml::from_str(&super::crd_yaml().unwrap()).unwrap();
        crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|version| {
                let mut schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
                for part in path.split('.') {
                    schema = &schema["properties"][part];
                }
                schema.clone()
            })
            .collect()
    }

    /// The CRD's defaults and the descriptions that state them say what `model::defaults` says.
    #[test]
    fn the_crd_states_the_models_defaults() {
        let defaults_of = [
            ("server.image", Value::from(defaults::SERVER_IMAGE)),
            ("server.replicas", Value::from(defaults::SERVER_REPLICAS)),
            ("redis.image", Value::from(defaults::REDIS_IMAGE)),
            ("redis.replicas", Value::from(defaults::REDIS_REPLICAS)),
            ("redis.storage", Value::from(defaults::REDIS_STORAGE)),
            ("registry.image", Value::from(defaults::REGISTRY_IMAGE)),
            ("registry.replicas", Value::from(defaults::REGISTRY_REPLICAS)),
            ("networkPolicy.enabled", Value::from(defaults::NETWORK_POLICY_ENABLED)),
        ];
        for (path, expected) in defaults_of {
            for schema in schemas(path) {
                assert_eq!(schema["default"], expected, "default of spec.{path}");
            }
        }
        // Left out, the policy in force stays: a schema default would replace it on every update.
        for schema in schemas("deletionPolicy") {
            assert!(schema.get("default").is_none(), "spec.deletionPolicy has no schema default");
            let description = schema["description"].as_str().unwrap_or_default().replace('\n', " ");
            let stated = format!("`{:?}` for a new tenant", defaults::DELETION_POLICY);
            assert!(description.contains(&stated), "spec.deletionPolicy says {description:?}");
        }
        let described = [
            ("server.resources", defaults::SERVER_RESOURCES),
            ("redis.resources", defaults::REDIS_RESOURCES),
            ("registry.resources", defaults::REGISTRY_RESOURCES),
        ];
        for (path, resources) in described {
            for schema in schemas(path) {
                let description = schema["description"].as_str().unwrap_or_default().replace('\n', " ");
                assert!(description.contains(&resources.describe()), "spec.{path} says {description:?}");
            }
        }
    }
}
