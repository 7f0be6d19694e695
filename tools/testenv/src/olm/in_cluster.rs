//! OLM in a [`RealNode`]'s cluster, as OperatorHub's clusters run it: `olm` and `catalog` as
//! Deployments in [`NAMESPACE`] under a ServiceAccount bound to OLM's ClusterRole, from OLM's image
//! (`make images` builds it from the pinned module; it is also the catalog operator's util image),
//! with the opm image for the bundle unpack jobs.
//!
//! Why pods and not host processes, as on KWOK: the catalog operator dials a catalog pod by its
//! Service's DNS name (`<source>.<namespace>.svc:50051`), which only cluster DNS resolves, and what
//! is proven here is OLM's own path (its catalog pods, its unpack jobs, its Deployment of the
//! operator) on a kubelet. OLM's packageserver (the `packages.operators.coreos.com` API a console
//! lists packages from) is not installed: no step of an install or an upgrade goes through it.

use std::time::Duration;

use serde_json::{Value, json};

use super::{NAMESPACE, install_crds_and_namespace};
use crate::node::RealNode;
use crate::tool_dir;

const SERVICE_ACCOUNT: &str = "olm-operator-serviceaccount";
const CLUSTER_ROLE: &str = "system:controller:operator-lifecycle-manager";
/// Both operators' health and metrics port, as upstream's manifests give it.
const HEALTH_PORT: u16 = 8080;

/// What the cluster's OLM runs and how often it acts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// OLM's image (`olm`, `catalog`, `cpb`): the operators' and the unpack job's util image.
    pub olm_image: String,
    /// The opm image the unpack job extracts a bundle with.
    pub opm_image: String,
    /// How often `olm` re-checks every CSV (`--interval`; upstream's default is 5 minutes).
    pub wakeup: Duration,
    /// How long `catalog` retries an InstallPlan's failing steps (`--install-plan-retry-timeout`).
    pub install_plan_retry: Duration,
}

/// Creates OLM's CRDs and namespace, applies its RBAC and Deployments, and waits until both
/// operators are rolled out.
pub async fn install(node: &RealNode, settings: &Settings) -> anyhow::Result<()> {
    let bin = tool_dir("olm", "TESTENV_OLM_BIN")?;
    install_crds_and_namespace(&node.admin_client().await?, &bin).await?;
    for object in manifests(settings) {
        node.apply_json(&object)?;
    }
    for name in ["olm-operator", "catalog-operator"] {
        node.wait_rollout(NAMESPACE, &format!("deployment/{name}"))?;
    }
    Ok(())
}

/// OLM's ClusterRole (every verb on everything, as upstream's), its ServiceAccount and binding, and
/// the two Deployments.
pub fn manifests(settings: &Settings) -> Vec<Value> {
    let seconds = |duration: Duration| format!("{}s", duration.as_secs());
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"],
             "verbs": ["watch", "list", "get", "create", "update", "patch", "delete", "deletecollection", "escalate", "bind"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ]}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("olm-operator-binding-{NAMESPACE}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]}),
        deployment(
            "olm-operator",
            "/bin/olm",
            &["--namespace", "$(OPERATOR_NAMESPACE)", "--interval", &seconds(settings.wakeup)],
            &settings.olm_image,
        ),
        deployment(
            "catalog-operator",
            "/bin/catalog",
            &[
                "--namespace",
                NAMESPACE,
                "--util-image",
                &settings.olm_image,
                "--opmImage",
                &settings.opm_image,
                "--set-workload-user-id=true",
                "--install-plan-retry-timeout",
                &seconds(settings.install_plan_retry),
            ],
            &settings.olm_image,
        ),
    ]
}

/// One of OLM's operators as upstream's manifests deploy it: non-root, read-only root with a
/// writable /tmp, no capabilities, health on [`HEALTH_PORT`].
fn deployment(name: &str, command: &str, args: &[&str], image: &str) -> Value {
    let labels = json!({"app": name});
    let probe = json!({"httpGet": {"path": "/healthz", "port": HEALTH_PORT}});
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "volumes": [{"name": "tmpfs", "emptyDir": {}}],
                    "containers": [{
                        "name": name,
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [command],
                        "args": args,
                        "env": [
                            {"name": "OPERATOR_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "OPERATOR_NAME", "value": name},
                        ],
                        "ports": [{"name": "metrics", "containerPort": HEALTH_PORT}],
                        "livenessProbe": probe,
                        "readinessProbe": probe,
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "tmpfs", "mountPath": "/tmp"}],
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                    }],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            olm_image: "reg/olm@sha256:1".into(),
            opm_image: "reg/opm@sha256:2".into(),
            wakeup: Duration::from_secs(10),
            install_plan_retry: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_catalog_operator_unpacks_with_the_images_given() {
        let objects = manifests(&settings());
        let catalog = objects
            .iter()
            .find(|object| object["metadata"]["name"] == "catalog-operator")
            .expect("a catalog-operator Deployment");
        let container = &catalog["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for pair in [["--util-image", "reg/olm@sha256:1"], ["--opmImage", "reg/opm@sha256:2"]] {
            assert!(args.windows(2).any(|window| window == pair), "{pair:?} missing from {args:?}");
        }
        assert_eq!(container["image"], "reg/olm@sha256:1");
    }

    #[test]
    fn the_operators_run_under_the_bound_service_account() {
        let objects = manifests(&settings());
        let binding = objects.iter().find(|object| object["kind"] == "ClusterRoleBinding").expect("a binding");
        assert_eq!(binding["subjects"][0]["name"], SERVICE_ACCOUNT);
        for object in objects.iter().filter(|object| object["kind"] == "Deployment") {
            assert_eq!(object["spec"]["template"]["spec"]["serviceAccountName"], SERVICE_ACCOUNT);
        }
    }
}
