//! Why each tenant's next reconcile runs, for its trace. kube keeps the reason from reconcilers,
//! so the controller notes it where it sees it: in the watch streams (an event wins) and when a
//! reconcile schedules the next one (kept unless an event comes first).
//!
//! kube-runtime's queue is not observable, so the work-queue metrics controller-runtime has are
//! measured here: a tenant with an event noted and no reconcile started yet is waiting in the queue
//! (`workqueue_depth`), each such wait is counted when it starts (`workqueue_adds_total`) and timed
//! when its reconcile takes it (`workqueue_queue_duration_seconds`). Reconciles the controller
//! scheduled itself are delayed requeues, not waiting work, as in controller-runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::metrics::Metrics;

/// Why a tenant's next reconcile runs, and since when it has waited (an event's).
struct Pending {
    why: String,
    event_since: Option<Instant>,
}

#[derive(Default)]
pub struct Triggers {
    pending: Mutex<HashMap<String, Pending>>,
    metrics: Option<Arc<Metrics>>,
}

impl Triggers {
    /// Triggers whose queue is measured in `metrics`.
    pub fn measured(metrics: Arc<Metrics>) -> Self {
        Self { pending: Mutex::default(), metrics: Some(metrics) }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn depth(pending: &HashMap<String, Pending>) -> usize {
        pending.values().filter(|p| p.event_since.is_some()).count()
    }

    /// A watch event about the tenant; the first one since the last reconcile is kept.
    pub fn event(&self, tenant: &str, why: impl FnOnce() -> String) {
        let mut pending = self.pending();
        if pending.get(tenant).is_some_and(|p| p.event_since.is_some()) {
            return;
        }
        pending.insert(tenant.to_owned(), Pending { why: why(), event_since: Some(Instant::now()) });
        if let Some(metrics) = &self.metrics {
            metrics.queue_added(Self::depth(&pending));
        }
    }

    /// The reconcile the controller scheduled itself (a resync, a retry), unless an event is due.
    pub fn scheduled(&self, tenant: &str, why: &str) {
        self.pending().entry(tenant.to_owned()).or_insert_with(|| Pending { why: why.to_owned(), event_since: None });
    }

    /// Why the reconcile starting now runs.
    pub fn take(&self, tenant: &str) -> String {
        let mut pending = self.pending();
        let taken = pending.remove(tenant);
        if let (Some(metrics), Some(since)) = (&self.metrics, taken.as_ref().and_then(|p| p.event_since)) {
            metrics.queue_taken(Self::depth(&pending), since.elapsed());
        }
        taken.map_or_else(|| "operator start or resync".to_owned(), |p| p.why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_wins_over_a_scheduled_reconcile_and_the_first_event_is_kept() {
        let triggers = Triggers::default();
        assert_eq!(triggers.take("acme"), "operator start or resync");
        triggers.scheduled("acme", "retry");
        triggers.event("acme", || "Deployment changed".into());
        triggers.event("acme", || "Service changed".into());
        triggers.scheduled("acme", "resync");
        assert_eq!(triggers.take("acme"), "Deployment changed");
        triggers.scheduled("acme", "retry");
        assert_eq!(triggers.take("acme"), "retry");
    }

    #[test]
    fn tenants_with_an_event_and_no_reconcile_yet_are_the_queue() {
        let metrics = Arc::new(Metrics::default());
        let triggers = Triggers::measured(metrics.clone());
        triggers.scheduled("a", "resync");
        triggers.event("b", || "Deployment changed".into());
        triggers.event("b", || "Service changed".into());
        triggers.event("c", || "Tenant changed".into());
        let text = metrics.encode().unwrap();
        assert!(text.contains("workqueue_depth{name=\"tenant\"} 2"), "{text}");
        assert!(text.contains("workqueue_adds_total{name=\"tenant\"} 2"), "{text}");
        triggers.take("a");
        triggers.take("b");
        let text = metrics.encode().unwrap();
        assert!(text.contains("workqueue_depth{name=\"tenant\"} 1"), "{text}");
        assert!(
            text.contains("workqueue_queue_duration_seconds_count{name=\"tenant\"} 1"),
            "a requeue waits in no queue: {text}"
        );
    }
}
