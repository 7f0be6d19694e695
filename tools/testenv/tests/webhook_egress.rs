//! The real API server calls a webhook given by a Service reference, served on `127.0.0.1` by the
//! test, through the control plane's egress proxy. An admission webhook stands in for a conversion
//! webhook: both are resolved to `<ClusterIP>:<port>` and dialed through the same egress dialer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use testenv::{CertAndKey, ControlPlane, Options, Pki};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const NAMESPACE: &str = "egress";
const SERVICE: &str = "webhook";
const DENIAL: &str = "denied by the webhook behind the egress proxy";

/// A TLS listener for axum; a failed handshake drops that connection only.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((stream, peer)) = self.tcp.accept().await
                && let Ok(stream) = self.tls.accept(stream).await
            {
                return (stream, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Denies every admission request it gets, and counts them.
async fn deny(State(reviews): State<Arc<AtomicUsize>>, body: Bytes) -> impl IntoResponse {
    reviews.fetch_add(1, Ordering::SeqCst);
    let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": review["request"]["uid"],
            "allowed": false,
            "status": {"code": 403, "message": DENIAL},
        },
    });
    ([(header::CONTENT_TYPE, "application/json")], answer.to_string())
}

/// Serves [`deny`] over HTTPS on `127.0.0.1`; returns its address and its count of reviews.
async fn serve_webhook(serving: &CertAndKey) -> (SocketAddr, Arc<AtomicUsize>) {
    let certificate = CertificateDer::from_pem_slice(serving.cert_pem.as_bytes()).expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).expect("key PEM");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("TLS configuration");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("webhook listener");
    let address = tcp.local_addr().expect("webhook address");
    let reviews = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route("/deny", post(deny)).with_state(Arc::clone(&reviews));
    let listener = TlsListener { tcp, tls: TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, reviews)
}

#[tokio::test]
async fn the_api_server_reaches_a_webhook_by_service_reference_through_the_egress_proxy() {
    let mut plane = ControlPlane::start(Options::default()).await.expect("control plane starts");
    let client = plane.admin_client().await.expect("admin client");
    let create = PostParams::default();
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&create, &namespace).await.expect("namespace");
    let service = serde_json::from_value(json!({
        "metadata": {"name": SERVICE},
        "spec": {"ports": [{"port": 443, "targetPort": 9443}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), NAMESPACE).create(&create, &service).await.expect("service");

    let pki = Pki::new().expect("PKI");
    let (webhook, reviews) = serve_webhook(&pki.service_server(NAMESPACE, SERVICE).expect("certificate")).await;
    let service = plane.forward_service(NAMESPACE, SERVICE, 443, webhook).await.expect("forward");

    use base64::Engine as _;
    let configuration = serde_json::from_value(json!({
        "metadata": {"name": "egress-deny"},
        "webhooks": [{
            "name": "deny.egress.testenv",
            "clientConfig": {
                "service": {"namespace": NAMESPACE, "name": SERVICE, "path": "/deny", "port": 443},
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem),
            },
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
            }],
            // Only this namespace: the API server writes ConfigMaps of its own in kube-system.
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&create, &configuration)
        .await
        .expect("webhook configuration");

    let config_maps = Api::<ConfigMap>::namespaced(client, NAMESPACE);
    let config_map = serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
    denied_within_30s(&config_maps, &config_map).await;
    let error = config_maps.create(&create, &config_map).await.expect_err("the webhook denies the creation");
    assert!(error.to_string().contains(DENIAL), "{error}");
    let (tunnels, seen) = (plane.connections(service), reviews.load(Ordering::SeqCst));
    assert!(tunnels > 0, "no connection to {service} went through the proxy");
    assert!(seen >= 2, "the webhook saw {seen} reviews");

    // The proxy outlives the API server process: a restarted one gets through again, on a new
    // connection.
    plane.restart_apiserver().await.expect("kube-apiserver restarts");
    denied_within_30s(&config_maps, &config_map).await;
    assert!(plane.connections(service) > tunnels, "the restarted API server did not go through the proxy");
}

/// Dry-runs the creation of `config_map` until the webhook denies it. The API server learns of
/// webhook configurations through a watch, so the first attempts may pass; dry runs call webhooks
/// without side effects (`sideEffects: None`) and leave nothing behind.
async fn denied_within_30s(config_maps: &Api<ConfigMap>, config_map: &ConfigMap) {
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match config_maps.create(&dry_run, config_map).await {
            Err(kube::Error::Api(status)) if status.message.contains(DENIAL) => return,
            outcome => assert!(Instant::now() < deadline, "the webhook did not deny within 30s; last: {outcome:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
