//! The Redis password Secret on a real API server: an edit is refused, a deletion is held while
//! the tenant exists, a Secret lost all the same is replaced with Redis and the server restarted
//! onto the new password, and the tenant's own deletion lets it go. The operator does not watch
//! Secrets (least privilege), so what happens to one is seen at the tenant's next reconcile:
//! the test brings that on by touching the tenant.

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::support::{Controllers, Harness, poll, wait_deleted, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

const FINALIZER: &str = "neurallog.io/redis-password";
const RESTARTED: &str = "neurallog.io/redis-password-changed-at";

fn password(secret: &Secret) -> Option<ByteString> {
    secret.data.as_ref()?.get("password").cloned()
}

fn restarted_at(template_annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<String> {
    template_annotations?.get(RESTARTED).cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_password_is_never_changed_or_lost_under_the_pods_that_use_it() {
    let h = Harness::start(Controllers::Deletion).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("pw").manifest()).await.unwrap();
    let secrets = h.namespaced::<Secret>("tenant-pw");
    let original = wait_for(&secrets, "pw-redis-auth", "is created", |_| true).await;
    assert_eq!(original.immutable, Some(true));
    assert!(original.finalizers().iter().any(|f| f == FINALIZER), "held by the operator");
    let stateful_sets = h.namespaced::<StatefulSet>("tenant-pw");
    wait_for(&stateful_sets, "pw-redis", "is created", |_| true).await;
    let deployments = h.namespaced::<Deployment>("tenant-pw");
    wait_for(&deployments, "pw-server", "is created", |_| true).await;

    // An edit is refused by the API server.
    let edit = json!({"data": {"password": "b3RoZXI="}});
    let refused = secrets.patch("pw-redis-auth", &PatchParams::default(), &Patch::Merge(&edit)).await;
    let kube::Error::Api(status) = refused.expect_err("an immutable Secret") else { panic!("an API error") };
    assert_eq!(status.code, 422);
    assert!(status.message.contains("immutable"), "{}", status.message);

    // A deletion is held: the pods can still read the same password, and the tenant says why.
    secrets.delete("pw-redis-auth", &DeleteParams::default()).await.unwrap();
    let mut touches = 0;
    let mut reconcile = async || {
        touches += 1;
        let touch = json!({"metadata": {"annotations": {"touched": touches.to_string()}}});
        h.tenants().patch("pw", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    };
    reconcile().await;
    let held = wait_for(&secrets, "pw-redis-auth", "is terminating", |s| s.metadata.deletion_timestamp.is_some()).await;
    assert_eq!(held.uid(), original.uid());
    assert_eq!(password(&held), password(&original));
    let events = Api::<Event>::namespaced(h.admin.clone(), "default");
    let tenant_uid = h.tenants().get("pw").await.unwrap().uid().unwrap();
    let reason_seen = async |reason: &str| {
        poll(&format!("a {reason} event about the tenant"), async || {
            let all = events.list(&ListParams::default()).await.unwrap().items;
            all.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(tenant_uid.as_str())
            })
        })
        .await
    };
    let note = reason_seen("PasswordHeld").await.note.unwrap_or_default();
    assert!(note.contains("pw-redis-auth") && note.contains("held"), "{note}");

    // Lost all the same (its finalizer removed by hand): a new password, and Redis and the server
    // restarted onto it; the registry, which does not use it, is left alone.
    let unhold = json!({"metadata": {"finalizers": null}});
    secrets.patch("pw-redis-auth", &PatchParams::default(), &Patch::Merge(&unhold)).await.unwrap();
    reconcile().await;
    let original_uid = original.uid().unwrap();
    let replaced =
        wait_for(&secrets, "pw-redis-auth", "is created anew", |s| s.uid().as_ref() != Some(&original_uid)).await;
    assert_ne!(password(&replaced), password(&original));
    let redis = wait_for(&stateful_sets, "pw-redis", "restarts", |s| {
        restarted_at(s.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.annotations.as_ref())).is_some()
    })
    .await;
    wait_for(&deployments, "pw-server", "restarts", |d| {
        restarted_at(d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.annotations.as_ref())).is_some()
    })
    .await;
    let registry = deployments.get("pw-registry").await.unwrap();
    let registry_template = registry.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.annotations.as_ref());
    assert!(restarted_at(registry_template).is_none());
    reason_seen("PasswordReplaced").await;

    // A Secret made before it was held (0.1.0's, or unheld by hand) is held again, its password
    // unchanged; and the operator's next applies keep the restart annotation it does not own.
    secrets.patch("pw-redis-auth", &PatchParams::default(), &Patch::Merge(&unhold)).await.unwrap();
    reconcile().await;
    let again =
        wait_for(&secrets, "pw-redis-auth", "is held again", |s| s.finalizers().iter().any(|f| f == FINALIZER)).await;
    assert_eq!((again.uid(), password(&again)), (replaced.uid(), password(&replaced)));
    let scale = json!({"spec": {"server": {"replicas": 2}}});
    h.tenants().patch("pw", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    let scaled =
        wait_for(&deployments, "pw-server", "scales", |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(2)).await;
    let template = scaled.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.annotations.as_ref());
    assert!(restarted_at(template).is_some(), "the restart annotation stays");
    let redis_now = stateful_sets.get("pw-redis").await.unwrap();
    let template = |s: &StatefulSet| restarted_at(s.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref());
    assert_eq!(template(&redis_now), template(&redis));

    // The tenant's deletion lets the Secret go: the namespace is deleted completely.
    let namespace = Api::<Namespace>::all(h.admin.clone()).get("tenant-pw").await.unwrap();
    h.tenants().delete("pw", &DeleteParams::default()).await.unwrap();
    wait_deleted(&Api::<Namespace>::all(h.admin.clone()), "tenant-pw", &namespace.uid().unwrap()).await;
}
