//! The OTLP trace exporter, configured by the OpenTelemetry exporter variables a user would set
//! for a production collector: the traces endpoint over the general one, a private CA, headers
//! (an API key), timeout and compression, for gRPC and HTTP alike. A collector that cannot be
//! reached (a wrong CA, a wrong address) is reported once, loudly, and its recovery once.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::{OtlpProtocol, TelemetryArgs};
use crate::tls::{self, Trust};

/// Limit of one export when no timeout variable is set: short, so an unreachable collector costs
/// bounded time (also at shutdown).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how traces are exported. Headers are not here: the exporter reads
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS` itself, so their values
/// (API keys) pass through no code of the operator's and are never logged.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// The URL the spans are sent to (for HTTP, with `/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// A PEM bundle of the CAs trusted for an `https` endpoint (instead of the system's), with
    /// the variable that named it.
    pub certificate: Option<(&'static str, PathBuf)>,
    pub timeout: Duration,
    pub compression: Option<Compression>,
}

/// The traces-specific variable if set, else the general one: the name that was used and its
/// value.
fn traces_or_general(
    env: &dyn Fn(&str) -> Option<String>,
    traces: &'static str,
    general: &'static str,
) -> Option<(&'static str, String)> {
    [traces, general].into_iter().find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
}

impl ExportSettings {
    /// The settings from the command line and the environment (`env`); `None` when no endpoint is
    /// set, which turns trace export off. A value that cannot be honoured is an error naming its
    /// variable.
    pub fn resolve(args: &TelemetryArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        // Spelled as the general variable's flag accepts it.
        let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").filter(|v| !v.is_empty()) {
            Some(value) => <OtlpProtocol as clap::ValueEnum>::from_str(&value, false).map_err(|_| {
                anyhow::anyhow!("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL={value:?}: use grpc or http/protobuf")
            })?,
            None => args.otlp_protocol,
        };
        // The traces endpoint is used as it is; the general one is a base URL, to which HTTP adds
        // the signal's path.
        let endpoint = match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|v| !v.trim().is_empty()) {
            Some(endpoint) => endpoint,
            None => match args.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
                None => return Ok(None),
                Some(base) => match protocol {
                    OtlpProtocol::Grpc => base.to_owned(),
                    OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                },
            },
        };
        let certificate =
            traces_or_general(env, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
                .map(|(name, path)| (name, PathBuf::from(path)));
        let timeout = match traces_or_general(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT") {
            None => DEFAULT_TIMEOUT,
            Some((name, value)) => match value.trim().parse::<u64>() {
                Ok(millis) if millis > 0 => Duration::from_millis(millis),
                _ => bail!("{name}={value:?}: the timeout is a positive number of milliseconds"),
            },
        };
        let compression =
            match traces_or_general(env, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION") {
                None => None,
                Some((name, value)) => match value.trim() {
                    "gzip" => Some(Compression::Gzip),
                    "none" => None,
                    other => bail!("{name}={other:?}: use gzip or none"),
                },
            };
        Ok(Some(Self { endpoint, protocol, certificate, timeout, compression }))
    }

    /// The exporter these settings describe, wrapped to report failures once.
    pub fn exporter(&self) -> anyhow::Result<Reporting<opentelemetry_otlp::SpanExporter>> {
        let ca = match &self.certificate {
            None => None,
            Some((name, path)) => {
                let pem = std::fs::read(path).with_context(|| format!("{name}: cannot read {}", path.display()))?;
                // Checked here, so a bad file is named at start-up rather than at the first export.
                tls::client_config(Trust::Pem(&pem)).with_context(|| format!("{name}: {}", path.display()))?;
                Some(pem)
            }
        };
        let endpoint = self.endpoint.as_str();
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(self.timeout);
                if let Some(compression) = self.compression {
                    builder = builder.with_compression(compression);
                }
                if let Some(pem) = ca {
                    builder =
                        builder.with_tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
                }
                builder.build()
            }
            OtlpProtocol::HttpProtobuf => {
                let trust = match (&ca, endpoint.starts_with("https://")) {
                    (Some(pem), _) => Trust::Pem(pem),
                    (None, true) => Trust::System,
                    (None, false) => Trust::Nobody,
                };
                let tls = tls::client_config(trust).context("TLS for the OTLP endpoint")?;
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(endpoint)
                    .with_timeout(self.timeout)
                    .with_http_client(blocking_client(tls, self.timeout)?);
                if let Some(compression) = self.compression {
                    builder = builder.with_compression(compression);
                }
                builder.build()
            }
        }
        .with_context(|| format!("cannot build the OTLP exporter for {endpoint}"))?;
        Ok(Reporting { inner: exporter, endpoint: self.endpoint.clone(), failing: Mutex::new(None) })
    }
}

/// The HTTP exporter's client. A blocking reqwest client starts a runtime of its own, which must
/// not happen on an async thread: it is built on a thread of its own, as the exporter's default
/// client is.
fn blocking_client(tls: rustls::ClientConfig, timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP HTTP client panicked"))?
    .context("cannot build the OTLP HTTP client")
}

/// A span exporter that reports the first failed export as an error with its cause, later ones
/// only at debug level, and the recovery once; the batch processor itself would log every failed
/// batch.
#[derive(Debug)]
pub struct Reporting<E> {
    inner: E,
    endpoint: String,
    /// Batches failed since the last success, when failing.
    failing: Mutex<Option<u64>>,
}

impl<E> Reporting<E> {
    fn record(&self, result: &OTelSdkResult) {
        let mut failing = self.failing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match (result, failing.as_mut()) {
            (Ok(()), None) => {}
            (Ok(()), Some(failed)) => {
                tracing::info!(endpoint = %self.endpoint, failed_batches = *failed, "trace export works again");
                *failing = None;
            }
            (Err(error), None) => {
                tracing::error!(
                    endpoint = %self.endpoint,
                    %error,
                    "cannot export traces; spans are dropped until the collector is reachable (reported once)"
                );
                *failing = Some(1);
            }
            (Err(error), Some(failed)) => {
                *failed += 1;
                tracing::debug!(endpoint = %self.endpoint, %error, failed_batches = *failed, "trace export still failing");
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.record(&result);
        // Reported here; the batch processor need not report it again.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        telemetry: TelemetryArgs,
    }

    fn resolve(args: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<Option<ExportSettings>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let cli = Cli::try_parse_from(std::iter::once("operator").chain(args.iter().copied()))?;
        ExportSettings::resolve(&cli.telemetry, &|name| vars.get(name).cloned())
    }

    #[test]
    fn the_traces_variables_win_over_the_general_ones() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example:4318/custom/path"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
        ];
        let settings = resolve(&["--otlp-endpoint", "http://general:4317"], &vars).unwrap().unwrap();
        assert_eq!(
            settings,
            ExportSettings {
                endpoint: "https://traces.example:4318/custom/path".into(),
                protocol: OtlpProtocol::HttpProtobuf,
                certificate: Some(("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem".into())),
                timeout: Duration::from_millis(2500),
                compression: Some(Compression::Gzip),
            }
        );
    }

    #[test]
    fn the_general_endpoint_is_a_base_url_and_nothing_set_turns_export_off() {
        assert_eq!(resolve(&[], &[]).unwrap(), None);
        let grpc = resolve(&["--otlp-endpoint", "https://collector:4317"], &[]).unwrap().unwrap();
        assert_eq!(
            (grpc.endpoint.as_str(), grpc.timeout, grpc.compression),
            ("https://collector:4317", DEFAULT_TIMEOUT, None)
        );
        let http = resolve(&["--otlp-endpoint", "https://collector:4318/", "--otlp-protocol", "http/protobuf"], &[]);
        assert_eq!(http.unwrap().unwrap().endpoint, "https://collector:4318/v1/traces");
    }

    #[test]
    fn values_that_cannot_be_honoured_name_their_variable() {
        let on = ["--otlp-endpoint", "http://collector:4317"];
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ] {
            let error = resolve(&on, &[(name, value)]).expect_err(name).to_string();
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn a_certificate_file_that_is_missing_or_not_pem_is_named_at_start_up() {
        let dir = std::env::temp_dir().join(format!("otlp-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        for path in [dir.join("missing.pem"), not_pem] {
            let settings = ExportSettings {
                endpoint: "https://collector:4317".into(),
                protocol: OtlpProtocol::Grpc,
                certificate: Some(("OTEL_EXPORTER_OTLP_CERTIFICATE", path.clone())),
                timeout: DEFAULT_TIMEOUT,
                compression: None,
            };
            let error = format!("{:#}", settings.exporter().expect_err("refused"));
            assert!(error.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && error.contains(&path.display().to_string()));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
