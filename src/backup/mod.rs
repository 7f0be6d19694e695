//! Backups of a tenant's logs and restores from them, as the operator's image runs them in the
//! tenant's namespace (`tenant-operator backup …`): the backup Job takes a [`snapshot`] of the
//! tenant's Redis and writes it to the [`store`] with its [`Metadata`]; the restore's init
//! container fetches and verifies one into a new tenant's empty Redis volume. The operator side
//! (TenantBackups, schedules, retention) is `crate::controller::backups`.

pub mod command;
pub mod snapshot;
pub mod store;

use std::time::{Duration, Instant};

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

/// How long a backup or restore pod keeps trying to reach Redis or the store. A pod's first
/// connections can be refused until the cluster's NetworkPolicy enforcer has programmed its address:
/// under kube-router, a new backup pod's connections to Redis were refused for its first seconds.
pub const REACH_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds, fails for another reason than `unreachable` says, or the next
/// pause would end after `patience`; pauses double from a quarter second up to four.
pub fn patiently<T, E>(
    patience: Duration,
    unreachable: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        match attempt() {
            Err(error) if unreachable(&error) && started.elapsed() + pause < patience => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            outcome => return outcome,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_retries_only_what_is_unreachable_and_only_so_long() {
        let mut calls = 0;
        let reached = patiently(
            Duration::from_secs(5),
            |e: &&str| *e == "refused",
            || {
                calls += 1;
                if calls < 3 { Err("refused") } else { Ok(calls) }
            },
        );
        assert_eq!(reached, Ok(3));

        let mut calls = 0;
        let other = patiently(
            Duration::from_secs(5),
            |e: &&str| *e == "refused",
            || {
                calls += 1;
                Err::<(), _>("forbidden")
            },
        );
        assert_eq!((other, calls), (Err("forbidden"), 1));

        let mut calls = 0;
        let given_up = patiently(
            Duration::from_millis(300),
            |_: &&str| true,
            || {
                calls += 1;
                Err::<(), _>("refused")
            },
        );
        // One pause of a quarter second fits in 300 ms, the next (half a second) does not.
        assert_eq!((given_up, calls), (Err("refused"), 2));
    }
}
