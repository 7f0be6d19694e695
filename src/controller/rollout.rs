//! The fleet's rollout of NeuralLog versions: which tenants may start moving to new images. At
//! most `max_upgrading` move at once; the first tenant on a set of images moves alone, and the
//! others follow only once it runs them Ready; a tenant whose upgrade failed halts every start
//! until it is Ready, gets another version, or is skipped. Tenants kept waiting are woken, first
//! name first, as slots free up.
//!
//! The state lives in memory and is rebuilt from the tenants' statuses (their `Upgrading`
//! condition) the first time it is asked, so a restarted or newly elected operator carries on
//! where the last one was.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::triggers::Triggers;
use crate::api::Tenant;
use crate::metrics::Metrics;
use crate::model::operand::Images;
use crate::model::upgrade::{Decision, Gate, Overrides, Reason, UPGRADING};

/// How new NeuralLog versions reach the tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSettings {
    /// Tenants moving at the same time, at most.
    pub max_upgrading: usize,
    /// How long a moving tenant has to be Ready on its new images before its upgrade fails.
    pub ready_timeout: Duration,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self { max_upgrading: 3, ready_timeout: Duration::from_secs(600) }
    }
}

/// Where each tenant stands, as its last pass decided.
#[derive(Default)]
struct Fleet {
    seeded: bool,
    /// Moving, with the images they move to.
    upgrading: BTreeMap<String, Images>,
    /// Failed, with why.
    failed: BTreeMap<String, String>,
    /// Asked to start and told to wait.
    waiting: BTreeSet<String>,
    /// Images some tenant has run Ready, every one of them (no override in its spec): no longer
    /// needing a first tenant to prove them.
    proven: HashSet<Images>,
    /// The running version of each tenant, for the metrics.
    versions: BTreeMap<String, String>,
}

/// Paces the tenants' upgrades.
pub struct Rollout {
    settings: RolloutSettings,
    fleet: Mutex<Fleet>,
    /// The tenant cache, whose statuses seed the state.
    tenants: Store<Tenant>,
    /// Where waiting tenants are woken, and their wake-ups noted.
    wake: UnboundedSender<ObjectRef<Tenant>>,
    triggers: Arc<Triggers>,
    metrics: Arc<Metrics>,
}

impl Rollout {
    pub fn new(
        settings: RolloutSettings,
        tenants: Store<Tenant>,
        wake: UnboundedSender<ObjectRef<Tenant>>,
        triggers: Arc<Triggers>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { settings, fleet: Mutex::default(), tenants, wake, triggers, metrics }
    }

    pub fn settings(&self) -> &RolloutSettings {
        &self.settings
    }

    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        let mut fleet = self.fleet.lock().unwrap_or_else(PoisonError::into_inner);
        if !fleet.seeded {
            fleet.seeded = true;
            for tenant in self.tenants.state() {
                let recorded = tenant.recorded();
                let name = tenant.name_any();
                if let Some(version) = &recorded.version {
                    fleet.versions.insert(name.clone(), version.to_string());
                }
                match (recorded.reason, recorded.images) {
                    (Some(Reason::Upgrading), Some(images)) => {
                        fleet.upgrading.insert(name, images);
                    }
                    (Some(Reason::UpgradeFailed), _) => {
                        let message = tenant
                            .status
                            .iter()
                            .flat_map(|status| &status.conditions)
                            .find(|c| c.type_ == UPGRADING)
                            .map(|c| c.message.clone())
                            .unwrap_or_default();
                        fleet.failed.insert(name, message);
                    }
                    (Some(Reason::UpToDate), Some(images))
                        if tenant.image_overrides().is_some_and(|overrides| overrides.is_empty()) =>
                    {
                        fleet.proven.insert(images);
                    }
                    _ => {}
                }
            }
            self.metrics.set_rollout(&fleet.versions, fleet.upgrading.len());
        }
        fleet
    }

    /// Whether `tenant` may start moving to `target`.
    pub fn admit(&self, tenant: &str, target: &Images) -> Gate {
        let mut fleet = self.fleet();
        let gate = if let Some((failed, why)) = fleet.failed.iter().find(|(name, _)| name.as_str() != tenant) {
            Gate::Halted(format!("the rollout is halted by tenant {failed}: {why}"))
        } else if fleet.upgrading.contains_key(tenant) {
            Gate::Granted
        } else if (!fleet.proven.contains(target) && !fleet.upgrading.is_empty())
            || fleet.upgrading.len() >= self.settings.max_upgrading
        {
            // One message for both: a waiting tenant is not woken just to change its wording.
            Gate::Waiting(format!(
                "queued: at most {} tenants upgrade at once (--rollout-max-upgrading), and the first on new images alone until it is Ready",
                self.settings.max_upgrading
            ))
        } else {
            Gate::Granted
        };
        if gate == Gate::Granted {
            fleet.waiting.remove(tenant);
            if fleet.upgrading.insert(tenant.to_owned(), target.clone()).is_none() {
                self.metrics.upgrade_started();
            }
        } else {
            fleet.waiting.insert(tenant.to_owned());
        }
        gate
    }

    /// Learns where `tenant` stands after a pass (with the images its spec sets itself), and wakes
    /// waiting tenants when that frees a slot or lifts a halt.
    pub fn record(&self, tenant: &str, decision: &Decision, overrides: &Overrides) {
        let mut fleet = self.fleet();
        let was_failed = fleet.failed.remove(tenant).is_some();
        let was_upgrading = fleet.upgrading.remove(tenant).is_some();
        match decision.reason {
            Reason::Upgrading => {
                fleet.upgrading.insert(tenant.to_owned(), decision.images.clone());
            }
            Reason::UpgradeFailed => {
                if !was_failed {
                    self.metrics.rollout_halted();
                }
                fleet.failed.insert(tenant.to_owned(), decision.message.clone());
            }
            // A tenant that overrides a component runs another image there: it proves nothing of
            // the version's images, and the first tenant that runs them still moves alone.
            Reason::UpToDate if overrides.is_empty() => {
                fleet.proven.insert(decision.images.clone());
            }
            Reason::UpToDate => {}
            Reason::Waiting | Reason::RolloutHalted => {
                fleet.waiting.insert(tenant.to_owned());
            }
            Reason::Installing | Reason::HeldBack => {}
        }
        if !matches!(decision.reason, Reason::Waiting | Reason::RolloutHalted) {
            fleet.waiting.remove(tenant);
        }
        let version = decision.version.as_ref().map(ToString::to_string);
        let before = match &version {
            Some(version) => fleet.versions.insert(tenant.to_owned(), version.clone()),
            None => fleet.versions.remove(tenant),
        };
        let halted = !was_failed && decision.reason == Reason::UpgradeFailed;
        let lifted = was_failed && decision.reason != Reason::UpgradeFailed && fleet.failed.is_empty();
        let freed = was_upgrading && decision.reason != Reason::Upgrading;
        // Counting every tenant's version is a pass over the fleet: only when something changed,
        // not on every converged reconcile.
        if before != version || was_upgrading != (decision.reason == Reason::Upgrading) {
            self.metrics.set_rollout(&fleet.versions, fleet.upgrading.len());
        }
        if halted || lifted {
            // Every waiting tenant learns that the rollout halted, or goes on.
            self.wake(&mut fleet, usize::MAX, "the rollout halted or went on");
        } else if freed {
            self.wake_waiting(&mut fleet);
        }
    }

    /// Forgets a tenant that is gone.
    pub fn forget(&self, tenant: &str) {
        let mut fleet = self.fleet();
        let held = fleet.upgrading.remove(tenant).is_some() | fleet.failed.remove(tenant).is_some();
        fleet.waiting.remove(tenant);
        fleet.versions.remove(tenant);
        self.metrics.set_rollout(&fleet.versions, fleet.upgrading.len());
        if held {
            self.wake_waiting(&mut fleet);
        }
    }

    /// Wakes as many waiting tenants as there are free slots (one while no tenant proved the
    /// images they want: they find out themselves), none while the rollout is halted.
    fn wake_waiting(&self, fleet: &mut Fleet) {
        if !fleet.failed.is_empty() {
            return;
        }
        let free = self.settings.max_upgrading.saturating_sub(fleet.upgrading.len());
        self.wake(fleet, free, "a slot of the rollout came free");
    }

    /// Wakes the first `count` waiting tenants.
    fn wake(&self, fleet: &mut Fleet, count: usize, why: &'static str) {
        let woken: Vec<String> = fleet.waiting.iter().take(count).cloned().collect();
        for name in woken {
            fleet.waiting.remove(&name);
            self.triggers.event(&name, || why.to_owned());
            // Fails only once the controller is gone, when nothing needs waking.
            let _ = self.wake.unbounded_send(ObjectRef::new(&name));
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;

    use super::*;

    fn images(version: &str) -> Images {
        Images { redis: "redis:7".into(), server: format!("server:{version}"), registry: format!("registry:{version}") }
    }

    fn decision(reason: Reason, images: Images) -> Decision {
        Decision { images, version: None, target: None, previous: None, reason, message: String::new() }
    }

    struct Fixture {
        rollout: Rollout,
        woken: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Tenant>>,
    }

    impl Fixture {
        fn new(max_upgrading: usize) -> Self {
            let (wake, woken) = futures::channel::mpsc::unbounded();
            let settings = RolloutSettings { max_upgrading, ..RolloutSettings::default() };
            let (store, _writer) = reflector::store();
            let rollout = Rollout::new(settings, store, wake, Arc::default(), Arc::default());
            Self { rollout, woken }
        }

        fn admit(&self, tenant: &str, target: &Images) -> Gate {
            self.rollout.admit(tenant, target)
        }

        fn record(&self, tenant: &str, reason: Reason, images: Images) {
            self.rollout.record(tenant, &decision(reason, images), &Overrides::default());
        }

        fn woken(&mut self) -> Vec<String> {
            std::iter::from_fn(|| self.woken.try_recv().ok()).map(|tenant| tenant.name).collect()
        }
    }

    #[test]
    fn the_first_tenant_on_new_images_moves_alone_then_at_most_the_limit() {
        let mut f = Fixture::new(2);
        let new = images("2");
        assert_eq!(f.admit("a", &new), Gate::Granted);
        assert!(matches!(f.admit("b", &new), Gate::Waiting(why) if why.contains("the first on new images alone")));
        assert!(matches!(f.admit("c", &new), Gate::Waiting(_)));
        f.record("a", Reason::UpToDate, new.clone());
        assert_eq!(f.woken(), ["b", "c"], "two slots free");
        assert_eq!(f.admit("b", &new), Gate::Granted);
        assert_eq!(f.admit("c", &new), Gate::Granted);
        assert!(matches!(f.admit("d", &new), Gate::Waiting(_)));
        f.record("b", Reason::UpToDate, new.clone());
        assert_eq!(f.woken(), ["d"]);
    }

    #[test]
    fn a_tenant_with_an_image_of_its_own_proves_nothing_of_the_version() {
        let f = Fixture::new(3);
        let new = images("2");
        let own_server = Overrides { server: Some("example/server:custom".into()), ..Overrides::default() };
        f.rollout.record("custom", &decision(Reason::UpToDate, new.clone()), &own_server);
        assert_eq!(f.admit("a", &new), Gate::Granted);
        assert!(
            matches!(f.admit("b", &new), Gate::Waiting(why) if why.contains("the first on new images alone")),
            "the first tenant that runs the version's images moves alone"
        );
    }

    #[test]
    fn a_failed_upgrade_halts_every_start_until_it_is_resolved() {
        let mut f = Fixture::new(3);
        let broken = images("broken");
        assert_eq!(f.admit("a", &broken), Gate::Granted);
        assert!(matches!(f.admit("b", &broken), Gate::Waiting(_)));
        f.record("a", Reason::UpgradeFailed, broken.clone());
        assert_eq!(f.woken(), ["b"], "told of the halt");
        assert!(matches!(f.admit("b", &broken), Gate::Halted(why) if why.contains("tenant a")));
        assert!(f.woken().is_empty());
        // Tenant a gets a fixed version (or is skipped, or comes Ready): the others may go.
        assert_eq!(f.admit("a", &images("fixed")), Gate::Granted, "the failed tenant itself may move on");
        f.record("a", Reason::Upgrading, images("fixed"));
        assert_eq!(f.woken(), ["b"], "the halt is lifted");
        assert!(matches!(f.admit("b", &images("fixed")), Gate::Waiting(_)), "a moves first, alone");
    }

    #[test]
    fn a_tenant_that_goes_frees_its_slot() {
        let mut f = Fixture::new(1);
        let new = images("2");
        f.record("a", Reason::UpToDate, new.clone());
        assert_eq!(f.admit("b", &new), Gate::Granted);
        assert!(matches!(f.admit("c", &new), Gate::Waiting(_)));
        f.rollout.forget("b");
        assert_eq!(f.woken(), ["c"]);
    }
}
