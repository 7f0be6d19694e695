//! What both benchmarks need: the operator binary as a process on a testenv control plane, read
//! through its `/metrics` (reconciles, writes) and `/proc` (memory). Timings are reported, never
//! asserted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use testenv::{ControlPlane, free_port};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Child;

/// How often the operator's counters are polled.
pub const COUNTER_POLL: Duration = Duration::from_millis(10);
/// Longest any phase may take before the benchmark fails: far beyond a healthy run.
pub const DEADLINE: Duration = Duration::from_secs(1800);
/// How long the reconcile counter must stand still before the operator counts as idle.
pub const QUIET: Duration = Duration::from_secs(1);
/// The reconcile counter of `src/metrics.rs` (prometheus-client appends `_total`), its tenant
/// controller's series.
const RECONCILES: &str = "controller_runtime_reconcile";
/// The request counter of `src/runtime/client.rs`, by method and resource.
const API_REQUESTS: &str = "neurallog_tenant_operator_api_requests_total";

pub fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map(Some).map_err(|_| anyhow!("{name}={value:?} is not a valid number")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(error) => Err(anyhow!("{name}: {error}")),
    }
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

/// The samples of a Prometheus family: (labels, value) per line (labels empty without any).
fn samples<'a>(text: &'a str, sample: &'a str) -> impl Iterator<Item = anyhow::Result<(&'a str, f64)>> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(sample)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some(value.trim().parse().map(|value| (labels, value)).with_context(|| format!("unexpected sample {line:?}")))
    })
}

/// The tenant controller's reconciles, from the Prometheus text of `/metrics`. prometheus-client
/// leaves out a labelled family's samples until its first one, so a counter without samples is
/// zero; its `# TYPE` line is there from the start, and its absence means a rename.
fn parse_reconciles(text: &str) -> anyhow::Result<u64> {
    ensure!(
        text.lines().any(|line| line == format!("# TYPE {RECONCILES} counter")),
        "no counter {RECONCILES} in /metrics (renamed in src/metrics.rs?):\n{text}"
    );
    let mut total = 0;
    for sample in samples(text, &format!("{RECONCILES}_total")) {
        let (labels, value) = sample?;
        if labels.split(',').any(|label| label == "controller=\"tenant\"") {
            total += value as u64;
        }
    }
    Ok(total)
}

/// Writes sent to the API server, by "METHOD resource" (reads are left out, and so are reviews
/// such as the SelfSubjectReview at start-up: questions sent as creates, storing nothing).
pub type Writes = BTreeMap<String, u64>;

fn parse_writes(text: &str) -> anyhow::Result<Writes> {
    let mut writes = Writes::new();
    for sample in samples(text, API_REQUESTS) {
        let (labels, value) = sample?;
        let label = |key: &str| {
            labels.split(',').find_map(|pair| pair.strip_prefix(key)?.strip_prefix("=\"")?.strip_suffix('"'))
        };
        let (Some(method), Some(resource)) = (label("method"), label("resource")) else {
            bail!("unexpected labels {labels:?} of {API_REQUESTS}");
        };
        if !matches!(method, "GET" | "HEAD" | "OPTIONS") && !resource.ends_with("reviews") {
            *writes.entry(format!("{method} {resource}")).or_default() += value as u64;
        }
    }
    Ok(writes)
}

/// `after - before`, per entry, leaving out what did not change.
pub fn writes_between(before: &Writes, after: &Writes) -> Writes {
    after
        .iter()
        .map(|(key, count)| (key.clone(), count - before.get(key).copied().unwrap_or(0)))
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// Memory of a process from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub peak_kib: u64,
}

fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read the memory figures of process {pid} (Linux /proc needed)"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory { rss_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
}

/// CPU time a process has used so far (user and system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read the CPU time of process {pid} (Linux /proc needed)"))?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields.get(index).and_then(|t| t.parse().ok()).with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))
    };
    // The kernel counts in USER_HZ, 100 on every Linux this runs on.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// CPU time of the control plane's processes, the benchmark's own and the operator's, by name.
pub struct CpuClock {
    pids: Vec<(String, u32)>,
}

impl CpuClock {
    pub fn new(plane: &ControlPlane, operator: Option<&Operator>) -> anyhow::Result<Self> {
        let mut pids = plane.process_ids();
        pids.push(("benchmark".to_owned(), std::process::id()));
        if let Some(operator) = operator {
            pids.push(("operator".to_owned(), operator.child.id().context("the operator has exited")?));
        }
        Ok(Self { pids })
    }

    /// CPU time used so far, by process name.
    pub fn read(&self) -> anyhow::Result<BTreeMap<String, Duration>> {
        self.pids.iter().map(|(name, pid)| Ok((name.clone(), cpu_time(*pid)?))).collect()
    }
}

/// CPU time used between two readings, by process name.
pub fn cpu_between(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> BTreeMap<String, Duration> {
    after
        .iter()
        .map(|(name, time)| (name.clone(), time.saturating_sub(before.get(name).copied().unwrap_or_default())))
        .collect()
}

/// An operator process and its admin port.
pub struct Operator {
    child: Child,
    admin_port: u16,
    pub started: Instant,
}

impl Operator {
    /// Starts the operator as the plane's operator user with `extra` arguments and `env`; does not
    /// wait for it (see [`Operator::wait_ready`]).
    pub fn spawn(plane: &ControlPlane, extra: &[String], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Self> {
        // A serving certificate of its own, as OLM mounts one: without it the webhook, and so the
        // replica, is not ready.
        let certs = plane.dir().join("webhook-certs");
        if !certs.join("tls.crt").exists() {
            testenv::Pki::new()?.write_loopback_pair(&certs, "neurallog-tenant-operator-webhook")?;
        }
        let mut args = vec![
            "--webhook-address".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--webhook-cert-dir".to_owned(),
            certs.display().to_string(),
        ];
        args.extend_from_slice(extra);
        Self::spawn_with(plane.operator_kubeconfig(), &args, env, log)
    }

    /// Starts the operator with `kubeconfig`, `args` and `env`; does not wait for it.
    pub fn spawn_with(kubeconfig: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Self> {
        let admin_port = free_port()?;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tenant-operator"));
        testenv::dies_with_parent(&mut command);
        command
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{admin_port}"))
            // Read in the clear on the admin port.
            .arg("--metrics-insecure")
            .args(args);
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
        command.envs(env.iter().copied());
        let started = Instant::now();
        let child = tokio::process::Command::from(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the operator")?;
        Ok(Self { child, admin_port, started })
    }

    /// Waits until `/metrics` answers and `/readyz` reports the watch caches filled.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
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

    /// One scrape of `/metrics`: how long it took and what it returned.
    pub async fn scrape(&mut self) -> anyhow::Result<(Duration, String)> {
        let start = Instant::now();
        let body = self.metrics().await?;
        Ok((start.elapsed(), body))
    }

    async fn metrics(&mut self) -> anyhow::Result<String> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the operator exited with {status}");
        }
        let (status, body) = http_get(self.admin_port, "/metrics").await?;
        ensure!(status == 200, "/metrics answered {status}: {body}");
        Ok(body)
    }

    /// Reconciles finished so far.
    pub async fn reconciles(&mut self) -> anyhow::Result<u64> {
        parse_reconciles(&self.metrics().await?)
    }

    /// Writes sent so far.
    pub async fn writes(&mut self) -> anyhow::Result<Writes> {
        parse_writes(&self.metrics().await?)
    }

    /// Its memory now, and its peak so far.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        read_memory(self.child.id().context("the operator has exited")?)
    }

    /// Waits until the counter has reached `target`; returns the count it saw.
    pub async fn wait_reconciles(&mut self, target: u64, what: &str) -> anyhow::Result<u64> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.reconciles().await {
                Ok(count) if count >= target => return Ok(count),
                Ok(count) => ensure!(
                    Instant::now() < deadline,
                    "{what}: the reconcile counter stayed at {count}, short of {target}, for {DEADLINE:?}"
                ),
                // Not answering yet while it starts.
                Err(error) => ensure!(Instant::now() < deadline, "{what}: {error:#}"),
            }
            tokio::time::sleep(COUNTER_POLL).await;
        }
    }

    /// Waits until the counter stands still for [`QUIET`]; returns it and when it last moved.
    pub async fn wait_idle(&mut self) -> anyhow::Result<(u64, Instant)> {
        let deadline = Instant::now() + DEADLINE;
        let mut count = self.reconciles().await?;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(COUNTER_POLL).await;
            let now = self.reconciles().await?;
            if now != count {
                (count, since) = (now, Instant::now());
            } else if since.elapsed() >= QUIET {
                return Ok((count, since));
            }
            ensure!(Instant::now() < deadline, "the operator kept reconciling for {DEADLINE:?} (at {count})");
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the time that took.
    pub async fn terminate(mut self) -> anyhow::Result<Duration> {
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

/// The last lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Prints a Markdown table, the first column left-aligned and the others right-aligned.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    table.extend(rows.iter().cloned());
    let widths: Vec<usize> = (0..header.len())
        .map(|column| table.iter().map(|row| row.get(column).map_or(0, String::len)).max().unwrap_or(0))
        .collect();
    for (index, row) in table.iter().enumerate() {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(column, width)| {
                let cell = row.get(column).map_or("", String::as_str);
                if column == 0 { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
            })
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
}

pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
