//! The bearer token: where it is ([`TokenSecret`]) and the copy kept between calls ([`TokenCache`]).

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

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

/// Where the bearer token comes from.
enum TokenSource {
    /// A Kubernetes Secret, the only source outside tests (boxed: a client is large).
    Secret(Box<Api<Secret>>),
    /// Tokens handed out in order, the last one repeatedly: rotation without a cluster.
    #[cfg(test)]
    Sequence(Mutex<std::collections::VecDeque<String>>),
}

/// The bearer token, read once and kept until Auth rejects it.
pub(super) struct TokenCache {
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
    /// Reads `secret` with `kube`, on first use.
    pub(super) fn new(secret: TokenSecret, kube: kube::Client) -> Self {
        let source = TokenSource::Secret(Box::new(Api::namespaced(kube, &secret.namespace)));
        Self { secret, source, cached: Mutex::new(None) }
    }

    /// Hands out `tokens` in order (the last one repeatedly), as if the Secret were rotated.
    #[cfg(test)]
    pub(super) fn sequence(secret: TokenSecret, tokens: &[&str]) -> Self {
        let tokens = tokens.iter().map(|t| (*t).to_owned()).collect();
        Self { secret, source: TokenSource::Sequence(Mutex::new(tokens)), cached: Mutex::new(None) }
    }

    /// Where the token is, for errors and logs.
    pub(super) fn secret(&self) -> &TokenSecret {
        &self.secret
    }

    /// The cached token, else a fresh one (then cached). Two concurrent first calls may both
    /// read it; that costs a read, never a wrong token.
    pub(super) async fn get(&self, timeout: Duration) -> Result<String, String> {
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
    pub(super) fn forget(&self, rejected: &str) {
        let mut cached = lock(&self.cached);
        if cached.as_deref() == Some(rejected) {
            *cached = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
