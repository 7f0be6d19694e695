//! Backup and restore throughput: a real Redis (the test image of `make images`, run by podman on
//! loopback) holding N log records as the server writes them, backed up by `tenant-operator
//! backup take` to a real S3-compatible store (versitygw), then fetched and verified by
//! `tenant-operator backup fetch` into an empty directory, as a restore's init container does.
//! Reported per N: the snapshot's size, each command's wall time, throughput and peak memory
//! (the command's own maximum resident set, from wait4).
//!
//! Run with `make bench`. `BENCH_BACKUP_RECORDS` sets the record counts (default 1000,100000).
//! Figures are reported, never asserted.

// Shared with the other benchmarks, of which this one reads only a part.
#[allow(dead_code)]
mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use support::{mib, print_table};
use testenv::images::Images;
use testenv::object_store::{ACCESS_KEY, ObjectStore, SECRET_KEY};

const PASSWORD: &str = "bench-password";
const BUCKET: &str = "backups";

/// A record as the server stores it: a JSON log line of about 130 bytes, with a trace id that
/// differs in every record (so the snapshot's compression does not flatter it).
fn record(i: usize) -> String {
    let trace = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ 0x2545_f491_4f6c_dd1d;
    format!(
        "{{\"ts\":\"2026-12-07T10:{:02}:{:02}Z\",\"level\":\"info\",\"trace\":\"{trace:032x}\",\"msg\":\"request {i} served\"}}",
        i / 60 % 60,
        i % 60
    )
}

/// Redis in a container on a loopback port; removed when dropped.
struct Redis {
    name: String,
    port: u16,
}

impl Redis {
    fn start(image: &str) -> anyhow::Result<Self> {
        let port = testenv::free_port()?;
        let name = format!("neurallog-bench-redis-{port}");
        let output = Command::new("podman")
            // The limits `tools/images.sh` gives its containers: these hosts refuse podman's own.
            .args(["run", "-d", "--rm", "--name", &name, "--network", "host", "--runtime", "runc"])
            .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image])
            .args(["redis-server", "--port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", PASSWORD])
            .args(["--appendonly", "yes", "--dir", "/tmp"])
            .output()?;
        ensure!(output.status.success(), "podman run: {}", String::from_utf8_lossy(&output.stderr));
        let redis = Self { name, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "Redis did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(redis)
    }

    /// Appends `count` records to the list the server would write them to, pipelined.
    fn load(&self, count: usize) -> anyhow::Result<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let command = |parts: &[&str]| {
            let mut out = format!("*{}\r\n", parts.len());
            for part in parts {
                out.push_str(&format!("${}\r\n{part}\r\n", part.len()));
            }
            out
        };
        stream.write_all(command(&["AUTH", PASSWORD]).as_bytes())?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        ensure!(line.starts_with("+OK"), "AUTH: {line}");
        for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
            let mut batch = String::new();
            for &i in chunk {
                batch.push_str(&command(&["RPUSH", "logs:bench:app", &record(i)]));
            }
            stream.write_all(batch.as_bytes())?;
            for _ in chunk {
                line.clear();
                reader.read_line(&mut line)?;
                ensure!(line.starts_with(':'), "RPUSH: {line}");
            }
        }
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.name]).output();
    }
}

/// Runs `command`, returning its wall time and its own peak resident memory in KiB.
fn measured(mut command: Command) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let child = command.spawn()?;
    let pid = i32::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for the child just waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is this process's child, status and usage point to live values.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    ensure!(waited == pid, "wait4 failed");
    let status = std::process::ExitStatus::from_raw(status);
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok((took, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

fn backup_command(binary: &Path, store: &ObjectStore, redis: &Redis, key: &str, work: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["backup", "take", "--tenant", "bench", "--backup", key, "--neurallog-version", "1.0.0"])
        .args(["--redis", &format!("127.0.0.1:{}", redis.port), "--work-dir"])
        .arg(work)
        .args(["--report"])
        .arg(work.join("report"))
        .args(["--s3-endpoint", &store.endpoint(), "--s3-bucket", BUCKET, "--key", key])
        .env("REDIS_PASSWORD", PASSWORD)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdout(std::process::Stdio::null());
    command
}

fn fetch_command(binary: &Path, store: &ObjectStore, key: &str, data: &Path, report: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["backup", "fetch", "--data"])
        .arg(data)
        .arg("--report")
        .arg(report)
        .args(["--s3-endpoint", &store.endpoint(), "--s3-bucket", BUCKET, "--key", key])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdout(std::process::Stdio::null());
    command
}

fn per_second(count: usize, took: Duration) -> String {
    format!("{:.0}", count as f64 / took.as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::var("BENCH_BACKUP_RECORDS")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .map(|n| n.trim().parse().context("BENCH_BACKUP_RECORDS: numbers separated by commas"))
        .collect::<Result<_, _>>()?;
    let binary = Path::new(env!("CARGO_BIN_EXE_tenant-operator"));
    let images = Images::built()?;
    let dir = tempfile::tempdir()?;
    let store = ObjectStore::start(Ipv4Addr::LOCALHOST, dir.path(), &[BUCKET])?;
    let mut rows = Vec::new();
    for count in counts {
        let redis = Redis::start(&images.get("redis")?.reference)?;
        redis.load(count)?;
        let key = format!("bench/{count}");
        let work = dir.path().join(format!("work-{count}"));
        std::fs::create_dir_all(&work)?;
        let (backup_took, backup_kib) = measured(backup_command(binary, &store, &redis, &key, &work))?;
        let size = std::fs::metadata(store.object_path(BUCKET, &format!("{key}/dump.rdb")))?.len();
        let data = dir.path().join(format!("data-{count}"));
        std::fs::create_dir_all(&data)?;
        let report = dir.path().join(format!("fetch-{count}"));
        let (fetch_took, fetch_kib) = measured(fetch_command(binary, &store, &key, &data, &report))?;
        let staged = std::fs::metadata(data.join(".neurallog-restore/staging.rdb"))?.len();
        ensure!(staged == size, "the fetched snapshot is the one written");
        rows.push(vec![
            count.to_string(),
            format!("{:.2}", size as f64 / f64::from(1 << 20)),
            format!("{:.2}", backup_took.as_secs_f64()),
            per_second(count, backup_took),
            mib(backup_kib),
            format!("{:.2}", fetch_took.as_secs_f64()),
            per_second(count, fetch_took),
            mib(fetch_kib),
        ]);
    }
    println!(
        "\nBackup (snapshot over the network, upload) and restore fetch (download, verify), to versitygw on loopback"
    );
    print_table(
        &["records", "MiB", "backup s", "records/s", "backup peak", "fetch s", "records/s", "fetch peak"],
        &rows,
    );
    Ok(())
}
