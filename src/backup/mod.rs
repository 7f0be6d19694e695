//! Backups of a tenant's logs and restores from them, as the operator's image runs them in the
//! tenant's namespace (`tenant-operator backup …`): the backup Job takes a [`snapshot`] of the
//! tenant's Redis and writes it to the [`store`] with its [`Metadata`]; the restore's init
//! container fetches and verifies one into a new tenant's empty Redis volume. The operator side
//! (TenantBackups, schedules, retention) is `crate::controller::backups`.

pub mod command;
pub mod snapshot;
pub mod store;

use serde::{Deserialize, Serialize};

/// The snapshot's object under a backup's key.
pub const SNAPSHOT_OBJECT: &str = "dump.rdb";
/// The metadata's object under a backup's key, written last: a backup without it is incomplete.
pub const METADATA_OBJECT: &str = "metadata.json";
/// Directory of the restore's work in the Redis volume; `done` in it marks a finished restore.
pub const RESTORE_DIR: &str = ".neurallog-restore";
/// The staged snapshot in [`RESTORE_DIR`], verified, waiting for the Redis image to check it.
pub const STAGED_SNAPSHOT: &str = "staging.rdb";
/// The marker of a finished restore in [`RESTORE_DIR`].
pub const RESTORE_DONE: &str = "done";

/// What a restore needs to know of a backup, kept beside it and reported by the backup Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub tenant: String,
    pub backup: String,
    pub neurallog_version: String,
    pub redis_version: String,
    pub rdb_version: u32,
    /// RFC 3339.
    pub created: String,
    pub size_bytes: u64,
    /// SHA-256 of the snapshot, hex.
    pub sha256: String,
}

/// The key of one object of a backup.
pub fn object_key(backup_key: &str, object: &str) -> String {
    format!("{}/{object}", backup_key.trim_end_matches('/'))
}
