//! What went wrong in an Auth call: [`AuthError`] for callers, [`Failure`] for one attempt.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

use super::TokenSecret;

/// How much of an unexpected response body an error quotes.
const BODY_EXCERPT_CHARS: usize = 200;

/// What a call was doing, for errors and logs: "cannot {operation} tenant x".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CheckRegistration,
    Register,
    Deregister,
}

impl Operation {
    /// The operation as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Operation::CheckRegistration => "check_registration",
            Operation::Register => "register",
            Operation::Deregister => "deregister",
        }
    }

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

/// Why one attempt failed. Kept apart from [`AuthError`] because the retry policy judges it
/// before the call knows how many attempts it made.
pub(super) enum Failure {
    Timeout,
    Transport {
        message: String,
        transient: bool,
    },
    Status {
        status: StatusCode,
        body: String,
        /// The wait a `429` or `503` asked for, already capped (see `retry::retry_after`).
        retry_after: Option<Duration>,
    },
    /// The bearer token could not be read; nothing was sent.
    Token {
        secret: TokenSecret,
        message: String,
    },
}

impl Failure {
    pub(super) fn into_error(self, tenant: &str, operation: Operation, attempts: u32, timeout: Duration) -> AuthError {
        let tenant = tenant.to_owned();
        match self {
            Failure::Timeout => AuthError::Timeout { tenant, operation, timeout, attempts },
            Failure::Transport { message, .. } => AuthError::Unreachable { tenant, operation, attempts, message },
            Failure::Status { status, body, .. } => {
                AuthError::Rejected { tenant, operation, status: status.as_u16(), attempts, body }
            }
            Failure::Token { secret, message } => AuthError::Token {
                tenant,
                operation,
                namespace: secret.namespace,
                name: secret.name,
                key: secret.key,
                message,
            },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Transport { message, .. } => f.write_str(message),
            Failure::Status { status, .. } => write!(f, "answered {status}"),
            Failure::Token { secret, message } => write!(f, "no token in Secret {secret}: {message}"),
        }
    }
}

/// An error with its causes: reqwest's own message ("error sending request") says little.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
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
pub(super) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_at_most_200_characters_of_a_body() {
        assert_eq!(excerpt(b" short \n"), "short");
        let long = "é".repeat(300);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), BODY_EXCERPT_CHARS + 1);
    }
}
