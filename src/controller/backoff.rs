//! Per-tenant exponential backoff after failed reconciles, reset by a success. kube's error
//! policy is never told about successes, so the controller keeps the count itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    const BASE: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(300);

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The delay before the next attempt for `key`, doubling with every failure.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures();
        let count = failures.entry(key.to_owned()).or_default();
        let delay = Self::BASE.saturating_mul(2u32.saturating_pow(*count)).min(Self::MAX);
        *count = count.saturating_add(1);
        delay
    }

    pub fn reset(&self, key: &str) {
        self.failures().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap_and_resets_on_success() {
        let backoff = ErrorBackoff::default();
        let delays: Vec<_> = (0..3).map(|_| backoff.next_delay("acme")).collect();
        assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]);
        assert_eq!(backoff.next_delay("other"), Duration::from_secs(1), "tenants back off independently");
        for _ in 0..20 {
            backoff.next_delay("acme");
        }
        assert_eq!(backoff.next_delay("acme"), ErrorBackoff::MAX);
        backoff.reset("acme");
        assert_eq!(backoff.next_delay("acme"), Duration::from_secs(1));
    }
}
