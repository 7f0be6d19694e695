//! On a real node, from real images: the operator runs as its two pods from its image with the
//! kustomize install (`config/crd`, then `config/default`), tenants' Redis, server and registry
//! really start, the operator's password, probes, volumes and security contexts meet a kubelet,
//! data survives `Retain` and goes with `Delete`, and the operator survives losing its leader's pod
//! and a pod killed mid-reconcile.
//!
//! The images are `make images`'s (the record at `$TESTENV_IMAGES`); NeuralLog's server and
//! registry are the stand-ins of `tools/standins`, Redis is Debian's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};
use testenv::node::{NodeOptions, RealNode};
use testenv::timeline::Timeline;

const OPERATOR_NAMESPACE: &str = "neurallog-system";
const DEPLOYMENT: &str = "neurallog-tenant-operator";
const LEASE: &str = "neurallog-tenant-operator";
/// The operator's default lease duration (`--lease-duration-seconds`).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the operator's pods must stay up without a restart.
const STABLE_FOR: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_and_its_tenants_run_for_real_on_a_real_node() -> anyhow::Result<()> {
    // reqwest (the server's HTTP) is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs = crate::logs("real-node");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let mut timeline = Timeline::default();
    timeline.begin("node", "control plane, containerd, kubelet, kube-proxy, registry, cluster DNS");
    let started = Instant::now();
    let node = RealNode::start(NodeOptions { volumes: 8, dir: Some(logs.join("node")) }).await?;
    timeline.done(format!("Ready in {:.1}s", started.elapsed().as_secs_f64()));
    let outcome = scenario(&node, &mut timeline).await;
    if outcome.is_err() {
        keep_operator_logs(&node, &logs);
    }
    timeline.print("e2e real node", outcome.is_ok(), &logs);
    drop(node);
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&logs);
    }
    outcome
}

/// The images a scenario runs, pushed into the node's registry and named by digest.
struct Pushed {
    operator: String,
    server: String,
    redis: String,
    registry: String,
}

async fn scenario(node: &RealNode, timeline: &mut Timeline) -> anyhow::Result<()> {
    let client = node.admin_client().await?;

    timeline.begin("images", "push by digest; user, read-only root, version, labels");
    let images = Pushed {
        operator: node.push_image("operator")?,
        server: node.push_image("server")?,
        redis: node.push_image("redis")?,
        registry: node.push_image("registry")?,
    };
    let version = check_images(node, &client, &images).await?;
    timeline.done(version);

    timeline.begin("install", "kubectl apply -k config/crd, then config/default with the image by digest");
    let installed = Instant::now();
    install(node, &images.operator)?;
    node.wait_rollout(OPERATOR_NAMESPACE, &format!("deployment/{DEPLOYMENT}"))?;
    let operator_pods = ready_operator_pods(&client).await?;
    ensure!(operator_pods.len() == 2, "expected 2 Ready operator pods, found {operator_pods:?}");
    let leader = wait(&format!("lease {LEASE} held"), async || lease_holder(&client).await).await?;
    ensure!(operator_pods.contains(&leader), "the lease holder {leader} is none of {operator_pods:?}");
    timeline.done(format!("2 replicas Ready in {:.1}s, {leader} leads", installed.elapsed().as_secs_f64()));

    timeline.begin("tenants", "one through v1 (converted by the webhook behind its Service), one through v2");
    create_tenant(&client, "v1", &tenant_v1("alpha", &images)).await?;
    create_tenant(&client, "v2", &tenant_v2("beta", "Delete", &images)).await?;
    for name in ["alpha", "beta"] {
        wait_running(&client, name).await?;
    }
    let converted = tenants(&client, "v1").get("beta").await?;
    ensure!(
        converted.data["spec"]["resources"].is_object(),
        "v2 tenant beta is not served as v1: {:?}",
        converted.data
    );
    timeline.done("alpha and beta Running, every pod Ready; beta's quota read back as v1 resources");

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
async fn check_images(node: &RealNode, client: &Client, images: &Pushed) -> anyhow::Result<String> {
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
                "name": "operator", "image": images.operator, "args": ["--version"],
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

/// `config/crd`, then `config/default` through an overlay that names the image by digest.
fn install(node: &RealNode, image: &str) -> anyhow::Result<()> {
    let root = testenv::repo_root();
    let overlay = node.dir().join("install");
    std::fs::create_dir_all(&overlay)?;
    let (name, digest) = image.split_once('@').context("the operator image is not named by digest")?;
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "resources:\n  - {}\nimages:\n  - name: neurallog/tenant-operator\n    newName: {name}\n    digest: {digest}\n",
            relative(&overlay, &root.join("config/default")).display()
        ),
    )?;
    for dir in [root.join("config/crd"), overlay] {
        let output = node.kubectl_command(&["apply", "--server-side", "-k"]).arg(&dir).output()?;
        ensure!(
            output.status.success(),
            "kubectl apply -k {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `to` as a path relative to `from` (kustomize takes no absolute base).
fn relative(from: &Path, to: &Path) -> std::path::PathBuf {
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: std::path::PathBuf = from[common..].iter().map(|_| "..").collect();
    path.extend(&to[common..]);
    path
}

fn tenant_v1(name: &str, images: &Pushed) -> Value {
    json!({
        "apiVersion": "neurallog.io/v1", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "displayName": name,
            "deletionPolicy": "Retain",
            "server": {"replicas": 1, "image": images.server},
            "redis": {"replicas": 1, "image": images.redis, "storage": "1Gi"},
            "registry": {"replicas": 1, "image": images.registry},
        },
    })
}

fn tenant_v2(name: &str, deletion: &str, images: &Pushed) -> Value {
    json!({
        "apiVersion": "neurallog.io/v2", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "displayName": name,
            "deletionPolicy": deletion,
            "quota": {"requests": {"cpu": "1", "memory": "2Gi", "storage": "5Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
            "server": {"replicas": 1, "image": images.server},
            "redis": {"replicas": 1, "image": images.redis, "storage": "1Gi"},
            "registry": {"replicas": 1, "image": images.registry},
        },
    })
}

fn tenants(client: &Client, version: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", version, "Tenant"));
    Api::all_with(client.clone(), &resource)
}

/// Creates a tenant. Until kube-proxy has programmed the webhook Service's endpoints, the API
/// server's call to the conversion webhook is refused: a `v1` create is retried until then, as a
/// client would.
async fn create_tenant(client: &Client, version: &str, tenant: &Value) -> anyhow::Result<()> {
    let api = tenants(client, version);
    let object: DynamicObject = serde_json::from_value(tenant.clone())?;
    let name = object.metadata.name.clone().unwrap_or_default();
    wait(&format!("the API server to take tenant {name} through {version}"), async || {
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(Some(Ok(()))),
            Err(kube::Error::Api(status)) if status.message.contains("conversion webhook") => {
                Err(anyhow::anyhow!("{}", status.message))
            }
            Err(error) => Ok(Some(Err(anyhow::Error::from(error).context(format!("cannot create tenant {name}"))))),
        }
    })
    .await?
}

async fn delete_tenant(client: &Client, name: &str) -> anyhow::Result<()> {
    let api = tenants(client, "v2");
    api.delete(name, &DeleteParams::default()).await?;
    wait(&format!("tenant {name} to be gone"), async || Ok(api.get_opt(name).await?.is_none().then_some(()))).await
}

/// Waits for the tenant's phase `Running` and every pod in its namespace Ready.
async fn wait_running(client: &Client, name: &str) -> anyhow::Result<()> {
    let api = tenants(client, "v2");
    let pods = Api::<Pod>::namespaced(client.clone(), &format!("tenant-{name}"));
    wait(&format!("tenant {name} Running with every pod Ready"), async || {
        let tenant = api.get(name).await?;
        if tenant.data["status"]["phase"] != "Running" {
            return Ok(None);
        }
        let list = pods.list(&ListParams::default()).await?;
        let ready = |pod: &Pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        Ok((list.items.len() >= 3 && list.items.iter().all(ready)).then_some(()))
    })
    .await
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

/// The server's Service address, reached from the host through kube-proxy.
async fn server_address(client: &Client, tenant: &str) -> anyhow::Result<SocketAddr> {
    let service = Api::<Service>::namespaced(client.clone(), &format!("tenant-{tenant}"))
        .get(&format!("{tenant}-server"))
        .await?;
    let ip = service.spec.and_then(|s| s.cluster_ip).context("the server Service has no ClusterIP")?;
    Ok(SocketAddr::new(ip.parse()?, 3030))
}

async fn write_record(client: &Client, tenant: &str, log: &str, record: &str) -> anyhow::Result<()> {
    let url = format!("http://{}/logs/{log}", server_address(client, tenant).await?);
    let response = reqwest::Client::new().post(&url).body(record.to_owned()).send().await?;
    ensure!(response.status().as_u16() == 201, "POST {url}: {} {}", response.status(), response.text().await?);
    Ok(())
}

async fn read_records(client: &Client, tenant: &str, log: &str) -> anyhow::Result<Vec<String>> {
    let url = format!("http://{}/logs/{log}", server_address(client, tenant).await?);
    wait(&format!("GET {url}"), async || {
        let response = reqwest::Client::new().get(&url).send().await?;
        Ok(if response.status().is_success() { Some(response.json::<Vec<String>>().await?) } else { None })
    })
    .await
}

/// `kubectl exec` in the pod's first container; its standard output and error together.
fn exec(node: &RealNode, namespace: &str, pod: &str, command: &[&str]) -> anyhow::Result<String> {
    let output = node.kubectl_command(&["-n", namespace, "exec", pod, "--"]).args(command).output()?;
    Ok(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

async fn ready_operator_pods(client: &Client) -> anyhow::Result<Vec<String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = pods.list(&ListParams::default().labels("app.kubernetes.io/name=neurallog-tenant-operator")).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|pod| pod.metadata.name)
        .collect())
}

async fn operator_restarts(client: &Client) -> anyhow::Result<i32> {
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = pods.list(&ListParams::default().labels("app.kubernetes.io/name=neurallog-tenant-operator")).await?;
    Ok(list
        .items
        .iter()
        .flat_map(|pod| pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .map(|status| status.restart_count)
        .sum())
}

async fn lease_holder(client: &Client) -> anyhow::Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE).get_opt(LEASE).await?;
    Ok(lease.and_then(|l| l.spec?.holder_identity).filter(|holder| !holder.is_empty()))
}

/// Polls `check` until it yields a value, for at most [`DEADLINE`]; an error counts as "not yet"
/// and is reported if the deadline passes.
async fn wait<T>(what: &str, mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    let deadline = Instant::now() + DEADLINE;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(error) => error.context(format!("timed out after {DEADLINE:?} waiting for {what}")),
                None => anyhow::anyhow!("timed out after {DEADLINE:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After a failure: every operator pod's log (the current and the previous container's) next to the
/// node's.
fn keep_operator_logs(node: &RealNode, logs: &Path) {
    let mut outputs = BTreeMap::new();
    for previous in [false, true] {
        let mut args = vec![
            "-n",
            OPERATOR_NAMESPACE,
            "logs",
            "-l",
            "app.kubernetes.io/name=neurallog-tenant-operator",
            "--prefix",
            "--tail=-1",
        ];
        if previous {
            args.push("--previous");
        }
        if let Ok(output) = node.kubectl_command(&args).output() {
            outputs.insert(if previous { "operator-previous.log" } else { "operator.log" }, output.stdout);
        }
    }
    for (name, content) in outputs {
        let _ = std::fs::write(logs.join(name), content);
    }
}
