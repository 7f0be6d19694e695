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
//! fixed budget, waiting as long as a `429` or `503` asks in `Retry-After`, and fails with an
//! [`AuthError`] that names the tenant and the operation, so the message can go straight into a
//! condition or an Event. The optional bearer token is read from a Kubernetes Secret and re-read
//! after Auth rejects it, so a rotated token needs no restart.
//!
//! The parts: `client` speaks the contract, `token` finds the bearer token, `retry` decides
//! whether and when to try again, `error` says what went wrong.

mod client;
mod error;
mod retry;
mod token;

use std::time::Duration;

pub use client::AuthClient;
pub use error::{AuthError, Operation};
pub use token::{InvalidTokenSecret, TokenSecret};

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
    /// retried; between attempts the call waits a jittered backoff (under 4 s) or what a
    /// `Retry-After` asks (at most 10 s), so a call costs at most `attempts × (timeout + 10 s)`.
    pub attempts: u32,
}
