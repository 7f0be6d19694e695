//! Test tenants, for unit tests (typed, through the stored version) and integration tests (the
//! JSON manifest a user would `kubectl apply`). One builder, so every test states only what its
//! tenant has that others do not.

use serde_json::{Value, json};

use crate::api::{GROUP, KIND, STORAGE_VERSION, Tenant, conversion};
use crate::model::{InvalidSpec, TenantModel};

/// A Tenant under construction: a name and a `v1` spec (the version users and the web admin
/// write).
#[derive(Debug, Clone)]
pub struct TestTenant {
    name: String,
    spec: Value,
}

impl TestTenant {
    /// A tenant with an empty spec: every default.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), spec: json!({}) }
    }

    /// Replaces the whole spec, for payloads written out in full.
    pub fn spec(mut self, spec: Value) -> Self {
        self.spec = spec;
        self
    }

    /// Sets one field of the spec by its dotted path (`registry.baseDomain`), creating parents.
    pub fn set(mut self, path: &str, value: Value) -> Self {
        let mut target = &mut self.spec;
        for part in path.split('.') {
            if !target.is_object() {
                *target = json!({});
            }
            target = &mut target[part];
        }
        *target = value;
        self
    }

    /// A tenant-wide CPU budget (`spec.resources.cpu`).
    pub fn cpu_budget(self, request: Option<&str>, limit: Option<&str>) -> Self {
        self.set("resources.cpu", request_limit(request, limit))
    }

    /// A tenant-wide storage budget (`spec.resources.storage`).
    pub fn storage_budget(self, request: Option<&str>, limit: Option<&str>) -> Self {
        self.set("resources.storage", request_limit(request, limit))
    }

    /// The manifest, as `kubectl create` would send it.
    pub fn manifest(&self) -> Value {
        json!({"apiVersion": format!("{GROUP}/v1"), "kind": KIND, "metadata": {"name": self.name}, "spec": self.spec})
    }

    /// The tenant as the API server would hand it to the controller: with a UID, converted from
    /// `v1` to the stored version by the conversion webhook's code, defaults filled in by
    /// deserialisation.
    pub fn tenant(&self) -> Tenant {
        let mut manifest = self.manifest();
        manifest["metadata"]["uid"] = json!(format!("uid-{}", self.name));
        let stored = format!("{GROUP}/{STORAGE_VERSION}");
        conversion::convert(&manifest, &stored)
            .and_then(|converted| {
                serde_json::from_value(converted).map_err(|error| conversion::ConversionError::Invalid {
                    object: self.name.clone(),
                    field: "(object)".into(),
                    message: error.to_string(),
                })
            })
            .unwrap_or_else(|error| panic!("test tenant {}: {error}", self.name))
    }

    /// The model of the tenant.
    pub fn model(&self) -> Result<TenantModel, InvalidSpec> {
        self.tenant().model()
    }

    /// The model of a tenant the test knows to be valid.
    pub fn valid_model(&self) -> TenantModel {
        self.model().unwrap_or_else(|error| panic!("test tenant {}: {error}", self.name))
    }
}

fn request_limit(request: Option<&str>, limit: Option<&str>) -> Value {
    let mut value = json!({});
    if let Some(request) = request {
        value["request"] = json!(request);
    }
    if let Some(limit) = limit {
        value["limit"] = json!(limit);
    }
    value
}
