//! The tenant namespace: found in the cache (or read when a create finds it exists),
//! created for this tenant, adopted when an earlier tenant of the same name retained it, and
//! never touched when it belongs to someone else.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::ObjectRef;

use super::context::Context;
use super::error::{Error, Result};
use super::events::Changes;
use super::write::{self, Change};
use crate::model::TenantModel;
use crate::model::state::NamespaceState;
use crate::resources::namespace;

/// Metadata of the namespace `name`: from the cache, or, when the cache has not seen it (it may
/// lag behind a create), from the API server.
pub async fn metadata(ctx: &Context, tenant: &str, name: &str) -> Result<Option<ObjectMeta>> {
    if let Some(cached) = ctx.namespaces.get(&ObjectRef::new(name)) {
        return Ok(Some(cached.metadata.clone()));
    }
    let found = Api::<Namespace>::all(ctx.client.clone()).get_metadata_opt(name).await.map_err(|source| {
        Error::Api { tenant: tenant.to_owned(), verb: "get", kind: "Namespace", name: name.to_owned(), source }
    })?;
    Ok(found.map(|ns| ns.metadata))
}

/// Makes sure the tenant has its namespace, and says what state it is in.
pub async fn ensure(model: &TenantModel, ctx: &Context, changes: &mut Changes) -> Result<NamespaceState> {
    let api = Api::<Namespace>::all(ctx.client.clone());
    let name = &model.namespace;
    // Not in the cache: created right away, without asking first (a new tenant's namespace is
    // not there yet); if the cache only lagged behind, the create says so and it is read then.
    let cached = ctx.namespaces.get(&ObjectRef::new(name)).map(|cached| cached.metadata.clone());
    let existing = match cached {
        Some(existing) => existing,
        None => match write::create(&api, &model.name, &namespace::namespace(model, None)).await? {
            Some(_) => {
                changes.record(Change::Created, "Namespace", name);
                return Ok(NamespaceState::Ready);
            }
            // It exists (the cache lagged, or someone else created it): judge it like any
            // existing namespace.
            None => {
                api.get_metadata(name)
                    .await
                    .map_err(|source| Error::Api {
                        tenant: model.name.clone(),
                        verb: "get",
                        kind: "Namespace",
                        name: name.clone(),
                        source,
                    })?
                    .metadata
            }
        },
    };
    let terminating = existing.deletion_timestamp.is_some();
    if namespace::created_for(&existing, &model.uid) {
        if terminating {
            return Ok(NamespaceState::Terminating {
                message: format!("namespace {name} is being deleted; the operator re-creates it once it is gone"),
            });
        }
        let desired = namespace::namespace(model, Some(&existing));
        let applied = write::apply(
            &api,
            &model.name,
            Some(write::Live::Metadata(&write::metadata_only::<Namespace>(&existing))),
            &desired,
        )
        .await?;
        changes.record(applied.change, "Namespace", name);
        return Ok(NamespaceState::Ready);
    }
    if !terminating && namespace::retained_for(&existing, &model.name) {
        // Kept by an earlier tenant of this name (deletionPolicy Retain, or an uninstall): taking
        // it over, data included, is what re-creating the tenant is for. The earlier tenant's
        // policy does not carry over.
        let desired = namespace::namespace(model, None);
        write::apply(
            &api,
            &model.name,
            Some(write::Live::Metadata(&write::metadata_only::<Namespace>(&existing))),
            &desired,
        )
        .await?;
        let adopted = format!("{name} (adopted with the data retained by an earlier tenant)");
        changes.record(Change::Updated, "Namespace", &adopted);
        return Ok(NamespaceState::Ready);
    }
    if terminating && namespace::created_for_name(&existing, &model.name) {
        return Ok(NamespaceState::Terminating {
            message: format!(
                "namespace {name} of an earlier tenant named {} is still terminating; waiting for it to be gone",
                model.name
            ),
        });
    }
    Ok(NamespaceState::Conflict {
        message: format!(
            "namespace {name} already exists and was not created by the operator for this tenant; it is left untouched. Delete or rename it, or give the tenant another name"
        ),
    })
}
