//! The API server's way into "the cluster": an HTTP CONNECT proxy on a Unix socket, named in the
//! API server's egress selector configuration for the network context `cluster`.
//!
//! kube-apiserver reaches a webhook given by a Service reference (conversion and admission alike)
//! at `<ClusterIP>:<port>`, through the `cluster` dialer. There is no kube-proxy here, so a
//! ClusterIP routes nowhere; tests tell the proxy which loopback address serves a Service
//! ([`EgressProxy::forward`]); other loopback targets are dialed as asked, and the rest refused
//! (the cluster's addresses exist nowhere here). TLS runs end to end
//! through the tunnel: the API server still checks the certificate against
//! `<service>.<namespace>.svc` and the webhook's `caBundle`.
//!
//! A Unix socket rather than TCP: the API server's TCP transport for HTTPConnect dereferences the
//! TLS configuration it was not given.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

/// The longest path a Unix socket address holds on Linux: `sun_path` is 108 bytes, NUL included.
const MAX_SOCKET_PATH: usize = 107;

/// The largest request head read; the API server sends a request line and a `Host` header.
const MAX_HEAD: usize = 8 * 1024;

/// How long dialing a target may take: a forwarded webhook that is not listening yet should fail
/// the API server's call, not hang it.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// What the tests set and what they read back, behind one lock (never held across an await).
#[derive(Default)]
struct Table {
    /// Where a requested address is really dialed.
    forwards: HashMap<SocketAddr, SocketAddr>,
    /// Tunnels established per requested target (`host:port`).
    tunnels: HashMap<String, usize>,
}

type Shared = Arc<Mutex<Table>>;

/// The table, also after a panicking test thread poisoned the lock: the data stays usable.
fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running proxy. It serves on the Tokio runtime that started it (the test's), so it works
/// while that runtime runs; dropping it closes the listener and every tunnel.
pub(crate) struct EgressProxy {
    socket: PathBuf,
    table: Shared,
    server: JoinHandle<()>,
    /// Holds the socket when the working directory's path is too long for a socket address.
    _short_dir: Option<tempfile::TempDir>,
}

impl EgressProxy {
    /// Listens on `<dir>/egress.sock`, or in a short temporary directory when that path does not
    /// fit a socket address. Must be called within a Tokio runtime.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut socket = std::path::absolute(dir.join("egress.sock"))?;
        let mut short_dir = None;
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            let temp = tempfile::Builder::new().prefix("testenv-egress-").tempdir_in("/tmp")?;
            socket = temp.path().join("egress.sock");
            short_dir = Some(temp);
        }
        // A socket left by an earlier run in a kept directory would make the bind fail.
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
        let table = Shared::default();
        let server = tokio::spawn(serve(listener, Arc::clone(&table)));
        Ok(Self { socket, table, server, _short_dir: short_dir })
    }

    /// The `EgressSelectorConfiguration` that sends the API server's `cluster` traffic here.
    pub(crate) fn selector_configuration(&self) -> anyhow::Result<String> {
        let socket = self.socket.to_str().context("the egress socket's path is not UTF-8")?;
        let config = serde_json::json!({
            "apiVersion": "apiserver.k8s.io/v1beta1",
            "kind": "EgressSelectorConfiguration",
            "egressSelections": [{
                "name": "cluster",
                "connection": {"proxyProtocol": "HTTPConnect", "transport": {"uds": {"udsName": socket}}},
            }],
        });
        Ok(serde_yaml::to_string(&config)?)
    }

    /// From now on, tunnels to `target` are dialed to `to` instead.
    pub(crate) fn forward(&self, target: SocketAddr, to: SocketAddr) {
        lock(&self.table).forwards.insert(target, to);
    }

    /// [`forward`](Self::forward)s the Service `name` in `namespace`, port `port` (its `port`, which
    /// a webhook's service reference names, not its `targetPort`) to `to`, and returns the
    /// `ClusterIP:port` the API server will ask for. `client` reads the Service.
    pub(crate) async fn forward_service(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        port: u16,
        to: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let service = kube::Api::<Service>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .with_context(|| format!("cannot read Service {namespace}/{name}"))?;
        let spec = service.spec.unwrap_or_default();
        if !spec.ports.iter().flatten().any(|p| p.port == i32::from(port)) {
            anyhow::bail!("Service {namespace}/{name} has no port {port}");
        }
        let cluster_ip: IpAddr = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .with_context(|| format!("Service {namespace}/{name} has no cluster IP"))?;
        let service = SocketAddr::new(cluster_ip, port);
        self.forward(service, to);
        Ok(service)
    }

    /// How many tunnels to `target` (as requested, before forwarding) were established.
    pub(crate) fn connections(&self, target: SocketAddr) -> usize {
        lock(&self.table).tunnels.get(&target.to_string()).copied().unwrap_or(0)
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: UnixListener, table: Shared) {
    // Owns every tunnel, so that aborting the server ends them too.
    let mut tunnels = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tunnels.spawn(tunnel(client, Arc::clone(&table)));
            }
            Err(error) => {
                // Out of file descriptors, typically: let some tunnels close instead of spinning.
                tracing::warn!(%error, "the egress proxy cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while tunnels.try_join_next().is_some() {}
    }
}

/// Serves one client: reads its CONNECT request, dials the target and copies bytes both ways.
async fn tunnel(mut client: UnixStream, table: Shared) {
    let Some((target, early)) = read_connect(&mut client).await else {
        let _ = client.write_all(BAD_REQUEST).await;
        let _ = client.shutdown().await;
        return;
    };
    let requested: Option<SocketAddr> = target.parse().ok();
    let forwarded = requested.and_then(|requested| lock(&table).forwards.get(&requested).copied());
    // Only loopback is dialed as asked: the cluster's addresses (ClusterIPs, fake pod and node
    // IPs) exist nowhere here, and one that happens to route would reach a stranger.
    let Some(address) = forwarded.or(requested.filter(|r| r.ip().is_loopback())) else {
        tracing::debug!(%target, "the egress proxy refuses a target that is neither forwarded nor on loopback");
        let _ = client.write_all(BAD_GATEWAY).await;
        return;
    };
    let mut upstream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            tracing::debug!(%error, %target, %address, "the egress proxy cannot dial");
            let _ = client.write_all(BAD_GATEWAY).await;
            return;
        }
        Err(_) => {
            tracing::debug!(%target, %address, "the egress proxy timed out dialing");
            let _ = client.write_all(BAD_GATEWAY).await;
            return;
        }
    };
    // Counted before the client hears of it, so a test that got through sees its tunnel counted.
    *lock(&table).tunnels.entry(target).or_default() += 1;
    if client.write_all(ESTABLISHED).await.is_err() || upstream.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads a request head; returns its CONNECT target and any bytes the client sent after the head,
/// or `None` for anything but a complete, well-formed CONNECT request.
async fn read_connect(client: &mut UnixStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_HEAD || client.read_buf(&mut buffer).await.ok()? == 0 {
            return None;
        }
    };
    if end > MAX_HEAD {
        return None;
    }
    let target = connect_target(std::str::from_utf8(&buffer[..end]).ok()?)?;
    Some((target, buffer[end + 4..].to_vec()))
}

/// The `host:port` of a `CONNECT host:port HTTP/1.x` head (an IP host in the form
/// [`SocketAddr`] prints, so that counts match [`EgressProxy::connections`]).
fn connect_target(head: &str) -> Option<String> {
    let mut request_line = head.lines().next()?.split(' ');
    let (Some("CONNECT"), Some(target), Some(version), None) =
        (request_line.next(), request_line.next(), request_line.next(), request_line.next())
    else {
        return None;
    };
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    if let Ok(address) = target.parse::<SocketAddr>() {
        return Some(address.to_string());
    }
    let (host, port) = target.rsplit_once(':')?;
    let is_name = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (is_name && port.parse::<u16>().is_ok()).then(|| target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A loopback server that echoes whatever it receives.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        address
    }

    /// Sends `request` to the proxy and returns the connection and the response head.
    async fn request(proxy: &EgressProxy, request: &[u8]) -> (UnixStream, String) {
        let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            if client.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        (client, String::from_utf8(head).unwrap())
    }

    /// Checks that a tunnel carries bytes both ways.
    async fn ping(client: &mut UnixStream) {
        client.write_all(b"ping").await.unwrap();
        let mut answer = [0; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping");
    }

    #[tokio::test]
    async fn forwards_a_target_in_the_table_and_dials_any_other_directly() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = EgressProxy::start(dir.path()).unwrap();
        let echo = echo_server().await;
        let service: SocketAddr = "10.96.0.10:443".parse().unwrap();
        proxy.forward(service, echo);

        // Bytes sent right behind the head belong to the tunnel.
        let (mut client, head) =
            request(&proxy, b"CONNECT 10.96.0.10:443 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nearly").await;
        assert_eq!(head.as_bytes(), ESTABLISHED);
        let mut early = [0; 5];
        client.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early");
        ping(&mut client).await;
        assert_eq!((proxy.connections(service), proxy.connections(echo)), (1, 0));

        let (mut client, head) = request(&proxy, format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert_eq!(head.as_bytes(), ESTABLISHED);
        ping(&mut client).await;
        assert_eq!((proxy.connections(service), proxy.connections(echo)), (1, 1));
    }

    #[tokio::test]
    async fn answers_a_malformed_request_with_400_and_a_failed_dial_with_502() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = EgressProxy::start(dir.path()).unwrap();
        let too_long = format!("CONNECT 10.96.0.10:443 HTTP/1.1\r\nX: {}\r\n\r\n", "x".repeat(MAX_HEAD));
        let malformed: [&[u8]; 9] = [
            b"GET / HTTP/1.1\r\n\r\n",
            b"CONNECT 10.96.0.10 HTTP/1.1\r\n\r\n",
            b"CONNECT 10.96.0.10:65536 HTTP/1.1\r\n\r\n",
            b"CONNECT :443 HTTP/1.1\r\n\r\n",
            b"CONNECT bad/host:443 HTTP/1.1\r\n\r\n",
            b"CONNECT 10.96.0.10:443 HTTP/1.1 extra\r\n\r\n",
            b"CONNECT 10.96.0.10:443 SPDY/3\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            too_long.as_bytes(),
        ];
        for request in malformed {
            let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
            client.write_all(request).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, BAD_REQUEST, "for {:?}", String::from_utf8_lossy(&request[..request.len().min(50)]));
        }
        // A head cut short by the client.
        let mut client = UnixStream::connect(&proxy.socket).await.unwrap();
        client.write_all(b"CONNECT 10.96.0.10:443 HTTP/1.1\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, BAD_REQUEST);

        // Nothing listens on port 0.
        let (_, head) = request(&proxy, b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
        assert_eq!(proxy.connections("127.0.0.1:0".parse().unwrap()), 0);

        // The proxy still serves.
        let echo = echo_server().await;
        let (mut client, head) = request(&proxy, format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert_eq!(head.as_bytes(), ESTABLISHED);
        ping(&mut client).await;
    }

    #[tokio::test]
    async fn listens_in_a_short_directory_when_the_given_one_is_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(MAX_SOCKET_PATH));
        std::fs::create_dir(&long).unwrap();
        let proxy = EgressProxy::start(&long).unwrap();
        assert!(proxy.socket.as_os_str().len() <= MAX_SOCKET_PATH, "{}", proxy.socket.display());
        assert!(proxy.selector_configuration().unwrap().contains(proxy.socket.to_str().unwrap()));
        let echo = echo_server().await;
        let (mut client, head) = request(&proxy, format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert_eq!(head.as_bytes(), ESTABLISHED);
        ping(&mut client).await;
    }
}
