//! A real Kubernetes control plane on loopback, for integration tests and local runs: etcd and
//! kube-apiserver (optionally kube-controller-manager, for namespace deletion and garbage
//! collection) from the pinned builds of `tools/`, with client-certificate authentication and
//! RBAC on. Every process lives in its own temporary directory and dies with the
//! [`ControlPlane`] (or with the process that started it).
//!
//! The API server's connections into "the cluster" (webhooks given by a Service reference) go
//! through a proxy in the test process, which sends a Service's traffic to a loopback address
//! ([`ControlPlane::forward_service`]). The proxy runs on the Tokio runtime that started the
//! plane: while a test blocks that runtime's only thread (`#[tokio::test]`, say, waiting on a
//! child process), those connections wait too.
//!
//! [`auth`] is a stand-in for the NeuralLog Auth service, on loopback HTTP.
//! [`jaeger`] runs a real Jaeger v2 (OTLP in, query API out) for tests of the exported traces.
//! [`kwok`] runs a whole simulated cluster (kwokctl: every controller, a scheduler, fake nodes)
//! and [`olm`] runs OLM's operators and an `opm` catalog server against it, for end-to-end tests.

pub mod auth;
mod control_plane;
mod egress;
pub mod images;
pub mod jaeger;
pub mod kwok;
pub mod node;
pub mod olm;
pub mod olm_run;
pub mod operatorhub;
mod pki;
mod process;
pub mod registry;
pub mod timeline;

pub use control_plane::{ControlPlane, OPERATOR_USER, Options, continue_token_at, install_crd_converting};
pub(crate) use control_plane::{create_crd, etcd_get};
pub use pki::{CertAndKey, Pki};
pub use process::{dies_with_parent, free_port, repo_root, write_private};
pub(crate) use process::{keep_if_panicking, log_tail, spawn, spawn_command, tool_dir};
