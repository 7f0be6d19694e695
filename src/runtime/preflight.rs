//! What every replica checks before it serves or reconciles anything: that the Tenant CRD converts
//! between its versions (one that does not would store `v1` writes unconverted), and that the
//! admission policy confining the operator's writes is in place. OLM bundles cannot carry an
//! admission policy, so the operator creates it itself, with the right to create and read it and
//! no right to change or delete one: an operator that is taken over cannot loosen its own policy.

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

use crate::api::{self, Tenant};

/// The policy and its binding, as `config/admission` installs them.
const CONFINEMENT: &str = include_str!("../../config/admission/confinement.yaml");

/// Name of the confinement policy and of its binding.
pub const CONFINEMENT_NAME: &str = "neurallog-tenant-operator-confinement";

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("cannot read the CustomResourceDefinition {crd}: {source}")]
    ReadCrd { crd: String, source: kube::Error },
    #[error(
        "the CustomResourceDefinition {crd} is not installed: install it with `kubectl apply --server-side -k config/crd` (or through OLM)"
    )]
    NoCrd { crd: String },
    #[error("{0}")]
    Unconvertible(String),
    #[error(
        "the admission policy confining the operator is not in place ({0}); the operator refuses to run unconfined. Let it create the policy (RBAC: get and create on validatingadmissionpolicies and validatingadmissionpolicybindings), apply it yourself with `kubectl apply -k config/admission`, or start with --allow-unconfined (TENANT_OPERATOR_ALLOW_UNCONFINED=true) to run without it"
    )]
    Unconfined(String),
}

/// Refuses a Tenant CRD that is missing or would store `v1` writes unconverted. With
/// `self_managed`, the operator points the CRD's conversion at its webhook itself, so a CRD
/// without one is left to that.
pub async fn check_crd(client: &Client, self_managed: bool) -> Result<(), PreflightError> {
    let name = <Tenant as kube::CustomResourceExt>::crd_name();
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|source| PreflightError::ReadCrd { crd: name.to_owned(), source })?
        .ok_or_else(|| PreflightError::NoCrd { crd: name.to_owned() })?;
    match api::unconvertible(&crd) {
        Some(why) if !self_managed => Err(PreflightError::Unconvertible(why)),
        Some(why) => {
            tracing::warn!(%why, "the self-managed webhook points the CRD's conversion at itself");
            Ok(())
        }
        None => Ok(()),
    }
}

/// Puts the confinement policy and its binding in place when they are missing, and checks that
/// both are there as this release states them. With `allow_unconfined`, a failure is logged and
/// the operator runs all the same.
pub async fn confine(client: &Client, allow_unconfined: bool) -> Result<(), PreflightError> {
    let result = async {
        let (policy, binding) =
            confinement().map_err(|error| format!("the built-in policy does not parse: {error}"))?;
        ensure(client, &policy).await?;
        ensure(client, &binding).await
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(policy = CONFINEMENT_NAME, "the admission policy confining the operator is in place");
            Ok(())
        }
        Err(why) if allow_unconfined => {
            tracing::warn!(%why, "running unconfined (--allow-unconfined): the admission policy is not in place");
            Ok(())
        }
        Err(why) => Err(PreflightError::Unconfined(why)),
    }
}

/// The policy and binding of `config/admission`.
pub fn confinement() -> Result<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding), serde_yaml::Error> {
    let mut documents = serde_yaml::Deserializer::from_str(CONFINEMENT);
    let mut next = || documents.next().map(serde_yaml::Value::deserialize).transpose();
    let policy = serde_yaml::from_value(next()?.unwrap_or_default())?;
    let binding = serde_yaml::from_value(next()?.unwrap_or_default())?;
    Ok((policy, binding))
}

/// Creates `desired` when it is missing; checks that what is there holds everything it states.
async fn ensure<K>(client: &Client, desired: &K) -> Result<(), String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let (kind, name) = (K::kind(&()), desired.name_any());
    let read = |error: kube::Error| format!("cannot read {kind} {name}: {error}");
    let live = match api.get_opt(&name).await.map_err(read)? {
        Some(live) => live,
        None => match api.create(&PostParams::default(), desired).await {
            Ok(created) => {
                tracing::info!(%kind, %name, "created");
                created
            }
            // Another replica created it first.
            Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await.map_err(read)?,
            Err(error) => return Err(format!("cannot create {kind} {name}: {error}")),
        },
    };
    let (live, desired) = (to_json(&live), to_json(desired));
    if holds(&live["spec"], &desired["spec"]) {
        Ok(())
    } else {
        Err(format!(
            "{kind} {name} differs from the one this release confines itself with; the operator never changes it: delete it (kubectl delete {} {name}) for the operator to create it anew, or apply config/admission",
            kind.to_lowercase()
        ))
    }
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Whether `live` holds every value `desired` states (fields the API server defaults aside).
fn holds(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, value)| live.get(key).is_some_and(|found| holds(found, value)))
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(found, value)| holds(found, value))
        }
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_built_in_policy_parses_and_names_itself_and_its_binding() {
        let (policy, binding) = confinement().unwrap();
        assert_eq!(policy.name_any(), CONFINEMENT_NAME);
        assert_eq!(binding.name_any(), CONFINEMENT_NAME);
        let spec = binding.spec.unwrap();
        assert_eq!(spec.policy_name.as_deref(), Some(CONFINEMENT_NAME));
        assert_eq!(spec.validation_actions, Some(vec!["Deny".to_owned()]));
        assert_eq!(policy.spec.unwrap().failure_policy.as_deref(), Some("Fail"));
    }

    #[test]
    fn a_live_object_holds_what_is_stated_and_defaults_beside_it_but_not_a_change() {
        let desired = json!({"failurePolicy": "Fail", "rules": [{"ops": ["CREATE"]}], "name": "x"});
        let defaulted = json!({"failurePolicy": "Fail", "rules": [{"ops": ["CREATE"], "scope": "*"}], "name": "x", "matchPolicy": "Equivalent"});
        assert!(holds(&defaulted, &desired));
        for changed in [
            json!({"failurePolicy": "Ignore", "rules": [{"ops": ["CREATE"]}], "name": "x"}),
            json!({"failurePolicy": "Fail", "rules": [{"ops": ["CREATE", "DELETE"]}], "name": "x"}),
            json!({"failurePolicy": "Fail", "rules": [], "name": "x"}),
            json!({"failurePolicy": "Fail", "rules": [{"ops": ["CREATE"]}]}),
        ] {
            assert!(!holds(&changed, &desired), "{changed}");
        }
    }
}
