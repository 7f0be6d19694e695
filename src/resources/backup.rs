//! The backup side of a tenant: the Job taking a backup and the Job deleting one from the store
//! (the restore's init containers are in `restore`, the store access both use in `backup_store`).
//! Every pod runs the operator's own image (`tenant-operator backup …`), so a mirror carries no
//! other image for it, under the Pod Security `restricted` profile and the tenant's budget.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};

use super::backup_store::{backup_resources, secret_env, store_access};
use super::{Platform, component_labels, redis, restricted_container_security, restricted_pod_security};
use crate::api::backup::BackupLocation;
use crate::model::TenantModel;

/// The `app` label of backup pods (their network rules select it).
pub const APP: &str = "backup";
/// Label naming the TenantBackup a Job works for (its Job name: at most 63 characters).
pub const BACKUP_LABEL: &str = "neurallog.io/backup";
/// UID of the operator's image (distroless nonroot).
const OPERATOR_USER: i64 = 65532;
/// Where a backup is staged before it is written.
const WORK_MOUNT: &str = "/work";
/// A backup Job gives up after this long.
const DEADLINE_SECONDS: i64 = 3600;
/// A finished Job (and its pod) goes after this long; its outcome is on the TenantBackup by then.
const FINISHED_TTL_SECONDS: i32 = 3600;

/// A name of at most 63 characters (a Job's, which its pods carry as a label): `name` with
/// `suffix`, shortened and made unique by a hash when too long.
pub fn job_name(name: &str, suffix: &str) -> String {
    let full = format!("{name}{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash: String = Sha256::digest(full.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = 63 - suffix.len() - hash.len() - 1;
    let stem: String = name.chars().take(keep).collect();
    format!("{}-{hash}{suffix}", stem.trim_end_matches('-'))
}

/// What the backup or deletion Job of a TenantBackup is.
pub struct BackupJob<'a> {
    /// The tenant, and its namespace the Job runs in.
    pub tenant: &'a str,
    pub namespace: &'a str,
    /// The TenantBackup's name.
    pub backup: &'a str,
    /// Controller reference to the TenantBackup.
    pub owner: OwnerReference,
    pub location: &'a BackupLocation,
    /// The NeuralLog version the tenant runs, recorded with the backup.
    pub neurallog_version: String,
}

fn job(platform: &Platform, name: String, backup: &BackupJob<'_>, container: Container, volumes: Vec<Volume>) -> Job {
    let mut labels = component_labels(backup.tenant, APP, APP);
    labels.insert(BACKUP_LABEL.to_owned(), job_name(backup.backup, ""));
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(backup.namespace.to_owned()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![backup.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // One retry for a passing fault; the second failure is the backup's.
            backoff_limit: Some(1),
            active_deadline_seconds: Some(DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(FINISHED_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security(OPERATOR_USER)),
                    containers: vec![Container {
                        image: Some(platform.operator_image.clone()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        resources: Some(backup_resources()),
                        security_context: Some(restricted_container_security()),
                        ..container
                    }],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// The Job taking a backup: a snapshot of the tenant's Redis over the network, written to the
/// store with its metadata.
pub fn backup_job(model: &TenantModel, platform: &Platform, backup: &BackupJob<'_>) -> Job {
    let store = store_access(backup.location);
    let mut args: Vec<String> = [
        "backup",
        "take",
        "--tenant",
        &model.name,
        "--backup",
        backup.backup,
        "--neurallog-version",
        &backup.neurallog_version,
        "--redis",
        &format!("{}:{}", redis::name(model), redis::PORT),
        "--work-dir",
        WORK_MOUNT,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(store.args);
    let mut env = vec![secret_env("REDIS_PASSWORD", &redis::secret_name(&model.name), redis::PASSWORD_KEY)];
    env.extend(store.env);
    let mut mounts = vec![VolumeMount { name: "work".into(), mount_path: WORK_MOUNT.into(), ..Default::default() }];
    mounts.extend(store.mounts);
    let mut volumes = vec![Volume {
        name: "work".into(),
        // The snapshot is at most the Redis volume's size.
        empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(model.redis.storage.to_kube()), ..Default::default() }),
        ..Volume::default()
    }];
    volumes.extend(store.volumes);
    let container = Container {
        name: "backup".into(),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    job(platform, job_name(backup.backup, ""), backup, container, volumes)
}

/// The Job deleting a backup's objects from the store (in the namespace of a tenant that may be
/// gone, when its namespace was retained).
pub fn deletion_job(platform: &Platform, backup: &BackupJob<'_>) -> Job {
    let store = store_access(backup.location);
    let mut args = vec!["backup".to_owned(), "delete".to_owned()];
    args.extend(store.args);
    let container = Container {
        name: "delete".into(),
        args: Some(args),
        env: Some(store.env),
        volume_mounts: Some(store.mounts),
        ..Container::default()
    };
    job(platform, job_name(backup.backup, "-delete"), backup, container, store.volumes)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::api::backup::VolumeClaimLocation;
    use crate::backup::store::{ACCESS_KEY_VARIABLE, SECRET_KEY_VARIABLE};
    use crate::fixtures::TestTenant;
    use crate::resources::backup_store::CLAIM_MOUNT;
    use crate::resources::backup_store::tests::{parses, s3};

    fn backup_job_of(location: &BackupLocation) -> Job {
        let model = TestTenant::new("acme").valid_model();
        let job = BackupJob {
            tenant: "acme",
            namespace: "tenant-acme",
            backup: "acme-202612071005",
            owner: OwnerReference::default(),
            location,
            neurallog_version: "1.0.0".into(),
        };
        backup_job(&model, &Platform::default(), &job)
    }

    fn container(job: &Job) -> Container {
        job.spec.clone().unwrap().template.spec.unwrap().containers.remove(0)
    }

    #[test]
    fn job_names_fit_a_label_and_stay_unique_when_shortened() {
        assert_eq!(job_name("acme-202612071005", ""), "acme-202612071005");
        let long = "a".repeat(70);
        let (one, two) = (job_name(&long, "-delete"), job_name(&format!("{long}b"), "-delete"));
        assert!(one.len() <= 63 && one.ends_with("-delete"), "{one}");
        assert_ne!(one, two);
    }

    #[test]
    fn the_backup_job_runs_the_take_command_with_the_passwords_from_secrets() {
        let job = backup_job_of(&s3());
        let container = container(&job);
        parses(container.args.as_ref().unwrap());
        let env = container.env.unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["REDIS_PASSWORD", ACCESS_KEY_VARIABLE, SECRET_KEY_VARIABLE]);
        assert!(env.iter().all(|e| e.value.is_none()), "no secret in the pod spec");
        let spec = job.spec.unwrap();
        assert_eq!(spec.template.spec.unwrap().restart_policy.as_deref(), Some("Never"));
        assert_eq!(job.metadata.labels.unwrap()[BACKUP_LABEL], "acme-202612071005");
        assert_eq!(container.resources.unwrap().limits.unwrap()["memory"], Quantity("128Mi".into()));
    }

    #[test]
    fn a_volume_claim_destination_is_mounted_and_named_by_path() {
        let claim = BackupLocation {
            s3: None,
            volume_claim: Some(VolumeClaimLocation { claim_name: "backups".into(), path: "acme/b".into() }),
        };
        let job = backup_job_of(&claim);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert!(
            pod.volumes
                .unwrap()
                .iter()
                .any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == "backups"))
        );
        let args = pod.containers[0].args.clone().unwrap();
        parses(&args);
        assert!(args.windows(2).any(|w| w == ["--directory", CLAIM_MOUNT]));
    }

    #[test]
    fn the_deletion_job_runs_the_delete_command() {
        let location = s3();
        let backup = BackupJob {
            tenant: "acme",
            namespace: "tenant-acme",
            backup: "b",
            owner: OwnerReference::default(),
            location: &location,
            neurallog_version: String::new(),
        };
        let job = deletion_job(&Platform::default(), &backup);
        assert_eq!(job.metadata.name.as_deref(), Some("b-delete"));
        parses(container(&job).args.as_ref().unwrap());
    }
}
