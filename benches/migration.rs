//! The storage-version migration against a bare loop over the same objects (`make bench`;
//! BENCH_MIGRATION tenants, 10,000 by default).
//!
//! BENCH_MIGRATION tenants are created through `v1` under 0.1.0's CRD (stored as `v1`), then
//! 0.2.0's CRD replaces it, its conversion calling the operator's webhook served in-process.
//!
//! 1. The bare loop: one unpaged list, then a no-op merge patch per tenant, 8 in flight; no
//!    preconditions, retries, progress, spans or Events. It re-encodes the fleet at `v2`.
//! 2. The same fleet is stored as `v1` again (the CRD's storage switched to `v1`, the bare loop run
//!    untimed, the storage switched back to `v2`), so that both timings rewrite the same objects
//!    from the same stored version through the same webhook.
//! 3. The migrator (`migration::run`, pages of 500, 8 in flight, progress on a Lease), which also
//!    trims `storedVersions`.
//!
//! Printed: both durations, their ratio, and this process's peak resident memory during each
//! (reset before each; the process holds the webhook, which converts every object listed or
//! patched, and the client). The migrator runs second, on a store with one more
//! rewrite of history behind it; etcd is not compacted in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use neurallog_tenant_operator::metrics::Metrics;
use neurallog_tenant_operator::migration::{self, CRD_NAME, MigrationSettings, Outcome};
use neurallog_tenant_operator::webhook::{self, Certificates, Webhook};
use serde_json::json;
use testenv::{ControlPlane, Options, Pki, repo_root};

/// Requests in flight, in the bare loop as in the migrator.
const CONCURRENCY: usize = 8;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A memory figure of this process from the kernel (`VmHWM:` the peak, `VmRSS:` the current).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Peak resident memory of this process since the last [`reset_peak_rss`].
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resets the peak resident memory to the current one (Linux: `5` to `clear_refs`), so that each
/// phase reports its own peak.
/// Returns the resident memory at the reset: the allocator keeps what earlier phases freed, so a
/// phase's peak is never below it.
fn reset_peak_rss() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_mib("VmRSS:")
}

fn tenants(client: &Client, version: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", version, "Tenant"));
    Api::all_with(client.clone(), &resource)
}

/// One unpaged list, then an unguarded no-op patch per tenant.
async fn bare_loop(client: &Client) -> anyhow::Result<usize> {
    let api = tenants(client, "v2");
    let listed = api.list_metadata(&ListParams::default()).await.context("list")?;
    let names: Vec<String> = listed.items.into_iter().filter_map(|t| t.metadata.name).collect();
    let count = names.len();
    let results: Vec<_> = futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                api.patch_metadata(&name, &PatchParams::default(), &Patch::Merge(json!({})))
                    .await
                    .with_context(|| format!("patch {name}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(count)
}

/// Makes `storage` the CRD's storage version (an update of the installed CRD), and returns once
/// the API server stores at it: a probe tenant is written until etcd holds it at that version
/// (the CRD handler takes the change up from its informer, on its own time).
async fn store_as(plane: &ControlPlane, client: &Client, storage: &str) -> anyhow::Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let mut crd = crds.get(CRD_NAME).await?;
    for version in &mut crd.spec.versions {
        version.storage = version.name == storage;
    }
    crds.replace(CRD_NAME, &PostParams::default(), &crd).await?;
    let probe = format!("bench-{:05}", 0);
    let wanted = format!("neurallog.io/{storage}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let touched = json!({"metadata": {"labels": {"bench-probe": format!("{storage}-{attempt}")}}});
        tenants(client, "v2").patch(&probe, &PatchParams::default(), &Patch::Merge(&touched)).await?;
        let stored = plane.etcd_get(&format!("/registry/neurallog.io/tenants/{probe}")).await?;
        let version = stored.and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        if version.as_ref().and_then(|v| v["apiVersion"].as_str()) == Some(wanted.as_str()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the API server did not store at {storage} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    neurallog_tenant_operator::tls::install_crypto_provider();
    let count = env("BENCH_MIGRATION", 10_000);
    let plane = ControlPlane::start(Options::default()).await?;
    let admin = plane.admin_client().await?;

    // The webhook, as the integration tests serve it.
    let pki = Pki::new()?;
    let cert_dir = plane.dir().join("webhook-certs");
    std::fs::create_dir_all(&cert_dir)?;
    pki.write_loopback_pair(&cert_dir, "neurallog-tenant-operator-webhook")?;
    let settings = webhook::Settings { address: "127.0.0.1:0".parse()?, cert_dir: cert_dir.clone() };
    let server = Webhook::bind(&settings, Certificates::directory(&cert_dir)).await?;
    let url = format!("https://{}{}", server.local_addr(), webhook::PATH);
    tokio::spawn(server.serve(Arc::new(Metrics::default()), std::future::pending()));

    plane.install_crd(&repo_root().join("tests/fixtures/crd-0.1.0.yaml")).await?;
    let started = Instant::now();
    let v1 = tenants(&admin, "v1");
    let created: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let v1 = v1.clone();
            async move {
                let manifest = json!({"apiVersion": "neurallog.io/v1", "kind": "Tenant",
                                      "metadata": {"name": format!("bench-{i:05}")}, "spec": {"displayName": "Bench"}});
                v1.create(&PostParams::default(), &serde_json::from_value(manifest)?)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    println!("created {count} tenants at v1 under 0.1.0's CRD in {:.1} s", started.elapsed().as_secs_f64());
    plane
        .replace_crd_converting(&repo_root().join("config/crd/bases/neurallog.io_tenants.yaml"), &url, &pki.ca_pem)
        .await?;
    // v2 served (through the webhook) before anything is timed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tenants(&admin, "v2").list(&ListParams::default().limit(1)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "v2 not served within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let at_start = reset_peak_rss();
    let started = Instant::now();
    let patched = bare_loop(&admin).await?;
    let bare = started.elapsed();
    println!(
        "bare list + no-op patch loop: {patched} tenants in {:.2} s; peak RSS {:.1} MiB (RSS {at_start:.1} MiB at its start)",
        bare.as_secs_f64(),
        peak_rss_mib()
    );

    // The same fleet, stored as v1 again.
    store_as(&plane, &admin, "v1").await?;
    bare_loop(&admin).await?;
    store_as(&plane, &admin, "v2").await?;
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some("neurallog-system".into()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &namespace).await?;

    let metrics = Arc::new(Metrics::default());
    let settings =
        MigrationSettings { progress_namespace: Some("neurallog-system".into()), ..MigrationSettings::default() };
    let at_start = reset_peak_rss();
    let started = Instant::now();
    let outcome = migration::run(admin.clone(), settings, metrics).await?;
    let migrator = started.elapsed();
    let Outcome::Migrated(counts) = outcome else { anyhow::bail!("the migration did not finish: {outcome:?}") };
    println!(
        "migrator (pages of 500, {CONCURRENCY} in flight, guarded, progress kept, trim): {} rewritten, {} skipped in {:.2} s; peak RSS {:.1} MiB (RSS {at_start:.1} MiB at its start)",
        counts.migrated,
        counts.skipped,
        migrator.as_secs_f64(),
        peak_rss_mib()
    );
    println!(
        "migrator / bare loop: {:.2} (same {count} tenants, each rewritten from v1 both times: bare loop first, then the fleet re-stored as v1, then the migrator)",
        migrator.as_secs_f64() / bare.as_secs_f64()
    );
    Ok(())
}
