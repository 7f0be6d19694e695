//! Tenant namespaces that outlive their Tenant. The finalizer keeps a Tenant until its cleanup is
//! done, but a whole-object replace that leaves out `metadata.finalizers` (as the NeuralLog web
//! admin sends) removes it, and a deletion before the next reconcile puts it back lets the Tenant
//! go at once. Its namespace, still marked as created for that Tenant and not retained, is then
//! cleaned up here as the cleanup path would have: by the deletion policy recorded on it, after
//! deregistering the tenant from Auth. An uninstall (the CRD being deleted) keeps it whole.
//!
//! A namespace is an orphan only when the API server itself says its Tenant is gone (or is a
//! newer Tenant of the same name): the caches may lag behind a create, never the read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Api, DeleteParams, ObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource as _, ResourceExt as _};
use tracing::Instrument as _;

use super::children::Marks;
use super::cleanup::{installed_crd, mark_retained};
use super::context::Context;
use super::error::{Error, Result};
use super::events::{self, Activity, Changes, Reason};
use super::outcome::TERMINATION_POLL;
use super::password;
use super::write::{self, Target};
use crate::api::Tenant;
use crate::model::{DeletionPolicy, defaults, namespace_name};
use crate::resources::{TENANT_UID_ANNOTATION, namespace as builders};

/// The tenant whose namespace `namespace` may have outlived it, if it is one the operator made
/// and has not retained.
fn candidate(namespace: &ObjectMeta) -> Option<(String, String)> {
    let tenant = namespace.name.as_deref()?.strip_prefix("tenant-")?;
    let uid = namespace.annotations.as_ref()?.get(TENANT_UID_ANNOTATION)?;
    let open = builders::created_for_name(namespace, tenant)
        && !builders::retained_for(namespace, tenant)
        && namespace.deletion_timestamp.is_none();
    open.then(|| (tenant.to_owned(), uid.clone()))
}

/// The names of the tenants whose namespaces may have outlived them, from the namespace cache.
pub fn candidates(namespaces: &Store<kube::core::PartialObjectMeta<Namespace>>) -> Vec<String> {
    namespaces.state().iter().filter_map(|ns| candidate(&ns.metadata)).map(|(tenant, _)| tenant).collect()
}

/// Checks each tenant name `names` brings (a Tenant gone from the cache, a namespace changed, a
/// periodic scan) and cleans up its namespace if it outlived its Tenant. Failures are retried
/// with the controller's backoff.
pub async fn run(ctx: Arc<Context>, tenants: Store<Tenant>, names: impl Stream<Item = String> + Send) {
    let (retry, retries) = futures::channel::mpsc::unbounded::<String>();
    let first_seen = Mutex::new(HashMap::<String, Instant>::new());
    let mut names = std::pin::pin!(futures::stream::select(names, retries));
    while let Some(name) = names.next().await {
        let key = format!("orphan/{name}");
        let again = match check(&ctx, &tenants, &name, &first_seen).await {
            Ok(None) => {
                ctx.backoff.reset(&key);
                continue;
            }
            Ok(Some(wait)) => wait,
            Err(error) => {
                tracing::warn!(tenant = %name, %error, "cannot clean up the namespace of a deleted tenant");
                ctx.backoff.next_delay(&key)
            }
        };
        let retry = retry.clone();
        tokio::spawn(async move {
            tokio::time::sleep(again).await;
            // Fails only once the loop is gone, with the controller.
            let _ = retry.unbounded_send(name);
        });
    }
}

/// One look at the namespace of the tenant `name`; `Some(wait)` to look again after `wait`.
async fn check(
    ctx: &Context,
    tenants: &Store<Tenant>,
    name: &str,
    first_seen: &Mutex<HashMap<String, Instant>>,
) -> Result<Option<Duration>> {
    let namespace = namespace_name(name);
    let Some(cached) = ctx.namespaces.get(&ObjectRef::new(&namespace)) else { return Ok(None) };
    let Some((_, uid)) = candidate(&cached.metadata) else { return Ok(None) };
    if tenants.get(&ObjectRef::new(name)).is_some_and(|t| t.uid().as_deref() == Some(uid.as_str())) {
        return Ok(None);
    }
    let live = Api::<Tenant>::all(ctx.client.clone()).get_metadata_opt(name).await.map_err(|source| Error::Api {
        tenant: name.to_owned(),
        verb: "get",
        kind: "Tenant",
        name: name.to_owned(),
        source,
    })?;
    if live.as_ref().is_some_and(|t| t.metadata.uid.as_deref() == Some(uid.as_str())) {
        return Ok(None);
    }
    let successor = live.is_some();
    let policy = builders::recorded_policy(&cached.metadata).unwrap_or(defaults::DELETION_POLICY);
    let span = tracing::info_span!(
        parent: None,
        "orphan cleanup",
        tenant = name,
        namespace = %namespace,
        policy = ?policy,
        successor,
    );
    let (first, since) = {
        let mut seen = first_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = !seen.contains_key(&uid);
        (first, *seen.entry(uid.clone()).or_insert_with(Instant::now))
    };
    let orphan = Orphan { name, uid: &uid, namespace: &namespace, existing: &cached.metadata, successor, first, since };
    let result = orphan.clean_up(ctx, policy).instrument(span).await;
    if matches!(result, Ok(None)) {
        first_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&uid);
        ctx.deregistered().remove(&uid);
    }
    result
}

/// A namespace whose Tenant is gone.
struct Orphan<'a> {
    name: &'a str,
    uid: &'a str,
    namespace: &'a str,
    existing: &'a ObjectMeta,
    /// A newer Tenant of the same name exists: the registration in Auth is its own.
    successor: bool,
    /// Whether this is the first look at it in this process.
    first: bool,
    /// When this process first found the namespace orphaned.
    since: Instant,
}

impl Orphan<'_> {
    fn reference(&self) -> ObjectReference {
        let mut reference = Namespace::default().object_ref(&());
        reference.name = Some(self.namespace.to_owned());
        reference.uid = self.existing.uid.clone();
        reference
    }

    async fn publish(&self, ctx: &Context, reason: Reason, note: String) {
        events::publish_about(&ctx.recorder, &self.reference(), reason, Activity::Delete, note).await;
    }

    async fn clean_up(&self, ctx: &Context, policy: DeletionPolicy) -> Result<Option<Duration>> {
        let (name, namespace) = (self.name, self.namespace);
        let Some(crd) = installed_crd(ctx, name).await? else {
            mark_retained(&ctx.client, name, self.uid, self.existing).await?;
            let note =
                format!("the Tenant CRD is being deleted: keeping namespace {namespace} whole for tenant {name}");
            self.publish(ctx, Reason::Uninstalled, note).await;
            return Ok(None);
        };
        // Made before the CRD itself: its Tenant may have gone with an earlier CRD, in an
        // uninstall whose finalizers were removed by hand. Data is kept when in doubt.
        if self
            .existing
            .creation_timestamp
            .as_ref()
            .zip(crd.creation_timestamp.as_ref())
            .is_some_and(|(ns, crd)| ns.0 < crd.0)
        {
            mark_retained(&ctx.client, name, self.uid, self.existing).await?;
            let note = format!(
                "tenant {name} is gone without its cleanup, and namespace {namespace} predates the Tenant CRD (its tenant may have gone with an earlier one): kept whole, registration included, and marked retained instead of applying its deletion policy ({policy:?}); delete it yourself if it is not wanted"
            );
            self.publish(ctx, Reason::Orphaned, note).await;
            return Ok(None);
        }
        if self.first {
            tracing::info!(tenant = name, %namespace, ?policy, "the namespace outlived its tenant");
            let note = format!(
                "tenant {name} was deleted without its cleanup (its finalizer had been removed); cleaning up namespace {namespace} by the deletion policy recorded on it ({policy:?})"
            );
            self.publish(ctx, Reason::Orphaned, note).await;
        }
        if !password::release(&ctx.client, name, namespace).await? {
            return Ok(Some(TERMINATION_POLL));
        }
        if !self.successor
            && let Some(wait) = self.deregister(ctx).instrument(tracing::info_span!("auth")).await
        {
            return Ok(Some(wait));
        }
        match policy {
            DeletionPolicy::Delete => self.delete(ctx).instrument(tracing::info_span!("delete_namespace")).await,
            DeletionPolicy::Retain => self.retain(ctx).instrument(tracing::info_span!("retain_namespace")).await,
        }
    }

    /// `Some(wait)` while Auth fails and the deregistration deadline has not passed.
    async fn deregister(&self, ctx: &Context) -> Option<Duration> {
        let auth = ctx.auth.as_ref()?;
        let name = self.name;
        if ctx.deregistered().contains(self.uid) {
            return None;
        }
        match auth.deregister(name).await {
            Ok(()) => {
                ctx.deregistered().insert(self.uid.to_owned());
                let note = format!("tenant {name} is deregistered from NeuralLog Auth");
                self.publish(ctx, Reason::Deregistered, note).await;
                None
            }
            Err(error) if self.since.elapsed() >= ctx.settings.auth_deregistration_deadline => {
                let note = format!(
                    "{error}; giving up after {}s: tenant {name} may remain registered in NeuralLog Auth (DELETE /api/tenants/{name} removes it)",
                    ctx.settings.auth_deregistration_deadline.as_secs()
                );
                self.publish(ctx, Reason::AuthDeregistrationAbandoned, note).await;
                None
            }
            Err(error) => {
                self.publish(ctx, Reason::Failed(error.reason().to_owned()), error.to_string()).await;
                Some(ctx.backoff.next_delay(&format!("orphan/{name}/auth")))
            }
        }
    }

    async fn delete(&self, ctx: &Context) -> Result<Option<Duration>> {
        let namespace = self.namespace;
        let target = Target { tenant: self.name, verb: "delete", kind: "Namespace", name: namespace };
        let api = Api::<Namespace>::all(ctx.client.clone());
        write::send_tolerating(target, &[404], api.delete(namespace, &DeleteParams::background()), |_| true).await?;
        self.publish(ctx, Reason::Deleting, format!("deleting namespace {namespace} and everything in it")).await;
        Ok(None)
    }

    /// Removes what the operator made in the namespace but its volumes, then marks it retained
    /// (which ends the cleanup: a retained namespace is no orphan).
    async fn retain(&self, ctx: &Context) -> Result<Option<Duration>> {
        let (name, namespace) = (self.name, self.namespace);
        let mut changes = Changes::default();
        let remaining = ctx.children.sweep(&ctx.client, name, namespace, &Marks::default(), &mut changes).await?;
        if remaining > 0 {
            return Ok(Some(TERMINATION_POLL));
        }
        password::keep(ctx, name, namespace).await?;
        mark_retained(&ctx.client, name, self.uid, self.existing).await?;
        let note = format!(
            "keeping namespace {namespace} and its volumes for a tenant named {name} to adopt; removed the workloads"
        );
        self.publish(ctx, Reason::Retaining, note).await;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestTenant;

    #[test]
    fn only_open_namespaces_the_operator_made_are_candidates() {
        let model = TestTenant::new("acme").valid_model();
        let made = builders::namespace(&model, None).metadata;
        assert_eq!(candidate(&made), Some(("acme".to_owned(), model.uid.clone())));

        let retained = builders::retained("acme", &model.uid).metadata;
        assert_eq!(candidate(&retained), None, "a retained namespace waits for its adopter");

        let mut terminating = made.clone();
        terminating.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        assert_eq!(candidate(&terminating), None, "already going");

        let mut foreign = made.clone();
        foreign.labels = None;
        assert_eq!(candidate(&foreign), None, "not labelled as the operator's");

        let mut renamed = made;
        renamed.name = Some("team-acme".to_owned());
        assert_eq!(candidate(&renamed), None, "not a tenant namespace");
    }
}
