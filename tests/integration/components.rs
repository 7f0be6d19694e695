//! The registry and the quota on a real API server: created with the tenant, following its spec,
//! and removed when the spec no longer asks for them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use neurallog_tenant_operator::controller::Settings;
use neurallog_tenant_operator::resources::Platform;
use serde_json::json;

use crate::support::{Controllers, Harness, condition, phase, poll, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

fn env_value(d: &Deployment, name: &str) -> Option<String> {
    let container = d.spec.as_ref()?.template.spec.as_ref()?.containers.first()?.clone();
    container.env?.into_iter().find(|e| e.name == name)?.value
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_follows_its_base_domain_and_reports_readiness() {
    let h = Harness::start(Controllers::None).await;
    let platform = Platform {
        ingress_class: Some("nginx".into()),
        ingress_tls_secret: Some("wildcard-tls".into()),
        ..Platform::default()
    };
    let _operator = h.start_operator_with(Settings { concurrency: 4, platform, ..Settings::default() }).await;
    h.create_tenant(TestTenant::new("reg").spec(json!({"registry": {"baseDomain": "neurallog.example"}})).manifest())
        .await
        .unwrap();

    let deployments = h.namespaced::<Deployment>("tenant-reg");
    let registry = wait_for(&deployments, "reg-registry", "is created", |_| true).await;
    assert_eq!(env_value(&registry, "TENANT_ID").as_deref(), Some("reg"));
    assert_eq!(env_value(&registry, "BASE_DOMAIN").as_deref(), Some("neurallog.example"));
    let server = wait_for(&deployments, "reg-server", "is created", |_| true).await;
    assert_eq!(env_value(&server, "REGISTRY_URL").as_deref(), Some("http://reg-registry.tenant-reg.svc:3031"));
    let service = h.namespaced::<Service>("tenant-reg").get("reg-registry").await.unwrap();
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 3031);

    let ingresses = h.namespaced::<Ingress>("tenant-reg");
    let ingress = wait_for(&ingresses, "reg-registry", "is created", |_| true).await.spec.unwrap();
    assert_eq!(ingress.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(ingress.rules.unwrap()[0].host.as_deref(), Some("registry.reg.neurallog.example"));
    assert_eq!(ingress.tls.unwrap()[0].secret_name.as_deref(), Some("wildcard-tls"));

    let tenant =
        wait_for(&h.tenants(), "reg", "reports the registry", |t| condition(t, "RegistryReady").is_some()).await;
    let registry_status = tenant.status.unwrap().registry_status.unwrap();
    assert_eq!((registry_status.ready_replicas, registry_status.total_replicas), (0, 1));

    let _kubelet = h.mark_workloads_ready();
    let running = wait_for(&h.tenants(), "reg", "is Running", |t| phase(t).as_deref() == Some("Running")).await;
    assert_eq!(condition(&running, "RegistryReady").unwrap().status, "True");

    let no_domain = json!({"spec": {"registry": {"baseDomain": null}}});
    h.tenants().patch("reg", &PatchParams::default(), &Patch::Merge(&no_domain)).await.unwrap();
    poll("the Ingress is deleted", async || ingresses.get_opt("reg-registry").await.unwrap().is_none().then_some(()))
        .await;
    wait_for(&deployments, "reg-registry", "announces the in-cluster server", |d| {
        env_value(d, "SERVER_URL").as_deref() == Some("http://reg-server.tenant-reg.svc:3030")
            && env_value(d, "BASE_DOMAIN").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_and_limit_range_follow_the_spec_and_a_budget_too_small_is_explained() {
    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    let budget = |cpu_limit: &str| json!({"cpu": {"request": "1", "limit": cpu_limit}, "memory": {"request": "2Gi", "limit": "4Gi"}, "storage": {"limit": "10Gi"}});
    h.create_tenant(TestTenant::new("budget").spec(json!({"resources": budget("4")})).manifest()).await.unwrap();

    let quotas = h.namespaced::<ResourceQuota>("tenant-budget");
    let hard = |q: &ResourceQuota, key: &str| q.spec.as_ref()?.hard.as_ref()?.get(key).map(|v| v.0.clone());
    let quota = wait_for(&quotas, "budget-quota", "is created", |_| true).await;
    assert_eq!(hard(&quota, "limits.cpu").as_deref(), Some("4"));
    assert_eq!(hard(&quota, "requests.memory").as_deref(), Some("2Gi"));
    assert_eq!(hard(&quota, "requests.storage").as_deref(), Some("10Gi"));
    let limits = h.namespaced::<LimitRange>("tenant-budget");
    let range = wait_for(&limits, "budget-limits", "is created", |_| true).await;
    let default = range.spec.unwrap().limits[0].default.clone().unwrap();
    assert_eq!(default["cpu"].0, "500m");

    let bigger = json!({"spec": {"resources": budget("6")}});
    h.tenants().patch("budget", &PatchParams::default(), &Patch::Merge(&bigger)).await.unwrap();
    wait_for(&quotas, "budget-quota", "follows the new limit", |q| hard(q, "limits.cpu").as_deref() == Some("6")).await;

    // Server 3 x 500m + Redis 300m + registry 200m = 2 CPU of limits: the pods fit a budget of 2,
    // a rolling update's extra pods (server +1, registry +1: 2.7) do not. Provisioned, rolled out
    // without surge, and said so.
    let tight = json!({"spec": {"server": {"replicas": 3}, "resources": budget("2")}});
    h.tenants().patch("budget", &PatchParams::default(), &Patch::Merge(&tight)).await.unwrap();
    let provisioned = wait_for(&h.tenants(), "budget", "rolls out without surge", |t| {
        condition(t, "RolloutWithoutSurge").is_some_and(|c| c.status == "True")
            && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
    })
    .await;
    assert_ne!(phase(&provisioned).as_deref(), Some("Failed"));
    let surge = condition(&provisioned, "RolloutWithoutSurge").unwrap();
    assert_eq!(surge.reason, "BudgetTooSmallForSurge");
    assert!(surge.message.contains("spec.quota.limits.cpu") && surge.message.contains("2700m"), "{}", surge.message);
    let deployments = h.namespaced::<Deployment>("tenant-budget");
    let rolling = |d: &Deployment| {
        let update = d.spec.as_ref()?.strategy.as_ref()?.rolling_update.clone()?;
        Some((update.max_surge?, update.max_unavailable?))
    };
    let one_at_a_time = Some((IntOrString::Int(0), IntOrString::Int(1)));
    let server =
        wait_for(&deployments, "budget-server", "scales to 3", |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(3))
            .await;
    assert_eq!(rolling(&server), one_at_a_time);
    assert_eq!(rolling(&deployments.get("budget-registry").await.unwrap()), one_at_a_time);

    // Too small for the pods themselves: Failed, and nothing is rolled out against it.
    let too_small = json!({"spec": {"server": {"replicas": 4}}});
    h.tenants().patch("budget", &PatchParams::default(), &Patch::Merge(&too_small)).await.unwrap();
    let failed = wait_for(&h.tenants(), "budget", "is Failed", |t| phase(t).as_deref() == Some("Failed")).await;
    let ready = condition(&failed, "Ready").unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains("spec.quota.limits.cpu") && ready.message.contains("2500m"), "{}", ready.message);
    let server = deployments.get("budget-server").await.unwrap();
    assert_eq!(server.spec.unwrap().replicas, Some(3), "nothing is rolled out against a quota it cannot fit");

    let no_budget = json!({"spec": {"server": {"replicas": 1}, "resources": null}});
    h.tenants().patch("budget", &PatchParams::default(), &Patch::Merge(&no_budget)).await.unwrap();
    poll("quota and limit range are deleted", async || {
        let quota = quotas.get_opt("budget-quota").await.unwrap();
        let range = limits.get_opt("budget-limits").await.unwrap();
        (quota.is_none() && range.is_none()).then_some(())
    })
    .await;
    // With room again, Kubernetes' default rollout (25% surge) and no condition.
    let default = Some((IntOrString::String("25%".into()), IntOrString::String("25%".into())));
    wait_for(&deployments, "budget-server", "surges again", |d| rolling(d) == default).await;
    let roomy = wait_for(&h.tenants(), "budget", "has room for surge", |t| {
        t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
            && phase(t).as_deref() != Some("Failed")
    })
    .await;
    assert!(condition(&roomy, "RolloutWithoutSurge").is_none());
}
