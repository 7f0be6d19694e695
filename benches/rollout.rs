//! A NeuralLog rollout across a fleet on a KWOK cluster (kube-controller-manager rolls the
//! workloads out, kwok's fake node makes their pods Ready): N tenants Ready on the default
//! version, then an operator with a new default (as an operator upgrade brings one) moves them all.
//! Reported: the time until every tenant runs the new version Ready, the most tenants seen moving
//! at once (never above `--rollout-max-upgrading`), the new operator's writes by verb and resource,
//! and its peak memory.
//!
//! Run with `make bench`. `BENCH_ROLLOUT_TENANTS` sets N (default 100), `BENCH_ROLLOUT_MAX` the
//! operator's `--rollout-max-upgrading` (default 10). Figures are reported, never asserted.

// Shared with the other benchmarks, of which this one reads only a part.
#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::TryStreamExt as _;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use support::{DEADLINE, Operator, env_number, mib, print_table, tail};
use testenv::kwok::KwokCluster;

const OLD: &str = "1.0.0";
const NEW: &str = "1.1.0";

fn tenants(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", "v2", "Tenant")))
}

fn upgrading_reason(tenant: &DynamicObject) -> Option<&str> {
    let conditions = tenant.data["status"]["conditions"].as_array()?;
    conditions.iter().find(|c| c["type"] == "Upgrading").and_then(|c| c["reason"].as_str())
}

/// Waits until `count` tenants run `version` Ready with nothing left to move.
async fn wait_all_on(client: &Client, count: usize, version: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = tenants(client).list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|t| t.data["status"]["version"] == version && upgrading_reason(t) == Some("UpToDate"))
            .count();
        if done == count {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{done} of {count} tenants on {version} after {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The operator with the default NeuralLog version `version` (its images are the defaults'
/// repositories: the fake node pulls nothing).
fn operator(kubeconfig: &Path, webhook: &[String], version: &str, max: usize, log: &Path) -> anyhow::Result<Operator> {
    let mut args = webhook.to_vec();
    args.extend(["--rollout-max-upgrading".to_owned(), max.to_string(), "--allow-unconfined".to_owned()]);
    let server = format!("neurallog/server:{version}");
    let registry = format!("neurallog/registry:{version}");
    let env = [
        ("TENANT_OPERATOR_NEURALLOG_VERSION", version),
        ("RELATED_IMAGE_NEURALLOG_SERVER", server.as_str()),
        ("RELATED_IMAGE_NEURALLOG_REGISTRY", registry.as_str()),
    ];
    Operator::spawn_with(kubeconfig, &args, &env, log)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = env_number("BENCH_ROLLOUT_TENANTS")?.unwrap_or(100);
    let max: usize = env_number("BENCH_ROLLOUT_MAX")?.unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("neurallog-bench-rollout-{}", std::process::id()));
    let cluster = KwokCluster::start(&dir, count + 10).await.context("starting the KWOK cluster")?;
    let client = cluster.admin_client().await?;

    // The conversion webhook as `make run` sets it up: a loopback certificate the operator reads.
    let pki = testenv::Pki::new()?;
    let certs = std::path::absolute(dir.join("webhook-certs"))?;
    pki.write_loopback_pair(&certs, "neurallog-tenant-operator-webhook")?;
    let webhook_address = format!("127.0.0.1:{}", testenv::free_port()?);
    let crd = testenv::repo_root().join("config/crd/bases/neurallog.io_tenants.yaml");
    testenv::install_crd_converting(client.clone(), &crd, &format!("https://{webhook_address}/convert"), &pki.ca_pem)
        .await?;
    let webhook = vec![
        "--webhook-address".to_owned(),
        webhook_address,
        "--webhook-cert-dir".to_owned(),
        certs.display().to_string(),
    ];

    let first_log = dir.join("operator-old.log");
    let mut first = operator(cluster.kubeconfig(), &webhook, OLD, max, &first_log)?;
    first.wait_ready().await.with_context(|| tail(&first_log, 20))?;
    let created = Instant::now();
    for i in 0..count {
        let tenant: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "neurallog.io/v2", "kind": "Tenant", "metadata": {"name": format!("t{i:04}")},
            "spec": {"deletionPolicy": "Delete"},
        }))?;
        tenants(&client).create(&PostParams::default(), &tenant).await?;
    }
    wait_all_on(&client, count, OLD).await.with_context(|| tail(&first_log, 20))?;
    let installed = created.elapsed();
    first.terminate().await?;

    // Every change of every tenant's `Upgrading`, in order: the most moving at once.
    let widest = Arc::new(Mutex::new((BTreeSet::<String>::new(), 0_usize)));
    let watching = tokio::spawn({
        let (client, widest) = (client.clone(), widest.clone());
        async move {
            let mut events = std::pin::pin!(watcher(tenants(&client), watcher::Config::default()).applied_objects());
            while let Some(tenant) = events.try_next().await? {
                let name = tenant.metadata.name.clone().unwrap_or_default();
                if let Ok(mut seen) = widest.lock() {
                    if upgrading_reason(&tenant) == Some("Upgrading") {
                        seen.0.insert(name);
                    } else {
                        seen.0.remove(&name);
                    }
                    seen.1 = seen.1.max(seen.0.len());
                }
            }
            anyhow::Ok(())
        }
    });

    let second_log = dir.join("operator-new.log");
    let started = Instant::now();
    let mut second = operator(cluster.kubeconfig(), &webhook, NEW, max, &second_log)?;
    second.wait_ready().await.with_context(|| tail(&second_log, 20))?;
    wait_all_on(&client, count, NEW).await.with_context(|| tail(&second_log, 20))?;
    let rolled = started.elapsed();
    watching.abort();
    let writes = second.writes().await?;
    let memory = second.memory()?;
    let widest = widest.lock().map(|seen| seen.1).unwrap_or_default();
    second.terminate().await?;

    let total: u64 = writes.values().sum();
    let by_kind: Vec<String> = writes.iter().map(|(what, n)| format!("{what} {n}")).collect();
    print_table(
        &["tenants", "max", "install s", "rollout s", "widest", "writes", "writes/tenant", "peak RSS"],
        &[vec![
            count.to_string(),
            max.to_string(),
            format!("{:.1}", installed.as_secs_f64()),
            format!("{:.1}", rolled.as_secs_f64()),
            widest.to_string(),
            total.to_string(),
            format!("{:.1}", total as f64 / count as f64),
            mib(memory.peak_kib),
        ]],
    );
    println!("writes of the rollout's operator: {}", by_kind.join(", "));
    ensure!(widest <= max, "{widest} tenants moved at once, above --rollout-max-upgrading {max}");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
