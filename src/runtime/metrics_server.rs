//! `/metrics` over HTTPS on every replica, as controller-runtime's secure metrics serve it: each
//! request carries a bearer token, which the API server authenticates (TokenReview) and authorises
//! for `get` on the non-resource URL `/metrics` (SubjectAccessReview); the ClusterRole
//! `neurallog-tenant-operator-metrics-reader` grants that. The certificate is the conversion
//! webhook's. A verdict is kept for [`VERDICT_TTL`] per token, so a scrape every second costs the
//! API server two reviews every ten seconds, not two a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

/// The path served and authorised.
pub const PATH: &str = "/metrics";
/// How long a token's verdict is kept.
const VERDICT_TTL: Duration = Duration::from_secs(10);
/// Verdicts kept at most; the cache starts over when full (a scraper presents one token).
const MAX_VERDICTS: usize = 256;

/// What the API server said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Not a valid token: 401.
    Unauthenticated,
    /// A valid token of someone who may not read the metrics: 403, naming them.
    Forbidden {
        user: String,
    },
}

/// Asks the API server about tokens, keeping its answers a little while.
pub struct Authorizer {
    client: Client,
    verdicts: Mutex<HashMap<[u8; 32], (Instant, Verdict)>>,
}

impl Authorizer {
    pub fn new(client: Client) -> Self {
        Self { client, verdicts: Mutex::default() }
    }

    /// The verdict on `token`; an error when the API server could not be asked.
    pub async fn check(&self, token: &str) -> Result<Verdict, kube::Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((at, verdict)) = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).get(&key)
            && at.elapsed() < VERDICT_TTL
        {
            return Ok(verdict.clone());
        }
        let verdict = self.review(token).await?;
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        if verdicts.len() >= MAX_VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(key, (Instant::now(), verdict.clone()));
        Ok(verdict)
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: None },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Verdict::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(PATH.to_owned()),
                    verb: Some("get".to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let decided =
            Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &access).await?;
        Ok(if decided.status.is_some_and(|status| status.allowed) {
            Verdict::Allowed
        } else {
            Verdict::Forbidden { user: user.username.unwrap_or_default() }
        })
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    authorizer: Arc<Authorizer>,
}

/// The router of the metrics server.
pub fn router(metrics: Arc<Metrics>, authorizer: Arc<Authorizer>) -> Router {
    Router::new().route(PATH, get(serve_metrics)).with_state(Shared { metrics, authorizer })
}

async fn serve_metrics(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return refusal(StatusCode::UNAUTHORIZED, "a bearer token is required".to_owned());
    };
    match shared.authorizer.check(token).await {
        Ok(Verdict::Allowed) => metrics_response(&shared.metrics),
        Ok(Verdict::Unauthenticated) => refusal(StatusCode::UNAUTHORIZED, "the token is not valid".to_owned()),
        Ok(Verdict::Forbidden { user }) => refusal(
            StatusCode::FORBIDDEN,
            format!("{user} may not get {PATH} (ClusterRole {})", crate::monitoring::METRICS_READER_ROLE),
        ),
        Err(error) => {
            tracing::warn!(%error, "cannot ask the API server about a metrics request's token");
            refusal(StatusCode::SERVICE_UNAVAILABLE, "the API server cannot check the token now".to_owned())
        }
    }
}

/// The metrics in the OpenMetrics text format (exemplars need it).
pub fn metrics_response(metrics: &Metrics) -> Response {
    match metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn refusal(status: StatusCode, message: String) -> Response {
    let mut response = (status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}
