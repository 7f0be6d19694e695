//! The webhook's serving certificate: where it comes from ([`Certificates`]) and the resolver that
//! hands the one in force to every TLS handshake ([`Reloading`]).
//!
//! The certificate is swapped under a running listener: a rotated pair serves the next handshake,
//! while connections already open keep the one they started with. A pair that cannot be used (torn,
//! half-written, a key that does not belong to the certificate) never replaces a working one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::https::Reloading;
use crate::tls::provider;

/// Where OLM (and controller-runtime's convention) mounts the serving certificate.
pub const DEFAULT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";
/// The certificate chain's file name in the directory (a `kubernetes.io/tls` Secret's key).
pub const CERT_FILE: &str = "tls.crt";
/// The private key's file name in the directory.
pub const KEY_FILE: &str = "tls.key";
/// How often the directory is read: a rotated Secret reaches the pod's volume within the kubelet's
/// sync period (about a minute), so a few seconds more is nothing.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate chain (leaf first) and its private key, PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl fmt::Debug for PemPair {
    /// Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPair").field("cert_bytes", &self.cert.len()).finish_non_exhaustive()
    }
}

/// Where the serving certificate comes from.
#[derive(Debug)]
pub enum Certificates {
    /// `tls.crt` and `tls.key` in a directory (a mounted Secret), read every `poll_interval` and
    /// compared by content: the kubelet swaps a `..data` symlink, which a watch on the files
    /// themselves can miss.
    Directory { path: PathBuf, poll_interval: Duration },
    /// Pairs handed over in memory (the self-managed certificate); `None` until there is one.
    Memory(watch::Receiver<Option<PemPair>>),
}

impl Certificates {
    /// The pair in `path`, polled every [`DEFAULT_POLL_INTERVAL`].
    pub fn directory(path: impl Into<PathBuf>) -> Self {
        Self::Directory { path: path.into(), poll_interval: DEFAULT_POLL_INTERVAL }
    }

    /// The resolver, holding the certificate available now (if any), and the task that keeps it
    /// current; the task runs until dropped.
    pub(crate) async fn open(self) -> (Arc<Reloading>, BoxFuture<'static, ()>) {
        let resolver = Arc::new(Reloading::default());
        match self {
            Self::Directory { path, poll_interval } => {
                let mut poller = DirectoryPoller::new(path);
                poller.poll(&resolver).await;
                let follower = resolver.clone();
                let task = async move {
                    let mut ticks = tokio::time::interval(poll_interval);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ticks.tick().await;
                    loop {
                        ticks.tick().await;
                        poller.poll(&follower).await;
                    }
                };
                (resolver, task.boxed())
            }
            Self::Memory(mut pairs) => {
                let first = pairs.borrow_and_update().clone();
                match first {
                    Some(pair) => install(&resolver, &pair, "self-managed"),
                    None => {
                        tracing::info!("self-managed webhook certificate not read yet: TLS handshakes fail until it is")
                    }
                }
                let follower = resolver.clone();
                let task = async move {
                    while pairs.changed().await.is_ok() {
                        let pair = pairs.borrow_and_update().clone();
                        if let Some(pair) = pair {
                            install(&follower, &pair, "self-managed");
                        }
                    }
                };
                (resolver, task.boxed())
            }
        }
    }
}

/// Installs `pair` if it is usable; otherwise keeps the certificate in force and says why.
fn install(resolver: &Reloading, pair: &PemPair, source: &str) {
    match certified_key(pair) {
        Ok(key) => {
            let first = resolver.set(key);
            tracing::info!(source, "webhook serving certificate {}", if first { "loaded" } else { "rotated" });
        }
        Err(error) => tracing::warn!(source, %error, "unusable webhook serving certificate; keeping the one in force"),
    }
}

/// Why a PEM pair cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("not PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("no certificate in {CERT_FILE}")]
    NoCertificate,
    #[error("the private key or its pairing with the certificate: {0}")]
    Key(#[from] rustls::Error),
}

/// The pair as rustls serves it, refused unless the key belongs to the leaf certificate.
pub fn certified_key(pair: &PemPair) -> Result<CertifiedKey, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(&pair.cert).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(&pair.key)?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// What the directory held at the last poll.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Nothing,
    Missing,
    Pair(PemPair),
    Unreadable(String),
}

/// Reads the directory and installs a changed, usable pair; reports each problem once.
#[derive(Debug)]
pub(crate) struct DirectoryPoller {
    dir: PathBuf,
    seen: Seen,
}

impl DirectoryPoller {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir, seen: Seen::Nothing }
    }

    /// One look at the directory.
    pub(crate) async fn poll(&mut self, resolver: &Reloading) {
        let mut read = read_pair(&self.dir).await;
        // The kubelet swaps both files at once, but a swap between the two reads tears the
        // pair: read again at once before calling it broken.
        if let Seen::Pair(pair) = &read
            && certified_key(pair).is_err()
        {
            read = read_pair(&self.dir).await;
        }
        if read == self.seen {
            return;
        }
        let dir = self.dir.display().to_string();
        match &read {
            Seen::Pair(pair) => match certified_key(pair) {
                Ok(key) => {
                    let first = resolver.set(key);
                    tracing::info!(%dir, "webhook serving certificate {}", if first { "loaded" } else { "rotated" });
                }
                Err(error) => tracing::warn!(
                    %dir,
                    %error,
                    "unusable webhook serving certificate; {}",
                    if resolver.current().is_some() { "keeping the one in force" } else { "TLS handshakes fail until a usable one appears" }
                ),
            },
            Seen::Missing if resolver.current().is_some() => {
                tracing::warn!("the webhook serving certificate is gone from {dir}; keeping the one in force");
            }
            Seen::Missing => tracing::warn!(
                "no webhook serving certificate ({CERT_FILE}, {KEY_FILE}) in {dir} yet: TLS handshakes fail until one appears"
            ),
            Seen::Unreadable(error) => tracing::warn!(%dir, %error, "cannot read the webhook serving certificate"),
            Seen::Nothing => {}
        }
        self.seen = read;
    }
}

/// The two files of `dir`, read through the kubelet's symlinks.
async fn read_pair(dir: &Path) -> Seen {
    let read = async |name: &str| tokio::fs::read(dir.join(name)).await;
    match (read(CERT_FILE).await, read(KEY_FILE).await) {
        (Ok(cert), Ok(key)) => Seen::Pair(PemPair { cert, key }),
        (Err(error), _) | (_, Err(error)) if error.kind() == io::ErrorKind::NotFound => Seen::Missing,
        (Err(error), _) | (_, Err(error)) => Seen::Unreadable(error.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a pair it signed for `names`.
    pub(crate) fn issued(names: &[&str]) -> (String, PemPair) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (ca.pem(), PemPair { cert: cert.pem().into_bytes(), key: key.serialize_pem().into_bytes() })
    }

    /// Publishes `pair` in `dir` as the kubelet does: a new timestamped directory, a new `..data`
    /// symlink renamed over the old one, `tls.crt`/`tls.key` links through `..data`.
    pub(crate) fn publish(dir: &Path, generation: u32, pair: &PemPair) {
        let version = format!("..2026_01_01_00_00_{generation:02}.{generation}");
        std::fs::create_dir_all(dir.join(&version)).unwrap();
        std::fs::write(dir.join(&version).join(CERT_FILE), &pair.cert).unwrap();
        std::fs::write(dir.join(&version).join(KEY_FILE), &pair.key).unwrap();
        let staged = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, dir.join("..data")).unwrap();
        for file in [CERT_FILE, KEY_FILE] {
            if std::fs::symlink_metadata(dir.join(file)).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), dir.join(file)).unwrap();
            }
        }
    }

    fn leaf(resolver: &Reloading) -> Option<Vec<u8>> {
        resolver.current().map(|key| key.cert[0].to_vec())
    }

    fn der(pair: &PemPair) -> Vec<u8> {
        CertificateDer::pem_slice_iter(&pair.cert).next().unwrap().unwrap().to_vec()
    }

    #[tokio::test]
    async fn a_rotated_pair_is_picked_up_and_a_broken_one_never_replaces_it() {
        let dir = tempdir();
        let resolver = Reloading::default();
        let mut poller = DirectoryPoller::new(dir.to_path_buf());

        // Nothing mounted yet: no certificate, handshakes would fail.
        poller.poll(&resolver).await;
        assert!(resolver.current().is_none());

        let (_, first) = issued(&["webhook.test"]);
        publish(&dir, 1, &first);
        poller.poll(&resolver).await;
        assert_eq!(leaf(&resolver), Some(der(&first)));

        let (_, second) = issued(&["webhook.test"]);
        publish(&dir, 2, &second);
        poller.poll(&resolver).await;
        assert_eq!(leaf(&resolver), Some(der(&second)), "the rotated pair serves");

        // A certificate with someone else's key, then a half-written key: the second pair stays.
        let (_, third) = issued(&["webhook.test"]);
        publish(&dir, 3, &PemPair { cert: third.cert.clone(), key: first.key.clone() });
        poller.poll(&resolver).await;
        assert_eq!(leaf(&resolver), Some(der(&second)), "a mismatched pair is refused");
        let half = third.key[..third.key.len() / 2].to_vec();
        publish(&dir, 4, &PemPair { cert: third.cert.clone(), key: half });
        poller.poll(&resolver).await;
        assert_eq!(leaf(&resolver), Some(der(&second)), "a torn key is refused");

        // Gone altogether (the Secret deleted): still the second.
        std::fs::remove_file(dir.join("..data")).unwrap();
        poller.poll(&resolver).await;
        assert_eq!(leaf(&resolver), Some(der(&second)));

        publish(&dir, 5, &third);
        poller.poll(&resolver).await;
        assert_eq!(leaf(&resolver), Some(der(&third)), "a good pair after broken ones serves");
    }

    #[tokio::test]
    async fn pairs_handed_over_in_memory_replace_each_other() {
        let (sender, receiver) = watch::channel(None);
        let (resolver, follow) = Certificates::Memory(receiver).open().await;
        assert!(resolver.current().is_none());
        let follow = tokio::spawn(follow);
        let (_, first) = issued(&["webhook.test"]);
        sender.send_replace(Some(first.clone()));
        wait_for(|| leaf(&resolver) == Some(der(&first))).await;
        sender.send_replace(Some(PemPair { cert: first.cert.clone(), key: b"garbage".to_vec() }));
        let (_, second) = issued(&["webhook.test"]);
        sender.send_replace(Some(second.clone()));
        wait_for(|| leaf(&resolver) == Some(der(&second))).await;
        drop(sender);
        follow.await.unwrap();
        assert_eq!(leaf(&resolver), Some(der(&second)));
    }

    pub(crate) async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not reached within 5 s");
    }

    /// A fresh directory under the system's temporary directory, removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn tempdir() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tenant-operator-webhook-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    #[test]
    fn a_pair_without_a_certificate_or_with_a_foreign_key_is_refused() {
        let (_, pair) = issued(&["webhook.test"]);
        assert!(certified_key(&pair).is_ok());
        let empty = PemPair { cert: Vec::new(), key: pair.key.clone() };
        assert!(matches!(certified_key(&empty), Err(CertificateError::NoCertificate)));
        let (_, other) = issued(&["webhook.test"]);
        let foreign = PemPair { cert: pair.cert.clone(), key: other.key };
        assert!(
            matches!(certified_key(&foreign), Err(CertificateError::Key(_))),
            "{:?}",
            certified_key(&foreign).err()
        );
        assert!(!format!("{pair:?}").contains("PRIVATE"), "the key never shows in Debug");
    }
}
