//! The real Prometheus and promtool (`tools/build.sh prometheus`, `$TESTENV_PROMETHEUS_BIN`): a
//! server on loopback with the configuration and rule files a test writes, asked through its HTTP
//! API; and the Prometheus Operator's CRDs (`tools/build.sh prometheus-operator`).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::process::{log_tail, spawn, tool_dir};

/// promtool, of the pinned Prometheus build.
pub fn promtool() -> anyhow::Result<PathBuf> {
    Ok(tool_dir("prometheus", "TESTENV_PROMETHEUS_BIN")?.join("promtool"))
}

/// The directory of the Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule, …; one YAML
/// file each), copied from its module next to the pinned build (`tools/build.sh
/// prometheus-operator`, `$TESTENV_PROMETHEUS_OPERATOR_BIN`): `<bin>/../prometheus-operator-crd`.
pub fn operator_crds() -> anyhow::Result<PathBuf> {
    Ok(tool_dir("prometheus-operator", "TESTENV_PROMETHEUS_OPERATOR_BIN")?.join("../prometheus-operator-crd"))
}

/// A running Prometheus; stopped when dropped.
pub struct Prometheus {
    process: Child,
    url: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus in `dir` with `config` (YAML, which may name files of `dir` relative to
    /// it), exemplar storage on; returns once it is ready.
    pub async fn start(dir: &Path, config: &str) -> anyhow::Result<Self> {
        let bin = tool_dir("prometheus", "TESTENV_PROMETHEUS_BIN")?.join("prometheus");
        std::fs::create_dir_all(dir)?;
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let port = crate::free_port()?;
        let args = [
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--enable-feature=exemplar-storage".to_owned(),
            "--log.level=info".to_owned(),
        ];
        let process = spawn("prometheus", &bin, &args, dir)?;
        let mut prometheus = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            log: dir.join("prometheus.log"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = prometheus.http.get(format!("{}/-/ready", prometheus.url)).send().await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return Ok(prometheus);
            }
            if let Some(status) = prometheus.process.try_wait()? {
                bail!("prometheus exited ({status}): {}", log_tail(&prometheus.log, 30));
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 60 s: {}", log_tail(&prometheus.log, 30));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /api/v1/<path>` with `query`: the answer's `data`.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query)?;
        let response = self.http.get(url).send().await?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("/api/v1/{path} answered {status}"))?;
        if body["status"] != "success" {
            bail!("/api/v1/{path} {query:?}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// The instant vector `expr` evaluates to now.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts pending or firing now.
    pub async fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.api("alerts", &[]).await?["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// The active scrape targets.
    pub async fn targets(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.api("targets", &[("state", "active")]).await?["activeTargets"].as_array().cloned().unwrap_or_default())
    }

    /// The exemplars of `expr` over the last `seconds`.
    pub async fn exemplars(&self, expr: &str, seconds: i64) -> anyhow::Result<Vec<Value>> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let (start, end) = ((now as i64 - seconds).to_string(), now.to_string());
        let data = self.api("query_exemplars", &[("query", expr), ("start", &start), ("end", &end)]).await?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
