//! NeuralLog Tenant Operator: gives every NeuralLog tenant an isolated environment.
//!
//! - [`api`]: the `neurallog.io` Tenant API types, from which the CRD is generated.
//! - [`model`]: the version-independent, validated view of a tenant the reconciler works on.
//! - [`resources`]: pure builders of the desired child objects of a tenant.
//! - [`controller`]: the reconcile orchestration, status derivation and the API writes.
//! - [`auth`]: the NeuralLog Auth client that registers and deregisters tenants.
//! - [`telemetry`]: logging and OTLP tracing setup; [`metrics`] and the [`admin`] HTTP server.
//! - [`cli`]: the `tenant-operator` command line.

pub mod admin;
pub mod api;
pub mod auth;
pub mod cli;
pub mod controller;
pub mod metrics;
pub mod model;
pub mod quantity;
pub mod resources;
pub mod telemetry;
pub mod tls;
