//! Manifests the operator cannot honour are rejected by the API server itself (OpenAPI schema and
//! CEL rules of the generated CRD), each with a message naming the offending field.

use kube::api::{Api, Patch, PatchParams, PostParams};
use neurallog_tenant_operator::api::v1::Tenant;
use serde_json::{Value, json};

use crate::support::{Controllers, Harness};
use neurallog_tenant_operator::fixtures::TestTenant;

fn server(server: Value) -> Value {
    json!({"server": server})
}

fn rule(port: Value) -> Value {
    json!({"networkPolicy": {"ingressRules": [{"ports": [port]}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifests_are_rejected_with_a_message_naming_the_field() {
    let h = Harness::start(Controllers::None).await;
    let long_name = "a".repeat(47);
    let cases: Vec<(Value, &str)> = vec![
        (TestTenant::new("1acme").manifest(), "metadata.name"),
        (TestTenant::new("acme.corp").manifest(), "metadata.name"),
        (TestTenant::new("acme-").manifest(), "metadata.name"),
        (TestTenant::new(&long_name).manifest(), "metadata.name"),
        (TestTenant::new("t1").spec(server(json!({"replicas": 0}))).manifest(), "spec.server.replicas"),
        (TestTenant::new("t2").spec(server(json!({"replicas": 101}))).manifest(), "spec.server.replicas"),
        (TestTenant::new("t3").spec(json!({"redis": {"replicas": 2}})).manifest(), "spec.redis.replicas"),
        (TestTenant::new("t4").spec(server(json!({"resources": {"cpu": {"limit": "lots"}}}))).manifest(), "spec.server.resources.cpu.limit"),
        (TestTenant::new("t5").spec(json!({"redis": {"storage": "1GB"}})).manifest(), "spec.redis.storage"),
        (
            TestTenant::new("t6").spec(server(json!({"resources": {"cpu": {"request": "2", "limit": "500m"}}}))).manifest(),
            "spec.server.resources.cpu.request",
        ),
        (
            TestTenant::new("t7").spec(json!({"redis": {"resources": {"memory": {"request": "1Gi", "limit": "512Mi"}}}})).manifest(),
            "spec.redis.resources.memory.request",
        ),
        (
            TestTenant::new("t8").spec(server(
                    json!({"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
                ),).manifest(),
            "spec.server.env[0]",
        ),
        (TestTenant::new("t9").spec(server(json!({"env": [{"name": "A", "valueFrom": {}}]}))).manifest(), "spec.server.env[0].valueFrom"),
        (
            TestTenant::new("t10").spec(server(json!({"env": [{"name": "A", "valueFrom": {
                "secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]})),).manifest(),
            "spec.server.env[0].valueFrom",
        ),
        (TestTenant::new("t11").spec(server(json!({"env": [{"name": "1=bad", "value": "x"}]}))).manifest(), "spec.server.env[0].name"),
        (
            TestTenant::new("t12").spec(rule(json!({"protocol": "HTTP", "port": 80}))).manifest(),
            "spec.networkPolicy.ingressRules[0].ports[0].protocol",
        ),
        (
            TestTenant::new("t13").spec(rule(json!({"protocol": "TCP", "port": 70000}))).manifest(),
            "spec.networkPolicy.ingressRules[0].ports[0].port",
        ),
        (TestTenant::new("t14").spec(json!({"redis": {"config": {"rename-command": "FLUSHALL x"}}})).manifest(), "spec.redis.config"),
        (TestTenant::new("t15").spec(json!({"redis": {"config": {"timeout": "0\nrequirepass x"}}})).manifest(), "spec.redis.config"),
        (
            TestTenant::new("t16").spec(json!({"networkPolicy": {"allowedNamespaces": ["Bad_Namespace"]}})).manifest(),
            "spec.networkPolicy.allowedNamespaces[0]",
        ),
        (TestTenant::new("t17").spec(json!({"registry": {"baseDomain": "-example.com"}})).manifest(), "spec.registry.baseDomain"),
        (TestTenant::new("t18").spec(server(json!({"image": ""}))).manifest(), "spec.server.image"),
        (TestTenant::new("t19").spec(json!({"deletionPolicy": "Orphan"})).manifest(), "spec.deletionPolicy"),
        (TestTenant::new("t20").spec(json!({"registry": {"replicas": 0}})).manifest(), "spec.registry.replicas"),
        (
            TestTenant::new("t21").spec(json!({"resources": {"storage": {"request": "20Gi", "limit": "10Gi"}}})).manifest(),
            "spec.resources.storage.request",
        ),
        (TestTenant::new("t22").spec(json!({"resources": {"cpu": {"limit": "many"}}})).manifest(), "spec.resources.cpu.limit"),
        // Found by the property test (admitted.rs): values no child object could carry.
        (
            TestTenant::new("t23").spec(json!({"networkPolicy": {"ingressRules": [{"from": {"app": "a b"}}]}})).manifest(),
            "spec.networkPolicy.ingressRules[0].from",
        ),
        (
            TestTenant::new("t24").spec(json!({"networkPolicy": {"egressRules": [{"to": {"-bad/key": "x"}}]}})).manifest(),
            "spec.networkPolicy.egressRules[0].to",
        ),
        (TestTenant::new("t25").spec(server(json!({"image": "neurallog/server latest"}))).manifest(), "spec.server.image"),
        (TestTenant::new("t26").spec(server(json!({"resources": {"cpu": {"limit": "2E"}}}))).manifest(), "spec.server.resources.cpu.limit"),
        // Values that would silently destroy the tenant's logs.
        (
            TestTenant::new("t27").spec(json!({"redis": {"resources": {"memory": {"limit": "16Mi"}}}})).manifest(),
            "spec.redis.resources.memory.limit",
        ),
        (TestTenant::new("t28").spec(json!({"redis": {"config": {"appendonly": "no"}}})).manifest(), "spec.redis.config.appendonly"),
    ];
    assert!(cases.len() >= 15);
    for (manifest, field) in cases {
        let error = h.create_tenant(manifest.clone()).await.expect_err(&format!("{manifest} must be rejected"));
        let kube::Error::Api(status) = error else { panic!("{manifest}: not an API error: {error}") };
        assert_eq!(status.code, 422, "{manifest}: {}", status.message);
        assert!(status.message.contains(field), "{manifest}: message should name {field}: {}", status.message);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_are_filled_in_and_redis_storage_is_immutable() {
    let h = Harness::start(Controllers::None).await;
    let created = h.create_tenant(TestTenant::new("valid").manifest()).await.unwrap();
    let spec = &created.data["spec"];
    // No image: left out, a tenant runs its NeuralLog version's (docs/neurallog-versions.md).
    assert_eq!(spec["server"], json!({"replicas": 1}));
    assert_eq!(spec["redis"], json!({"replicas": 1, "storage": "1Gi"}));
    assert_eq!(spec["networkPolicy"], json!({"enabled": true}));
    assert_eq!(spec["registry"], json!({"replicas": 1}));
    // Left out, the deletion policy in force stays (the namespace records it): no schema default.
    assert!(spec.get("deletionPolicy").is_none(), "{spec}");

    let resize = json!({"spec": {"redis": {"storage": "5Gi"}}});
    let error = h.tenants().patch("valid", &PatchParams::default(), &Patch::Merge(&resize)).await.unwrap_err();
    let kube::Error::Api(status) = error else { panic!("not an API error: {error}") };
    assert!(status.message.contains("spec.redis.storage"), "{}", status.message);

    // However the update is written: a full replace that sets the field, or its parent, to null
    // or leaves it out gets the default again, which is a change of a 5Gi volume all the same.
    h.create_tenant(TestTenant::new("big").spec(json!({"redis": {"storage": "5Gi"}})).manifest()).await.unwrap();
    let resource = kube::core::ApiResource::erase::<Tenant>(&());
    let raw = Api::<kube::api::DynamicObject>::all_with(h.admin.clone(), &resource);
    for redis in [json!({"storage": null}), json!(null), json!({}), json!({"replicas": 1})] {
        let current = h.tenants().get("big").await.unwrap();
        let replace = json!({
            "apiVersion": "neurallog.io/v1",
            "kind": "Tenant",
            "metadata": {"name": "big", "resourceVersion": current.metadata.resource_version},
            "spec": {"redis": redis},
        });
        let replace: kube::api::DynamicObject = serde_json::from_value(replace).unwrap();
        let error = raw.replace("big", &PostParams::default(), &replace).await.expect_err(&redis.to_string());
        let kube::Error::Api(status) = error else { panic!("{redis}: not an API error: {error}") };
        assert!(status.message.contains("spec.redis.storage"), "{redis}: {}", status.message);
    }
    let kept = h.tenants().get("big").await.unwrap();
    assert_eq!(kept.spec.redis.and_then(|r| r.storage).as_deref(), Some("5Gi"));
}

/// `spec.version` moves only up, within its major version unless allowed; the one way down is a
/// rollback to `status.previousVersion`. Each refusal names the field.
#[tokio::test(flavor = "multi_thread")]
async fn a_downgrade_or_a_new_major_version_is_refused_naming_spec_version() {
    let h = Harness::start(Controllers::None).await;
    let resource = kube::core::ApiResource::erase::<neurallog_tenant_operator::api::v2::Tenant>(&());
    let tenants = Api::<kube::api::DynamicObject>::all_with(h.admin.clone(), &resource);
    let tenant = json!({"apiVersion": "neurallog.io/v2", "kind": "Tenant", "metadata": {"name": "pinned"},
        "spec": {"version": "1.2.0"}});
    tenants.create(&PostParams::default(), &serde_json::from_value(tenant).unwrap()).await.unwrap();
    let set_version = |version: &str| json!({"spec": {"version": version}});
    let patch = async |body: Value| tenants.patch("pinned", &PatchParams::default(), &Patch::Merge(&body)).await;
    let refusal = |result: kube::Result<kube::api::DynamicObject>| match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("not refused: {other:?}"),
    };

    // Without a status, the version pinned before counts.
    let message = refusal(patch(set_version("1.1.9")).await);
    assert!(message.contains("spec.version") && message.contains("may not be lower"), "{message}");
    assert!(refusal(patch(set_version("not-a-version")).await).contains("spec.version"));

    let status = json!({"status": {"version": "1.2.0", "previousVersion": "1.1.0"}});
    tenants.patch_status("pinned", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let message = refusal(patch(set_version("1.1.5")).await);
    assert!(message.contains("spec.version") && message.contains("status.previousVersion"), "{message}");
    let message = refusal(patch(set_version("2.0.0")).await);
    assert!(message.contains("spec.version") && message.contains("allowMajorVersion"), "{message}");
    patch(set_version("1.3.0")).await.expect("a minor upgrade");
    patch(set_version("1.1.0")).await.expect("the rollback to status.previousVersion");
    patch(json!({"spec": {"version": "2.0.0", "upgrade": {"allowMajorVersion": true}}}))
        .await
        .expect("an allowed major");
    // A status update never trips the rules, whatever the spec pins.
    let status = json!({"status": {"version": "2.1.0"}});
    tenants.patch_status("pinned", &PatchParams::default(), &Patch::Merge(&status)).await.expect("a status update");
}
