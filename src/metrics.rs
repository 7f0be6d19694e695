//! Prometheus metrics of the operator, served on `/metrics` by the admin server.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    resource: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
    api_requests: Family<RequestLabels, Counter>,
    conversion_reviews: Family<ResultLabels, Counter>,
    converted_objects: Counter,
    conversion_duration: Histogram,
    migration_objects: Family<ResultLabels, Counter>,
    migration_duration: Histogram,
    migration_remaining: Gauge,
    tenants_by_version: Family<VersionLabels, Gauge>,
    upgrading: Gauge,
    upgrades_started: Counter,
    rollout_halts: Counter,
    backup_last_success: Family<TenantLabels, Gauge>,
    backup_bytes: Family<TenantLabels, Gauge>,
    backup_failures: Family<TenantLabels, Counter>,
    backup_duration: Histogram,
    restores: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("neurallog_tenant_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Tenant reconciles by result: success, or error (failed, or fell short of its goal)",
            reconciles.clone(),
        );
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0]);
        registry.register("reconcile_duration_seconds", "Duration of tenant reconciles", duration.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process reconciles (it leads, or leader election is off)",
            leader.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests this process sent to the Kubernetes API server, by method and resource",
            api_requests.clone(),
        );
        let conversion_reviews = Family::<ResultLabels, Counter>::default();
        registry.register(
            "conversion_reviews",
            "ConversionReviews the conversion webhook answered, by result: success, or failure (refused by \
             the conversion, or not a readable review)",
            conversion_reviews.clone(),
        );
        let converted_objects = Counter::default();
        registry.register("converted_objects", "Tenants the conversion webhook converted", converted_objects.clone());
        let conversion_duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0]);
        registry.register(
            "conversion_duration_seconds",
            "Time the conversion webhook took to read and answer a ConversionReview",
            conversion_duration.clone(),
        );
        let migration_objects = Family::<ResultLabels, Counter>::default();
        registry.register(
            "storage_migration_objects",
            "Tenants the storage-version migration visited, by result: migrated (rewritten at the storage \
             version), skipped (already there, or changed or deleted meanwhile), failed",
            migration_objects.clone(),
        );
        let migration_duration = Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]);
        registry.register(
            "storage_migration_duration_seconds",
            "Duration of storage-version migration runs",
            migration_duration.clone(),
        );
        let migration_remaining = Gauge::default();
        registry.register(
            "storage_migration_remaining",
            "Tenants the running storage-version migration has yet to visit (as the API server estimates it)",
            migration_remaining.clone(),
        );
        let tenants_by_version = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "tenants_by_version",
            "Tenants by the NeuralLog version they last ran Ready (status.version)",
            tenants_by_version.clone(),
        );
        let upgrading = Gauge::default();
        registry.register("rollout_upgrading", "Tenants moving to another NeuralLog version now", upgrading.clone());
        let upgrades_started = Counter::default();
        registry.register(
            "rollout_upgrades_started",
            "Tenants the rollout let start moving to another NeuralLog version (each a member of a wave)",
            upgrades_started.clone(),
        );
        let rollout_halts = Counter::default();
        registry.register(
            "rollout_halts",
            "Upgrades that failed to be Ready in time, each halting the rollout",
            rollout_halts.clone(),
        );
        let backup_last_success = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the newest backup of each tenant that succeeded was complete (Unix seconds)",
            backup_last_success.clone(),
        );
        let backup_bytes = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "backup_size_bytes",
            "Size of the newest backup of each tenant that succeeded",
            backup_bytes.clone(),
        );
        let backup_failures = Family::<TenantLabels, Counter>::default();
        registry.register("backup_failures", "Backups that failed, per tenant", backup_failures.clone());
        let backup_duration = Histogram::new([1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0]);
        registry.register(
            "backup_duration_seconds",
            "Time from a backup's Job start to its completion, for backups that succeeded",
            backup_duration.clone(),
        );
        let restores = Family::<ResultLabels, Counter>::default();
        registry.register(
            "restores",
            "Restores of new tenants from backups, by result: success or failure",
            restores.clone(),
        );
        Self {
            registry,
            backup_last_success,
            backup_bytes,
            backup_failures,
            backup_duration,
            restores,
            tenants_by_version,
            upgrading,
            upgrades_started,
            rollout_halts,
            migration_objects,
            migration_duration,
            migration_remaining,
            reconciles,
            duration,
            leader,
            api_requests,
            conversion_reviews,
            converted_objects,
            conversion_duration,
        }
    }
}

impl Metrics {
    /// Records a backup of `tenant` that succeeded.
    pub fn backup_succeeded(&self, tenant: &str, completed_unix: i64, bytes: i64, duration: Duration) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        self.backup_last_success.get_or_create(&labels).set(completed_unix);
        self.backup_bytes.get_or_create(&labels).set(bytes);
        self.backup_duration.observe(duration.as_secs_f64());
    }

    /// Records a backup of `tenant` that failed.
    pub fn backup_failed(&self, tenant: &str) {
        self.backup_failures.get_or_create(&TenantLabels { tenant: tenant.to_owned() }).inc();
    }

    /// Records a finished restore.
    pub fn restore_finished(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.restores.get_or_create(&ResultLabels { result }).inc();
    }

    /// Forgets the backup series of a deleted tenant, so they do not outlive it.
    pub fn forget_tenant(&self, tenant: &str) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        self.backup_last_success.remove(&labels);
        self.backup_bytes.remove(&labels);
        self.backup_failures.remove(&labels);
    }

    /// Records one finished reconcile.
    pub fn reconciled(&self, success: bool, duration: Duration) {
        let result = if success { "success" } else { "error" };
        self.reconciles.get_or_create(&ResultLabels { result }).inc();
        self.duration.observe(duration.as_secs_f64());
    }

    /// Reconciles finished so far, successful or not.
    pub fn reconcile_count(&self) -> u64 {
        ["success", "error"].iter().map(|result| self.reconciles.get_or_create(&ResultLabels { result }).get()).sum()
    }

    /// Whether this process reconciles.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records one request to the API server.
    pub fn api_request(&self, method: &str, resource: &str) {
        let labels = RequestLabels { method: method.to_owned(), resource: resource.to_owned() };
        self.api_requests.get_or_create(&labels).inc();
    }

    /// Records one ConversionReview answered by the webhook, and the objects it converted.
    pub fn conversion_reviewed(&self, success: bool, converted: u64, duration: Duration) {
        let result = if success { "success" } else { "failure" };
        self.conversion_reviews.get_or_create(&ResultLabels { result }).inc();
        self.converted_objects.inc_by(converted);
        self.conversion_duration.observe(duration.as_secs_f64());
    }

    /// Records the Tenants of one page of the storage-version migration.
    pub fn migration_objects(&self, migrated: u64, skipped: u64, failed: u64) {
        for (result, count) in [("migrated", migrated), ("skipped", skipped), ("failed", failed)] {
            self.migration_objects.get_or_create(&ResultLabels { result }).inc_by(count);
        }
    }

    /// Tenants the storage-version migration has yet to visit.
    pub fn migration_remaining(&self, remaining: i64) {
        self.migration_remaining.set(remaining);
    }

    /// Records one finished storage-version migration run.
    pub fn migration_finished(&self, duration: Duration) {
        self.migration_duration.observe(duration.as_secs_f64());
    }

    /// The running version of every tenant that has one, and how many tenants move now.
    pub fn set_rollout(&self, versions: &std::collections::BTreeMap<String, String>, upgrading: usize) {
        let mut counts = std::collections::BTreeMap::<&str, i64>::new();
        for version in versions.values() {
            *counts.entry(version).or_default() += 1;
        }
        // Versions no tenant runs any more are dropped, not left at their last count.
        self.tenants_by_version.clear();
        for (version, count) in counts {
            self.tenants_by_version.get_or_create(&VersionLabels { version: version.to_owned() }).set(count);
        }
        self.upgrading.set(i64::try_from(upgrading).unwrap_or(i64::MAX));
    }

    /// One tenant let start moving.
    pub fn upgrade_started(&self) {
        self.upgrades_started.inc();
    }

    /// One upgrade failed, halting the rollout.
    pub fn rollout_halted(&self) {
        self.rollout_halts.inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollout_counts_tenants_per_version_and_drops_versions_none_runs() {
        let metrics = Metrics::default();
        let versions = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(tenant, version)| ((*tenant).to_owned(), (*version).to_owned())).collect()
        };
        metrics.set_rollout(&versions(&[("a", "1.0.0"), ("b", "1.0.0"), ("c", "1.1.0")]), 2);
        metrics.upgrade_started();
        metrics.rollout_halted();
        let text = metrics.encode().unwrap();
        assert!(text.contains("neurallog_tenant_operator_tenants_by_version{version=\"1.0.0\"} 2"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_tenants_by_version{version=\"1.1.0\"} 1"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_rollout_upgrading 2"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_rollout_upgrades_started_total 1"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_rollout_halts_total 1"), "{text}");
        metrics.set_rollout(&versions(&[("a", "1.1.0"), ("b", "1.1.0"), ("c", "1.1.0")]), 0);
        let text = metrics.encode().unwrap();
        assert!(!text.contains("version=\"1.0.0\""), "a version no tenant runs is gone: {text}");
        assert!(text.contains("neurallog_tenant_operator_tenants_by_version{version=\"1.1.0\"} 3"), "{text}");
    }

    #[test]
    fn reconciles_leadership_and_requests_are_exposed() {
        let metrics = Metrics::default();
        metrics.reconciled(true, Duration::from_millis(20));
        metrics.reconciled(false, Duration::from_millis(30));
        metrics.reconciled(true, Duration::from_millis(40));
        metrics.set_leader(true);
        metrics.api_request("PATCH", "deployments");
        metrics.api_request("PATCH", "deployments");
        metrics.conversion_reviewed(true, 3, Duration::from_millis(2));
        metrics.conversion_reviewed(false, 0, Duration::from_millis(1));
        metrics.migration_objects(5, 2, 0);
        metrics.migration_remaining(7);
        metrics.migration_finished(Duration::from_secs(2));
        assert_eq!(metrics.reconcile_count(), 3);
        let text = metrics.encode().unwrap();
        assert!(text.contains("neurallog_tenant_operator_reconciles_total{result=\"success\"} 2"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_reconcile_duration_seconds_count 3"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_leader 1"), "{text}");
        assert!(
            text.contains("neurallog_tenant_operator_api_requests_total{method=\"PATCH\",resource=\"deployments\"} 2"),
            "{text}"
        );
        assert!(text.contains("neurallog_tenant_operator_conversion_reviews_total{result=\"success\"} 1"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_conversion_reviews_total{result=\"failure\"} 1"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_converted_objects_total 3"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_conversion_duration_seconds_count 2"), "{text}");
        assert!(
            text.contains("neurallog_tenant_operator_storage_migration_objects_total{result=\"migrated\"} 5"),
            "{text}"
        );
        assert!(text.contains("neurallog_tenant_operator_storage_migration_remaining 7"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_storage_migration_duration_seconds_count 1"), "{text}");
    }
}
