//! The configuration files of a real node's components, as pure functions of where they live:
//! containerd's, the CNI network's, kubelet's and kube-proxy's. Each names only directories of the
//! node's own (no system default), so two runs never share state and teardown finds it all.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The node's address, on `lo`: kubelet refuses a loopback node IP and Endpoints reject 127/8,
/// so the API server, kubelet and the local registry bind this one, which pods reach through the
/// bridge.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// The node's name (kubelet's `--hostname-override`).
pub const NODE_NAME: &str = "testenv-node";
/// Services' addresses (kube-apiserver's `--service-cluster-ip-range`): the `kubernetes` Service
/// gets the first, cluster DNS [`CLUSTER_DNS_IP`].
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The pods' addresses: the node's whole pod CIDR, on the bridge [`BRIDGE`].
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const BRIDGE: &str = "testenv0";
pub const BRIDGE_ADDRESS: &str = "10.244.0.1/24";
/// The local OCI registry's port on [`NODE_IP`] (plain HTTP: containerd is told so).
pub const REGISTRY_PORT: u16 = 5000;
/// The same registry over HTTPS (`crate::registry::TlsRegistry`), for clients that need it.
pub const REGISTRY_TLS_PORT: u16 = 5443;
/// kube-apiserver's port on [`NODE_IP`].
pub const APISERVER_PORT: u16 = 6443;

/// Where every component of one node keeps its state, under one directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.path("cni/net.d")
    }

    /// The directory of the node's local PersistentVolumes.
    pub fn volumes(&self) -> PathBuf {
        self.path("volumes")
    }
}

/// The registry host containerd pulls from: `<node IP>:<port>`.
pub fn registry_host() -> String {
    format!("{NODE_IP}:{REGISTRY_PORT}")
}

/// containerd's configuration (version 2, containerd 1.6): its own root, state and sockets, the
/// CRI plugin with `sandbox_image`, runc with cgroupfs, CNI from the Debian plugins, and the
/// local registry over plain HTTP, as itself and as the mirror of every other registry.
pub fn containerd(layout: &Layout, sandbox_image: &str, runc: &Path, cni_bin_dir: &Path) -> String {
    let path = |relative: &str| layout.path(relative).display().to_string();
    let registry = registry_host();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
# Plugins that would write outside the node's directory, or need what this host lacks.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # The host lacks CAP_SYS_RESOURCE in its bounding set: no process may lower oom_score_adj, so
  # containerd must not ask it for the sandbox.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
  # Any other registry's images come from the local one too, under the same repository: an image
  # named as a CSV or a catalog names it, with no registry or another, is the one pushed here.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://{registry}"]
"#,
        root = path("containerd/root"),
        state = path("containerd/state"),
        socket = layout.containerd_socket().display(),
        runc = runc.display(),
        runc_root = path("containerd/runc"),
        cni_bin = cni_bin_dir.display(),
        cni_conf = layout.cni_conf_dir().display(),
    )
}

/// The pod network: one bridge with the node's pod CIDR, addresses from host-local IPAM kept in
/// the node's directory. No masquerading and no port mapping: nothing leaves the machine, and
/// neither leaves iptables chains behind.
pub fn cni_network(layout: &Layout) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "testenv",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": layout.path("cni/ipam").display().to_string(),
                "ranges": [[{"subnet": POD_CIDR}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    })
    .to_string()
}

/// Paths kubelet is given: its certificates and kubeconfig.
pub struct KubeletFiles<'a> {
    pub client_ca: &'a Path,
    pub serving_cert: &'a Path,
    pub serving_key: &'a Path,
    pub resolv_conf: &'a Path,
}

/// kubelet's KubeletConfiguration: cgroupfs on cgroup v1, x509 and webhook authentication, and the
/// settings this host needs (no lowering of oom_score_adj, a low open-files limit, no swap check,
/// low eviction thresholds on a shared disk, no image garbage collection of the test images).
pub fn kubelet(layout: &Layout, files: &KubeletFiles<'_>) -> String {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP.to_string(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "cgroupDriver": "cgroupfs",
        "failSwapOn": false,
        "failCgroupV1": false,
        "containerRuntimeEndpoint": format!("unix://{}", layout.containerd_socket().display()),
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": files.client_ca.display().to_string()},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": files.serving_cert.display().to_string(),
        "tlsPrivateKeyFile": files.serving_key.display().to_string(),
        "clusterDomain": "cluster.local",
        "clusterDNS": [CLUSTER_DNS_IP.to_string()],
        "resolvConf": files.resolv_conf.display().to_string(),
        "podLogsDir": layout.path("pod-logs").display().to_string(),
        "volumePluginDir": layout.path("volume-plugins").display().to_string(),
        "oomScoreAdj": 0,
        "maxOpenFiles": 20000,
        "makeIPTablesUtilChains": false,
        "serializeImagePulls": false,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "registerNode": true,
    })
    .to_string()
}

/// kube-proxy's KubeProxyConfiguration: iptables mode, leaving conntrack's sysctls alone,
/// NodePorts only on the node's address, and every Service connection masqueraded, so replies
/// between pods on the bridge pass back through the host without `br_netfilter`.
pub fn kube_proxy(kubeconfig: &Path) -> String {
    serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig.display().to_string()},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP.to_string(),
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": POD_CIDR,
        "mode": "iptables",
        "iptables": {"masqueradeAll": true, "localhostNodePorts": false, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "nodePortAddresses": [format!("{NODE_IP}/32")],
    })
    .to_string()
}

/// CoreDNS's Corefile: answers for `cluster.local` (Services and pods) from the API server, and
/// nothing else: no upstream is reachable here. On port 53, as clusters' DNS pods serve it:
/// NetworkPolicies see the pod's port, and egress rules that allow DNS name 53.
pub const COREFILE: &str = ".:53 {\n    errors\n    health :8080\n    ready :8181\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }\n    cache 30\n    loop\n}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_keeps_every_path_in_the_node_directory() {
        let layout = Layout::new(Path::new("/n"));
        let config = containerd(&layout, "reg/pause@sha256:0", Path::new("/usr/sbin/runc"), Path::new("/usr/lib/cni"));
        for key in ["root = \"/n/containerd/root\"", "state = \"/n/containerd/state\"", "Root = \"/n/containerd/runc\""]
        {
            assert!(config.contains(key), "{key} missing from\n{config}");
        }
        assert!(config.contains("address = \"/n/containerd/containerd.sock\""));
        assert!(config.contains("restrict_oom_score_adj = true"));
        assert!(config.contains(&format!("endpoint = [\"http://{NODE_IP}:{REGISTRY_PORT}\"]")));
        assert!(config.contains("sandbox_image = \"reg/pause@sha256:0\""));
    }

    #[test]
    fn cni_network_is_one_bridge_without_masquerading() {
        let network: serde_json::Value = serde_json::from_str(&cni_network(&Layout::new(Path::new("/n")))).unwrap();
        let plugins = network["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0]["bridge"], BRIDGE);
        assert!(plugins[0].get("ipMasq").is_none());
        assert_eq!(plugins[0]["ipam"]["dataDir"], "/n/cni/ipam");
    }

    #[test]
    fn kubelet_serves_on_the_node_address_with_authentication() {
        let files = KubeletFiles {
            client_ca: Path::new("/n/ca.crt"),
            serving_cert: Path::new("/n/kubelet.crt"),
            serving_key: Path::new("/n/kubelet.key"),
            resolv_conf: Path::new("/n/resolv.conf"),
        };
        let config: serde_json::Value = serde_json::from_str(&kubelet(&Layout::new(Path::new("/n")), &files)).unwrap();
        assert_eq!(config["address"], NODE_IP.to_string());
        assert_eq!(config["readOnlyPort"], 0);
        assert_eq!(config["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(config["oomScoreAdj"], 0);
        assert_eq!(config["clusterDNS"][0], CLUSTER_DNS_IP.to_string());
    }
}
