//! End to end, the way platform engineers meet the operator:
//! - through real OLM (`olm`, `catalog`, `opm serve` of `catalog/`) on a simulated cluster
//!   (kwokctl's binary runtime: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
//!   kwok's fake node), the operator run as its pod would run (its Deployment's arguments, its
//!   ServiceAccount's token, OLM's serving certificate behind OLM's webhook Service), traces into
//!   Jaeger (`install`, `upgrade`);
//! - on a real node (kubelet, containerd, kube-proxy, CoreDNS), from the images `make images`
//!   built: the kustomize install with tenants' pods really running (`real_node`); OperatorHub's
//!   path with OLM in the cluster, catalog and bundle images, and the upgrades from 0.2.0 and 0.1.0
//!   (`operatorhub_node`); NetworkPolicies enforced by kube-router's NetworkPolicy controller
//!   (`isolation_node`); NeuralLog versions rolled out in waves across a fleet (`rollout_node`);
//!   backups to a real S3-compatible store and restores into new tenants (`backup_node`); a real
//!   Prometheus scraping the operator and its tenants, its alerts firing (`monitoring_node`).
//!
//! Built only with the `e2e` feature (`make e2e`); the scenarios run one at a time
//! (`--test-threads=1`), each on its own cluster. Each prints its timeline; a failing one names its
//! step and keeps every component's log in `.local/e2e/<scenario>/`.

mod backup_node;
mod install;
mod isolation_node;
mod monitoring_node;
mod on_node;
mod operatorhub_node;
mod real_node;
mod rollout_node;
mod upgrade;

/// Where scenario `name` keeps its logs.
fn logs(name: &str) -> std::path::PathBuf {
    testenv::repo_root().join(".local/e2e").join(name)
}
