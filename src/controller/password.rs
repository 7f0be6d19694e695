//! The Redis password Secret. Redis and the server read the password when their pods start, so a
//! password that changed under them would lock the next restarted pod out of the data. The Secret
//! is therefore created once, immutable (an edit is refused by the API server), and held by a
//! finalizer while its tenant exists (a deleted Secret stays, terminating and readable, until
//! the tenant is deleted). Should it be lost all the same (its finalizer removed by hand), a new
//! password is created and Redis and the server are restarted together, so both use it.
//!
//! The operator may not watch Secrets (that would let it read every Secret in the cluster): it
//! reads this one's metadata when it reconciles the tenant, through the RoleBinding in the tenant
//! namespace ([`crate::resources::access`]).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::context::Context;
use super::error::{Error, Result};
use super::events::{self, Activity, Reason};
use super::write::{self, Change, Target};
use crate::api::Tenant;
use crate::model::TenantModel;
use crate::resources::endpoints;
use crate::resources::redis::{self, PASSWORD_FINALIZER};

/// Pod-template annotation whose change restarts Redis and the server onto a new password.
pub const RESTARTED_FOR_PASSWORD: &str = "neurallog.io/redis-password-changed-at";

/// Makes sure the tenant's password Secret exists and is held. Returns the change, for the
/// reconcile's Events.
pub async fn ensure(ctx: &Context, tenant: &Tenant, model: &TenantModel) -> Result<Change> {
    let name = redis::secret_name(&model.name);
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &model.namespace);
    let existing = match read(&api, &model.name, &name).await? {
        Read::Found(existing) => existing,
        Read::Missing => return create(ctx, tenant, model, &api).await,
        // Not readable yet (the RoleBinding that grants it is new): the create says whether it
        // exists, and the next pass reads it.
        Read::NotPermitted => {
            let created = write::create(&api, &model.name, &redis::secret(model, &redis::generate_password())).await?;
            return Ok(if created.is_some() { Change::Created } else { Change::Unchanged });
        }
    };
    let held = is_held(&existing);
    if existing.deletion_timestamp.is_some() {
        if held && ctx.warned_once(existing.uid.as_deref().unwrap_or_default()) {
            let note = format!(
                "Secret {name} in {} was deleted while the tenant uses it: its deletion is held (finalizer {PASSWORD_FINALIZER}) until the tenant is deleted, so Redis and the server keep their password",
                model.namespace
            );
            events::publish(&ctx.recorder, tenant, Reason::PasswordHeld, Activity::Apply, note).await;
        }
        // Unheld, it is gone soon, and the next pass replaces it.
        return Ok(Change::Unchanged);
    }
    if held {
        return Ok(Change::Unchanged);
    }
    // Made by 0.1.0, kept with a retained namespace, or its finalizer removed by hand: held (and
    // owned by this tenant) from now on, its password unchanged.
    let mut finalizers = existing.finalizers.clone().unwrap_or_default();
    finalizers.push(PASSWORD_FINALIZER.to_owned());
    let body = json!({
        "metadata": {
            "finalizers": finalizers,
            "ownerReferences": [model.owner],
            "resourceVersion": existing.resource_version,
        },
        "immutable": true,
    });
    let target = Target { tenant: &model.name, verb: "hold", kind: "Secret", name: &name };
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    // A conflict means it changed since it was read: the next pass holds the newer copy.
    let held = write::send_tolerating(target, &[404, 409], api.patch(&name, &params, &patch), |_| true).await?;
    Ok(if held.is_some() { Change::Updated } else { Change::Unchanged })
}

/// A new password Secret. A Redis that already runs had the lost one, so it and the server are
/// restarted onto the new one.
async fn create(ctx: &Context, tenant: &Tenant, model: &TenantModel, api: &Api<Secret>) -> Result<Change> {
    let redis_running = ctx.children.stateful_sets.get(&ObjectRef::new(&redis::name(model)).within(&model.namespace));
    let created = write::create(api, &model.name, &redis::secret(model, &redis::generate_password())).await?;
    if created.is_none() {
        // Created meanwhile: the next pass reads it.
        return Ok(Change::Unchanged);
    }
    if redis_running.is_some() {
        restart_onto_new_password(ctx, tenant, model).await?;
    }
    Ok(Change::Created)
}

/// What reading the password Secret's metadata found.
enum Read {
    Found(Box<ObjectMeta>),
    Missing,
    /// Forbidden: the RoleBinding that grants the read is not in place (yet, or any more).
    NotPermitted,
}

async fn read(api: &Api<Secret>, tenant: &str, name: &str) -> Result<Read> {
    match api.get_metadata_opt(name).await {
        Ok(Some(found)) => Ok(Read::Found(Box::new(found.metadata))),
        Ok(None) => Ok(Read::Missing),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Read::NotPermitted),
        Err(source) => {
            Err(Error::Api { tenant: tenant.to_owned(), verb: "get", kind: "Secret", name: name.to_owned(), source })
        }
    }
}

/// Lets the password Secret of a deleted tenant go with its namespace; a retained namespace
/// ([`keep`]) and an uninstall leave it in place, unheld. `false` while it is still
/// held (it changed since it was read: the next pass releases the newer copy).
pub async fn release(client: &Client, tenant: &str, namespace: &str) -> Result<bool> {
    let name = redis::secret_name(tenant);
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = match read(&api, tenant, &name).await? {
        Read::Found(secret) if is_held(&secret) => secret,
        // Gone, unheld, or no longer readable (a retained namespace's RoleBinding goes with its
        // workloads, after this release).
        Read::Found(_) | Read::Missing | Read::NotPermitted => return Ok(true),
    };
    let kept: Vec<&String> = secret.finalizers.iter().flatten().filter(|f| *f != PASSWORD_FINALIZER).collect();
    let body = json!({"metadata": {"finalizers": kept, "resourceVersion": secret.resource_version}});
    let target = Target { tenant, verb: "release", kind: "Secret", name: &name };
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    let released = write::send_tolerating(target, &[409], api.patch(&name, &params, &patch), |_| true).await?;
    Ok(released.is_some())
}

/// Keeps the password Secret of a tenant whose namespace is retained (after [`release`]): no
/// longer owned by the tenant, so the garbage collector leaves it when the tenant goes, and a
/// tenant of the same name that adopts the namespace finds the password its Redis data was
/// written under. A patch without reading it.
pub async fn keep(ctx: &Context, tenant: &str, namespace: &str) -> Result<()> {
    let name = redis::secret_name(tenant);
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let body = json!({"metadata": {"ownerReferences": null}});
    let target = Target { tenant, verb: "keep", kind: "Secret", name: &name };
    let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
    write::send_tolerating(target, &[404], api.patch(&name, &params, &patch), |_| true).await?;
    Ok(())
}

/// Restarts Redis and the server so that both read the new password (the Redis data is on its
/// volume, untouched). A merge patch under its own field manager: the operator's applies neither
/// own nor remove the annotation.
async fn restart_onto_new_password(ctx: &Context, tenant: &Tenant, model: &TenantModel) -> Result<()> {
    let now = jiff::Timestamp::now().to_string();
    let body = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_FOR_PASSWORD: now}}}}});
    let params =
        PatchParams { field_manager: Some("neurallog-password-rotation".to_owned()), ..PatchParams::default() };
    let patch = Patch::Merge(&body);
    let (redis_name, server_name) = (redis::name(model), endpoints::server_name(model));
    let stateful_sets = Api::<StatefulSet>::namespaced(ctx.client.clone(), &model.namespace);
    let target = Target { tenant: &model.name, verb: "restart", kind: "StatefulSet", name: &redis_name };
    write::send_tolerating(target, &[404], stateful_sets.patch(&redis_name, &params, &patch), |_| true).await?;
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &model.namespace);
    let target = Target { tenant: &model.name, verb: "restart", kind: "Deployment", name: &server_name };
    write::send_tolerating(target, &[404], deployments.patch(&server_name, &params, &patch), |_| true).await?;
    let note = format!(
        "the Redis password Secret {} was lost and created anew with a new password; restarting {redis_name} and {server_name} so both use it (the data is kept)",
        redis::secret_name(&model.name)
    );
    events::publish(&ctx.recorder, tenant, Reason::PasswordReplaced, Activity::Apply, note).await;
    Ok(())
}

/// Whether the operator's finalizer holds a Secret.
fn is_held(meta: &ObjectMeta) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == PASSWORD_FINALIZER)
}
