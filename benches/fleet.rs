//! The operator at fleet scale, one fresh control plane (no kube-controller-manager, no nodes:
//! pods never run, so a converged tenant is in phase `Provisioning`) per measurement. Per fleet
//! size N:
//!
//! - write floor: N tenants and exactly the child objects the operator would write for them (from
//!   its own builders), created by a bare client, PARALLEL_TENANTS tenants at once and each
//!   tenant's children concurrently; timed from the first request to the last answer; once with
//!   plain POSTs, once with server-side applies;
//! - operator: N tenants created the same way while the operator runs, timed until every one
//!   reports its first full status; meanwhile one more tenant (the probe) has its spec changed
//!   over and over, each change timed until the status observes it;
//! - memory: the operator's peak and idle RSS from `/proc`, and per tenant;
//! - writes: per tenant on first convergence, by verb and resource (from the operator's own
//!   request counter), and those of one forced reconcile of every converged tenant (want: none);
//! - restart: a new operator process over the N existing tenants: time to its first reconcile,
//!   to a quiet steady state (every tenant reconciled, nothing reconciling any more), and the
//!   writes that took (want: none);
//! - CPU: seconds used by each process while the fleet converged and while each floor ran.
//!
//! Run with `make bench`. `BENCH_FLEET` lists the sizes (default `200,1000`; `10000` is left out
//! until the benchmark's own convergence detection finishes at that size); the write
//! floor is measured up to 1,000 tenants. `BENCH_CONCURRENCY` sets the operator's
//! `--concurrency` (default: its own). Figures are reported, never asserted; `docs/performance.md`
//! explains them.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt};
use neurallog_tenant_operator::api::Tenant;
use neurallog_tenant_operator::api::stored::TenantPhase;
use neurallog_tenant_operator::fixtures::TestTenant;
use neurallog_tenant_operator::resources::{Platform, namespace, network, quota, redis, registry, server};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use support::{CpuClock, Memory, Operator, Writes, cpu_between, env_number, mib, print_table, tail, writes_between};
use testenv::{ControlPlane, Options, repo_root};

/// CPU time by process name.
type Cpu = std::collections::BTreeMap<String, Duration>;

/// Fleet sizes unless `BENCH_FLEET` says otherwise.
const DEFAULT_SIZES: &[u64] = &[200, 1000];
/// The largest fleet whose write floor is measured (the goal compares up to 1,000).
const FLOOR_UP_TO: u64 = 1000;
/// Tenants the benchmark creates at once, in the floor and the operator run alike.
const PARALLEL_TENANTS: usize = 16;
/// The tenant whose spec changes while the fleet converges.
const PROBE: &str = "probe";
/// How often the probe's status is read while a change is pending.
const PROBE_POLL: Duration = Duration::from_millis(20);
/// How long the watch's count of converged tenants may stand still before a list checks it.
const WATCH_STALL: Duration = Duration::from_secs(10);
/// The pause between one observed probe change and the next.
const PROBE_PAUSE: Duration = Duration::from_millis(100);
/// The annotation that forces one reconcile of every converged tenant.
const TOUCH_ANNOTATION: &str = "bench.neurallog.io/touched";

fn tenant_names(count: u64) -> Vec<String> {
    (0..count).map(|i| format!("fleet-{i:05}")).collect()
}

fn converged(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|status| {
        status.observed_generation.is_some()
            && status.observed_generation == tenant.metadata.generation
            && status.phase == Some(TenantPhase::Provisioning)
    })
}

/// Creates a tenant as `kubectl create` would, with an empty spec.
async fn create_tenant(client: &Client, name: &str) -> anyhow::Result<Tenant> {
    let resource = ApiResource::erase::<Tenant>(&());
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let object: DynamicObject = serde_json::from_value(TestTenant::new(name).stored_manifest())?;
    let created = api.create(&PostParams::default(), &object).await.with_context(|| format!("cannot create {name}"))?;
    Ok(created.try_parse()?)
}

async fn create_tenants(client: &Client, names: &[String]) -> anyhow::Result<()> {
    futures::stream::iter(names)
        .map(|name| create_tenant(client, name))
        .buffer_unordered(PARALLEL_TENANTS)
        .try_for_each(|_| std::future::ready(Ok(())))
        .await
}

/// How the write floor writes each child.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// A plain POST: the cheapest write the API server has.
    Post,
    /// A server-side apply (what the operator sends): the API server also works out who owns
    /// which field.
    Apply,
}

fn send<K>(api: Api<K>, object: K, write: Write) -> BoxFuture<'static, anyhow::Result<()>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    async move {
        let name = object.name_any();
        match write {
            Write::Post => api.create(&PostParams::default(), &object).await,
            Write::Apply => api.patch(&name, &PatchParams::apply("write-floor").force(), &Patch::Apply(&object)).await,
        }
        .with_context(|| format!("cannot create {name}"))?;
        Ok(())
    }
    .boxed()
}

fn child<K>(client: &Client, namespace: &str, object: K, write: Write) -> BoxFuture<'static, anyhow::Result<()>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    send(Api::namespaced(client.clone(), namespace), object, write)
}

/// One tenant and the children the operator would give it, as plain POSTs: the tenant, its
/// namespace, then every child at once.
async fn create_with_children(client: &Client, name: &str, platform: &Platform, write: Write) -> anyhow::Result<()> {
    let tenant = create_tenant(client, name).await?;
    let model = tenant.model().map_err(|invalid| anyhow!("{name}: {invalid}"))?;
    send(Api::all(client.clone()), namespace::namespace(&model, None), write).await?;
    let ns = model.namespace.as_str();
    let mut posts = Vec::new();
    for policy in network::network_policies(&model, platform) {
        posts.push(child(client, ns, policy, write));
    }
    if let Some(quota) = quota::resource_quota(&model) {
        posts.push(child(client, ns, quota, write));
    }
    if let Some(limits) = quota::limit_range(&model) {
        posts.push(child(client, ns, limits, write));
    }
    posts.push(child(client, ns, redis::secret(&model, &redis::generate_password()), write));
    posts.push(child(client, ns, redis::config_map(&model), write));
    posts.push(child(client, ns, redis::service(&model), write));
    posts.push(child(client, ns, redis::stateful_set(&model, platform), write));
    posts.push(child(client, ns, server::service(&model), write));
    posts.push(child(client, ns, server::deployment(&model, platform), write));
    posts.push(child(client, ns, registry::service(&model), write));
    posts.push(child(client, ns, registry::deployment(&model, platform), write));
    if let Some(ingress) = registry::ingress(&model, platform) {
        posts.push(child(client, ns, ingress, write));
    }
    futures::future::try_join_all(posts).await?;
    Ok(())
}

/// A control plane with the CRD installed and the operator's ClusterRole granted.
async fn fresh_plane() -> anyhow::Result<ControlPlane> {
    let plane = ControlPlane::start(Options::default()).await.context("the control plane does not start")?;
    let root = repo_root();
    plane.install_crd(&root.join("config/crd/bases/neurallog.io_tenants.yaml")).await?;
    plane.install_crd(&root.join("config/crd/bases/neurallog.io_tenantbackups.yaml")).await?;
    plane.grant_operator(&root.join("config/rbac")).await?;
    Ok(plane)
}

/// The write floor: its time, and the CPU time each process used meanwhile.
struct Floor {
    wall: Duration,
    cpu: Cpu,
}

async fn write_floor(names: &[String], write: Write) -> anyhow::Result<Floor> {
    let plane = fresh_plane().await?;
    let client = plane.admin_client().await?;
    let platform = Platform::default();
    let clock = CpuClock::new(&plane, None)?;
    let cpu_before = clock.read()?;
    let start = Instant::now();
    futures::stream::iter(names)
        .map(|name| create_with_children(&client, name, &platform, write))
        .buffer_unordered(PARALLEL_TENANTS)
        .try_for_each(|()| std::future::ready(Ok(())))
        .await?;
    let wall = start.elapsed();
    Ok(Floor { wall, cpu: cpu_between(&cpu_before, &clock.read()?) })
}

/// What the benchmark's own watch of the tenants has seen.
#[derive(Debug, Clone, Default)]
struct Seen {
    synced: bool,
    /// Fleet tenants (the probe left out) that have converged.
    converged: usize,
    all_converged_at: Option<Instant>,
}

/// Watches every tenant, publishing what [`Seen`] counts, until the task is aborted.
fn watch_tenants(client: Client, fleet: usize) -> (tokio::sync::watch::Receiver<Seen>, AbortOnDrop) {
    let (seen_tx, seen) = tokio::sync::watch::channel(Seen::default());
    let task = tokio::spawn(async move {
        let mut converged_names = HashSet::new();
        let events = watcher(Api::<Tenant>::all(client), watcher::Config::default()).default_backoff();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let tenant = match event {
                Ok(watcher::Event::InitDone) => {
                    seen_tx.send_modify(|seen| seen.synced = true);
                    continue;
                }
                Ok(watcher::Event::Apply(tenant) | watcher::Event::InitApply(tenant)) => tenant,
                Ok(_) => continue,
                Err(error) => {
                    eprintln!("bench: tenant watch: {error}");
                    continue;
                }
            };
            let name = tenant.name_any();
            if name == PROBE {
                continue;
            }
            if converged(&tenant) {
                converged_names.insert(name);
            } else {
                converged_names.remove(&name);
            }
            seen_tx.send_modify(|seen| {
                seen.converged = converged_names.len();
                if seen.converged == fleet && seen.all_converged_at.is_none() {
                    seen.all_converged_at = Some(Instant::now());
                }
            });
        }
    });
    (seen, AbortOnDrop(task))
}

/// Whether every tenant of the fleet has converged, by a list: the check behind a watch that
/// stopped counting (it should not; it is said when it happens).
async fn listed_converged(tenants: &Api<Tenant>, fleet: usize) -> anyhow::Result<bool> {
    let list = tenants.list(&ListParams::default()).await.context("cannot list the tenants")?;
    Ok(list.items.iter().filter(|tenant| tenant.name_any() != PROBE && converged(tenant)).count() == fleet)
}

/// Changes the probe's spec and waits until its status observes the new generation. Polled (one
/// small GET at a time), so it depends on no watch.
async fn probe_once(tenants: &Api<Tenant>, replicas: i32) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let patch = json!({"spec": {"server": {"replicas": replicas}}});
    let changed = tenants.patch(PROBE, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let generation = changed.meta().generation.context("the probe has no generation")?;
    loop {
        let probe = tenants.get(PROBE).await.context("cannot read the probe")?;
        if probe.status.as_ref().and_then(|s| s.observed_generation) >= Some(generation) {
            return Ok(start.elapsed());
        }
        ensure!(start.elapsed() < support::DEADLINE, "the probe's change was never observed");
        tokio::time::sleep(PROBE_POLL).await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Figures of one fleet size.
struct Fleet {
    tenants: u64,
    floor: Option<Floor>,
    /// The floor with server-side applies instead of POSTs.
    apply_floor: Option<Floor>,
    converge: Duration,
    /// CPU time by process while the fleet converged.
    cpu: Cpu,
    /// Reconciles until the operator was idle again.
    reconciles: u64,
    baseline: Memory,
    peak_kib: u64,
    idle_kib: u64,
    probe: Vec<Duration>,
    writes: Writes,
    touched_writes: u64,
    restart_first: Duration,
    restart_quiet: Duration,
    restart_writes: u64,
    restart_peak_kib: u64,
    scrape: ScrapeCost,
}

/// What scraping `/metrics` costs over an idle fleet: the exposition's size, and the operator's CPU
/// over [`SCRAPE_WINDOW`] without a scrape and with one every [`SCRAPE_EVERY`].
#[derive(Debug, Clone, Default)]
struct ScrapeCost {
    series: usize,
    bytes: usize,
    /// Time of each scrape in the scraped window.
    times: Vec<Duration>,
    idle_cpu: Duration,
    scraped_cpu: Duration,
}

/// The scrape-cost windows: a minute each, one scrape a second in the second.
const SCRAPE_WINDOW: Duration = Duration::from_secs(60);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// The operator's CPU over a quiet window, then over a window scraped every second; the size of
/// the last exposition.
async fn scrape_cost(operator: &mut Operator, clock: &CpuClock) -> anyhow::Result<ScrapeCost> {
    let operator_cpu = |before: &BTreeMap<String, Duration>, after: &BTreeMap<String, Duration>| {
        cpu_between(before, after).get("operator").copied().unwrap_or_default()
    };
    let before = clock.read()?;
    tokio::time::sleep(SCRAPE_WINDOW).await;
    let idle_cpu = operator_cpu(&before, &clock.read()?);
    let before = clock.read()?;
    let start = Instant::now();
    let mut ticks = tokio::time::interval(SCRAPE_EVERY);
    let (mut times, mut last) = (Vec::new(), String::new());
    while start.elapsed() < SCRAPE_WINDOW {
        ticks.tick().await;
        let (took, body) = operator.scrape().await?;
        times.push(took);
        last = body;
    }
    let scraped_cpu = operator_cpu(&before, &clock.read()?);
    let series = last.lines().filter(|line| !line.is_empty() && !line.starts_with('#')).count();
    Ok(ScrapeCost { series, bytes: last.len(), times, idle_cpu, scraped_cpu })
}

impl Fleet {
    fn per_tenant_kib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.baseline.rss_kib) as f64 / self.tenants as f64
    }

    /// A percentile of the probe's times (nearest rank).
    fn probe_percentile(&self, percent: usize) -> Option<Duration> {
        let mut sorted = self.probe.clone();
        sorted.sort();
        let rank = (sorted.len() * percent).div_ceil(100);
        sorted.get(rank.checked_sub(1)?).copied()
    }
}

async fn operator_run(names: &[String], concurrency: Option<u16>) -> anyhow::Result<Fleet> {
    let plane = fresh_plane().await?;
    let client = plane.admin_client().await?;
    let tenants = Api::<Tenant>::all(client.clone());
    let mut args = Vec::new();
    if let Some(concurrency) = concurrency {
        args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
    }
    let log = plane.dir().join("operator.log");
    let restart_log = plane.dir().join("operator-restarted.log");
    let measured = async {
        let mut operator = Operator::spawn(&plane, &args, &[], &log)?;
        operator.wait_ready().await?;
        let baseline = operator.memory()?;

        let (mut seen, _watch) = watch_tenants(client.clone(), names.len());
        seen.wait_for(|seen| seen.synced).await?;
        create_tenant(&client, PROBE).await?;
        probe_once(&tenants, 1).await.context("the probe does not converge")?;
        let (reconciles_before, _) = operator.wait_idle().await?;
        let before = operator.writes().await?;
        let clock = CpuClock::new(&plane, Some(&operator))?;
        let cpu_before = clock.read()?;

        eprintln!("bench:   creating {} tenants", names.len());
        let start = Instant::now();
        let create = create_tenants(&client, names);
        let probes = async {
            let mut times = Vec::new();
            let (mut count, mut counted_at) = (0, Instant::now());
            loop {
                let now = seen.borrow().clone();
                if let Some(at) = now.all_converged_at {
                    return anyhow::Ok((times, at));
                }
                if now.converged != count {
                    (count, counted_at) = (now.converged, Instant::now());
                } else if counted_at.elapsed() > WATCH_STALL && listed_converged(&tenants, names.len()).await? {
                    eprintln!("bench:   the tenant watch stopped counting; convergence taken from a list");
                    return anyhow::Ok((times, Instant::now()));
                }
                times.push(probe_once(&tenants, 2 - (times.len() as i32 % 2)).await?);
                tokio::time::sleep(PROBE_PAUSE).await;
            }
        };
        let ((), (probe, converged_at)) = futures::try_join!(create, probes)?;
        let converge = converged_at - start;
        let cpu = cpu_between(&cpu_before, &clock.read()?);
        let (reconciles, _) = operator.wait_idle().await?;
        let reconciles = reconciles - reconciles_before;
        let writes = writes_between(&before, &operator.writes().await?);
        eprintln!("bench:   converged in {:.1}s; {} probe changes", converge.as_secs_f64(), probe.len());

        let before = operator.writes().await?;
        let before_touch = operator.reconciles().await?;
        let touch = json!({"metadata": {"annotations": {TOUCH_ANNOTATION: "1"}}});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&touch));
        futures::stream::iter(names)
            .map(|name| tenants.patch(name, &params, &patch))
            .buffer_unordered(PARALLEL_TENANTS)
            .try_for_each(|_| std::future::ready(Ok(())))
            .await?;
        operator.wait_reconciles(before_touch + names.len() as u64, "touch every tenant").await?;
        operator.wait_idle().await?;
        let touched_writes = writes_between(&before, &operator.writes().await?).values().sum();
        eprintln!("bench:   the cost of a scrape a second, over {} idle tenants", names.len());
        let scrape = scrape_cost(&mut operator, &clock).await?;
        let memory = operator.memory()?;
        operator.terminate().await?;

        eprintln!("bench:   restarting over {} tenants", names.len());
        let mut restarted = Operator::spawn(&plane, &args, &[], &restart_log)?;
        restarted.wait_reconciles(1, "first reconcile after a restart").await?;
        let restart_first = restarted.started.elapsed();
        restarted.wait_reconciles(names.len() as u64 + 1, "every tenant after a restart").await?;
        let (_, quiet_since) = restarted.wait_idle().await?;
        let restart_quiet = quiet_since - restarted.started;
        let restart_writes = restarted.writes().await?.values().sum();
        let restart_peak_kib = restarted.memory()?.peak_kib;
        restarted.terminate().await?;
        anyhow::Ok(Fleet {
            tenants: names.len() as u64,
            floor: None,
            apply_floor: None,
            converge,
            cpu,
            reconciles,
            baseline,
            peak_kib: memory.peak_kib,
            idle_kib: memory.rss_kib,
            probe,
            writes,
            touched_writes,
            restart_first,
            restart_quiet,
            restart_writes,
            restart_peak_kib,
            scrape,
        })
    };
    measured.await.map_err(|error| {
        anyhow!(
            "{error:#}\n--- last lines of the operator's log ---\n{}\n--- of the restarted operator's log ---\n{}",
            tail(&log, 30),
            tail(&restart_log, 30)
        )
    })
}

fn secs(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64())
}

fn report(fleets: &[Fleet], concurrency: Option<u16>) {
    let concurrency = concurrency.map_or_else(|| "the operator's default".to_owned(), |c| c.to_string());
    println!();
    println!(
        "Fleet: tenants with an empty spec, created {PARALLEL_TENANTS} at a time, operator concurrency \
         {concurrency}, one fresh control plane per measurement."
    );
    println!();
    let header = [
        "tenants",
        "write floor s",
        "operator s",
        "ratio",
        "apply floor s",
        "ratio to it",
        "peak RSS MiB",
        "idle RSS MiB",
        "KiB/tenant",
        "spec→status p50/p99/max s (changes)",
        "reconciles/tenant",
        "writes/tenant",
        "writes, converged",
        "restart: 1st reconcile s",
        "restart: quiet s",
        "restart writes",
        "restart peak MiB",
    ];
    let rows: Vec<Vec<String>> = fleets
        .iter()
        .map(|fleet| {
            let writes: u64 = fleet.writes.values().sum();
            vec![
                fleet.tenants.to_string(),
                fleet.floor.as_ref().map_or_else(|| "-".to_owned(), |floor| secs(floor.wall)),
                secs(fleet.converge),
                fleet.floor.as_ref().map_or_else(
                    || "-".to_owned(),
                    |floor| format!("{:.2}", fleet.converge.as_secs_f64() / floor.wall.as_secs_f64()),
                ),
                fleet.apply_floor.as_ref().map_or_else(|| "-".to_owned(), |floor| secs(floor.wall)),
                fleet.apply_floor.as_ref().map_or_else(
                    || "-".to_owned(),
                    |floor| format!("{:.2}", fleet.converge.as_secs_f64() / floor.wall.as_secs_f64()),
                ),
                mib(fleet.peak_kib),
                mib(fleet.idle_kib),
                format!("{:.1}", fleet.per_tenant_kib()),
                {
                    let at = |percent| {
                        fleet
                            .probe_percentile(percent)
                            .map_or_else(|| "-".to_owned(), |p| format!("{:.2}", p.as_secs_f64()))
                    };
                    format!("{}/{}/{} ({})", at(50), at(99), at(100), fleet.probe.len())
                },
                format!("{:.2}", fleet.reconciles as f64 / fleet.tenants as f64),
                format!("{:.2}", writes as f64 / fleet.tenants as f64),
                fleet.touched_writes.to_string(),
                format!("{:.2}", fleet.restart_first.as_secs_f64()),
                secs(fleet.restart_quiet),
                fleet.restart_writes.to_string(),
                mib(fleet.restart_peak_kib),
            ]
        })
        .collect();
    print_table(&header, &rows);
    println!();
    println!(
        "CPU seconds by process: W = while the write floor was measured, O = while the operator converged the fleet."
    );
    println!();
    let processes = ["kube-apiserver", "etcd", "operator", "benchmark"];
    let mut cpu_rows = Vec::new();
    for fleet in fleets {
        let runs = [
            ("W", fleet.floor.as_ref().map(|floor| &floor.cpu)),
            ("A", fleet.apply_floor.as_ref().map(|floor| &floor.cpu)),
            ("O", Some(&fleet.cpu)),
        ];
        for (run, cpu) in runs.into_iter().filter_map(|(run, cpu)| Some((run, cpu?))) {
            let mut row = vec![format!("{} {run}", fleet.tenants)];
            row.extend(processes.iter().map(|p| cpu.get(*p).map_or_else(|| "-".to_owned(), |t| secs(*t))));
            cpu_rows.push(row);
        }
    }
    let mut cpu_header = vec!["tenants"];
    cpu_header.extend(processes);
    print_table(&cpu_header, &cpu_rows);
    println!();
    println!(
        "Scraping /metrics (in the clear here: the HTTPS server's cost is a TLS session per connection and \
         a token review every 10 s) over the idle fleet: operator CPU over {}s without scrapes and with one \
         every {}s.",
        SCRAPE_WINDOW.as_secs(),
        SCRAPE_EVERY.as_secs()
    );
    println!();
    let scrape_rows: Vec<Vec<String>> = fleets
        .iter()
        .map(|fleet| {
            let scrape = &fleet.scrape;
            let mut times = scrape.times.clone();
            times.sort();
            let at = |percent: usize| {
                let rank = (times.len() * percent).div_ceil(100);
                rank.checked_sub(1)
                    .and_then(|rank| times.get(rank))
                    .map_or_else(|| "-".to_owned(), |t| format!("{:.1}", t.as_secs_f64() * 1000.0))
            };
            vec![
                fleet.tenants.to_string(),
                scrape.series.to_string(),
                format!("{:.0}", scrape.bytes as f64 / 1024.0),
                format!("{}/{}", at(50), at(100)),
                format!("{:.2}", scrape.idle_cpu.as_secs_f64()),
                format!("{:.2}", scrape.scraped_cpu.as_secs_f64()),
                format!(
                    "{:.1}",
                    (scrape.scraped_cpu.saturating_sub(scrape.idle_cpu)).as_secs_f64() * 1000.0
                        / scrape.times.len().max(1) as f64
                ),
            ]
        })
        .collect();
    print_table(
        &["tenants", "series", "KiB", "scrape p50/max ms", "CPU s, quiet", "CPU s, scraped", "CPU ms/scrape"],
        &scrape_rows,
    );
    for fleet in fleets {
        println!();
        println!(
            "Writes per tenant on first convergence, {} tenants (the probe's {} changes included):",
            fleet.tenants,
            fleet.probe.len()
        );
        println!();
        let rows: Vec<Vec<String>> = fleet
            .writes
            .iter()
            .map(|(write, count)| vec![write.clone(), format!("{:.2}", *count as f64 / fleet.tenants as f64)])
            .collect();
        print_table(&["write", "per tenant"], &rows);
    }
}

async fn measure_floor(names: &[String], write: Write) -> anyhow::Result<Floor> {
    eprintln!("bench: write floor ({write:?}), {} tenants ...", names.len());
    let floor = write_floor(names, write)
        .await
        .with_context(|| format!("write floor ({write:?}) of {} tenants", names.len()))?;
    eprintln!("bench:   {:.1}s", floor.wall.as_secs_f64());
    Ok(floor)
}

fn sizes() -> anyhow::Result<Vec<u64>> {
    let Ok(list) = std::env::var("BENCH_FLEET") else { return Ok(DEFAULT_SIZES.to_vec()) };
    let sizes: Vec<u64> = list
        .split(',')
        .map(|size| size.trim().parse().map_err(|_| anyhow!("BENCH_FLEET={list:?}: {size:?} is not a number")))
        .collect::<anyhow::Result<_>>()?;
    ensure!(sizes.iter().all(|size| (1..=99_999).contains(size)), "BENCH_FLEET sizes must be 1 to 99999");
    Ok(sizes)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes = sizes()?;
    let concurrency = env_number::<u16>("BENCH_CONCURRENCY")?;
    ensure!(concurrency != Some(0), "BENCH_CONCURRENCY must be at least 1");
    let mut fleets = Vec::new();
    for size in sizes {
        let names = tenant_names(size);
        let (floor, apply_floor) = if size <= FLOOR_UP_TO {
            let floor = measure_floor(&names, Write::Post).await?;
            (Some(floor), Some(measure_floor(&names, Write::Apply).await?))
        } else {
            (None, None)
        };
        eprintln!("bench: operator, {size} tenants ...");
        let fleet = operator_run(&names, concurrency).await.with_context(|| format!("{size} tenants"))?;
        fleets.push(Fleet { floor, apply_floor, ..fleet });
    }
    report(&fleets, concurrency);
    Ok(())
}
