//! [`AuthClient`]: the Auth contract over HTTP, one span per call, with trace-context headers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_http::HeaderInjector;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::AuthSettings;
use super::error::{AuthError, Failure, Operation, error_chain, excerpt};
use super::retry;
use super::token::TokenCache;
use crate::metrics::Metrics;
use crate::tls::{self, Trust};

/// The user Auth makes the first administrator of a tenant it registers.
const ADMIN_USER: &str = "system";

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
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthClient")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(TokenCache::secret))
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl AuthClient {
    /// Checks the settings and builds the client; contacts nobody. `kube` reads the token Secret,
    /// if one is configured, on the first call.
    pub fn new(settings: AuthSettings, kube: kube::Client) -> Result<Self, AuthError> {
        let token = settings.token.clone().map(|secret| TokenCache::new(secret, kube));
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

        let trust = if base.scheme() == "https" { Trust::System } else { Trust::Nobody };
        let tls =
            tls::client_config(trust).map_err(|error| AuthError::ClientSetup { message: format!("TLS: {error}") })?;
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
            metrics: None,
        })
    }

    /// Records each call's time, and its failure, in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics: Some(metrics), ..self }
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
    /// failure, or the attempts run out (see [`retry`]). Records the attempt and the last status
    /// in the current span. Returns the accepted status and the body.
    async fn execute(
        &self,
        tenant: &str,
        operation: Operation,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        accept: impl Fn(StatusCode) -> bool,
    ) -> Result<(StatusCode, Vec<u8>), AuthError> {
        let span = tracing::Span::current();
        let started = std::time::Instant::now();
        let result = retry::run(self.attempts, tokio::time::sleep, |attempt| {
            span.record("attempt", attempt);
            self.attempt(&span, &request, &accept)
        })
        .await
        .map_err(|(failure, attempts)| failure.into_error(tenant, operation, attempts, self.timeout));
        if let Some(metrics) = &self.metrics {
            metrics.auth_call(operation.label(), started.elapsed(), result.as_ref().err().map(AuthError::reason));
        }
        result
    }

    /// One request, with the bearer token and the trace context of `span`.
    async fn attempt(
        &self,
        span: &tracing::Span,
        request: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        accept: &impl Fn(StatusCode) -> bool,
    ) -> Result<(StatusCode, Vec<u8>), Failure> {
        let token = match &self.token {
            Some(cache) => Some(
                cache
                    .get(self.timeout)
                    .await
                    .map_err(|message| Failure::Token { secret: cache.secret().clone(), message })?,
            ),
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
            let retry_after = retry::retry_after(status, response.headers(), jiff::Timestamp::now());
            Ok::<_, reqwest::Error>((status, retry_after, response.bytes().await?.to_vec()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(error)) if error.is_timeout() => Err(Failure::Timeout),
            Ok(Err(error)) => Err(Failure::Transport { message: error_chain(&error), transient: !error.is_builder() }),
            Ok(Ok((status, retry_after, body))) => {
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
                Err(Failure::Status { status, body: excerpt(&body), retry_after })
            }
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
        let token = TokenCache::sequence("auth/token".parse().expect("a valid Secret reference"), tokens);
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

    /// That the header reaches the retry; the waits it yields are checked in `retry`, unslept.
    #[tokio::test]
    async fn retries_when_retry_after_asks() {
        let auth = AuthStandIn::start().await.expect("stand-in");
        auth.set_behaviour(Some("busy"), Behaviour::FailWithRetryAfter(429, 1));
        auth.set_behaviour(Some("down"), Behaviour::FailWithRetryAfter(503, 1));
        let client = client(&auth, 2);
        let (busy, down) = tokio::join!(client.register("busy"), client.deregister("down"));
        let busy = busy.expect_err("Auth keeps asking to wait");
        assert!(matches!(busy, AuthError::Rejected { status: 429, attempts: 2, .. }), "{busy}");
        let down = down.expect_err("Auth stays unavailable");
        assert!(matches!(down, AuthError::Rejected { status: 503, attempts: 2, .. }), "{down}");
        assert_eq!(auth.count("POST", TENANTS), 2, "retried once after the wait");
        assert_eq!(auth.count("DELETE", "/api/tenants/down"), 2);
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
}
