//! The operator's own access inside a tenant namespace. Reading Secrets cannot be granted
//! cluster-wide without granting every Secret in the cluster, so the ClusterRole grants none; each
//! tenant namespace gets a RoleBinding of the ClusterRole [`SECRETS_ROLE`] (read Secrets) to the
//! operator's own identity, which lets it see the one Secret it creates there and nothing outside
//! the namespaces it created.

use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};

use super::{child_meta, tenant_labels};
use crate::model::TenantModel;

/// The ClusterRole bound in every tenant namespace (`config/rbac/tenant_secrets_role.yaml`).
pub const SECRETS_ROLE: &str = "neurallog-tenant-operator-tenant-secrets";
/// Name of the RoleBinding in every tenant namespace.
pub const ROLE_BINDING: &str = "neurallog-tenant-operator";

/// The identity the operator runs as, as an RBAC subject: a ServiceAccount in a cluster, a user
/// otherwise (`username` as the API server authenticated it).
pub fn subject(username: &str) -> Subject {
    match username.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')) {
        Some((namespace, name)) => Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        },
        None => Subject {
            kind: "User".to_owned(),
            name: username.to_owned(),
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            ..Subject::default()
        },
    }
}

/// The RoleBinding that lets `operator` read Secrets in the tenant namespace.
pub fn role_binding(model: &TenantModel, operator: &Subject) -> RoleBinding {
    RoleBinding {
        metadata: child_meta(model, ROLE_BINDING.to_owned(), tenant_labels(&model.name)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: SECRETS_ROLE.to_owned(),
        },
        subjects: Some(vec![operator.clone()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestTenant;

    #[test]
    fn a_service_account_and_a_user_become_their_subjects() {
        let sa = subject("system:serviceaccount:operators:neurallog-tenant-operator");
        assert_eq!((sa.kind.as_str(), sa.name.as_str()), ("ServiceAccount", "neurallog-tenant-operator"));
        assert_eq!(sa.namespace.as_deref(), Some("operators"));
        let user = subject("tenant-operator");
        assert_eq!((user.kind.as_str(), user.name.as_str(), user.namespace), ("User", "tenant-operator", None));
    }

    #[test]
    fn the_binding_grants_the_secrets_role_in_the_tenant_namespace_only() {
        let model = TestTenant::new("acme").valid_model();
        let binding = role_binding(&model, &subject("tenant-operator"));
        assert_eq!(binding.metadata.namespace.as_deref(), Some("tenant-acme"));
        assert_eq!((binding.role_ref.kind.as_str(), binding.role_ref.name.as_str()), ("ClusterRole", SECRETS_ROLE));
        assert_eq!(binding.subjects.unwrap()[0].name, "tenant-operator");
        assert_eq!(binding.metadata.owner_references.unwrap()[0].name, "acme");
    }
}
