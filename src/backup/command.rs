//! `tenant-operator backup take|fetch|delete`: what the backup Job, the restore's init container
//! and the deletion Job run. Each writes one line for the operator to its termination message
//! (the backup's [`Metadata`] as JSON, or why it failed), and never logs a secret.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

use super::snapshot::{self, hex};
use super::store::{DEFAULT_REGION, Store, StoreError};
use super::{METADATA_OBJECT, Metadata, RESTORE_DIR, RESTORE_DONE, SNAPSHOT_OBJECT, STAGED_SNAPSHOT, object_key};
use crate::tls::{Trust, client_config};

/// Where Kubernetes reads a container's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a snapshot of a tenant's Redis and write it, with its metadata, to the store (the
    /// backup Job).
    Take(Box<TakeArgs>),
    /// Fetch a backup into an empty Redis volume and verify its checksum (the restore's first init
    /// container; the Redis image then checks that it can load it).
    Fetch(Box<FetchArgs>),
    /// Delete a backup's objects from the store (when its TenantBackup is deleted).
    Delete(Box<DeleteArgs>),
}

/// Where the backup is: an S3-compatible bucket (credentials in AWS_ACCESS_KEY_ID and
/// AWS_SECRET_ACCESS_KEY) or a directory.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// URL of the S3-compatible store.
    #[arg(long, requires = "s3_bucket", conflicts_with = "directory")]
    pub s3_endpoint: Option<String>,
    /// The bucket.
    #[arg(long, requires = "s3_endpoint")]
    pub s3_bucket: Option<String>,
    /// Region the requests are signed for.
    #[arg(long, default_value = DEFAULT_REGION)]
    pub s3_region: String,
    /// A directory (a mounted volume claim) instead of a bucket.
    #[arg(long, required_unless_present = "s3_endpoint")]
    pub directory: Option<PathBuf>,
    /// The backup's key (its objects are `<key>/dump.rdb` and `<key>/metadata.json`).
    #[arg(long)]
    pub key: String,
}

#[derive(Debug, clap::Args)]
pub struct TakeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The tenant backed up.
    #[arg(long)]
    pub tenant: String,
    /// The TenantBackup's name.
    #[arg(long)]
    pub backup: String,
    /// The NeuralLog version the tenant runs, recorded in the metadata.
    #[arg(long, value_name = "VERSION")]
    pub neurallog_version: String,
    /// The tenant's Redis, host:port.
    #[arg(long)]
    pub redis: String,
    /// The tenant's Redis password.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: String,
    /// Where the snapshot is staged before it is written to the store.
    #[arg(long, default_value = "/work")]
    pub work_dir: PathBuf,
    /// Where the result is written for the operator.
    #[arg(long, default_value = TERMINATION_LOG)]
    pub report: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The Redis data volume.
    #[arg(long, default_value = "/data")]
    pub data: PathBuf,
    /// Where the result is written for the operator.
    #[arg(long, default_value = TERMINATION_LOG)]
    pub report: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where the result is written for the operator.
    #[arg(long, default_value = TERMINATION_LOG)]
    pub report: PathBuf,
}

impl StoreArgs {
    fn open(&self) -> anyhow::Result<Store> {
        match (&self.s3_endpoint, &self.s3_bucket, &self.directory) {
            (Some(endpoint), Some(bucket), _) => {
                let http = reqwest::blocking::Client::builder()
                    .tls_backend_preconfigured(client_config(Trust::System)?)
                    .build()
                    .context("cannot build the store's HTTP client")?;
                Ok(Store::s3(endpoint, bucket, &self.s3_region, http)?)
            }
            (_, _, Some(directory)) => Ok(Store::Directory(directory.clone())),
            _ => bail!("no store: give --s3-endpoint and --s3-bucket, or --directory"),
        }
    }
}

/// Runs a backup subcommand; its outcome goes to its report as well as to the caller.
pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let (report, result) = match command {
            BackupCommand::Take(args) => (args.report.clone(), take(&args)),
            BackupCommand::Fetch(args) => (args.report.clone(), fetch(&args)),
            BackupCommand::Delete(args) => (args.report.clone(), delete(&args.store)),
        };
        let line = match &result {
            Ok(line) => line.clone(),
            Err(error) => format!("{error:#}"),
        };
        println!("{line}");
        // Absent outside a pod: the line above is the report then.
        let _ = std::fs::write(&report, &line);
        result.map(|_| ())
    })
    .await
    .context("the backup command panicked")?
}

/// Takes the snapshot, writes it and then its metadata; the report is the metadata. A failure
/// after the snapshot's upload deletes it: nothing of a failed backup stays in the store.
fn take(args: &TakeArgs) -> anyhow::Result<String> {
    let store = args.store.open()?;
    super::patiently(super::REACH_PATIENCE, StoreError::is_unreachable, || store.check(&args.store.key))
        .with_context(|| format!("backup {} of tenant {}: the store, before any snapshot", args.backup, args.tenant))?;
    let staged = args.work_dir.join(SNAPSHOT_OBJECT);
    let started = std::time::Instant::now();
    let snapshot = {
        let file =
            File::create(&staged).with_context(|| format!("cannot stage the snapshot at {}", staged.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // A connection refused leaves nothing written, so the whole snapshot can be tried again.
        let unreachable = snapshot::SnapshotError::is_unreachable;
        let taken = super::patiently(super::REACH_PATIENCE, unreachable, || {
            snapshot::take(&args.redis, &args.redis_password, &mut out)
        });
        let snapshot = taken.with_context(|| {
            format!("backup {} of tenant {}: snapshot of Redis {}", args.backup, args.tenant, args.redis)
        })?;
        out.into_inner().map_err(|error| error.into_error())?.sync_all()?;
        snapshot
    };
    let taken = started.elapsed();
    let metadata = Metadata {
        tenant: args.tenant.clone(),
        backup: args.backup.clone(),
        neurallog_version: args.neurallog_version.clone(),
        redis_version: snapshot.redis_version.clone(),
        rdb_version: snapshot.rdb_version,
        created: jiff::Timestamp::now().to_string(),
        size_bytes: snapshot.size,
        sha256: snapshot.sha256.clone(),
    };
    let snapshot_key = object_key(&args.store.key, SNAPSHOT_OBJECT);
    let written = store.put_file(&snapshot_key, &staged).and_then(|()| {
        store.put_bytes(
            &object_key(&args.store.key, METADATA_OBJECT),
            serde_json::to_vec_pretty(&metadata).unwrap_or_default(),
        )
    });
    let _ = std::fs::remove_file(&staged);
    if let Err(error) = written {
        let _ = store.delete(&snapshot_key);
        return Err(error).with_context(|| {
            format!("backup {} of tenant {}: writing {}", args.backup, args.tenant, store.describe(&args.store.key))
        });
    }
    eprintln!(
        "backup {} of tenant {}: {} bytes (RDB {} from Redis {}) snapshot in {:.2} s, written to {} in {:.2} s",
        args.backup,
        args.tenant,
        snapshot.size,
        snapshot.rdb_version,
        snapshot.redis_version,
        taken.as_secs_f64(),
        store.describe(&args.store.key),
        (started.elapsed() - taken).as_secs_f64(),
    );
    Ok(serde_json::to_string(&metadata)?)
}

/// Whether `data` holds anything but the restore's own work (and a file system's lost+found).
fn holds_data(data: &Path) -> anyhow::Result<bool> {
    let entries =
        std::fs::read_dir(data).with_context(|| format!("cannot read the Redis volume {}", data.display()))?;
    for entry in entries {
        let name = entry?.file_name();
        if name != RESTORE_DIR && name != "lost+found" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Fetches the backup into the restore's staging file and verifies it; nothing is left staged
/// when it fails, and nothing is fetched into a volume that holds data.
fn fetch(args: &FetchArgs) -> anyhow::Result<String> {
    let work = args.data.join(RESTORE_DIR);
    let store = args.store.open()?;
    let backup = store.describe(&args.store.key);
    let failed = |what: String| format!("restore from backup {backup}: {what}");
    if work.join(RESTORE_DONE).exists() {
        return Ok(format!("backup {backup} was restored into this volume before"));
    }
    if holds_data(&args.data)? {
        bail!(failed("the Redis volume is not empty: a restore never writes over data".into()));
    }
    let metadata_key = object_key(&args.store.key, METADATA_OBJECT);
    let mut raw = Vec::new();
    super::patiently(super::REACH_PATIENCE, StoreError::is_unreachable, || {
        raw.clear();
        store.get(&metadata_key, &mut raw)
    })
    .map_err(|error| anyhow::anyhow!(failed(format!("its metadata: {error}"))))?;
    let metadata: Metadata = serde_json::from_slice(&raw).map_err(|error| {
        anyhow::anyhow!(failed(format!("{} is not a backup's metadata: {error}", store.describe(&metadata_key))))
    })?;
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let staged = work.join(STAGED_SNAPSHOT);
    let verified = (|| {
        let snapshot_key = object_key(&args.store.key, SNAPSHOT_OBJECT);
        let mut hashing =
            HashingWriter { out: BufWriter::new(File::create(&staged)?), hasher: Sha256::new(), header: Vec::new() };
        let size = store
            .get(&snapshot_key, &mut hashing)
            .map_err(|error| anyhow::anyhow!(failed(format!("its snapshot: {error}"))))?;
        hashing.out.flush()?;
        let sha256 = hex(&hashing.hasher.finalize());
        if size != metadata.size_bytes || sha256 != metadata.sha256 {
            bail!(failed(format!(
                "checksum mismatch: {} has {size} bytes with sha256 {sha256}, the backup recorded {} bytes with sha256 {}",
                store.describe(&snapshot_key),
                metadata.size_bytes,
                metadata.sha256
            )));
        }
        if snapshot::rdb_version(&hashing.header).is_none() {
            bail!(failed(format!("{} is not an RDB snapshot", store.describe(&snapshot_key))));
        }
        Ok(size)
    })();
    match verified {
        Ok(size) => Ok(format!(
            "backup {backup} fetched and verified: {size} bytes, sha256 {}, RDB {} from Redis {}",
            metadata.sha256, metadata.rdb_version, metadata.redis_version
        )),
        Err(error) => {
            let _ = std::fs::remove_dir_all(&work);
            Err(error)
        }
    }
}

/// Deletes the snapshot and the metadata: the metadata first, so a half-deleted backup is known
/// as incomplete.
fn delete(args: &StoreArgs) -> anyhow::Result<String> {
    let store = args.open()?;
    store.delete(&object_key(&args.key, METADATA_OBJECT))?;
    store.delete(&object_key(&args.key, SNAPSHOT_OBJECT))?;
    Ok(format!("deleted {}", store.describe(&args.key)))
}

/// Writes through, hashing what passes and keeping its first bytes (the RDB header).
struct HashingWriter<W> {
    out: W,
    hasher: Sha256,
    header: Vec<u8>,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf)?;
        let data = &buf[..written];
        if self.header.len() < 9 {
            self.header.extend(data.iter().take(9 - self.header.len()));
        }
        self.hasher.update(data);
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
