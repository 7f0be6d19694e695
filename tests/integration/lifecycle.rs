//! A tenant's life on a real API server: creation, spec changes, drift repair, readiness,
//! deletion, and a foreign namespace.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::{Controllers, Harness, phase, poll, wait_deleted, wait_for};
use neurallog_tenant_operator::fixtures::TestTenant;

fn owned_by_tenant<K: Resource>(object: &K, tenant: &str) -> bool {
    object
        .meta()
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.kind == "Tenant" && r.name == tenant && r.controller == Some(true)))
}

fn server_container(d: &Deployment) -> k8s_openapi::api::core::v1::Container {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].clone()
}

fn env_value(d: &Deployment, name: &str) -> Option<String> {
    server_container(d).env.unwrap_or_default().into_iter().find(|e| e.name == name).and_then(|e| e.value)
}

#[tokio::test(flavor = "multi_thread")]
async fn create_provisions_every_child_with_the_expected_shape() {
    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    h.create_tenant(
        TestTenant::new("acme")
            .spec(json!({"server": {"replicas": 2, "env": [{"name": "LOG_LEVEL", "value": "debug"}]}}))
            .manifest(),
    )
    .await
    .unwrap();

    let status =
        wait_for(&h.tenants(), "acme", "reports Provisioning", |t| phase(t).as_deref() == Some("Provisioning")).await;
    let status = status.status.unwrap();
    assert_eq!(status.namespace.as_deref(), Some("tenant-acme"));
    assert_eq!(status.observed_generation, Some(1));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Ready", "NamespaceReady", "RedisReady", "ServerReady", "RegistryReady", "AuthRegistered", "Upgrading"]
    );
    assert_eq!(status.server_status.unwrap().total_replicas, 2);

    let tenant_obj = h.tenants().get("acme").await.unwrap();
    assert!(tenant_obj.finalizers().contains(&"neurallog.io/finalizer".to_owned()));

    let ns = Api::<Namespace>::all(h.admin.clone()).get("tenant-acme").await.unwrap();
    let labels = ns.labels();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["neurallog.io/tenant"], "acme");
    assert_eq!(ns.annotations()["neurallog.io/tenant-uid"], tenant_obj.uid().unwrap());

    let secret = h.namespaced::<Secret>("tenant-acme").get("acme-redis-auth").await.unwrap();
    let password = &secret.data.as_ref().unwrap()["password"].0;
    assert_eq!(password.len(), 32);
    assert!(owned_by_tenant(&secret, "acme"));

    let config = h.namespaced::<ConfigMap>("tenant-acme").get("acme-redis-config").await.unwrap();
    let conf = &config.data.as_ref().unwrap()["redis.conf"];
    assert!(conf.contains("include /etc/redis-auth/redis-auth.conf"));
    assert!(conf.contains("maxmemory 204mb"));
    assert!(!conf.contains(std::str::from_utf8(password).unwrap()), "the password stays out of the ConfigMap");

    let redis_svc = h.namespaced::<Service>("tenant-acme").get("acme-redis").await.unwrap();
    assert_eq!(redis_svc.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
    let server_svc = h.namespaced::<Service>("tenant-acme").get("acme-server").await.unwrap();
    assert_eq!(server_svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 3030);

    let sts = h.namespaced::<StatefulSet>("tenant-acme").get("acme-redis").await.unwrap();
    assert!(owned_by_tenant(&sts, "acme"));
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));

    let deployment = h.namespaced::<Deployment>("tenant-acme").get("acme-server").await.unwrap();
    assert!(owned_by_tenant(&deployment, "acme"));
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(env_value(&deployment, "STORAGE_TYPE").as_deref(), Some("redis"));
    assert_eq!(env_value(&deployment, "REDIS_HOST").as_deref(), Some("acme-redis"));
    assert_eq!(env_value(&deployment, "LOG_LEVEL").as_deref(), Some("debug"));
    assert_eq!(server_container(&deployment).readiness_probe.unwrap().http_get.unwrap().path.as_deref(), Some("/"));
    for object in [deployment.meta(), sts.meta(), config.meta(), redis_svc.meta(), server_svc.meta(), secret.meta()] {
        let managers: Vec<_> = object.managed_fields.iter().flatten().filter_map(|m| m.manager.as_deref()).collect();
        assert_eq!(managers, ["neurallog-tenant-operator"], "{:?} has one field manager", object.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_changes_propagate_to_the_children() {
    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("beta").manifest()).await.unwrap();
    let deployments = h.namespaced::<Deployment>("tenant-beta");
    let statefulsets = h.namespaced::<StatefulSet>("tenant-beta");
    wait_for(&deployments, "beta-server", "is created", |_| true).await;
    let checksum = |s: &StatefulSet| {
        s.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["neurallog.io/config-checksum"].clone()
    };
    let before = checksum(&wait_for(&statefulsets, "beta-redis", "is created", |_| true).await);

    let patch = json!({"spec": {
        "server": {"replicas": 3, "image": "example.org/neurallog/server:2.0", "env": [{"name": "FEATURE_X", "value": "on"}]},
        "redis": {"config": {"timeout": "120"}, "resources": {"memory": {"limit": "1Gi"}}}
    }});
    h.tenants().patch("beta", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

    wait_for(&deployments, "beta-server", "follows the new spec", |d| {
        d.spec.as_ref().unwrap().replicas == Some(3)
            && server_container(d).image.as_deref() == Some("example.org/neurallog/server:2.0")
            && env_value(d, "FEATURE_X").as_deref() == Some("on")
    })
    .await;
    let config =
        wait_for(&h.namespaced::<ConfigMap>("tenant-beta"), "beta-redis-config", "has the new directives", |c| {
            let conf = &c.data.as_ref().unwrap()["redis.conf"];
            conf.contains("timeout 120") && conf.contains("maxmemory 819mb")
        })
        .await;
    assert!(!config.data.unwrap()["redis.conf"].contains("requirepass"), "the password lives in the Secret only");
    let after = wait_for(&statefulsets, "beta-redis", "rolls on the config change", |s| checksum(s) != before).await;
    let limits = after.spec.unwrap().template.spec.unwrap().containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["memory"].0, "1Gi");
    wait_for(&h.tenants(), "beta", "observes generation 2", |t| {
        t.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;

    // What the spec no longer asks for goes: the variable, and the image back to the default.
    let removal = json!({"spec": {"server": {"image": null, "env": null}}});
    h.tenants().patch("beta", &PatchParams::default(), &Patch::Merge(&removal)).await.unwrap();
    wait_for(&deployments, "beta-server", "no longer has the removed variable and image", |d| {
        env_value(d, "FEATURE_X").is_none()
            && server_container(d).image.as_deref() != Some("example.org/neurallog/server:2.0")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_deployment_and_a_hand_edited_replica_count_are_repaired() {
    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("gamma").spec(json!({"server": {"replicas": 2}})).manifest()).await.unwrap();
    let deployments = h.namespaced::<Deployment>("tenant-gamma");
    let original = wait_for(&deployments, "gamma-server", "is created", |_| true).await;

    deployments.delete("gamma-server", &DeleteParams::default()).await.unwrap();
    let recreated = wait_for(&deployments, "gamma-server", "is re-created", |d| d.uid() != original.uid()).await;
    assert_eq!(recreated.spec.unwrap().replicas, Some(2));

    let edit = json!({"spec": {"replicas": 7}});
    deployments.patch("gamma-server", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    wait_for(&deployments, "gamma-server", "is scaled back to 2", |d| d.spec.as_ref().unwrap().replicas == Some(2))
        .await;

    let services = h.namespaced::<Service>("tenant-gamma");
    let svc = wait_for(&services, "gamma-redis", "exists", |_| true).await;
    services.delete("gamma-redis", &DeleteParams::default()).await.unwrap();
    wait_for(&services, "gamma-redis", "is re-created", |s| s.uid() != svc.uid()).await;
}

/// The caches keep no bodies: a hand edit is seen in the managed fields, where another writer's
/// change or removal takes a field out of the operator's set.
#[tokio::test(flavor = "multi_thread")]
async fn hand_edits_of_any_child_are_reverted_and_additions_by_others_left_alone() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::RoleBinding;

    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("eta").manifest()).await.unwrap();
    wait_for(&h.tenants(), "eta", "is Provisioning", |t| phase(t).as_deref() == Some("Provisioning")).await;
    let ns = "tenant-eta";
    let (services, config_maps) = (h.namespaced::<Service>(ns), h.namespaced::<ConfigMap>(ns));
    let (policies, bindings) = (h.namespaced::<NetworkPolicy>(ns), h.namespaced::<RoleBinding>(ns));
    let deployments = h.namespaced::<Deployment>(ns);
    let edit = |manager: &'static str| PatchParams { field_manager: Some(manager.into()), ..Default::default() };

    // A label removed, a label added by someone else.
    let labels = json!({"metadata": {"labels": {"neurallog.io/component": null, "team": "blue"}}});
    services.patch("eta-redis", &edit("kubectl-label"), &Patch::Merge(&labels)).await.unwrap();
    // A value changed.
    let config = json!({"data": {"redis.conf": "# emptied by hand\n"}});
    config_maps.patch("eta-redis-config", &edit("kubectl-edit"), &Patch::Merge(&config)).await.unwrap();
    // A field removed inside a list item (a keyed list: the server's env) and one changed.
    let server = deployments.get("eta-server").await.unwrap();
    let mut container = server_container(&server);
    let env = container.env.get_or_insert_default();
    let removed = env.remove(0).name;
    container.image = Some("example.org/not-neurallog:1".into());
    let template = json!({"spec": {"template": {"spec": {"containers": [container]}}}});
    deployments.patch("eta-server", &edit("kubectl-edit"), &Patch::Strategic(&template)).await.unwrap();
    let env_removal = json!({"spec": {"template": {"spec": {"containers": [{"name": container.name,
        "env": [{"name": removed, "$patch": "delete"}]}]}}}});
    deployments.patch("eta-server", &edit("kubectl-edit"), &Patch::Strategic(&env_removal)).await.unwrap();
    // An atomic list replaced, and a spec field of a policy.
    let subjects = json!({"subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
    let binding = bindings.list(&ListParams::default()).await.unwrap().items.remove(0).name_any();
    bindings.patch(&binding, &edit("kubectl-edit"), &Patch::Merge(&subjects)).await.unwrap();
    let open = json!({"spec": {"podSelector": {"matchLabels": {"nothing": "selected"}}}});
    policies.patch("default-deny-ingress", &edit("kubectl-edit"), &Patch::Merge(&open)).await.unwrap();

    let service =
        wait_for(&services, "eta-redis", "has its label back", |s| s.labels().get("neurallog.io/component").is_some())
            .await;
    assert_eq!(service.labels().get("team").map(String::as_str), Some("blue"), "another writer's label stays");
    wait_for(&config_maps, "eta-redis-config", "has its configuration back", |c| {
        c.data.as_ref().is_some_and(|data| data.get("redis.conf").is_some_and(|conf| conf.contains("maxmemory")))
    })
    .await;
    wait_for(&deployments, "eta-server", "has its image and environment back", |d| {
        let container = server_container(d);
        container.image.as_deref() != Some("example.org/not-neurallog:1") && env_value(d, &removed).is_some()
    })
    .await;
    wait_for(&bindings, &binding, "names the operator again", |b| {
        b.subjects.iter().flatten().all(|subject| subject.name != "mallory")
    })
    .await;
    wait_for(&policies, "default-deny-ingress", "selects every pod again", |p| {
        p.spec.as_ref().and_then(|spec| spec.pod_selector.as_ref()).is_some_and(|s| s.match_labels.is_none())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_moves_the_phase_through_provisioning_degraded_running() {
    let h = Harness::start(Controllers::None).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("delta").spec(json!({"server": {"replicas": 2}})).manifest()).await.unwrap();
    wait_for(&h.tenants(), "delta", "is Provisioning", |t| phase(t).as_deref() == Some("Provisioning")).await;

    // No kubelet runs here: readiness is written to the status subresource, as controllers would.
    let set_ready = |kind: &'static str, name: &'static str, replicas: i32, ready: i32| {
        let admin = h.admin.clone();
        async move {
            let status = json!({"status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready}});
            let params = PatchParams::default();
            match kind {
                "sts" => drop(
                    Api::<StatefulSet>::namespaced(admin, "tenant-delta")
                        .patch_status(name, &params, &Patch::Merge(&status))
                        .await
                        .unwrap(),
                ),
                _ => drop(
                    Api::<Deployment>::namespaced(admin, "tenant-delta")
                        .patch_status(name, &params, &Patch::Merge(&status))
                        .await
                        .unwrap(),
                ),
            }
        }
    };
    set_ready("sts", "delta-redis", 1, 1).await;
    set_ready("deploy", "delta-registry", 1, 1).await;
    set_ready("deploy", "delta-server", 2, 1).await;
    let degraded = wait_for(&h.tenants(), "delta", "is Degraded", |t| phase(t).as_deref() == Some("Degraded")).await;
    let server = degraded.status.as_ref().unwrap().server_status.clone().unwrap();
    assert_eq!((server.ready_replicas, server.total_replicas), (1, 2));

    set_ready("deploy", "delta-server", 2, 2).await;
    let running = wait_for(&h.tenants(), "delta", "is Running", |t| phase(t).as_deref() == Some("Running")).await;
    let ready = running.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AllComponentsReady"));

    set_ready("sts", "delta-redis", 1, 0).await;
    wait_for(&h.tenants(), "delta", "is Degraded again", |t| phase(t).as_deref() == Some("Degraded")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_removes_the_namespace_then_releases_the_finalizer() {
    let h = Harness::start(Controllers::Deletion).await;
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("epsilon").manifest()).await.unwrap();
    wait_for(&h.namespaced::<Deployment>("tenant-epsilon"), "epsilon-server", "is created", |_| true).await;
    let created = h.tenants().get("epsilon").await.unwrap();

    h.tenants().delete("epsilon", &DeleteParams::default()).await.unwrap();
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    let ns = namespaces.get("tenant-epsilon").await.unwrap();
    wait_deleted(&h.tenants(), "epsilon", &created.uid().unwrap()).await;
    // The finalizer is released only after the namespace is gone.
    assert!(namespaces.get_opt("tenant-epsilon").await.unwrap().is_none_or(|n| n.uid() != ns.uid()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_namespace_is_left_untouched_and_reported() {
    let h = Harness::start(Controllers::None).await;
    let namespaces = Api::<Namespace>::all(h.admin.clone());
    let foreign = Namespace {
        metadata: ObjectMeta {
            name: Some("tenant-zeta".into()),
            labels: Some([("owner".to_owned(), "someone-else".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let before = namespaces.create(&PostParams::default(), &foreign).await.unwrap();
    let _operator = h.start_operator().await;
    h.create_tenant(TestTenant::new("zeta").manifest()).await.unwrap();

    let failed = wait_for(&h.tenants(), "zeta", "is Failed", |t| phase(t).as_deref() == Some("Failed")).await;
    let condition = failed.status.unwrap().conditions.into_iter().find(|c| c.type_ == "NamespaceReady").unwrap();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "NamespaceConflict"));
    assert!(condition.message.contains("tenant-zeta"));

    // The Event follows the status write that made the tenant Failed.
    poll("a Warning event explains the conflict", async || {
        let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap();
        events
            .items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("zeta")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains("tenant-zeta"))
            })
            .then_some(())
    })
    .await;

    let after = namespaces.get("tenant-zeta").await.unwrap();
    assert_eq!(after.labels(), before.labels());
    assert_eq!(after.annotations(), before.annotations());
    assert_eq!(after.resource_version(), before.resource_version(), "not modified at all");
    assert!(h.namespaced::<ConfigMap>("tenant-zeta").list(&ListParams::default()).await.unwrap().items.is_empty());

    let uid = failed.metadata.uid.clone().unwrap();
    h.tenants().delete("zeta", &DeleteParams::default()).await.unwrap();
    wait_deleted(&h.tenants(), "zeta", &uid).await;
    let kept = namespaces.get("tenant-zeta").await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none(), "deleting the tenant leaves the foreign namespace alone");
    let events = Api::<Event>::all(h.admin.clone()).list(&ListParams::default()).await.unwrap();
    let failed_requests: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ApiRequestFailed"))
        .map(|e| e.note.clone())
        .collect();
    assert!(failed_requests.is_empty(), "deletion needs no retry: {failed_requests:?}");
}
