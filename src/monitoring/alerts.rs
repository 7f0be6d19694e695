//! The alerts, each meaning an action, each with its runbook in `docs/runbooks/<alert>.md`.
//!
//! Expressions select by metric name, not by job (Prometheus names the job after the Service it
//! scrapes, which an install may rename), but for `up`, which only its job tells apart. Series of the operator's own state exist on the leader
//! only, so they are taken with `max by (tenant)`: two replicas scraped still make one alert.

use serde_json::{Value, json};

/// Where the runbooks are published.
pub const RUNBOOK_BASE: &str = "https://github.com/neurallog/tenant-operator/blob/main/docs/runbooks";

/// One alerting rule. Its annotations name labels (`{{ $labels.tenant }}`) but no value, so a
/// test can state them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub name: &'static str,
    pub expr: &'static str,
    pub for_: &'static str,
    pub severity: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
}

impl Alert {
    pub fn runbook_url(&self) -> String {
        format!("{RUNBOOK_BASE}/{}.md", self.name)
    }

    fn rule(&self) -> Value {
        json!({
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url(),
            },
        })
    }
}

/// Every alert, in the order of the rule group.
pub const ALERTS: [Alert; 12] = [
    Alert {
        name: "NeuralLogOperatorDown",
        expr: r#"absent(up{job=~".*neurallog-tenant-operator.*"} == 1)"#,
        for_: "5m",
        severity: "critical",
        summary: "No replica of the NeuralLog Tenant Operator is up.",
        description: "Prometheus has scraped no replica of the operator for 5 minutes: no tenant is created, \
                      changed or deleted, and reads of Tenants in another version than the stored one fail.",
    },
    Alert {
        name: "NeuralLogOperatorNoLeader",
        expr: r#"max(leader_election_master_status{name="neurallog-tenant-operator"}) < 1"#,
        for_: "5m",
        severity: "critical",
        summary: "No replica of the NeuralLog Tenant Operator leads.",
        description: "The operator's replicas are up but none holds the Lease: no tenant is reconciled.",
    },
    Alert {
        name: "NeuralLogReconcileErrors",
        expr: "sum by (controller) (rate(controller_runtime_reconcile_errors_total[5m])) \
               / sum by (controller) (rate(controller_runtime_reconcile_total[5m])) > 0.5",
        for_: "15m",
        severity: "warning",
        summary: "Most reconciles of the {{ $labels.controller }} controller fail.",
        description: "More than half of the {{ $labels.controller }} reconciles have failed for 15 minutes.",
    },
    Alert {
        name: "NeuralLogTenantNotReady",
        expr: r#"max by (tenant) (neurallog_tenant_operator_tenant_status_condition{type="Ready",status!="True"}) == 1"#,
        for_: "15m",
        severity: "warning",
        summary: "Tenant {{ $labels.tenant }} has not been Ready for 15 minutes.",
        description: "Tenant {{ $labels.tenant }} is not Ready; its Ready condition and Events say why.",
    },
    Alert {
        name: "NeuralLogRedisDown",
        expr: "max by (tenant) (neurallog_tenant_operator_redis_up) == 0",
        for_: "5m",
        severity: "critical",
        summary: "The Redis of tenant {{ $labels.tenant }} does not answer.",
        description: "The operator has not reached the Redis of tenant {{ $labels.tenant }} for 5 minutes: \
                      its logs can be neither written nor read.",
    },
    Alert {
        name: "NeuralLogRedisMemoryNearLimit",
        expr: "max by (tenant) (neurallog_tenant_operator_redis_memory_used_bytes) \
               / max by (tenant) (neurallog_tenant_operator_redis_memory_limit_bytes) > 0.9",
        for_: "10m",
        severity: "warning",
        summary: "The Redis of tenant {{ $labels.tenant }} uses over 90% of its memory limit.",
        description: "Past its limit the Redis container is killed and restarts from its append-only file.",
    },
    Alert {
        name: "NeuralLogRedisPersistenceFailing",
        expr: "max by (tenant) (neurallog_tenant_operator_redis_persistence_ok) == 0",
        for_: "5m",
        severity: "critical",
        summary: "The Redis of tenant {{ $labels.tenant }} cannot persist its data.",
        description: "Its last background save or append-only file write failed: a restart would lose what \
                      was written since.",
    },
    Alert {
        name: "NeuralLogAuthUnreachable",
        expr: r#"sum(rate(neurallog_tenant_operator_auth_request_failures_total{reason=~"AuthUnreachable|AuthTimeout"}[5m])) > 0"#,
        for_: "10m",
        severity: "warning",
        summary: "NeuralLog Auth cannot be reached.",
        description: "Calls to NeuralLog Auth have failed for 10 minutes: new tenants are not registered and \
                      deleted ones not deregistered.",
    },
    Alert {
        name: "NeuralLogStorageMigrationStalled",
        expr: "max(neurallog_tenant_operator_storage_migration_remaining) > 0 \
               and max(changes(neurallog_tenant_operator_storage_migration_remaining[30m])) == 0",
        for_: "0m",
        severity: "warning",
        summary: "The storage-version migration has made no progress for 30 minutes.",
        description: "Tenants are still stored in an earlier version; the CRD's storedVersions cannot be \
                      trimmed until they are rewritten.",
    },
    Alert {
        name: "NeuralLogRolloutHalted",
        expr: "sum(increase(neurallog_tenant_operator_rollout_halts_total[30m])) > 0",
        for_: "0m",
        severity: "warning",
        summary: "A NeuralLog rollout halted.",
        description: "A tenant moving to a new NeuralLog version was not Ready in time; the rollout waits \
                      and the other tenants keep their version.",
    },
    Alert {
        name: "NeuralLogRolloutStalled",
        expr: "max(neurallog_tenant_operator_rollout_upgrading) > 0",
        for_: "1h",
        severity: "warning",
        summary: "Tenants have been moving to another NeuralLog version for an hour.",
        description: "Tenants are still upgrading after an hour; their Upgrading condition says how far.",
    },
    Alert {
        name: "NeuralLogBackupOverdue",
        expr: "max by (tenant) (neurallog_tenant_operator_backup_due_timestamp_seconds) \
               > (max by (tenant) (neurallog_tenant_operator_backup_last_success_timestamp_seconds) \
               or max by (tenant) (neurallog_tenant_operator_backup_due_timestamp_seconds) * 0) \
               and on (tenant) time() - max by (tenant) (neurallog_tenant_operator_backup_due_timestamp_seconds) > 3600",
        for_: "0m",
        severity: "warning",
        summary: "The scheduled backup of tenant {{ $labels.tenant }} is more than an hour overdue.",
        description: "No backup of tenant {{ $labels.tenant }} has succeeded since one was due over an hour ago.",
    },
];

/// The PrometheusRule of every alert, in `namespace`.
pub fn prometheus_rule(namespace: &str) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": super::NAME,
            "namespace": namespace,
            "labels": super::labels(),
        },
        "spec": rule_groups(),
    })
}

/// The rule groups, as a Prometheus rule file holds them (`promtool check rules` reads this).
pub fn rule_groups() -> Value {
    json!({"groups": [{"name": super::NAME, "rules": ALERTS.iter().map(Alert::rule).collect::<Vec<_>>()}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_has_a_runbook_and_a_distinct_name() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut names = std::collections::BTreeSet::new();
        for alert in &ALERTS {
            assert!(names.insert(alert.name), "{} twice", alert.name);
            let runbook = root.join(format!("docs/runbooks/{}.md", alert.name));
            let text = std::fs::read_to_string(&runbook).unwrap_or_default();
            for section in ["## Meaning", "## Confirm", "## Fix"] {
                assert!(text.contains(section), "{} lacks {section:?}", runbook.display());
            }
            assert!(matches!(alert.severity, "critical" | "warning"), "{}", alert.name);
        }
    }
}
