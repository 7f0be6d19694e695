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

// Shared with the other benchmarks, of which this one reads only a part.
#[allow(dead_code)]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use neurallog_tenant_operator::api::Tenant;
use neurallog_tenant_operator::api::stored::TenantPhase;
use neurallog_tenant_operator::fixtures::TestTenant;
use serde_json::json;
use support::{CpuClock, DEADLINE, Operator, cpu_between, env_number, mib, print_table, tail, writes_between};
use testenv::jaeger::Jaeger;
use testenv::{ControlPlane, Options, free_port, repo_root};

/// Tenants per configuration unless `BENCH_TENANTS` says otherwise.
const DEFAULT_TENANTS: u64 = 40;
/// Rounds of the steady phase: each forces one reconcile of every tenant.
const STEADY_ROUNDS: u64 = 5;
/// How often the tenant list is polled in the create phase.
const LIST_POLL: Duration = Duration::from_millis(50);
/// Requests the benchmark sends to the API server at once when creating or annotating tenants.
const PARALLEL_REQUESTS: usize = 10;
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
    /// Writes of the steady phase, whose reconciles find nothing to change.
    steady_writes: u64,
    shutdown: Duration,
    /// From the start of the process until it is ready.
    startup: Duration,
    peak_kib: u64,
    /// Resident memory once the steady phase is over.
    idle_kib: u64,
    /// CPU time the operator used in the create and steady phases.
    operator_cpu: Duration,
    /// Traces Jaeger holds after the operator exited (Jaeger configuration only).
    traces: Option<usize>,
}

struct Settings {
    tenants: u64,
    concurrency: Option<u16>,
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
            let manifest = TestTenant::new(name).stored_manifest();
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
    plane.install_crd(&root.join("config/crd/bases/neurallog.io_tenantbackups.yaml")).await?;
    plane.grant_operator(&root.join("config/rbac")).await?;
    let tenants = Api::<Tenant>::all(plane.admin_client().await?);
    let names = tenant_names(settings.tenants);

    let log = plane.dir().join("operator.log");
    let mut args = Vec::new();
    if let Some(concurrency) = settings.concurrency {
        args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
    }
    let env: Vec<(&str, &str)> = match &endpoint {
        Some(endpoint) => vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), ("OTEL_SERVICE_NAME", SERVICE)],
        None => Vec::new(),
    };
    let measured = async {
        let mut operator = Operator::spawn(&plane, &args, &env, &log)?;
        operator.wait_ready().await?;
        let startup = operator.started.elapsed();
        let clock = CpuClock::new(&plane, Some(&operator))?;
        let cpu_before = clock.read()?;
        let create = create_phase(&mut operator, &tenants, &names).await.context("create phase")?;
        let at_convergence = operator.reconciles().await?;
        let (idle, _) = operator.wait_idle().await?;
        eprintln!(
            "bench:   create: {} reconciles in {:.3}s; {} more (after the last tenant converged) until idle",
            create.reconciles,
            create.wall.as_secs_f64(),
            idle - at_convergence
        );
        let before = operator.writes().await?;
        let steady = steady_phase(&mut operator, &tenants, &names).await.context("steady phase")?;
        let steady_writes = writes_between(&before, &operator.writes().await?).values().sum();
        eprintln!("bench:   steady: {} reconciles in {:.3}s", steady.reconciles, steady.wall.as_secs_f64());
        let memory = operator.memory()?;
        let cpu = cpu_between(&cpu_before, &clock.read()?);
        let operator_cpu = cpu.get("operator").copied().unwrap_or_default();
        let shutdown = operator.terminate().await?;
        eprintln!("bench:   shutdown: {:.3}s", shutdown.as_secs_f64());
        anyhow::Ok(Row {
            tracing,
            create,
            steady,
            steady_writes,
            shutdown,
            startup,
            peak_kib: memory.peak_kib,
            idle_kib: memory.rss_kib,
            operator_cpu,
            traces: None,
        })
    };
    let row = measured
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
    Ok(Row { traces, ..row })
}

fn report(rows: &[Row], settings: &Settings) {
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
        "steady writes",
        "startup s",
        "peak RSS MiB",
        "idle RSS MiB",
        "operator CPU s",
        "shutdown s",
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.tracing.label().to_owned(),
                row.create.reconciles.to_string(),
                format!("{:.3}", row.create.wall.as_secs_f64()),
                format!("{:.1}", row.create.rate()),
                row.steady.reconciles.to_string(),
                format!("{:.3}", row.steady.wall.as_secs_f64()),
                format!("{:.1}", row.steady.rate()),
                row.steady_writes.to_string(),
                format!("{:.3}", row.startup.as_secs_f64()),
                mib(row.peak_kib),
                mib(row.idle_kib),
                format!("{:.2}", row.operator_cpu.as_secs_f64()),
                format!("{:.3}", row.shutdown.as_secs_f64()),
            ]
        })
        .collect();
    print_table(&header, &table);
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
    report(&rows, &settings);
    Ok(())
}
