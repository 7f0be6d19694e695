//! Faults. The operator process is SIGKILLed at random points while a fleet converges and while
//! part of it is deleted (both deletion policies), and restarted each time: afterwards nothing is
//! lost, duplicated or left behind (`make test` runs a short version; `make chaos` the full one,
//! `CHAOS_TENANTS`, `CHAOS_KILLS`, `CHAOS_DELETIONS`). kube-apiserver is restarted under the
//! operator; a tenant holds absurd values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use neurallog_tenant_operator::fixtures::TestTenant;
use serde_json::json;
use testenv::auth::AuthStandIn;

use crate::support::{Controllers, Harness, OperatorProcess, condition, poll, wait_deleted};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A random pause before the next kill, so kills land anywhere in a reconcile.
fn random_pause() -> Duration {
    use rand::Rng as _;
    Duration::from_millis(rand::rng().random_range(50..1500))
}

/// The operator binary as a process, registering with `auth`.
fn start(h: &Harness, auth: &AuthStandIn, name: &str) -> OperatorProcess {
    let auth_url = auth.url();
    let args = ["--auth-url", auth_url.as_str(), "--auth-attempts", "2"];
    OperatorProcess::start(h, name, h.plane.operator_kubeconfig(), &args, &[])
}

/// Kills the operator `kills` times at random points, starting a new one after each; returns the
/// one left running.
async fn kill_repeatedly(
    h: &Harness,
    auth: &AuthStandIn,
    mut operator: OperatorProcess,
    kills: usize,
    round: &str,
) -> OperatorProcess {
    for kill in 0..kills {
        tokio::time::sleep(random_pause()).await;
        operator.kill().await;
        operator = start(h, auth, &format!("operator-{round}-{kill}"));
    }
    operator
}

/// The names of the managed objects of kind `K` in a namespace.
async fn managed<K>(h: &Harness, namespace: &str) -> BTreeSet<String>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let selected = ListParams::default().labels("neurallog.io/managed-by=tenant-operator");
    h.namespaced::<K>(namespace).list(&selected).await.unwrap().items.iter().map(ResourceExt::name_any).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_while_converging_and_deleting_lose_leave_and_duplicate_nothing() {
    let (tenants, kills, deletions) =
        (setting("CHAOS_TENANTS", 16), setting("CHAOS_KILLS", 4), setting("CHAOS_DELETIONS", 6));
    let h = Harness::start(Controllers::Deletion).await;
    let auth = AuthStandIn::start().await.unwrap();
    let operator = start(&h, &auth, "operator-first");

    // Half Delete, half Retain, created at once.
    let names: Vec<String> = (0..tenants).map(|i| format!("chaos-{i}")).collect();
    let policy = |i: usize| if i.is_multiple_of(2) { "Delete" } else { "Retain" };
    for (i, name) in names.iter().enumerate() {
        h.create_tenant(TestTenant::new(name).spec(json!({"deletionPolicy": policy(i)})).manifest()).await.unwrap();
    }
    let operator = kill_repeatedly(&h, &auth, operator, kills, "converging").await;
    poll("every tenant converges and is registered", async || {
        let all = h.tenants().list(&ListParams::default()).await.unwrap().items;
        let done = all.iter().filter(|t| {
            t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
                && condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
        });
        (done.count() == tenants).then_some(())
    })
    .await;

    // Every tenant has exactly its children, one held password Secret, one registration.
    let mut passwords = BTreeMap::new();
    for name in &names {
        let ns = format!("tenant-{name}");
        assert_eq!(managed::<Deployment>(&h, &ns).await, [format!("{name}-registry"), format!("{name}-server")].into());
        assert_eq!(managed::<StatefulSet>(&h, &ns).await, [format!("{name}-redis")].into());
        assert_eq!(managed::<Service>(&h, &ns).await.len(), 3, "{name}: services");
        assert_eq!(managed::<ConfigMap>(&h, &ns).await, [format!("{name}-redis-config")].into());
        assert_eq!(managed::<NetworkPolicy>(&h, &ns).await.len(), 4, "{name}: network policies");
        assert_eq!(managed::<RoleBinding>(&h, &ns).await.len(), 1, "{name}: role bindings");
        let secrets = h.namespaced::<Secret>(&ns).list(&ListParams::default()).await.unwrap().items;
        assert_eq!(secrets.len(), 1, "{name}: exactly one Secret");
        let secret = &secrets[0];
        assert!(
            secret.immutable == Some(true) && secret.finalizers().iter().any(|f| f == "neurallog.io/redis-password")
        );
        passwords.insert(name.clone(), (secret.uid(), secret.data.clone()));
    }
    let registered = || auth.registered().into_iter().collect::<BTreeSet<_>>();
    assert_eq!(registered(), names.iter().cloned().collect(), "every tenant registered");

    // Delete some (both policies) while killing again.
    let mut doomed = Vec::new();
    for name in names.iter().take(deletions) {
        let tenant = h.tenants().get(name).await.unwrap();
        doomed.push((name.clone(), tenant.uid().unwrap(), tenant.spec.deletion_policy));
        h.tenants().delete(name, &DeleteParams::default()).await.unwrap();
    }
    let operator = kill_repeatedly(&h, &auth, operator, kills, "deleting").await;
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    for (name, uid, _) in &doomed {
        wait_deleted(&h.tenants(), name, uid).await;
    }
    for (name, _, policy) in &doomed {
        let ns = format!("tenant-{name}");
        let found = namespaces.get_opt(&ns).await.unwrap();
        match policy.map(|p| format!("{p:?}")).as_deref() {
            // The finalizer is released only once the namespace is gone.
            Some("Delete") => assert!(found.is_none(), "{name}: namespace {ns} outlived its tenant"),
            _ => {
                let kept = found.expect("a retained namespace");
                assert!(kept.metadata.deletion_timestamp.is_none());
                assert_eq!(kept.labels().get("neurallog.io/retained").map(String::as_str), Some("true"));
                assert!(managed::<Deployment>(&h, &ns).await.is_empty(), "{name}: workloads left");
                assert!(h.namespaced::<Secret>(&ns).list(&ListParams::default()).await.unwrap().items.is_empty());
            }
        }
    }

    // The survivors: registered, their password Secrets the very same.
    let survivors: BTreeSet<String> = names.iter().skip(deletions).cloned().collect();
    assert_eq!(registered(), survivors, "the deleted ones deregistered, the others not");
    for name in &survivors {
        let secrets = h.namespaced::<Secret>(&format!("tenant-{name}")).list(&ListParams::default()).await.unwrap();
        let secret = &secrets.items[0];
        assert_eq!(secrets.items.len(), 1);
        assert_eq!(
            &(secret.uid(), secret.data.clone()),
            &passwords[name.as_str()],
            "{name}: the password never changed"
        );
    }
    operator.terminate().await;
    println!(
        "chaos: {tenants} tenants, {kills} SIGKILLs while converging and {kills} while deleting {deletions}: nothing lost, left or duplicated"
    );
}

/// A tenant whose status and children hold absurd values (written by someone else through the
/// status subresources) neither stalls the others nor the operator; its status is put right.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_with_absurd_status_and_children_stalls_nothing() {
    use kube::api::{Patch, PatchParams};

    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("odd").manifest()).await.unwrap();
    crate::support::wait_for(&h.tenants(), "odd", "is provisioned", |t| {
        t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
    })
    .await;

    let absurd_status = json!({"status": {
        "phase": "Running",
        "observedGeneration": -7,
        "namespace": "kube-system",
        "conditions": [{"type": "Ready", "status": "Unknown", "reason": "X", "message": "x".repeat(30_000),
                        "lastTransitionTime": "1970-01-01T00:00:00Z"}],
        "serverStatus": {"phase": "Running", "readyReplicas": 2147483647, "totalReplicas": -1},
    }});
    h.tenants().patch_status("odd", &PatchParams::default(), &Patch::Merge(&absurd_status)).await.unwrap();
    let absurd_children =
        json!({"status": {"replicas": 2147483647, "readyReplicas": 2147483647, "observedGeneration": 99999}});
    let deployments = h.namespaced::<Deployment>("tenant-odd");
    deployments.patch_status("odd-server", &PatchParams::default(), &Patch::Merge(&absurd_children)).await.unwrap();
    let huge = json!({"metadata": {"annotations": {"noise": "y".repeat(200_000)}}});
    h.namespaced::<StatefulSet>("tenant-odd")
        .patch("odd-redis", &PatchParams::default(), &Patch::Merge(&huge))
        .await
        .unwrap();

    for i in 0..5 {
        h.create_tenant(TestTenant::new(&format!("calm-{i}")).manifest()).await.unwrap();
    }
    poll("the others converge", async || {
        let all = h.tenants().list(&ListParams::default()).await.unwrap().items;
        let calm = all.iter().filter(|t| {
            t.name_any().starts_with("calm-")
                && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
        });
        (calm.count() == 5).then_some(())
    })
    .await;
    // The odd one's status is derived again from what is observed (a touch brings the reconcile).
    let touch = json!({"metadata": {"annotations": {"touched": "1"}}});
    h.tenants().patch("odd", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    let righted = crate::support::wait_for(&h.tenants(), "odd", "has its status put right", |t| {
        t.status.as_ref().is_some_and(|s| {
            s.observed_generation == t.metadata.generation && s.namespace.as_deref() == Some("tenant-odd")
        })
    })
    .await;
    let ready = condition(&righted, "Ready").unwrap();
    assert_ne!(ready.status, "Unknown", "{ready:?}");
}

/// kube-apiserver restarted (etcd kept) while tenants converge: the operator recovers without a
/// restart of its own, and changes made right after, while its watches are still broken, are not
/// missed. The new API server's watch caches start at the current revision, so the watches that
/// resume from their last resourceVersion get 410 (too old resource version) and list again.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_api_server_is_survived_and_no_change_in_the_gap_is_missed() {
    let mut h = Harness::start(Controllers::Deletion).await;
    let _operator = h.start_operator().await;
    let names: Vec<String> = (0..12).map(|i| format!("gap-{i}")).collect();
    for name in &names {
        h.create_tenant(TestTenant::new(name).manifest()).await.unwrap();
    }
    h.plane.restart_apiserver().await.expect("kube-apiserver restarts");
    poll("every tenant converges after the restart", async || {
        let all = h.tenants().list(&ListParams::default()).await.ok()?.items;
        let done = all.iter().filter(|t| condition(t, "NamespaceReady").is_some_and(|c| c.status == "True"));
        (done.count() == names.len()).then_some(())
    })
    .await;
    let deployments = h.namespaced::<Deployment>("tenant-gap-0");
    let server = crate::support::wait_for(&deployments, "gap-0-server", "exists", |_| true).await;
    let doomed = h.tenants().get("gap-1").await.unwrap();

    // Again, and at once a child is deleted by hand and a tenant is deleted.
    h.plane.restart_apiserver().await.expect("kube-apiserver restarts");
    deployments.delete("gap-0-server", &DeleteParams::default()).await.unwrap();
    h.tenants().delete("gap-1", &DeleteParams::default()).await.unwrap();
    crate::support::wait_for(&deployments, "gap-0-server", "is re-created", |d| d.uid() != server.uid()).await;
    wait_deleted(&h.tenants(), "gap-1", &doomed.uid().unwrap()).await;
    assert!(Api::<Namespace>::all(h.admin.clone()).get_opt("tenant-gap-1").await.unwrap().is_none());
}
