//! OLM's operators as processes on the host, against a [`KwokCluster`] ([`Olm`]), and `opm serve`
//! of a file-based catalog ([`CatalogServer`]) for a gRPC CatalogSource to name by `spec.address`.
//!
//! Both operators serve health on the fixed port 8080: the second to start (or any when something
//! else holds it) logs the bind error and carries on, so several can run side by side.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{NAMESPACE, install_crds_and_namespace};
use crate::kwok::KwokCluster;
use crate::{free_port, log_tail, spawn_command, tool_dir};

/// How long the operators may take to start their workers (their informers synced).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `opm serve` may take to load a catalog and listen.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts to serve a catalog when the port picked for it was taken in the meantime.
const SERVE_ATTEMPTS: usize = 3;
/// What both operators log once their informers have synced.
const STARTED: &str = "starting workers...";
/// Lines of a log an error quotes.
const TAIL: usize = 20;

/// OLM's `olm` and `catalog` operators, running; stopped when dropped. Their logs are `olm.log`
/// and `catalog.log` in the directory given to [`start`](Self::start).
pub struct Olm {
    processes: Vec<(String, Child)>,
}

impl Olm {
    /// Creates OLM's CRDs (waiting until they are established) and the namespace [`NAMESPACE`],
    /// starts `olm --namespace olm --interval <wakeup>` and `catalog --namespace olm
    /// --install-plan-retry-timeout <install_plan_retry>` against the cluster's admin kubeconfig,
    /// and waits until both have logged `starting workers...`; fails early, with the end of its
    /// log, if one exits. `wakeup` is how often `olm` re-checks every CSV (5 minutes by default),
    /// which is when it repairs what it installed for a CSV that has since changed.
    pub async fn start(
        cluster: &KwokCluster,
        dir: &Path,
        install_plan_retry: Duration,
        wakeup: Duration,
    ) -> anyhow::Result<Self> {
        let bin = tool_dir("olm", "TESTENV_OLM_BIN")?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        install_crds_and_namespace(&cluster.admin_client().await?, &bin).await?;

        let mut olm = Self { processes: Vec::new() };
        // `olm` has no --kubeconfig flag; `catalog` has one. Neither may dial the loopback catalog
        // servers through a proxy.
        let mut command = Command::new(bin.join("olm"));
        command
            .args(["--namespace", NAMESPACE, "--interval"])
            .arg(format!("{}ms", wakeup.as_millis()))
            .env("KUBECONFIG", cluster.kubeconfig());
        command.env_remove("GRPC_PROXY").env_remove("grpc_proxy");
        olm.processes.push(("olm".into(), spawn_command("olm", command, dir)?));
        let mut command = Command::new(bin.join("catalog"));
        command
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["--namespace", NAMESPACE, "--install-plan-retry-timeout"])
            .arg(format!("{}ms", install_plan_retry.as_millis()))
            .env_remove("GRPC_PROXY")
            .env_remove("grpc_proxy");
        olm.processes.push(("catalog".into(), spawn_command("catalog", command, dir)?));
        olm.wait_started(dir).await?;
        Ok(olm)
    }

    async fn wait_started(&mut self, dir: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut waiting: Vec<String> = self.processes.iter().map(|(name, _)| name.clone()).collect();
        loop {
            for (name, child) in &mut self.processes {
                let log = dir.join(format!("{name}.log"));
                if let Some(status) = child.try_wait().with_context(|| format!("cannot check on {name}"))? {
                    bail!("{name} exited with {status} while starting; the end of its log:\n{}", log_tail(&log, TAIL));
                }
                if fs::read_to_string(&log).is_ok_and(|text| text.contains(STARTED)) {
                    waiting.retain(|waiting| waiting != name);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not start its workers within {STARTUP_TIMEOUT:?}; logs in {}",
                    waiting.join(" and "),
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Olm {
    fn drop(&mut self) {
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `opm serve` of a file-based catalog on a free loopback port; stopped when dropped. Its log is
/// `opm.log` in the directory given to [`serve`](Self::serve).
pub struct CatalogServer {
    child: Child,
    port: u16,
    /// opm's cache of the catalog: in `dir` rather than a temporary directory of opm's own, which a
    /// killed opm would leave behind.
    _cache: tempfile::TempDir,
}

impl CatalogServer {
    /// Validates the catalog directory `catalog` with `opm validate` (the error quotes opm), serves
    /// it with `opm serve <catalog> -p <port> --pprof-addr "" -t <dir>/opm-termination.log` (its
    /// cache in a temporary directory in `dir`) and waits until its gRPC port accepts connections.
    pub async fn serve(catalog: &Path, dir: &Path) -> anyhow::Result<Self> {
        let opm = tool_dir("opm", "TESTENV_OPM_BIN")?.join("opm");
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let validation = tokio::process::Command::new(&opm)
            .arg("validate")
            .arg(catalog)
            .output()
            .await
            .with_context(|| format!("cannot run {}", opm.display()))?;
        if !validation.status.success() {
            bail!(
                "opm validate {} failed ({}):\n{}{}",
                catalog.display(),
                validation.status,
                String::from_utf8_lossy(&validation.stdout),
                String::from_utf8_lossy(&validation.stderr)
            );
        }
        let log = dir.join("opm.log");
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            let cache = tempfile::Builder::new()
                .prefix("opm-cache-")
                .tempdir_in(dir)
                .with_context(|| format!("cannot create a cache directory in {}", dir.display()))?;
            let mut command = Command::new(&opm);
            command
                .arg("serve")
                .arg(catalog)
                .args(["-p", &port.to_string(), "--pprof-addr", "", "-t"])
                .arg(dir.join("opm-termination.log"))
                // An empty cache directory is filled, not an error.
                .arg("--cache-dir")
                .arg(cache.path())
                .arg("--cache-enforce-integrity=false");
            let mut server = Self { child: spawn_command("opm", command, dir)?, port, _cache: cache };
            let deadline = Instant::now() + SERVE_TIMEOUT;
            loop {
                if let Some(status) = server.child.try_wait().context("cannot check on opm serve")? {
                    if attempt < SERVE_ATTEMPTS {
                        eprintln!("testenv: opm serve exited with {status}; retrying on another port");
                        break;
                    }
                    bail!("opm serve exited with {status}; the end of its log:\n{}", log_tail(&log, TAIL));
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Ok(server);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "opm serve {} not listening after {SERVE_TIMEOUT:?}; see {}",
                        catalog.display(),
                        log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            attempt += 1;
        }
    }

    /// Where it serves, `127.0.0.1:<port>`: a CatalogSource's `spec.address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for CatalogServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `opm render <bundle_dir> -o yaml` into the file `out`: turns a bundle directory (`bundle/`)
/// into a file-based catalog's `olm.bundle` document.
pub fn render_bundle(bundle_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let opm = tool_dir("opm", "TESTENV_OPM_BIN")?.join("opm");
    let output = Command::new(&opm)
        .arg("render")
        .arg(bundle_dir)
        .args(["-o", "yaml"])
        .output()
        .with_context(|| format!("cannot run {}", opm.display()))?;
    if !output.status.success() {
        bail!(
            "opm render {} failed ({}):\n{}",
            bundle_dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::write(out, &output.stdout).with_context(|| format!("cannot write {}", out.display()))
}
