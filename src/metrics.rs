//! Prometheus metrics of the operator, served on `/metrics` by the admin server.
//!
//! Where controller-runtime has a metric of the same meaning, it has its name and labels
//! (`controller_runtime_*`, `leader_election_master_status`, `rest_client_requests_total`), so
//! dashboards made for Go operators work; `process_*` are the standard process metrics; the rest
//! are this operator's own, prefixed `neurallog_tenant_operator_`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The controllers, as the `controller` label names them.
pub const TENANT_CONTROLLER: &str = "tenant";
pub const BACKUP_CONTROLLER: &str = "tenantbackup";
/// The Lease's name, as `leader_election_master_status` labels it.
pub const LEASE_NAME: &str = "neurallog-tenant-operator";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerResultLabels {
    controller: &'static str,
    result: &'static str,
}

/// The exemplar of a reconcile's duration: its trace, so a slow bucket leads to it in Jaeger.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabels {
    trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: &'static str,
}

/// The tenant controller's queue, as `workqueue_*` label it.
const TENANT_QUEUE: QueueLabels = QueueLabels { name: TENANT_CONTROLLER };

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    name: &'static str,
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
struct PhaseLabels {
    tenant: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    tenant: String,
    r#type: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestClientLabels {
    code: String,
    method: String,
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthFailureLabels {
    operation: &'static str,
    reason: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_time: Family<ControllerLabels, HistogramWithExemplars<TraceLabels>>,
    active_workers: Family<ControllerLabels, Gauge>,
    max_concurrent_reconciles: Family<ControllerLabels, Gauge>,
    leader: Family<LeaseLabels, Gauge>,
    queue_depth: Family<QueueLabels, Gauge>,
    queue_adds: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram>,
    rest_client_requests: Family<RestClientLabels, Counter>,
    api_requests: Family<RequestLabels, Counter>,
    tenant_phase: Family<PhaseLabels, Gauge>,
    tenant_condition: Family<ConditionLabels, Gauge>,
    auth_duration: Family<AuthLabels, Histogram>,
    auth_failures: Family<AuthFailureLabels, Counter>,
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
    backup_due: Family<TenantLabels, Gauge>,
    restores: Family<ResultLabels, Counter>,
    redis: RedisFamilies,
}

/// Each tenant's Redis, as the operator last asked it (src/controller/operand.rs).
#[derive(Default)]
struct RedisFamilies {
    up: Family<TenantLabels, Gauge>,
    memory_used: Family<TenantLabels, Gauge>,
    memory_limit: Family<TenantLabels, Gauge>,
    keys: Family<TenantLabels, Gauge>,
    evicted_keys: Family<TenantLabels, Gauge>,
    connected_clients: Family<TenantLabels, Gauge>,
    persistence_ok: Family<TenantLabels, Gauge>,
}

impl RedisFamilies {
    fn register(&self, registry: &mut Registry) {
        let families = [
            ("redis_up", "1 when the tenant's Redis answered the operator's last INFO, 0 when it did not", &self.up),
            ("redis_memory_used_bytes", "Memory the tenant's Redis uses (INFO used_memory)", &self.memory_used),
            (
                "redis_memory_limit_bytes",
                "Memory the tenant's Redis may use before it evicts keys (its maxmemory: 80% of its container's limit)",
                &self.memory_limit,
            ),
            ("redis_keys", "Keys in the tenant's Redis, over its databases", &self.keys),
            (
                "redis_evicted_keys",
                "Keys the tenant's Redis evicted for want of memory since it started (a counter Redis keeps)",
                &self.evicted_keys,
            ),
            ("redis_connected_clients", "Clients connected to the tenant's Redis", &self.connected_clients),
            (
                "redis_persistence_ok",
                "1 when the tenant's Redis' last background save and append-only file write succeeded",
                &self.persistence_ok,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
    }

    fn families(&self) -> [&Family<TenantLabels, Gauge>; 7] {
        [
            &self.up,
            &self.memory_used,
            &self.memory_limit,
            &self.keys,
            &self.evicted_keys,
            &self.connected_clients,
            &self.persistence_ok,
        ]
    }
}

/// The buckets of reconcile durations: controller-runtime's.
const RECONCILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let runtime = root.sub_registry_with_prefix("controller_runtime");
        let reconciles = Family::<ControllerResultLabels, Counter>::default();
        runtime.register("reconcile", "Total number of reconciliations per controller", reconciles.clone());
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        runtime.register(
            "reconcile_errors",
            "Total number of reconciliation errors per controller",
            reconcile_errors.clone(),
        );
        let reconcile_time =
            Family::<ControllerLabels, HistogramWithExemplars<TraceLabels>>::new_with_constructor(|| {
                HistogramWithExemplars::new(RECONCILE_BUCKETS.into_iter())
            });
        runtime.register(
            "reconcile_time_seconds",
            "Length of time per reconciliation per controller (exemplar: the reconcile's trace id)",
            reconcile_time.clone(),
        );
        let active_workers = Family::<ControllerLabels, Gauge>::default();
        runtime.register("active_workers", "Number of currently used workers per controller", active_workers.clone());
        let max_concurrent_reconciles = Family::<ControllerLabels, Gauge>::default();
        runtime.register(
            "max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            max_concurrent_reconciles.clone(),
        );
        let leader = Family::<LeaseLabels, Gauge>::default();
        root.sub_registry_with_prefix("leader_election").register(
            "master_status",
            "1 while this process leads (reconciles), 0 while it waits; 1 with leader election off",
            leader.clone(),
        );
        let workqueue = root.sub_registry_with_prefix("workqueue");
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        workqueue.register("depth", "Tenants waiting for a reconcile after a change was seen", queue_depth.clone());
        let queue_adds = Family::<QueueLabels, Counter>::default();
        workqueue.register("adds", "Tenants that started waiting for a reconcile", queue_adds.clone());
        let queue_duration = Family::<QueueLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0])
        });
        workqueue.register(
            "queue_duration_seconds",
            "How long a tenant waited from a change seen to its reconcile's start",
            queue_duration.clone(),
        );
        let rest_client_requests = Family::<RestClientLabels, Counter>::default();
        root.sub_registry_with_prefix("rest_client").register(
            "requests",
            "Number of HTTP requests to the Kubernetes API server, partitioned by status code, method, and host",
            rest_client_requests.clone(),
        );
        if let Err(error) = kubert_prometheus_process::register(root.sub_registry_with_prefix("process")) {
            tracing::warn!(%error, "no process metrics");
        }

        let registry = root.sub_registry_with_prefix("neurallog_tenant_operator");
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests this process sent to the Kubernetes API server, by method and resource",
            api_requests.clone(),
        );
        let tenant_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "tenant_status_phase",
            "1 for each tenant's phase as its status last said it (one series per tenant)",
            tenant_phase.clone(),
        );
        let tenant_condition = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "tenant_status_condition",
            "1 for each condition of each tenant with the status its status last gave it",
            tenant_condition.clone(),
        );
        let auth_duration = Family::<AuthLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register(
            "auth_request_duration_seconds",
            "Time of each call to NeuralLog Auth (register, deregister, check registration), retries included",
            auth_duration.clone(),
        );
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        registry.register(
            "auth_request_failures",
            "Calls to NeuralLog Auth that failed after their retries, by operation and reason",
            auth_failures.clone(),
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
        let backup_due = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "backup_due_timestamp_seconds",
            "When the newest scheduled backup of each tenant with a schedule was due (Unix seconds)",
            backup_due.clone(),
        );
        let redis = RedisFamilies::default();
        redis.register(registry);
        let restores = Family::<ResultLabels, Counter>::default();
        registry.register(
            "restores",
            "Restores of new tenants from backups, by result: success or failure",
            restores.clone(),
        );
        // Every series a dashboard or alert expects is there from the start, at zero, as
        // controller-runtime has them: a follower says it does not lead, a controller with no
        // reconcile yet says so.
        leader.get_or_create(&LeaseLabels { name: LEASE_NAME }).set(0);
        queue_depth.get_or_create(&TENANT_QUEUE).set(0);
        queue_adds.get_or_create(&TENANT_QUEUE).inc_by(0);
        for controller in [TENANT_CONTROLLER, BACKUP_CONTROLLER] {
            for result in ["success", "error"] {
                reconciles.get_or_create(&ControllerResultLabels { controller, result }).inc_by(0);
            }
            reconcile_errors.get_or_create(&ControllerLabels { controller }).inc_by(0);
            active_workers.get_or_create(&ControllerLabels { controller }).set(0);
        }
        Self {
            registry: root,
            reconciles,
            reconcile_errors,
            reconcile_time,
            active_workers,
            max_concurrent_reconciles,
            leader,
            queue_depth,
            queue_adds,
            queue_duration,
            rest_client_requests,
            api_requests,
            tenant_phase,
            tenant_condition,
            auth_duration,
            auth_failures,
            backup_last_success,
            backup_bytes,
            backup_failures,
            backup_duration,
            backup_due,
            restores,
            redis,
            tenants_by_version,
            upgrading,
            upgrades_started,
            rollout_halts,
            migration_objects,
            migration_duration,
            migration_remaining,
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

    /// When the newest scheduled backup of `tenant` was due; `None` without a schedule.
    pub fn set_backup_due(&self, tenant: &str, due_unix: Option<i64>) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        match due_unix {
            Some(due) => {
                self.backup_due.get_or_create(&labels).set(due);
            }
            None => {
                self.backup_due.remove(&labels);
            }
        }
    }

    /// Forgets the Redis series of a tenant no longer measured.
    pub fn forget_redis(&self, tenant: &str) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        for family in self.redis.families() {
            family.remove(&labels);
        }
    }

    /// What `tenant`'s Redis answered, or that it did not (`None`): then only `redis_up` says so.
    pub fn set_redis(&self, tenant: &str, info: Option<&crate::model::redis_info::RedisInfo>) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        let redis = &self.redis;
        redis.up.get_or_create(&labels).set(i64::from(info.is_some()));
        let Some(info) = info else {
            // No value is better than a stale one.
            for family in &redis.families()[1..] {
                family.remove(&labels);
            }
            return;
        };
        redis.memory_used.get_or_create(&labels).set(info.used_memory);
        redis.memory_limit.get_or_create(&labels).set(info.maxmemory);
        redis.keys.get_or_create(&labels).set(info.keys);
        redis.evicted_keys.get_or_create(&labels).set(info.evicted_keys);
        redis.connected_clients.get_or_create(&labels).set(info.connected_clients);
        redis.persistence_ok.get_or_create(&labels).set(i64::from(info.persistence_ok));
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

    /// Forgets the series of a deleted tenant, so they do not outlive it.
    pub fn forget_tenant(&self, tenant: &str) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        self.backup_last_success.remove(&labels);
        self.backup_bytes.remove(&labels);
        self.backup_failures.remove(&labels);
        self.backup_due.remove(&labels);
        self.forget_redis(tenant);
        self.set_tenant_status(tenant, None, &[]);
    }

    /// The phase and the conditions (type, status) a tenant's status now gives: one series each,
    /// those of a former phase or status dropped.
    pub fn set_tenant_status(&self, tenant: &str, phase: Option<&str>, conditions: &[(&str, &str)]) {
        // Families offer no iteration: each label value a tenant can leave behind is removed by name.
        for former in crate::model::state::Phase::ALL.map(crate::model::state::Phase::as_str) {
            if Some(former) != phase {
                self.tenant_phase.remove(&PhaseLabels { tenant: tenant.to_owned(), phase: former.to_owned() });
            }
        }
        if let Some(phase) = phase {
            self.tenant_phase.get_or_create(&PhaseLabels { tenant: tenant.to_owned(), phase: phase.to_owned() }).set(1);
        }
        for type_ in crate::model::state::CONDITION_TYPES {
            let current = conditions.iter().find(|(t, _)| *t == type_).map(|(_, status)| *status);
            for status in ["True", "False", "Unknown"] {
                let labels =
                    ConditionLabels { tenant: tenant.to_owned(), r#type: type_.to_owned(), status: status.to_owned() };
                if current == Some(status) {
                    self.tenant_condition.get_or_create(&labels).set(1);
                } else {
                    self.tenant_condition.remove(&labels);
                }
            }
        }
    }

    /// A reconcile of `controller` starts: one more active worker until the guard is dropped.
    pub fn worker(&self, controller: &'static str) -> ActiveWorker {
        let gauge = self.active_workers.get_or_create(&ControllerLabels { controller }).clone();
        gauge.inc();
        ActiveWorker(gauge)
    }

    /// A tenant started waiting for a reconcile; `depth` wait now.
    pub fn queue_added(&self, depth: usize) {
        self.queue_adds.get_or_create(&TENANT_QUEUE).inc();
        self.queue_depth.get_or_create(&TENANT_QUEUE).set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// A reconcile took a tenant that waited `waited`; `depth` still wait.
    pub fn queue_taken(&self, depth: usize, waited: Duration) {
        self.queue_depth.get_or_create(&TENANT_QUEUE).set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.queue_duration.get_or_create(&TENANT_QUEUE).observe(waited.as_secs_f64());
    }

    /// How many reconciles `controller` runs at most at once.
    pub fn set_max_concurrent_reconciles(&self, controller: &'static str, concurrency: usize) {
        let concurrency = i64::try_from(concurrency).unwrap_or(i64::MAX);
        self.max_concurrent_reconciles.get_or_create(&ControllerLabels { controller }).set(concurrency);
    }

    /// Records one finished reconcile of `controller`, with its trace as the duration's exemplar.
    pub fn reconciled(&self, controller: &'static str, success: bool, duration: Duration, trace_id: Option<String>) {
        let result = if success { "success" } else { "error" };
        self.reconciles.get_or_create(&ControllerResultLabels { controller, result }).inc();
        if !success {
            self.reconcile_errors.get_or_create(&ControllerLabels { controller }).inc();
        }
        let exemplar = trace_id.map(|trace_id| TraceLabels { trace_id });
        self.reconcile_time.get_or_create(&ControllerLabels { controller }).observe(duration.as_secs_f64(), exemplar);
    }

    /// Tenant reconciles finished so far, successful or not.
    pub fn reconcile_count(&self) -> u64 {
        ["success", "error"]
            .into_iter()
            .map(|result| {
                self.reconciles.get_or_create(&ControllerResultLabels { controller: TENANT_CONTROLLER, result }).get()
            })
            .sum()
    }

    /// Whether this process reconciles.
    pub fn set_leader(&self, leader: bool) {
        self.leader.get_or_create(&LeaseLabels { name: LEASE_NAME }).set(i64::from(leader));
    }

    /// Records one request to the API server, when its response arrives (`code` is `<error>` when
    /// none did, as client-go has it).
    pub fn api_request(&self, method: &str, resource: &str, host: &str, code: &str) {
        let labels = RequestLabels { method: method.to_owned(), resource: resource.to_owned() };
        self.api_requests.get_or_create(&labels).inc();
        let labels = RestClientLabels { code: code.to_owned(), method: method.to_owned(), host: host.to_owned() };
        self.rest_client_requests.get_or_create(&labels).inc();
    }

    /// Records one call to NeuralLog Auth (all its attempts) and, when it failed, why.
    pub fn auth_call(&self, operation: &'static str, duration: Duration, failure: Option<&'static str>) {
        self.auth_duration.get_or_create(&AuthLabels { operation }).observe(duration.as_secs_f64());
        if let Some(reason) = failure {
            self.auth_failures.get_or_create(&AuthFailureLabels { operation, reason }).inc();
        }
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

/// An active reconcile; it stops counting when dropped.
pub struct ActiveWorker(Gauge);

impl Drop for ActiveWorker {
    fn drop(&mut self) {
        self.0.dec();
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
    fn reconciles_leadership_and_requests_have_controller_runtimes_names() {
        let metrics = Metrics::default();
        metrics.set_max_concurrent_reconciles(TENANT_CONTROLLER, 16);
        {
            let _worker = metrics.worker(TENANT_CONTROLLER);
            let text = metrics.encode().unwrap();
            assert!(text.contains("controller_runtime_active_workers{controller=\"tenant\"} 1"), "{text}");
        }
        metrics.reconciled(TENANT_CONTROLLER, true, Duration::from_millis(20), Some("4bf92f3577b34da6".into()));
        metrics.reconciled(TENANT_CONTROLLER, false, Duration::from_millis(30), None);
        metrics.reconciled(TENANT_CONTROLLER, true, Duration::from_millis(40), None);
        metrics.reconciled(BACKUP_CONTROLLER, true, Duration::from_millis(40), None);
        metrics.set_leader(true);
        metrics.api_request("PATCH", "deployments", "10.0.0.1:6443", "200");
        metrics.api_request("PATCH", "deployments", "10.0.0.1:6443", "409");
        metrics.auth_call("register", Duration::from_millis(5), None);
        metrics.auth_call("register", Duration::from_millis(5), Some("AuthUnreachable"));
        metrics.conversion_reviewed(true, 3, Duration::from_millis(2));
        metrics.conversion_reviewed(false, 0, Duration::from_millis(1));
        metrics.migration_objects(5, 2, 0);
        metrics.migration_remaining(7);
        metrics.migration_finished(Duration::from_secs(2));
        assert_eq!(metrics.reconcile_count(), 3);
        let text = metrics.encode().unwrap();
        for expected in [
            "controller_runtime_reconcile_total{controller=\"tenant\",result=\"success\"} 2",
            "controller_runtime_reconcile_total{controller=\"tenantbackup\",result=\"success\"} 1",
            "controller_runtime_reconcile_errors_total{controller=\"tenant\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"tenant\"} 3",
            // The trace of a reconcile is the exemplar of its bucket.
            "controller_runtime_reconcile_time_seconds_bucket{le=\"0.025\",controller=\"tenant\"} 1 # {trace_id=\"4bf92f3577b34da6\"} 0.02",
            "controller_runtime_active_workers{controller=\"tenant\"} 0",
            "controller_runtime_max_concurrent_reconciles{controller=\"tenant\"} 16",
            "leader_election_master_status{name=\"neurallog-tenant-operator\"} 1",
            "rest_client_requests_total{code=\"409\",method=\"PATCH\",host=\"10.0.0.1:6443\"} 1",
            "neurallog_tenant_operator_api_requests_total{method=\"PATCH\",resource=\"deployments\"} 2",
            "neurallog_tenant_operator_auth_request_duration_seconds_count{operation=\"register\"} 2",
            "neurallog_tenant_operator_auth_request_failures_total{operation=\"register\",reason=\"AuthUnreachable\"} 1",
            "neurallog_tenant_operator_conversion_reviews_total{result=\"success\"} 1",
            "neurallog_tenant_operator_conversion_reviews_total{result=\"failure\"} 1",
            "neurallog_tenant_operator_converted_objects_total 3",
            "neurallog_tenant_operator_conversion_duration_seconds_count 2",
            "neurallog_tenant_operator_storage_migration_objects_total{result=\"migrated\"} 5",
            "neurallog_tenant_operator_storage_migration_remaining 7",
            "neurallog_tenant_operator_storage_migration_duration_seconds_count 1",
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
    }

    #[test]
    fn a_tenants_status_is_one_series_per_phase_and_condition_and_goes_with_it() {
        let metrics = Metrics::default();
        metrics.set_tenant_status("a", Some("Provisioning"), &[("Ready", "False"), ("RedisReady", "True")]);
        metrics.set_tenant_status("a", Some("Running"), &[("Ready", "True"), ("RedisReady", "True")]);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("neurallog_tenant_operator_tenant_status_phase{tenant=\"a\",phase=\"Running\"} 1"),
            "{text}"
        );
        assert!(!text.contains("phase=\"Provisioning\""), "the former phase is gone: {text}");
        assert!(
            text.contains(
                "neurallog_tenant_operator_tenant_status_condition{tenant=\"a\",type=\"Ready\",status=\"True\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("status=\"False\""), "the former status is gone: {text}");
        metrics.forget_tenant("a");
        let text = metrics.encode().unwrap();
        assert!(!text.contains("tenant=\"a\""), "a deleted tenant leaves no series: {text}");
    }
}
