//! A real Jaeger v2 on loopback, for tests that check the traces the operator exports: the pinned
//! build of `tools/build.sh jaeger` with an OTLP receiver (gRPC and HTTP), in-memory storage and the
//! query HTTP API, every listener on a free loopback port so tests can run in parallel. Its config
//! and log live in a temporary directory, kept when the test fails.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::{StatusCode, Url};

use crate::{CertAndKey, free_port, keep_if_panicking, spawn, tool_dir};

/// How long Jaeger may take to answer after it was started (it usually needs well under a second).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to start Jaeger when a port picked for it was taken by someone else in the meantime.
const START_ATTEMPTS: usize = 3;
/// The `limit` of trace searches: more than any test sends.
const SEARCH_LIMIT: u32 = 10_000;

/// A running Jaeger v2 (collector and query service in one process, traces kept in memory).
pub struct Jaeger {
    child: Child,
    dir: PathBuf,
    temp: Option<tempfile::TempDir>,
    otlp_grpc_port: u16,
    otlp_http_port: u16,
    query_http_port: u16,
    /// Whether the OTLP receivers serve TLS.
    tls: bool,
    client: reqwest::Client,
}

/// The loopback ports of one Jaeger; all distinct.
struct Ports {
    otlp_grpc: u16,
    otlp_http: u16,
    query_http: u16,
    query_grpc: u16,
    health: u16,
}

impl Ports {
    fn pick() -> anyhow::Result<Self> {
        let mut ports = BTreeSet::new();
        while ports.len() < 5 {
            ports.insert(free_port()?);
        }
        let mut ports = ports.into_iter();
        let mut next = || ports.next().context("not enough ports");
        Ok(Self { otlp_grpc: next()?, otlp_http: next()?, query_http: next()?, query_grpc: next()?, health: next()? })
    }

    /// A config in the shape of the embedded all-in-one config of Jaeger v2.13, reduced to what the
    /// tests need: no Jaeger/Zipkin receivers, sampling, zpages or expvar, and no internal
    /// telemetry (its Prometheus endpoint would take the fixed port 8888; its own tracing would
    /// export to the default OTLP ports, possibly into another Jaeger).
    ///
    /// `tls`: the directory holding `otlp.crt` and `otlp.key`, which both OTLP receivers then
    /// serve TLS with.
    fn config_yaml(&self, tls: Option<&Path>) -> String {
        let tls = tls.map_or_else(String::new, |dir| {
            format!(
                "\n        tls:\n          cert_file: {}\n          key_file: {}",
                dir.join("otlp.crt").display(),
                dir.join("otlp.key").display()
            )
        });
        format!(
            r#"service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory_store
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}{tls}
      http:
        endpoint: 127.0.0.1:{otlp_http}{tls}

exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"#,
            query_http = self.query_http,
            query_grpc = self.query_grpc,
            health = self.health,
            otlp_grpc = self.otlp_grpc,
            otlp_http = self.otlp_http,
        )
    }
}

/// Why a start attempt failed.
enum StartError {
    /// A port was taken between picking and binding it: worth another attempt with new ports.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl Jaeger {
    /// Starts Jaeger and waits until its receivers and query API are up.
    ///
    /// The binary comes from `$TESTENV_JAEGER_BIN` (a directory) when set, else from
    /// `tools/build.sh jaeger`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_tls(None).await
    }

    /// Starts Jaeger with OTLP receivers that serve TLS with `tls` (when given), and waits until
    /// its receivers and query API are up.
    pub async fn start_with_tls(tls: Option<&CertAndKey>) -> anyhow::Result<Self> {
        let bin = tool_dir("jaeger", "TESTENV_JAEGER_BIN")?.join("jaeger");
        // The workspace builds reqwest with `rustls-no-provider`, which makes any client panic
        // until a process-wide crypto provider is installed (even for plain HTTP).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&bin, client.clone(), tls).await {
                Ok(jaeger) => return Ok(jaeger),
                Err(StartError::PortTaken(err)) if attempt < START_ATTEMPTS => {
                    tracing::debug!("jaeger lost a port race, retrying: {err:#}");
                    attempt += 1;
                }
                Err(StartError::PortTaken(err) | StartError::Other(err)) => return Err(err),
            }
        }
    }

    async fn try_start(bin: &Path, client: reqwest::Client, tls: Option<&CertAndKey>) -> Result<Self, StartError> {
        let prepare = || -> anyhow::Result<(tempfile::TempDir, Ports, PathBuf)> {
            let temp = tempfile::Builder::new().prefix("testenv-jaeger-").tempdir()?;
            let ports = Ports::pick()?;
            if let Some(tls) = tls {
                fs::write(temp.path().join("otlp.crt"), &tls.cert_pem)?;
                fs::write(temp.path().join("otlp.key"), &tls.key_pem)?;
            }
            let config = temp.path().join("config.yaml");
            fs::write(&config, ports.config_yaml(tls.map(|_| temp.path())))?;
            Ok((temp, ports, config))
        };
        let (temp, ports, config) = prepare().map_err(StartError::Other)?;
        let dir = temp.path().to_owned();
        let args = ["--config".to_owned(), config.display().to_string()];
        let child = spawn("jaeger", bin, &args, &dir).map_err(StartError::Other)?;
        let mut jaeger = Self {
            child,
            dir,
            temp: Some(temp),
            otlp_grpc_port: ports.otlp_grpc,
            otlp_http_port: ports.otlp_http,
            query_http_port: ports.query_http,
            tls: tls.is_some(),
            client,
        };
        match jaeger.wait_ready(ports.health).await {
            Ok(()) => Ok(jaeger),
            Err(err) => {
                let log = fs::read_to_string(jaeger.log()).unwrap_or_default();
                if log.contains("address already in use") {
                    Err(StartError::PortTaken(err))
                } else {
                    // Dropping a failed start deletes its directory: keep the log for the error.
                    if let Some(temp) = jaeger.temp.take() {
                        let _ = temp.keep();
                    }
                    Err(StartError::Other(err))
                }
            }
        }
    }

    /// Waits until the health check reports every component up (the receivers start last) and the
    /// query API answers.
    async fn wait_ready(&mut self, health_port: u16) -> anyhow::Result<()> {
        let health = format!("http://127.0.0.1:{health_port}/status");
        let services = format!("{}/api/services", self.query_url());
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("jaeger exited with {status} during startup; log: {}", self.log().display());
            }
            if self.answers(&health).await && self.answers(&services).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("jaeger not ready after {STARTUP_TIMEOUT:?}; log: {}", self.log().display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn answers(&self, url: &str) -> bool {
        let request = self.client.get(url).timeout(Duration::from_secs(1)).send().await;
        request.is_ok_and(|response| response.status().is_success())
    }

    /// OTLP/gRPC endpoint, `http://127.0.0.1:<port>` (`https` with TLS).
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.otlp_scheme(), self.otlp_grpc_port)
    }

    /// OTLP/HTTP base URL, `http://127.0.0.1:<port>` (`https` with TLS; traces go to `/v1/traces`).
    pub fn otlp_http_endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.otlp_scheme(), self.otlp_http_port)
    }

    fn otlp_scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Base URL of the query service (HTTP API under `/api`), `http://127.0.0.1:<port>`.
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_http_port)
    }

    /// The working directory: `config.yaml` and `jaeger.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log(&self) -> PathBuf {
        self.dir.join("jaeger.log")
    }

    /// The traces of `service` that started within the last hour (the `data` array of
    /// `GET /api/traces`, in Jaeger's JSON: `traceID`, `spans`, `processes`).
    pub async fn traces(&self, service: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let limit = SEARCH_LIMIT.to_string();
        let url = Url::parse_with_params(
            &format!("{}/api/traces", self.query_url()),
            [("service", service), ("limit", &limit), ("lookback", "1h")],
        )?;
        let (status, body) = self.get(url).await?;
        if !status.is_success() {
            bail!("jaeger answered the search for service {service} with {status}: {body}");
        }
        Ok(data(body)?.unwrap_or_default())
    }

    /// One trace by its hex ID (`GET /api/traces/<id>`), `None` when Jaeger does not know it.
    pub async fn trace(&self, trace_id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let url = Url::parse(&self.query_url())?.join(&format!("/api/traces/{trace_id}"))?;
        let (status, body) = self.get(url).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!("jaeger answered the request for trace {trace_id} with {status}: {body}");
        }
        Ok(data(body)?.and_then(|traces| traces.into_iter().next()))
    }

    async fn get(&self, url: Url) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let response = self.client.get(url.clone()).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.json().await.with_context(|| format!("GET {url}: not JSON"))?;
        Ok((status, body))
    }
}

/// The `data` array of a query API answer (`null` when there is nothing).
fn data(mut body: serde_json::Value) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    match body["data"].take() {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Array(items) => Ok(Some(items)),
        other => bail!("unexpected data in a jaeger answer: {other}"),
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        keep_if_panicking(&mut self.temp);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn stores_a_span_sent_over_otlp_http() -> anyhow::Result<()> {
        let jaeger = Jaeger::start().await?;
        // Jaeger searches by start time (lookback), so the span must start now.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let trace_id = format!("{:032x}", now ^ (u128::from(std::process::id()) << 64));
        let span_id = format!("{:016x}", now as u64 | 1);
        // OTLP/JSON: IDs in hex, 64-bit integers as strings.
        let body = json!({ "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": "testenv-probe" } },
            ] },
            "scopeSpans": [{
                "scope": { "name": "testenv" },
                "spans": [{
                    "traceId": trace_id,
                    "spanId": span_id,
                    "name": "probe",
                    "kind": 1,
                    "startTimeUnixNano": now.to_string(),
                    "endTimeUnixNano": (now + 1_000_000).to_string(),
                    "attributes": [{ "key": "probe.answer", "value": { "intValue": "42" } }],
                }],
            }],
        }] });
        let response = reqwest::Client::new()
            .post(format!("{}/v1/traces", jaeger.otlp_http_endpoint()))
            .json(&body)
            .send()
            .await?;
        assert!(response.status().is_success(), "OTLP/HTTP export failed: {}", response.text().await?);

        let deadline = Instant::now() + Duration::from_secs(10);
        let trace = loop {
            let traces = jaeger.traces("testenv-probe").await?;
            if let Some(trace) = traces.into_iter().find(|t| t["traceID"] == trace_id.as_str()) {
                break trace;
            }
            assert!(Instant::now() < deadline, "the span did not show up in jaeger within 10s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let span = &trace["spans"][0];
        assert_eq!(span["spanID"], span_id.as_str());
        assert_eq!(span["operationName"], "probe");
        let tags = span["tags"].as_array().context("span without tags")?;
        assert!(tags.iter().any(|t| t["key"] == "probe.answer" && t["value"] == 42), "tags: {tags:?}");
        let process = &trace["processes"][span["processID"].as_str().context("span without processID")?];
        assert_eq!(process["serviceName"], "testenv-probe");

        let by_id = jaeger.trace(&trace_id).await?.context("trace not found by its ID")?;
        assert_eq!(by_id["spans"][0]["spanID"], span_id.as_str());
        assert!(jaeger.trace("00000000000000000000000000000001").await?.is_none());
        Ok(())
    }
}
