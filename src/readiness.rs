//! What `/readyz` reports. Ready means the conversion webhook serves, with a certificate: the
//! Service in front of the replicas exists for the API server's conversion calls, and a replica
//! held back until its controller's caches are full would deadlock an upgrade to a release that
//! converts (its caches fill through those very calls, while the Service still routes to replicas
//! of the release before, which serve no webhook). The body says the rest: the part in leader
//! election and, where this process reconciles, whether its watch caches hold a full list.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::https::Reloading;

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

/// The role (which the runtime follows to start and stop the controller), the caches' state and
/// the webhook's certificate.
#[derive(Debug)]
pub struct Readiness {
    role: watch::Sender<Role>,
    caches_synced: AtomicBool,
    /// The webhook's certificate in force; until it is given, the webhook counts as serving.
    webhook_certificate: OnceLock<Arc<Reloading>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            role: watch::Sender::new(Role::Unknown),
            caches_synced: AtomicBool::new(false),
            webhook_certificate: OnceLock::new(),
        }
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

    /// Follows the conversion webhook's certificate: no certificate, not ready.
    pub fn follow_webhook_certificate(&self, certificate: Arc<Reloading>) {
        let _ = self.webhook_certificate.set(certificate);
    }

    /// Ready or not, and why, for a human reading `/readyz`.
    pub fn check(&self) -> (bool, &'static str) {
        if self.webhook_certificate.get().is_some_and(|certificate| certificate.current().is_none()) {
            return (false, "the conversion webhook has no serving certificate yet");
        }
        let why = match (self.role(), self.caches_synced.load(Ordering::Acquire)) {
            (Role::Unknown, _) => "serving conversions; leader election has not decided yet",
            (Role::Follower, _) => "serving conversions; follower: another replica reconciles",
            (Role::Leader, true) => "serving conversions; leader: watch caches synced",
            (Role::Alone, true) => "serving conversions; watch caches synced (leader election off)",
            (_, false) => "serving conversions; watch caches are being filled",
        };
        (true, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certificates::{PemPair, certified_key};

    #[test]
    fn ready_means_serving_conversions_whatever_the_role_and_caches() {
        let readiness = Readiness::default();
        for (role, synced) in
            [(Role::Unknown, false), (Role::Leader, false), (Role::Follower, false), (Role::Alone, true)]
        {
            readiness.set_role(role);
            readiness.set_caches_synced(synced);
            assert!(readiness.check().0, "{role:?}, caches synced: {synced}");
        }
        readiness.set_role(Role::Leader);
        readiness.set_caches_synced(false);
        assert_eq!(readiness.check(), (true, "serving conversions; watch caches are being filled"));
    }

    #[test]
    fn without_a_webhook_certificate_nothing_is_ready() {
        let readiness = Readiness::default();
        let certificate = Arc::new(Reloading::default());
        readiness.follow_webhook_certificate(certificate.clone());
        readiness.set_role(Role::Follower);
        assert_eq!(readiness.check(), (false, "the conversion webhook has no serving certificate yet"));
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
        let pair =
            PemPair { cert: issued.cert.pem().into_bytes(), key: issued.signing_key.serialize_pem().into_bytes() };
        certificate.set(certified_key(&pair).expect("a usable pair"));
        assert!(readiness.check().0);
    }
}
