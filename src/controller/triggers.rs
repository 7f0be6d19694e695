//! Why each tenant's next reconcile runs, for its trace. kube keeps the reason from reconcilers,
//! so the controller notes it where it sees it: in the watch streams (an event wins) and when a
//! reconcile schedules the next one (kept unless an event comes first).

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Triggers {
    pending: Mutex<HashMap<String, (String, bool)>>,
}

impl Triggers {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, bool)>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A watch event about the tenant; the first one since the last reconcile is kept.
    pub fn event(&self, tenant: &str, why: impl FnOnce() -> String) {
        let mut pending = self.pending();
        if !matches!(pending.get(tenant), Some((_, true))) {
            pending.insert(tenant.to_owned(), (why(), true));
        }
    }

    /// The reconcile the controller scheduled itself (a resync, a retry), unless an event is due.
    pub fn scheduled(&self, tenant: &str, why: &str) {
        self.pending().entry(tenant.to_owned()).or_insert_with(|| (why.to_owned(), false));
    }

    /// Why the reconcile starting now runs.
    pub fn take(&self, tenant: &str) -> String {
        self.pending().remove(tenant).map_or_else(|| "operator start or resync".to_owned(), |(why, _)| why)
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
}
