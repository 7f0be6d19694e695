//! The metrics server as a cluster's Prometheus meets it, on the real API server with the RBAC of
//! `config/default`: `/metrics` over HTTPS only for a token the API server authenticates and lets
//! `get` the non-resource URL `/metrics` (the ClusterRole neurallog-tenant-operator-metrics-reader);
//! no token, a made-up token and a token without that right are refused, and the admin port serves
//! only the probes.

use crate::support::{Harness, OperatorProcess, poll};

const NAMESPACE: &str = "neurallog-system";

/// GET /metrics over HTTPS (the loopback certificate is the test's own), with `token` if any.
async fn scrape(address: &str, token: Option<&str>) -> Option<(u16, Option<String>, String)> {
    neurallog_tenant_operator::tls::install_crypto_provider();
    let client = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().ok()?;
    let mut request = client.get(format!("https://{address}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.ok()?;
    let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Some((response.status().as_u16(), challenge, response.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_only_to_tokens_allowed_to_read_them() {
    let mut h = Harness::bare(&[]).await;
    h.install_default_config().await;
    for account in ["prometheus", "stranger"] {
        h.kubectl(&["-n", NAMESPACE, "create", "serviceaccount", account], None);
    }
    let reader = "neurallog-tenant-operator-metrics-reader";
    let binding = format!("--serviceaccount={NAMESPACE}:prometheus");
    h.kubectl(
        &["create", "clusterrolebinding", "prometheus-metrics", &format!("--clusterrole={reader}"), &binding],
        None,
    );
    let token = |account: &str| h.kubectl(&["-n", NAMESPACE, "create", "token", account], None).trim().to_owned();
    let (allowed, stranger) = (token("prometheus"), token("stranger"));

    let address = format!("127.0.0.1:{}", testenv::free_port().unwrap());
    let kubeconfig = h.service_account_kubeconfig();
    let operator = OperatorProcess::start(
        &h,
        "metrics",
        &kubeconfig,
        &["--metrics-address", &address],
        &[("POD_NAMESPACE", NAMESPACE)],
    );

    let body = poll("the metrics server answers the allowed token", async || {
        scrape(&address, Some(&allowed)).await.filter(|(status, _, _)| *status == 200).map(|(_, _, body)| body)
    })
    .await;
    assert!(body.contains("controller_runtime_reconcile_total{controller=\"tenant\",result=\"success\"}"), "{body}");
    assert!(body.contains("# TYPE process_cpu_seconds counter"), "{body}");

    let (status, challenge, _) = scrape(&address, None).await.expect("answers");
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")), "no token");
    let (status, _, _) = scrape(&address, Some("not-a-token")).await.expect("answers");
    assert_eq!(status, 401, "a made-up token");
    let (status, _, said) = scrape(&address, Some(&stranger)).await.expect("answers");
    assert_eq!(status, 403, "a token without the right: {said}");
    assert!(said.contains(&format!("system:serviceaccount:{NAMESPACE}:stranger")) && said.contains(reader), "{said}");
    let (status, _) = operator.admin_get("/metrics").await.expect("the admin port answers");
    assert_eq!(status, 404, "the admin port serves no metrics");
    let (status, _) = operator.admin_get("/healthz").await.expect("the admin port answers");
    assert_eq!(status, 200, "the probes stay plain");
}
