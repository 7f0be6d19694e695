//! The cluster add-ons a real node runs as pods, as pure manifests: cluster DNS (CoreDNS) and,
//! when asked for, a NetworkPolicy enforcer (SIG Network's kube-network-policies).

use serde_json::{Value, json};

use super::config;

/// The enforcer's nftables table; teardown removes it when the enforcer had no time to.
pub const NETWORK_POLICY_TABLE: &str = "kube-network-policies";

/// CoreDNS's ServiceAccount, RBAC, Corefile, Deployment and Service (at the address kubelet
/// gives pods), non-root and with a read-only root filesystem.
pub fn cluster_dns(image: &str) -> Vec<Value> {
    let labels = json!({"k8s-app": "kube-dns"});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": config::COREFILE}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "coredns",
                    "dnsPolicy": "Default",
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "coredns",
                        "image": image,
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": 1053, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 1053, "protocol": "TCP"},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
                        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                },
            },
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "clusterIP": config::CLUSTER_DNS_IP.to_string(),
            "selector": labels,
            "ports": [
                {"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"},
            ],
        }}),
    ]
}

/// kube-network-policies as upstream's manifest deploys it: a DaemonSet on the host's network,
/// privileged (it programs the host's nftables and answers an nfqueue), allowed to list and watch
/// pods, namespaces and NetworkPolicies. NRI is off: containerd 1.6 has none, and pod addresses
/// come from the API.
pub fn network_policy_enforcer(image: &str) -> Vec<Value> {
    let name = NETWORK_POLICY_TABLE;
    let labels = json!({"app": name});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "kube-system"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}]}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "hostNetwork": true,
                        "serviceAccountName": name,
                        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [{
                            "name": name,
                            "image": image,
                            "args": ["--hostname-override=$(NODE_NAME)", "--disable-nri", "--nfqueue-id=98", "--v=2"],
                            "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                            "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}},
                        }],
                    },
                },
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enforcer_runs_privileged_on_the_hosts_network_for_this_node() {
        let manifests = network_policy_enforcer("reg/netpol@sha256:1");
        let daemon_set = manifests.iter().find(|m| m["kind"] == "DaemonSet").expect("a DaemonSet");
        let spec = &daemon_set["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["containers"][0]["securityContext"]["privileged"], true);
        assert_eq!(spec["containers"][0]["image"], "reg/netpol@sha256:1");
        let args = spec["containers"][0]["args"].to_string();
        assert!(args.contains("--disable-nri"), "{args}");
    }

    #[test]
    fn cluster_dns_serves_at_the_address_kubelet_gives_pods() {
        let manifests = cluster_dns("reg/coredns@sha256:1");
        let service = manifests.iter().find(|m| m["kind"] == "Service").expect("a Service");
        assert_eq!(service["spec"]["clusterIP"], config::CLUSTER_DNS_IP.to_string());
    }
}
