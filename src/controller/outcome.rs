//! How a pass over a tenant ended, when it did not fail outright.

use std::time::Duration;

use kube::runtime::controller::Action;

/// How often a tenant waiting for a namespace to terminate is looked at again (the namespace
/// watch usually wakes it sooner).
pub const TERMINATION_POLL: Duration = Duration::from_secs(5);
/// Safety net behind the watch event that brings a newer copy of a tenant (after our own status
/// write, or a finalizer patch that found this copy stale).
pub const NEWER_COPY_WAIT: Duration = Duration::from_secs(1);

/// The next step, and whether the pass fell short of its goal without failing (Auth could not
/// register the tenant, say). A pass that fell short is an error in the trace, the log and the
/// reconcile metric alike.
#[derive(Debug)]
pub struct Outcome {
    pub action: Action,
    pub shortfall: Option<String>,
}

impl Outcome {
    pub fn done(action: Action) -> Self {
        Self { action, shortfall: None }
    }

    pub fn fell_short(action: Action, why: String) -> Self {
        Self { action, shortfall: Some(why) }
    }
}
