//! Logging and tracing: human-readable or JSON logs, and OTLP trace export when an endpoint is
//! configured (the standard `OTEL_*` variables or the matching flags; [`export`]). Without an
//! endpoint no exporter runs at all.

mod export;

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use self::export::ExportSettings;

/// Format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for log pipelines.
    Json,
}

/// Wire protocol of the OTLP exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (usually port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (usually port 4318).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Telemetry settings, from the command line and the standard `OTEL_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, such as `info` or `neurallog_tenant_operator=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP endpoint that receives traces, such as http://localhost:4317 (gRPC) or
    /// http://localhost:4318 (HTTP; `/v1/traces` is appended). OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    /// a full URL, wins over it. Tracing is off without either. The exporter also reads
    /// OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE (a PEM file of the CAs to trust), _HEADERS
    /// (key=value,...; never logged), _TIMEOUT (milliseconds, default 3000), _COMPRESSION (gzip or
    /// none) and OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value = "grpc")]
    pub otlp_protocol: OtlpProtocol,
    /// `service.name` of the exported traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "neurallog-tenant-operator")]
    pub service_name: String,
    /// Extra resource attributes, as `key=value,key=value`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", value_parser = parse_attributes)]
    pub resource_attributes: Option<Attributes>,
    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio.
    #[arg(long = "traces-sampler", env = "OTEL_TRACES_SAMPLER", default_value = "parentbased_always_on")]
    pub sampler: String,
    /// Argument of the ratio samplers: the share of traces kept, from 0 to 1.
    #[arg(long = "traces-sampler-arg", env = "OTEL_TRACES_SAMPLER_ARG")]
    pub sampler_arg: Option<f64>,
}

/// Resource attributes parsed from `key=value,key=value`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes(pub Vec<(String, String)>);

fn parse_attributes(text: &str) -> Result<Attributes, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim().to_owned())),
            _ => Err(format!("{pair:?} is not key=value")),
        })
        .collect::<Result<_, _>>()
        .map(Attributes)
}

/// The sampler named by `OTEL_TRACES_SAMPLER` and its argument, as the OpenTelemetry spec defines them.
fn sampler(name: &str, arg: Option<f64>) -> anyhow::Result<Sampler> {
    let ratio = || {
        let ratio = arg.unwrap_or(1.0);
        anyhow::ensure!((0.0..=1.0).contains(&ratio), "sampler argument {ratio} is not between 0 and 1");
        Ok(Sampler::TraceIdRatioBased(ratio))
    };
    Ok(match name {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => ratio()?,
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(ratio()?)),
        other => anyhow::bail!("unknown traces sampler {other:?}"),
    })
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Longest wait for the last spans to reach the collector on shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

impl Telemetry {
    /// Exports every span still buffered, within a bounded time. Call once, after the controller
    /// has stopped. The flush blocks, so it runs off the async threads the exporter needs.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let flush = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(FLUSH_TIMEOUT, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "could not flush traces"),
            Ok(Err(error)) => tracing::warn!(%error, "trace flush task failed"),
            Err(_) => tracing::warn!("traces not flushed within {FLUSH_TIMEOUT:?}"),
        }
    }
}

/// The pod the operator runs in (downward API), recorded on every trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// Recorded as `k8s.pod.name` and `service.instance.id`.
    pub name: Option<String>,
    /// Recorded as `k8s.namespace.name`.
    pub namespace: Option<String>,
}

fn resource(args: &TelemetryArgs, pod: &Pod) -> Resource {
    let mut builder = Resource::builder()
        .with_service_name(args.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    for (key, value) in args.resource_attributes.iter().flat_map(|a| a.0.iter()) {
        builder = builder.with_attribute(KeyValue::new(key.clone(), value.clone()));
    }
    if let Some(name) = &pod.name {
        builder = builder
            .with_attribute(KeyValue::new("k8s.pod.name", name.clone()))
            .with_attribute(KeyValue::new("service.instance.id", name.clone()));
    }
    if let Some(namespace) = &pod.namespace {
        builder = builder.with_attribute(KeyValue::new("k8s.namespace.name", namespace.clone()));
    }
    builder.build()
}

fn tracer_provider(args: &TelemetryArgs, export: &ExportSettings, pod: &Pod) -> anyhow::Result<SdkTracerProvider> {
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(export.exporter()?)
        .with_resource(resource(args, pod))
        .with_sampler(sampler(&args.sampler, args.sampler_arg)?)
        .build())
}

/// Installs the global subscriber and the W3C trace-context propagator; traces record `pod`. Must run inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(args: &TelemetryArgs, pod: &Pod) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_new(&args.log_filter).with_context(|| format!("invalid log filter {:?}", args.log_filter))?;
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().json().with_span_list(false).with_writer(std::io::stderr).boxed()
        }
    };
    let export = ExportSettings::resolve(args, &|name| std::env::var(name).ok())?;
    let provider = export.as_ref().map(|export| tracer_provider(args, export, pod)).transpose()?;
    let otel = provider.as_ref().map(|p| {
        // Every step of the operator; not kube's own "reconciling object" span (each reconcile is
        // its own root), nor the exporter's HTTP/2 stack, which would trace itself into the
        // pipeline it feeds.
        let filter = EnvFilter::new(
            "info,neurallog_tenant_operator=debug,kube_runtime=warn,opentelemetry=off,h2=off,tonic=off,hyper=off,reqwest=off,tower=off",
        );
        tracing_opentelemetry::layer().with_tracer(p.tracer("neurallog-tenant-operator")).with_filter(filter)
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .context("a global subscriber is already installed")?;
    match &export {
        Some(export) => tracing::info!(
            endpoint = export.endpoint,
            protocol = ?export.protocol,
            ca = export.certificate.as_ref().map(|(_, path)| path.display().to_string()),
            timeout_ms = u64::try_from(export.timeout.as_millis()).unwrap_or(u64::MAX),
            compression = export.compression.map(|c| c.to_string()),
            "exporting traces over OTLP"
        ),
        None => tracing::info!("trace export is off (no OTEL_EXPORTER_OTLP_ENDPOINT)"),
    }
    Ok(Telemetry { provider })
}

/// The trace and span ids of the current span, as hex, when it is being traced.
pub fn current_ids() -> Option<(String, String)> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
}

/// Records an Event about `regarding`, its note ending with the current trace id so that `kubectl
/// describe` leads to the trace. A failure to record is logged, never fatal.
pub async fn publish_event(
    recorder: &kube::runtime::events::Recorder,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    event: kube::runtime::events::Event,
) {
    let note = event.note.map(|note| match current_ids() {
        Some((trace_id, _)) => format!("{note} (trace {trace_id})"),
        None => note,
    });
    if let Err(error) = recorder.publish(&kube::runtime::events::Event { note, ..event }, regarding).await {
        let (kind, name) =
            (regarding.kind.as_deref().unwrap_or_default(), regarding.name.as_deref().unwrap_or_default());
        tracing::warn!(%kind, %name, %error, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_attributes_parse_and_bad_pairs_are_named() {
        let parsed = parse_attributes("deployment.environment=prod, team = platform").unwrap();
        assert_eq!(parsed.0, [("deployment.environment".into(), "prod".into()), ("team".into(), "platform".into())]);
        assert!(parse_attributes("novalue").unwrap_err().contains("novalue"));
    }

    #[test]
    fn samplers_follow_the_standard_names() {
        assert!(matches!(sampler("always_off", None).unwrap(), Sampler::AlwaysOff));
        assert!(matches!(sampler("traceidratio", Some(0.25)).unwrap(), Sampler::TraceIdRatioBased(r) if r == 0.25));
        assert!(matches!(sampler("parentbased_always_on", None).unwrap(), Sampler::ParentBased(_)));
        assert!(sampler("traceidratio", Some(2.0)).is_err());
        assert!(sampler("sometimes", None).is_err());
    }
}
