//! Logging and tracing: human-readable or JSON logs, and OTLP trace export when an endpoint is
//! configured (the standard `OTEL_*` variables or the matching flags). Without an endpoint no
//! exporter runs at all.

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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

/// Telemetry settings, from the command line and the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, such as `info` or `neurallog_tenant_operator=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP endpoint that receives traces, such as http://localhost:4317. Tracing is off without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value = "grpc")]
    pub otlp_protocol: OtlpProtocol,
    /// `service.name` of the exported traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "neurallog-tenant-operator")]
    pub service_name: String,
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span still buffered. Call once, after the controller has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not flush traces");
        }
    }
}

fn tracer_provider(args: &TelemetryArgs, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match args.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build(),
    }
    .with_context(|| format!("cannot build the OTLP exporter for {endpoint}"))?;
    let resource = Resource::builder()
        .with_service_name(args.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Installs the global subscriber. Must run inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(args: &TelemetryArgs) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_new(&args.log_filter).with_context(|| format!("invalid log filter {:?}", args.log_filter))?;
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let provider =
        args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()).map(|e| tracer_provider(args, e)).transpose()?;
    let otel = provider.as_ref().map(|p| {
        // The exporter's own HTTP/2 stack must not trace itself into the pipeline it feeds.
        let filter = EnvFilter::new("info,h2=off,tonic=off,hyper=off,reqwest=off,tower=off");
        tracing_opentelemetry::layer().with_tracer(p.tracer("neurallog-tenant-operator")).with_filter(filter)
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .context("a global subscriber is already installed")?;
    Ok(Telemetry { provider })
}
