//! Integration tests: each test runs its own etcd + kube-apiserver (authentication and RBAC on),
//! installs the CRD and ClusterRole from `config/`, and runs the controller in-process as the
//! operator's restricted user.

mod admitted;
mod auth;
mod backups;
mod chaos;
mod components;
mod conversion;
mod deletion;
mod install;
mod leader;
mod lifecycle;
mod metrics;
mod migration;
mod monitoring;
mod network;
mod partial;
mod password;
mod support;
mod tracing;
mod validation;
mod writes;
