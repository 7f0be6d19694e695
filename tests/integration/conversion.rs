//! The conversion webhook on the real API server, over TLS: one tenant read and written by a `v1`
//! and a `v2` client, each in its own shape with nothing lost; the web admin's `v1` payloads; a
//! certificate rotated under a client converting in a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use neurallog_tenant_operator::api::conversion::V2_SPEC_ANNOTATION;
use neurallog_tenant_operator::api::{Tenant, v1};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use crate::support::{Controllers, ConversionWebhook, DEADLINE, Harness, poll, wait_for};

fn version(h: &Harness, version: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", version, "Tenant"));
    Api::all_with(h.admin.clone(), &resource)
}

/// What the NeuralLog web admin sends to create a tenant.
fn web_admin_create(name: &str) -> Value {
    json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant", "metadata": {"name": name}, "spec": {
        "displayName": "Acme Corp",
        "resources": {"cpu": {"request": "1", "limit": "4"}, "memory": {"limit": "8Gi"}, "storage": {"request": "20Gi"}},
        "server": {"replicas": 2, "resources": {"memory": {"request": "256Mi"}},
            "env": [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "acme-keys", "key": "api"}}}]},
        "redis": {"storage": "5Gi", "config": {"maxmemory-policy": "allkeys-lru", "timeout": "300", "save": "900 1"}},
        "registry": {"baseDomain": "neurallog.app"},
        "networkPolicy": {"allowedNamespaces": ["ingress-nginx"],
            "ingressRules": [{"description": "Prometheus", "from": {"app": "prometheus"}, "namespaces": ["monitoring"], "ports": [{"port": 3030}]}]},
        "deletionPolicy": "Retain"
    }})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v1_and_a_v2_client_each_see_their_own_shape_and_nothing_is_lost() {
    let h = Harness::start(Controllers::None).await;
    let (v1s, v2s) = (version(&h, "v1"), version(&h, "v2"));
    let object: DynamicObject = serde_json::from_value(web_admin_create("acme")).unwrap();
    v1s.create(&PostParams::default(), &object).await.expect("the web admin's create goes through v1");

    // The v2 client sees v2's shapes.
    let as_v2 = v2s.get("acme").await.unwrap().data;
    let spec = &as_v2["spec"];
    assert_eq!(
        spec["quota"],
        json!({"requests": {"cpu": "1", "storage": "20Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}})
    );
    assert_eq!(spec["server"]["resources"], json!({"requests": {"memory": "256Mi"}}));
    assert_eq!(
        spec["redis"]["config"],
        json!({"maxmemoryPolicy": "allkeys-lru", "timeout": 300, "extra": {"save": "900 1"}})
    );
    assert_eq!(spec["registry"]["exposure"], json!({"baseDomain": "neurallog.app"}));
    assert_eq!(
        spec["networkPolicy"]["ingress"][0]["from"],
        json!([{"podSelector": {"matchLabels": {"app": "prometheus"}}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );

    // The v2 client adds what v1 cannot say: a pod field and a namespace selected by expression.
    let mut edited = v2s.get("acme").await.unwrap();
    edited.data["spec"]["server"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}));
    edited.data["spec"]["networkPolicy"]["egress"] = json!([{"to": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["payments", "billing"]}]}}], "ports": [{"port": 443}]}]);
    let edited = v2s.replace("acme", &PostParams::default(), &edited).await.expect("the v2 edit goes through");
    let v2_spec = edited.data["spec"].clone();

    // The v1 client sees v1's shapes, and the rest kept aside.
    let as_v1 = v1s.get("acme").await.unwrap();
    assert_eq!(as_v1.data["spec"]["resources"]["cpu"], json!({"request": "1", "limit": "4"}));
    assert_eq!(as_v1.data["spec"]["redis"]["config"]["timeout"], "300");
    assert!(as_v1.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(V2_SPEC_ANNOTATION)));
    let typed: v1::Tenant = serde_json::from_value(serde_json::to_value(&as_v1).unwrap()).unwrap();
    assert_eq!(typed.spec.display_name.as_deref(), Some("Acme Corp"));

    // A v1 client that writes back what it read (a label added, say) loses nothing v2 said.
    let mut relabelled = as_v1.clone();
    relabelled.metadata.labels.get_or_insert_default().insert("tier".into(), "gold".into());
    v1s.replace("acme", &PostParams::default(), &relabelled).await.expect("the v1 write goes through");
    let after = v2s.get("acme").await.unwrap();
    assert_eq!(after.data["spec"], v2_spec, "the v1 round trip kept the v2 spec");
    assert_eq!(after.metadata.labels.as_ref().and_then(|l| l.get("tier")).map(String::as_str), Some("gold"));
    assert!(
        after.metadata.annotations.as_ref().is_none_or(|a| !a.keys().any(|k| k.starts_with("conversion.neurallog.io"))),
        "no stash is stored: {:?}",
        after.metadata.annotations
    );

    // The controller's typed read of the stored version.
    let stored: Tenant = Api::<Tenant>::all(h.admin.clone()).get("acme").await.unwrap();
    let model = stored.model().expect("the operator reads it");
    assert_eq!(model.server.env.len(), 2);
    assert_eq!(model.redis.config.get("maxmemory-policy").map(String::as_str), Some("allkeys-lru"));
    let metrics = h.webhook.as_ref().unwrap().metrics.encode().unwrap();
    let converted = metrics
        .lines()
        .find_map(|line| line.strip_prefix("neurallog_tenant_operator_converted_objects_total "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(converted.is_some_and(|n| n > 0.0), "the webhook converted the objects: {metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_admins_create_and_replace_through_v1_work_unchanged_with_the_operator_on_v2() {
    let h = Harness::start(Controllers::None).await;
    let operator = h.start_operator().await;
    let v1s = version(&h, "v1");
    let object: DynamicObject = serde_json::from_value(web_admin_create("globex")).unwrap();
    v1s.create(&PostParams::default(), &object).await.unwrap();
    let typed = Api::<v1::Tenant>::all(h.admin.clone());
    let provisioning = wait_for(&typed, "globex", "Provisioning, read through v1", |t| {
        t.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p == v1::TenantPhase::Provisioning)
    })
    .await;
    assert_eq!(provisioning.status.as_ref().and_then(|s| s.namespace.as_deref()), Some("tenant-globex"));
    assert!(provisioning.status.as_ref().unwrap().server_status.is_some(), "v1's component status");

    // The web admin replaces the whole object: metadata with the name (and the version it read)
    // only, a changed spec; retried on a conflict with the operator's writes.
    let replaced = poll("the web admin's replace goes through", async || {
        let current = v1s.get("globex").await.ok()?;
        let mut payload = web_admin_create("globex");
        payload["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
        payload["spec"]["server"]["replicas"] = json!(3);
        let payload: DynamicObject = serde_json::from_value(payload).unwrap();
        match v1s.replace("globex", &PostParams::default(), &payload).await {
            Err(kube::Error::Api(status)) if status.code == 409 => None,
            replaced => Some(replaced.unwrap()),
        }
    })
    .await;
    assert_eq!(replaced.data["spec"]["server"]["replicas"], 3);
    let deployments = h.namespaced::<k8s_openapi::api::apps::v1::Deployment>("tenant-globex");
    wait_for(&deployments, "globex-server", "3 server replicas", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(3)
    })
    .await;
    let stored = Api::<Tenant>::all(h.admin.clone()).get("globex").await.unwrap();
    assert_eq!(stored.spec.server.and_then(|s| s.replicas), Some(3), "the operator reads the replace as v2");
    operator.stop().await;
}

/// Completes a TLS handshake with the webhook and returns the certificate it presented.
async fn served_certificate(webhook: &ConversionWebhook) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(webhook.pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(webhook.address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, stream).await.expect("TLS handshake with the webhook");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_rotated_under_a_converting_client_fails_no_request() {
    let h = Harness::start(Controllers::None).await;
    let v1s = version(&h, "v1");
    for n in 0..5 {
        let object: DynamicObject = serde_json::from_value(web_admin_create(&format!("t{n}"))).unwrap();
        v1s.create(&PostParams::default(), &object).await.unwrap();
    }
    let webhook = h.webhook.as_ref().unwrap();
    let before = served_certificate(webhook).await;

    // A client lists through v1 in a loop: every list converts the five stored v2 objects.
    let stop = Arc::new(AtomicBool::new(false));
    let (lists, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let client = {
        let (stop, lists, failures, v1s) = (stop.clone(), lists.clone(), failures.clone(), v1s.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match v1s.list(&ListParams::default()).await {
                    Ok(list) if list.items.len() == 5 => lists.fetch_add(1, Ordering::Relaxed),
                    Ok(list) => {
                        failures.lock().unwrap().push(format!("{} items", list.items.len()));
                        0
                    }
                    Err(error) => {
                        failures.lock().unwrap().push(error.to_string());
                        0
                    }
                };
            }
        })
    };
    poll("the client converts", async || (lists.load(Ordering::Relaxed) >= 5).then_some(())).await;

    // Rotated twice, the way the kubelet updates a mounted Secret.
    for _ in 0..2 {
        let served = served_certificate(webhook).await;
        ConversionWebhook::write_pair(&webhook.pki, &webhook.cert_dir);
        poll("the webhook serves the rotated certificate", async || {
            (served_certificate(webhook).await != served).then_some(())
        })
        .await;
        let at = lists.load(Ordering::Relaxed);
        poll("the client converts after the rotation", async || {
            (lists.load(Ordering::Relaxed) >= at + 5).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(DEADLINE, client).await.unwrap().unwrap();
    assert_ne!(served_certificate(webhook).await, before);
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} of {} lists failed: {failures:?}", failures.len(), lists.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_written_through_v2_gets_what_only_v2_can_say() {
    let h = Harness::start(Controllers::None).await;
    let operator = h.start_operator().await;
    let sample: Value = serde_yaml::from_str(
        &std::fs::read_to_string(testenv::repo_root().join("config/samples/neurallog_v2_tenant.yaml")).unwrap(),
    )
    .unwrap();
    version(&h, "v2").create(&PostParams::default(), &serde_json::from_value(sample).unwrap()).await.unwrap();

    // A pod field as an environment variable.
    let deployments = h.namespaced::<k8s_openapi::api::apps::v1::Deployment>("tenant-acme");
    let server = wait_for(&deployments, "acme-server", "the server Deployment", |_| true).await;
    let container = &server.spec.unwrap().template.spec.unwrap().containers[0];
    let pod_name = container.env.iter().flatten().find(|e| e.name == "POD_NAME").expect("POD_NAME set");
    let field = pod_name.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("from a pod field");
    assert_eq!(field.field_path, "metadata.name");

    // Namespaces selected by a label expression.
    let policies = h.namespaced::<k8s_openapi::api::networking::v1::NetworkPolicy>("tenant-acme");
    let egress = poll("the custom egress policy", async || {
        let list = policies.list(&ListParams::default().labels("neurallog.io/policy=custom")).await.ok()?;
        list.items.into_iter().find(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("custom-egress")))
    })
    .await;
    let peer = serde_json::to_value(&egress.spec.unwrap().egress.unwrap()[0].to.as_ref().unwrap()[0]).unwrap();
    assert_eq!(
        peer,
        json!({"podSelector": {"matchLabels": {"app": "payments-webhooks"}},
               "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["payments"]}]}})
    );
    let stored = Api::<Tenant>::all(h.admin.clone());
    wait_for(&stored, "acme", "Provisioning", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p == neurallog_tenant_operator::api::stored::TenantPhase::Provisioning)
    })
    .await;
    operator.stop().await;
}
