//! Leader election between operator processes on the real API server, with the RBAC that
//! `config/default` installs: one process reconciles and the other writes nothing; a killed
//! leader is replaced and the tenants created meanwhile converge; a leader stopped with SIGTERM
//! releases the Lease, so the next one does not wait it out.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use neurallog_tenant_operator::fixtures::TestTenant;

use crate::support::{Harness, OperatorProcess, phase, poll, wait_for};

const NAMESPACE: &str = "neurallog-system";
const LEASE: &str = "neurallog-tenant-operator";

fn start(h: &Harness, name: &str) -> OperatorProcess {
    let kubeconfig = h.service_account_kubeconfig();
    // A lease short enough that the test waits little for a killed leader's claim to run out, with
    // room enough that a renewal delayed by a busy machine does not hand the lease over early.
    let args = ["--leader-elect", "--lease-duration-seconds", "10", "--lease-renew-before-seconds", "5"];
    OperatorProcess::start(h, name, &kubeconfig, &args, &[("POD_NAMESPACE", NAMESPACE), ("RUST_LOG", "info,kube=warn")])
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt(LEASE).await.ok()??.spec?.holder_identity
}

/// Waits until one of `candidates` holds the Lease and returns its name.
async fn leader_among(leases: &Api<Lease>, candidates: &[&str]) -> String {
    poll(&format!("one of {candidates:?} holds the Lease"), async || {
        holder(leases).await.filter(|h| candidates.contains(&h.as_str()))
    })
    .await
}

async fn converges(h: &Harness, name: &str) {
    h.create_tenant(TestTenant::new(name).manifest()).await.unwrap();
    wait_for(&h.tenants(), name, "is provisioned", |t| phase(t).as_deref() == Some("Provisioning")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_writes_a_killed_one_is_replaced_and_a_stopped_one_hands_over_at_once() {
    let mut h = Harness::bare(&[]).await;
    h.install_default_config().await;
    let leases = Api::<Lease>::namespaced(h.admin.clone(), NAMESPACE);

    let mut replicas = vec![start(&h, "operator-a"), start(&h, "operator-b")];
    let first = leader_among(&leases, &["operator-a", "operator-b"]).await;
    converges(&h, "before-kill").await;
    let (leader, follower) = match replicas.iter().position(|r| r.name == first) {
        Some(0) => (replicas.remove(0), replicas.remove(0)),
        _ => (replicas.remove(1), replicas.remove(0)),
    };

    // Both serve; the follower says what it is and has written nothing but its Lease claims.
    let (code, body) = poll("the follower answers /readyz", async || follower.readyz().await).await;
    assert_eq!((code, body.as_str()), (200, "serving conversions; follower: another replica reconciles"));
    let follower_writes = follower.writes().await;
    assert!(follower_writes.keys().all(|w| w.ends_with(" leases")), "the follower wrote: {follower_writes:?}");
    let leader_writes = leader.writes().await;
    assert!(leader_writes.keys().any(|w| w == "PATCH tenants/status"), "the leader wrote: {leader_writes:?}");
    let leading = |metrics: Option<BTreeMap<String, f64>>| {
        metrics.and_then(|m| m.get("leader_election_master_status{name=\"neurallog-tenant-operator\"}").copied())
    };
    assert_eq!(leading(leader.metrics().await), Some(1.0));
    assert_eq!(leading(follower.metrics().await), Some(0.0));

    // SIGKILL: no release. The follower takes over once the claim runs out, and converges a
    // tenant created after the kill.
    leader.kill().await;
    converges(&h, "after-kill").await;
    assert_eq!(holder(&leases).await.as_deref(), Some(follower.name.as_str()));

    // SIGTERM: the leader finishes, releases the Lease and exits; right after its exit the Lease
    // no longer names it (unreleased, it would for up to 10 seconds more), and the waiting replica
    // takes it and converges a new tenant.
    let standby = start(&h, "operator-c");
    poll("the new replica is a follower", async || standby.readyz().await.filter(|(code, _)| *code == 200)).await;
    let stopped = follower.name.clone();
    follower.terminate().await;
    assert_ne!(holder(&leases).await.as_deref(), Some(stopped.as_str()), "the Lease is released on SIGTERM");
    leader_among(&leases, &["operator-c"]).await;
    converges(&h, "after-term").await;
    let log = std::fs::read_to_string(&standby.log).unwrap();
    assert!(log.contains("became the leader"), "{log}");
}
