//! NeuralLog Tenant Operator: gives every NeuralLog tenant an isolated environment.
//!
//! - [`api`]: the `neurallog.io` Tenant API types per version, from which the CRD is generated,
//!   each beside its mapping to the model.
//! - [`model`]: the version-independent, validated view of a tenant, its defaults and its state.
//! - [`resources`]: pure builders of the desired child objects of a tenant.
//! - [`controller`]: the reconcile orchestration, the apply and cleanup paths, the API writes.
//! - [`runtime`]: the process: client, admin server, leader election, controller, one shutdown.
//! - [`migration`]: the storage-version migration of stored Tenants, on the leader.
//! - [`webhook`]: the CRD conversion webhook server, on every replica, and its certificate.
//! - [`auth`]: the NeuralLog Auth client that registers and deregisters tenants.
//! - [`backup`]: what the backup Jobs and the restore run (`tenant-operator backup`).
//! - [`telemetry`]: logging and OTLP tracing; [`metrics`] and [`readiness`] for the admin server.
//! - [`monitoring`]: the ServiceMonitor, alerts and dashboard the operator creates for Prometheus
//!   and Grafana.
//! - [`cli`]: the `tenant-operator` command line; [`reference`]: the configuration reference
//!   generated from it (`docs/configuration.md`).
//! - [`api_reference`]: the API reference generated from the CRDs and the operator's Event and
//!   condition reasons (`docs/api-reference.md`).

pub mod api;
pub mod api_reference;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod controller;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod https;
pub mod metrics;
pub mod migration;
pub mod model;
pub mod monitoring;
pub mod quantity;
pub mod readiness;
pub mod reference;
pub mod resources;
pub mod runtime;
pub mod telemetry;
pub mod tls;
pub mod uninstall;
pub mod webhook;
