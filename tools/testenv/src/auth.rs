//! A stand-in for the NeuralLog Auth service that speaks real HTTP on loopback, so the operator's
//! Auth client is tested through its actual network stack (connections, timeouts, status codes)
//! rather than through a mocked trait.
//!
//! It implements the tenant part of the Auth contract:
//!
//! - `GET /api/tenants` → `200 {"tenants": [...], "status": "success"}` (the extra field checks
//!   that clients ignore fields they do not know);
//! - `POST /api/tenants` with `{"tenantId", "adminUserId"}` → `201` and the same object, `409` when
//!   the tenant is already registered;
//! - `DELETE /api/tenants/<id>` → `200 {"message", "tenantId"}`, `404` when it is not registered.
//!
//! Failures are injected per tenant or globally with [`Behaviour`]; every request is recorded so
//! tests can assert how often a client retried, and every registration and deregistration by
//! tenant, so a repeated one shows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

/// Path of the tenant collection.
const TENANTS: &str = "/api/tenants";

/// How the stand-in answers a request, to simulate an unhealthy or slow Auth service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Follow the contract.
    #[default]
    Normal,
    /// Answer with this HTTP status (500 if it is not a valid status code) and do nothing else.
    Fail(u16),
    /// Like `Fail`, with `Retry-After: <seconds>`: a rate-limited (`429`) or overloaded (`503`)
    /// service that says when to come back.
    FailWithRetryAfter(u16, u64),
    /// Never answer, until the stand-in is dropped (then `503`): a hung service, for timeouts.
    Hang,
    /// Wait this long, then follow the contract: a slow but healthy service.
    Slow(Duration),
}

/// What the stand-in knows, behind one lock (never held across an await).
#[derive(Default)]
struct Registry {
    tenants: BTreeSet<String>,
    requests: Vec<(String, String)>,
    /// `(METHOD, tenant)` of every registration (`POST`) and deregistration (`DELETE`), in order.
    tenant_calls: Vec<(String, String)>,
    /// The W3C `traceparent` header of every request that carried one, in order.
    traceparents: Vec<String>,
    global: Option<Behaviour>,
    per_tenant: HashMap<String, Behaviour>,
}

/// Shared between the handle and the request handlers.
struct Shared {
    state: Mutex<Registry>,
    /// Bearer token every request must carry; `None` accepts any request.
    token: Option<String>,
    /// Completes (with an error) once the stand-in is dropped: releases hung requests and stops
    /// the server.
    shutdown: watch::Receiver<()>,
}

impl Shared {
    /// The state, also after a panicking test thread poisoned the lock: the data stays usable.
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves when the stand-in is dropped.
    async fn stopped(&self) {
        let mut shutdown = self.shutdown.clone();
        // Nothing is ever sent: `changed` returns only when the sender is dropped.
        let _ = shutdown.changed().await;
    }
}

/// A running Auth stand-in on `127.0.0.1`. Dropping it stops the server (hung requests are
/// answered with `503` and the listener closes).
pub struct AuthStandIn {
    url: String,
    shared: Arc<Shared>,
    /// Dropping it is the shutdown signal.
    _shutdown: watch::Sender<()>,
}

impl AuthStandIn {
    /// Starts a stand-in that accepts requests without credentials, on an ephemeral port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::serve(None).await
    }

    /// Starts a stand-in that answers `401` unless a request carries `Authorization: Bearer <token>`.
    pub async fn start_with_token(token: &str) -> anyhow::Result<Self> {
        Self::serve(Some(token.to_owned())).await
    }

    async fn serve(token: Option<String>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared { state: Mutex::new(Registry::default()), token, shutdown: shutdown_rx });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let signal = {
            let shared = Arc::clone(&shared);
            async move { shared.stopped().await }
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(signal);
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(%error, "the Auth stand-in failed");
            }
        });
        Ok(Self { url, shared, _shutdown: shutdown_tx })
    }

    /// Base URL of the service, `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Tenant ids registered now, sorted.
    pub fn registered(&self) -> Vec<String> {
        self.shared.lock().tenants.iter().cloned().collect()
    }

    /// Registers a tenant without a request, as if it had been registered earlier (by an earlier
    /// operator run, or by hand).
    pub fn register_directly(&self, tenant: &str) {
        self.shared.lock().tenants.insert(tenant.to_owned());
    }

    /// Every request received so far, in order, as `(METHOD, path)`; failed and hung ones too,
    /// so tests can count retries.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().requests.clone()
    }

    /// Every registration (`POST` with a `tenantId`) and deregistration (`DELETE` of a tenant)
    /// received so far, in order, as `(METHOD, tenant)`, whatever the answer.
    pub fn tenant_calls(&self) -> Vec<(String, String)> {
        self.shared.lock().tenant_calls.clone()
    }

    /// How many requests with `method` (`POST`, `DELETE`) each tenant got, whatever the answer: a
    /// multiset, so a tenant registered twice counts twice (the set of [`Self::registered`] hides
    /// a repeated registration, which Auth answers with `409`).
    pub fn calls_per_tenant(&self, method: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, tenant) in self.shared.lock().tenant_calls.iter().filter(|(m, _)| m == method) {
            *counts.entry(tenant.clone()).or_default() += 1;
        }
        counts
    }

    /// The `traceparent` headers received (a traced caller joins its trace to every request).
    pub fn traceparents(&self) -> Vec<String> {
        self.shared.lock().traceparents.clone()
    }

    /// How many requests with this method and path were received.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.shared.lock().requests.iter().filter(|(m, p)| m == method && p == path).count()
    }

    /// Sets how requests about `tenant` (the `tenantId` of a POST, the id in a DELETE path) are
    /// answered, or with `None` how every request is answered, GET included. A tenant's own
    /// behaviour wins over the global one, so `Normal` exempts a tenant from a global failure.
    pub fn set_behaviour(&self, tenant: Option<&str>, behaviour: Behaviour) {
        let mut state = self.shared.lock();
        match tenant {
            Some(tenant) => {
                state.per_tenant.insert(tenant.to_owned(), behaviour);
            }
            None => state.global = Some(behaviour),
        }
    }

    /// Back to [`Behaviour::Normal`] for every request.
    pub fn clear_behaviours(&self) {
        let mut state = self.shared.lock();
        state.global = None;
        state.per_tenant.clear();
    }
}

/// Body of a registration request.
#[derive(Deserialize)]
struct NewTenant {
    #[serde(rename = "tenantId")]
    tenant_id: String,
    #[serde(rename = "adminUserId")]
    admin_user_id: String,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }))
}

/// The single handler: routing by hand lets every request, also to unknown paths, be recorded
/// and subjected to the injected behaviour first.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let new_tenant =
        if method == Method::POST && path == TENANTS { serde_json::from_slice::<NewTenant>(&body).ok() } else { None };
    let tenant = match (&method, path.strip_prefix(TENANTS).and_then(|rest| rest.strip_prefix('/'))) {
        (&Method::DELETE, Some(id)) => Some(id.to_owned()),
        _ => new_tenant.as_ref().map(|t| t.tenant_id.clone()),
    };

    let behaviour = {
        let mut state = shared.lock();
        state.requests.push((method.as_str().to_owned(), path.clone()));
        if let Some(tenant) = &tenant {
            state.tenant_calls.push((method.as_str().to_owned(), tenant.clone()));
        }
        if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
            state.traceparents.push(traceparent.to_owned());
        }
        tenant.as_ref().and_then(|t| state.per_tenant.get(t).copied()).or(state.global).unwrap_or_default()
    };
    match behaviour {
        Behaviour::Normal => {}
        Behaviour::Fail(code) => {
            return error(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected failure");
        }
        Behaviour::FailWithRetryAfter(code, seconds) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error(status, "injected failure");
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            return response;
        }
        Behaviour::Hang => {
            shared.stopped().await;
            return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        }
        Behaviour::Slow(delay) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shared.stopped() => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            }
        }
    }

    if let Some(token) = &shared.token {
        let expected = format!("Bearer {token}");
        if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
    }

    if path == TENANTS {
        match method {
            Method::GET => {
                let tenants: Vec<String> = shared.lock().tenants.iter().cloned().collect();
                json_response(StatusCode::OK, json!({ "tenants": tenants, "status": "success" }))
            }
            Method::POST => register(&shared, &headers, new_tenant),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        }
    } else if let Some(id) = tenant.filter(|id| !id.is_empty() && !id.contains('/')) {
        // Only a DELETE of `/api/tenants/<id>` gets here with a tenant.
        if shared.lock().tenants.remove(&id) {
            json_response(StatusCode::OK, json!({ "message": "Tenant deleted", "tenantId": id }))
        } else {
            error(StatusCode::NOT_FOUND, "tenant not found")
        }
    } else if path == TENANTS || path.starts_with("/api/tenants/") {
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        error(StatusCode::NOT_FOUND, "not found")
    }
}

/// `POST /api/tenants`; strict about the request so that client mistakes show up as `4xx`.
fn register(shared: &Shared, headers: &HeaderMap, new_tenant: Option<NewTenant>) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_body {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected application/json");
    }
    let Some(new_tenant) = new_tenant.filter(|t| !t.tenant_id.is_empty() && !t.admin_user_id.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"tenantId\": string, \"adminUserId\": string}");
    };
    if !shared.lock().tenants.insert(new_tenant.tenant_id.clone()) {
        return error(StatusCode::CONFLICT, "tenant already exists");
    }
    json_response(
        StatusCode::CREATED,
        json!({ "tenantId": new_tenant.tenant_id, "adminUserId": new_tenant.admin_user_id }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain client. The workspace builds reqwest with `rustls-no-provider` (for the operator),
    /// which makes any client panic until a process-wide crypto provider is installed.
    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn post(client: &reqwest::Client, url: &str, tenant: &str) -> reqwest::RequestBuilder {
        client.post(format!("{url}/api/tenants")).json(&json!({ "tenantId": tenant, "adminUserId": "system" }))
    }

    #[tokio::test]
    async fn follows_the_contract_and_records_requests() -> anyhow::Result<()> {
        let auth = AuthStandIn::start().await?;
        let url = auth.url();
        let client = client();
        auth.register_directly("old");

        assert_eq!(post(&client, &url, "new").send().await?.status(), StatusCode::CREATED);
        assert_eq!(post(&client, &url, "new").send().await?.status(), StatusCode::CONFLICT);
        let list: serde_json::Value = client.get(format!("{url}/api/tenants")).send().await?.json().await?;
        assert_eq!(list["tenants"], json!(["new", "old"]));
        assert_eq!(client.delete(format!("{url}/api/tenants/old")).send().await?.status(), StatusCode::OK);
        assert_eq!(client.delete(format!("{url}/api/tenants/old")).send().await?.status(), StatusCode::NOT_FOUND);
        let bad = client.post(format!("{url}/api/tenants")).body(r#"{"tenantId":"x"}"#).send().await?;
        assert_eq!(bad.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

        assert_eq!(auth.registered(), ["new"]);
        assert_eq!(auth.count("POST", "/api/tenants"), 3);
        assert_eq!(auth.count("DELETE", "/api/tenants/old"), 2);
        assert_eq!(auth.requests().get(2), Some(&("GET".to_owned(), "/api/tenants".to_owned())));
        let call = |method: &str, tenant: &str| (method.to_owned(), tenant.to_owned());
        assert_eq!(
            auth.tenant_calls(),
            [call("POST", "new"), call("POST", "new"), call("DELETE", "old"), call("DELETE", "old")]
        );
        assert_eq!(auth.calls_per_tenant("POST"), BTreeMap::from([("new".to_owned(), 2)]), "the refused repeat counts");
        assert_eq!(auth.calls_per_tenant("DELETE"), BTreeMap::from([("old".to_owned(), 2)]));
        Ok(())
    }

    #[tokio::test]
    async fn requires_the_bearer_token() -> anyhow::Result<()> {
        let auth = AuthStandIn::start_with_token("s3cret").await?;
        let tenants = format!("{}/api/tenants", auth.url());
        let client = client();
        assert_eq!(client.get(&tenants).send().await?.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(client.get(&tenants).bearer_auth("wrong").send().await?.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(client.get(&tenants).bearer_auth("s3cret").send().await?.status(), StatusCode::OK);
        Ok(())
    }

    #[tokio::test]
    async fn injects_failures_per_tenant_and_globally() -> anyhow::Result<()> {
        let auth = AuthStandIn::start().await?;
        let url = auth.url();
        let client = client();
        auth.set_behaviour(Some("broken"), Behaviour::Fail(503));
        assert_eq!(post(&client, &url, "broken").send().await?.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(post(&client, &url, "fine").send().await?.status(), StatusCode::CREATED);

        auth.set_behaviour(None, Behaviour::Fail(500));
        auth.set_behaviour(Some("exempt"), Behaviour::Normal);
        assert_eq!(client.get(format!("{url}/api/tenants")).send().await?.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(post(&client, &url, "exempt").send().await?.status(), StatusCode::CREATED);

        auth.set_behaviour(Some("busy"), Behaviour::FailWithRetryAfter(429, 7));
        let busy = post(&client, &url, "busy").send().await?;
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("7"));

        auth.clear_behaviours();
        assert_eq!(post(&client, &url, "broken").send().await?.status(), StatusCode::CREATED);
        assert_eq!(auth.registered(), ["broken", "exempt", "fine"]);
        Ok(())
    }

    #[tokio::test]
    async fn a_hung_request_blocks_nothing_else_and_ends_with_the_stand_in() -> anyhow::Result<()> {
        let auth = AuthStandIn::start().await?;
        let url = auth.url();
        let client = client();
        auth.set_behaviour(Some("stuck"), Behaviour::Hang);

        let hung = tokio::spawn(post(&client, &url, "stuck").send());
        // Served while the other request hangs (each connection is its own task).
        assert_eq!(post(&client, &url, "fine").send().await?.status(), StatusCode::CREATED);
        assert!(!hung.is_finished());

        drop(auth);
        // Dropping the stand-in releases the hung request: 503, or a closed connection if it
        // had not been accepted yet. The bound only keeps a regression from hanging the suite.
        let released = tokio::time::timeout(Duration::from_secs(30), hung).await?;
        if let Ok(response) = released? {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(())
    }
}
