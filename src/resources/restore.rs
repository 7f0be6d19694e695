//! The restore's init containers in a new tenant's Redis pod: the snapshot fetched and verified
//! into the empty data volume by the operator's image, then checked by the Redis image and put in
//! place, before Redis starts.

use k8s_openapi::api::core::v1::{Container, EnvVar, Volume, VolumeMount};

use super::backup_store::{backup_resources, store_access};
use super::{Platform, container_resources, restricted_container_security};
use crate::backup::{RESTORE_DIR, RESTORE_DONE, STAGED_SNAPSHOT};
use crate::model::TenantModel;

/// The restore's init containers in the Redis pod, with the volumes they need beside the Redis
/// pod's own: the snapshot fetched and verified into the empty data volume, then checked by
/// the Redis image and put in place. None when the tenant restores nothing.
pub fn init_containers(model: &TenantModel, platform: &Platform) -> (Vec<Container>, Vec<Volume>) {
    let Some(location) = model.restore.as_ref().and_then(|restore| restore.location.as_ref()) else {
        return (Vec::new(), Vec::new());
    };
    let store = store_access(location);
    let data = VolumeMount { name: "redis-data".into(), mount_path: "/data".into(), ..Default::default() };
    let mut args = vec!["backup".to_owned(), "fetch".to_owned(), "--data".to_owned(), "/data".to_owned()];
    args.extend(store.args);
    let mut mounts = vec![data.clone()];
    mounts.extend(store.mounts);
    let fetch = Container {
        name: "restore-fetch".into(),
        image: Some(platform.operator_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(store.env),
        volume_mounts: Some(mounts),
        resources: Some(backup_resources()),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    };
    let load = Container {
        name: "restore-load".into(),
        image: Some(model.operand.images(&platform.release).redis),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sh".into(), "-c".into(), load_script()]),
        env: Some(vec![EnvVar { name: "RESTORE_FROM".into(), value: Some(location.describe()), ..EnvVar::default() }]),
        volume_mounts: Some(vec![data]),
        resources: Some(container_resources(&model.redis.resources)),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    };
    (vec![fetch, load], store.volumes)
}

/// The script of the restore's second init container, in the Redis image: its own
/// `redis-check-rdb` says whether this Redis loads the snapshot; then the snapshot becomes the
/// base of the append-only file Redis starts from. A snapshot it refuses stays staged, outside
/// what Redis reads: the kubelet retries only this container, which then says the same again.
fn load_script() -> String {
    format!(
        r#"set -eu
work=/data/{RESTORE_DIR}
[ -f "$work/{RESTORE_DONE}" ] && exit 0
if ! redis-check-rdb "$work/{STAGED_SNAPSHOT}" > "$work/check.log" 2>&1; then
  reason=$(grep -v -e '^\[info\]' -e '^\[additional info\]' -e '^---' -e 'Checking RDB file' "$work/check.log" | sed 's/^\[offset [0-9]*\] //' | grep -v '^$' | tail -n1)
  echo "restore from backup $RESTORE_FROM: this Redis ($(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')) cannot load the snapshot: $reason" > /dev/termination-log
  exit 1
fi
mkdir -p /data/appendonlydir
mv "$work/{STAGED_SNAPSHOT}" /data/appendonlydir/appendonly.aof.1.base.rdb
printf 'file appendonly.aof.1.base.rdb seq 1 type b\n' > /data/appendonlydir/appendonly.aof.manifest
touch "$work/{RESTORE_DONE}"
echo "restore: snapshot loaded as the base of the append-only file" > /dev/termination-log
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestTenant;
    use crate::resources::backup_store::tests::{parses, s3};

    #[test]
    fn a_restoring_redis_fetches_then_checks_the_snapshot_before_redis_starts() {
        let mut model = TestTenant::new("acme").valid_model();
        assert!(init_containers(&model, &Platform::default()).0.is_empty());
        model.restore = Some(crate::model::backup::RestoreModel { source: None, location: Some(s3()) });
        let (init, volumes) = init_containers(&model, &Platform::default());
        let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["restore-fetch", "restore-load"]);
        parses(init[0].args.as_ref().unwrap());
        assert!(volumes.is_empty());
        let script = &init[1].command.as_ref().unwrap()[2];
        assert!(script.contains("redis-check-rdb") && script.contains("appendonly.aof.manifest"));
    }
}
