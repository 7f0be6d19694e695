//! A local OCI registry (the CNCF distribution server, Debian's `docker-registry`) on the real
//! node's address, which containerd pulls from over plain HTTP. Images go in from podman's local
//! storage with podman and are named by digest.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::node::config::{NODE_IP, REGISTRY_TLS_PORT, registry_host};
use crate::{Pki, log_tail, spawn};

/// A running registry.
pub struct Registry {
    process: Child,
    host: String,
    dir: PathBuf,
}

impl Registry {
    /// Starts the registry with its blobs in `storage` (kept across runs, so a second push of an
    /// unchanged image sends nothing) and its configuration and log in `dir`.
    pub async fn start(dir: &Path, storage: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(storage)?;
        let host = registry_host();
        let config = dir.join("registry.yaml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                storage.display()
            ),
        )?;
        let program = which("docker-registry")?;
        let process = spawn("registry", &program, &["serve".to_owned(), config.display().to_string()], dir)?;
        let mut registry = Self { process, host, dir: dir.to_owned() };
        registry.wait_ready().await?;
        Ok(registry)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/v2/", self.host);
        // The workspace's reqwest is built without a crypto provider (it is plain HTTP here, but
        // a client cannot be built without one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.process.try_wait()? {
                bail!("the registry exited with {status}:\n{}", log_tail(&self.dir.join("registry.log"), 15));
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the registry did not answer {url} within 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `<node address>:<port>`, the host part of the images it serves.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Pushes the image `reference` from podman's storage into the registry and returns the name
    /// pods use for it: `<registry>/<repository>@<digest>`. `localhost/` in front of the
    /// repository is dropped. (podman, not skopeo: skopeo leaves the storage driver's own mount
    /// behind, and the host must be left as it was found.)
    pub fn push(&self, reference: &str) -> anyhow::Result<String> {
        self.push_as(reference, reference.strip_prefix("localhost/").unwrap_or(reference))
    }

    /// Pushes the image `reference` from podman's storage into the registry as `repository`
    /// (`<name>:<tag>`), the way a mirror serves an image under another name, and returns the
    /// name pods use for it: `<registry>/<name>@<digest>`.
    pub fn push_as(&self, reference: &str, repository: &str) -> anyhow::Result<String> {
        let destination = format!("docker://{}/{repository}", self.host);
        let digest_file = tempfile::NamedTempFile::new()?;
        let output = Command::new("podman")
            .args(["push", "--quiet", "--tls-verify=false", "--digestfile"])
            .arg(digest_file.path())
            .arg(reference)
            .arg(&destination)
            .output()
            .context("cannot run podman")?;
        if !output.status.success() {
            bail!("cannot push {reference} to {destination}: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        let digest = std::fs::read_to_string(digest_file.path())?;
        let name =
            repository.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(repository, |(name, _)| name);
        Ok(format!("{}/{name}@{}", self.host, digest.trim()))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The registry's storage served a second time, over HTTPS, on the node's address, for a client
/// that pulls some images over HTTPS only (operator-sdk's `run bundle` its index image). Its
/// certificate is issued by a throwaway CA, which [`TlsRegistry::ca_bundle`] holds beside the
/// host's own CAs: hand it to such a client as `SSL_CERT_FILE`. containerd reaches this host's
/// images through its mirror of every registry, the plain-HTTP one.
pub struct TlsRegistry {
    process: Child,
    host: String,
    ca_bundle: PathBuf,
}

impl TlsRegistry {
    /// Starts it over `storage` (the plain registry's), with its files and log in `dir`.
    pub async fn start(dir: &Path, storage: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let host = format!("{NODE_IP}:{REGISTRY_TLS_PORT}");
        let pki = Pki::new()?;
        let pair = pki.issue("testenv-registry", None, vec![NODE_IP.to_string()], true)?;
        let (cert, key, ca_bundle) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca-bundle.crt"));
        std::fs::write(&cert, &pair.cert_pem)?;
        crate::write_private(&key, pair.key_pem.as_bytes())?;
        let host_cas = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
        std::fs::write(&ca_bundle, format!("{host_cas}\n{}", pki.ca_pem))?;
        let config = dir.join("registry.yaml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n  tls:\n    certificate: {}\n    key: {}\n",
                storage.display(),
                cert.display(),
                key.display()
            ),
        )?;
        let program = which("docker-registry")?;
        let mut process = spawn("registry", &program, &["serve".to_owned(), config.display().to_string()], dir)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&host).await.is_err() {
            if let Some(status) = process.try_wait()? {
                bail!("the HTTPS registry exited with {status}:\n{}", log_tail(&dir.join("registry.log"), 15));
            }
            if Instant::now() > deadline {
                let _ = process.kill();
                bail!("the HTTPS registry did not listen on {host} within 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { process, host, ca_bundle })
    }

    /// The CAs that verify it, the host's among them: a file for `SSL_CERT_FILE`.
    pub fn ca_bundle(&self) -> &Path {
        &self.ca_bundle
    }

    /// `reference` as [`Registry::push`] returned it (`<registry>/<name>@<digest>`), on this host.
    pub fn name(&self, reference: &str) -> String {
        let path = reference.split_once('/').map_or(reference, |(_, path)| path);
        format!("{}/{path}", self.host)
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The path of `program` on `PATH`.
pub fn which(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .with_context(|| format!("{program} is not installed (tools/packages.sh installs it)"))
}
