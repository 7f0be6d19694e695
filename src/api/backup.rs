//! `neurallog.io/v1` `TenantBackup`: one backup of a tenant's Redis, and where it is kept; and the
//! backup settings a `v2` Tenant states (`spec.backup`, `spec.restoreFrom`).
//!
//! A TenantBackup is cluster-scoped, like the Tenant, so that it outlives a tenant deleted with
//! its namespace: a new tenant restores from it. Deleting one deletes its objects in the store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SUBDOMAIN_PATTERN;

/// The CRD's name.
pub const CRD_NAME: &str = "tenantbackups.neurallog.io";
/// A tenant's name, as the Tenant's own rules allow it.
const TENANT_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// An `http://` or `https://` URL of a host (and port), nothing after it.
pub const ENDPOINT_PATTERN: &str = r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?/?$";
/// An S3 bucket name (lowercase letters, digits, dots and hyphens; 3 to 63 characters).
const BUCKET_PATTERN: &str = r"^[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]$";
/// A key prefix: path segments of safe characters, no `..`, no leading or trailing `/`.
const PREFIX_PATTERN: &str = r"^[A-Za-z0-9_][-A-Za-z0-9_.]*(/[A-Za-z0-9_][-A-Za-z0-9_.]*)*$";
/// Five cron fields (minute hour day-of-month month day-of-week); each field is checked when the
/// operator parses it.
const SCHEDULE_PATTERN: &str = r"^\S+\s+\S+\s+\S+\s+\S+\s+\S+$";

/// A backup of one tenant's Redis: a consistent snapshot taken over the network with the tenant's
/// password, written to the tenant's `spec.backup.destination` with a checksum and what a restore
/// needs to know. Create one for a backup now; the tenant's `spec.backup.schedule` creates them
/// on its own. Deleting it deletes its objects in the store.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "neurallog.io",
    version = "v1",
    kind = "TenantBackup",
    plural = "tenantbackups",
    singular = "tenantbackup",
    shortname = "nltb",
    category = "neurallog",
    status = "TenantBackupStatus",
    derive = "PartialEq",
    doc = "A backup of a NeuralLog tenant's logs (its Redis), kept in an S3-compatible bucket or a volume claim; a new tenant restores from it with spec.restoreFrom.",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant", description = "The tenant backed up"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Backup phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes", description = "Bytes of the snapshot"),
    printcolumn(name = "Completed", type_ = "date", json_path = ".status.completionTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec == oldSelf.spec").message("spec is immutable: create another TenantBackup").field_path(".spec")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantBackupSpec {
    /// Name of the Tenant to back up. Its `spec.backup.destination` says where the backup goes.
    #[schemars(regex(pattern = TENANT_NAME_PATTERN), length(min = 1, max = 46))]
    pub tenant: String,
}

/// Observed state of a backup, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantBackupStatus {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// `Succeeded` (True once the backup is complete and verified, False once it failed, with why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Job taking the backup, in the tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The UID of the Tenant backed up: a tenant created later under the same name is another one,
    /// whose status and retention leave this backup alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_uid: Option<String>,
    /// Where the backup is kept: a restore reads it from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<BackupLocation>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the backup was complete (or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Bytes of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// SHA-256 of the snapshot, hex; a restore refuses a snapshot that does not match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The NeuralLog version the tenant ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurallog_version: Option<String>,
    /// The version of the Redis that wrote the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_version: Option<String>,
    /// The snapshot's RDB format version: a Redis restores it only if it reads that format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdb_version: Option<i32>,
    /// Why it failed, or what it is waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Phase of a backup.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupPhase {
    /// Accepted; its Job is not running yet.
    Pending,
    /// Its Job is taking the snapshot and writing it.
    Running,
    /// Complete, with its checksum, in the store.
    Succeeded,
    /// Failed; `message` says why. Nothing of it is left in the store.
    Failed,
}

/// Where a backup is kept: exactly one of an S3 object prefix or a path in a volume claim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.volumeClaim)").message("a location must set exactly one of s3 or volumeClaim"))]
#[serde(rename_all = "camelCase")]
pub struct BackupLocation {
    /// In an S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    /// In a PersistentVolumeClaim of the tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<VolumeClaimLocation>,
}

impl BackupLocation {
    /// How messages name it.
    pub fn describe(&self) -> String {
        match (&self.s3, &self.volume_claim) {
            (Some(s3), _) => format!("s3://{}/{} at {}", s3.bucket, s3.key, s3.endpoint),
            (None, Some(claim)) => format!("{} in volume claim {}", claim.path, claim.claim_name),
            (None, None) => String::new(),
        }
    }
}

/// A backup in an S3-compatible bucket: the objects `<key>/dump.rdb` and `<key>/metadata.json`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// The store's URL, `http(s)://host[:port]` (path-style requests).
    #[schemars(regex(pattern = ENDPOINT_PATTERN), length(min = 1, max = 512))]
    pub endpoint: String,
    /// The bucket.
    #[schemars(regex(pattern = BUCKET_PATTERN), length(min = 3, max = 63))]
    pub bucket: String,
    /// Region the requests are signed for. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 63))]
    pub region: Option<String>,
    /// The backup's key prefix in the bucket.
    #[schemars(regex(pattern = PREFIX_PATTERN), length(min = 1, max = 900))]
    pub key: String,
    /// Secret in the tenant's namespace with the store's `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`. Only the backup and restore pods read it.
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub credentials_secret: String,
}

/// A backup in a PersistentVolumeClaim: the files `<path>/dump.rdb` and `<path>/metadata.json`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimLocation {
    /// The claim, in the tenant's namespace.
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub claim_name: String,
    /// The backup's directory in the volume.
    #[schemars(regex(pattern = PREFIX_PATTERN), length(min = 1, max = 900))]
    pub path: String,
}

/// A tenant's backups: where they go and, optionally, when they are taken.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take a backup, as a CronJob's schedule (five fields, UTC), for example `0 3 * * *`.
    /// Left out, backups are taken only when a TenantBackup is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SCHEDULE_PATTERN), length(min = 9, max = 128))]
    pub schedule: Option<String>,
    /// How many scheduled backups that succeeded are kept; older ones are deleted, in the store
    /// too. Backups created by hand are never deleted by the operator. Default 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: Option<i32>,
    /// Where backups are written.
    pub destination: BackupDestination,
}

/// Where a tenant's backups are written: exactly one of an S3-compatible bucket or a volume claim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.volumeClaim)").message("spec.backup.destination must set exactly one of s3 or volumeClaim"))]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// An S3-compatible bucket. The backup pods get an egress rule to the endpoint's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// A PersistentVolumeClaim of the tenant's namespace, which the backup pods mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<VolumeClaimDestination>,
}

/// An S3-compatible bucket; each backup is written under `<prefix>/<tenant>/<backup name>/`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// The store's URL, `http(s)://host[:port]` (path-style requests).
    #[schemars(regex(pattern = ENDPOINT_PATTERN), length(min = 1, max = 512))]
    pub endpoint: String,
    /// The bucket, which must exist.
    #[schemars(regex(pattern = BUCKET_PATTERN), length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix of every backup. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PREFIX_PATTERN), length(min = 1, max = 512))]
    pub prefix: Option<String>,
    /// Region the requests are signed for. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 63))]
    pub region: Option<String>,
    /// Secret in the tenant's namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    /// Only the backup and restore pods read it; the operator never does.
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub credentials_secret: String,
}

/// A PersistentVolumeClaim of the tenant's namespace; each backup is written under
/// `<tenant>/<backup name>/` in it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimDestination {
    /// The claim's name.
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub claim_name: String,
}

/// What a new tenant's Redis starts from: exactly one of a TenantBackup or a location.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.backup) != has(self.location)").message("spec.restoreFrom must set exactly one of backup or location"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// Name of a TenantBackup that succeeded. Its credentials Secret must exist in the new
    /// tenant's namespace (`tenant-<name>`) under the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub backup: Option<String>,
    /// Where a backup is kept, for one no TenantBackup names (another cluster's, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<BackupLocation>,
}

/// What a tenant's status says of its backups and its restore.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The newest backup that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// When it was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_size_bytes: Option<i64>,
    /// Where the tenant's Redis was restored from (kept, so the restore is never taken again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<BackupLocation>,
}
