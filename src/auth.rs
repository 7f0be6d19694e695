//! Client of the NeuralLog Auth service, with which every tenant is registered while it exists.
//!
//! The contract (Auth is a separate service, this module follows it):
//!
//! - `GET {base}/api/tenants` → `200 {"tenants": [...]}` (other fields are ignored);
//! - `POST {base}/api/tenants` with `{"tenantId", "adminUserId": "system"}` → `201`; `409` means the
//!   tenant is already registered, which is what the operator wants;
//! - `DELETE {base}/api/tenants/<id>` → `200` (or `204`); `404` means it is already gone.
//!
//! Every call retries transient failures (connection errors, timeouts, `5xx`, `429`) within a
//! fixed budget and fails with an [`AuthError`] that names the tenant and the operation, so the
//! message can go straight into a condition or an Event. The optional bearer token is read from a
//! Kubernetes Secret and re-read after Auth rejects it, so a rotated token needs no restart.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use opentelemetry_http::HeaderInjector;
use reqwest::{StatusCode, Url};
use rustls_platform_verifier::BuilderVerifierExt as _;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The user Auth makes the first administrator of a tenant it registers.
const ADMIN_USER: &str = "system";
/// Delay before the second attempt of a call; doubled for every further one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How much of an unexpected response body an error quotes.
const BODY_EXCERPT_CHARS: usize = 200;

/// How to reach NeuralLog Auth.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Base URL, e.g. `http://auth.neurallog.svc:3000`; `http` or `https`, checked by
    /// [`AuthClient::new`]. A path prefix is kept (`http://gw/auth` → `http://gw/auth/api/tenants`).
    pub base_url: String,
    /// Where the bearer token is; `None` sends no `Authorization` header.
    pub token: Option<TokenSecret>,
    /// Limit of one attempt (connect, request and response body); also of reading the token.
    pub timeout: Duration,
    /// Attempts per call, the first included; `0` counts as `1`. Only transient failures are
    /// retried, so a call costs at most `attempts × (timeout + 2 s)`.
    pub attempts: u32,
}

/// The Kubernetes Secret key holding the Auth bearer token.
///
/// Referenced as `namespace/name` (the form of a command-line flag), with the key given
/// separately: [`TokenSecret::parse`] takes both, [`FromStr`] uses [`TokenSecret::DEFAULT_KEY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSecret {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl TokenSecret {
    /// Key used when none is given.
    pub const DEFAULT_KEY: &'static str = "token";
}

impl fmt::Display for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} key {}", self.namespace, self.name, self.key)
    }
}

/// Whether `s` could be a Kubernetes object name: lowercase alphanumerics, `-` and `.`, starting
/// and ending alphanumeric, at most 253 characters. Catches typos before the first API call.
fn is_object_name(s: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 253
        && edge_ok(s.chars().next())
        && edge_ok(s.chars().last())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// A `namespace/name` reference or a Secret key that cannot name a Secret key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTokenSecret(String);

impl TokenSecret {
    /// `namespace/name` with an explicit key (a Secret key: alphanumerics, `-`, `_`, `.`).
    pub fn parse(reference: &str, key: &str) -> Result<Self, InvalidTokenSecret> {
        let valid_key = !key.is_empty()
            && key.len() <= 253
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_key {
            return Err(InvalidTokenSecret(format!("{key:?} is not a valid Secret key")));
        }
        let mut secret: Self = reference.parse()?;
        secret.key = key.to_owned();
        Ok(secret)
    }
}

/// `namespace/name`, with [`TokenSecret::DEFAULT_KEY`].
impl FromStr for TokenSecret {
    type Err = InvalidTokenSecret;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: String| Err(InvalidTokenSecret(format!("token Secret {s:?}: {why}")));
        let Some((namespace, name)) = s.split_once('/') else {
            return invalid("not of the form <namespace>/<name>".into());
        };
        if name.contains('/') {
            return invalid("not of the form <namespace>/<name> (the key is set separately)".into());
        }
        if !is_object_name(namespace) {
            return invalid(format!("{namespace:?} is not a valid namespace name"));
        }
        if !is_object_name(name) {
            return invalid(format!("{name:?} is not a valid Secret name"));
        }
        Ok(Self { namespace: namespace.to_owned(), name: name.to_owned(), key: Self::DEFAULT_KEY.to_owned() })
    }
}

/// What a call was doing, for errors and logs: "cannot {operation} tenant x".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CheckRegistration,
    Register,
    Deregister,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CheckRegistration => "check registration of",
            Operation::Register => "register",
            Operation::Deregister => "deregister",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed Auth call, or an unusable configuration. Call errors name the tenant and the
/// operation; `attempts` is how many requests were made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No answer within the timeout, on the last attempt.
    #[error(
        "cannot {operation} tenant {tenant}: NeuralLog Auth did not answer within {timeout:?} (attempts: {attempts})"
    )]
    Timeout { tenant: String, operation: Operation, timeout: Duration, attempts: u32 },
    /// No HTTP exchange: connection refused or reset, DNS failure, TLS failure.
    #[error("cannot {operation} tenant {tenant}: NeuralLog Auth is unreachable (attempts: {attempts}): {message}")]
    Unreachable { tenant: String, operation: Operation, attempts: u32, message: String },
    /// Auth answered with a status that is not success for the operation.
    #[error("cannot {operation} tenant {tenant}: NeuralLog Auth answered {status} (attempts: {attempts}): {body}")]
    Rejected { tenant: String, operation: Operation, status: u16, attempts: u32, body: String },
    /// Auth answered with success, but not with what the contract promises.
    #[error("cannot {operation} tenant {tenant}: NeuralLog Auth answered {status} with an unexpected body: {message}")]
    InvalidResponse { tenant: String, operation: Operation, status: u16, message: String },
    /// The bearer token could not be read (not retried within the call: the next reconcile is).
    #[error(
        "cannot {operation} tenant {tenant}: no NeuralLog Auth token in Secret {namespace}/{name} key {key}: {message}"
    )]
    Token { tenant: String, operation: Operation, namespace: String, name: String, key: String, message: String },
    /// The base URL is unusable.
    #[error("invalid NeuralLog Auth URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
    /// The HTTP client could not be built (for `https`: no CA certificates in the system store).
    #[error("cannot set up the NeuralLog Auth client: {message}")]
    ClientSetup { message: String },
}

impl AuthError {
    /// CamelCase reason for a Kubernetes condition or Event.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Timeout { .. } => "AuthTimeout",
            AuthError::Unreachable { .. } => "AuthUnreachable",
            AuthError::Rejected { .. } => "AuthRejected",
            AuthError::InvalidResponse { .. } => "AuthInvalidResponse",
            AuthError::Token { .. } => "AuthTokenUnavailable",
            AuthError::InvalidUrl { .. } => "AuthInvalidUrl",
            AuthError::ClientSetup { .. } => "AuthClientSetupFailed",
        }
    }
}

/// Where the bearer token comes from.
enum TokenSource {
    /// A Kubernetes Secret, the only source outside tests (boxed: a client is large).
    Secret(Box<Api<Secret>>),
    /// Tokens handed out in order, the last one repeatedly: rotation without a cluster.
    #[cfg(test)]
    Sequence(Mutex<std::collections::VecDeque<String>>),
}

/// The bearer token, read once and kept until Auth rejects it.
struct TokenCache {
    secret: TokenSecret,
    source: TokenSource,
    cached: Mutex<Option<String>>,
}

/// A lock that stays usable after a panic elsewhere poisoned it (the guarded values are always
/// consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token that can go into an `Authorization` header, or why not.
fn usable_token(raw: &[u8]) -> Result<String, String> {
    let token = std::str::from_utf8(raw).map_err(|_| "the value is not UTF-8".to_owned())?.trim();
    if token.is_empty() {
        return Err("the value is empty".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the value has characters not allowed in an HTTP header".into());
    }
    Ok(token.to_owned())
}

impl TokenCache {
    /// The cached token, else a fresh one (then cached). Two concurrent first calls may both
    /// read it; that costs a read, never a wrong token.
    async fn get(&self, timeout: Duration) -> Result<String, String> {
        if let Some(token) = lock(&self.cached).clone() {
            return Ok(token);
        }
        let token = self.read(timeout).await?;
        *lock(&self.cached) = Some(token.clone());
        Ok(token)
    }

    async fn read(&self, timeout: Duration) -> Result<String, String> {
        match &self.source {
            TokenSource::Secret(api) => {
                let secret = tokio::time::timeout(timeout, api.get_opt(&self.secret.name))
                    .await
                    .map_err(|_| format!("the Kubernetes API did not answer within {timeout:?}"))?
                    .map_err(|error| format!("cannot read the Secret: {error}"))?
                    .ok_or_else(|| "the Secret does not exist".to_owned())?;
                let value = secret
                    .data
                    .as_ref()
                    .and_then(|data| data.get(&self.secret.key))
                    .ok_or_else(|| "the Secret has no such key".to_owned())?;
                usable_token(&value.0)
            }
            #[cfg(test)]
            TokenSource::Sequence(tokens) => {
                let mut tokens = lock(tokens);
                let token = if tokens.len() > 1 { tokens.pop_front() } else { tokens.front().cloned() };
                token.ok_or_else(|| "no token left".to_owned()).and_then(|t| usable_token(t.as_bytes()))
            }
        }
    }

    /// Drops `rejected` from the cache, unless another call already replaced it.
    fn forget(&self, rejected: &str) {
        let mut cached = lock(&self.cached);
        if cached.as_deref() == Some(rejected) {
            *cached = None;
        }
    }
}

/// Why one attempt failed.
enum Failure {
    Timeout,
    Transport { message: String, transient: bool },
    Status { status: StatusCode, body: String },
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Timeout => true,
            Failure::Transport { transient, .. } => *transient,
            Failure::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn into_error(self, tenant: &str, operation: Operation, attempts: u32, timeout: Duration) -> AuthError {
        let tenant = tenant.to_owned();
        match self {
            Failure::Timeout => AuthError::Timeout { tenant, operation, timeout, attempts },
            Failure::Transport { message, .. } => AuthError::Unreachable { tenant, operation, attempts, message },
            Failure::Status { status, body } => {
                AuthError::Rejected { tenant, operation, status: status.as_u16(), attempts, body }
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Transport { message, .. } => f.write_str(message),
            Failure::Status { status, .. } => write!(f, "answered {status}"),
        }
    }
}

/// An error with its causes: reqwest's own message ("error sending request") says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The start of a response body, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Wait after failed attempt `attempt` (1-based): 100 ms, 200 ms, 400 ms, … up to 2 s.
fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// TLS for reqwest on ring, the crypto provider kube already uses (see the root Cargo.toml).
/// `https` trusts the system's CA certificates; for `http` nothing is trusted, as nothing is ever
/// verified (redirects are not followed), so a system without CA certificates still works.
fn tls_config(https: bool) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    Ok(if https {
        builder.with_platform_verifier()?.with_no_client_auth()
    } else {
        builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
    })
}

/// Body of a registration.
#[derive(Serialize)]
struct Registration<'a> {
    #[serde(rename = "tenantId")]
    tenant_id: &'a str,
    #[serde(rename = "adminUserId")]
    admin_user_id: &'a str,
}

/// Answer to the tenant list; other fields are ignored.
#[derive(Deserialize)]
struct TenantList {
    tenants: Vec<String>,
}

/// The operator's NeuralLog Auth client. Cheap to share by reference; holds a connection pool.
pub struct AuthClient {
    http: reqwest::Client,
    base_url: String,
    tenants_url: Url,
    token: Option<TokenCache>,
    timeout: Duration,
    attempts: u32,
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthClient")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|t| &t.secret))
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl AuthClient {
    /// Checks the settings and builds the client; contacts nobody. `kube` reads the token Secret,
    /// if one is configured, on the first call.
    pub fn new(settings: AuthSettings, kube: kube::Client) -> Result<Self, AuthError> {
        let token = settings.token.clone().map(|secret| TokenCache {
            source: TokenSource::Secret(Box::new(Api::namespaced(kube, &secret.namespace))),
            secret,
            cached: Mutex::new(None),
        });
        Self::build(settings, token)
    }

    fn build(settings: AuthSettings, token: Option<TokenCache>) -> Result<Self, AuthError> {
        let invalid = |message: &str| AuthError::InvalidUrl { url: settings.base_url.clone(), message: message.into() };
        let base = Url::parse(settings.base_url.trim()).map_err(|error| invalid(&error.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("there is no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid("credentials in the URL would be logged; use the token Secret"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("a query or fragment is not allowed"));
        }
        let mut tenants_url = base.clone();
        tenants_url
            .path_segments_mut()
            .map_err(|()| invalid("the URL cannot have a path"))?
            .pop_if_empty()
            .extend(["api", "tenants"]);

        let tls = tls_config(base.scheme() == "https")
            .map_err(|error| AuthError::ClientSetup { message: format!("TLS: {error}") })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("neurallog-tenant-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| AuthError::ClientSetup { message: error_chain(&error) })?;
        Ok(Self {
            http,
            base_url: base.as_str().trim_end_matches('/').to_owned(),
            tenants_url,
            token,
            timeout: settings.timeout,
            attempts: settings.attempts.max(1),
        })
    }

    /// The base URL, normalised (no trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether Auth lists `tenant` (`GET /api/tenants`).
    pub async fn is_registered(&self, tenant: &str) -> Result<bool, AuthError> {
        let span = tracing::info_span!("auth.is_registered", tenant, attempt = Empty, status = Empty);
        async {
            let operation = Operation::CheckRegistration;
            let (status, body) = self
                .execute(tenant, operation, |http| http.get(self.tenants_url.clone()), |s| s == StatusCode::OK)
                .await?;
            let list: TenantList = serde_json::from_slice(&body).map_err(|error| AuthError::InvalidResponse {
                tenant: tenant.to_owned(),
                operation,
                status: status.as_u16(),
                message: format!("{error}; body: {}", excerpt(&body)),
            })?;
            Ok(list.tenants.iter().any(|t| t == tenant))
        }
        .instrument(span)
        .await
    }

    /// Registers `tenant` (`POST /api/tenants`); already registered (`409`) is success.
    pub async fn register(&self, tenant: &str) -> Result<(), AuthError> {
        let span = tracing::info_span!("auth.register", tenant, attempt = Empty, status = Empty);
        let body = Registration { tenant_id: tenant, admin_user_id: ADMIN_USER };
        let accept = |s: StatusCode| matches!(s, StatusCode::OK | StatusCode::CREATED | StatusCode::CONFLICT);
        self.execute(tenant, Operation::Register, |http| http.post(self.tenants_url.clone()).json(&body), accept)
            .instrument(span)
            .await
            .map(drop)
    }

    /// Deregisters `tenant` (`DELETE /api/tenants/<tenant>`); not registered (`404`) is success.
    pub async fn deregister(&self, tenant: &str) -> Result<(), AuthError> {
        let span = tracing::info_span!("auth.deregister", tenant, attempt = Empty, status = Empty);
        let mut url = self.tenants_url.clone();
        // Cannot fail: `build` checked that the URL has a path. Percent-encodes the segment.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(tenant);
        }
        let accept = |s: StatusCode| matches!(s, StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::NOT_FOUND);
        self.execute(tenant, Operation::Deregister, |http| http.delete(url.clone()), accept)
            .instrument(span)
            .await
            .map(drop)
    }

    /// Sends the request `request` builds until it gets a status `accept`s, a non-transient
    /// failure, or the attempts run out. Records the attempt and the last status in the current
    /// span. Returns the accepted status and the body.
    async fn execute(
        &self,
        tenant: &str,
        operation: Operation,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        accept: impl Fn(StatusCode) -> bool,
    ) -> Result<(StatusCode, Vec<u8>), AuthError> {
        let span = tracing::Span::current();
        let mut attempt = 0;
        loop {
            attempt += 1;
            span.record("attempt", attempt);
            let token = match &self.token {
                Some(cache) => Some(cache.get(self.timeout).await.map_err(|message| AuthError::Token {
                    tenant: tenant.to_owned(),
                    operation,
                    namespace: cache.secret.namespace.clone(),
                    name: cache.secret.name.clone(),
                    key: cache.secret.key.clone(),
                    message,
                })?),
                None => None,
            };
            let mut builder = request(&self.http);
            if let Some(token) = &token {
                builder = builder.bearer_auth(token);
            }
            // W3C trace context, so a traced Auth service joins the reconcile's trace.
            let mut trace_headers = reqwest::header::HeaderMap::new();
            opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.inject_context(&span.context(), &mut HeaderInjector(&mut trace_headers));
            });
            builder = builder.headers(trace_headers);
            let exchange = async {
                let response = builder.send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.bytes().await?.to_vec()))
            };
            let failure = match tokio::time::timeout(self.timeout, exchange).await {
                Err(_) => Failure::Timeout,
                Ok(Err(error)) if error.is_timeout() => Failure::Timeout,
                Ok(Err(error)) => Failure::Transport { message: error_chain(&error), transient: !error.is_builder() },
                Ok(Ok((status, body))) => {
                    span.record("status", status.as_u16());
                    if accept(status) {
                        return Ok((status, body));
                    }
                    if status == StatusCode::UNAUTHORIZED
                        && let (Some(cache), Some(token)) = (&self.token, &token)
                    {
                        // Probably rotated: the next call reads the Secret again.
                        cache.forget(token);
                    }
                    Failure::Status { status, body: excerpt(&body) }
                }
            };
            if !failure.is_transient() || attempt >= self.attempts {
                return Err(failure.into_error(tenant, operation, attempt, self.timeout));
            }
            let delay = backoff(attempt);
            tracing::debug!(attempt, ?delay, error = %failure, "NeuralLog Auth call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use testenv::auth::{AuthStandIn, Behaviour};

    use super::*;

    const TENANTS: &str = "/api/tenants";

    fn settings(url: &str, attempts: u32, timeout: Duration) -> AuthSettings {
        AuthSettings { base_url: url.to_owned(), token: None, timeout, attempts }
    }

    /// A client that never contacts the API server: without a token Secret it is never used.
    fn kube_client() -> kube::Client {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a valid URI"));
        kube::Client::try_from(config).expect("a client for a static config")
    }

    fn client(auth: &AuthStandIn, attempts: u32) -> AuthClient {
        AuthClient::new(settings(&auth.url(), attempts, Duration::from_secs(5)), kube_client()).expect("valid settings")
    }

    /// A client whose token reads hand out `tokens` in order (the last one repeatedly).
    fn client_with_tokens(auth: &AuthStandIn, tokens: &[&str]) -> AuthClient {
        let token = TokenCache {
            secret: "auth/token".parse().expect("a valid Secret reference"),
            source: TokenSource::Sequence(Mutex::new(tokens.iter().map(|t| (*t).to_owned()).collect())),
            cached: Mutex::new(None),
        };
        AuthClient::build(settings(&auth.url(), 3, Duration::from_secs(5)), Some(token)).expect("valid settings")
    }

    #[tokio::test]
    async fn registers_and_finds_a_tenant() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        auth.register_directly("other");
        let client = client(&auth, 3);
        assert!(!client.is_registered("acme").await.expect("list"));
        client.register("acme").await.expect("register");
        assert!(client.is_registered("acme").await.expect("list"));
        assert_eq!(auth.registered(), ["acme", "other"]);
    }

    #[tokio::test]
    async fn registering_twice_is_success() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        let client = client(&auth, 3);
        client.register("acme").await.expect("first registration");
        client.register("acme").await.expect("the 409 of the second one");
        assert_eq!(auth.registered(), ["acme"]);
        assert_eq!(auth.count("POST", TENANTS), 2);
    }

    #[tokio::test]
    async fn deregisters_and_an_unknown_tenant_is_already_gone() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        auth.register_directly("acme");
        let client = client(&auth, 3);
        client.deregister("acme").await.expect("deregister");
        client.deregister("never-registered").await.expect("the 404");
        assert!(auth.registered().is_empty());
        assert_eq!(auth.count("DELETE", "/api/tenants/never-registered"), 1);
    }

    #[tokio::test]
    async fn keeps_the_path_of_the_base_url() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        let client = AuthClient::new(settings(&format!("{}/", auth.url()), 1, Duration::from_secs(5)), kube_client())
            .expect("valid settings");
        assert_eq!(client.base_url(), auth.url());
        client.register("acme").await.expect("register");

        let prefixed =
            AuthClient::new(settings(&format!("{}/gw", auth.url()), 1, Duration::from_secs(5)), kube_client())
                .expect("valid settings");
        let error = prefixed.register("acme").await.expect_err("the stand-in has no /gw");
        assert!(matches!(error, AuthError::Rejected { status: 404, .. }), "{error}");
        assert_eq!(auth.count("POST", "/gw/api/tenants"), 1);
    }

    #[tokio::test]
    async fn retries_a_transient_failure_up_to_the_budget() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        auth.set_behaviour(Some("flaky"), Behaviour::Fail(503));
        let client = client(&auth, 3);
        let error = client.register("flaky").await.expect_err("Auth keeps failing");
        assert!(matches!(error, AuthError::Rejected { status: 503, attempts: 3, .. }), "{error}");
        assert_eq!(error.reason(), "AuthRejected");
        let message = error.to_string();
        assert!(message.contains("cannot register tenant flaky"), "{message}");
        assert!(message.contains("injected failure"), "quotes the body: {message}");
        assert_eq!(auth.count("POST", TENANTS), 3);
    }

    #[tokio::test]
    async fn retries_the_list_too_and_tolerates_a_slow_answer() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        auth.set_behaviour(None, Behaviour::Fail(429));
        let client = client(&auth, 2);
        let error = client.is_registered("acme").await.expect_err("rate limited");
        assert!(error.to_string().contains("cannot check registration of tenant acme"), "{error}");
        assert_eq!(auth.count("GET", TENANTS), 2);

        auth.clear_behaviours();
        auth.set_behaviour(None, Behaviour::Slow(Duration::from_millis(1)));
        assert!(!client.is_registered("acme").await.expect("slow but fine"));
    }

    #[tokio::test]
    async fn does_not_retry_a_client_error() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        auth.set_behaviour(Some("bad"), Behaviour::Fail(400));
        let client = client(&auth, 3);
        let error = client.deregister("bad").await.expect_err("rejected");
        assert!(matches!(error, AuthError::Rejected { status: 400, attempts: 1, .. }), "{error}");
        assert!(error.to_string().contains("cannot deregister tenant bad"), "{error}");
        assert_eq!(auth.count("DELETE", "/api/tenants/bad"), 1);
    }

    #[tokio::test]
    async fn a_hung_auth_times_out_and_other_tenants_still_work() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        auth.set_behaviour(Some("stuck"), Behaviour::Hang);
        let client = AuthClient::new(settings(&auth.url(), 2, Duration::from_millis(200)), kube_client())
            .expect("valid settings");
        let (stuck, fine) = tokio::join!(client.register("stuck"), client.register("fine"));
        let error = stuck.expect_err("Auth never answers");
        assert!(
            matches!(&error, AuthError::Timeout { tenant, attempts: 2, operation: Operation::Register, .. } if tenant == "stuck"),
            "{error}"
        );
        assert_eq!(error.reason(), "AuthTimeout");
        fine.expect("another tenant is served meanwhile");
        assert_eq!(auth.registered(), ["fine"]);
        assert_eq!(auth.count("POST", TENANTS), 3);
    }

    #[tokio::test]
    async fn an_unreachable_auth_is_reported_as_such() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let client =
            AuthClient::new(settings(&format!("http://127.0.0.1:{port}"), 2, Duration::from_secs(5)), kube_client())
                .expect("valid settings");
        let error = client.register("acme").await.expect_err("nobody listens");
        assert!(matches!(error, AuthError::Unreachable { attempts: 2, .. }), "{error}");
        assert_eq!(error.reason(), "AuthUnreachable");
    }

    #[tokio::test]
    async fn sends_the_bearer_token() {
        let auth = AuthStandIn::start_with_token("s3cret").await.expect("stand-in");
        client_with_tokens(&auth, &["s3cret"]).register("acme").await.expect("authorised");
        assert_eq!(auth.registered(), ["acme"]);

        let error = client(&auth, 3).register("other").await.expect_err("no token");
        assert!(matches!(error, AuthError::Rejected { status: 401, attempts: 1, .. }), "{error}");
    }

    #[tokio::test]
    async fn rereads_the_token_after_auth_rejects_it() {
        let auth = AuthStandIn::start_with_token("new").await.expect("stand-in");
        let client = client_with_tokens(&auth, &["old", "new"]);
        let error = client.register("acme").await.expect_err("the cached token is stale");
        assert!(matches!(error, AuthError::Rejected { status: 401, .. }), "{error}");
        client.register("acme").await.expect("the re-read token works");
        client.deregister("acme").await.expect("and stays cached");
        assert_eq!(auth.count("POST", TENANTS), 2);
    }

    #[tokio::test]
    async fn an_unreadable_token_names_the_secret() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        let error = client_with_tokens(&auth, &[" \n"]).register("acme").await.expect_err("empty token");
        assert_eq!(error.reason(), "AuthTokenUnavailable");
        let message = error.to_string();
        assert!(message.contains("tenant acme") && message.contains("auth/token key token"), "{message}");
        assert!(auth.requests().is_empty(), "nothing is sent without the token");
    }

    #[tokio::test]
    async fn rejects_unusable_urls() {
        for url in ["auth.neurallog.svc:3000", "ftp://auth", "http://user:pw@auth", "http://auth/?x=1", "no url"] {
            let error = AuthClient::new(settings(url, 1, Duration::from_secs(1)), kube_client()).expect_err(url);
            assert_eq!(error.reason(), "AuthInvalidUrl", "{url}: {error}");
        }
        // https needs the system's CA certificates; a system without them fails the setup instead.
        match AuthClient::new(settings("https://auth.example/", 1, Duration::from_secs(1)), kube_client()) {
            Ok(client) => assert_eq!(client.base_url(), "https://auth.example"),
            Err(error) => assert_eq!(error.reason(), "AuthClientSetupFailed", "{error}"),
        }
    }

    #[test]
    fn parses_token_secret_references() {
        let secret: TokenSecret = "neurallog/auth-token".parse().expect("valid");
        assert_eq!(
            secret,
            TokenSecret {
                namespace: "neurallog".into(),
                name: "auth-token".into(),
                key: TokenSecret::DEFAULT_KEY.into()
            }
        );
        for bad in ["auth-token", "neurallog/", "/auth-token", "neurallog/auth-token/key", "Neurallog/x", "a/b c"] {
            assert!(bad.parse::<TokenSecret>().is_err(), "{bad}");
        }
        let keyed = TokenSecret::parse("neurallog/auth-token", "api.key").expect("valid");
        assert_eq!(keyed.key, "api.key");
        let error = TokenSecret::parse("neurallog/auth-token", "a key").expect_err("space in key");
        assert!(error.to_string().contains("not a valid Secret key"), "{error}");
    }

    #[test]
    fn backs_off_exponentially_up_to_two_seconds() {
        let delays: Vec<u128> = (1..=7).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn quotes_at_most_200_characters_of_a_body() {
        assert_eq!(excerpt(b" short \n"), "short");
        let long = "é".repeat(300);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), BODY_EXCERPT_CHARS + 1);
    }
}
