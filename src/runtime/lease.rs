//! Leader election on a Lease in the operator's own namespace, with kube-lease-manager (the
//! maintained lease crate built for kube 5).
//!
//! The crate renews and takes over; around it this module adds what an operator needs: a replica
//! steps down the moment a renewal fails or the Lease names another holder (it never keeps
//! writing on an old belief), a follower takes a Lease the moment its holder releases it (a
//! watch on the one Lease, instead of sleeping until it would have expired), and the leader
//! releases the Lease when asked, once the reconciles in flight are done.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use crate::readiness::{Readiness, Role};

/// The Lease the replicas elect their leader with, unless `--leader-election-lease` names another.
pub const DEFAULT_LEASE: &str = "neurallog-tenant-operator";

/// The Lease and this process's claim on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub duration: Duration,
    /// How long before the claim runs out the holder renews it.
    pub renew_before: Duration,
}

/// After a failure to reach the API server, the next attempt waits this long.
const RETRY: Duration = Duration::from_secs(2);

async fn manager(client: &Client, settings: &LeaseSettings) -> kube_lease_manager::Result<LeaseManager> {
    LeaseManagerBuilder::new(client.clone(), &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration.as_secs())
        .with_grace(settings.renew_before.as_secs())
        .with_field_manager(format!("neurallog-tenant-operator-{}", settings.identity))
        .build()
        .await
}

/// Takes part in leader election until `release` completes, publishing this process's role on
/// `readiness`; then releases the Lease if this process holds it.
pub async fn elect(
    client: Client,
    settings: LeaseSettings,
    readiness: std::sync::Arc<Readiness>,
    release: impl Future<Output = ()>,
) {
    let mut release = std::pin::pin!(release);
    let leases = Api::<Lease>::namespaced(client.clone(), &settings.namespace);
    let lease_name = settings.name.clone();
    loop {
        let manager = tokio::select! {
            () = &mut release => return,
            built = manager(&client, &settings) => built,
        };
        let manager = match manager {
            Ok(manager) => manager,
            Err(error) => {
                tracing::warn!(%error, lease = %lease_name, "cannot read the leader election Lease; retrying");
                tokio::select! {
                    () = &mut release => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        // Reached the API server: not the leader until the Lease says so (every way out of the
        // loop below as the leader has stepped down already).
        readiness.set_role(Role::Follower);
        let config = watcher::Config::default().fields(&format!("metadata.name={lease_name}"));
        let mut holders = std::pin::pin!(watcher(leases.clone(), config).default_backoff().applied_objects());
        // One `changed` future lives until it completes: dropping it mid-renewal would make the
        // next one renew again at once, and every renewal is a watch event.
        let mut changed = Box::pin(manager.changed());
        loop {
            let step = tokio::select! {
                biased;
                () = &mut release => Step::Release,
                result = &mut changed => Step::Changed(result),
                Some(Ok(lease)) = holders.next() => Step::Holder(lease.spec.and_then(|spec| spec.holder_identity)),
            };
            let leading = readiness.role() == Role::Leader;
            match step {
                Step::Release => {
                    // The pending `changed` may hold the manager's state lock: gone before releasing.
                    drop(changed);
                    if leading {
                        match manager.release().await {
                            Ok(()) => tracing::info!(lease = %lease_name, "released the leader Lease"),
                            Err(error) => {
                                tracing::warn!(%error, lease = %lease_name, "cannot release the leader Lease; it expires on its own")
                            }
                        }
                    }
                    return;
                }
                Step::Changed(Ok(true)) => {
                    tracing::info!(lease = %lease_name, identity = %settings.identity, "became the leader");
                    readiness.set_role(Role::Leader);
                }
                Step::Changed(Ok(false)) => {
                    tracing::warn!(lease = %lease_name, "lost the leader Lease");
                    readiness.set_role(Role::Follower);
                }
                Step::Changed(Err(error)) => {
                    // Whether the claim still holds is unknown: stop writing now, start over.
                    tracing::warn!(%error, lease = %lease_name, "cannot renew or read the leader Lease; stepping down");
                    readiness.set_role(Role::Follower);
                    break;
                }
                Step::Holder(holder) if leading && holder.as_deref() != Some(settings.identity.as_str()) => {
                    tracing::warn!(lease = %lease_name, holder = ?holder, "the leader Lease names another holder; stepping down");
                    readiness.set_role(Role::Follower);
                    break;
                }
                // Released by its holder: start over, which takes it without waiting.
                Step::Holder(None) if !leading => break,
                Step::Holder(_) => continue,
            }
            changed = Box::pin(manager.changed());
        }
    }
}

/// What woke the election loop.
enum Step {
    Release,
    Changed(kube_lease_manager::Result<bool>),
    Holder(Option<String>),
}
