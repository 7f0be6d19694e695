//! The tenant's Redis: password Secret, config, headless Service and StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, Secret, SecretKeySelector,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};

use super::{
    Platform, child_meta, component_labels, container_resources, restricted_container_security,
    restricted_pod_security, selector_labels,
};
use crate::model::TenantModel;

pub const PORT: i32 = 6379;
pub const APP: &str = "redis";
const COMPONENT: &str = "redis";
/// UID and GID of the `redis` user in the official Redis images.
const REDIS_USER: i64 = 999;
/// Key of the password in the Secret, read by the server and by the readiness probe.
pub const PASSWORD_KEY: &str = "password";
const AUTH_CONF_KEY: &str = "redis-auth.conf";
const CONFIG_KEY: &str = "redis.conf";
/// Pod template annotation that changes with redis.conf, so a config change rolls the pods.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "neurallog.io/config-checksum";
/// Share of the container memory limit Redis may use for data; the rest is headroom for
/// fragmentation, buffers and the fork during persistence, so Redis evicts before it is OOM-killed.
const MAXMEMORY_PERCENT: i128 = 80;

/// Name of the Redis Service and StatefulSet (the server's `REDIS_HOST`).
pub fn name(model: &TenantModel) -> String {
    format!("{}-redis", model.name)
}

/// Name of the Secret holding the generated Redis password of `tenant`.
pub fn secret_name(tenant: &str) -> String {
    format!("{tenant}-redis-auth")
}

fn config_map_name(model: &TenantModel) -> String {
    format!("{}-redis-config", model.name)
}

fn labels(model: &TenantModel) -> BTreeMap<String, String> {
    component_labels(&model.name, COMPONENT, APP)
}

/// A fresh random password: 32 alphanumeric characters (about 190 bits).
pub fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// Finalizer holding the password Secret while its tenant exists: deleted, it stays (terminating,
/// still readable by the pods) until the tenant is deleted.
pub const PASSWORD_FINALIZER: &str = "neurallog.io/redis-password";

/// The password Secret, created once with a generated `password`: immutable (the API server
/// refuses an edit) and held by [`PASSWORD_FINALIZER`].
pub fn secret(model: &TenantModel, password: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            finalizers: Some(vec![PASSWORD_FINALIZER.to_owned()]),
            ..child_meta(model, secret_name(&model.name), labels(model))
        },
        immutable: Some(true),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (PASSWORD_KEY.to_owned(), ByteString(password.as_bytes().to_vec())),
            (AUTH_CONF_KEY.to_owned(), ByteString(format!("requirepass {password}\n").into_bytes())),
        ])),
        ..Secret::default()
    }
}

/// Redis `maxmemory` in Redis units (`mb` is 2^20 bytes): 80 % of the container memory limit.
pub fn maxmemory(model: &TenantModel) -> String {
    let bytes = model.redis.resources.memory_limit.value().whole_units() * MAXMEMORY_PERCENT / 100;
    format!("{}mb", (bytes >> 20).max(1))
}

/// redis.conf: fixed directives the operator owns, then tunables (user values replace the
/// defaults in place), then other user directives in key order. Deterministic, so an unchanged
/// tenant never rewrites its ConfigMap or rolls its pods.
pub fn config(model: &TenantModel) -> String {
    let mut tunables: Vec<(String, String)> = vec![
        ("maxmemory".into(), maxmemory(model)),
        ("maxmemory-policy".into(), "allkeys-lru".into()),
        ("appendonly".into(), "yes".into()),
        ("appendfsync".into(), "everysec".into()),
        ("loglevel".into(), "notice".into()),
    ];
    for (key, value) in &model.redis.config {
        match tunables.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.clone(),
            None => tunables.push((key.clone(), value.clone())),
        }
    }
    let mut conf = String::from(
        "# Managed by the NeuralLog Tenant Operator: change spec.redis of the Tenant instead.\n\
         port 6379\n\
         bind 0.0.0.0\n\
         protected-mode yes\n\
         daemonize no\n\
         dir /data\n\
         logfile \"\"\n\
         include /etc/redis-auth/redis-auth.conf\n",
    );
    for (key, value) in tunables {
        conf.push_str(&format!("{key} {value}\n"));
    }
    conf
}

/// The ConfigMap holding redis.conf.
pub fn config_map(model: &TenantModel) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(model, config_map_name(model), labels(model)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config(model))])),
        ..ConfigMap::default()
    }
}

/// The headless Service giving the Redis pod a stable DNS name.
pub fn service(model: &TenantModel) -> Service {
    Service {
        metadata: child_meta(model, name(model), labels(model)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(&model.name, APP)),
            ports: Some(vec![ServicePort {
                name: Some("redis".to_owned()),
                port: PORT,
                target_port: Some(IntOrString::String("redis".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn checksum(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The StatefulSet running Redis as the non-root `redis` user with its config, password and a
/// persistent data volume.
pub fn stateful_set(model: &TenantModel, platform: &Platform) -> StatefulSet {
    let labels = labels(model);
    // A tenant created from a backup fetches it into the empty volume before Redis starts.
    let (init_containers, restore_volumes) = super::restore::init_containers(model, platform);
    let container = Container {
        name: "redis".to_owned(),
        image: Some(model.operand.images(&platform.release).redis),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec!["redis-server".to_owned(), format!("/etc/redis/{CONFIG_KEY}")]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".to_owned()),
            container_port: PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        // redis-cli reads REDISCLI_AUTH, so the probe authenticates without the password in argv.
        env: Some(vec![EnvVar {
            name: "REDISCLI_AUTH".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(&model.name),
                    key: PASSWORD_KEY.to_owned(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        resources: Some(container_resources(&model.redis.resources)),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::String("redis".to_owned()), ..Default::default() }),
            initial_delay_seconds: Some(15),
            period_seconds: Some(20),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["sh".to_owned(), "-c".to_owned(), "redis-cli ping | grep -q PONG".to_owned()]),
            }),
            initial_delay_seconds: Some(5),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount { name: "redis-data".to_owned(), mount_path: "/data".to_owned(), ..Default::default() },
            VolumeMount {
                name: "redis-config".to_owned(),
                mount_path: "/etc/redis".to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "redis-auth".to_owned(),
                mount_path: "/etc/redis-auth".to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    };
    StatefulSet {
        metadata: child_meta(model, name(model), labels.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(model.redis.replicas),
            service_name: Some(name(model)),
            selector: LabelSelector { match_labels: Some(selector_labels(&model.name, APP)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_CHECKSUM_ANNOTATION.to_owned(),
                        checksum(&config(model)),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security(REDIS_USER)),
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers: vec![container],
                    volumes: Some(
                        [
                            Volume {
                                name: "redis-config".to_owned(),
                                config_map: Some(ConfigMapVolumeSource {
                                    name: config_map_name(model),
                                    ..ConfigMapVolumeSource::default()
                                }),
                                ..Volume::default()
                            },
                            Volume {
                                name: "redis-auth".to_owned(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(secret_name(&model.name)),
                                    default_mode: Some(0o440),
                                    ..SecretVolumeSource::default()
                                }),
                                ..Volume::default()
                            },
                        ]
                        .into_iter()
                        .chain(restore_volumes)
                        .collect(),
                    ),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("redis-data".to_owned()),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".to_owned(), model.redis.storage.to_kube())])),
                        ..Default::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            // The data volume outlives the StatefulSet; only deleting the namespace removes it, so
            // a tenant with deletionPolicy Retain keeps its data.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".to_owned()),
                when_scaled: Some("Retain".to_owned()),
            }),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::fixtures::TestTenant;
    use crate::model::TenantModel;

    fn plain() -> TenantModel {
        TestTenant::new("acme").valid_model()
    }

    fn redis(memory_limit: &str, config: &[(&str, &str)]) -> TenantModel {
        let config: serde_json::Map<String, serde_json::Value> =
            config.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        TestTenant::new("a")
            .set(
                "redis",
                json!({"resources": {"memory": {"limit": memory_limit, "request": "64Mi"}}, "config": config}),
            )
            .valid_model()
    }

    #[test]
    fn maxmemory_is_eighty_percent_of_the_limit_in_redis_units() {
        assert_eq!(maxmemory(&plain()), "204mb");
        assert_eq!(maxmemory(&redis("1Gi", &[])), "819mb");
        assert_eq!(maxmemory(&redis("1G", &[])), "762mb");
    }

    #[test]
    fn config_requires_auth_and_is_deterministic_with_user_overrides_in_place() {
        let m = redis("256Mi", &[("timeout", "300"), ("maxmemory-policy", "noeviction"), ("hz", "20")]);
        let conf = config(&m);
        assert!(conf.contains("include /etc/redis-auth/redis-auth.conf\n"));
        assert!(conf.contains("protected-mode yes\n"));
        assert!(conf.contains("maxmemory-policy noeviction\n"));
        assert!(!conf.contains("allkeys-lru"));
        let hz = conf.find("hz 20").unwrap();
        let timeout = conf.find("timeout 300").unwrap();
        assert!(hz < timeout, "extra directives come in key order");
        assert_eq!(conf, config(&m.clone()));
    }

    #[test]
    fn the_password_lives_only_in_the_secret() {
        let m = plain();
        let s = secret(&m, "s3cret");
        let data = s.data.unwrap();
        assert_eq!(data[PASSWORD_KEY].0, b"s3cret");
        assert_eq!(data[AUTH_CONF_KEY].0, b"requirepass s3cret\n");
        assert!(!config(&m).contains("s3cret"));
        assert!(!serde_json::to_string(&stateful_set(&m, &Platform::default())).unwrap().contains("s3cret"));
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn a_config_change_changes_the_pod_template_checksum() {
        let sts = |m: TenantModel| {
            stateful_set(&m, &Platform::default()).spec.unwrap().template.metadata.unwrap().annotations.unwrap()
        };
        let before = sts(redis("256Mi", &[]));
        let after = sts(redis("256Mi", &[("timeout", "10")]));
        assert_ne!(before[CONFIG_CHECKSUM_ANNOTATION], after[CONFIG_CHECKSUM_ANNOTATION]);
        assert_eq!(before, sts(redis("256Mi", &[])));
    }

    #[test]
    fn stateful_set_runs_non_root_under_the_restricted_profile() {
        let sts = stateful_set(&plain(), &Platform::default());
        assert_eq!(sts.metadata.name.as_deref(), Some("acme-redis"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("tenant-acme"));
        assert_eq!(sts.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        let spec = sts.spec.unwrap();
        assert_eq!(spec.service_name.as_deref(), Some("acme-redis"));
        let pod = spec.template.spec.unwrap();
        let pod_sc = pod.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.run_as_user, Some(999));
        assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), vec!["ALL"]);
        let pvc = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(
            pvc.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "1Gi"
        );
    }

    #[test]
    fn service_is_headless_on_the_redis_port() {
        let svc = service(&plain()).spec.unwrap();
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        assert_eq!(svc.ports.unwrap()[0].port, 6379);
        assert_eq!(svc.selector.unwrap()["app"], "redis");
    }
}
