//! Backups and restores on a real node, against a real S3-compatible store (versitygw, its POSIX
//! backend on the host, reached by the pods at the node's address), with real Redis:
//! - 1,000 records written through the server, more written all along while a backup is taken;
//!   the tenant deleted with `Delete`, the operator restarted, a new tenant restored from the
//!   backup holds the 1,000 byte for byte and a gap-free prefix of the others, none torn;
//! - a schedule of one minute creates its backups on time, and retention 2 leaves exactly two,
//!   in the bucket too;
//! - wrong credentials and an unreachable store fail a backup with its reason, the tenant running;
//! - a corrupted snapshot, a missing one, and one from a Redis too new fail the restoring tenant
//!   with the backup and the reason named, and nothing else of it starts.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testenv::node::RealNode;
use testenv::node::config::NODE_IP;
use testenv::object_store::{ACCESS_KEY, ObjectStore, SECRET_KEY};
use testenv::timeline::Timeline;

use crate::on_node::{
    OPERATOR_NAMESPACE, create_tenant, delete_tenant, on_a_node, read_records, tenants, wait, wait_running,
    wait_within, write_record,
};

pub(crate) const BUCKET: &str = "backups";
pub(crate) const SECRET: &str = "backup-store";
const RECORDS: usize = 1000;
const SOURCE: &str = "source";
const DEPLOYMENT: &str = "deployment/neurallog-tenant-operator";

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_into_a_new_tenant_and_failures_say_why() -> anyhow::Result<()> {
    on_a_node(
        "backup-node",
        "e2e backups and restores on a real node",
        6,
        false,
        |_, _| {},
        async |node, timeline, logs| scenario(node, timeline, logs).await,
    )
    .await
}

pub(crate) fn backups(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", "v1", "TenantBackup"));
    Api::all_with(client.clone(), &resource)
}

pub(crate) fn s3(endpoint: &str) -> Value {
    json!({"endpoint": endpoint, "bucket": BUCKET, "credentialsSecret": SECRET})
}

/// A `v2` tenant on the default images with small CPU requests.
pub(crate) fn tenant(name: &str, extra: Value) -> Value {
    let small = json!({"requests": {"cpu": "10m"}});
    let mut tenant = json!({
        "apiVersion": "neurallog.io/v2", "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": "Delete",
            "server": {"resources": small},
            "redis": {"resources": small, "storage": "1Gi"},
            "registry": {"resources": small},
        },
    });
    if let (Some(spec), Some(extra)) = (tenant["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    tenant
}

/// Waits for the tenant's namespace, then gives it the store's credentials.
pub(crate) async fn give_credentials(
    node: &RealNode,
    client: &Client,
    tenant: &str,
    secret_key: &str,
) -> anyhow::Result<()> {
    let namespace = format!("tenant-{tenant}");
    let namespaces = Api::<Namespace>::all(client.clone());
    wait(&format!("namespace {namespace}"), async || Ok(namespaces.get_opt(&namespace).await?.map(|_| ()))).await?;
    node.apply_json(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret_key},
    }))
}

/// The 1,000 records: each different, with quotes, a backslash and characters beyond ASCII.
pub(crate) fn record(i: usize) -> String {
    format!("record {i:04} \"quoted\" \\ é✓ {}", "x".repeat(i % 97))
}

/// A record of the stream written during the backup: its number and a checksum of it, so a torn
/// one shows.
fn stream_record(n: usize) -> String {
    let digest: String = Sha256::digest(n.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("{n} {digest}")
}

/// Waits for a TenantBackup to finish; its status.
pub(crate) async fn finished(client: &Client, name: &str) -> anyhow::Result<Value> {
    let api = backups(client);
    wait(&format!("backup {name} to finish"), async || {
        let backup = api.get(name).await?;
        let phase = backup.data["status"]["phase"].as_str().unwrap_or_default().to_owned();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then(|| backup.data["status"].clone()))
    })
    .await
}

pub(crate) async fn create_backup(client: &Client, name: &str, tenant: &str) -> anyhow::Result<()> {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "neurallog.io/v1", "kind": "TenantBackup",
        "metadata": {"name": name}, "spec": {"tenant": tenant},
    }))?;
    backups(client).create(&PostParams::default(), &object).await?;
    Ok(())
}

pub(crate) async fn condition(client: &Client, tenant: &str, type_: &str) -> anyhow::Result<Option<Value>> {
    let object = tenants(client, "v2").get(tenant).await?;
    let conditions = object.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
    Ok(conditions.into_iter().find(|c| c["type"] == type_))
}

/// How long a finished backup took, from its Job's start to its completion (whole seconds).
fn took(status: &Value) -> anyhow::Result<i64> {
    let time = |field: &str| -> anyhow::Result<i64> {
        let text = status[field].as_str().with_context(|| format!("status.{field}"))?;
        Ok(text.parse::<jiff::Timestamp>()?.as_second())
    };
    Ok(time("completionTime")? - time("startTime")?)
}

async fn scenario(node: &RealNode, timeline: &mut Timeline, logs: &std::path::Path) -> anyhow::Result<()> {
    let client = node.admin_client().await?;

    timeline.begin("install", "the stand-ins of NeuralLog 1.0.0, Redis, the operator, versitygw on the node's address");
    for name in ["server-1.0.0", "registry-1.0.0", "redis-default"] {
        node.push_image(name)?;
    }
    let operator = node.push_image("operator")?;
    node.install_operator(&operator, &[])?;
    node.wait_rollout(OPERATOR_NAMESPACE, DEPLOYMENT)?;
    let mut store = ObjectStore::start(NODE_IP, logs, &[BUCKET])?;
    let endpoint = store.endpoint();
    timeline.done(format!("the store at {endpoint}"));

    timeline.begin("source", &format!("tenant {SOURCE}: a backup every minute, 2 kept; {RECORDS} records written"));
    let backup = json!({"backup": {"schedule": "* * * * *", "keep": 2, "destination": {"s3": s3(&endpoint)}}});
    create_tenant(&client, "v2", &tenant(SOURCE, backup)).await?;
    give_credentials(node, &client, SOURCE, SECRET_KEY).await?;
    wait_running(&client, SOURCE).await?;
    let started = Instant::now();
    for i in 0..RECORDS {
        write_record(&client, SOURCE, "app", &record(i)).await?;
    }
    timeline.done(format!("{RECORDS} records in {:.1}s", started.elapsed().as_secs_f64()));

    timeline.begin("busy", "a backup by hand while records are being written");
    let stop = AtomicBool::new(false);
    let written = AtomicUsize::new(0);
    // The writer and the backup side by side in this task: the writer stops once the backup is done.
    let writer = async {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            write_record(&client, SOURCE, "stream", &stream_record(n)).await?;
            n += 1;
            written.store(n, Ordering::Relaxed);
        }
        anyhow::Ok(n)
    };
    let backing_up = async {
        let taken = async {
            wait("the writer to be under way", async || Ok((written.load(Ordering::Relaxed) >= 50).then_some(())))
                .await?;
            create_backup(&client, "source-busy", SOURCE).await?;
            finished(&client, "source-busy").await
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        taken
    };
    let (streamed, busy) = tokio::join!(writer, backing_up);
    let (streamed, busy) = (streamed?, busy?);
    ensure!(busy["phase"] == "Succeeded", "the backup during writes failed: {busy}");
    let size = busy["sizeBytes"].as_i64().unwrap_or_default();
    let key = busy["location"]["s3"]["key"].as_str().unwrap_or_default().to_owned();
    ensure!(key == format!("{SOURCE}/source-busy"), "the backup is kept under the tenant and its name: {key}");
    ensure!(
        store.keys(BUCKET, &key)? == vec![format!("{key}/dump.rdb"), format!("{key}/metadata.json")],
        "the snapshot and its metadata are in the bucket"
    );
    let on_disk = std::fs::read(store.object_path(BUCKET, &format!("{key}/dump.rdb")))?;
    let digest: String = Sha256::digest(&on_disk).iter().map(|b| format!("{b:02x}")).collect();
    ensure!(busy["sha256"] == digest.as_str(), "the recorded checksum is the object's");
    timeline.done(format!(
        "{size} bytes in {}s (Job start to completion), {streamed} stream records written meanwhile",
        took(&busy)?
    ));

    timeline.begin("schedule", "one backup a minute, each on time; retention leaves exactly two");
    let scheduled_api = backups(&client);
    let selector = ListParams::default().labels("neurallog.io/backup-schedule=true");
    let mut seen = BTreeSet::new();
    let kept = wait_within("three scheduled backups, two left", std::time::Duration::from_secs(300), async || {
        let list = scheduled_api.list(&selector).await?;
        for backup in &list.items {
            seen.insert(backup.metadata.name.clone().unwrap_or_default());
            let due: jiff::Timestamp = backup
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("neurallog.io/scheduled-at"))
                .context("scheduled-at")?
                .parse()?;
            let created = backup.metadata.creation_timestamp.as_ref().context("created")?.0;
            ensure!(
                created >= due && created.as_second() - due.as_second() < 60,
                "backup {:?} due at {due} was created at {created}, not within its minute",
                backup.metadata.name
            );
        }
        let live: Vec<&DynamicObject> = list.items.iter().filter(|b| b.metadata.deletion_timestamp.is_none()).collect();
        let succeeded: Vec<String> = live
            .iter()
            .filter(|b| b.data["status"]["phase"] == "Succeeded")
            .filter_map(|b| b.metadata.name.clone())
            .collect();
        if seen.len() < 3 || live.len() != 2 || succeeded.len() != 2 || list.items.len() != 2 {
            return Ok(None);
        }
        let in_bucket: BTreeSet<String> = store
            .keys(BUCKET, &format!("{SOURCE}/{SOURCE}-"))?
            .into_iter()
            .filter_map(|key| key.split('/').nth(1).map(str::to_owned))
            // Scheduled backups are named by their minute; the one by hand is not theirs.
            .filter(|name| name[SOURCE.len() + 1..].bytes().all(|b| b.is_ascii_digit()))
            .collect();
        Ok((in_bucket == succeeded.iter().cloned().collect::<BTreeSet<_>>()).then_some(succeeded))
    })
    .await?;
    let tenant_condition = condition(&client, SOURCE, "BackupSucceeded").await?.context("BackupSucceeded")?;
    ensure!(tenant_condition["status"] == "True", "the tenant says its newest backup succeeded: {tenant_condition}");
    // No more scheduled backups from here: the failures below are the ones asked for.
    let patch = json!({"spec": {"backup": {"schedule": null}}});
    tenants(&client, "v2").patch(SOURCE, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    timeline.done(format!("{} created, {kept:?} kept, in the bucket too", seen.len()));

    timeline.begin("failures", "wrong credentials, then an unreachable store: each backup fails with why");
    give_credentials(node, &client, SOURCE, "not-the-secret").await?;
    create_backup(&client, "source-wrong-key", SOURCE).await?;
    let wrong = finished(&client, "source-wrong-key").await?;
    let message = wrong["message"].as_str().unwrap_or_default().to_owned();
    ensure!(wrong["phase"] == "Failed" && message.contains("HTTP 403"), "wrong credentials: {wrong}");
    ensure!(!message.contains("not-the-secret"), "no secret in the message");
    give_credentials(node, &client, SOURCE, SECRET_KEY).await?;
    let closed = format!("http://{NODE_IP}:{}", testenv::free_port()?);
    let patch = json!({"spec": {"backup": {"destination": {"s3": {"endpoint": closed}}}}});
    tenants(&client, "v2").patch(SOURCE, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    create_backup(&client, "source-unreachable", SOURCE).await?;
    let unreachable = finished(&client, "source-unreachable").await?;
    let said = unreachable["message"].as_str().unwrap_or_default().to_owned();
    ensure!(unreachable["phase"] == "Failed" && said.contains("cannot reach the store"), "unreachable: {unreachable}");
    ensure!(!said.contains("X-Amz-Signature"), "no signed URL in the message: {said}");
    let failed = condition(&client, SOURCE, "BackupSucceeded").await?.context("BackupSucceeded")?;
    ensure!(failed["status"] == "False", "the tenant says its newest backup failed: {failed}");
    let phase = tenants(&client, "v2").get(SOURCE).await?.data["status"]["phase"].clone();
    ensure!(phase == "Running", "the tenant keeps running: {phase}");
    timeline.done(format!("{message}; {said}"));

    timeline.begin("delete", &format!("tenant {SOURCE} deleted with its namespace; the operator restarted"));
    delete_tenant(&client, SOURCE).await?;
    let namespaces = Api::<Namespace>::all(client.clone());
    wait("namespace tenant-source to be gone", async || {
        Ok(namespaces.get_opt(&format!("tenant-{SOURCE}")).await?.is_none().then_some(()))
    })
    .await?;
    ensure!(backups(&client).get_opt("source-busy").await?.is_some(), "the backup outlives its tenant");
    let restart = node.kubectl_command(&["-n", OPERATOR_NAMESPACE, "rollout", "restart", DEPLOYMENT]).output()?;
    ensure!(restart.status.success(), "rollout restart: {}", String::from_utf8_lossy(&restart.stderr));
    node.wait_rollout(OPERATOR_NAMESPACE, DEPLOYMENT)?;
    timeline.done("the backup and its objects are still there");

    timeline.begin("restore", "tenant source anew from the backup, its credentials given once its namespace exists");
    let started = Instant::now();
    // Under its old name: NeuralLog scopes its keys by the tenant's name.
    let restored = tenant(SOURCE, json!({"restoreFrom": {"backup": "source-busy"}}));
    create_tenant(&client, "v2", &restored).await?;
    give_credentials(node, &client, SOURCE, SECRET_KEY).await?;
    wait_running(&client, SOURCE).await?;
    let restore_took = started.elapsed();
    let records = read_records(&client, SOURCE, "app").await?;
    let expected: Vec<String> = (0..RECORDS).map(record).collect();
    ensure!(
        records == expected,
        "the restored tenant holds the {RECORDS} records byte for byte ({} read)",
        records.len()
    );
    let stream = read_records(&client, SOURCE, "stream").await?;
    for (n, line) in stream.iter().enumerate() {
        ensure!(*line == stream_record(n), "stream record {n} is whole and in order: {line:?}");
    }
    ensure!(stream.len() <= streamed, "no more stream records than were written");
    let restored_condition = condition(&client, SOURCE, "Restored").await?.context("Restored")?;
    let backup_condition = condition(&client, SOURCE, "BackupSucceeded").await?;
    ensure!(backup_condition.is_none(), "the backups of the tenant before are not this one's: {backup_condition:?}");
    ensure!(restored_condition["status"] == "True", "Restored: {restored_condition}");
    timeline.done(format!(
        "Running in {:.0}s; {RECORDS} records equal, {} of {streamed} stream records, gap-free and whole",
        restore_took.as_secs_f64(),
        stream.len()
    ));

    timeline.begin("bad restores", "a corrupted snapshot, a missing one, one from a newer Redis");
    let original = std::fs::read(store.object_path(BUCKET, &format!("{key}/dump.rdb")))?;
    let metadata: Value =
        serde_json::from_slice(&std::fs::read(store.object_path(BUCKET, &format!("{key}/metadata.json")))?)?;
    let place = |prefix: &str, snapshot: &[u8], metadata: &Value| -> anyhow::Result<()> {
        let dir = store.object_path(BUCKET, prefix);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("dump.rdb"), snapshot)?;
        std::fs::write(dir.join("metadata.json"), serde_json::to_vec(metadata)?)?;
        Ok(())
    };
    let mut corrupted = original.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0xff;
    place("bad/corrupted", &corrupted, &metadata)?;
    let mut newer = original.clone();
    newer[..9].copy_from_slice(b"REDIS0099");
    let mut newer_metadata = metadata.clone();
    newer_metadata["sha256"] = json!(Sha256::digest(&newer).iter().map(|b| format!("{b:02x}")).collect::<String>());
    place("bad/newer", &newer, &newer_metadata)?;
    let cases = [
        ("restore-corrupted", "bad/corrupted", "checksum mismatch"),
        ("restore-missing", "bad/missing", "does not exist"),
        ("restore-newer", "bad/newer", "cannot load the snapshot: Can't handle RDB format version 99"),
    ];
    for (name, key, _) in &cases {
        let location = json!({"s3": {"endpoint": endpoint, "bucket": BUCKET, "key": key, "credentialsSecret": SECRET}});
        create_tenant(&client, "v2", &tenant(name, json!({"restoreFrom": {"location": location}}))).await?;
        give_credentials(node, &client, name, SECRET_KEY).await?;
    }
    let mut said = Vec::new();
    for (name, key, reason) in &cases {
        let ready = wait(&format!("tenant {name} to fail its restore"), async || {
            let object = tenants(&client, "v2").get(name).await?;
            let ready = condition(&client, name, "Ready").await?;
            Ok((object.data["status"]["phase"] == "Failed").then_some(ready).flatten())
        })
        .await?;
        let message = ready["message"].as_str().unwrap_or_default().to_owned();
        ensure!(ready["reason"] == "RestoreFailed", "{name}: {ready}");
        ensure!(message.contains(reason) && message.contains(key), "{name} names the backup and why: {message}");
        let deployments = Api::<Deployment>::namespaced(client.clone(), &format!("tenant-{name}"));
        ensure!(deployments.list(&ListParams::default()).await?.items.is_empty(), "{name}: nothing else starts");
        said.push(message);
    }
    timeline.done(said.join(" | "));

    timeline.begin("cleanup", "the restored tenants deleted");
    for name in [SOURCE, "restore-corrupted", "restore-missing", "restore-newer"] {
        tenants(&client, "v2").delete(name, &DeleteParams::default()).await?;
    }
    store.stop();
    timeline.done("done");
    Ok(())
}
