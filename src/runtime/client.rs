//! The Kubernetes client: from a kubeconfig or the in-cluster service account, counting every
//! request it sends by method and resource (`neurallog_tenant_operator_api_requests_total`).

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::metrics::Metrics;

/// Where the client's configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct KubeSource {
    /// A kubeconfig file; without it `$KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig instead of its current one.
    pub context: Option<String>,
}

async fn config(source: &KubeSource) -> anyhow::Result<Config> {
    let options = KubeConfigOptions { context: source.context.clone(), ..KubeConfigOptions::default() };
    match &source.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))
        }
        None if source.context.is_some() => {
            Config::from_kubeconfig(&options).await.context("cannot load the kubeconfig")
        }
        None => Config::infer().await.context("no kubeconfig and not running in a cluster"),
    }
}

/// Builds the client, its requests counted in `metrics`.
pub async fn build(source: &KubeSource, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    counted(config(source).await?, metrics)
}

/// A client for `config` whose requests are counted in `metrics`.
pub fn counted(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let builder = ClientBuilder::try_from(config).context("cannot build a Kubernetes client")?;
    Ok(builder.with_layer(&CountRequests(metrics)).build())
}

/// The resource a request path is about (`deployments`, `tenants/status`), for a metric label.
fn resource_of(path: &str) -> String {
    let mut segments = path.trim_matches('/').split('/');
    let rest: Vec<&str> = match segments.next() {
        Some("api") => segments.skip(1).collect(),
        Some("apis") => segments.skip(2).collect(),
        _ => return "other".to_owned(),
    };
    let rest = match rest.as_slice() {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        all => all,
    };
    match rest {
        [] | [""] => "discovery".to_owned(),
        [resource] | [resource, _] => (*resource).to_owned(),
        [resource, _, subresource, ..] => format!("{resource}/{subresource}"),
    }
}

/// A tower layer that counts the requests passing through it.
#[derive(Clone)]
struct CountRequests(Arc<Metrics>);

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Counted { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.metrics.api_request(request.method().as_str(), &resource_of(request.uri().path()));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::resource_of;

    #[test]
    fn paths_name_their_resource() {
        let cases = [
            ("/api/v1/namespaces/tenant-a/configmaps/a-redis-config", "configmaps"),
            ("/api/v1/namespaces/tenant-a/secrets", "secrets"),
            ("/api/v1/namespaces/tenant-a", "namespaces"),
            ("/api/v1/namespaces", "namespaces"),
            ("/apis/apps/v1/namespaces/tenant-a/deployments/a-server", "deployments"),
            ("/apis/neurallog.io/v1/tenants/a/status", "tenants/status"),
            ("/apis/neurallog.io/v1/tenants", "tenants"),
            ("/apis/coordination.k8s.io/v1/namespaces/ops/leases/op", "leases"),
            ("/apis", "discovery"),
            ("/version", "other"),
        ];
        for (path, resource) in cases {
            assert_eq!(resource_of(path), resource, "{path}");
        }
    }
}
