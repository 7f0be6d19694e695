//! The ServiceMonitor and PrometheusRule the operator puts in place, on the real API server with
//! the RBAC of `config/default` and the Prometheus Operator's own CRDs (from its module at the
//! pinned version, `tools/build.sh prometheus-operator`), whose schemas validate what is sent:
//! none while the CRDs are absent; once they exist, both in the operator's namespace, owned by the
//! metrics Service; a later start that finds them as wanted writes nothing.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use crate::support::{Harness, OperatorProcess, poll};

const NAMESPACE: &str = "neurallog-system";
const NAME: &str = "neurallog-tenant-operator";

fn api(h: &Harness, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind));
    Api::namespaced_with(h.admin.clone(), NAMESPACE, &resource)
}

fn start(h: &Harness, name: &str) -> OperatorProcess {
    let kubeconfig = h.service_account_kubeconfig();
    let env =
        [("POD_NAMESPACE", NAMESPACE), ("RUST_LOG", "info,neurallog_tenant_operator::controller::monitoring=debug")];
    OperatorProcess::start(h, name, &kubeconfig, &[], &env)
}

async fn logged(process: &OperatorProcess, what: &str) {
    poll(&format!("{} to log {what:?}", process.name), async || {
        std::fs::read_to_string(&process.log).ok()?.contains(what).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_monitor_and_rules_are_applied_only_where_their_crds_are_served() {
    let mut h = Harness::bare(&[]).await;
    h.install_default_config().await;

    let before = start(&h, "before-crds");
    logged(&before, "no Prometheus Operator CRDs").await;
    before.terminate().await;

    let crds = testenv::prometheus::operator_crds().expect("the Prometheus Operator's CRDs");
    for kind in ["servicemonitors", "prometheusrules"] {
        let file = crds.join(format!("monitoring.coreos.com_{kind}.yaml"));
        h.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()], None);
        h.kubectl(&["wait", "--for=condition=Established", &format!("crd/{kind}.monitoring.coreos.com")], None);
    }

    let applying = start(&h, "with-crds");
    let (monitors, rules) = (api(&h, "ServiceMonitor"), api(&h, "PrometheusRule"));
    let monitor = poll("the ServiceMonitor", async || monitors.get_opt(NAME).await.ok().flatten()).await;
    let rule = poll("the PrometheusRule", async || rules.get_opt(NAME).await.ok().flatten()).await;
    logged(&applying, "monitoring objects applied").await;
    applying.terminate().await;
    for object in [&monitor, &rule] {
        let owners = object.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owners.iter().any(|o| o.kind == "Service" && o.name == "neurallog-tenant-operator-metrics"),
            "owned by the metrics Service: {owners:?}"
        );
    }
    let endpoint = &monitor.data["spec"]["endpoints"][0];
    assert_eq!((endpoint["port"].as_str(), endpoint["scheme"].as_str()), (Some("metrics"), Some("https")));
    let alerts = rule.data["spec"]["groups"][0]["rules"].as_array().map_or(0, Vec::len);
    assert_eq!(alerts, neurallog_tenant_operator::monitoring::alerts::ALERTS.len());

    let again = start(&h, "again");
    logged(&again, "monitoring objects in place").await;
    again.terminate().await;
    let unchanged = |before: &DynamicObject, after: Option<DynamicObject>| {
        after.and_then(|a| a.metadata.resource_version) == before.metadata.resource_version
    };
    assert!(unchanged(&monitor, monitors.get_opt(NAME).await.unwrap()), "the ServiceMonitor was written again");
    assert!(unchanged(&rule, rules.get_opt(NAME).await.unwrap()), "the PrometheusRule was written again");
}
