//! A real S3-compatible object store for the backup tests: versitygw (`tools/build.sh versitygw`)
//! with its POSIX backend, so every object is a plain file a test can read, corrupt or remove.
//! It listens on the address given (the real node's address, which pods reach), one access key.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{log_tail, spawn, tool_dir};

/// The store's only access key and its secret.
pub const ACCESS_KEY: &str = "neurallog-backups";
pub const SECRET_KEY: &str = "neurallog-backups-secret";

/// A running versitygw; stopped when dropped.
pub struct ObjectStore {
    process: Child,
    address: SocketAddr,
    root: PathBuf,
    log: PathBuf,
}

impl ObjectStore {
    /// Starts the store on `ip` (a free port) over `<dir>/objects`, with the buckets named.
    pub fn start(ip: Ipv4Addr, dir: &Path, buckets: &[&str]) -> anyhow::Result<Self> {
        let bin = tool_dir("versitygw", "TESTENV_VERSITYGW_BIN")?.join("versitygw");
        let root = dir.join("objects");
        for bucket in buckets {
            std::fs::create_dir_all(root.join(bucket))?;
        }
        let address = SocketAddr::new(ip.into(), crate::free_port()?);
        let args = [
            "--port".to_owned(),
            address.to_string(),
            "--access".to_owned(),
            ACCESS_KEY.to_owned(),
            "--secret".to_owned(),
            SECRET_KEY.to_owned(),
            "posix".to_owned(),
            root.display().to_string(),
        ];
        let process = spawn("versitygw", &bin, &args, dir)?;
        let mut store = Self { process, address, root, log: dir.join("versitygw.log") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(status) = store.process.try_wait()? {
                bail!("versitygw exited ({status}): {}", log_tail(&store.log, 20));
            }
            if Instant::now() > deadline {
                bail!("versitygw did not listen on {address} within 30 s: {}", log_tail(&store.log, 20));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(store)
    }

    /// The endpoint URL, as a tenant's `spec.backup.destination.s3.endpoint` names it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The file holding `key` of `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The keys of every object in `bucket` whose key starts with `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let base = self.root.join(bucket);
        let mut keys = Vec::new();
        let mut pending = vec![base.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let key = path.strip_prefix(&base).context("under the bucket")?.display().to_string();
                    if key.starts_with(prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Stops the store (to make it unreachable).
    pub fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        self.stop();
    }
}
