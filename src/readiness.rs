//! What `/readyz` reports: whether this process knows its part in leader election and, where it
//! reconciles, whether its watch caches hold a full list.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// This process's part in leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not known yet (the API server has not been reached).
    Unknown,
    /// Leader election is off: this process reconciles on its own.
    Alone,
    Leader,
    /// Another replica leads (or none does yet); this one serves what every replica serves.
    Follower,
}

impl Role {
    /// Whether this process runs the controller.
    pub fn reconciles(self) -> bool {
        matches!(self, Role::Alone | Role::Leader)
    }
}

/// The role (which the runtime follows to start and stop the controller) and the caches' state.
#[derive(Debug)]
pub struct Readiness {
    role: watch::Sender<Role>,
    caches_synced: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { role: watch::Sender::new(Role::Unknown), caches_synced: AtomicBool::new(false) }
    }
}

impl Readiness {
    pub fn set_role(&self, role: Role) {
        self.role.send_if_modified(|current| std::mem::replace(current, role) != role);
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Changes of the role, from now on.
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Set when the controller's caches are filled, cleared when it stops.
    pub fn set_caches_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::Release);
    }

    /// Ready or not, and why, for a human reading `/readyz`.
    pub fn check(&self) -> (bool, &'static str) {
        match (self.role(), self.caches_synced.load(Ordering::Acquire)) {
            (Role::Unknown, _) => (false, "leader election has not decided yet"),
            (Role::Follower, _) => (true, "follower: another replica reconciles"),
            (Role::Leader, true) => (true, "leader: watch caches synced"),
            (Role::Alone, true) => (true, "watch caches synced (leader election off)"),
            (_, false) => (false, "watch caches are being filled"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_ready_and_a_reconciler_once_its_caches_are_synced() {
        let readiness = Readiness::default();
        assert!(!readiness.check().0);
        readiness.set_role(Role::Follower);
        assert!(readiness.check().0);
        readiness.set_role(Role::Leader);
        assert!(!readiness.check().0);
        readiness.set_caches_synced(true);
        assert_eq!(readiness.check(), (true, "leader: watch caches synced"));
        readiness.set_role(Role::Alone);
        assert!(readiness.check().0);
    }
}
