//! `testenv up --dir DIR`: starts the simulated cluster of the end-to-end tests in DIR (kwokctl's
//! etcd, kube-apiserver, the full kube-controller-manager, kube-scheduler and kwok; a fake node whose
//! pods kwok marks Running; volumes for Redis), installs the Tenant CRD (converting through the
//! operator's webhook at the address it prints, with the certificate it writes), creates the
//! operator's namespace, ServiceAccount and RBAC as `config/rbac` declares them, writes a kubeconfig
//! of that ServiceAccount, starts the NeuralLog Auth stand-in and Jaeger, then runs until SIGTERM or
//! Ctrl-C and stops everything it started. Used by `make run`.
//!
//! `testenv olm --dir DIR --operator BINARY [--from VERSION] [--once]`: `make run OLM=1`, the
//! operator installed from the catalog through OLM on the same kind of cluster
//! ([`testenv::olm_run`]).
//!
//! `testenv node --dir DIR`: a real node ([`testenv::node`]) whose pods really run, from the
//! images `make images` recorded (`$TESTENV_IMAGES`), until SIGTERM or Ctrl-C; then the host is
//! put back as it was.
//!
//! `testenv run-node --dir DIR [--once]`: `make run NODE=1`, the operator from its image and the
//! sample tenant on such a node, traces in Jaeger ([`testenv::node_run`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::discovery::Scope;
use testenv::kwok::KwokCluster;
use testenv::repo_root;

/// The operator's namespace and ServiceAccount, as `config/default` installs them.
const NAMESPACE: &str = "neurallog-system";
const SERVICE_ACCOUNT: &str = "neurallog-tenant-operator";
/// PersistentVolumes for Redis claims: the sample tenant's, kept when it is deleted (`Retain`), and
/// a few more for the tenants a user creates.
const VOLUMES: usize = 4;
/// Lifetime of the operator's ServiceAccount tokens, and how often a new one replaces the last.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const TOKEN_REFRESH: Duration = Duration::from_secs(1200);
/// How long the operator's RBAC may take to take effect.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What `up` started, dropped in this order: Jaeger, the Auth stand-in, the cluster.
struct Running {
    _jaeger: testenv::jaeger::Jaeger,
    _auth: testenv::auth::AuthStandIn,
    cluster: KwokCluster,
    token_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: testenv up --dir DIR | testenv olm --dir DIR --operator BINARY [--from VERSION] [--once] | testenv node --dir DIR | testenv run-node --dir DIR [--once]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [command, flag, dir] if command == "up" && flag == "--dir" => PathBuf::from(dir),
        [command, rest @ ..] if command == "olm" => return testenv::olm_run::run(olm_options(rest)?).await,
        [command, flag, dir] if command == "node" && flag == "--dir" => return node(Path::new(dir)).await,
        [command, flag, dir, rest @ ..] if command == "run-node" && flag == "--dir" => {
            let once = match rest {
                [] => false,
                [once] if once == "--once" => true,
                _ => bail!(USAGE),
            };
            let dir = std::path::absolute(dir)?;
            return testenv::node_run::run(testenv::node_run::Options { dir, once }).await;
        }
        _ => bail!(USAGE),
    };
    // `make run` starts testenv in a session of its own, so that Ctrl-C reaches the operator alone
    // and the operator's last traces reach Jaeger before testenv stops: should `make run` die
    // without stopping it, testenv is stopped as by its SIGTERM.
    stop_with_parent();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    tokio::pin!(stop);
    // A signal while starting drops what was started so far (the cluster deletes itself).
    let running = tokio::select! {
        running = up(&dir) => running?,
        () = &mut stop => return Ok(()),
    };
    let mut refresh = tokio::time::interval(TOKEN_REFRESH);
    refresh.tick().await;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = refresh.tick() => {
                if let Err(error) = write_token(&running.cluster, &running.token_file).await {
                    eprintln!("testenv: cannot renew the operator's token: {error:#}");
                }
            }
        }
    }
    drop(running);
    Ok(())
}

/// `testenv node`: a fresh node in `dir` until SIGTERM or Ctrl-C.
async fn node(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let dir = std::path::absolute(dir)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let options =
        testenv::node::NodeOptions { volumes: VOLUMES, dir: Some(dir), ..testenv::node::NodeOptions::default() };
    let node = tokio::select! {
        node = testenv::node::RealNode::start(options) => node?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = term.recv() => return Ok(()),
    };
    println!("kubeconfig: {}", node.admin_kubeconfig().display());
    println!("kubectl: {}", node.kubectl().display());
    println!(
        "images: push with the registry at {} (pods pull from it); Ctrl-C stops the node",
        testenv::node::config::registry_host()
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    drop(node);
    Ok(())
}

/// The arguments of `testenv olm`.
fn olm_options(args: &[String]) -> anyhow::Result<testenv::olm_run::Options> {
    let (mut dir, mut operator, mut from, mut once) = (None, None, None, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--operator" => operator = args.next().map(PathBuf::from),
            "--from" => from = args.next().cloned(),
            "--once" => once = true,
            other => bail!("testenv olm: unknown argument {other:?}"),
        }
    }
    Ok(testenv::olm_run::Options {
        dir: dir.context("testenv olm needs --dir DIR")?,
        operator: operator.context("testenv olm needs --operator BINARY (this checkout's tenant-operator)")?,
        from: from.filter(|version| !version.is_empty()),
        once,
    })
}

/// Has the kernel send SIGTERM to this process when the one that started it dies.
fn stop_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls, touching no memory.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        // The parent died before the call: no signal will come.
        if libc::getppid() != parent {
            libc::raise(libc::SIGTERM);
        }
    }
}

async fn up(dir: &Path) -> anyhow::Result<Running> {
    let root = repo_root();
    let cluster = KwokCluster::start(dir, VOLUMES).await.context("starting the kwok cluster")?;
    let client = cluster.admin_client().await?;

    // The operator's conversion webhook, as OLM would set it up: a serving certificate in a
    // directory the operator reads (--webhook-cert-dir), an address it listens on
    // (--webhook-address), and the CRD calling it there.
    let pki = testenv::Pki::new()?;
    let certs = std::path::absolute(dir.join("webhook-certs"))?;
    pki.write_loopback_pair(&certs, "neurallog-tenant-operator-webhook")?;
    let webhook = format!("127.0.0.1:{}", testenv::free_port()?);
    let crd = root.join("config/crd/bases/neurallog.io_tenants.yaml");
    testenv::install_crd_converting(client.clone(), &crd, &format!("https://{webhook}/convert"), &pki.ca_pem)
        .await
        .context("installing the CRD")?;
    let backups = root.join("config/crd/bases/neurallog.io_tenantbackups.yaml");
    testenv::install_crd(client.clone(), &backups).await.context("installing the TenantBackup CRD")?;
    println!("webhook address: {webhook}");
    println!("webhook certs: {}", certs.display());

    // The operator's identity and rights, bound as config/default binds them.
    grant_operator(&client, &root.join("config/rbac")).await.context("granting the operator its RBAC")?;
    let token_file = std::path::absolute(dir.join("operator.token"))?;
    write_token(&cluster, &token_file).await?;
    let operator_kubeconfig = std::path::absolute(dir.join("operator.kubeconfig"))?;
    write_operator_kubeconfig(&cluster, &token_file, &operator_kubeconfig)?;
    wait_granted(&operator_kubeconfig).await?;

    // NeuralLog Auth is a third-party service; its stand-in lets the local run show registration.
    let auth = testenv::auth::AuthStandIn::start().await.context("starting the Auth stand-in")?;
    println!("auth: {}", auth.url());
    // A real Jaeger receives the operator's traces, so the local run shows them too.
    let jaeger = testenv::jaeger::Jaeger::start().await.context("starting Jaeger")?;
    println!("otlp: {}", jaeger.otlp_grpc_endpoint());
    println!("jaeger: {}", jaeger.query_url());
    println!("cluster: {}", cluster.name());
    println!("ready: {}", cluster.server());
    println!("admin kubeconfig: {}", std::path::absolute(cluster.kubeconfig())?.display());
    println!("operator kubeconfig: {}", operator_kubeconfig.display());
    Ok(Running { _jaeger: jaeger, _auth: auth, cluster, token_file })
}

/// Creates the operator's namespace, then every object `rbac_dir/kustomization.yaml` lists, the
/// namespaced ones in that namespace (as `config/default` does): the ServiceAccount, the
/// ClusterRole bound to it cluster-wide, the tenant-secrets ClusterRole the operator binds itself in
/// each tenant namespace, and the Roles and RoleBindings of its own namespace.
async fn grant_operator(client: &Client, rbac_dir: &Path) -> anyhow::Result<()> {
    let namespace =
        Namespace { metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
    let kustomization = rbac_dir.join("kustomization.yaml");
    let listing: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&kustomization).with_context(|| format!("cannot read {}", kustomization.display()))?,
    )?;
    let files = listing
        .get("resources")
        .and_then(serde_yaml::Value::as_sequence)
        .with_context(|| format!("{} lists no resources", kustomization.display()))?;
    for file in files {
        let file = file
            .as_str()
            .with_context(|| format!("{} lists a resource that is not a path", kustomization.display()))?;
        let path = rbac_dir.join(file);
        let mut object: DynamicObject = serde_yaml::from_str(
            &std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a Kubernetes object", path.display()))?;
        let types = object.types.clone().with_context(|| format!("{} has no apiVersion or kind", path.display()))?;
        let gvk = kube::api::GroupVersionKind::try_from(&types)?;
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
        let api = if capabilities.scope == Scope::Namespaced {
            object.metadata.namespace = Some(NAMESPACE.into());
            Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &resource)
        } else {
            Api::<DynamicObject>::all_with(client.clone(), &resource)
        };
        api.create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot create the {} of {}", types.kind, path.display()))?;
    }
    Ok(())
}

/// Waits until the operator's kubeconfig may list tenants (the RBAC authorizer learns of bindings
/// through its own watch), so that the operator does not start before it may.
async fn wait_granted(kubeconfig: &Path) -> anyhow::Result<()> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let tenants = ApiResource {
        group: "neurallog.io".into(),
        version: "v2".into(),
        api_version: "neurallog.io/v2".into(),
        kind: "Tenant".into(),
        plural: "tenants".into(),
    };
    let api = Api::<DynamicObject>::all_with(client, &tenants);
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(error)
                    .context(format!("the operator's ServiceAccount may not list tenants after {SETTLE_TIMEOUT:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Writes a new token of the operator's ServiceAccount to `path` (replacing the file at once, so
/// the operator, which re-reads it every minute, never sees half a token).
async fn write_token(cluster: &KwokCluster, path: &Path) -> anyhow::Result<()> {
    let token = cluster.service_account_token(NAMESPACE, SERVICE_ACCOUNT, TOKEN_LIFETIME).await?;
    let new = path.with_extension("token.new");
    testenv::write_private(&new, token.as_bytes())?;
    std::fs::rename(&new, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The kubeconfig the operator runs with: the cluster's API server and CA, and the ServiceAccount's
/// token read from `token_file` (renewed before it expires, see [`TOKEN_REFRESH`]).
fn write_operator_kubeconfig(cluster: &KwokCluster, token_file: &Path, path: &Path) -> anyhow::Result<()> {
    use base64::Engine as _;
    let user = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster.name(), "cluster": {
            "server": cluster.server(),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(cluster.ca_pem()),
        }}],
        "users": [{"name": &user, "user": {"tokenFile": token_file}}],
        "contexts": [{"name": cluster.name(), "context": {"cluster": cluster.name(), "user": &user}}],
        "current-context": cluster.name(),
    });
    testenv::write_private(path, serde_yaml::to_string(&kubeconfig)?.as_bytes())
}
