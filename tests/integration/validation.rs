//! Manifests the operator cannot honour are rejected by the API server itself (OpenAPI schema and
//! CEL rules of the generated CRD), each with a message naming the offending field.

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::Harness;

fn tenant(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec})
}

fn server(server: Value) -> Value {
    json!({"server": server})
}

fn rule(port: Value) -> Value {
    json!({"networkPolicy": {"ingressRules": [{"ports": [port]}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifests_are_rejected_with_a_message_naming_the_field() {
    let h = Harness::start(false).await;
    let long_name = "a".repeat(47);
    let cases: Vec<(Value, &str)> = vec![
        (tenant("1acme", json!({})), "metadata.name"),
        (tenant("acme.corp", json!({})), "metadata.name"),
        (tenant("acme-", json!({})), "metadata.name"),
        (tenant(&long_name, json!({})), "metadata.name"),
        (tenant("t1", server(json!({"replicas": 0}))), "spec.server.replicas"),
        (tenant("t2", server(json!({"replicas": 101}))), "spec.server.replicas"),
        (tenant("t3", json!({"redis": {"replicas": 2}})), "spec.redis.replicas"),
        (tenant("t4", server(json!({"resources": {"cpu": {"limit": "lots"}}}))), "spec.server.resources.cpu.limit"),
        (tenant("t5", json!({"redis": {"storage": "1GB"}})), "spec.redis.storage"),
        (
            tenant("t6", server(json!({"resources": {"cpu": {"request": "2", "limit": "500m"}}}))),
            "spec.server.resources.cpu.request",
        ),
        (
            tenant("t7", json!({"redis": {"resources": {"memory": {"request": "1Gi", "limit": "512Mi"}}}})),
            "spec.redis.resources.memory.request",
        ),
        (
            tenant(
                "t8",
                server(
                    json!({"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
                ),
            ),
            "spec.server.env[0]",
        ),
        (tenant("t9", server(json!({"env": [{"name": "A", "valueFrom": {}}]}))), "spec.server.env[0].valueFrom"),
        (
            tenant(
                "t10",
                server(json!({"env": [{"name": "A", "valueFrom": {
                "secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]})),
            ),
            "spec.server.env[0].valueFrom",
        ),
        (tenant("t11", server(json!({"env": [{"name": "1=bad", "value": "x"}]}))), "spec.server.env[0].name"),
        (
            tenant("t12", rule(json!({"protocol": "HTTP", "port": 80}))),
            "spec.networkPolicy.ingressRules[0].ports[0].protocol",
        ),
        (
            tenant("t13", rule(json!({"protocol": "TCP", "port": 70000}))),
            "spec.networkPolicy.ingressRules[0].ports[0].port",
        ),
        (tenant("t14", json!({"redis": {"config": {"rename-command": "FLUSHALL x"}}})), "spec.redis.config"),
        (tenant("t15", json!({"redis": {"config": {"timeout": "0\nrequirepass x"}}})), "spec.redis.config"),
        (
            tenant("t16", json!({"networkPolicy": {"allowedNamespaces": ["Bad_Namespace"]}})),
            "spec.networkPolicy.allowedNamespaces[0]",
        ),
        (tenant("t17", json!({"registry": {"baseDomain": "-example.com"}})), "spec.registry.baseDomain"),
        (tenant("t18", server(json!({"image": ""}))), "spec.server.image"),
        (tenant("t19", json!({"deletionPolicy": "Orphan"})), "spec.deletionPolicy"),
        (tenant("t20", json!({"registry": {"replicas": 0}})), "spec.registry.replicas"),
        (
            tenant("t21", json!({"resources": {"storage": {"request": "20Gi", "limit": "10Gi"}}})),
            "spec.resources.storage.request",
        ),
        (tenant("t22", json!({"resources": {"cpu": {"limit": "many"}}})), "spec.resources.cpu.limit"),
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
    let h = Harness::start(false).await;
    let created = h.create_tenant(tenant("valid", json!({}))).await.unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["server"], json!({"replicas": 1, "image": "neurallog/server:latest"}));
    assert_eq!(spec["redis"], json!({"replicas": 1, "image": "redis:7-alpine", "storage": "1Gi"}));
    assert_eq!(spec["networkPolicy"], json!({"enabled": true}));
    assert_eq!(spec["registry"], json!({"replicas": 1, "image": "neurallog/registry:latest"}));
    assert_eq!(spec["deletionPolicy"], "Delete");

    let resize = json!({"spec": {"redis": {"storage": "5Gi"}}});
    let error = h.tenants().patch("valid", &PatchParams::default(), &Patch::Merge(&resize)).await.unwrap_err();
    let kube::Error::Api(status) = error else { panic!("not an API error: {error}") };
    assert!(status.message.contains("spec.redis.storage"), "{}", status.message);
}
