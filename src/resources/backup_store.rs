//! How a backup pod reaches the backup store: the command's arguments and environment for an
//! S3-compatible bucket or a volume claim, the volumes it needs, and the resources every such pod
//! gets. The backup Jobs and the restore's init containers in the Redis pod use it alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, ResourceRequirements, SecretKeySelector, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::backup::BackupLocation;
use crate::backup::store::{ACCESS_KEY_VARIABLE, DEFAULT_REGION, SECRET_KEY_VARIABLE};

/// Where a volume claim destination is mounted in backup pods.
pub(super) const CLAIM_MOUNT: &str = "/backup";

/// What a backup pod may use: it streams, so its memory does not grow with the data set.
pub(super) fn backup_resources() -> ResourceRequirements {
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into())), ("memory".to_owned(), Quantity(memory.into()))])
    };
    let defaults = crate::model::defaults::BACKUP_RESOURCES;
    ResourceRequirements {
        requests: Some(pair(defaults.cpu_request, defaults.memory_request)),
        limits: Some(pair(defaults.cpu_limit, defaults.memory_limit)),
        ..Default::default()
    }
}

/// The arguments and environment that name the store of `location`, and the volumes it needs.
pub(super) struct StoreAccess {
    pub(super) args: Vec<String>,
    pub(super) env: Vec<EnvVar>,
    pub(super) volumes: Vec<Volume>,
    pub(super) mounts: Vec<VolumeMount>,
}

pub(super) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                // The command says what is missing, quickly, instead of a pod that never starts.
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub(super) fn store_access(location: &BackupLocation) -> StoreAccess {
    if let Some(s3) = &location.s3 {
        let secret = &s3.credentials_secret;
        return StoreAccess {
            args: vec![
                "--s3-endpoint".into(),
                s3.endpoint.clone(),
                "--s3-bucket".into(),
                s3.bucket.clone(),
                "--s3-region".into(),
                s3.region.clone().unwrap_or_else(|| DEFAULT_REGION.to_owned()),
                "--key".into(),
                s3.key.clone(),
            ],
            env: vec![
                secret_env(ACCESS_KEY_VARIABLE, secret, ACCESS_KEY_VARIABLE),
                secret_env(SECRET_KEY_VARIABLE, secret, SECRET_KEY_VARIABLE),
            ],
            volumes: Vec::new(),
            mounts: Vec::new(),
        };
    }
    let claim = location.volume_claim.clone().unwrap_or_default();
    StoreAccess {
        args: vec!["--directory".into(), CLAIM_MOUNT.into(), "--key".into(), claim.path],
        env: Vec::new(),
        volumes: vec![Volume {
            name: "backups".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.claim_name,
                read_only: None,
            }),
            ..Volume::default()
        }],
        mounts: vec![VolumeMount { name: "backups".into(), mount_path: CLAIM_MOUNT.into(), ..Default::default() }],
    }
}

#[cfg(test)]
pub(super) mod tests {
    use clap::Parser;

    use super::*;
    use crate::api::backup::S3Location;
    use crate::cli::{Cli, Command};

    pub(in crate::resources) fn s3() -> BackupLocation {
        BackupLocation {
            s3: Some(S3Location {
                endpoint: "http://store.example:7070".into(),
                bucket: "logs".into(),
                region: None,
                key: "acme/acme-202612071005".into(),
                credentials_secret: "store".into(),
            }),
            volume_claim: None,
        }
    }

    /// The arguments a Job is built with are the ones the command takes (with what the pod's
    /// environment gives it).
    pub(in crate::resources) fn parses(args: &[String]) {
        let from_env = if args.get(1).is_some_and(|a| a == "take") {
            vec!["--redis-password".to_owned(), "x".to_owned()]
        } else {
            Vec::new()
        };
        let argv = std::iter::once("tenant-operator".to_owned()).chain(args.iter().cloned()).chain(from_env);
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|error| panic!("{args:?}: {error}"));
        assert!(matches!(cli.command, Command::Backup { .. }));
    }
}
