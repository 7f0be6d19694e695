//! Faults. The operator process is SIGKILLed at random points while a fleet converges and while
//! part of it is deleted (both deletion policies), and restarted each time: afterwards nothing is
//! lost, duplicated or left behind (`make test` runs a short version; `make chaos` the full one,
//! `CHAOS_TENANTS`, `CHAOS_KILLS`, `CHAOS_DELETIONS`; the kill points come from `CHAOS_SEED`, or a
//! random seed the run prints). kube-apiserver is restarted under the operator; a tenant holds
//! absurd values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use neurallog_tenant_operator::fixtures::TestTenant;
use neurallog_tenant_operator::resources::{Platform, access, network, quota, redis, registry, server};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use testenv::auth::AuthStandIn;

use crate::support::{Controllers, Harness, OperatorProcess, condition, poll, wait_deleted};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The source of every random choice of a chaos run: seeded from `CHAOS_SEED`, or at random, and
/// printed either way so that a failing run can be replayed.
fn chaos_rng() -> StdRng {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .map(|seed| seed.parse::<u64>().expect("CHAOS_SEED is a number"))
        .unwrap_or_else(rand::random);
    println!("chaos seed: {seed}, replay with CHAOS_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A random pause before the next kill, so kills land anywhere in a reconcile.
fn random_pause(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.random_range(50..1500))
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
    rng: &mut StdRng,
) -> OperatorProcess {
    for kill in 0..kills {
        tokio::time::sleep(random_pause(rng)).await;
        operator.kill().await;
        operator = start(h, auth, &format!("operator-{round}-{kill}"));
    }
    operator
}

/// `Kind name` → UID of every object of the kinds the operator makes in a tenant namespace (those
/// with its managed-by label, and every Secret), and of the PersistentVolumeClaims there.
type Objects = BTreeMap<String, String>;

async fn list_into<K>(h: &Harness, namespace: &str, params: &ListParams, out: &mut Objects)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    for object in h.namespaced::<K>(namespace).list(params).await.unwrap().items {
        out.insert(format!("{} {}", K::kind(&()), object.name_any()), object.uid().unwrap_or_default());
    }
}

/// What the operator made in `namespace` (every kind it makes, selected by its label; every
/// Secret, since the operator makes the only one), and the claims, which it must never delete.
async fn operator_objects(h: &Harness, namespace: &str) -> (Objects, Objects) {
    let managed = ListParams::default().labels("neurallog.io/managed-by=tenant-operator");
    let mut made = Objects::new();
    list_into::<Deployment>(h, namespace, &managed, &mut made).await;
    list_into::<StatefulSet>(h, namespace, &managed, &mut made).await;
    list_into::<Service>(h, namespace, &managed, &mut made).await;
    list_into::<ConfigMap>(h, namespace, &managed, &mut made).await;
    list_into::<NetworkPolicy>(h, namespace, &managed, &mut made).await;
    list_into::<RoleBinding>(h, namespace, &managed, &mut made).await;
    list_into::<Ingress>(h, namespace, &managed, &mut made).await;
    list_into::<ResourceQuota>(h, namespace, &managed, &mut made).await;
    list_into::<LimitRange>(h, namespace, &managed, &mut made).await;
    list_into::<Secret>(h, namespace, &ListParams::default(), &mut made).await;
    let mut claims = Objects::new();
    list_into::<PersistentVolumeClaim>(h, namespace, &ListParams::default(), &mut claims).await;
    (made, claims)
}

/// The chaos tenants' spec: every kind of child (registry Ingress, quota and limit range, custom
/// ingress and egress policies).
fn spec(policy: &str) -> Value {
    json!({
        "deletionPolicy": policy,
        "registry": {"baseDomain": "chaos.example"},
        "resources": {"cpu": {"request": "2", "limit": "4"}, "memory": {"request": "2Gi", "limit": "4Gi"}},
        "networkPolicy": {
            "ingressRules": [{"from": {"app": "prometheus"}, "namespaces": ["monitoring"], "ports": [{"port": 3030}]}],
            "egressRules": [{"to": {"app": "api"}, "namespaces": ["payments"], "ports": [{"port": 443}]}],
        },
    })
}

/// `Kind name` of every object the operator makes for tenant `name` with `spec`, from the
/// product's own builders.
fn expected_objects(name: &str, spec: Value) -> BTreeSet<String> {
    let model = TestTenant::new(name).spec(spec).valid_model();
    let platform = Platform::default();
    let operator = access::subject(testenv::OPERATOR_USER);
    let key = |kind: &str, meta: &kube::api::ObjectMeta| format!("{kind} {}", meta.name.clone().unwrap_or_default());
    let mut expected = BTreeSet::from([
        key("Deployment", &server::deployment(&model, &platform).metadata),
        key("Deployment", &registry::deployment(&model, &platform).metadata),
        key("StatefulSet", &redis::stateful_set(&model, &platform).metadata),
        key("Service", &redis::service(&model).metadata),
        key("Service", &server::service(&model).metadata),
        key("Service", &registry::service(&model).metadata),
        key("ConfigMap", &redis::config_map(&model).metadata),
        key("RoleBinding", &access::role_binding(&model, &operator).metadata),
        format!("Secret {}", redis::secret_name(name)),
    ]);
    expected.extend(network::network_policies(&model, &platform).iter().map(|p| key("NetworkPolicy", &p.metadata)));
    expected.extend(registry::ingress(&model, &platform).iter().map(|i| key("Ingress", &i.metadata)));
    expected.extend(quota::resource_quota(&model).iter().map(|q| key("ResourceQuota", &q.metadata)));
    expected.extend(quota::limit_range(&model).iter().map(|l| key("LimitRange", &l.metadata)));
    expected
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_while_converging_and_deleting_lose_leave_and_duplicate_nothing() {
    let (tenants, kills, deletions) =
        (setting("CHAOS_TENANTS", 16), setting("CHAOS_KILLS", 4), setting("CHAOS_DELETIONS", 6));
    let mut rng = chaos_rng();
    // The StatefulSet controller makes Redis' claims, which Retain must keep; the protection
    // controller lets a deleted namespace's claims go.
    let h = Harness::with_controllers(&["namespace", "garbagecollector", "statefulset", "pvc-protection"]).await;
    let auth = AuthStandIn::start().await.unwrap();
    let operator = start(&h, &auth, "operator-first");

    // Half Delete, half Retain, created at once.
    let names: Vec<String> = (0..tenants).map(|i| format!("chaos-{i}")).collect();
    let policy = |i: usize| if i.is_multiple_of(2) { "Delete" } else { "Retain" };
    for (i, name) in names.iter().enumerate() {
        h.create_tenant(TestTenant::new(name).spec(spec(policy(i))).manifest()).await.unwrap();
    }
    let operator = kill_repeatedly(&h, &auth, operator, kills, "converging", &mut rng).await;
    poll("every tenant converges and is registered", async || {
        let all = h.tenants().list(&ListParams::default()).await.unwrap().items;
        let done = all.iter().filter(|t| {
            t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
                && condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
        });
        (done.count() == tenants).then_some(())
    })
    .await;

    // Every tenant has exactly its children, of every kind, once; one held password Secret; its
    // Redis claim (made by the StatefulSet controller).
    let mut recorded = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let ns = format!("tenant-{name}");
        let claim = format!("PersistentVolumeClaim redis-data-{name}-redis-0");
        let (made, claims) = poll(&format!("{name}: its Redis claim"), async || {
            let (made, claims) = operator_objects(&h, &ns).await;
            claims.contains_key(&claim).then_some((made, claims))
        })
        .await;
        let kinds: BTreeSet<String> = made.keys().cloned().collect();
        assert_eq!(kinds, expected_objects(name, spec(policy(i))), "{name}: exactly its children");
        assert_eq!(claims.keys().collect::<Vec<_>>(), [&claim], "{name}: one claim");
        let secrets = h.namespaced::<Secret>(&ns).list(&ListParams::default()).await.unwrap().items;
        let secret = &secrets[0];
        assert!(
            secret.immutable == Some(true) && secret.finalizers().iter().any(|f| f == "neurallog.io/redis-password")
        );
        let namespace = Api::<Namespace>::all(h.admin.clone()).get(&ns).await.unwrap();
        recorded.insert(name.clone(), (namespace.uid(), made, claims, secret.data.clone()));
    }
    // A multiset: a tenant registered twice (Auth answers the repeat with 409) counts twice.
    let once: BTreeMap<String, usize> = names.iter().map(|name| (name.clone(), 1)).collect();
    assert_eq!(auth.calls_per_tenant("POST"), once, "every tenant registered exactly once");
    assert_eq!(auth.registered(), names.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>());

    // Delete some (both policies) while killing again.
    let mut doomed = Vec::new();
    for name in names.iter().take(deletions) {
        let tenant = h.tenants().get(name).await.unwrap();
        doomed.push((name.clone(), tenant.uid().unwrap(), tenant.spec.deletion_policy));
        h.tenants().delete(name, &DeleteParams::default()).await.unwrap();
    }
    let operator = kill_repeatedly(&h, &auth, operator, kills, "deleting", &mut rng).await;
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
                // Kept: the namespace itself, Redis' claims and the password their data was
                // written under, the very same; nothing else the operator made, of any kind.
                let kept = found.expect("a retained namespace");
                assert!(kept.metadata.deletion_timestamp.is_none());
                assert_eq!(kept.labels().get("neurallog.io/retained").map(String::as_str), Some("true"));
                let (uid, made_before, claims_before, password) = &recorded[name.as_str()];
                assert_eq!(&kept.uid(), uid, "{name}: the namespace is the one the tenant had");
                let (made, claims) = operator_objects(&h, &ns).await;
                let secret_key = format!("Secret {}", redis::secret_name(name));
                let only_password: Objects = made_before
                    .iter()
                    .filter(|(key, _)| **key == secret_key)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(made, only_password, "{name}: the operator's objects left in the retained namespace");
                assert_eq!(&claims, claims_before, "{name}: the claims are kept, the very same");
                let secret = h.namespaced::<Secret>(&ns).get(&redis::secret_name(name)).await.unwrap();
                assert_eq!(&secret.data, password, "{name}: the password is kept");
                assert!(
                    secret.finalizers().is_empty() && secret.owner_references().is_empty(),
                    "{name}: unheld, unowned"
                );
            }
        }
    }

    // The survivors: registered, every child and claim the very same, the password unchanged.
    let survivors: BTreeSet<String> = names.iter().skip(deletions).cloned().collect();
    assert_eq!(auth.registered(), survivors.iter().cloned().collect::<Vec<_>>(), "the deleted ones deregistered");
    assert_eq!(auth.calls_per_tenant("POST"), once, "nobody registered again, before or after a deletion");
    let deregistered: BTreeSet<String> = auth.calls_per_tenant("DELETE").into_keys().collect();
    let doomed_names: BTreeSet<String> = doomed.iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(deregistered, doomed_names, "only the deleted ones deregistered: {:?}", auth.tenant_calls());
    for name in &survivors {
        let ns = format!("tenant-{name}");
        let (_, made_before, claims_before, password) = &recorded[name.as_str()];
        let (made, claims) = operator_objects(&h, &ns).await;
        assert_eq!(&made, made_before, "{name}: every child the very same, none added");
        assert_eq!(&claims, claims_before, "{name}: the claims the very same");
        let secret = h.namespaced::<Secret>(&ns).get(&redis::secret_name(name)).await.unwrap();
        assert_eq!(&secret.data, password, "{name}: the password never changed");
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
