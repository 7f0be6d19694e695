//! `make run NODE=1`: the operator and the sample tenant on a real node, where pods really run. The
//! operator is installed from its image as `README.md` says without OLM (`config/crd`, then
//! `config/default`), exports its traces to a Jaeger on this machine, and the sample tenant of
//! `config/samples/` runs with the images `make images` built (NeuralLog's server and registry
//! are the stand-ins of `tools/standins`). Prints how to reach all of it, then runs until Ctrl-C or
//! SIGTERM, when the node stops and the host is put back; with `once`, shows logs, an exec and the
//! traces once and stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use crate::jaeger::Jaeger;
use crate::node::config::NODE_IP;
use crate::node::{NodeOptions, RealNode};

/// How long the operator and the sample tenant may take to come up, and the traces to arrive.
const DEADLINE: Duration = Duration::from_secs(180);
/// The sample tenant's name, as `config/samples/` names it.
pub const SAMPLE: &str = "acme";

pub struct Options {
    /// Where the node and its logs live.
    pub dir: PathBuf,
    /// Show everything once, then stop.
    pub once: bool,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let node =
        RealNode::start(NodeOptions { volumes: 4, dir: Some(options.dir.join("node")), ..NodeOptions::default() });
    let node = tokio::select! {
        node = node => node?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = term.recv() => return Ok(()),
    };
    let jaeger = install_traced_operator(&node).await?;
    node.apply_json(&sample_tenant(&node)?)?;
    wait_running(&node).await?;

    let kubeconfig = node.admin_kubeconfig().display().to_string();
    let kubectl = format!("{} --kubeconfig {kubeconfig}", node.kubectl().display());
    println!("The operator runs from its image on a real node; the sample tenant {SAMPLE} is Running.");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  {kubectl} -n tenant-{SAMPLE} get pods");
    println!("  {kubectl} -n tenant-{SAMPLE} logs deployment/{SAMPLE}-server");
    println!("  {kubectl} -n tenant-{SAMPLE} exec {SAMPLE}-redis-0 -- redis-cli ping");
    println!("  traces: {}/search?service=neurallog-tenant-operator", jaeger.query_url());
    println!("  node logs: {}", node.dir().display());
    if options.once {
        return show_once(&node, &jaeger).await;
    }
    println!("Ctrl-C stops the node and puts the host back.");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    Ok(())
}

/// Installs the operator from its image as `make run NODE=1` does: the kustomize install, its
/// traces exported to a Jaeger on this machine (returned), rolled out. The real node's end-to-end
/// scenario installs it so too.
pub async fn install_traced_operator(node: &RealNode) -> anyhow::Result<Jaeger> {
    let jaeger = Jaeger::start().await.context("starting Jaeger")?;
    // Pods reach this machine at the node's address, not at loopback, where Jaeger listens.
    let otlp = forward(SocketAddr::new(NODE_IP.into(), crate::free_port()?), jaeger_otlp(&jaeger)?).await?;
    let operator = node.push_image("operator")?;
    let endpoint = format!("http://{otlp}");
    node.install_operator(&operator, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())])?;
    node.wait_rollout("neurallog-system", "deployment/neurallog-tenant-operator")?;
    Ok(jaeger)
}

/// `config/samples/`'s tenant with the images of this machine (pushed into the node's registry).
pub fn sample_tenant(node: &RealNode) -> anyhow::Result<serde_json::Value> {
    let path = crate::repo_root().join("config/samples/neurallog_v2_tenant.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut tenant: serde_json::Value = serde_yaml::from_str(&text)?;
    for (component, image) in [("server", "server"), ("redis", "redis"), ("registry", "registry")] {
        tenant["spec"][component]["image"] = serde_json::json!(node.push_image(image)?);
    }
    Ok(tenant)
}

async fn wait_running(node: &RealNode) -> anyhow::Result<()> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", "v2", "Tenant"));
    let tenants = Api::<DynamicObject>::all_with(node.admin_client().await?, &resource);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let tenant = tenants.get_opt(SAMPLE).await?;
        let phase = tenant.as_ref().and_then(|t| t.data["status"]["phase"].as_str()).unwrap_or_default().to_owned();
        if phase == "Running" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the sample tenant {SAMPLE} is not Running after {DEADLINE:?} (phase {phase:?})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `once`: the sample tenant's server log, an exec into its Redis, and the operator's traces in
/// Jaeger.
pub async fn show_once(node: &RealNode, jaeger: &Jaeger) -> anyhow::Result<()> {
    let namespace = format!("tenant-{SAMPLE}");
    let logs = node.kubectl_command(&["-n", &namespace, "logs", &format!("deployment/{SAMPLE}-server")]).output()?;
    ensure!(logs.status.success(), "kubectl logs failed: {}", String::from_utf8_lossy(&logs.stderr).trim());
    println!("==> kubectl logs deployment/{SAMPLE}-server\n{}", String::from_utf8_lossy(&logs.stdout).trim_end());
    let ping = node
        .kubectl_command(&["-n", &namespace, "exec", &format!("{SAMPLE}-redis-0"), "--", "redis-cli", "ping"])
        .output()?;
    let answer = String::from_utf8_lossy(&ping.stdout).trim().to_owned();
    ensure!(answer == "PONG", "kubectl exec redis-cli ping answered {answer:?}");
    println!("==> kubectl exec {SAMPLE}-redis-0 -- redis-cli ping\n{answer}");
    let deadline = Instant::now() + DEADLINE;
    let traces = loop {
        let traces = jaeger.traces("neurallog-tenant-operator").await?;
        if !traces.is_empty() {
            break traces;
        }
        if Instant::now() >= deadline {
            bail!("no trace of the operator reached Jaeger within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("==> Jaeger: {} traces of neurallog-tenant-operator", traces.len());
    Ok(())
}

/// Jaeger's OTLP/gRPC receiver as an address.
fn jaeger_otlp(jaeger: &Jaeger) -> anyhow::Result<SocketAddr> {
    let endpoint = jaeger.otlp_grpc_endpoint();
    endpoint
        .strip_prefix("http://")
        .unwrap_or(&endpoint)
        .parse()
        .with_context(|| format!("Jaeger's OTLP endpoint {endpoint}"))
}

/// Accepts TCP connections at `listen` and relays each to `to`, until this process ends.
async fn forward(listen: SocketAddr, to: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(address)
}
