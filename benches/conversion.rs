//! Conversion latency and the webhook's memory (`make bench`; BENCH_REVIEWS, BENCH_OBJECTS).
//!
//! 1. The conversion itself: the sample tenant (`config/samples`), v1 → v2 and v2 → v1, each
//!    conversion timed on its own; p50 and p99 per object.
//! 2. The webhook as the API server calls it: HTTPS on loopback, one connection kept open,
//!    reviews of BENCH_OBJECTS objects (v1 → v2); p50 and p99 per review and per object, and the
//!    process's peak resident memory (the webhook and this client) before and after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use neurallog_tenant_operator::api::conversion;
use neurallog_tenant_operator::metrics::Metrics;
use neurallog_tenant_operator::tls::{Trust, client_config};
use neurallog_tenant_operator::webhook::certificates::PemPair;
use neurallog_tenant_operator::webhook::{self, Certificates, Webhook};
use serde_json::{Value, json};
use testenv::{Pki, repo_root};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sample(path: &str) -> anyhow::Result<Value> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(repo_root().join(path))?)?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// Peak resident memory of this process, from the kernel.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn report(what: &str, mut samples: Vec<Duration>, per: usize) {
    samples.sort();
    let per_object = |d: Duration| d.as_secs_f64() * 1e6 / per as f64;
    println!(
        "{what}: p50 {:.1} µs, p99 {:.1} µs per object ({} samples)",
        per_object(percentile(&samples, 0.5)),
        per_object(percentile(&samples, 0.99)),
        samples.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut v1 = sample("config/samples/v1/neurallog_v1_tenant.yaml")?;
    v1["metadata"]["uid"] = json!("uid-acme");
    let v2 = conversion::convert(&v1, "neurallog.io/v2")?;
    let conversions = env("BENCH_CONVERSIONS", 20_000);

    let time = |object: &Value, to: &str| -> anyhow::Result<Vec<Duration>> {
        (0..conversions)
            .map(|_| {
                let start = Instant::now();
                let converted = conversion::convert(object, to)?;
                let took = start.elapsed();
                std::hint::black_box(converted);
                Ok(took)
            })
            .collect()
    };
    report("convert v1 → v2", time(&v1, "neurallog.io/v2")?, 1);
    report("convert v2 → v1", time(&v2, "neurallog.io/v1")?, 1);

    let (reviews, objects) = (env("BENCH_REVIEWS", 500), env("BENCH_OBJECTS", 100));
    let pki = Pki::new()?;
    let pair = pki.loopback_server("webhook")?;
    let (_keep, certificates) =
        tokio::sync::watch::channel(Some(PemPair { cert: pair.cert_pem.into_bytes(), key: pair.key_pem.into_bytes() }));
    let settings = webhook::Settings { address: "127.0.0.1:0".parse()?, cert_dir: Default::default() };
    let server = Webhook::bind(&settings, Certificates::Memory(certificates)).await?;
    let url = format!("https://127.0.0.1:{}{}", server.local_addr().port(), webhook::PATH);
    tokio::spawn(server.serve(Arc::new(Metrics::default()), std::future::pending()));
    neurallog_tenant_operator::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(Trust::Pem(pki.ca_pem.as_bytes()))?)
        .build()?;
    let body = serde_json::to_vec(&json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "request": {"uid": "bench", "desiredAPIVersion": "neurallog.io/v2", "objects": vec![v1.clone(); objects]},
    }))?;
    let before = peak_rss_mib();
    let mut samples = Vec::with_capacity(reviews);
    for _ in 0..reviews {
        let start = Instant::now();
        let reply: Value = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?
            .json()
            .await?;
        samples.push(start.elapsed());
        anyhow::ensure!(reply["response"]["result"]["status"] == "Success", "review failed: {reply}");
    }
    report(&format!("webhook review of {objects} objects over TLS"), samples.clone(), objects);
    samples.sort();
    println!(
        "webhook: p50 {:.2} ms, p99 {:.2} ms per review of {objects} objects ({reviews} reviews, {} KiB each); peak RSS {:.1} MiB before, {:.1} MiB after",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        body.len() / 1024,
        before,
        peak_rss_mib()
    );
    Ok(())
}
