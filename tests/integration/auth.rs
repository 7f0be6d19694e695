//! Registration with NeuralLog Auth, against a stand-in that speaks the Auth REST contract over
//! real HTTP and can be told to fail or hang for chosen tenants.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use testenv::auth::{AuthStandIn, Behaviour};

use crate::support::{Controllers, Harness, condition, phase, poll, wait_deleted, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

use crate::support::settings_with_auth as settings;

fn registered(t: &neurallog_tenant_operator::api::v1::Tenant) -> bool {
    condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_registers_once_and_deregisters_on_delete() {
    let auth = AuthStandIn::start().await.unwrap();
    let h = Harness::start(Controllers::Deletion).await;
    let operator = h.start_operator_with(settings(&auth, Duration::from_secs(5))).await;
    h.create_tenant(TestTenant::new("reg-once").manifest()).await.unwrap();
    wait_for(&h.tenants(), "reg-once", "is registered", registered).await;
    assert_eq!(auth.registered(), ["reg-once"]);

    // Further reconciles trust the status: Auth is not asked again. Each round waits for the
    // reconcile that worked from the poked tenant to have finished.
    for round in 0..3 {
        let poke = json!({"metadata": {"annotations": {"example.org/poke": round.to_string()}}});
        let poked = h.tenants().patch("reg-once", &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
        let version = poked.metadata.resource_version.expect("a resourceVersion");
        operator
            .wait_reconciled("reg-once", &format!("of the poked tenant ({version})"), |r| r.saw_version(&version))
            .await;
    }
    assert_eq!(auth.count("POST", "/api/tenants"), 1, "{:?}", auth.requests());
    assert_eq!(auth.count("GET", "/api/tenants"), 1, "{:?}", auth.requests());

    let uid = h.tenants().get("reg-once").await.unwrap().uid().unwrap();
    h.tenants().delete("reg-once", &DeleteParams::default()).await.unwrap();
    wait_deleted(&h.tenants(), "reg-once", &uid).await;
    assert!(auth.registered().is_empty());
    assert_eq!(auth.count("DELETE", "/api/tenants/reg-once"), 1, "{:?}", auth.requests());
    let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap().items;
    let ours: Vec<_> =
        events.iter().filter(|e| e.reporting_controller.as_deref() == Some("neurallog-tenant-operator")).collect();
    assert!(ours.iter().any(|e| e.reason.as_deref() == Some("Deregistered")), "the operator's events are listed");
    let warnings: Vec<_> = ours
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| Some((e.reason.clone()?, e.note.clone()?)))
        .collect();
    assert!(warnings.is_empty(), "the operator warns about nothing in a clean deletion: {warnings:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_already_registered_tenant_and_a_failing_auth_are_handled() {
    let auth = AuthStandIn::start().await.unwrap();
    auth.register_directly("known");
    auth.set_behaviour(Some("flaky"), Behaviour::Fail(503));
    let h = Harness::start(Controllers::None).await;
    let operator = h.start_operator_with(settings(&auth, Duration::from_secs(5))).await;
    h.create_tenant(TestTenant::new("known").manifest()).await.unwrap();
    wait_for(&h.tenants(), "known", "is registered", registered).await;
    assert_eq!(auth.count("POST", "/api/tenants"), 0, "an existing registration is found by the check");

    h.create_tenant(TestTenant::new("flaky").manifest()).await.unwrap();
    let degraded = wait_for(&h.tenants(), "flaky", "is Degraded", |t| phase(t).as_deref() == Some("Degraded")).await;
    let reason = condition(&degraded, "AuthRegistered").unwrap();
    assert_eq!(reason.reason, "AuthRejected", "{reason:?}");
    assert!(reason.message.contains("flaky") && reason.message.contains("503"), "{}", reason.message);
    // The reconcile metric agrees with the condition (and the trace): a registration that failed
    // is a reconcile that failed.
    poll("the failed registration counted as a failed reconcile", async || {
        let text = operator.metrics.encode().ok()?;
        let errors = text
            .lines()
            .find_map(|l| l.strip_prefix("controller_runtime_reconcile_errors_total{controller=\"tenant\"} "));
        errors.filter(|count| *count != "0").map(drop)
    })
    .await;

    // Auth recovers: the backoff retry registers the tenant.
    auth.clear_behaviours();
    wait_for(&h.tenants(), "flaky", "registers after Auth recovers", registered).await;
    assert_eq!(auth.registered(), ["flaky", "known"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auth_hung_for_more_tenants_than_the_concurrency_degrades_only_them_while_twenty_others_reach_running() {
    let auth = AuthStandIn::start().await.unwrap();
    // Six hung tenants, four reconcile slots (settings): the hung ones can hold every slot at
    // once, for the Auth timeout; the others must still get through.
    const HUNG: [&str; 6] = ["hung-a", "hung-b", "hung-c", "hung-d", "hung-e", "hung-f"];
    for hung in HUNG {
        auth.set_behaviour(Some(hung), Behaviour::Hang);
    }
    let h = Harness::start(Controllers::None).await;
    let _kubelet = h.mark_workloads_ready();
    let _operator = h.start_operator_with(settings(&auth, Duration::from_secs(2))).await;
    for hung in HUNG {
        h.create_tenant(TestTenant::new(hung).manifest()).await.unwrap();
    }
    let others: Vec<String> = (0..20).map(|i| format!("busy-{i:02}")).collect();
    for name in &others {
        h.create_tenant(TestTenant::new(name).manifest()).await.unwrap();
    }

    for name in &others {
        wait_for(&h.tenants(), name, "is Running", |t| phase(t).as_deref() == Some("Running") && registered(t)).await;
    }
    for hung in HUNG {
        let t = wait_for(&h.tenants(), hung, "is Degraded", |t| phase(t).as_deref() == Some("Degraded")).await;
        let auth_condition = condition(&t, "AuthRegistered").unwrap();
        assert_eq!(auth_condition.reason, "AuthTimeout", "{auth_condition:?}");
        assert!(auth_condition.message.contains(hung));
        assert_eq!(condition(&t, "Ready").unwrap().reason, "AuthNotRegistered");
    }
    let busy_registered = poll("every busy tenant registered", async || {
        let registered = auth.registered();
        (registered.len() == others.len()).then_some(registered)
    })
    .await;
    assert_eq!(busy_registered, others);
}
