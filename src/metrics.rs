//! Prometheus metrics of the controller, served on `/metrics` by [`crate::admin`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    caches_ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("neurallog_tenant_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "Tenant reconciles by result (success or error)", reconciles.clone());
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0]);
        registry.register("reconcile_duration_seconds", "Duration of tenant reconciles", duration.clone());
        Self { registry, reconciles, duration, caches_ready: AtomicBool::new(false) }
    }
}

impl Metrics {
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

    /// Marks the watch caches as filled: the operator is ready.
    pub fn set_caches_ready(&self) {
        self.caches_ready.store(true, Ordering::Relaxed);
    }

    /// Whether the watch caches have been filled.
    pub fn caches_ready(&self) -> bool {
        self.caches_ready.load(Ordering::Relaxed)
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
    fn reconciles_are_counted_by_result_and_exposed() {
        let metrics = Metrics::default();
        metrics.reconciled(true, Duration::from_millis(20));
        metrics.reconciled(false, Duration::from_millis(30));
        metrics.reconciled(true, Duration::from_millis(40));
        assert_eq!(metrics.reconcile_count(), 3);
        let text = metrics.encode().unwrap();
        assert!(text.contains("neurallog_tenant_operator_reconciles_total{result=\"success\"} 2"), "{text}");
        assert!(text.contains("neurallog_tenant_operator_reconcile_duration_seconds_count 3"), "{text}");
    }
}
