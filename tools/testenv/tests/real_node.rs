//! The real node: pods from the local registry really run (probes, volumes, logs), and the host is
//! left exactly as it was found.
//!
//! In a module whose name ends in `_node`: `make test` runs those in the lane that owns the
//! machine's one real node.

mod on_the_node {
    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    use testenv::node::{HostState, NodeOptions, RealNode};

    const DEADLINE: Duration = Duration::from_secs(120);

    #[tokio::test(flavor = "multi_thread")]
    async fn a_real_node_runs_pods_from_its_registry_and_leaves_the_host_as_found() -> anyhow::Result<()> {
        let before = HostState::read()?;
        let started = Instant::now();
        // With the enforcer: its iptables chains, ipsets and kernel setting must go too.
        let node =
            RealNode::start(NodeOptions { volumes: 1, network_policies: true, ..NodeOptions::default() }).await?;
        let up = started.elapsed();
        let image = node.push_image("registry")?;
        assert!(image.contains("@sha256:"), "pushed by digest: {image}");

        let client = node.admin_client().await?;
        let pods = Api::<Pod>::namespaced(client, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 1000},
                "containers": [{
                    "name": "registry",
                    "image": image,
                    "env": [{"name": "PORT", "value": "3031"}, {"name": "TENANT_ID", "value": "node-test"}],
                    "ports": [{"name": "http", "containerPort": 3031}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
                    "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                }],
            },
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let pod = pods.get("probe").await?;
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the pod is not Ready after {DEADLINE:?}: {:?}", pod.status);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logs = node.kubectl_command(&["logs", "probe"]).output()?;
        anyhow::ensure!(logs.status.success(), "kubectl logs failed: {}", String::from_utf8_lossy(&logs.stderr));
        let stopping = Instant::now();
        drop(node);
        eprintln!("node up in {:.1}s, down in {:.1}s", up.as_secs_f64(), stopping.elapsed().as_secs_f64());

        let after = HostState::read()?;
        pretty_assert(&before, &after);
        Ok(())
    }

    fn pretty_assert(before: &HostState, after: &HostState) {
        if before != after {
            panic!("the host changed:\nbefore: {before:#?}\nafter: {after:#?}");
        }
    }
}
