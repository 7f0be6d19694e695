//! The Kubernetes client: from a kubeconfig or the in-cluster service account, counting every
//! request it sends by method and resource (`neurallog_tenant_operator_api_requests_total`) and,
//! as client-go does, by status code, method and host (`rest_client_requests_total`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
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
    let host = config.cluster_url.authority().map(ToString::to_string).unwrap_or_default();
    let builder = ClientBuilder::try_from(config).context("cannot build a Kubernetes client")?;
    Ok(builder.with_layer(&CountRequests { metrics, host: host.into() }).build())
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

/// A tower layer that counts the requests passing through it, once their response (or failure)
/// is known.
#[derive(Clone)]
struct CountRequests {
    metrics: Arc<Metrics>,
    host: Arc<str>,
}

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Counted { inner, counter: self.clone() }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    counter: CountRequests,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.method().to_string();
        let resource = resource_of(request.uri().path());
        let counter = self.counter.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "<error>".to_owned(),
            };
            counter.metrics.api_request(&method, &resource, &counter.host, &code);
            response
        })
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
