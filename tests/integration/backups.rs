//! Backups and restores on a real API server, as far as they go without a kubelet (the real node's
//! end-to-end test runs them for real): a TenantBackup becomes a Job of the tenant's namespace run
//! from the operator's image, with the store's Secret referenced and never read; one for a tenant
//! without a destination fails saying so; a restore from a backup that does not exist fails the
//! tenant naming it, with nothing of its workloads created; the API refuses what cannot be done.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use neurallog_tenant_operator::api::backup::{BackupPhase, TenantBackup};
use neurallog_tenant_operator::controller::Settings;
use neurallog_tenant_operator::resources::Platform;
use serde_json::{Value, json};

use crate::support::{Controllers, Harness, condition, phase, wait_for};

const IMAGE: &str = "registry.invalid/neurallog/tenant-operator@sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn v2(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "neurallog.io/v2", "kind": "Tenant", "metadata": {"name": name}, "spec": spec})
}

fn destination() -> Value {
    json!({"s3": {"endpoint": "http://store.example:7070", "bucket": "logs", "credentialsSecret": "store"}})
}

fn backup(name: &str, tenant: &str) -> TenantBackup {
    serde_json::from_value(json!({
        "apiVersion": "neurallog.io/v1", "kind": "TenantBackup", "metadata": {"name": name}, "spec": {"tenant": tenant},
    }))
    .expect("a TenantBackup")
}

/// Creates a `v2` tenant, as `kubectl create` would.
async fn create(h: &Harness, name: &str, spec: Value) -> kube::Result<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", "v2", "Tenant"));
    let object: DynamicObject = serde_json::from_value(v2(name, spec)).expect("an object");
    Api::<DynamicObject>::all_with(h.admin.clone(), &resource).create(&PostParams::default(), &object).await
}

fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_a_job_of_the_tenant_namespace_and_a_restore_from_nothing_fails_naming_it() {
    let h = Harness::start(Controllers::None).await;
    let settings = Settings {
        concurrency: 4,
        platform: Platform { operator_image: IMAGE.to_owned(), ..Platform::default() },
        ..Settings::default()
    };
    let _operator = h.start_operator_with(settings).await;
    create(&h, "source", json!({"backup": {"destination": destination()}})).await.expect("created");
    create(&h, "plain", json!({})).await.expect("created");
    let backups = Api::<TenantBackup>::all(h.admin.clone());
    backups.create(&PostParams::default(), &backup("source-now", "source")).await.expect("created");
    backups.create(&PostParams::default(), &backup("plain-now", "plain")).await.expect("created");

    let running = wait_for(&backups, "source-now", "its Job started", |b| {
        b.status.as_ref().is_some_and(|s| s.phase == Some(BackupPhase::Running))
    })
    .await;
    let status = running.status.expect("a status");
    assert_eq!(status.job.as_deref(), Some("source-now"));
    assert_eq!(status.location.and_then(|l| l.s3).map(|s3| s3.key), Some("source/source-now".to_owned()));
    assert!(running.metadata.finalizers.unwrap_or_default().iter().any(|f| f == "neurallog.io/backup-objects"));

    let job = h.namespaced::<Job>("tenant-source").get("source-now").await.expect("the Job");
    let owner = job.metadata.owner_references.clone().unwrap_or_default();
    assert!(owner.iter().any(|o| o.kind == "TenantBackup" && o.name == "source-now" && o.controller == Some(true)));
    let pod = job.spec.expect("spec").template.spec.expect("pod");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(IMAGE));
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(&args[..2], ["backup", "take"]);
    for env in container.env.iter().flatten() {
        assert!(env.value.is_none(), "{} comes from a Secret, never inline", env.name);
    }

    let failed = wait_for(&backups, "plain-now", "it failed", |b| {
        b.status.as_ref().is_some_and(|s| s.phase == Some(BackupPhase::Failed))
    })
    .await;
    let message = failed.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("tenant plain has no spec.backup.destination"), "{message}");

    create(&h, "restored", json!({"restoreFrom": {"backup": "nowhere"}})).await.expect("created");
    let tenant =
        wait_for(&h.tenants(), "restored", "its restore failed", |t| phase(t).as_deref() == Some("Failed")).await;
    let ready = condition(&tenant, "Ready").expect("Ready");
    assert_eq!(ready.reason, "RestoreFailed");
    assert!(ready.message.contains("TenantBackup nowhere does not exist"), "{}", ready.message);
    let redis = h.namespaced::<StatefulSet>("tenant-restored").list(&ListParams::default()).await.expect("listed");
    let workloads = h.namespaced::<Deployment>("tenant-restored").list(&ListParams::default()).await.expect("listed");
    assert!(redis.items.is_empty() && workloads.items.is_empty(), "nothing of the tenant's workloads is created");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_settings_the_operator_cannot_honour_are_refused_naming_the_field() {
    let h = Harness::start(Controllers::None).await;
    let both = json!({"s3": destination()["s3"], "volumeClaim": {"claimName": "c"}});
    let cases = [
        (json!({"backup": {"destination": both}}), "spec.backup.destination"),
        (json!({"backup": {"destination": destination(), "keep": 0}}), "spec.backup.keep"),
        (json!({"backup": {"destination": destination(), "schedule": "every minute"}}), "spec.backup.schedule"),
        (
            json!({"backup": {"destination": {"s3": {"endpoint": "ftp://x", "bucket": "logs", "credentialsSecret": "s"}}}}),
            "spec.backup.destination.s3.endpoint",
        ),
        (json!({"restoreFrom": {}}), "spec.restoreFrom"),
    ];
    for (index, (spec, field)) in cases.into_iter().enumerate() {
        let message = refusal(create(&h, &format!("t{index}"), spec).await);
        assert!(message.contains(field), "{field}: {message}");
    }

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("neurallog.io", "v2", "Tenant"));
    let tenants = Api::<DynamicObject>::all_with(h.admin.clone(), &resource);
    create(&h, "later", json!({})).await.expect("created");
    let patch = json!({"spec": {"restoreFrom": {"backup": "b"}}});
    let message = refusal(tenants.patch("later", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert!(message.contains("spec.restoreFrom") && message.contains("only when a tenant is created"), "{message}");

    let backups = Api::<TenantBackup>::all(h.admin.clone());
    backups.create(&PostParams::default(), &backup("b1", "later")).await.expect("created");
    let patch = json!({"spec": {"tenant": "other"}});
    let message = refusal(backups.patch("b1", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert!(message.contains("spec is immutable"), "{message}");
}
