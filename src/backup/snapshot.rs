//! A consistent snapshot of a Redis over the network: what a replica receives when it connects,
//! an RDB file Redis writes from a fork of itself, so every command is either wholly in it or not
//! at all. Authenticated with the tenant's password; no second mount of the tenant's volume.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// What a snapshot is, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub size: u64,
    /// SHA-256 of the snapshot, hex.
    pub sha256: String,
    /// The RDB format version in its header.
    pub rdb_version: u32,
    /// The `redis_version` the server reported.
    pub redis_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot reach Redis at {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("Redis refused {command}: {message}")]
    Refused { command: &'static str, message: String },
    #[error("reading from Redis: {0}")]
    Io(#[from] std::io::Error),
    #[error("Redis answered {command} with something unexpected: {answer:?}")]
    Protocol { command: &'static str, answer: String },
    #[error("what Redis sent is not an RDB snapshot (header {0:?})")]
    NotRdb(String),
}

impl SnapshotError {
    /// Whether Redis could not be reached (worth another try; nothing was written).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// How long one read or write may wait: Redis forks and writes the snapshot before the first byte
/// comes, which takes a while for a large data set.
const IO_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The RDB header: `REDIS` and four digits of format version.
pub fn rdb_version(header: &[u8]) -> Option<u32> {
    let digits = header.strip_prefix(b"REDIS")?.get(..4)?;
    std::str::from_utf8(digits).ok().filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

/// One command in RESP.
fn command(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A line of Redis' answer, without its CRLF.
fn line(reader: &mut impl BufRead) -> Result<String, SnapshotError> {
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Err(SnapshotError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_owned())
}

/// A simple answer: `+...` is fine, `-...` is a refusal.
fn simple(reader: &mut impl BufRead, name: &'static str) -> Result<String, SnapshotError> {
    let answer = line(reader)?;
    match answer.split_at_checked(1) {
        Some(("+", rest)) => Ok(rest.to_owned()),
        Some(("-", rest)) => Err(SnapshotError::Refused { command: name, message: rest.to_owned() }),
        _ => Err(SnapshotError::Protocol { command: name, answer }),
    }
}

/// The length of a bulk answer (`$<n>`), after the newlines Redis sends while it prepares one.
fn bulk_length(reader: &mut impl BufRead, name: &'static str) -> Result<u64, SnapshotError> {
    loop {
        let answer = line(reader)?;
        if answer.is_empty() {
            continue;
        }
        if let Some(rest) = answer.strip_prefix('-') {
            return Err(SnapshotError::Refused { command: name, message: rest.to_owned() });
        }
        return answer
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or(SnapshotError::Protocol { command: name, answer });
    }
}

/// The `redis_version` of an `INFO server` answer.
fn redis_version(info: &str) -> Option<String> {
    info.lines().find_map(|line| line.strip_prefix("redis_version:")).map(|v| v.trim().to_owned())
}

/// Takes a snapshot of the Redis at `address` (host:port) into `out`.
pub fn take(address: &str, password: &str, out: &mut impl Write) -> Result<Snapshot, SnapshotError> {
    let connect = |source| SnapshotError::Connect { address: address.to_owned(), source };
    let resolved = address.to_socket_addrs().map_err(connect)?.next();
    let resolved = resolved.ok_or_else(|| connect(std::io::ErrorKind::NotFound.into()))?;
    let stream = TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT).map_err(connect)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(1 << 16, stream);

    if !password.is_empty() {
        writer.write_all(&command(&[b"AUTH", password.as_bytes()]))?;
        simple(&mut reader, "AUTH")?;
    }
    writer.write_all(&command(&[b"INFO", b"server"]))?;
    let length = bulk_length(&mut reader, "INFO")?;
    let mut info = vec![0; usize::try_from(length).unwrap_or(0)];
    reader.read_exact(&mut info)?;
    line(&mut reader)?;
    let redis_version = redis_version(&String::from_utf8_lossy(&info)).unwrap_or_else(|| "unknown".to_owned());

    // Only the snapshot, not the replication stream after it (Redis 7); older ones refuse it, and
    // the stream after the snapshot is simply never read.
    writer.write_all(&command(&[b"REPLCONF", b"rdb-only", b"1"]))?;
    match simple(&mut reader, "REPLCONF") {
        Ok(_) | Err(SnapshotError::Refused { .. }) => {}
        Err(error) => return Err(error),
    }
    // Without the `eof` capability Redis sends the snapshot with its length first.
    writer.write_all(&command(&[b"SYNC"]))?;
    let size = bulk_length(&mut reader, "SYNC")?;

    let mut hasher = Sha256::new();
    let mut header = Vec::with_capacity(9);
    let mut remaining = size;
    let mut chunk = vec![0; 1 << 16];
    while remaining > 0 {
        let want = usize::try_from(remaining.min(chunk.len() as u64)).unwrap_or(chunk.len());
        let read = reader.read(&mut chunk[..want])?;
        if read == 0 {
            return Err(SnapshotError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let data = &chunk[..read];
        if header.len() < 9 {
            header.extend(data.iter().take(9 - header.len()));
        }
        hasher.update(data);
        out.write_all(data)?;
        remaining -= read as u64;
    }
    out.flush()?;
    let rdb_version =
        rdb_version(&header).ok_or_else(|| SnapshotError::NotRdb(String::from_utf8_lossy(&header).into_owned()))?;
    Ok(Snapshot { size, sha256: hex(&hasher.finalize()), rdb_version, redis_version })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rdb_header_names_its_format_version() {
        assert_eq!(rdb_version(b"REDIS0010\xfa"), Some(10));
        assert_eq!(rdb_version(b"REDIS0011"), Some(11));
        assert_eq!(rdb_version(b"REDIS001"), None, "too short");
        assert_eq!(rdb_version(b"REDIX0010"), None);
        assert_eq!(rdb_version(b"REDIS00x0"), None);
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(command(&[b"AUTH", b"p w"]), b"*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n");
    }

    #[test]
    fn bulk_lengths_skip_the_keepalive_newlines_and_name_refusals() {
        let mut answer: &[u8] = b"\n\n$1234\r\n";
        assert_eq!(bulk_length(&mut answer, "SYNC").unwrap(), 1234);
        let mut refused: &[u8] = b"-NOAUTH Authentication required.\r\n";
        let error = bulk_length(&mut refused, "SYNC").unwrap_err().to_string();
        assert_eq!(error, "Redis refused SYNC: NOAUTH Authentication required.");
        let mut odd: &[u8] = b"$EOF:0123\r\n";
        assert!(matches!(bulk_length(&mut odd, "SYNC"), Err(SnapshotError::Protocol { .. })));
    }

    #[test]
    fn the_version_comes_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(redis_version(info).as_deref(), Some("7.0.15"));
        assert_eq!(redis_version("# Server\r\n"), None);
    }
}
