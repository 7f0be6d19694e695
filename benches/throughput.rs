//! Reconcile throughput of the operator binary, in three tracing configurations: off, exporting to
//! an OTLP endpoint nobody listens on, and exporting to a real Jaeger. Each configuration gets its
//! own fresh control plane (no kube-controller-manager, no nodes: pods never run, so a tenant
//! settles in phase `Provisioning`) and its own operator process, counted through its `/metrics`.
//!
//! Per configuration:
//! - create: N tenants are created, timed until every one reports its first full status;
//! - steady: every (converged) tenant is annotated, forcing one cheap, write-free reconcile each,
//!   in rounds, timed until the operator has finished all of them;
//! - shutdown: the time from SIGTERM to the exit of the operator (which flushes its spans).
//!
//! Run with `make bench`; `BENCH_TENANTS` sets N (default 40), `BENCH_CONCURRENCY` the operator's
//! `--concurrency` (default: the operator's own). Timings are reported, never asserted.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use neurallog_tenant_operator::api::v1::{Tenant, TenantPhase};
use neurallog_tenant_operator::fixtures::TestTenant;
use serde_json::json;
use testenv::jaeger::Jaeger;
use testenv::{ControlPlane, Options, repo_root};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Child;

/// Tenants per configuration unless `BENCH_TENANTS` says otherwise.
const DEFAULT_TENANTS: u64 = 40;
/// Rounds of the steady phase: each forces one reconcile of every tenant.
const STEADY_ROUNDS: u64 = 5;
/// How often the tenant list is polled in the create phase.
const LIST_POLL: Duration = Duration::from_millis(50);
/// How often the reconcile counter is polled.
const COUNTER_POLL: Duration = Duration::from_millis(10);
/// Longest any phase may take before the benchmark fails: far beyond a healthy run.
const DEADLINE: Duration = Duration::from_secs(300);
/// How long the counter must stand still before the operator counts as idle.
const QUIET: Duration = Duration::from_secs(1);
/// Requests the benchmark sends to the API server at once when creating or annotating tenants.
const PARALLEL_REQUESTS: usize = 10;
/// The reconcile counter of `src/metrics.rs` (prometheus-client appends `_total`).
const RECONCILES: &str = "neurallog_tenant_operator_reconciles";
/// The histogram of reconcile durations of `src/metrics.rs`, observed once per reconcile.
const RECONCILE_DURATION: &str = "neurallog_tenant_operator_reconcile_duration_seconds";
/// `service.name` of the exported spans.
const SERVICE: &str = "tenant-operator-bench";
/// The annotation the steady phase bumps.
const ROUND_ANNOTATION: &str = "bench.neurallog.io/round";

#[derive(Debug, Clone, Copy)]
enum Tracing {
    Off,
    Unreachable,
    Jaeger,
}

impl Tracing {
    fn label(self) -> &'static str {
        match self {
            Tracing::Off => "tracing off",
            Tracing::Unreachable => "tracing on, unreachable endpoint",
            Tracing::Jaeger => "tracing on, Jaeger",
        }
    }
}

/// Reconciles finished within a wall time.
#[derive(Debug, Clone, Copy)]
struct Phase {
    reconciles: u64,
    wall: Duration,
}

impl Phase {
    fn rate(self) -> f64 {
        self.reconciles as f64 / self.wall.as_secs_f64()
    }
}

struct Row {
    tracing: Tracing,
    create: Phase,
    steady: Phase,
    shutdown: Duration,
    /// Traces Jaeger holds after the operator exited (Jaeger configuration only).
    traces: Option<usize>,
}

struct Settings {
    tenants: u64,
    concurrency: Option<u16>,
}

fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map(Some).map_err(|_| anyhow!("{name}={value:?} is not a valid number")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(error) => Err(anyhow!("{name}: {error}")),
    }
}

/// A loopback port that was free a moment ago (and that nobody listens on now).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET http://127.0.0.1:<port><path>`: the status code and the body.
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8(response)?)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {path} timed out"))??;
    let (head, body) = response.split_once("\r\n\r\n").with_context(|| format!("GET {path}: malformed answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path}: no status code in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The sum of a Prometheus sample over its labels (`None` when no line has it).
fn sample_sum(text: &str, sample: &str) -> anyhow::Result<Option<u64>> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(sample) else { continue };
        if !rest.starts_with(['{', ' ']) {
            continue;
        }
        let value = rest.rsplit(' ').next().unwrap_or_default();
        let value: f64 = value.parse().with_context(|| format!("unexpected sample {line:?}"))?;
        *total.get_or_insert(0) += value as u64;
    }
    Ok(total)
}

/// The reconcile counter, summed over its labels, from the Prometheus text of `/metrics`.
/// prometheus-client leaves out a labelled family until its first sample, so a missing counter is
/// zero, unless the reconcile-duration histogram (observed with every reconcile) says otherwise.
fn parse_reconciles(text: &str) -> anyhow::Result<u64> {
    let histogram = sample_sum(text, &format!("{RECONCILE_DURATION}_count"))?;
    ensure!(histogram.is_some(), "no histogram {RECONCILE_DURATION} in /metrics (renamed in src/metrics.rs?):\n{text}");
    match sample_sum(text, &format!("{RECONCILES}_total"))? {
        Some(count) => Ok(count),
        None if histogram == Some(0) => Ok(0),
        None => bail!("no counter {RECONCILES} in /metrics (renamed in src/metrics.rs?):\n{text}"),
    }
}

/// An operator process and its admin port.
struct Operator {
    child: Child,
    admin_port: u16,
}

impl Operator {
    /// Starts the operator as the plane's operator user and waits until it is ready.
    async fn start(
        plane: &ControlPlane,
        otlp_endpoint: Option<&str>,
        concurrency: Option<u16>,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let admin_port = free_port()?;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenant-operator"));
        command
            .arg("run")
            .arg("--kubeconfig")
            .arg(plane.operator_kubeconfig())
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{admin_port}"));
        if let Some(concurrency) = concurrency {
            command.arg("--concurrency").arg(concurrency.to_string());
        }
        // Only the configuration decides: nothing the operator reads may leak in from the caller.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("OTEL_") || key.starts_with("TENANT_OPERATOR_") {
                command.env_remove(key.as_ref());
            }
        }
        for key in ["KUBECONFIG", "RUST_LOG", "LOG_FORMAT", "POD_NAME", "POD_NAMESPACE"] {
            command.env_remove(key);
        }
        if let Some(endpoint) = otlp_endpoint {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint).env("OTEL_SERVICE_NAME", SERVICE);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the operator")?;
        let mut operator = Self { child, admin_port };
        operator.wait_ready().await?;
        Ok(operator)
    }

    /// Waits until `/metrics` answers and `/readyz` reports the watch caches filled.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the operator exited with {status} during startup");
            }
            let metrics = http_get(self.admin_port, "/metrics").await;
            let ready = http_get(self.admin_port, "/readyz").await;
            if let (Ok((200, _)), Ok((200, _))) = (metrics, ready) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the operator was not ready within {DEADLINE:?}");
            tokio::time::sleep(COUNTER_POLL).await;
        }
    }

    /// Reconciles finished so far.
    async fn reconciles(&mut self) -> anyhow::Result<u64> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the operator exited with {status}");
        }
        let (status, body) = http_get(self.admin_port, "/metrics").await?;
        ensure!(status == 200, "/metrics answered {status}: {body}");
        parse_reconciles(&body)
    }

    /// Waits until the counter has reached `target`; returns the count it saw.
    async fn wait_reconciles(&mut self, target: u64, what: &str) -> anyhow::Result<u64> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let count = self.reconciles().await?;
            if count >= target {
                return Ok(count);
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: the reconcile counter stayed at {count}, short of {target}, for {DEADLINE:?}"
            );
            tokio::time::sleep(COUNTER_POLL).await;
        }
    }

    /// Waits until the counter stands still for [`QUIET`]; returns it.
    async fn wait_idle(&mut self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + DEADLINE;
        let mut count = self.reconciles().await?;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(COUNTER_POLL).await;
            let now = self.reconciles().await?;
            if now != count {
                (count, since) = (now, Instant::now());
            } else if since.elapsed() >= QUIET {
                return Ok(count);
            }
            ensure!(Instant::now() < deadline, "the operator kept reconciling for {DEADLINE:?} (at {count})");
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the time that took.
    async fn terminate(mut self) -> anyhow::Result<Duration> {
        let pid = self.child.id().context("the operator exited before SIGTERM")?.to_string();
        let start = Instant::now();
        let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().context("cannot run kill")?;
        ensure!(kill.success(), "kill -TERM {pid} failed: {kill}");
        let status: ExitStatus = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .with_context(|| format!("the operator did not exit within {DEADLINE:?} of SIGTERM"))??;
        let shutdown = start.elapsed();
        ensure!(status.success(), "the operator exited with {status} after SIGTERM");
        Ok(shutdown)
    }
}

fn converged(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|status| {
        status.observed_generation.is_some()
            && status.observed_generation == tenant.metadata.generation
            && status.phase == Some(TenantPhase::Provisioning)
    })
}

fn tenant_names(count: u64) -> Vec<String> {
    (0..count).map(|i| format!("bench-{i:02}")).collect()
}

/// Creates the tenants and waits until each has its first full status.
async fn create_phase(operator: &mut Operator, tenants: &Api<Tenant>, names: &[String]) -> anyhow::Result<Phase> {
    let resource = ApiResource::erase::<Tenant>(&());
    let dynamic = Api::<DynamicObject>::all_with(tenants.clone().into_client(), &resource);
    let before = operator.reconciles().await?;
    let start = Instant::now();
    futures::stream::iter(names)
        .map(|name| {
            let manifest = TestTenant::new(name).manifest();
            let dynamic = dynamic.clone();
            async move {
                let object: DynamicObject = serde_json::from_value(manifest)?;
                dynamic.create(&PostParams::default(), &object).await.with_context(|| format!("cannot create {name}"))
            }
        })
        .buffer_unordered(PARALLEL_REQUESTS)
        .try_collect::<Vec<_>>()
        .await?;
    loop {
        let list = tenants.list(&ListParams::default()).await.context("cannot list tenants")?;
        let pending: Vec<&Tenant> = list.items.iter().filter(|t| !converged(t)).collect();
        if list.items.len() == names.len() && pending.is_empty() {
            break;
        }
        if start.elapsed() > DEADLINE {
            let mut report = String::new();
            for tenant in pending.iter().take(5) {
                let status = tenant.status.as_ref();
                let _ = writeln!(
                    report,
                    "  {}: generation {:?}, observedGeneration {:?}, phase {:?}",
                    tenant.metadata.name.as_deref().unwrap_or("?"),
                    tenant.metadata.generation,
                    status.and_then(|s| s.observed_generation),
                    status.and_then(|s| s.phase),
                );
            }
            bail!(
                "{} of {} tenants did not reach phase Provisioning with their generation observed within \
                 {DEADLINE:?}, for example:\n{report}",
                pending.len() + names.len().saturating_sub(list.items.len()),
                names.len()
            );
        }
        tokio::time::sleep(LIST_POLL).await;
    }
    let wall = start.elapsed();
    let after = operator.reconciles().await?;
    Ok(Phase { reconciles: after - before, wall })
}

/// Annotates every tenant once per round, each round waiting for one reconcile per tenant.
async fn steady_phase(operator: &mut Operator, tenants: &Api<Tenant>, names: &[String]) -> anyhow::Result<Phase> {
    let count = names.len() as u64;
    let base = operator.reconciles().await?;
    let start = Instant::now();
    for round in 1..=STEADY_ROUNDS {
        let patch = json!({"metadata": {"annotations": {ROUND_ANNOTATION: round.to_string()}}});
        futures::stream::iter(names)
            .map(|name| {
                let patch = &patch;
                async move {
                    tenants
                        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .with_context(|| format!("cannot annotate {name}"))
                }
            })
            .buffer_unordered(PARALLEL_REQUESTS)
            .try_collect::<Vec<_>>()
            .await?;
        operator.wait_reconciles(base + round * count, &format!("steady round {round}")).await?;
    }
    let wall = start.elapsed();
    let after = operator.reconciles().await?;
    Ok(Phase { reconciles: after - base, wall })
}

/// The last lines of a file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn run(tracing: Tracing, settings: &Settings) -> anyhow::Result<Row> {
    let jaeger = match tracing {
        Tracing::Jaeger => Some(Jaeger::start().await.context("jaeger does not start")?),
        _ => None,
    };
    let endpoint = match tracing {
        Tracing::Off => None,
        Tracing::Unreachable => Some(format!("http://127.0.0.1:{}", free_port()?)),
        Tracing::Jaeger => jaeger.as_ref().map(Jaeger::otlp_grpc_endpoint),
    };
    let plane = ControlPlane::start(Options::default()).await.context("the control plane does not start")?;
    let root = repo_root();
    plane.install_crd(&root.join("config/crd/bases/neurallog.io_tenants.yaml")).await?;
    plane.grant_operator(&root.join("config/rbac/role.yaml")).await?;
    let tenants = Api::<Tenant>::all(plane.admin_client().await?);
    let names = tenant_names(settings.tenants);

    let log = plane.dir().join("operator.log");
    let measured = async {
        let mut operator = Operator::start(&plane, endpoint.as_deref(), settings.concurrency, &log).await?;
        let create = create_phase(&mut operator, &tenants, &names).await.context("create phase")?;
        let at_convergence = operator.reconciles().await?;
        let idle = operator.wait_idle().await?;
        eprintln!(
            "bench:   create: {} reconciles in {:.3}s; {} more (after the last tenant converged) until idle",
            create.reconciles,
            create.wall.as_secs_f64(),
            idle - at_convergence
        );
        let steady = steady_phase(&mut operator, &tenants, &names).await.context("steady phase")?;
        eprintln!("bench:   steady: {} reconciles in {:.3}s", steady.reconciles, steady.wall.as_secs_f64());
        let shutdown = operator.terminate().await?;
        eprintln!("bench:   shutdown: {:.3}s", shutdown.as_secs_f64());
        anyhow::Ok((create, steady, shutdown))
    };
    let (create, steady, shutdown) = measured
        .await
        .map_err(|error| anyhow!("{error:#}\n--- last lines of the operator's log ---\n{}", tail(&log, 30)))?;

    let traces = match &jaeger {
        Some(jaeger) => {
            // The operator flushed its spans before it exited; Jaeger stores them within moments.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(jaeger.traces(SERVICE).await?.len())
        }
        None => None,
    };
    Ok(Row { tracing, create, steady, shutdown, traces })
}

fn print_table(rows: &[Row], settings: &Settings) {
    let concurrency = settings.concurrency.map_or_else(|| "the operator's default".to_owned(), |c| c.to_string());
    println!();
    println!(
        "Reconcile throughput: {} tenants, {STEADY_ROUNDS} steady rounds, concurrency {concurrency}, one fresh \
         control plane per configuration.",
        settings.tenants
    );
    println!();
    let header = [
        "configuration",
        "create reconciles",
        "create wall s",
        "create rec/s",
        "steady reconciles",
        "steady wall s",
        "steady rec/s",
        "shutdown s",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for row in rows {
        table.push(vec![
            row.tracing.label().to_owned(),
            row.create.reconciles.to_string(),
            format!("{:.3}", row.create.wall.as_secs_f64()),
            format!("{:.1}", row.create.rate()),
            row.steady.reconciles.to_string(),
            format!("{:.3}", row.steady.wall.as_secs_f64()),
            format!("{:.1}", row.steady.rate()),
            format!("{:.3}", row.shutdown.as_secs_f64()),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|column| table.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    for (index, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(column, (cell, width))| {
                    if column == 0 { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                },
            )
            .collect();
        println!("| {} |", cells.join(" | "));
        if index == 0 {
            let rules: Vec<String> = widths
                .iter()
                .enumerate()
                .map(
                    |(column, width)| {
                        if column == 0 { "-".repeat(*width) } else { format!("{}:", "-".repeat(width - 1)) }
                    },
                )
                .collect();
            println!("| {} |", rules.join(" | "));
        }
    }
    for row in rows {
        if let Some(traces) = row.traces {
            println!();
            println!("Jaeger stored {traces} traces of {SERVICE} ({}).", row.tracing.label());
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tenants = env_number::<u64>("BENCH_TENANTS")?.unwrap_or(DEFAULT_TENANTS);
    ensure!((1..=999).contains(&tenants), "BENCH_TENANTS must be between 1 and 999, not {tenants}");
    let concurrency = env_number::<u16>("BENCH_CONCURRENCY")?;
    ensure!(concurrency != Some(0), "BENCH_CONCURRENCY must be at least 1");
    let settings = Settings { tenants, concurrency };

    let mut rows = Vec::new();
    for tracing in [Tracing::Off, Tracing::Unreachable, Tracing::Jaeger] {
        eprintln!("bench: {} ...", tracing.label());
        let row = run(tracing, &settings).await.with_context(|| format!("configuration \"{}\"", tracing.label()))?;
        rows.push(row);
    }
    print_table(&rows, &settings);
    Ok(())
}
