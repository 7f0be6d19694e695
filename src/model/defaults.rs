//! Every default of a tenant, in one place. The API types' schema defaults (`default:` in the CRD)
//! and the model (for fields left out) read these constants; a test checks that the CRD's
//! defaults and field descriptions say the same.

use super::{DeletionPolicy, Protocol};

pub const SERVER_REPLICAS: i32 = 1;
pub const REDIS_REPLICAS: i32 = 1;
pub const REGISTRY_REPLICAS: i32 = 1;
/// Size of the Redis data volume.
pub const REDIS_STORAGE: &str = "1Gi";
pub const NETWORK_POLICY_ENABLED: bool = true;
pub const DELETION_POLICY: DeletionPolicy = DeletionPolicy::Delete;
pub const PROTOCOL: Protocol = Protocol::Tcp;

/// Requests and limits of one container, as Kubernetes quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDefaults {
    pub cpu_request: &'static str,
    pub cpu_limit: &'static str,
    pub memory_request: &'static str,
    pub memory_limit: &'static str,
}

impl ResourceDefaults {
    /// How the field descriptions state them.
    pub fn describe(&self) -> String {
        format!(
            "requests {} CPU and {} memory, limits {} CPU and {} memory",
            self.cpu_request, self.memory_request, self.cpu_limit, self.memory_limit
        )
    }
}

pub const SERVER_RESOURCES: ResourceDefaults =
    ResourceDefaults { cpu_request: "100m", cpu_limit: "500m", memory_request: "128Mi", memory_limit: "512Mi" };
pub const REDIS_RESOURCES: ResourceDefaults =
    ResourceDefaults { cpu_request: "100m", cpu_limit: "300m", memory_request: "128Mi", memory_limit: "256Mi" };
pub const REGISTRY_RESOURCES: ResourceDefaults =
    ResourceDefaults { cpu_request: "50m", cpu_limit: "200m", memory_request: "64Mi", memory_limit: "128Mi" };
/// A backup pod's (its Job's, and the restore's first init container): it streams, so it needs
/// little whatever the data.
pub const BACKUP_RESOURCES: ResourceDefaults =
    ResourceDefaults { cpu_request: "50m", cpu_limit: "500m", memory_request: "64Mi", memory_limit: "128Mi" };
/// Defaults of containers that declare nothing in a tenant namespace with a budget (the
/// LimitRange), before the budget caps them: the server's.
pub const CONTAINER_RESOURCES: ResourceDefaults = SERVER_RESOURCES;
