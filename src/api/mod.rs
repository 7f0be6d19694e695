//! The Tenant API. Each version's types live in their own module; the storage version's beside its
//! mapping to the version-independent [`crate::model`], the others beside nothing: they reach the
//! controller only through [`conversion`]. The controller works on the stored version only,
//! through the aliases below, so changing the storage version is a change here and nowhere else in
//! it.

pub mod backup;
mod common;
pub mod conversion;
pub mod v1;
pub mod v2;

use k8s_openapi::ByteString;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, ServiceReference, WebhookClientConfig, WebhookConversion,
};
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

/// The version the API server stores, and the only one the controller reads and writes.
pub use v2 as stored;
/// A Tenant in the stored version.
pub type Tenant = stored::Tenant;
/// A Tenant's status in the stored version.
pub type TenantStatus = stored::TenantStatus;

/// API group of every version.
pub const GROUP: &str = "neurallog.io";
/// Kind of the Tenant in every version.
pub const KIND: &str = "Tenant";

/// The name of the stored version.
pub const STORAGE_VERSION: &str = "v2";

/// Where the API server sends conversions of the Tenant CRD: the conversion webhook's Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionService {
    pub namespace: String,
    pub name: String,
}

/// The namespace `config/default` installs the operator in.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "neurallog-system";
/// The Service `config/default` puts in front of the operator's conversion webhook.
pub const DEFAULT_WEBHOOK_SERVICE: &str = "neurallog-tenant-operator-webhook";

impl Default for ConversionService {
    /// The Service of `config/default`.
    fn default() -> Self {
        Self { namespace: DEFAULT_OPERATOR_NAMESPACE.to_owned(), name: DEFAULT_WEBHOOK_SERVICE.to_owned() }
    }
}

/// Path of the conversion endpoint on the operator's webhook server.
pub const CONVERSION_PATH: &str = "/convert";

/// The CRD as served by this release: `v2` stored, `v1` served and deprecated, and `v1` reads and
/// writes converted by the operator's webhook behind `service`. Never without the webhook: with
/// the API server's own conversion (strategy `None`) a `v1` object would be stored as if it were
/// `v2`, field for field, losing what the versions spell differently. The CA bundle is left out:
/// the operator (`--webhook-service`) or OLM writes it.
pub fn crd(service: &ConversionService) -> CustomResourceDefinition {
    // Both versions are generated from types of one kind and group, so they always merge.
    let mut crd =
        merge_crds(vec![v1::Tenant::crd(), v2::Tenant::crd()], STORAGE_VERSION).unwrap_or_else(|_| v2::Tenant::crd());
    crd.spec.conversion = Some(webhook_conversion(service, None));
    crd
}

/// A conversion through the webhook behind `service`, trusting `ca_bundle` (or, without one, only
/// once the operator or OLM has written it).
pub fn webhook_conversion(service: &ConversionService, ca_bundle: Option<Vec<u8>>) -> CustomResourceConversion {
    CustomResourceConversion {
        strategy: "Webhook".to_owned(),
        webhook: Some(WebhookConversion {
            conversion_review_versions: vec!["v1".to_owned()],
            client_config: Some(WebhookClientConfig {
                ca_bundle: ca_bundle.map(ByteString),
                service: Some(ServiceReference {
                    namespace: service.namespace.clone(),
                    name: service.name.clone(),
                    path: Some(CONVERSION_PATH.to_owned()),
                    // The Service maps it to the container's webhook port.
                    port: Some(443),
                }),
                url: None,
            }),
        }),
    }
}

/// The CRD in the YAML form committed at `config/crd/bases/` (the Service of `config/default`).
pub fn crd_yaml(service: &ConversionService) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crd(service))
}

/// The TenantBackup CRD in the YAML form committed at `config/crd/bases/`.
pub fn backup_crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&backup::TenantBackup::crd())
}

/// Why an installed Tenant CRD cannot be served by this operator, if it cannot: a CRD that serves
/// a version other than the storage version without a conversion webhook stores what is written
/// through that version unconverted.
pub fn unconvertible(crd: &CustomResourceDefinition) -> Option<String> {
    let strategy = crd.spec.conversion.as_ref().map_or("None", |c| c.strategy.as_str());
    let webhook = crd.spec.conversion.as_ref().and_then(|c| c.webhook.as_ref()).and_then(|w| w.client_config.as_ref());
    let others: Vec<&str> =
        crd.spec.versions.iter().filter(|v| v.served && !v.storage).map(|v| v.name.as_str()).collect();
    if others.is_empty() || (strategy == "Webhook" && webhook.is_some()) {
        return None;
    }
    let stored = crd.spec.versions.iter().find(|v| v.storage).map_or("?", |v| v.name.as_str());
    Some(format!(
        "the CustomResourceDefinition {} serves {} beside the stored {stored} with conversion strategy {strategy}: \
         the API server would store what is written through {} unconverted, losing data. Install the CRD this \
         release generates, which converts through the operator's webhook: `kubectl apply --server-side -k config/crd` \
         (or `tenant-operator crd | kubectl apply --server-side -f -`), or install through OLM",
        crd.metadata.name.as_deref().unwrap_or("tenants.neurallog.io"),
        others.join(", "),
        others.join(", "),
    ))
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
            committed == super::crd_yaml(&super::ConversionService::default()).unwrap(),
            "config/crd/bases/neurallog.io_tenants.yaml is stale: run `make generate` and commit the result"
        );
    }

    /// So is the committed TenantBackup CRD.
    #[test]
    fn committed_backup_crd_is_up_to_date() {
        let committed = include_str!("../../config/crd/bases/neurallog.io_tenantbackups.yaml");
        assert!(
            committed == super::backup_crd_yaml().unwrap(),
            "config/crd/bases/neurallog.io_tenantbackups.yaml is stale: run `make generate` and commit the result"
        );
    }

    /// The generated CRD converts through the webhook behind the Service it is told of; without
    /// one (strategy `None`, or a webhook with no client config) a CRD serving `v1` beside the stored
    /// `v2` is refused with the fix named, and a CRD serving only its stored version needs none.
    #[test]
    fn a_crd_serving_v1_beside_the_stored_v2_must_convert_through_the_webhook() {
        let service = super::ConversionService { namespace: "ops".into(), name: "hook".into() };
        let crd = super::crd(&service);
        let conversion = crd.spec.conversion.clone().unwrap();
        assert_eq!(conversion.strategy, "Webhook");
        let target = conversion.webhook.unwrap().client_config.unwrap().service.unwrap();
        assert_eq!(
            (target.namespace.as_str(), target.name.as_str(), target.path.as_deref()),
            ("ops", "hook", Some("/convert"))
        );
        assert_eq!(super::unconvertible(&crd), None);

        let mut none = crd.clone();
        none.spec.conversion = None;
        let why = super::unconvertible(&none).unwrap();
        assert!(why.contains("serves v1 beside the stored v2 with conversion strategy None"), "{why}");
        assert!(why.contains("config/crd"), "{why}");
        let mut without_client = crd.clone();
        without_client.spec.conversion.as_mut().unwrap().webhook.as_mut().unwrap().client_config = None;
        assert!(super::unconvertible(&without_client).is_some());

        let mut only_stored = none;
        only_stored.spec.versions.retain(|version| version.storage);
        assert_eq!(super::unconvertible(&only_stored), None, "one version needs no conversion");
    }

    /// The schema of `spec.<path>` in the generated CRD (every served version).
    fn schemas(path: &str) -> Vec<Value> {
        let crd: Value = serde_yaml::from_str(&super::crd_yaml(&super::ConversionService::default()).unwrap()).unwrap();
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
            ("server.replicas", Value::from(defaults::SERVER_REPLICAS)),
            ("redis.replicas", Value::from(defaults::REDIS_REPLICAS)),
            ("redis.storage", Value::from(defaults::REDIS_STORAGE)),
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
