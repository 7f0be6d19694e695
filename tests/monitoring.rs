//! The alerting rules under the real promtool (`tools/build.sh prometheus`): the committed rule file
//! is valid, and every alert fires from synthetic series when it should, with the labels and
//! annotations it promises, and stays quiet when it should.
//!
//! Each case below is written by hand: its input series, when to evaluate, and which alerts fire
//! then. Only the annotations are filled in from the rule (its templates name labels, no values).

use std::collections::BTreeSet;
use std::process::Command;

use neurallog_tenant_operator::monitoring::{alerts, rules_yaml};
use serde_json::{Value, json};

/// Alerts expected to fire at an evaluation: each one's own labels (severity comes from the rule).
type Firing<'a> = &'a [&'a [(&'a str, &'a str)]];

struct Case<'a> {
    alert: &'static str,
    /// `(series, values)` in promtool's notation, one sample a minute.
    series: &'a [(&'a str, &'a str)],
    /// `(minutes, alerts firing then)`.
    evaluations: &'a [(u32, Firing<'a>)],
}

const NONE: Firing = &[];

fn cases() -> Vec<Case<'static>> {
    vec![
        Case {
            alert: "NeuralLogOperatorDown",
            series: &[
                (r#"up{job="neurallog-tenant-operator-metrics",pod="a"}"#, "1 1 1 0x20"),
                (r#"up{job="other",pod="b"}"#, "1x23"),
            ],
            evaluations: &[(2, NONE), (7, NONE), (9, &[&[]])],
        },
        Case {
            alert: "NeuralLogOperatorNoLeader",
            series: &[
                (r#"leader_election_master_status{name="neurallog-tenant-operator",pod="a"}"#, "1x3 0x12"),
                (r#"leader_election_master_status{name="neurallog-tenant-operator",pod="b"}"#, "0x15"),
            ],
            evaluations: &[(3, NONE), (8, NONE), (10, &[&[]])],
        },
        Case {
            alert: "NeuralLogReconcileErrors",
            series: &[
                (r#"controller_runtime_reconcile_total{controller="tenant",result="success"}"#, "0+10x20 200x40"),
                (r#"controller_runtime_reconcile_total{controller="tenant",result="error"}"#, "0+1x20 20+10x40"),
                (r#"controller_runtime_reconcile_errors_total{controller="tenant"}"#, "0+1x20 20+10x40"),
                (r#"controller_runtime_reconcile_total{controller="tenantbackup",result="success"}"#, "0+1x60"),
                (r#"controller_runtime_reconcile_errors_total{controller="tenantbackup"}"#, "0x60"),
            ],
            // One failure in eleven is no alert; all failing for 15 minutes is.
            evaluations: &[(15, NONE), (30, NONE), (45, &[&[("controller", "tenant")]])],
        },
        Case {
            alert: "NeuralLogTenantNotReady",
            series: &[
                (
                    r#"neurallog_tenant_operator_tenant_status_condition{tenant="a",type="Ready",status="False",pod="x"}"#,
                    "1x30",
                ),
                (
                    r#"neurallog_tenant_operator_tenant_status_condition{tenant="b",type="Ready",status="True",pod="x"}"#,
                    "1x30",
                ),
                (
                    r#"neurallog_tenant_operator_tenant_status_condition{tenant="b",type="AuthRegistered",status="False",pod="x"}"#,
                    "1x30",
                ),
            ],
            evaluations: &[(10, NONE), (16, &[&[("tenant", "a")]])],
        },
        Case {
            alert: "NeuralLogRedisDown",
            series: &[
                (r#"neurallog_tenant_operator_redis_up{tenant="a"}"#, "1 1 0x10"),
                (r#"neurallog_tenant_operator_redis_up{tenant="b"}"#, "1x12"),
            ],
            evaluations: &[(5, NONE), (8, &[&[("tenant", "a")]])],
        },
        Case {
            alert: "NeuralLogRedisMemoryNearLimit",
            series: &[
                (r#"neurallog_tenant_operator_redis_memory_used_bytes{tenant="a"}"#, "50x5 95x20"),
                (r#"neurallog_tenant_operator_redis_memory_limit_bytes{tenant="a"}"#, "100x25"),
                (r#"neurallog_tenant_operator_redis_memory_used_bytes{tenant="b"}"#, "89x25"),
                (r#"neurallog_tenant_operator_redis_memory_limit_bytes{tenant="b"}"#, "100x25"),
            ],
            evaluations: &[(10, NONE), (17, &[&[("tenant", "a")]])],
        },
        Case {
            alert: "NeuralLogRedisPersistenceFailing",
            series: &[
                (r#"neurallog_tenant_operator_redis_persistence_ok{tenant="a"}"#, "1 1 0x10"),
                (r#"neurallog_tenant_operator_redis_persistence_ok{tenant="b"}"#, "1x12"),
            ],
            evaluations: &[(3, NONE), (8, &[&[("tenant", "a")]])],
        },
        Case {
            alert: "NeuralLogAuthUnreachable",
            series: &[
                (
                    r#"neurallog_tenant_operator_auth_request_failures_total{operation="register",reason="AuthUnreachable"}"#,
                    "0x5 0+1x30",
                ),
                (
                    r#"neurallog_tenant_operator_auth_request_failures_total{operation="register",reason="AuthRejected"}"#,
                    "0+1x35",
                ),
            ],
            evaluations: &[(4, NONE), (12, NONE), (20, &[&[]])],
        },
        Case {
            // Refusals are Auth answering: no alert, however long they go on.
            alert: "NeuralLogAuthUnreachable",
            series: &[(
                r#"neurallog_tenant_operator_auth_request_failures_total{operation="register",reason="AuthRejected"}"#,
                "0+1x40",
            )],
            evaluations: &[(30, NONE)],
        },
        Case {
            alert: "NeuralLogStorageMigrationStalled",
            series: &[(r#"neurallog_tenant_operator_storage_migration_remaining{pod="a"}"#, "100 90 80 70x40")],
            evaluations: &[(20, NONE), (35, &[&[]])],
        },
        Case {
            // Slow but moving is no stall.
            alert: "NeuralLogStorageMigrationStalled",
            series: &[(r#"neurallog_tenant_operator_storage_migration_remaining{pod="a"}"#, "1000-10x40")],
            evaluations: &[(35, NONE)],
        },
        Case {
            alert: "NeuralLogRolloutHalted",
            series: &[(r#"neurallog_tenant_operator_rollout_halts_total{pod="a"}"#, "0x10 1x40")],
            evaluations: &[(5, NONE), (12, &[&[]]), (45, NONE)],
        },
        Case {
            alert: "NeuralLogRolloutStalled",
            series: &[(r#"neurallog_tenant_operator_rollout_upgrading{pod="a"}"#, "0x5 2x70")],
            evaluations: &[(30, NONE), (70, &[&[]])],
        },
        Case {
            alert: "NeuralLogBackupOverdue",
            series: &[
                // Due at 10 minutes; a's last success before that, b's after.
                (r#"neurallog_tenant_operator_backup_due_timestamp_seconds{tenant="a"}"#, "600x80"),
                (r#"neurallog_tenant_operator_backup_last_success_timestamp_seconds{tenant="a"}"#, "300x80"),
                (r#"neurallog_tenant_operator_backup_due_timestamp_seconds{tenant="b"}"#, "600x80"),
                (r#"neurallog_tenant_operator_backup_last_success_timestamp_seconds{tenant="b"}"#, "900x80"),
                // c has never had a backup succeed.
                (r#"neurallog_tenant_operator_backup_due_timestamp_seconds{tenant="c"}"#, "600x80"),
            ],
            evaluations: &[(60, NONE), (75, &[&[("tenant", "a")], &[("tenant", "c")]])],
        },
    ]
}

/// The rule's annotations for an alert with `labels`, its `{{ $labels.x }}` filled in.
fn annotations(alert: &alerts::Alert, labels: &[(&str, &str)]) -> Value {
    let fill = |text: &str| {
        labels
            .iter()
            .fold(text.to_owned(), |text, (name, value)| text.replace(&format!("{{{{ $labels.{name} }}}}"), value))
    };
    json!({
        "summary": fill(alert.summary),
        "description": fill(alert.description),
        "runbook_url": alert.runbook_url(),
    })
}

fn promtool(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let promtool = testenv::prometheus::promtool().expect("promtool (tools/build.sh prometheus)");
    let output = Command::new(&promtool).args(args).current_dir(dir).output().expect("promtool runs");
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

#[test]
fn every_alert_fires_when_it_should_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules_yaml()).unwrap();
    let (valid, said) = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(valid, "promtool check rules:\n{said}");

    let mut fired = BTreeSet::new();
    let tests: Vec<Value> = cases()
        .iter()
        .map(|case| {
            let alert = alerts::ALERTS.iter().find(|a| a.name == case.alert).expect("a rule of that name");
            let series: Vec<Value> = case.series.iter().map(|(s, v)| json!({"series": s, "values": v})).collect();
            let evaluations: Vec<Value> = case
                .evaluations
                .iter()
                .map(|(minutes, firing)| {
                    if !firing.is_empty() {
                        fired.insert(alert.name);
                    }
                    let expected: Vec<Value> = firing
                        .iter()
                        .map(|labels| {
                            let mut all: serde_json::Map<String, Value> =
                                labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
                            all.insert("severity".into(), json!(alert.severity));
                            json!({"exp_labels": all, "exp_annotations": annotations(alert, labels)})
                        })
                        .collect();
                    json!({"eval_time": format!("{minutes}m"), "alertname": alert.name, "exp_alerts": expected})
                })
                .collect();
            json!({"interval": "1m", "input_series": series, "alert_rule_test": evaluations})
        })
        .collect();
    let file = json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests});
    std::fs::write(dir.path().join("alerts.test.yaml"), serde_yaml::to_string(&file).unwrap()).unwrap();

    let every: BTreeSet<&str> = alerts::ALERTS.iter().map(|a| a.name).collect();
    assert_eq!(fired, every, "every alert has a case in which it fires");
    let (passed, said) = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(passed, "promtool test rules:\n{said}");
}

#[test]
fn a_wrong_expectation_fails_promtool() {
    // The harness itself can fail: the memory alert claimed for tenant b, which stays below 90%.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules_yaml()).unwrap();
    let case = cases().into_iter().find(|c| c.alert == "NeuralLogRedisMemoryNearLimit").unwrap();
    let series: Vec<Value> = case.series.iter().map(|(s, v)| json!({"series": s, "values": v})).collect();
    let alert = alerts::ALERTS.iter().find(|a| a.name == case.alert).unwrap();
    let wrong = json!({"exp_labels": {"tenant": "b", "severity": "warning"}, "exp_annotations": annotations(alert, &[("tenant", "b")])});
    let file = json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "17m", "alertname": case.alert, "exp_alerts": [wrong]}],
    }]});
    std::fs::write(dir.path().join("wrong.test.yaml"), serde_yaml::to_string(&file).unwrap()).unwrap();
    let (passed, said) = promtool(&["test", "rules", "wrong.test.yaml"], dir.path());
    assert!(!passed, "promtool accepted a wrong expectation:\n{said}");
}
