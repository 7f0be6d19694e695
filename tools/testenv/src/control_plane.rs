//! A real control plane on loopback: etcd and kube-apiserver (optionally kube-controller-manager,
//! for namespace deletion and garbage collection) from the pinned builds, client-certificate
//! authentication and RBAC on. Every process lives in its own temporary directory and dies with the
//! [`ControlPlane`] (or with the process that started it).
//!
//! The API server's connections into "the cluster" (webhooks given by a Service reference) go
//! through a proxy in the test process, which sends a Service's traffic to a loopback address
//! ([`ControlPlane::forward_service`]). The proxy runs on the Tokio runtime that started the
//! plane: while a test blocks that runtime's only thread (`#[tokio::test]`, say, waiting on a
//! child process), those connections wait too.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, WebhookClientConfig, WebhookConversion,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::KeyPair;

use crate::egress;
use crate::pki::{CertAndKey, Pki};
use crate::process::{free_port, keep_if_panicking, log_tail, spawn, tool_dir};

/// User name of the identity the operator runs as in tests (see [`ControlPlane::operator_config`]).
pub const OPERATOR_USER: &str = "tenant-operator";

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also run kube-controller-manager with these controllers (empty: don't run it). Tests use
    /// `namespace,garbagecollector`; workload controllers would fight tests that set Deployment
    /// and StatefulSet status by hand.
    pub controllers: Vec<String>,
    /// Keep the working directory (logs, kubeconfigs) instead of deleting it.
    pub keep_dir: bool,
    /// Working directory to use instead of a fresh temporary one.
    pub dir: Option<PathBuf>,
}

/// A running etcd + kube-apiserver (+ kube-controller-manager).
pub struct ControlPlane {
    processes: Vec<(String, Child)>,
    /// How kube-apiserver was started, to start it again ([`ControlPlane::restart_apiserver`]).
    apiserver: (PathBuf, Vec<String>),
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    server: String,
    /// etcd's client URL (plain HTTP on loopback).
    etcd_url: String,
    admin_kubeconfig: PathBuf,
    operator_kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// Where the API server's connections into the cluster go; lives as long as the plane, across
    /// restarts of the API server.
    egress: egress::EgressProxy,
}

pub(crate) fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str, creds: &CertAndKey) -> String {
    use base64::Engine as _;
    let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: {user}\ncurrent-context: testenv\n",
        encode(ca_pem),
        encode(&creds.cert_pem),
        encode(&creds.key_pem)
    )
}

/// `token`, a list's continue token, made to point at resourceVersion `revision` (an old one, to
/// make the API server answer 410 Gone for it). The token is the API server's base64 (URL-safe,
/// unpadded) JSON of `{"v", "rv", "start"}`.
pub fn continue_token_at(token: &str, revision: i64) -> anyhow::Result<String> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parsed: serde_json::Value = serde_json::from_slice(&engine.decode(token)?)?;
    parsed["rv"] = revision.into();
    Ok(engine.encode(serde_json::to_vec(&parsed)?))
}

/// A process of the control plane exited while it was starting.
#[derive(Debug)]
struct ExitedDuringStartup {
    name: String,
    status: std::process::ExitStatus,
    log_tail: String,
}

impl std::fmt::Display for ExitedDuringStartup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} exited with {} during startup; the end of its log:\n{}", self.name, self.status, self.log_tail)
    }
}

impl std::error::Error for ExitedDuringStartup {}

/// Attempts at starting a control plane: ports are picked free, but a test running in parallel can
/// take one before the process binds it, and then a fresh set of ports is tried.
const START_ATTEMPTS: u32 = 3;

impl ControlPlane {
    /// Starts the control plane and waits until the API server is ready.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&options).await {
                Err(error) if attempt < START_ATTEMPTS && error.downcast_ref::<ExitedDuringStartup>().is_some() => {
                    eprintln!("testenv: {error}\ntestenv: retrying with other ports");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(options: &Options) -> anyhow::Result<Self> {
        let kube_bin = tool_dir("kubernetes", "TESTENV_KUBERNETES_BIN")?;
        let etcd_bin = tool_dir("etcd", "TESTENV_ETCD_BIN")?;
        let (temp, dir) = match &options.dir {
            Some(dir) => {
                fs::create_dir_all(dir)?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new().prefix("testenv-").tempdir()?;
                let dir = temp.path().to_owned();
                (if options.keep_dir { None } else { Some(temp) }, dir)
            }
        };
        if options.keep_dir && options.dir.is_none() {
            eprintln!("testenv: keeping {}", dir.display());
        }

        let pki = Pki::new()?;
        let serving = pki.loopback_server("kube-apiserver")?;
        let admin = pki.issue("testenv-admin", Some("system:masters"), vec![], false)?;
        let operator = pki.issue(OPERATOR_USER, None, vec![], false)?;
        let sa_key = KeyPair::generate()?;
        let write = |name: &str, content: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            fs::write(&path, content)?;
            Ok(path)
        };
        let ca = write("ca.crt", &pki.ca_pem)?;
        let serving_cert = write("apiserver.crt", &serving.cert_pem)?;
        let serving_key = write("apiserver.key", &serving.key_pem)?;
        let sa = write("service-account.key", &sa_key.serialize_pem())?;
        let sa_pub = write("service-account.pub", &sa_key.public_key_pem())?;
        let egress = egress::EgressProxy::start(&dir)?;
        let egress_config = write("egress.yaml", &egress.selector_configuration()?)?;

        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let server = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = write("admin.kubeconfig", &kubeconfig_yaml(&server, &pki.ca_pem, "admin", &admin))?;
        let operator_kubeconfig =
            write("operator.kubeconfig", &kubeconfig_yaml(&server, &pki.ca_pem, OPERATOR_USER, &operator))?;

        let path = |p: &Path| p.display().to_string();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let mut plane = Self {
            processes: Vec::new(),
            apiserver: (PathBuf::new(), Vec::new()),
            dir: dir.clone(),
            _temp: temp,
            server: server.clone(),
            etcd_url: etcd_url.clone(),
            admin_kubeconfig: admin_kubeconfig.clone(),
            operator_kubeconfig,
            kubectl: kube_bin.join("kubectl"),
            egress,
        };
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            "--name=testenv".into(),
            format!("--data-dir={}", path(&dir.join("etcd"))),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testenv={peer_url}"),
            // Durability is irrelevant for a throwaway store; fsync dominates its latency.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        plane.processes.push(("etcd".into(), spawn("etcd", &etcd_bin.join("etcd"), &etcd_args, &dir)?));

        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", path(&dir.join("certs"))),
            format!("--tls-cert-file={}", path(&serving_cert)),
            format!("--tls-private-key-file={}", path(&serving_key)),
            format!("--client-ca-file={}", path(&ca)),
            "--authorization-mode=RBAC".into(),
            "--anonymous-auth=false".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", path(&sa_pub)),
            format!("--service-account-signing-key-file={}", path(&sa)),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=false".into(),
            format!("--egress-selector-config-file={}", path(&egress_config)),
        ];
        let apiserver_bin = kube_bin.join("kube-apiserver");
        plane
            .processes
            .push(("kube-apiserver".into(), spawn("kube-apiserver", &apiserver_bin, &apiserver_args, &dir)?));
        plane.apiserver = (apiserver_bin, apiserver_args);
        plane.wait_ready().await?;

        if !options.controllers.is_empty() {
            let kcm_args: Vec<String> = vec![
                format!("--kubeconfig={}", path(&admin_kubeconfig)),
                format!("--controllers={}", options.controllers.join(",")),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                format!("--service-account-private-key-file={}", path(&sa)),
                format!("--root-ca-file={}", path(&ca)),
                "--use-service-account-credentials=false".into(),
            ];
            plane.processes.push((
                "kube-controller-manager".into(),
                spawn("kube-controller-manager", &kube_bin.join("kube-controller-manager"), &kcm_args, &dir)?,
            ));
        }
        Ok(plane)
    }

    /// Stops kube-apiserver (SIGKILL: no graceful close of its watches) and starts it again on
    /// the same port and store, as a crash or an upgrade of the control plane would; returns once
    /// it is ready. Its clients keep their configuration; their watches break and must recover.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        let (program, args) = self.apiserver.clone();
        let (_, child) = self
            .processes
            .iter_mut()
            .find(|(name, _)| name == "kube-apiserver")
            .context("no kube-apiserver to restart")?;
        child.kill()?;
        child.wait()?;
        *child = spawn("kube-apiserver", &program, &args, &self.dir)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for (name, child) in &mut self.processes {
                if let Some(status) = child.try_wait()? {
                    // The directory goes with a failed start, so the log's end travels in the error.
                    let log_tail = log_tail(&self.dir.join(format!("{name}.log")), 15);
                    return Err(ExitedDuringStartup { name: name.clone(), status, log_tail }.into());
                }
            }
            let request = http::Request::get("/readyz").body(Vec::new())?;
            if client.request_text(request).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kube-apiserver not ready after 90s; logs in {}", self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// URL of the API server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// etcd's client URL (plain HTTP on loopback), to read what the API server stored.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The value etcd holds at `key` (`/registry/<group>/<resource>/<name>` for a cluster-scoped
    /// custom resource), through etcd's JSON gateway; `None` when there is none.
    pub async fn etcd_get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        etcd_get(&self.etcd_url, key).await
    }

    /// Compacts etcd's history up to its current revision, as the API server does every few
    /// minutes: continue tokens and resourceVersions older than that expire (410 Gone).
    pub async fn etcd_compact(&self) -> anyhow::Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let answer: serde_json::Value = client
            .post(format!("{}/v3/kv/range", self.etcd_url))
            .json(&serde_json::json!({"key": "AA==", "count_only": true}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let revision = answer.pointer("/header/revision").and_then(serde_json::Value::as_str).context("no revision")?;
        client
            .post(format!("{}/v3/kv/compaction", self.etcd_url))
            .json(&serde_json::json!({"revision": revision, "physical": true}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Replaces the installed CRD by the one in a YAML file, with its conversion webhook at `url`
    /// (an update keeping the installed one's resourceVersion, the way an upgrade applies it).
    pub async fn replace_crd_converting(
        &self,
        path: &Path,
        url: &str,
        ca_pem: &str,
    ) -> anyhow::Result<CustomResourceDefinition> {
        let mut crd = Self::read_crd_converting(path, url, ca_pem)?;
        let api: Api<CustomResourceDefinition> = Api::all(self.admin_client().await?);
        let name = crd.metadata.name.clone().unwrap_or_default();
        let installed = api.get(&name).await.with_context(|| format!("cannot read CRD {name}"))?;
        crd.metadata.resource_version = installed.metadata.resource_version;
        api.replace(&name, &PostParams::default(), &crd).await.with_context(|| format!("cannot replace CRD {name}"))
    }

    /// The CRD in a YAML file, its conversion webhook at `url` (HTTPS, signed by `ca_pem`).
    fn read_crd_converting(path: &Path, url: &str, ca_pem: &str) -> anyhow::Result<CustomResourceDefinition> {
        let mut crd = Self::read_crd(path)?;
        crd.spec.conversion = Some(Self::webhook_conversion(url, ca_pem));
        Ok(crd)
    }

    fn webhook_conversion(url: &str, ca_pem: &str) -> CustomResourceConversion {
        CustomResourceConversion {
            strategy: "Webhook".into(),
            webhook: Some(WebhookConversion {
                conversion_review_versions: vec!["v1".into()],
                client_config: Some(WebhookClientConfig {
                    url: Some(url.to_owned()),
                    ca_bundle: Some(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec())),
                    service: None,
                }),
            }),
        }
    }

    /// The working directory: logs of every process, kubeconfigs, certificates.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kubeconfig of a cluster admin (group `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Kubeconfig of the user [`OPERATOR_USER`], who may do only what RBAC grants it.
    pub fn operator_kubeconfig(&self) -> &Path {
        &self.operator_kubeconfig
    }

    /// The name and process id of every process of the plane (etcd, kube-apiserver, ...), for
    /// benchmarks that account for their CPU time.
    pub fn process_ids(&self) -> Vec<(String, u32)> {
        self.processes.iter().map(|(name, child)| (name.clone(), child.id())).collect()
    }

    /// The pinned kubectl.
    pub fn kubectl(&self) -> &Path {
        &self.kubectl
    }

    async fn config(path: &Path) -> anyhow::Result<Config> {
        let kubeconfig = Kubeconfig::read_from(path)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// Client configuration of a cluster admin.
    pub async fn admin_config(&self) -> anyhow::Result<Config> {
        Self::config(&self.admin_kubeconfig).await
    }

    /// Client configuration of the operator's identity.
    pub async fn operator_config(&self) -> anyhow::Result<Config> {
        Self::config(&self.operator_kubeconfig).await
    }

    /// A cluster-admin client.
    pub async fn admin_client(&self) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.admin_config().await?)?)
    }

    /// Makes the API server's connections to `service` (a Service's `ClusterIP:port`, which routes
    /// nowhere without kube-proxy) reach `to` instead, typically a webhook on `127.0.0.1`.
    /// Connections to other loopback addresses are dialed as they are, the rest refused.
    pub fn forward(&self, service: SocketAddr, to: SocketAddr) {
        self.egress.forward(service, to);
    }

    /// [`forward`](Self::forward)s the Service `name` in `namespace`, port `port` (its `port`,
    /// which a webhook's service reference names, not its `targetPort`) to `to`, and returns the
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

    /// Creates the CRD from a YAML file and waits until it is established.
    pub async fn install_crd(&self, path: &Path) -> anyhow::Result<CustomResourceDefinition> {
        self.create_crd(Self::read_crd(path)?).await
    }

    /// Creates the CRD from a YAML file with its conversion webhook at `url` (HTTPS, its
    /// certificate signed by `ca_pem`), and waits until it is established.
    pub async fn install_crd_converting(
        &self,
        path: &Path,
        url: &str,
        ca_pem: &str,
    ) -> anyhow::Result<CustomResourceDefinition> {
        install_crd_converting(self.admin_client().await?, path, url, ca_pem).await
    }

    fn read_crd(path: &Path) -> anyhow::Result<CustomResourceDefinition> {
        serde_yaml::from_str(&fs::read_to_string(path)?).with_context(|| format!("{} is not a CRD", path.display()))
    }

    async fn create_crd(&self, crd: CustomResourceDefinition) -> anyhow::Result<CustomResourceDefinition> {
        create_crd(self.admin_client().await?, &crd).await
    }

    /// Grants [`OPERATOR_USER`] what the operator's ServiceAccount gets from `rbac_dir`
    /// (`config/rbac`): the ClusterRole of `role.yaml`, bound to it cluster-wide, and the
    /// ClusterRole of `tenant_secrets_role.yaml`, which the operator binds itself in each tenant
    /// namespace.
    pub async fn grant_operator(&self, rbac_dir: &Path) -> anyhow::Result<()> {
        let read = |file: &str| -> anyhow::Result<ClusterRole> {
            let path = rbac_dir.join(file);
            serde_yaml::from_str(&fs::read_to_string(&path)?)
                .with_context(|| format!("{} is not a ClusterRole", path.display()))
        };
        let (role, tenant_secrets) = (read("role.yaml")?, read("tenant_secrets_role.yaml")?);
        let client = self.admin_client().await?;
        let role_name = role.metadata.name.clone().unwrap_or_default();
        let roles = Api::<ClusterRole>::all(client.clone());
        roles.create(&PostParams::default(), &role).await?;
        roles.create(&PostParams::default(), &tenant_secrets).await?;
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta { name: Some(format!("{role_name}-testenv")), ..Default::default() },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: role_name.clone(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "User".into(),
                name: OPERATOR_USER.into(),
                ..Default::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &binding).await?;
        // The RBAC authorizer learns of the binding through its own watch; wait until it grants
        // the first rule, so the operator does not start (and fail) before it may list anything.
        let first = role.rules.iter().flatten().next().context("the ClusterRole has no rules")?;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(OPERATOR_USER.into()),
                resource_attributes: Some(ResourceAttributes {
                    group: first.api_groups.iter().flatten().next().cloned(),
                    resource: first.resources.iter().flatten().next().cloned(),
                    verb: first.verbs.first().cloned(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews = Api::<SubjectAccessReview>::all(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = reviews.create(&PostParams::default(), &review).await?;
            if answer.status.is_some_and(|s| s.allowed) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the API server did not apply ClusterRole {role_name} to {OPERATOR_USER} within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse order: controllers, then the API server, then its store.
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        keep_if_panicking(&mut self._temp);
    }
}

/// The value etcd at `etcd_url` (plain HTTP) holds at `key`, through etcd's JSON gateway; `None`
/// when there is none.
pub(crate) async fn etcd_get(etcd_url: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body = serde_json::json!({"key": engine.encode(key)});
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{etcd_url}/v3/kv/range"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot read {key} from etcd at {etcd_url}"))?
        .error_for_status()
        .with_context(|| format!("etcd at {etcd_url} refused to read {key}"))?
        .json()
        .await
        .with_context(|| format!("etcd's answer for {key} is not JSON"))?;
    let Some(value) = answer.pointer("/kvs/0/value").and_then(serde_json::Value::as_str) else { return Ok(None) };
    Ok(Some(engine.decode(value).with_context(|| format!("etcd's value of {key} is not base64"))?))
}

/// Creates `crd` and waits (30s at most) until it is established.
/// Creates the CRD from a YAML file with its conversion webhook at `url` (HTTPS, its certificate
/// signed by `ca_pem`) through `client`, and waits until it is established.
pub async fn install_crd_converting(
    client: Client,
    path: &Path,
    url: &str,
    ca_pem: &str,
) -> anyhow::Result<CustomResourceDefinition> {
    create_crd(client, &ControlPlane::read_crd_converting(path, url, ca_pem)?).await
}

/// Creates the CRD of a YAML file (one without conversion) and waits until it is established.
pub async fn install_crd(client: Client, path: &Path) -> anyhow::Result<CustomResourceDefinition> {
    create_crd(client, &ControlPlane::read_crd(path)?).await
}

pub(crate) async fn create_crd(
    client: Client,
    crd: &CustomResourceDefinition,
) -> anyhow::Result<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let name = crd.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), crd).await.with_context(|| format!("cannot create CRD {name}"))?;
    let established = kube::runtime::wait::await_condition(api, &name, kube::runtime::conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .with_context(|| format!("CRD {name} not established after 30s"))??
        .with_context(|| format!("CRD {name} disappeared"))
}
