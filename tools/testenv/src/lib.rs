//! Real Kubernetes environments for the operator's tests and local runs, from the pinned builds of
//! `tools/`; every process lives in a directory of its own and dies with the test that started it.
//!
//! The clusters:
//! - [`ControlPlane`]: etcd and kube-apiserver on loopback (optionally kube-controller-manager),
//!   client certificates and RBAC on, for the integration tests.
//! - [`kwok`]: a whole simulated cluster (kwokctl: every controller, a scheduler, fake nodes whose
//!   pods run nothing), for the end-to-end tests through OLM ([`olm`], [`operatorhub`]), the fleet
//!   benchmarks and `make run`.
//! - [`node`]: a real node whose pods really run (containerd, kubelet, kube-proxy, cluster DNS),
//!   pulling from a local registry ([`registry`]) the images
//!   `make images` built ([`images`]); OLM in its cluster ([`olm::in_cluster`]); `make run NODE=1`
//!   ([`node_run`]).
//!
//! Beside them: [`auth`], a stand-in for the NeuralLog Auth service on loopback HTTP; [`jaeger`], a
//! real Jaeger v2 (OTLP in, query API out); [`timeline`], a scenario's steps and their times.

pub mod auth;
mod control_plane;
mod egress;
pub mod images;
pub mod jaeger;
pub mod kwok;
pub mod node;
pub mod node_run;
pub mod object_store;
pub mod olm;
pub mod olm_run;
pub mod operatorhub;
mod pki;
mod process;
pub mod prometheus;
pub mod registry;
pub mod timeline;

pub use control_plane::{ControlPlane, OPERATOR_USER, Options, continue_token_at, install_crd, install_crd_converting};
pub(crate) use control_plane::{create_crd, etcd_get};
pub use pki::{CertAndKey, Pki};
pub use process::{dies_with_parent, free_port, repo_root, write_private};
pub(crate) use process::{keep_if_panicking, log_tail, spawn, spawn_command, tool_dir};
