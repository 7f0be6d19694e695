//! The Grafana dashboard: the operator's health and every tenant's, one query per panel.
//!
//! Each query returns data on a running install (with or without Auth and backups configured), so
//! an empty panel means a broken scrape, not a quiet operator: counts that can be zero say so with
//! `or vector(0)`.

use serde_json::{Value, json};

/// The dashboard's uid: stable, so a re-import replaces it.
pub const UID: &str = "neurallog-tenant-operator";

/// One panel: its title, unit and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panel {
    pub title: &'static str,
    pub unit: &'static str,
    pub expr: &'static str,
    pub legend: &'static str,
}

pub const PANELS: [Panel; 15] = [
    Panel {
        title: "Tenants by phase",
        unit: "short",
        expr: "sum by (phase) (max by (tenant, phase) (neurallog_tenant_operator_tenant_status_phase))",
        legend: "{{phase}}",
    },
    Panel {
        title: "Tenants not Ready",
        unit: "short",
        expr: r#"count(max by (tenant) (neurallog_tenant_operator_tenant_status_condition{type="Ready",status!="True"}) == 1) or vector(0)"#,
        legend: "not Ready",
    },
    Panel {
        title: "Tenants by NeuralLog version",
        unit: "short",
        expr: "max by (version) (neurallog_tenant_operator_tenants_by_version)",
        legend: "{{version}}",
    },
    Panel {
        title: "Reconciles per second",
        unit: "ops",
        expr: "sum by (controller, result) (rate(controller_runtime_reconcile_total[5m]))",
        legend: "{{controller}} {{result}}",
    },
    Panel {
        title: "Reconcile time, 99th percentile",
        unit: "s",
        expr: "histogram_quantile(0.99, sum by (le, controller) (rate(controller_runtime_reconcile_time_seconds_bucket[5m])))",
        legend: "{{controller}}",
    },
    Panel {
        title: "Active reconciles",
        unit: "short",
        expr: "sum by (controller) (controller_runtime_active_workers)",
        legend: "{{controller}}",
    },
    Panel {
        title: "Tenants waiting for a reconcile",
        unit: "short",
        expr: "max by (name) (workqueue_depth)",
        legend: "{{name}}",
    },
    Panel { title: "Leader", unit: "short", expr: "max(leader_election_master_status)", legend: "leading replicas" },
    Panel {
        title: "API server requests per second",
        unit: "reqps",
        expr: "sum by (method, code) (rate(rest_client_requests_total[5m]))",
        legend: "{{method}} {{code}}",
    },
    Panel {
        title: "NeuralLog Auth calls failing per second",
        unit: "ops",
        expr: "sum by (operation, reason) (rate(neurallog_tenant_operator_auth_request_failures_total[5m])) or vector(0)",
        legend: "{{operation}} {{reason}}",
    },
    Panel {
        title: "Redis memory used of its limit",
        unit: "percentunit",
        expr: "max by (tenant) (neurallog_tenant_operator_redis_memory_used_bytes) \
               / max by (tenant) (neurallog_tenant_operator_redis_memory_limit_bytes)",
        legend: "{{tenant}}",
    },
    Panel {
        title: "Redis keys",
        unit: "short",
        expr: "max by (tenant) (neurallog_tenant_operator_redis_keys)",
        legend: "{{tenant}}",
    },
    Panel {
        title: "Redis connected clients",
        unit: "short",
        expr: "max by (tenant) (neurallog_tenant_operator_redis_connected_clients)",
        legend: "{{tenant}}",
    },
    Panel {
        title: "Operator CPU",
        unit: "percentunit",
        expr: "rate(process_cpu_seconds_total{job=~\".*neurallog-tenant-operator.*\"}[5m])",
        legend: "{{pod}}",
    },
    Panel {
        title: "Operator memory",
        unit: "bytes",
        expr: "process_resident_memory_bytes{job=~\".*neurallog-tenant-operator.*\"}",
        legend: "{{pod}}",
    },
];

/// The dashboard's JSON model, with a data source variable so it works on any Prometheus.
pub fn dashboard() -> Value {
    let panels: Vec<Value> = PANELS
        .iter()
        .enumerate()
        .map(|(index, panel)| {
            let (x, y) = ((index % 2) * 12, (index / 2) * 8);
            json!({
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": [{
                    "refId": "A",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "expr": panel.expr,
                    "legendFormat": panel.legend,
                }],
            })
        })
        .collect();
    json!({
        "uid": UID,
        "title": "NeuralLog Tenant Operator",
        "tags": ["neurallog", "operator"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Prometheus",
        }]},
        "panels": panels,
    })
}
