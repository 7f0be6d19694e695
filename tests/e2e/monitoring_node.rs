//! Monitoring on a real node, with kube-router enforcing NetworkPolicies: a real Prometheus
//! (`tools/build.sh prometheus`, on the host) scrapes the operator as the ServiceMonitor the
//! operator creates tells the Prometheus Operator to (its selector, port, scheme, path and TLS
//! settings turned into a scrape configuration with endpoint-slice discovery, as the Prometheus
//! Operator does), with a ServiceAccount token bound to `neurallog-tenant-operator-metrics-reader`;
//! a second job without a token is refused. It loads the operator's alerting rules, their hold times
//! (`for`) shortened to seconds; the expressions are the operator's. Then:
//! - both replicas are scraped; the unauthenticated scrape fails with 401;
//! - the Redis of a running tenant is measured through the operator (its INFO, across the
//!   NetworkPolicy `allow-redis-from-operator`);
//! - a tenant that cannot become Ready drives `NeuralLogTenantNotReady` to firing for it alone;
//! - every panel of the dashboard returns data from this Prometheus.

use std::time::Instant;

use anyhow::{Context as _, ensure};
use neurallog_tenant_operator::monitoring::{self, alerts, dashboard};
use serde_json::{Value, json};
use testenv::node::RealNode;
use testenv::node::config::{APISERVER_PORT, NODE_IP};
use testenv::prometheus::Prometheus;
use testenv::timeline::Timeline;

use crate::backup_node::tenant;
use crate::on_node::{OPERATOR_NAMESPACE, create_tenant, on_a_node, wait, wait_running, write_record};

const DEPLOYMENT: &str = "deployment/neurallog-tenant-operator";
const PROMETHEUS_NAMESPACE: &str = "monitoring";
const PROMETHEUS_ACCOUNT: &str = "prometheus";
/// The scrape interval here (the ServiceMonitor asks for 30 s), so that rates have samples soon.
const SCRAPE_INTERVAL: &str = "5s";
/// The alerts' hold time here.
const HOLD: &str = "10s";

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_operator_and_its_tenants_and_alerts_fire() -> anyhow::Result<()> {
    on_a_node(
        "monitoring-node",
        "e2e monitoring with a real Prometheus on a real node",
        4,
        true,
        |_, _| {},
        async |node, timeline, logs| scenario(node, timeline, logs).await,
    )
    .await
}

/// Prometheus' ServiceAccount: may read the operator's metrics and discover its endpoints.
fn prometheus_identity(node: &RealNode) -> anyhow::Result<String> {
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROMETHEUS_NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": PROMETHEUS_ACCOUNT, "namespace": PROMETHEUS_NAMESPACE}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "prometheus-discovery"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "endpoints"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "prometheus-discovery"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "prometheus-discovery"},
               "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS_ACCOUNT, "namespace": PROMETHEUS_NAMESPACE}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "prometheus-neurallog-metrics"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "neurallog-tenant-operator-metrics-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS_ACCOUNT, "namespace": PROMETHEUS_NAMESPACE}]}),
    ];
    for object in &objects {
        node.apply_json(object)?;
    }
    let output = node
        .kubectl_command(&["-n", PROMETHEUS_NAMESPACE, "create", "token", PROMETHEUS_ACCOUNT, "--duration=2h"])
        .output()?;
    ensure!(output.status.success(), "kubectl create token: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// A scrape job as the Prometheus Operator makes one of the ServiceMonitor: its Service selector
/// and port name kept by relabelling, its scheme, path and TLS settings; the token file when
/// `authorised`. Discovery talks to the API server with the same token.
fn scrape_job(service_monitor: &Value, name: &str, authorised: bool) -> anyhow::Result<Value> {
    let spec = &service_monitor["spec"];
    let endpoint = &spec["endpoints"][0];
    let namespace = service_monitor["metadata"]["namespace"].as_str().context("namespace")?;
    let mut relabel = Vec::new();
    for (key, value) in spec["selector"]["matchLabels"].as_object().context("selector")? {
        let meta = key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
        relabel.push(json!({"source_labels": [format!("__meta_kubernetes_service_label_{meta}")],
                            "regex": value, "action": "keep"}));
    }
    relabel.push(json!({"source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                        "regex": endpoint["port"], "action": "keep"}));
    relabel.push(json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"}));
    relabel.push(json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}));
    let mut job = json!({
        "job_name": name,
        "scrape_interval": SCRAPE_INTERVAL,
        "scheme": endpoint["scheme"],
        "metrics_path": endpoint["path"],
        "tls_config": {"insecure_skip_verify": endpoint["tlsConfig"]["insecureSkipVerify"]},
        "kubernetes_sd_configs": [{
            "role": "endpointslice",
            "api_server": format!("https://{NODE_IP}:{APISERVER_PORT}"),
            "namespaces": {"names": [namespace]},
            "authorization": {"credentials_file": "token"},
            "tls_config": {"ca_file": "ca.crt"},
        }],
        "relabel_configs": relabel,
    });
    if authorised {
        job["authorization"] = json!({"credentials_file": "token"});
    }
    Ok(job)
}

/// The operator's rule groups with every hold time set to [`HOLD`].
fn rules_held_briefly() -> Value {
    let mut groups = alerts::rule_groups();
    for group in groups["groups"].as_array_mut().into_iter().flatten() {
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            rule["for"] = json!(HOLD);
        }
    }
    groups
}

async fn scenario(node: &RealNode, timeline: &mut Timeline, logs: &std::path::Path) -> anyhow::Result<()> {
    let client = node.admin_client().await?;

    timeline.begin("install", "the operator from its image; Prometheus' ServiceAccount and its token");
    for name in ["server-1.0.0", "registry-1.0.0", "redis-default"] {
        node.push_image(name)?;
    }
    let operator = node.push_image("operator")?;
    node.install_operator(&operator, &[])?;
    node.wait_rollout(OPERATOR_NAMESPACE, DEPLOYMENT)?;
    let token = prometheus_identity(node)?;
    timeline.done("2 replicas rolled out");

    timeline.begin("tenants", "healthy Running with records; stuck asks for more CPU than the node has");
    create_tenant(&client, "v2", &tenant("healthy", json!({}))).await?;
    let greedy = json!({"server": {"resources": {"requests": {"cpu": "64"}}}});
    create_tenant(&client, "v2", &tenant("stuck", greedy)).await?;
    wait_running(&client, "healthy").await?;
    for i in 0..20 {
        write_record(&client, "healthy", "app", &format!("record {i}")).await?;
    }
    timeline.done("healthy Running, 20 records");

    timeline.begin("prometheus", "scraping as the ServiceMonitor says, with and without a token; the rules loaded");
    let dir = logs.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("token"), &token)?;
    std::fs::copy(node.dir().join("ca.crt"), dir.join("ca.crt"))?;
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&rules_held_briefly())?)?;
    let service_monitor = monitoring::service_monitor(OPERATOR_NAMESPACE);
    let config = json!({
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            scrape_job(&service_monitor, "neurallog-tenant-operator", true)?,
            scrape_job(&service_monitor, "unauthenticated", false)?,
        ],
    });
    let prometheus = Prometheus::start(&dir, &serde_yaml::to_string(&config)?).await?;
    let started = Instant::now();
    let targets = wait("both replicas scraped, the scrape without a token refused", async || {
        let targets = prometheus.targets().await?;
        let of = |pool: &str| -> Vec<&Value> { targets.iter().filter(|t| t["scrapePool"] == pool).collect() };
        let (scraped, refused) = (of("neurallog-tenant-operator"), of("unauthenticated"));
        let up = scraped.len() == 2 && scraped.iter().all(|t| t["health"] == "up");
        let down = refused.len() == 2
            && refused
                .iter()
                .all(|t| t["health"] == "down" && t["lastError"].as_str().is_some_and(|e| e.contains("401")));
        Ok((up && down).then(|| targets.clone()))
    })
    .await?;
    let refusal = targets
        .iter()
        .find(|t| t["scrapePool"] == "unauthenticated")
        .and_then(|t| t["lastError"].as_str())
        .unwrap_or_default()
        .to_owned();
    timeline.done(format!("in {:.0}s; without a token: {refusal}", started.elapsed().as_secs_f64()));

    timeline.begin("operand", "the healthy tenant's Redis measured through the operator");
    let keys = wait("healthy's Redis measured", async || {
        let up = prometheus.query(r#"max(neurallog_tenant_operator_redis_up{tenant="healthy"})"#).await?;
        let keys = prometheus.query(r#"max(neurallog_tenant_operator_redis_keys{tenant="healthy"})"#).await?;
        let value = |v: &[Value]| v.first().and_then(|s| s["value"][1].as_str()).map(str::to_owned);
        Ok((value(&up).as_deref() == Some("1")).then(|| value(&keys)).flatten().filter(|k| k != "0"))
    })
    .await?;
    let memory = prometheus
        .query(
            r#"max(neurallog_tenant_operator_redis_memory_used_bytes{tenant="healthy"}) / max(neurallog_tenant_operator_redis_memory_limit_bytes{tenant="healthy"})"#,
        )
        .await?;
    let share = memory.first().and_then(|s| s["value"][1].as_str()).unwrap_or_default().to_owned();
    timeline.done(format!("redis_up 1, {keys} keys, memory {share} of maxmemory"));

    timeline.begin("alert", "NeuralLogTenantNotReady firing for stuck, and for no other tenant");
    let fired = wait("NeuralLogTenantNotReady firing for stuck", async || {
        let alerts = prometheus.alerts().await?;
        let not_ready: Vec<&Value> =
            alerts.iter().filter(|a| a["labels"]["alertname"] == "NeuralLogTenantNotReady").collect();
        ensure!(not_ready.iter().all(|a| a["labels"]["tenant"] == "stuck"), "only stuck is not Ready: {not_ready:?}");
        Ok(not_ready.into_iter().find(|a| a["state"] == "firing").cloned())
    })
    .await?;
    timeline.done(format!("firing: {}", fired["annotations"]["summary"]));

    timeline.begin("dashboard", "every panel's query returns data");
    let mut empty = Vec::new();
    let answered = wait("every dashboard panel to return data", async || {
        empty.clear();
        let mut series = 0;
        for panel in &dashboard::PANELS {
            let result = prometheus.query(panel.expr).await?;
            if result.is_empty() {
                empty.push(panel.title);
            }
            series += result.len();
        }
        Ok(empty.is_empty().then_some(series))
    })
    .await
    .with_context(|| format!("panels without data: {empty:?}"))?;
    let count = prometheus.query(r#"count({job="neurallog-tenant-operator-metrics"})"#).await?;
    let exposed = count.first().and_then(|s| s["value"][1].as_str()).unwrap_or_default().to_owned();
    let took = prometheus.query(r#"max(scrape_duration_seconds{job="neurallog-tenant-operator-metrics"})"#).await?;
    let took = took.first().and_then(|s| s["value"][1].as_str()).unwrap_or_default().to_owned();
    timeline.done(format!(
        "{} panels, {answered} series in all; {exposed} series scraped from both replicas, the slowest scrape {took}s",
        dashboard::PANELS.len()
    ));
    Ok(())
}
