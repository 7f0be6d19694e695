//! Errors of a reconcile. Each names the tenant and, where there is one, the object involved, so
//! the message in a log line, an Event or a condition is enough to act on.

/// A failed reconcile step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request about one object failed.
    #[error("tenant {tenant}: {verb} {kind} {name}: {}", describe(source))]
    Api {
        tenant: String,
        verb: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A desired object could not be serialised (a bug, never caused by input).
    #[error("tenant {tenant}: cannot serialize {kind} {name}: {source}")]
    Serialize {
        tenant: String,
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// The watch caches shut down, which only happens when the operator stops.
    #[error("tenant {tenant}: the watch caches are gone (the operator is stopping)")]
    CachesGone { tenant: String },
}

/// The API server's own message for API errors (not the whole Status), else the error itself.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

impl Error {
    /// Short machine-readable category, used as the reason of Warning events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Api { .. } => "ApiRequestFailed",
            Error::Serialize { .. } => "InternalError",
            Error::CachesGone { .. } => "ShuttingDown",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
