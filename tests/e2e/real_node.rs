//! On a real node, from real images: the operator runs as its two pods from its image with the
//! kustomize install (`config/crd`, then `config/default`), tenants' Redis, server and registry
//! really start, the operator's password, probes, volumes and security contexts meet a kubelet,
//! data survives `Retain` and goes with `Delete`, and the operator survives losing its leader's pod
//! and a pod killed mid-reconcile. The operator is installed, and the sample tenant shown, by the
//! code of `make run NODE=1` (`testenv::node_run`), so this scenario runs that too.
//!
//! The images are `make images`'s (the record at `$TESTENV_IMAGES`); NeuralLog's server and
//! registry are the stand-ins of `tools/standins`, Redis is Debian's.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use testenv::node::RealNode;
use testenv::node_run;
use testenv::timeline::Timeline;

use crate::on_node::{
    OPERATOR_NAMESPACE, TenantImages, create_tenant, delete_tenant, exec, on_a_node, operator_restarts, read_records,
    ready_operator_pods, tenant_v1, tenant_v2, tenants, wait, wait_running, write_record,
};

const DEPLOYMENT: &str = "neurallog-tenant-operator";
const LEASE: &str = "neurallog-tenant-operator";
/// The operator's default lease duration (`--lease-duration-seconds`).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the operator's pods must stay up without a restart.
const STABLE_FOR: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_and_its_tenants_run_for_real_on_a_real_node() -> anyhow::Result<()> {
    // Nothing but the operator's logs to keep after a failure.
    on_a_node(
        "real-node",
        "e2e real node",
        8,
        false,
        |_, _| {},
        async |node, timeline, _| scenario(node, timeline).await,
    )
    .await
}

async fn scenario(node: &RealNode, timeline: &mut Timeline) -> anyhow::Result<()> {
    let client = node.admin_client().await?;

    timeline.begin("images", "push by digest; user, read-only root, version, labels");
    let operator_image = node.push_image("operator")?;
    let images = TenantImages::push(node)?;
    let version = check_images(node, &client, &operator_image).await?;
    timeline.done(version);

    timeline.begin(
        "install",
        "as make run NODE=1: kubectl apply -k config/crd, then config/default with the image by digest, traces to Jaeger",
    );
    let installed = Instant::now();
    let jaeger = node_run::install_traced_operator(node).await?;
    let operator_pods: Vec<String> =
        ready_operator_pods(&client).await?.into_iter().filter_map(|pod| pod.metadata.name).collect();
    ensure!(operator_pods.len() == 2, "expected 2 Ready operator pods, found {operator_pods:?}");
    let leader = wait(&format!("lease {LEASE} held"), async || lease_holder(&client).await).await?;
    ensure!(operator_pods.contains(&leader), "the lease holder {leader} is none of {operator_pods:?}");
    timeline.done(format!("2 replicas Ready in {:.1}s, {leader} leads", installed.elapsed().as_secs_f64()));

    timeline.begin("tenants", "one through v1 (converted by the webhook behind its Service), one through v2");
    create_tenant(&client, "v1", &tenant_v1("alpha", &images)).await?;
    create_tenant(&client, "v2", &tenant_v2("beta", "Delete", &images)).await?;
    node.apply_json(&node_run::sample_tenant(node)?)?;
    for name in ["alpha", "beta", node_run::SAMPLE] {
        wait_running(&client, name).await?;
    }
    let converted = tenants(&client, "v1").get("beta").await?;
    ensure!(
        converted.data["spec"]["resources"].is_object(),
        "v2 tenant beta is not served as v1: {:?}",
        converted.data
    );
    timeline.done("alpha, beta and the sample Running, every pod Ready; beta's quota read back as v1 resources");

    timeline
        .begin("make run", "what make run NODE=1 shows once: the sample's server log, redis-cli through exec, traces");
    node_run::show_once(node, &jaeger).await?;
    timeline.done("log read, PONG, the operator's traces in Jaeger");

    timeline.begin("redis", "refuses a client without the password, accepts one with it, appends to the claim");
    let answer = exec(node, "tenant-alpha", "alpha-redis-0", &["sh", "-c", "REDISCLI_AUTH= redis-cli ping"])?;
    ensure!(answer.contains("NOAUTH"), "Redis answered a client without the password: {answer}");
    let answer = exec(node, "tenant-alpha", "alpha-redis-0", &["redis-cli", "ping"])?;
    ensure!(answer.trim() == "PONG", "Redis refused its password: {answer}");
    let aof = exec(node, "tenant-alpha", "alpha-redis-0", &["sh", "-c", "ls /data/appendonlydir"])?;
    ensure!(aof.contains(".aof"), "Redis appends nothing to its volume: {aof}");
    timeline.done("NOAUTH without, PONG with, appending to its volume");

    timeline.begin("records", "a log record written through the server is read back from Redis");
    let record = "first record from the real node";
    write_record(&client, "alpha", "e2e", record).await?;
    let stored = exec(node, "tenant-alpha", "alpha-redis-0", &["redis-cli", "lrange", "logs:alpha:e2e", "0", "-1"])?;
    ensure!(stored.contains(record), "Redis holds {stored:?}, not the record");
    timeline.done("POST through the server's Service, LRANGE in Redis");

    timeline.begin("retain", "a record written before deletion is there after the tenant is created again");
    let (claim_before, secret_before) = (claim_uid(&client, "alpha").await?, secret_uid(&client, "alpha").await?);
    delete_tenant(&client, "alpha").await?;
    ensure!(
        Api::<Namespace>::all(client.clone()).get_opt("tenant-alpha").await?.is_some(),
        "Retain removed tenant-alpha"
    );
    create_tenant(&client, "v1", &tenant_v1("alpha", &images)).await?;
    wait_running(&client, "alpha").await?;
    ensure!(claim_uid(&client, "alpha").await? == claim_before, "the Redis claim was replaced");
    ensure!(secret_uid(&client, "alpha").await? == secret_before, "the password Secret was replaced");
    let records = read_records(&client, "alpha", "e2e").await?;
    ensure!(records.iter().any(|r| r == record), "after re-creation the server reads {records:?}");
    timeline.done("same claim, same password Secret, the record read back through the server");

    timeline.begin("delete", "Delete removes the namespace and the claim; the volume is released");
    let volume = bound_volume(&client, "beta").await?;
    delete_tenant(&client, "beta").await?;
    wait("tenant-beta to be gone", async || {
        Ok(Api::<Namespace>::all(client.clone()).get_opt("tenant-beta").await?.is_none().then_some(()))
    })
    .await?;
    let pvs = Api::<PersistentVolume>::all(client.clone());
    wait(&format!("volume {volume} Released"), async || {
        let phase = pvs.get(&volume).await?.status.and_then(|s| s.phase);
        Ok((phase.as_deref() == Some("Released")).then_some(()))
    })
    .await?;
    timeline.done(format!("tenant-beta gone, {volume} Released"));

    timeline.begin("stable", "the operator's pods: no restart for at least 60 s");
    let remaining = STABLE_FOR.saturating_sub(installed.elapsed());
    // The requirement is a span of time: watched, not waited out blind.
    let until = Instant::now() + remaining;
    while Instant::now() < until {
        ensure!(operator_restarts(&client).await? == 0, "an operator pod restarted");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    ensure!(operator_restarts(&client).await? == 0, "an operator pod restarted");
    timeline.done(format!("0 restarts over {:.0}s", installed.elapsed().as_secs_f64()));

    timeline.begin("failover", "delete the leader's pod: the other replica takes the lease, tenants converge");
    let leader = wait("the lease holder", async || lease_holder(&client).await).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let deleted = Instant::now();
    pods.delete(&leader, &DeleteParams::default()).await?;
    let successor =
        wait("a new lease holder", async || Ok(lease_holder(&client).await?.filter(|holder| *holder != leader)))
            .await?;
    let handover = deleted.elapsed();
    ensure!(handover <= LEASE_DURATION, "the lease moved after {handover:?}, beyond its duration {LEASE_DURATION:?}");
    create_tenant(&client, "v2", &tenant_v2("gamma", "Delete", &images)).await?;
    wait_running(&client, "gamma").await?;
    timeline.done(format!("{successor} leads after {:.1}s; gamma Running", handover.as_secs_f64()));

    timeline.begin("kill", "SIGKILL the leader's pod in the middle of a reconcile: nothing is lost");
    create_tenant(&client, "v2", &tenant_v2("delta", "Delete", &images)).await?;
    let leader = wait("the lease holder", async || lease_holder(&client).await).await?;
    wait("delta's reconcile to be under way", async || {
        Ok(Api::<Namespace>::all(client.clone()).get_opt("tenant-delta").await?.map(|_| ()))
    })
    .await?;
    pods.delete(&leader, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await?;
    wait_running(&client, "delta").await?;
    wait_running(&client, "gamma").await?;
    node.wait_rollout(OPERATOR_NAMESPACE, &format!("deployment/{DEPLOYMENT}"))?;
    timeline.done("delta and gamma Running, both replicas back");
    Ok(())
}

/// The content checks of the images: the operator's runs as 65532 from a read-only root with no
/// shell and reports this commit; the bundle's labels are its annotations; the catalog's declares
/// its configs. Returns what the operator's `--version` printed.
async fn check_images(node: &RealNode, client: &Client, operator_image: &str) -> anyhow::Result<String> {
    let built = node.images();
    let operator = inspect(&built.get("operator")?.reference)?;
    ensure!(operator["Config"]["User"] == "65532:65532", "operator image user: {}", operator["Config"]["User"]);
    let reference = &built.get("operator")?.reference;
    let root = podman(&["image", "mount", reference])?.trim().to_owned();
    let shell =
        ["bin/sh", "usr/bin/sh", "bin/bash"].iter().find(|shell| Path::new(&root).join(shell).exists()).copied();
    let ca_bundle = Path::new(&root).join("etc/ssl/certs/ca-certificates.crt").is_file();
    podman(&["image", "unmount", reference])?;
    ensure!(shell.is_none(), "the operator image carries a shell: {shell:?}");
    ensure!(ca_bundle, "the operator image has no CA bundle");

    // The version, from the image as a kubelet runs it: non-root, read-only root filesystem.
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "operator-version"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "operator", "image": operator_image, "args": ["--version"],
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait("the version pod to succeed", async || {
        let phase = pods.get("operator-version").await?.status.and_then(|s| s.phase);
        match phase.as_deref() {
            Some("Succeeded") => Ok(Some(())),
            Some("Failed") => bail!("the operator image failed to print its version"),
            _ => Ok(None),
        }
    })
    .await?;
    let printed = String::from_utf8(node.kubectl_command(&["logs", "operator-version"]).output()?.stdout)?;
    let revision = git_revision()?;
    ensure!(
        printed.trim() == format!("tenant-operator {} ({revision})", env!("CARGO_PKG_VERSION")),
        "the operator image says {printed:?}, this checkout is {} at {revision}",
        env!("CARGO_PKG_VERSION")
    );

    let bundle = inspect(&built.get("bundle")?.reference)?;
    let annotations: Value =
        serde_yaml::from_str(&std::fs::read_to_string(testenv::repo_root().join("bundle/metadata/annotations.yaml"))?)?;
    let labels = bundle["Config"]["Labels"].as_object().context("the bundle image has no labels")?;
    for (key, value) in annotations["annotations"].as_object().context("annotations.yaml has no annotations")? {
        ensure!(
            labels.get(key) == Some(value),
            "bundle image label {key} is {:?}, annotations.yaml says {value}",
            labels.get(key)
        );
    }
    let catalog = inspect(&built.get("catalog")?.reference)?;
    ensure!(
        catalog["Config"]["Labels"]["operators.operatorframework.io.index.configs.v1"] == "/configs",
        "the catalog image does not declare /configs"
    );
    let redis = inspect(&built.get("redis")?.reference)?;
    ensure!(redis["Config"]["User"] == "999:999", "redis image user: {}", redis["Config"]["User"]);
    for name in ["server", "registry", "pause", "coredns"] {
        let image = inspect(&built.get(name)?.reference)?;
        let user = image["Config"]["User"].as_str().unwrap_or_default();
        let uid = user.split(':').next().and_then(|uid| uid.parse::<u32>().ok());
        ensure!(uid.is_some_and(|uid| uid > 0), "the {name} image runs as {user:?}, not a non-root uid");
    }
    Ok(printed.trim().to_owned())
}

/// The commit the image should report: `git rev-parse HEAD`, `-dirty` when the tree has changes,
/// as `tools/images.sh` stamps it.
fn git_revision() -> anyhow::Result<String> {
    let root = testenv::repo_root();
    let head = std::process::Command::new("git").arg("-C").arg(&root).args(["rev-parse", "HEAD"]).output()?;
    let dirty =
        !std::process::Command::new("git").arg("-C").arg(&root).args(["diff", "--quiet", "HEAD"]).status()?.success();
    let head = String::from_utf8(head.stdout)?.trim().to_owned();
    Ok(if dirty { format!("{head}-dirty") } else { head })
}

fn podman(args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("podman").args(args).output().context("cannot run podman")?;
    ensure!(output.status.success(), "podman {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?)
}

fn inspect(reference: &str) -> anyhow::Result<Value> {
    let all: Value = serde_json::from_str(&podman(&["image", "inspect", reference])?)?;
    all.get(0).cloned().with_context(|| format!("podman knows no image {reference}"))
}

async fn claim_uid(client: &Client, tenant: &str) -> anyhow::Result<String> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &format!("tenant-{tenant}"));
    let list = claims.list(&ListParams::default()).await?;
    ensure!(list.items.len() == 1, "tenant-{tenant} has {} claims", list.items.len());
    list.items.into_iter().next().and_then(|c| c.metadata.uid).context("a claim without uid")
}

async fn bound_volume(client: &Client, tenant: &str) -> anyhow::Result<String> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &format!("tenant-{tenant}"));
    let list = claims.list(&ListParams::default()).await?;
    list.items
        .into_iter()
        .next()
        .and_then(|c| c.spec?.volume_name)
        .with_context(|| format!("tenant-{tenant}'s claim is not bound"))
}

async fn secret_uid(client: &Client, tenant: &str) -> anyhow::Result<String> {
    let secrets = Api::<Secret>::namespaced(client.clone(), &format!("tenant-{tenant}"));
    secrets
        .get(&format!("{tenant}-redis-auth"))
        .await?
        .metadata
        .uid
        .with_context(|| format!("tenant-{tenant} has no Redis password Secret"))
}

async fn lease_holder(client: &Client) -> anyhow::Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE).get_opt(LEASE).await?;
    Ok(lease.and_then(|l| l.spec?.holder_identity).filter(|holder| !holder.is_empty()))
}
