//! The Tenant controller: watches tenants, their children and namespaces, and reconciles each
//! tenant on any change to it or its children.
//!
//! - [`reconcile`]: the root of every reconcile (its trace, log line and metric), dispatching to
//!   the [`apply`] path of a live tenant or the [`cleanup`] path of a deleted one.
//! - [`kinds`]: what each child kind is (the objects a tenant wants of it, its controlling tenant);
//!   [`children`]: the one list of child kinds (caches, watches, readiness, mark-and-sweep prune);
//!   [`cached`]: what a child cache holds of a child, and the verdict from [`ownership`].
//! - [`finalizer`], [`namespace`], [`status`] (the status writer), [`events`] (typed reasons).
//! - [`write`]: every API write, traced; server-side apply that skips converged objects.

mod apply;
mod backoff;
pub mod backups;
mod cached;
mod children;
mod cleanup;
mod context;
pub mod error;
pub mod events;
mod finalizer;
mod kinds;
mod monitoring;
mod namespace;
pub mod operand;
mod orphans;
mod outcome;
mod ownership;
mod password;
mod reconcile;
mod rollout;
mod status;
mod triggers;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::Subject;
use kube::api::{Api, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, controller, watcher};
use kube::{Client, Resource, ResourceExt};

pub use context::Settings;
pub use finalizer::FINALIZER;
pub use rollout::RolloutSettings;
// What `tenant-operator uninstall` does for each Tenant, with the controller's own writes.
pub use cleanup::mark_retained;
pub use finalizer::{FinalizerPatch, remove as release_finalizer};
pub use password::release as release_password;

use crate::api::Tenant;
use crate::auth::AuthClient;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::resources::access;
use cached::Judge;
use children::Children;
use context::Context;
use triggers::Triggers;

/// The tenant a namespace event concerns: namespaces are named `tenant-<name>`.
fn tenant_of_namespace(namespace: &PartialObjectMeta<Namespace>) -> Option<ObjectRef<Tenant>> {
    let name = namespace.metadata.name.as_deref()?;
    name.strip_prefix("tenant-").map(ObjectRef::new)
}

/// Runs the controller until `shutdown` completes, then finishes the reconciles in flight.
/// `readiness` learns when the watch caches are filled.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.boxed().shared();
    let tenants = Api::<Tenant>::all(client.clone());
    if !wait_until_listable(&tenants, shutdown.clone()).await? {
        return Ok(());
    }
    let identity = whoami(&client).await?;
    let auth = settings
        .auth
        .clone()
        .map(|auth| AuthClient::new(auth, client.clone()).map(|auth| auth.with_metrics(metrics.clone())))
        .transpose()
        .context("invalid NeuralLog Auth settings")?;

    let triggers = Arc::new(Triggers::measured(metrics.clone()));
    let (tenant_store, tenant_events, tenants_listed) = children::cached_watch(tenants, watcher::Config::default());
    // Names of tenants whose namespace may have outlived them (src/controller/orphans.rs).
    let (orphan_check, orphan_checks) = futures::channel::mpsc::unbounded::<String>();
    let tenant_events = tenant_events.map_ok({
        let (triggers, store, orphan_check) = (triggers.clone(), tenant_store.clone(), orphan_check.clone());
        move |tenant: Tenant| {
            // Gone from the cache (it is filled before this runs): the Tenant was deleted.
            if store.get(&ObjectRef::from_obj(&tenant)).is_none() {
                let _ = orphan_check.unbounded_send(tenant.name_any());
            }
            triggers.event(&tenant.name_any(), || {
                format!("tenant changed (generation {})", tenant.meta().generation.unwrap_or_default())
            });
            tenant
        }
    });
    let judge =
        Judge { tenants: tenant_store.clone(), platform: settings.platform.clone(), operator: identity.clone() };
    let (children, child_wakes) = Children::watch(&client, &triggers, &judge, &tenants_listed);
    // Every namespace is watched (metadata only) so a foreign `tenant-<name>` is seen coming and going.
    let (namespaces, namespace_events) = children::metadata_watch::<Namespace>(&client, watcher::Config::default());
    let namespace_wakes = namespace_events.filter_map({
        let (triggers, orphan_check) = (triggers.clone(), orphan_check.clone());
        move |event| {
            let tenant = event.ok().and_then(|namespace| {
                let tenant = tenant_of_namespace(&namespace)?;
                let _ = orphan_check.unbounded_send(tenant.name.clone());
                triggers.event(&tenant.name, || format!("namespace {} changed", namespace.name_any()));
                Some(tenant)
            });
            std::future::ready(tenant)
        }
    });

    // The watches of children and namespaces are driven here, not by the kube Controller, so
    // their caches fill whatever the Controller is doing; their events reach it as wake-ups.
    let (wake, wakes) = futures::channel::mpsc::unbounded();
    // Tenants the rollout kept waiting, woken as slots free up.
    let rollout_wake = wake.clone();
    let backup_wake = wake.clone();
    let drive_watches = futures::stream::select(child_wakes, namespace_wakes).for_each(move |tenant| {
        // Fails only once the Controller is gone, when nothing needs waking any more.
        let _ = wake.unbounded_send(tenant);
        std::future::ready(())
    });
    // The only waiter on the stores' readiness (a store wakes its latest waiter only);
    // reconciles and /readyz learn it from here.
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let wait_for_sync = {
        let (children, namespaces, readiness) = (children.clone(), namespaces.clone(), readiness.clone());
        async move {
            if children.ready().await.is_ok() && namespaces.wait_until_ready().await.is_ok() {
                tracing::info!("watch caches synced");
                readiness.set_caches_synced(true);
                synced_tx.send_replace(true);
            }
        }
    };
    // Every namespace that may have outlived its tenant is looked at once the caches are full
    // (the tenant watch too: a reconcile waits for the same), then at every resync.
    let orphan_scan = {
        let (namespaces, interval, listed) = (namespaces.clone(), settings.resync_interval, tenants_listed.clone());
        async move {
            listed.wait().await;
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                for tenant in orphans::candidates(&namespaces) {
                    let _ = orphan_check.unbounded_send(tenant);
                }
            }
        }
    };
    // TenantBackups: cached for the tenants (each event wakes its tenant) and the backup
    // controller's own trigger.
    let (backup_store, backup_events) = backups::watch(&client);
    let backup_events = backup_events.inspect_ok({
        let wake = backup_wake;
        move |backup| {
            let _ = wake.unbounded_send(ObjectRef::new(&backup.spec.tenant));
        }
    });
    let rollout = rollout::Rollout::new(
        settings.rollout.clone(),
        tenant_store.clone(),
        rollout_wake,
        triggers.clone(),
        metrics.clone(),
    );
    let reporter = Reporter { controller: "neurallog-tenant-operator".into(), instance: settings.instance.clone() };
    let concurrency = settings.concurrency;
    metrics.set_max_concurrent_reconciles(crate::metrics::TENANT_CONTROLLER, usize::from(concurrency));
    let context = Arc::new(Context::new(
        client.clone(),
        identity,
        namespaces,
        children,
        synced,
        Recorder::new(client, reporter),
        settings,
        auth,
        triggers,
        metrics,
        rollout,
        backup_store.clone(),
    ));
    let orphans = {
        let (context, store) = (context.clone(), tenant_store.clone());
        async move {
            context.caches_synced().await;
            orphans::run(context, store, orphan_checks).await;
        }
    };
    let backup_controller = {
        let (context, tenants, shutdown) = (context.clone(), tenant_store.clone(), shutdown.clone());
        // It never ends the others: the tenant controller's end (after its in-flight reconciles)
        // ends it, wherever it is; each of its steps is safe to stop between API calls.
        async move {
            if context.caches_synced().await {
                backups::run(context, tenants, (backup_store, backup_events), shutdown).await;
            }
            std::future::pending::<()>().await;
        }
    };
    let monitoring_objects = {
        let context = context.clone();
        async move {
            if let (true, Some(namespace)) =
                (context.settings.monitoring_resources, context.settings.platform.operator_namespace.as_deref())
            {
                monitoring::ensure(&context.client, namespace).await;
            }
            std::future::pending::<()>().await;
        }
    };
    let operand_metrics = {
        let (context, store, shutdown) = (context.clone(), tenant_store.clone(), shutdown.clone());
        async move {
            if let Some(interval) = context.settings.operand_metrics_interval
                && context.caches_synced().await
            {
                operand::run(context, store, interval, shutdown).await;
            }
            std::future::pending::<()>().await;
        }
    };
    let controller = Controller::for_stream(tenant_events, tenant_store)
        .reconcile_on(wakes)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((tenant, _)) => tracing::debug!(tenant = %tenant.name, "reconciled"),
                // Failed reconciles are logged by the reconcile itself, inside its trace.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                // A child or namespace event of a tenant that is gone; its leftovers are the
                // orphan check's (src/controller/orphans.rs).
                Err(controller::Error::ObjectNotFound(tenant)) => {
                    tracing::debug!(tenant = %tenant.name, "woken for a tenant that is gone")
                }
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        });
    // Everything lives in this future: dropped (when leadership is lost), it all stops at once.
    tokio::select! {
        () = controller => {}
        () = backup_controller => {}
        () = operand_metrics => {}
        () = monitoring_objects => {}
        _ = futures::future::join(drive_watches, wait_for_sync) => {}
        _ = futures::future::join(orphans, orphan_scan) => {}
    }
    readiness.set_caches_synced(false);
    Ok(())
}

/// Waits until tenants can be listed; `false` when `shutdown` came first. A missing CRD or a
/// refusal fails at once. Anything else is retried with a growing delay: during an upgrade to a
/// release that converts, the API server lists through the conversion webhook, whose Service may
/// still route to replicas of the release before, which serve none.
async fn wait_until_listable(tenants: &Api<Tenant>, shutdown: impl Future<Output = ()>) -> anyhow::Result<bool> {
    const FIRST_DELAY: Duration = Duration::from_millis(500);
    const LONGEST_DELAY: Duration = Duration::from_secs(30);
    tokio::pin!(shutdown);
    let mut delay = FIRST_DELAY;
    loop {
        let error = match tenants.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 403 => kube::Error::Api(status),
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "cannot list tenants.neurallog.io yet");
                tokio::select! {
                    () = &mut shutdown => return Ok(false),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(LONGEST_DELAY);
                continue;
            }
        };
        return Err(anyhow::Error::from(error).context(
            "cannot list tenants.neurallog.io: is the CRD installed (tenant-operator crd | kubectl apply -f -) and may this identity list it?",
        ));
    }
}

/// The identity this process runs as, as the API server authenticated it.
async fn whoami(client: &Client) -> anyhow::Result<Subject> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context("cannot ask the API server who the operator is (SelfSubjectReview)")?;
    let username = review.status.and_then(|status| status.user_info).and_then(|user| user.username);
    let username = username.context("the API server's SelfSubjectReview names no user")?;
    tracing::info!(%username, "running as");
    Ok(access::subject(&username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_events_map_to_their_tenant() {
        let ns = |name: &str| PartialObjectMeta::<Namespace> {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(tenant_of_namespace(&ns("tenant-acme")).map(|r| r.name), Some("acme".to_owned()));
        assert!(tenant_of_namespace(&ns("kube-system")).is_none());
    }
}
