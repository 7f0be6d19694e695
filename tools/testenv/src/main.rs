//! `testenv up --dir DIR`: starts a local control plane, writes its kubeconfigs into DIR, installs
//! the Tenant CRD (calling the operator's conversion webhook at the address it prints, with the
//! certificate it writes) and the operator's ClusterRole, starts the NeuralLog Auth stand-in and Jaeger,
//! then runs until SIGTERM or Ctrl-C. Used by `make run`.

use std::path::PathBuf;

use anyhow::Context as _;
use testenv::{ControlPlane, Options, repo_root};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: testenv up --dir DIR";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [command, flag, dir] if command == "up" && flag == "--dir" => PathBuf::from(dir),
        _ => anyhow::bail!(USAGE),
    };
    let plane = ControlPlane::start(Options {
        // The namespace controller and garbage collector make deletion work as in a real cluster;
        // the workload controllers create ReplicaSets and Pods (which stay Pending: there are no nodes).
        controllers: ["namespace", "garbagecollector", "serviceaccount", "deployment", "replicaset", "statefulset"]
            .map(String::from)
            .to_vec(),
        keep_dir: true,
        dir: Some(dir.clone()),
    })
    .await?;
    let root = repo_root();
    // The operator's conversion webhook, as OLM would set it up: a serving certificate in a
    // directory the operator reads (--webhook-cert-dir), an address it listens on
    // (--webhook-address), and the CRD calling it there.
    let pki = testenv::Pki::new()?;
    let certs = dir.join("webhook-certs");
    pki.write_loopback_pair(&certs, "neurallog-tenant-operator-webhook")?;
    let webhook = format!("127.0.0.1:{}", testenv::free_port()?);
    let crd = root.join("config/crd/bases/neurallog.io_tenants.yaml");
    plane
        .install_crd_converting(&crd, &format!("https://{webhook}/convert"), &pki.ca_pem)
        .await
        .context("installing the CRD")?;
    println!("webhook address: {webhook}");
    println!("webhook certs: {}", certs.display());
    plane.grant_operator(&root.join("config/rbac")).await.context("granting the operator role")?;
    // NeuralLog Auth is a third-party service; its stand-in lets the local run show registration.
    let auth = testenv::auth::AuthStandIn::start().await.context("starting the Auth stand-in")?;
    println!("auth: {}", auth.url());
    // A real Jaeger receives the operator's traces, so the local run shows them too.
    let jaeger = testenv::jaeger::Jaeger::start().await.context("starting Jaeger")?;
    println!("otlp: {}", jaeger.otlp_grpc_endpoint());
    println!("jaeger: {}", jaeger.query_url());
    println!("ready: {}", plane.server());
    println!("admin kubeconfig: {}", plane.admin_kubeconfig().display());
    println!("operator kubeconfig: {}", plane.operator_kubeconfig().display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    drop(jaeger);
    drop(auth);
    drop(plane);
    Ok(())
}
