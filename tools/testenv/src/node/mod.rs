//! A real single-node cluster on this machine, where pods really run: the pinned kube-apiserver,
//! etcd, kube-controller-manager and kube-scheduler, plus kubelet and kube-proxy from the same
//! pinned module, Debian's containerd, runc and CNI plugins, cluster DNS (CoreDNS, from its own
//! image) and a local OCI registry on the node's address that containerd pulls from; when asked
//! for, kube-router's NetworkPolicy controller enforces NetworkPolicies.
//!
//! One node per machine at a time (fixed ports, global iptables chains, `kubepods` cgroups): a
//! file lock serialises them across processes. Everything lives in one directory; what the node
//! changes outside it ([`host`]) is saved first and put back when the [`RealNode`] drops, which a
//! test checks with [`HostState`].

mod addons;
pub mod config;
mod host;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::KeyPair;

pub use host::HostState;

use self::config::{APISERVER_PORT, KUBERNETES_SERVICE_IP, Layout, NODE_IP, NODE_NAME, SERVICE_CIDR};
use self::host::Host;
use crate::control_plane::kubeconfig_yaml;
use crate::images::Images;
use crate::pki::Pki;
use crate::registry::{Registry, which};
use crate::{free_port, keep_if_panicking, log_tail, spawn, tool_dir};

/// How long the node may take to become Ready, its DNS included.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long stopped pods may take to give their network back before teardown goes on without.
const SANDBOX_TEARDOWN: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Local PersistentVolumes to offer (a default StorageClass binds claims to them).
    pub volumes: usize,
    /// Working directory to use instead of a fresh temporary one: emptied first, kept afterwards.
    pub dir: Option<PathBuf>,
    /// Whether NetworkPolicies are enforced (by kube-router's NetworkPolicy controller); without
    /// it they are stored and ignored, as on a cluster whose network plugin has no policy support.
    pub network_policies: bool,
}

/// A running node; dropping it stops everything and restores the host.
pub struct RealNode {
    /// Processes in start order; stopped in reverse.
    processes: Vec<(String, Child)>,
    registry: Option<Registry>,
    host: Option<Host>,
    layout: Layout,
    _temp: Option<tempfile::TempDir>,
    admin_kubeconfig: PathBuf,
    kubectl: PathBuf,
    images: Images,
    /// Held while the node lives: one node per machine.
    _lock: fs::File,
}

/// The controllers, stopped first at teardown so that nothing re-creates the pods being stopped.
const CONTROLLERS: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

impl RealNode {
    /// Starts the node and returns once it is Ready and untainted, has its default ServiceAccount,
    /// volumes and StorageClass, and cluster DNS is rolled out.
    pub async fn start(options: NodeOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        let lock = lock_machine()?;
        let images = Images::built()?;
        let kube_bin = tool_dir("kubernetes", "TESTENV_KUBERNETES_BIN")?;
        let etcd_bin = tool_dir("etcd", "TESTENV_ETCD_BIN")?;
        let (temp, root) = match &options.dir {
            Some(dir) => {
                // A node never starts on an earlier one's state (its etcd, volumes and sandboxes).
                host::remove_tree(dir)?;
                fs::create_dir_all(dir)?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new().prefix("testenv-node-").tempdir()?;
                let root = temp.path().to_owned();
                (Some(temp), root)
            }
        };
        let layout = Layout::new(&root);
        let mut node = Self {
            processes: Vec::new(),
            registry: None,
            host: None,
            layout: layout.clone(),
            _temp: temp,
            admin_kubeconfig: root.join("admin.kubeconfig"),
            kubectl: kube_bin.join("kubectl"),
            images,
            _lock: lock,
        };
        node.host = Some(Host::prepare()?);
        node.registry = Some(Registry::start(&root, &registry_storage(&root)).await?);
        node.start_control_plane(&kube_bin, &etcd_bin).await?;
        node.start_runtime(&kube_bin).await?;
        node.wait_ready(options.volumes).await?;
        if options.network_policies {
            node.start_network_policies().await?;
        }
        eprintln!("testenv: node {NODE_NAME} Ready in {:.1}s ({})", started.elapsed().as_secs_f64(), root.display());
        Ok(node)
    }

    fn spawn(&mut self, name: &str, program: &Path, args: Vec<String>) -> anyhow::Result<()> {
        let child = spawn(name, program, &args, &self.layout.root)?;
        self.processes.push((name.to_owned(), child));
        Ok(())
    }

    async fn start_control_plane(&mut self, kube_bin: &Path, etcd_bin: &Path) -> anyhow::Result<()> {
        let root = self.layout.root.clone();
        let path = |name: &str| root.join(name).display().to_string();
        let write = |name: &str, content: &str| -> anyhow::Result<String> {
            fs::write(root.join(name), content)?;
            Ok(path(name))
        };
        let pki = Pki::new()?;
        let ca = write("ca.crt", &pki.ca_pem)?;
        let serving = pki.issue(
            "kube-apiserver",
            None,
            vec![
                NODE_IP.to_string(),
                KUBERNETES_SERVICE_IP.to_string(),
                "127.0.0.1".into(),
                "localhost".into(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                "kubernetes.default.svc.cluster.local".into(),
            ],
            true,
        )?;
        write("apiserver.crt", &serving.cert_pem)?;
        write("apiserver.key", &serving.key_pem)?;
        let kubelet_client = pki.issue("kube-apiserver-kubelet-client", Some("system:masters"), vec![], false)?;
        write("apiserver-kubelet-client.crt", &kubelet_client.cert_pem)?;
        write("apiserver-kubelet-client.key", &kubelet_client.key_pem)?;
        let kubelet_serving = pki.issue(NODE_NAME, None, vec![NODE_IP.to_string(), NODE_NAME.into()], true)?;
        write("kubelet.crt", &kubelet_serving.cert_pem)?;
        write("kubelet.key", &kubelet_serving.key_pem)?;
        let sa_key = KeyPair::generate()?;
        write("service-account.key", &sa_key.serialize_pem())?;
        write("service-account.pub", &sa_key.public_key_pem())?;

        let server = format!("https://{NODE_IP}:{APISERVER_PORT}");
        let kubeconfig = |name: &str, user: &str, group: Option<&str>| -> anyhow::Result<String> {
            let creds = pki.issue(user, group, vec![], false)?;
            write(name, &kubeconfig_yaml(&server, &pki.ca_pem, user, &creds))
        };
        kubeconfig("admin.kubeconfig", "testenv-admin", Some("system:masters"))?;
        kubeconfig("kubelet.kubeconfig", &format!("system:node:{NODE_NAME}"), Some("system:nodes"))?;
        kubeconfig("kube-proxy.kubeconfig", "system:kube-proxy", None)?;
        let kcm_kubeconfig = kubeconfig("controller-manager.kubeconfig", "system:kube-controller-manager", None)?;
        let scheduler_kubeconfig = kubeconfig("scheduler.kubeconfig", "system:kube-scheduler", None)?;

        let (etcd_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        self.spawn(
            "etcd",
            &etcd_bin.join("etcd"),
            vec![
                "--name=testenv-node".into(),
                format!("--data-dir={}", path("etcd")),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testenv-node={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;
        self.spawn(
            "kube-apiserver",
            &kube_bin.join("kube-apiserver"),
            vec![
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={NODE_IP}"),
                format!("--advertise-address={NODE_IP}"),
                format!("--secure-port={APISERVER_PORT}"),
                format!("--cert-dir={}", path("certs")),
                format!("--tls-cert-file={}", path("apiserver.crt")),
                format!("--tls-private-key-file={}", path("apiserver.key")),
                format!("--client-ca-file={ca}"),
                "--authorization-mode=Node,RBAC".into(),
                "--anonymous-auth=false".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", path("service-account.pub")),
                format!("--service-account-signing-key-file={}", path("service-account.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=false".into(),
                format!("--kubelet-client-certificate={}", path("apiserver-kubelet-client.crt")),
                format!("--kubelet-client-key={}", path("apiserver-kubelet-client.key")),
                format!("--kubelet-certificate-authority={ca}"),
                // kubelet's serving certificate names its address; there is no DNS for the node.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ],
        )?;
        self.wait_apiserver().await?;
        self.spawn(
            "kube-controller-manager",
            &kube_bin.join("kube-controller-manager"),
            vec![
                format!("--kubeconfig={kcm_kubeconfig}"),
                format!("--authentication-kubeconfig={kcm_kubeconfig}"),
                format!("--authorization-kubeconfig={kcm_kubeconfig}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--service-account-private-key-file={}", path("service-account.key")),
                format!("--root-ca-file={ca}"),
                "--use-service-account-credentials=true".into(),
                format!("--flex-volume-plugin-dir={}", path("volume-plugins")),
                // Pods deleted by their controllers go at once, not after a minute.
                "--terminated-pod-gc-threshold=10".into(),
            ],
        )?;
        self.spawn(
            "kube-scheduler",
            &kube_bin.join("kube-scheduler"),
            vec![
                format!("--kubeconfig={scheduler_kubeconfig}"),
                format!("--authentication-kubeconfig={scheduler_kubeconfig}"),
                format!("--authorization-kubeconfig={scheduler_kubeconfig}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
            ],
        )?;
        Ok(())
    }

    async fn wait_apiserver(&mut self) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_processes()?;
            let request = http::Request::get("/readyz").body(Vec::new())?;
            if client.request_text(request).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kube-apiserver not ready after {READY_TIMEOUT:?}; logs in {}", self.layout.root.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails with the end of its log when a process of the node exited.
    fn check_processes(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.processes {
            if let Some(status) = child.try_wait()? {
                let tail = log_tail(&self.layout.root.join(format!("{name}.log")), 20);
                bail!("{name} exited with {status}; the end of its log:\n{tail}");
            }
        }
        Ok(())
    }

    fn registry(&self) -> anyhow::Result<&Registry> {
        self.registry.as_ref().context("the node's registry is not running")
    }

    /// containerd, then kubelet and kube-proxy.
    async fn start_runtime(&mut self, kube_bin: &Path) -> anyhow::Result<()> {
        let layout = self.layout.clone();
        let pause = self.push_image("pause")?;
        for dir in ["containerd", "cni/net.d", "cni/ipam", "pod-logs", "volume-plugins", "kubelet", "volumes"] {
            fs::create_dir_all(layout.path(dir))?;
        }
        let cni_bin = Path::new("/usr/lib/cni");
        if !cni_bin.join("bridge").is_file() {
            bail!("the CNI plugins are not installed (tools/packages.sh installs them)");
        }
        fs::write(
            layout.path("containerd/config.toml"),
            config::containerd(&layout, &pause, &which("runc")?, cni_bin),
        )?;
        fs::write(layout.cni_conf_dir().join("10-testenv.conflist"), config::cni_network(&layout))?;
        self.spawn(
            "containerd",
            &which("containerd")?,
            vec!["--config".into(), layout.path("containerd/config.toml").display().to_string()],
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !layout.containerd_socket().exists() {
            self.check_processes()?;
            if Instant::now() > deadline {
                bail!("containerd did not open its socket within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Pods resolve through cluster DNS; kubelet's own resolver file only feeds `dnsPolicy:
        // Default` pods, and nothing upstream is reachable.
        fs::write(layout.path("resolv.conf"), "nameserver 127.0.0.1\n")?;
        let client_ca = layout.path("ca.crt");
        let (serving_cert, serving_key, resolv_conf) =
            (layout.path("kubelet.crt"), layout.path("kubelet.key"), layout.path("resolv.conf"));
        let files = config::KubeletFiles {
            client_ca: &client_ca,
            serving_cert: &serving_cert,
            serving_key: &serving_key,
            resolv_conf: &resolv_conf,
        };
        fs::write(layout.path("kubelet.yaml"), config::kubelet(&layout, &files))?;
        self.spawn(
            "kubelet",
            &kube_bin.join("kubelet"),
            vec![
                format!("--config={}", layout.path("kubelet.yaml").display()),
                format!("--kubeconfig={}", layout.path("kubelet.kubeconfig").display()),
                format!("--root-dir={}", layout.path("kubelet").display()),
                format!("--cert-dir={}", layout.path("kubelet/pki").display()),
                format!("--node-ip={NODE_IP}"),
                format!("--hostname-override={NODE_NAME}"),
                "--v=1".into(),
            ],
        )?;
        fs::write(layout.path("kube-proxy.yaml"), config::kube_proxy(&layout.path("kube-proxy.kubeconfig")))?;
        self.spawn(
            "kube-proxy",
            &kube_bin.join("kube-proxy"),
            vec![format!("--config={}", layout.path("kube-proxy.yaml").display())],
        )?;
        Ok(())
    }

    /// Waits for the node, then installs what a cluster has from its start: the default
    /// StorageClass and its volumes, cluster DNS.
    async fn wait_ready(&mut self, volumes: usize) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        let nodes = Api::<Node>::all(client.clone());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_processes()?;
            let node = nodes.get_opt(NODE_NAME).await?;
            let ready = node
                .as_ref()
                .and_then(|n| n.status.as_ref()?.conditions.as_ref())
                .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let untainted = node.as_ref().and_then(|n| n.spec.as_ref()?.taints.as_ref()).is_none_or(Vec::is_empty);
            let default_account =
                Api::<ServiceAccount>::namespaced(client.clone(), "default").get_opt("default").await?.is_some();
            if ready && untainted && default_account {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {NODE_NAME} not Ready after {READY_TIMEOUT:?}; logs in {}", self.layout.root.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.add_volumes(&client, volumes).await?;
        self.start_cluster_dns().await
    }

    async fn add_volumes(&self, client: &Client, count: usize) -> anyhow::Result<()> {
        let class = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        });
        self.apply_json(&class)?;
        let pvs = Api::<PersistentVolume>::all(client.clone());
        for index in 0..count {
            let name = format!("testenv-volume-{index}");
            let path = self.layout.volumes().join(&name);
            fs::create_dir_all(&path)?;
            let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "local",
                    "local": {"path": path.display().to_string()},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]},
                    ]}]}},
                },
            }))?;
            pvs.create(&PostParams::default(), &volume).await.with_context(|| format!("cannot create {name}"))?;
        }
        Ok(())
    }

    /// CoreDNS in `kube-system`, behind the Service kubelet gives pods as their resolver.
    async fn start_cluster_dns(&mut self) -> anyhow::Result<()> {
        let image = self.push_image("coredns")?;
        let manifests = addons::cluster_dns(&image);
        for manifest in &manifests {
            self.apply_json(manifest)?;
        }
        self.wait_rollout("kube-system", "deployment/coredns")
    }

    /// kube-router with only its NetworkPolicy controller, on the host as kube-proxy runs (iptables
    /// and ipsets; the host's state saves and restores both), with bridged traffic passing
    /// iptables. Ready once it has programmed its chains.
    async fn start_network_policies(&mut self) -> anyhow::Result<()> {
        let bin = tool_dir("kube-router", "TESTENV_KUBE_ROUTER_BIN")?;
        host::enable(host::BRIDGE_NETFILTER)?;
        let kubeconfig = self.admin_kubeconfig.display().to_string();
        self.spawn(
            "kube-router",
            &bin.join("kube-router"),
            vec![
                format!("--kubeconfig={kubeconfig}"),
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                "--run-loadbalancer=false".into(),
                format!("--hostname-override={NODE_NAME}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--enable-ipv6=false".into(),
                // Nothing but the test reaches it: no health or metrics server.
                "--health-port=0".into(),
                "--metrics-port=0".into(),
                "--v=2".into(),
            ],
        )?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_processes()?;
            let chain = Command::new("iptables").args(["-S", "KUBE-ROUTER-FORWARD"]).output()?;
            if chain.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kube-router programmed no chain within {READY_TIMEOUT:?}; its log is kube-router.log");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Pushes the image built as `name` into the node's registry; the name pods use for it.
    pub fn push_image(&self, name: &str) -> anyhow::Result<String> {
        let image = self.images.get(name)?;
        self.push_reference(&image.reference)
    }

    /// Pushes the image built as `name` into the node's registry as `repository` (`<name>:<tag>`),
    /// so that pods naming that image, from any registry, run it; the name pods use for it.
    pub fn push_image_as(&self, name: &str, repository: &str) -> anyhow::Result<String> {
        let image = self.images.get(name)?;
        self.registry()?.push_as(&image.reference, repository)
    }

    /// The node's registry served over HTTPS as well, as long as the value lives.
    pub async fn registry_over_tls(&self) -> anyhow::Result<crate::registry::TlsRegistry> {
        crate::registry::TlsRegistry::start(&self.dir().join("registry-tls"), &registry_storage(self.dir())).await
    }

    /// Pushes an image of podman's storage, by reference, into the node's registry under the same
    /// repository and tag (`localhost/` dropped); the name pods use for it, by digest.
    pub fn push_reference(&self, reference: &str) -> anyhow::Result<String> {
        self.registry()?.push(reference)
    }

    /// The images the node was started with.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// `kubectl apply --server-side` of one object.
    pub fn apply_json(&self, object: &serde_json::Value) -> anyhow::Result<()> {
        let mut child = self
            .kubectl_command(&["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        use std::io::Write as _;
        child.stdin.take().context("no stdin")?.write_all(object.to_string().as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("kubectl apply failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(())
    }

    /// Installs the operator as `README.md` says without OLM: `config/crd`, then `config/default`
    /// through an overlay that names `image` (by digest, as [`push_image`](Self::push_image) gives
    /// it) and adds `env` to the operator's container. The overlay is in the node's directory.
    pub fn install_operator(&self, image: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let root = crate::repo_root();
        let overlay = self.dir().join("install");
        fs::create_dir_all(&overlay)?;
        let (name, digest) = image.split_once('@').context("the operator image is not named by digest")?;
        // The backup and restore pods run the operator's image too: the variable naming it is
        // merged by name (a strategic merge), the others added.
        let own_image = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "neurallog-tenant-operator", "namespace": "neurallog-system"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "operator", "env": [{"name": "TENANT_OPERATOR_IMAGE", "value": image}]}
            ]}}},
        });
        let mut patches = vec![serde_json::json!({"patch": serde_json::to_string(&own_image)?})];
        let mut kustomization = serde_json::json!({
            "resources": [relative(&overlay, &root.join("config/default")).display().to_string()],
            "images": [{"name": "neurallog/tenant-operator", "newName": name, "digest": digest}],
        });
        if !env.is_empty() {
            let operations: Vec<serde_json::Value> = env
                .iter()
                .map(|(name, value)| {
                    serde_json::json!({"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                        "value": {"name": name, "value": value}})
                })
                .collect();
            patches.push(serde_json::json!({
                "target": {"kind": "Deployment", "name": "neurallog-tenant-operator"},
                "patch": serde_json::to_string(&operations)?,
            }));
        }
        kustomization["patches"] = serde_json::Value::Array(patches);
        fs::write(overlay.join("kustomization.yaml"), serde_yaml::to_string(&kustomization)?)?;
        for dir in [root.join("config/crd"), overlay] {
            let output = self.kubectl_command(&["apply", "--server-side", "-k"]).arg(&dir).output()?;
            if !output.status.success() {
                bail!("kubectl apply -k {} failed: {}", dir.display(), String::from_utf8_lossy(&output.stderr).trim());
            }
        }
        Ok(())
    }

    /// `kubectl rollout status` of `resource` in `namespace`, within the ready timeout.
    pub fn wait_rollout(&self, namespace: &str, resource: &str) -> anyhow::Result<()> {
        let timeout = format!("--timeout={}s", READY_TIMEOUT.as_secs());
        let output = self.kubectl_command(&["-n", namespace, "rollout", "status", resource, &timeout]).output()?;
        if !output.status.success() {
            bail!(
                "{resource} in {namespace} did not roll out: {}{}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// A kubectl command as the cluster admin.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.admin_kubeconfig).args(args);
        command
    }

    /// The node's working directory: logs of every component, kubeconfigs, certificates.
    pub fn dir(&self) -> &Path {
        &self.layout.root
    }

    /// Kubeconfig of a cluster admin (group `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The pinned kubectl.
    pub fn kubectl(&self) -> &Path {
        &self.kubectl
    }

    /// Client configuration of a cluster admin.
    pub async fn admin_config(&self) -> anyhow::Result<Config> {
        let kubeconfig = Kubeconfig::read_from(&self.admin_kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A cluster-admin client.
    pub async fn admin_client(&self) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.admin_config().await?)?)
    }

    /// Stops one process of the node by name (SIGKILL).
    fn kill(&mut self, name: &str) {
        for (process, child) in &mut self.processes {
            if process == name {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Stops every pod first, so the CNI plugin gives back each sandbox's network, then the
    /// components, then puts the host back.
    fn stop(&mut self) -> anyhow::Result<()> {
        for name in CONTROLLERS {
            self.kill(name);
        }
        let _ = self
            .kubectl_command(&[
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--force",
                "--grace-period=0",
                "--wait=false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + SANDBOX_TEARDOWN;
        while sandboxes_left() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        for name in ["kube-proxy", "kubelet", "containerd"] {
            self.kill(name);
        }
        kill_shims(&self.layout.containerd_socket());
        self.registry = None;
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let unmounted = host::unmount_under(&self.layout.root);
        let restored = self.host.take().map_or(Ok(()), |host| host.restore());
        unmounted.and(restored)
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("testenv: {error:#}");
        }
        keep_if_panicking(&mut self._temp);
        if let Some(temp) = self._temp.take() {
            // The overlay snapshots and volumes hold files owned by the pods' users; remove_dir_all
            // as root takes them all.
            let _ = host::remove_tree(temp.path());
        }
    }
}

/// Pod sandboxes whose network namespace still exists.
fn sandboxes_left() -> usize {
    fs::read_dir("/run/netns")
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("cni-")).count())
        .unwrap_or(0)
}

/// Kills the runc shims of this node's containerd (they outlive it by design), found by the
/// socket address in their command line.
fn kill_shims(containerd_socket: &Path) {
    let address = containerd_socket.display().to_string();
    let Ok(processes) = fs::read_dir("/proc") else { return };
    for process in processes.flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = fs::read(process.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_shim = args.first().is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"));
        if is_shim && args.contains(&address.as_bytes()) {
            // SAFETY: a plain kill(2) of a process this node's containerd started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// One node per machine: an exclusive lock on a file in the temporary directory, waited for.
fn lock_machine() -> anyhow::Result<fs::File> {
    let path = std::env::temp_dir().join("neurallog-testenv-node.lock");
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    // SAFETY: flock on a file descriptor this process owns.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Where the registry keeps blobs: next to the tools' cache when there is one (a second run
/// pushes nothing new), else in the node's directory.
fn registry_storage(root: &Path) -> PathBuf {
    std::env::var_os("NEURALLOG_TOOLS_CACHE")
        .map(PathBuf::from)
        .and_then(|tools| tools.parent().map(|cache| cache.join("registry")))
        .unwrap_or_else(|| root.join("registry"))
}

/// `to` as a path relative to `from` (kustomize takes no absolute base).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = from[common..].iter().map(|_| "..").collect();
    path.extend(&to[common..]);
    path
}
