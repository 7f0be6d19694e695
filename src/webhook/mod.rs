//! The CRD conversion webhook server, on every replica: the API server converts every Tenant it
//! reads or writes in a version other than the stored one through `POST /convert`, so it must
//! answer wherever the Service sends it, leader or not.
//!
//! - HTTPS only, HTTP/1.1 only (all the API server speaks to webhooks), the certificate swapped
//!   under the running listener ([`certificates`]); without one yet, handshakes fail and the
//!   server runs on.
//! - A request body is read up to [`MAX_BODY`] within [`REQUEST_TIMEOUT`] and converted off the
//!   async threads (a large review is seconds of CPU that the Lease renewal must not wait for); a
//!   stalled handshake or header is dropped, so a hung client holds only its own connection.
//! - Each review is one trace (`convert`), one count by result and one latency sample
//!   ([`Metrics::conversion_reviewed`]).
//! - [`provision`] issues the certificate itself for installs without OLM.

pub mod certificates;
pub mod provision;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use kube::core::conversion::{ConversionResponse, ConversionReview};
use kube::core::{Status, TypeMeta};
use tokio::net::TcpListener;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::https::Reloading;
pub use certificates::Certificates;

use crate::api::conversion;
use crate::metrics::Metrics;

/// The path the CRD's `spec.conversion.webhook.clientConfig` names.
pub use crate::api::CONVERSION_PATH as PATH;
/// Largest review body accepted: the API server converts a whole list response in one review
/// (every Tenant, when the client does not page).
pub const MAX_BODY: usize = 64 << 20;
/// Time to read a review's body and answer it; the API server gives up after 30 s anyway.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Every reply is a ConversionReview of the one version the API server is told to send (the
/// CRD's `conversionReviewVersions`).
const REVIEW_KIND: &str = "ConversionReview";

/// Where the webhook listens and where its certificate is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub address: SocketAddr,
    /// The directory of `tls.crt` and `tls.key` (OLM's mount); unused with a self-managed
    /// certificate.
    pub cert_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self { address: SocketAddr::from(([0, 0, 0, 0], 9443)), cert_dir: certificates::DEFAULT_DIR.into() }
    }
}

/// The webhook server, its port bound.
pub struct Webhook {
    listener: TcpListener,
    local_addr: SocketAddr,
    resolver: Arc<Reloading>,
    follow_certificates: BoxFuture<'static, ()>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Webhook {
    /// Binds the port now, so a taken port fails the start, and reads the certificate available
    /// now (there may be none yet).
    pub async fn bind(settings: &Settings, certificates: Certificates) -> anyhow::Result<Webhook> {
        let listener = TcpListener::bind(settings.address)
            .await
            .with_context(|| format!("cannot listen on {} for the conversion webhook", settings.address))?;
        let local_addr = listener.local_addr().context("the webhook listener has no address")?;
        let (resolver, follow_certificates) = certificates.open().await;
        Ok(Webhook { listener, local_addr, resolver, follow_certificates })
    }

    /// The certificate in force, as it changes (none until the first is read).
    pub fn certificate(&self) -> Arc<Reloading> {
        self.resolver.clone()
    }

    /// The address bound (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then lets reviews in flight finish (for a bounded time).
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Webhook { listener, local_addr, resolver, follow_certificates } = self;
        let follower = tokio::spawn(follow_certificates);
        tracing::info!(address = %local_addr, path = PATH, "conversion webhook listening");
        let served = crate::https::serve(listener, resolver, router(metrics), "conversion webhook", shutdown).await;
        follower.abort();
        tracing::info!("conversion webhook stopped");
        served
    }
}

fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(PATH, post(convert)).with_state(metrics)
}

/// How a review was answered, for its span, log line and metrics.
#[derive(Debug, Default, PartialEq, Eq)]
struct Answered {
    uid: Option<String>,
    desired_api_version: Option<String>,
    objects: usize,
    /// Objects converted, on success.
    converted: usize,
    /// Why it failed, if it did.
    failure: Option<String>,
}

/// The reply to one body: HTTP 400 and a failed review for a body that is not a ConversionReview;
/// otherwise HTTP 200 and what the conversion answers (which judges the review's version and
/// request itself), always as an `apiextensions.k8s.io/v1` ConversionReview, the only version the
/// API server is told to send and read.
fn answer(body: &[u8]) -> (StatusCode, ConversionReview, Answered) {
    let review: ConversionReview = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => {
            let message = format!("the body is not a ConversionReview: {error}");
            let status = Status::failure(&message, "BadRequest").with_code(400);
            let answered = Answered { failure: Some(message), ..Answered::default() };
            return (StatusCode::BAD_REQUEST, ConversionResponse::invalid(status).into_review(), answered);
        }
    };
    let mut answered = Answered::default();
    if let Some(request) = &review.request {
        answered.uid = Some(request.uid.clone());
        answered.desired_api_version = Some(request.desired_api_version.clone());
        answered.objects = request.objects.len();
    }
    let mut reply = conversion::review(review);
    reply.types = TypeMeta { api_version: conversion::REVIEW_API_VERSION.to_owned(), kind: REVIEW_KIND.to_owned() };
    match &reply.response {
        Some(response) if response.result.is_success() => answered.converted = response.converted_objects.len(),
        Some(response) => answered.failure = Some(response.result.message.clone()),
        None => answered.failure = Some("the conversion gave no response".to_owned()),
    }
    (StatusCode::OK, reply, answered)
}

/// Why a review got no answer from [`answer`].
enum Unanswered {
    TooLarge,
    Unreadable(axum::Error),
    Panicked,
}

/// The whole body, refused past [`MAX_BODY`] (announced or sent).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Unanswered> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if announced.is_some_and(|length| length > MAX_BODY) {
        return Err(Unanswered::TooLarge);
    }
    // Announced is not sent: reserve no more than a typical review up front.
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0).min(1 << 20));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Unanswered::Unreadable)?;
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(Unanswered::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// `POST /convert`.
async fn convert(State(metrics): State<Arc<Metrics>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        parent: None,
        "convert",
        uid = Empty,
        desiredAPIVersion = Empty,
        objects = Empty,
        result = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    );
    // The API server's trace, when it sends one (W3C traceparent).
    if headers.contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(&headers))
        });
        let _ = span.set_parent(parent);
    }
    let (status, review, answered) = async {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let body = read_body(&headers, body).await?;
            // Parsing, converting and serialising a large review is CPU-bound: off the async threads.
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let (status, review, answered) = answer(&body);
                    (status, serialise(&review), answered)
                })
            })
            .await
            .map_err(|error| {
                tracing::error!(%error, "the conversion panicked");
                Unanswered::Panicked
            })
        })
        .await;
        let refused = |status: StatusCode, message: String| {
            let review =
                ConversionResponse::invalid(Status::failure(&message, reason(status)).with_code(status.as_u16()))
                    .into_review();
            (status, serialise(&review), Answered { failure: Some(message), ..Answered::default() })
        };
        let (status, review, answered) = match read {
            Ok(Ok(answer)) => answer,
            Ok(Err(Unanswered::TooLarge)) => {
                refused(StatusCode::PAYLOAD_TOO_LARGE, format!("the ConversionReview is larger than {MAX_BODY} bytes"))
            }
            Ok(Err(Unanswered::Unreadable(error))) => {
                refused(StatusCode::BAD_REQUEST, format!("the ConversionReview could not be read: {error}"))
            }
            Ok(Err(Unanswered::Panicked)) => {
                refused(StatusCode::INTERNAL_SERVER_ERROR, "the conversion failed unexpectedly".to_owned())
            }
            Err(_) => refused(
                StatusCode::REQUEST_TIMEOUT,
                format!("the ConversionReview was not received and answered within {REQUEST_TIMEOUT:?}"),
            ),
        };
        let span = tracing::Span::current();
        if let Some(uid) = &answered.uid {
            span.record("uid", uid.as_str());
        }
        if let Some(version) = &answered.desired_api_version {
            span.record("desiredAPIVersion", version.as_str());
        }
        span.record("objects", answered.objects);
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &answered.failure {
            None => {
                span.record("result", "success");
                tracing::debug!(objects = answered.objects, elapsed_ms, "conversion review answered");
            }
            Some(why) => {
                span.record("result", "failure")
                    .record("otel.status_code", "ERROR")
                    .record("otel.status_message", why.as_str());
                tracing::warn!(error = %why, http_status = status.as_u16(), elapsed_ms, "conversion review failed");
            }
        }
        (status, review, answered)
    }
    .instrument(span)
    .await;
    metrics.conversion_reviewed(answered.failure.is_none(), answered.converted as u64, started.elapsed());
    match review {
        Some(json) => (status, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The review as JSON; `None` (logged) if it cannot be, which a review of JSON values never is.
fn serialise(review: &ConversionReview) -> Option<Vec<u8>> {
    serde_json::to_vec(review).inspect_err(|error| tracing::error!(%error, "cannot serialise a ConversionReview")).ok()
}

/// The `reason` of a refusal, as Kubernetes names them.
fn reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::REQUEST_TIMEOUT => "Timeout",
        StatusCode::BAD_REQUEST => "BadRequest",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests;
