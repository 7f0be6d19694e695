//! A whole simulated cluster for end-to-end tests: `kwokctl create cluster --runtime binary` with
//! the pinned builds of `tools/` (etcd, kube-apiserver, kube-controller-manager with all its
//! default controllers, kube-scheduler, kwok), one fake node whose pods kwok simulates, and
//! hostPath PersistentVolumes for claims to bind to.
//!
//! As with [`ControlPlane`](crate::ControlPlane), the API server's connections into "the cluster"
//! (webhooks given by a Service reference) go through an egress proxy in the test process
//! ([`KwokCluster::forward_service`]), which serves on the Tokio runtime that started the cluster:
//! start it from a multi-threaded runtime.
//!
//! kwokctl starts its processes detached (each in its own session), so they cannot die with the
//! test the way [`dies_with_parent`](crate::dies_with_parent) makes the others. Dropping the
//! [`KwokCluster`] deletes the cluster and waits until every one of them is gone; should the test
//! process die without dropping it (killed, say), a watchdog shell it started, which waits for the
//! test's end of a pipe to close, runs `kwokctl delete cluster` instead.

use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::egress::EgressProxy;
use crate::{dies_with_parent, log_tail, tool_dir};

/// The fake node every cluster gets.
pub const NODE: &str = "kwok-node-0";
/// How long `kwokctl create cluster` may take (it starts the processes; it does not wait for them).
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the API server, the node and the volumes may take to become ready, Ready and Available.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `kwokctl delete cluster` and the end of the processes it stops may take, after which
/// those still running are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the ServiceAccount tokens of [`KwokCluster::service_account_kubeconfig`] stay valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts at creating a cluster: its ports are picked free, but another process can take one
/// before the component binds it; the cluster is then created again on other ports.
const START_ATTEMPTS: u32 = 3;
/// Clusters started by this process, for unique names.
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// A process kwokctl started exited while the cluster was starting.
#[derive(Debug)]
struct ComponentExited {
    name: String,
    log_tail: String,
}

impl std::fmt::Display for ComponentExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} exited while the cluster was starting; the end of its log:\n{}", self.name, self.log_tail)
    }
}

impl std::error::Error for ComponentExited {}

/// A running kwokctl cluster; deleted, every process kwokctl started stopped, when dropped.
pub struct KwokCluster {
    name: String,
    dir: PathBuf,
    /// kwokctl's working directory (`KWOK_WORKDIR`).
    workdir: PathBuf,
    /// This cluster's directory in it: kwok.yaml, pki/, logs/, pids/.
    cluster_dir: PathBuf,
    kwokctl: PathBuf,
    /// kwokctl's flags naming the pinned builds.
    binaries: Vec<(&'static str, PathBuf)>,
    /// The API server's egress selector configuration.
    egress_config: PathBuf,
    /// `PATH` for kwokctl, which runs `kubectl` from it: the pinned kubernetes and kwok builds first.
    path: OsString,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    server: String,
    etcd_url: String,
    ca_pem: String,
    egress: EgressProxy,
    /// Deletes the cluster should this process die without dropping it (see the module's doc).
    watchdog: Option<Child>,
    /// Whether the control plane's logs are to be kept in `dir` (a failed start).
    keep_logs: bool,
}

impl KwokCluster {
    /// Creates a cluster with `kwokctl create cluster --runtime binary` and the pinned
    /// kube-apiserver, kube-controller-manager (all default controllers, as kwokctl runs it),
    /// kube-scheduler, etcd and kwok; a unique cluster name; free ports picked here (kwokctl's
    /// own would collide with a cluster created at the same time); `KWOK_WORKDIR` under `dir`; the
    /// API server's egress selector naming an egress proxy started here, so that Service-referenced
    /// webhooks can be forwarded. Waits until the API server is ready, then creates the fake node [`NODE`] (pod CIDR 10.244.0.0/22, clear
    /// of the 10.0.0.0/24 service range; 64 CPUs, 256Gi, 1000 pods) and waits until it is Ready,
    /// and `volumes` hostPath PersistentVolumes (10Gi, ReadWriteOnce, Retain) for claims such as
    /// Redis', waiting until they are Available. Should one of kwokctl's processes exit meanwhile
    /// (a port taken since it was picked, typically), the cluster is created again, up to 3 times.
    ///
    /// `dir` (one per cluster) holds kwokctl's logs, the admin kubeconfig and, when the start fails
    /// or the test panics, the control plane's logs (`control-plane/`). Must be called within a
    /// multi-threaded Tokio runtime (see the module's doc).
    pub async fn start(dir: &Path, volumes: usize) -> anyhow::Result<Self> {
        let kube_bin = tool_dir("kubernetes", "TESTENV_KUBERNETES_BIN")?;
        let etcd_bin = tool_dir("etcd", "TESTENV_ETCD_BIN")?;
        let kwok_bin = tool_dir("kwok", "TESTENV_KWOK_BIN")?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // kwokctl and the processes it starts run in the cluster's directory: absolute paths only.
        let dir = std::path::absolute(dir)?;
        let name = format!("testenv-{}-{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::Relaxed));
        let workdir = dir.join("kwok");
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            [kube_bin.clone(), kwok_bin.clone()].into_iter().chain(std::env::split_paths(&inherited)),
        )
        .context("the kubernetes or kwok build directory cannot be put in PATH")?;
        let egress = EgressProxy::start(&dir).context("cannot start the egress proxy")?;
        let egress_config = dir.join("egress.yaml");
        fs::write(&egress_config, egress.selector_configuration()?)
            .with_context(|| format!("cannot write {}", egress_config.display()))?;
        let mut cluster = Self {
            cluster_dir: workdir.join("clusters").join(&name),
            name,
            workdir,
            kwokctl: kwok_bin.join("kwokctl"),
            binaries: vec![
                ("--kube-apiserver-binary", kube_bin.join("kube-apiserver")),
                ("--kube-controller-manager-binary", kube_bin.join("kube-controller-manager")),
                ("--kube-scheduler-binary", kube_bin.join("kube-scheduler")),
                ("--etcd-binary", etcd_bin.join("etcd")),
                ("--kwok-controller-binary", kwok_bin.join("kwok")),
            ],
            egress_config,
            path,
            kubeconfig: dir.join("admin.kubeconfig"),
            kubectl: kube_bin.join("kubectl"),
            server: String::new(),
            etcd_url: String::new(),
            ca_pem: String::new(),
            egress,
            watchdog: None,
            keep_logs: false,
            dir,
        };
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        let mut attempt = 1;
        loop {
            match cluster.start_once(volumes).await {
                Ok(()) => return Ok(cluster),
                Err(error) if attempt < START_ATTEMPTS && error.downcast_ref::<ComponentExited>().is_some() => {
                    eprintln!(
                        "testenv: {error:#}\ntestenv: creating kwok cluster {} again on other ports",
                        cluster.name
                    );
                    cluster.delete();
                    attempt += 1;
                }
                Err(error) => {
                    cluster.keep_logs = true;
                    let context =
                        format!("cannot start kwok cluster {} (logs in {})", cluster.name, cluster.dir.display());
                    return Err(error.context(context));
                }
            }
        }
    }

    /// Creates the cluster, waits until its API server is ready and populates it; fails with
    /// [`ComponentExited`] as soon as a process kwokctl started exits.
    async fn start_once(&mut self, volumes: usize) -> anyhow::Result<()> {
        self.create().await?;
        self.guarded(self.wait_apiserver()).await?;
        self.guarded(self.populate(volumes)).await
    }

    /// `future`, unless a process kwokctl started exits first.
    async fn guarded<T>(&self, future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        tokio::select! {
            result = future => result,
            exited = self.component_exit() => Err(exited.into()),
        }
    }

    /// Resolves when one of the processes kwokctl started is no longer running.
    async fn component_exit(&self) -> ComponentExited {
        let components = self.started_processes();
        loop {
            if let Some((name, _)) = components.iter().find(|&&(_, pid)| !self.runs_here(pid)) {
                let log = self.cluster_dir.join("logs").join(format!("{name}.log"));
                return ComponentExited { name: name.clone(), log_tail: log_tail(&log, 15) };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the API server answers `/readyz`.
    async fn wait_apiserver(&self) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(request).await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("the API server at {} not ready after {READY_TIMEOUT:?}", self.server)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `kwokctl <args> --name <name>`, with the cluster's `KWOK_WORKDIR` and `PATH`.
    fn kwokctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kwokctl);
        command.args(args).arg("--name").arg(&self.name).env("PATH", &self.path).env("KWOK_WORKDIR", &self.workdir);
        command
    }

    /// Starts the watchdog: a shell in its own session (out of reach of a Ctrl-C or a signal to
    /// the test's process group) that waits for end of file on its standard input, the test
    /// holding the other end, then deletes the cluster. [`Drop`] kills it first.
    fn spawn_watchdog(&self) -> anyhow::Result<Child> {
        let log = self.dir.join("kwokctl-watchdog.log");
        let log = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"read -r _; exec "$0" delete cluster --name "$1" --kubeconfig "$2""#)
            .arg(&self.kwokctl)
            .arg(&self.name)
            .arg(&self.kubeconfig)
            .env("PATH", &self.path)
            .env("KWOK_WORKDIR", &self.workdir)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        command.spawn().context("cannot start the watchdog shell (sh)")
    }

    /// Runs `kwokctl create cluster` on free ports and reads what it made: the API server's URL,
    /// etcd's port, the CA.
    async fn create(&mut self) -> anyhow::Result<()> {
        // kwokctl's own choice of ports is the same for clusters created at the same time: it takes
        // the first free one counting down from 32767.
        let ports = free_ports(6)?;
        let egress_config = self.egress_config.to_str().context("the egress configuration's path is not UTF-8")?;
        let configuration = serde_json::json!({
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "kubeApiserverPort": ports[0],
                "etcdPort": ports[1],
                "etcdPeerPort": ports[2],
                "kubeControllerManagerPort": ports[3],
                "kubeSchedulerPort": ports[4],
                "kwokControllerPort": ports[5],
            },
            "componentsPatches": [{
                "name": "kube-apiserver",
                "extraArgs": [{"key": "egress-selector-config-file", "value": egress_config}],
            }],
        });
        let config_path = self.dir.join("kwokctl.yaml");
        fs::write(&config_path, serde_yaml::to_string(&configuration)?)
            .with_context(|| format!("cannot write {}", config_path.display()))?;

        let display = |path: &Path| path.display().to_string();
        let (config, kubeconfig) = (display(&config_path), display(&self.kubeconfig));
        let binaries: Vec<(&str, String)> = self.binaries.iter().map(|(flag, path)| (*flag, display(path))).collect();
        let mut args =
            vec!["create", "cluster", "--config", &config, "--runtime", "binary", "--kubeconfig", &kubeconfig];
        for (flag, binary) in &binaries {
            args.extend([*flag, binary.as_str()]);
        }
        let mut command = self.kwokctl_command(&args);
        let log_path = self.dir.join("kwokctl-create.log");
        let log = fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        dies_with_parent(&mut command);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let status = tokio::time::timeout(CREATE_TIMEOUT, command.status())
            .await
            .with_context(|| format!("kwokctl create cluster did not finish in {CREATE_TIMEOUT:?}"))?
            .context("cannot run kwokctl create cluster")?;
        if !status.success() {
            bail!("kwokctl create cluster failed ({status}); the end of its log:\n{}", log_tail(&log_path, 20));
        }

        let config = self.cluster_dir.join("kwok.yaml");
        let options = kwokctl_options(&config)?;
        let etcd_port = options
            .get("etcdPort")
            .and_then(serde_yaml::Value::as_u64)
            .with_context(|| format!("{} names no etcdPort", config.display()))?;
        self.etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("cannot read the kubeconfig kwokctl wrote, {}", self.kubeconfig.display()))?;
        self.server = kubeconfig
            .clusters
            .iter()
            .find_map(|cluster| cluster.cluster.as_ref()?.server.clone())
            .with_context(|| format!("{} names no server", self.kubeconfig.display()))?;
        let ca = self.cluster_dir.join("pki/ca.crt");
        self.ca_pem =
            fs::read_to_string(&ca).with_context(|| format!("cannot read the cluster's CA, {}", ca.display()))?;
        Ok(())
    }

    /// Creates the fake node and the volumes, and waits until they are Ready and Available.
    async fn populate(&self, volumes: usize) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        // Room for a fleet's pods: 100 tenants run 300, and a rollout's surge some more.
        let resources = serde_json::json!({"cpu": "64", "memory": "256Gi", "pods": "1000"});
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE,
                // kwok simulates the nodes so annotated, and their pods.
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": NODE,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                    "type": "kwok",
                },
            },
            // Pod IPs come from here; kwok's default would overlap the services' 10.0.0.0/24.
            "spec": {"podCIDR": "10.244.0.0/22", "podCIDRs": ["10.244.0.0/22"]},
            "status": {"allocatable": resources, "capacity": resources},
        }))?;
        let nodes = Api::<Node>::all(client.clone());
        nodes.create(&PostParams::default(), &node).await.with_context(|| format!("cannot create node {NODE}"))?;

        let pvs = Api::<PersistentVolume>::all(client);
        let mut names = Vec::new();
        for index in 0..volumes {
            let name = format!("testenv-volume-{index}");
            let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    // Never mounted: kwok's pods run nothing.
                    "hostPath": {"path": format!("/nonexistent/{name}")},
                },
            }))?;
            pvs.create(&PostParams::default(), &volume)
                .await
                .with_context(|| format!("cannot create PersistentVolume {name}"))?;
            names.push(name);
        }

        let ready = |node: Option<&Node>| {
            node.and_then(|node| node.status.as_ref()?.conditions.as_ref())
                .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        tokio::time::timeout(READY_TIMEOUT, kube::runtime::wait::await_condition(nodes, NODE, ready))
            .await
            .with_context(|| format!("node {NODE} not Ready after {READY_TIMEOUT:?} (is kwok-controller running?)"))?
            .with_context(|| format!("cannot watch node {NODE}"))?;
        for name in names {
            let available = |pv: Option<&PersistentVolume>| {
                pv.and_then(|pv| pv.status.as_ref()?.phase.as_deref()) == Some("Available")
            };
            tokio::time::timeout(READY_TIMEOUT, kube::runtime::wait::await_condition(pvs.clone(), &name, available))
                .await
                .with_context(|| format!("PersistentVolume {name} not Available after {READY_TIMEOUT:?}"))?
                .with_context(|| format!("cannot watch PersistentVolume {name}"))?;
        }
        Ok(())
    }

    /// The cluster's name (kwokctl's `--name`); every process kwokctl started for it names it in its
    /// command line.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory given to [`start`](Self::start).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kubeconfig of the cluster admin (group `system:masters`), as kwokctl wrote it.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The pinned kubectl.
    pub fn kubectl(&self) -> &Path {
        &self.kubectl
    }

    /// URL of the API server.
    pub fn server(&self) -> String {
        self.server.clone()
    }

    /// The cluster's CA certificate (PEM), which signed the API server's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Client configuration of the cluster admin.
    pub async fn admin_config(&self) -> anyhow::Result<Config> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("cannot read {}", self.kubeconfig.display()))?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("{} is not a usable kubeconfig", self.kubeconfig.display()))
    }

    /// A cluster-admin client.
    pub async fn admin_client(&self) -> anyhow::Result<Client> {
        Client::try_from(self.admin_config().await?).context("cannot make a client of the admin kubeconfig")
    }

    /// Writes a kubeconfig at `path` for the ServiceAccount `name` in `namespace` (a TokenRequest
    /// token valid for a week, so that an interactive `make run OLM=1` outlives no token; the
    /// cluster's CA) and returns its path: how an operator is run as its pod would run. The
    /// ServiceAccount must exist.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> anyhow::Result<PathBuf> {
        use base64::Engine as _;
        let token = self.service_account_token(namespace, name, TOKEN_LIFETIME).await?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": &self.name, "cluster": {
                "server": &self.server,
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
            }}],
            "users": [{"name": &user, "user": {"token": token}}],
            "contexts": [{"name": &self.name, "context": {"cluster": &self.name, "user": &user}}],
            "current-context": &self.name,
        });
        crate::write_private(path, serde_yaml::to_string(&kubeconfig)?.as_bytes())
            .with_context(|| format!("cannot write the kubeconfig of {user}"))?;
        Ok(path.to_owned())
    }

    /// A token of the ServiceAccount `name` in `namespace` (a TokenRequest), valid for `lifetime`.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        lifetime: Duration,
    ) -> anyhow::Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(lifetime.as_secs().try_into()?), ..Default::default() },
            ..Default::default()
        };
        Ok(Api::<ServiceAccount>::namespaced(self.admin_client().await?, namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("cannot request a token of ServiceAccount {namespace}/{name}"))?
            .status
            .with_context(|| format!("the TokenRequest of ServiceAccount {namespace}/{name} has no status"))?
            .token)
    }

    /// Makes the API server's connections to `service` (a Service's `ClusterIP:port`, which routes
    /// nowhere: there is no kube-proxy) reach `to` instead, typically a webhook on `127.0.0.1`.
    pub fn forward(&self, service: SocketAddr, to: SocketAddr) {
        self.egress.forward(service, to);
    }

    /// [`forward`](Self::forward)s the Service `name` in `namespace`, port `port` (its `port`, which
    /// a webhook's service reference names, not its `targetPort`) to `to`, and returns the
    /// `ClusterIP:port` the API server will ask for.
    pub async fn forward_service(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
        to: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        self.egress.forward_service(&self.admin_client().await?, namespace, name, port, to).await
    }

    /// How many connections the API server opened to `target` (as it asked for it, before any
    /// forwarding) through the egress proxy: proof that a call went through it.
    pub fn connections(&self, target: SocketAddr) -> usize {
        self.egress.connections(target)
    }

    /// The value etcd holds at `key` (`/registry/<group>/<resource>/<name>` for a cluster-scoped
    /// custom resource, `/registry/namespaces/<name>` for a namespace); `None` when there is none.
    pub async fn etcd_get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        crate::etcd_get(&self.etcd_url, key).await
    }

    /// Copies the control plane's logs into `<dir>/control-plane/` before kwokctl deletes them.
    fn keep_control_plane_logs(&self) {
        let to = self.dir.join("control-plane");
        let copied = fs::create_dir_all(&to).and_then(|()| {
            for entry in fs::read_dir(self.cluster_dir.join("logs"))? {
                let entry = entry?;
                fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
            fs::copy(self.cluster_dir.join("kwok.yaml"), to.join("kwok.yaml")).map(|_| ())
        });
        match copied {
            Ok(()) => eprintln!("testenv: control-plane logs of kwok cluster {} kept in {}", self.name, to.display()),
            Err(error) => {
                eprintln!("testenv: cannot keep the control-plane logs of kwok cluster {}: {error}", self.name)
            }
        }
    }

    /// The processes kwokctl started for the cluster, `(name, pid)`, from its pid files.
    fn started_processes(&self) -> Vec<(String, i32)> {
        let Ok(entries) = fs::read_dir(self.cluster_dir.join("pids")) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid = fs::read_to_string(entry.path()).ok()?.trim().parse().ok()?;
                let name = entry.path().file_stem()?.to_string_lossy().into_owned();
                Some((name, pid))
            })
            .collect()
    }

    /// Whether process `pid` is alive (not a zombie) and one of this cluster's.
    fn runs_here(&self, pid: i32) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let needle = self.cluster_dir.as_os_str().as_encoded_bytes();
        cmdline.windows(needle.len()).any(|window| window == needle)
    }

    /// `kwokctl delete cluster`, then waits until every process it was to stop is gone, killing
    /// those still running after [`STOP_TIMEOUT`].
    fn delete(&self) {
        let started: Vec<_> = self.started_processes().into_iter().filter(|&(_, pid)| self.runs_here(pid)).collect();
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut command = self.kwokctl_command(&["delete", "cluster", "--kubeconfig", &kubeconfig]);
        let log = self.dir.join("kwokctl-delete.log");
        match fs::File::create(&log).and_then(|file| Ok((file.try_clone()?, file))) {
            Ok((out, err)) => command.stdin(Stdio::null()).stdout(out).stderr(err),
            Err(_) => command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()),
        };
        dies_with_parent(&mut command);
        let deadline = Instant::now() + STOP_TIMEOUT;
        match command.spawn() {
            Ok(mut child) => loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        eprintln!(
                            "testenv: kwokctl delete cluster {} failed ({status}), see {}",
                            self.name,
                            log.display()
                        );
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        eprintln!("testenv: kwokctl delete cluster {} did not finish; killing it", self.name);
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            },
            Err(error) => eprintln!("testenv: cannot run kwokctl delete cluster {}: {error}", self.name),
        }
        // kwokctl signals its processes; they exit a moment later (init reaps them).
        let mut left = started;
        while !left.is_empty() {
            left.retain(|&(_, pid)| self.runs_here(pid));
            if Instant::now() >= deadline {
                for (name, pid) in &left {
                    eprintln!("testenv: {name} (pid {pid}) of kwok cluster {} still runs; killing it", self.name);
                    // SAFETY: a plain system call; `pid` names a process of this cluster (checked above).
                    unsafe {
                        libc::kill(*pid, libc::SIGKILL);
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KwokCluster {
    fn drop(&mut self) {
        if self.keep_logs || std::thread::panicking() {
            self.keep_control_plane_logs();
        }
        self.delete();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// The `options` of the KwokctlConfiguration in kwokctl's `kwok.yaml` for a cluster (the first of
/// its YAML documents of that kind).
fn kwokctl_options(path: &Path) -> anyhow::Result<serde_yaml::Mapping> {
    use serde::Deserialize as _;
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value =
            serde_yaml::Value::deserialize(document).with_context(|| format!("{} is not YAML", path.display()))?;
        if value.get("kind").and_then(serde_yaml::Value::as_str) == Some("KwokctlConfiguration") {
            return value
                .get("options")
                .and_then(serde_yaml::Value::as_mapping)
                .cloned()
                .with_context(|| format!("the KwokctlConfiguration in {} has no options", path.display()));
        }
    }
    bail!("{} holds no KwokctlConfiguration", path.display())
}

/// `count` distinct ports free a moment ago, on every interface (kwokctl's processes listen on
/// 0.0.0.0).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    // Held until all are picked, so that they differ.
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free ports")?;
    listeners.iter().map(|listener| Ok(listener.local_addr()?.port())).collect()
}
