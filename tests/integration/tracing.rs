//! Every reconcile is one trace in a real Jaeger: the operator runs as a process exporting over
//! OTLP, the test reads the traces back through Jaeger's query API, and a SIGTERM loses no span
//! of a finished reconcile.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use testenv::auth::{AuthStandIn, Behaviour};
use testenv::jaeger::Jaeger;

use crate::support::{Controllers, Harness, OperatorProcess, condition, phase, poll, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

const SERVICE: &str = "tenant-operator-under-test";

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key).map(|t| &t["value"])
}

fn parent_of(span: &Value) -> Option<String> {
    span["references"].as_array()?.iter().find(|r| r["refType"] == "CHILD_OF")?["spanID"].as_str().map(String::from)
}

/// The spans of a trace as an indented tree of names, children in start order.
fn tree(trace: &Value) -> String {
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let mut children: BTreeMap<Option<String>, Vec<&Value>> = BTreeMap::new();
    for span in &spans {
        children.entry(parent_of(span)).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s["startTime"].as_u64());
    }
    fn walk(out: &mut String, children: &BTreeMap<Option<String>, Vec<&Value>>, parent: Option<String>, depth: usize) {
        for span in children.get(&parent).into_iter().flatten() {
            let detail = ["changed"]
                .iter()
                .filter_map(|k| tag(span, k).map(|v| format!("{k}={}", v.as_str().map_or(v.to_string(), String::from))))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "{}{} {detail}\n",
                "  ".repeat(depth),
                span["operationName"].as_str().unwrap_or("?")
            ));
            walk(out, children, span["spanID"].as_str().map(String::from), depth + 1);
        }
    }
    let mut out = String::new();
    walk(&mut out, &children, None, 0);
    out
}

fn root(trace: &Value) -> Option<&Value> {
    trace["spans"].as_array()?.iter().find(|s| parent_of(s).is_none())
}

fn operation_names(trace: &Value) -> BTreeSet<String> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["operationName"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reconcile_is_one_trace_in_jaeger_and_sigterm_loses_none() {
    let jaeger = Jaeger::start().await.expect("jaeger starts");
    let auth = AuthStandIn::start().await.unwrap();
    auth.set_behaviour(Some("broken"), Behaviour::Fail(500));
    let h = Harness::start(Controllers::None).await;

    let auth_url = auth.url();
    let args = ["--auth-attempts", "1", "--auth-url", &auth_url];
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_grpc_endpoint()),
        ("OTEL_SERVICE_NAME", SERVICE.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info,neurallog_tenant_operator=debug,kube=warn".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let operator = OperatorProcess::start(&h, "operator-process", h.plane.operator_kubeconfig(), &args, &env);

    let tenant = |name: &str| TestTenant::new(name).manifest();
    h.create_tenant(tenant("traced")).await.unwrap();
    wait_for(&h.tenants(), "traced", "is registered", |t| {
        condition(t, "AuthRegistered").is_some_and(|c| c.status == "True")
    })
    .await;
    let scale = json!({"spec": {"server": {"replicas": 2}}});
    h.tenants().patch("traced", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    wait_for(&h.tenants(), "traced", "observes generation 2", |t| {
        t.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    h.create_tenant(tenant("broken")).await.unwrap();
    wait_for(&h.tenants(), "broken", "is Degraded", |t| phase(t).as_deref() == Some("Degraded")).await;

    // SIGTERM: reconciles in flight finish, their spans are flushed, the process exits.
    let log_path = operator.log.clone();
    operator.terminate().await;

    // Every reconcile the operator finished, with its trace id, from its JSON log.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let finished: Vec<(String, String)> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "reconcile finished")
        .filter_map(|entry| {
            let span = &entry["span"];
            Some((span["tenant"].as_str()?.to_owned(), span["trace_id"].as_str()?.to_owned()))
        })
        .collect();
    assert!(finished.len() >= 4, "reconciles of both tenants were logged: {finished:?}");

    let mut traces = BTreeMap::new();
    for (tenant, trace_id) in &finished {
        let trace = poll(&format!("trace {trace_id} of {tenant} in Jaeger"), async || {
            jaeger.trace(trace_id).await.unwrap().filter(|t| root(t).is_some())
        })
        .await;
        let root = root(&trace).unwrap();
        assert_eq!(root["operationName"], "reconcile", "{}", tree(&trace));
        assert_eq!(tag(root, "tenant").and_then(Value::as_str), Some(tenant.as_str()));
        for key in ["generation", "resource_version", "trigger"] {
            assert!(tag(root, key).is_some(), "root span has {key}: {}", tree(&trace));
        }
        traces.insert(trace_id.clone(), (tenant.clone(), trace));
    }
    assert_eq!(traces.len(), finished.len(), "one trace per reconcile");
    let all = jaeger.traces(SERVICE).await.unwrap();
    let ids: BTreeSet<&str> = all.iter().filter_map(|t| t["traceID"].as_str()).collect();
    assert_eq!(ids.len(), finished.len(), "no trace besides the reconciles: {ids:?}");

    // The first reconcile of "traced" shows every step and each write.
    let (_, first) = traces.get(&finished.iter().find(|(t, _)| t == "traced").unwrap().1).unwrap();
    let names = operation_names(first);
    for step in [
        "namespace",
        "quota",
        "redis",
        "server",
        "registry",
        "network_policies",
        "auth",
        "status",
        "upgrade",
        "auth.is_registered",
        "auth.register",
        "apply Deployment traced-server",
        "update status of Tenant traced",
    ] {
        assert!(names.contains(step), "{step} in\n{}", tree(first));
    }
    // The tenant's version decision, with its reason: a new tenant's first images are starting.
    let upgrade = first["spans"].as_array().unwrap().iter().find(|s| s["operationName"] == "upgrade").unwrap();
    assert_eq!(tag(upgrade, "reason").and_then(Value::as_str), Some("Installing"), "{}", tree(first));
    assert!(tag(upgrade, "target_version").is_some(), "{}", tree(first));
    println!("first reconcile of tenant traced, as Jaeger returned it:\n{}", tree(first));
    let writes: Vec<&Value> = first["spans"].as_array().unwrap().iter().filter(|s| tag(s, "verb").is_some()).collect();
    assert!(writes.len() >= 10, "{}", tree(first));
    assert!(writes.iter().all(|w| ["kind", "name", "changed"].iter().all(|k| tag(w, k).is_some())));

    // A failing reconcile carries its error on the root and on the step that failed.
    let failing: Vec<&Value> = traces
        .values()
        .filter(|(tenant, _)| tenant == "broken")
        .map(|(_, trace)| trace)
        .filter(|trace| root(trace).and_then(|r| tag(r, "otel.status_code")).and_then(Value::as_str) == Some("ERROR"))
        .collect();
    assert!(!failing.is_empty(), "a reconcile of broken is marked as an error");
    let auth_span = failing[0]["spans"].as_array().unwrap().iter().find(|s| s["operationName"] == "auth").unwrap();
    assert_eq!(tag(auth_span, "otel.status_code").and_then(Value::as_str), Some("ERROR"));

    // From the object to its trace: the Warning event names a trace Jaeger has.
    let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap();
    let warning = events
        .items
        .iter()
        .find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                && e.type_.as_deref() == Some("Warning")
        })
        .and_then(|e| e.note.clone())
        .expect("a Warning event about broken");
    let event_trace =
        warning.rsplit_once("(trace ").and_then(|(_, rest)| rest.strip_suffix(')')).expect("trace id in the note");
    assert!(jaeger.trace(event_trace).await.unwrap().is_some(), "{warning}");

    // Auth requests joined the reconcile's trace.
    let joined = auth
        .traceparents()
        .iter()
        .filter_map(|tp| tp.split('-').nth(1).map(String::from))
        .filter(|id| traces.contains_key(id))
        .count();
    assert!(joined > 0, "traceparent of the Auth requests: {:?}", auth.traceparents());
}

/// Traces reach a collector behind TLS with a private CA, over gRPC and HTTP, with the traces
/// variables winning over the general ones and an API-key header that never reaches the log; with
/// the wrong CA the failure is reported once, with its cause.
#[tokio::test(flavor = "multi_thread")]
async fn traces_reach_a_collector_behind_tls_and_a_wrong_ca_is_reported_once() {
    let pki = testenv::Pki::new().unwrap();
    let jaeger = Jaeger::start_with_tls(Some(&pki.loopback_server("jaeger").unwrap())).await.expect("jaeger starts");
    let h = Harness::start(Controllers::None).await;
    let ca = h.plane.dir().join("collector-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let other_ca = h.plane.dir().join("other-ca.pem");
    std::fs::write(&other_ca, testenv::Pki::new().unwrap().ca_pem).unwrap();
    const API_KEY: &str = "api-key-that-must-not-be-logged";
    let headers = format!("x-api-key={API_KEY}");
    let http_traces = format!("{}/v1/traces", jaeger.otlp_http_endpoint());
    let grpc = jaeger.otlp_grpc_endpoint();

    // Each run: its name, the exporter variables, and whether its traces reach Jaeger.
    type Run<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);
    let runs: [Run; 3] = [
        (
            "grpc",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:1"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &grpc),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca.to_str().unwrap()),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", other_ca.to_str().unwrap()),
                ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
                ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ],
            true,
        ),
        (
            "http",
            vec![
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &http_traces),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &headers),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ],
            true,
        ),
        (
            "wrong-ca",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &grpc),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", other_ca.to_str().unwrap()),
                ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
            ],
            false,
        ),
    ];
    for (run, vars, reaches) in runs {
        let service = format!("tls-{run}");
        let mut env = vars.clone();
        env.extend([
            ("OTEL_SERVICE_NAME", service.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("RUST_LOG", "info,kube=warn,neurallog_tenant_operator::telemetry=debug"),
        ]);
        let operator = OperatorProcess::start(&h, &format!("operator-{run}"), h.plane.operator_kubeconfig(), &[], &env);
        h.create_tenant(TestTenant::new(&service).manifest()).await.unwrap();
        wait_for(&h.tenants(), &service, "is provisioned", |t| {
            t.status.as_ref().and_then(|s| s.observed_generation).is_some()
        })
        .await;
        if reaches {
            poll(&format!("{run}: a reconcile's trace in Jaeger"), async || {
                let traces = jaeger.traces(&service).await.unwrap();
                traces.iter().any(|t| root(t).is_some_and(|r| r["operationName"] == "reconcile")).then_some(())
            })
            .await;
        } else {
            // Batch after batch fails (each poll makes a reconcile, whose spans are the next
            // batch) until one of them has been reported again at debug level.
            let log = operator.log.clone();
            let mut round = 0;
            poll(&format!("{run}: several batches fail"), async || {
                round += 1;
                let touch = json!({"metadata": {"annotations": {"round": round.to_string()}}});
                h.tenants().patch(&service, &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
                std::fs::read_to_string(&log).unwrap().contains("trace export still failing").then_some(())
            })
            .await;
        }
        let log_path = operator.log.clone();
        operator.terminate().await;
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(!log.contains(API_KEY), "{run}: the API key is never logged:\n{log}");
        let reports: Vec<&str> = log.lines().filter(|l| l.contains("cannot export traces")).collect();
        if reaches {
            assert!(reports.is_empty(), "{run}: {reports:?}");
        } else {
            assert_eq!(reports.len(), 1, "{run}: reported once:\n{log}");
            assert!(reports[0].contains("ERROR"), "{}", reports[0]);
            assert!(reports[0].to_lowercase().contains("certificate"), "the cause is named: {}", reports[0]);
            assert!(jaeger.traces(&service).await.unwrap().is_empty(), "{run}: nothing reached Jaeger");
            println!("{run}: {}", reports[0]);
        }
    }
}
