//! The in-cluster endpoints of the tenant's HTTP services. The server and the registry announce
//! each other, so their names, ports and URLs live here rather than in either builder.

use crate::model::TenantModel;

pub const SERVER_PORT: i32 = 3030;
pub const REGISTRY_PORT: i32 = 3031;

/// Name of the server Service and Deployment.
pub fn server_name(model: &TenantModel) -> String {
    format!("{}-server", model.name)
}

/// Name of the registry Service, Deployment and Ingress.
pub fn registry_name(model: &TenantModel) -> String {
    format!("{}-registry", model.name)
}

fn url(model: &TenantModel, service: String, port: i32) -> String {
    format!("http://{service}.{}.svc:{port}", model.namespace)
}

/// The server's in-cluster URL (the registry's `SERVER_URL`).
pub fn server_url(model: &TenantModel) -> String {
    url(model, server_name(model), SERVER_PORT)
}

/// The registry's in-cluster URL (the server's `REGISTRY_URL`).
pub fn registry_url(model: &TenantModel) -> String {
    url(model, registry_name(model), REGISTRY_PORT)
}
