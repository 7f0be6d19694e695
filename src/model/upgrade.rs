//! One tenant's NeuralLog upgrade, decided pass by pass: which version it should run, whether it
//! may start moving (the fleet's rollout says, see `controller::rollout`), and which component
//! moves next. Redis first, then the server, then the registry, each only once the one before runs
//! Ready on its new image. The images decided here are recorded in the status and applied by the
//! next pass, so every child is built from the tenant object it is judged against. Pure.

use std::time::Duration;

use semver::Version;

use super::operand::{Component, Images, Release};

/// `Upgrading`: True while the tenant moves to another NeuralLog version or other images.
pub const UPGRADING: &str = "Upgrading";

/// Why `Upgrading` is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Moving, one component at a time.
    Upgrading,
    /// Runs what it should, Ready.
    UpToDate,
    /// A new tenant's first images are starting.
    Installing,
    /// Queued: the rollout has no free slot, or waits for the first tenant on the version.
    Waiting,
    /// Another tenant's upgrade failed: nobody else moves until that is resolved.
    RolloutHalted,
    /// Not Ready on the new images in time. Halts the rollout.
    UpgradeFailed,
    /// The release's default is not taken: opted out, a major version without the opt-in, or
    /// older than what runs.
    HeldBack,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 7] = [
        Reason::Upgrading,
        Reason::UpToDate,
        Reason::Installing,
        Reason::Waiting,
        Reason::RolloutHalted,
        Reason::UpgradeFailed,
        Reason::HeldBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Upgrading => "Upgrading",
            Reason::UpToDate => "UpToDate",
            Reason::Installing => "Installing",
            Reason::Waiting => "Waiting",
            Reason::RolloutHalted => "RolloutHalted",
            Reason::UpgradeFailed => "UpgradeFailed",
            Reason::HeldBack => "HeldBack",
        }
    }

    pub fn parse(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == reason)
    }
}

/// How a tenant chooses its version (`spec.version`, `spec.upgrade`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPolicy {
    /// The version the spec names; `None` follows the release's default.
    pub pinned: Option<Version>,
    /// Whether a new default is taken (by the rollout); `false` keeps what runs.
    pub automatic: bool,
    /// Whether the default may cross a major version.
    pub allow_major: bool,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        Self { pinned: None, automatic: true, allow_major: false }
    }
}

/// Images set in the spec: they replace the version's image of their component, and are applied
/// as any other spec change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub redis: Option<String>,
    pub server: Option<String>,
    pub registry: Option<String>,
}

impl Overrides {
    /// `images` with every override in place.
    pub fn apply(&self, mut images: Images) -> Images {
        for (component, image) in self.each() {
            images = images.with(component, image);
        }
        images
    }

    /// Whether the spec sets no image of its own.
    pub fn is_empty(&self) -> bool {
        self.each().next().is_none()
    }

    /// The overridden components and their images.
    pub fn each(&self) -> impl Iterator<Item = (Component, &str)> {
        [(Component::Redis, &self.redis), (Component::Server, &self.server), (Component::Registry, &self.registry)]
            .into_iter()
            .filter_map(|(component, image)| image.as_deref().map(|image| (component, image)))
    }
}

/// What the status recorded of the tenant's versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The version it ran Ready (`status.version`).
    pub version: Option<Version>,
    pub target: Option<Version>,
    pub previous: Option<Version>,
    /// The images in force (`status.images`).
    pub images: Option<Images>,
    /// `Upgrading`'s reason, and since when it holds (RFC 3339 seconds since the epoch).
    pub reason: Option<Reason>,
    pub since: Option<i64>,
    /// Whether the status existed: a tenant from before 0.3.0 has one, and no recorded images.
    pub exists: bool,
}

/// The rollout's answer to a tenant that wants to start moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Granted,
    Waiting(String),
    Halted(String),
}

/// What a pass decided: the status' version fields and `Upgrading` condition, and the images the
/// next pass applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub images: Images,
    pub version: Option<Version>,
    pub target: Option<Version>,
    pub previous: Option<Version>,
    pub reason: Reason,
    pub message: String,
}

impl Decision {
    /// Whether the condition is True.
    pub fn upgrading(&self) -> bool {
        self.reason == Reason::Upgrading
    }
}

/// Everything one pass decides with.
pub struct Pass<'a> {
    pub policy: &'a VersionPolicy,
    pub overrides: &'a Overrides,
    pub release: &'a Release,
    pub recorded: &'a Recorded,
    /// Per component, whether its workload runs its applied template Ready, every pod of it.
    pub settled: &'a dyn Fn(Component) -> bool,
    pub now: i64,
    pub ready_timeout: Duration,
}

/// The version a tenant should run, or why it keeps the one it has.
fn wanted(pass: &Pass<'_>) -> Result<Version, String> {
    let (policy, release, running) = (pass.policy, pass.release, pass.recorded.version.as_ref());
    if let Some(pinned) = &policy.pinned {
        return Ok(pinned.clone());
    }
    let default = &release.version;
    let Some(running) = running else { return Ok(default.clone()) };
    if default == running {
        return Ok(default.clone());
    }
    if !policy.automatic {
        return Err(format!(
            "stays on NeuralLog {running}: spec.upgrade.automatic is false (this operator's default is {default}); set spec.version to move"
        ));
    }
    if default < running {
        return Err(format!(
            "stays on NeuralLog {running}: this operator's default {default} is older, and a tenant is never downgraded by a default"
        ));
    }
    if default.major != running.major && !policy.allow_major {
        return Err(format!(
            "stays on NeuralLog {running}: this operator's default {default} is a new major version; set spec.upgrade.allowMajorVersion to take it"
        ));
    }
    Ok(default.clone())
}

/// Decides one pass. `admit` asks the rollout for a slot, only when the tenant must start moving.
pub fn decide(pass: &Pass<'_>, admit: impl FnOnce(&Images) -> Gate) -> Decision {
    let recorded = pass.recorded;
    // What the tenant runs now: the status' record; from before 0.3.0, the images it was given
    // then; a new tenant starts on what it should run.
    let in_force = recorded.images.clone().or_else(|| recorded.exists.then(Images::legacy));
    let (target_version, target) = match wanted(pass) {
        // A tenant pinned to the version it runs keeps its images, whatever the release's are
        // (its Redis too): only a change of its pin moves it.
        Ok(version)
            if pass.policy.pinned.is_some() && recorded.version.as_ref() == Some(&version) && in_force.is_some() =>
        {
            let images = in_force.clone().unwrap_or_else(|| pass.release.images_of(&version));
            (version, images)
        }
        Ok(version) => {
            let images = pass.release.images_of(&version);
            (version, images)
        }
        Err(why) => {
            let images = in_force.clone().unwrap_or_else(|| pass.release.images.clone());
            let settled = recorded.version.clone();
            return Decision {
                images,
                version: settled.clone(),
                target: settled,
                previous: recorded.previous.clone(),
                reason: Reason::HeldBack,
                message: why,
            };
        }
    };
    // The images decided and recorded are the version's; a component the spec gives an image of
    // its own runs that one instead, and never holds up the rest.
    let mut in_force = in_force.unwrap_or_else(|| target.clone());
    for (component, _) in pass.overrides.each() {
        in_force = in_force.with(component, target.get(component));
    }
    let settled = Component::ORDER.iter().all(|&component| (pass.settled)(component));
    let target_text = target_version.to_string();
    // Overrides are reported where the tenant's version is: they run instead of the version's.
    let overridden: String = pass
        .overrides
        .each()
        .map(|(component, image)| format!("; spec.{component}.image runs {image} instead"))
        .collect();

    if in_force == target && (settled || recorded.version.as_ref() == Some(&target_version)) {
        if settled {
            let previous = match &recorded.version {
                Some(version) if *version != target_version => Some(version.clone()),
                _ => recorded.previous.clone(),
            };
            return Decision {
                images: target,
                version: Some(target_version.clone()),
                target: Some(target_version),
                previous,
                reason: Reason::UpToDate,
                message: format!("runs NeuralLog {target_text}{overridden}"),
            };
        }
        // Ready once, on this version: a pod that restarts since is the Ready condition's matter.
        return Decision {
            images: target,
            version: recorded.version.clone(),
            target: Some(target_version),
            previous: recorded.previous.clone(),
            reason: Reason::UpToDate,
            message: format!("runs NeuralLog {target_text}{overridden}"),
        };
    }
    let keep = |reason: Reason, message: String| Decision {
        images: in_force.clone(),
        version: recorded.version.clone(),
        target: Some(target_version.clone()),
        previous: recorded.previous.clone(),
        reason,
        message,
    };
    if in_force == target
        && recorded.reason != Some(Reason::Upgrading)
        && recorded.reason != Some(Reason::UpgradeFailed)
    {
        // A new tenant's first start: nothing to pace.
        return keep(Reason::Installing, format!("starting NeuralLog {target_text}{overridden}"));
    }

    match recorded.reason {
        Some(Reason::UpgradeFailed) if recorded.target.as_ref() == Some(&target_version) => {
            // Failed on this very version: it stays as it is (its older pods keep serving) until
            // what it waited for comes Ready after all, or it is given another version.
            let stuck = Component::ORDER
                .into_iter()
                .find(|&component| in_force.get(component) != target.get(component) || !(pass.settled)(component));
            if stuck.is_some_and(|component| in_force.get(component) == target.get(component)) {
                return keep(Reason::UpgradeFailed, failed_message(pass, &target_text, &in_force, &target));
            }
        }
        Some(Reason::Upgrading) => {}
        _ => match admit(&target) {
            Gate::Granted => {}
            Gate::Waiting(why) => return keep(Reason::Waiting, why),
            Gate::Halted(why) => return keep(Reason::RolloutHalted, why),
        },
    }

    // Moving: the first component not yet on its target image and settled decides.
    let timed_out = recorded.reason == Some(Reason::Upgrading)
        && recorded.since.is_some_and(|since| pass.now.saturating_sub(since) > timeout_secs(pass.ready_timeout));
    for component in Component::ORDER {
        let wanted_image = target.get(component);
        if in_force.get(component) != wanted_image {
            return Decision {
                images: in_force.clone().with(component, wanted_image),
                message: format!("to NeuralLog {target_text}: {component} to {wanted_image}"),
                ..keep(Reason::Upgrading, String::new())
            };
        }
        if !(pass.settled)(component) {
            if timed_out {
                return keep(Reason::UpgradeFailed, failed_message(pass, &target_text, &in_force, &target));
            }
            return keep(Reason::Upgrading, format!("to NeuralLog {target_text}: waiting for {component} to be Ready"));
        }
    }
    // Every component on its image and settled: the next pass records the version.
    keep(Reason::Upgrading, format!("to NeuralLog {target_text}: every component Ready"))
}

fn timeout_secs(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX)
}

fn failed_message(pass: &Pass<'_>, target: &str, in_force: &Images, wanted: &Images) -> String {
    let stuck = Component::ORDER
        .into_iter()
        .find(|&component| in_force.get(component) != wanted.get(component) || !(pass.settled)(component))
        .map_or_else(|| "its components".to_owned(), |component| format!("{component} ({})", in_force.get(component)));
    format!(
        "not Ready on NeuralLog {target} within {}s: {stuck}; the rollout is halted until this tenant is Ready, gets another version, or is skipped (spec.upgrade.automatic: false)",
        pass.ready_timeout.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_and_parses_back() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        let names: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    fn release(version: &str) -> Release {
        Release::new(
            version,
            Images {
                // Each release tested with its own Redis.
                redis: format!("redis:for-{version}"),
                server: format!("neurallog/server:{version}"),
                registry: format!("neurallog/registry:{version}"),
            },
        )
        .unwrap()
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    struct Case {
        policy: VersionPolicy,
        overrides: Overrides,
        release: Release,
        recorded: Recorded,
        settled: [bool; 3],
        now: i64,
    }

    impl Case {
        fn new(default: &str) -> Self {
            Self {
                policy: VersionPolicy::default(),
                overrides: Overrides::default(),
                release: release(default),
                recorded: Recorded::default(),
                settled: [true; 3],
                now: 1_000,
            }
        }

        /// Up to date on `version` with the images of `release(version)`.
        fn running(mut self, version: &str) -> Self {
            self.recorded = Recorded {
                version: Some(v(version)),
                target: Some(v(version)),
                images: Some(release(version).images),
                reason: Some(Reason::UpToDate),
                since: Some(0),
                exists: true,
                ..Recorded::default()
            };
            self
        }

        fn decide_with(&self, gate: Gate) -> Decision {
            let settled = |component: Component| self.settled[component as usize];
            let pass = Pass {
                policy: &self.policy,
                overrides: &self.overrides,
                release: &self.release,
                recorded: &self.recorded,
                settled: &settled,
                now: self.now,
                ready_timeout: Duration::from_secs(300),
            };
            decide(&pass, |_| gate)
        }

        fn decide(&self) -> Decision {
            self.decide_with(Gate::Granted)
        }

        /// Records `decision` as the status would, `since` moving when the reason does.
        fn record(&mut self, decision: &Decision) {
            let since =
                if self.recorded.reason == Some(decision.reason) { self.recorded.since } else { Some(self.now) };
            self.recorded = Recorded {
                version: decision.version.clone(),
                target: decision.target.clone(),
                previous: decision.previous.clone(),
                images: Some(decision.images.clone()),
                reason: Some(decision.reason),
                since,
                exists: true,
            };
        }
    }

    #[test]
    fn a_new_tenant_starts_on_the_default_without_a_slot() {
        let mut case = Case::new("1.2.0");
        case.settled = [false; 3];
        let decision = case.decide_with(Gate::Halted("halted".into()));
        assert_eq!(decision.reason, Reason::Installing);
        assert_eq!(decision.images, release("1.2.0").images);
        assert_eq!(decision.version, None, "not Ready yet");
        case.record(&decision);
        case.settled = [true; 3];
        let decision = case.decide();
        assert_eq!((decision.reason, decision.version), (Reason::UpToDate, Some(v("1.2.0"))));
    }

    #[test]
    fn an_upgrade_moves_redis_then_the_server_then_the_registry_each_once_settled() {
        let mut case = Case::new("1.3.0").running("1.2.0");
        let mut moved = Vec::new();
        for _ in 0..12 {
            let decision = case.decide();
            if case.recorded.images.as_ref() != Some(&decision.images) {
                let before = case.recorded.images.clone().unwrap();
                let component =
                    Component::ORDER.into_iter().find(|&c| before.get(c) != decision.images.get(c)).unwrap();
                moved.push(component);
                // Applied next pass: not settled until its pods roll.
                case.settled[component as usize] = false;
                case.record(&decision);
                continue;
            }
            case.record(&decision);
            if decision.reason == Reason::UpToDate {
                break;
            }
            // The moved component rolls out.
            case.settled = [true; 3];
        }
        assert_eq!(moved, Component::ORDER);
        assert_eq!(case.recorded.reason, Some(Reason::UpToDate));
        assert_eq!(case.recorded.version, Some(v("1.3.0")));
        assert_eq!(case.recorded.previous, Some(v("1.2.0")));
        assert_eq!(case.recorded.images, Some(release("1.3.0").images));
    }

    #[test]
    fn without_a_slot_nothing_moves_and_the_condition_says_why() {
        let case = Case::new("1.3.0").running("1.2.0");
        let waiting = case.decide_with(Gate::Waiting("3 of 3 slots taken".into()));
        assert_eq!((waiting.reason, waiting.message.as_str()), (Reason::Waiting, "3 of 3 slots taken"));
        assert_eq!(waiting.images, release("1.2.0").images);
        assert_eq!(waiting.version, Some(v("1.2.0")));
        let halted = case.decide_with(Gate::Halted("tenant x failed".into()));
        assert_eq!(halted.reason, Reason::RolloutHalted);
        assert_eq!(halted.images, release("1.2.0").images);
    }

    #[test]
    fn an_upgrade_not_ready_in_time_fails_and_stays_failed_on_that_version() {
        let mut case = Case::new("1.3.0").running("1.2.0");
        let first = case.decide();
        case.record(&first);
        case.settled = [false, true, true];
        case.now += 301;
        let failed = case.decide();
        assert_eq!(failed.reason, Reason::UpgradeFailed);
        assert!(failed.message.contains("redis (redis:for-1.3.0)"), "{}", failed.message);
        assert_eq!(failed.images, first.images, "nothing rolled back or moved on");
        case.record(&failed);
        assert_eq!(case.decide_with(Gate::Halted("itself".into())).reason, Reason::UpgradeFailed, "no slot asked");
        // Ready after all: done.
        case.settled = [true; 3];
        let next = case.decide();
        assert_eq!(next.reason, Reason::Upgrading, "moves on: {next:?}");
        // Another version: asks again.
        case.settled = [false, true, true];
        case.release = release("1.3.1");
        assert_eq!(case.decide_with(Gate::Waiting("wait".into())).reason, Reason::Waiting);
    }

    #[test]
    fn a_pinned_tenant_keeps_its_images_whatever_the_release() {
        let mut case = Case::new("1.3.0").running("1.2.0");
        case.policy.pinned = Some(v("1.2.0"));
        let decision = case.decide_with(Gate::Halted("never asked".into()));
        assert_eq!((decision.reason, decision.version), (Reason::UpToDate, Some(v("1.2.0"))));
        assert_eq!(decision.images, release("1.2.0").images, "its Redis too, though 1.3.0's release has another");
        // A new pin moves it, onto the release's images of that version.
        case.policy.pinned = Some(v("1.2.5"));
        let moving = case.decide();
        assert_eq!((moving.reason, moving.images.redis.as_str()), (Reason::Upgrading, "redis:for-1.3.0"));
    }

    #[test]
    fn the_default_is_held_back_when_opted_out_older_or_a_new_major() {
        let mut opted_out = Case::new("1.3.0").running("1.2.0");
        opted_out.policy.automatic = false;
        let decision = opted_out.decide();
        assert_eq!(decision.reason, Reason::HeldBack);
        assert!(decision.message.contains("spec.upgrade.automatic"), "{}", decision.message);
        assert_eq!(decision.images, release("1.2.0").images);

        let older = Case::new("1.1.0").running("1.2.0");
        assert_eq!(older.decide().reason, Reason::HeldBack);

        let mut major = Case::new("2.0.0").running("1.2.0");
        let decision = major.decide();
        assert_eq!(decision.reason, Reason::HeldBack);
        assert!(decision.message.contains("allowMajorVersion"), "{}", decision.message);
        major.policy.allow_major = true;
        assert_eq!(major.decide().reason, Reason::Upgrading);
    }

    #[test]
    fn a_tenant_from_before_versions_moves_from_its_old_images_through_the_rollout() {
        let mut case = Case::new("1.0.0");
        case.recorded = Recorded { exists: true, ..Recorded::default() };
        let waiting = case.decide_with(Gate::Waiting("queued".into()));
        assert_eq!(waiting.images, Images::legacy(), "keeps what runs until admitted");
        let moving = case.decide();
        assert_eq!(moving.images, Images::legacy().with(Component::Redis, "redis:for-1.0.0"));
    }

    #[test]
    fn an_override_is_never_paced_and_its_removal_takes_the_version_image() {
        let mut case = Case::new("1.3.0").running("1.3.0");
        case.overrides.server = Some("example/server:custom".into());
        let decision = case.decide_with(Gate::Halted("never asked".into()));
        assert_eq!(decision.reason, Reason::UpToDate);
        assert_eq!(decision.message, "runs NeuralLog 1.3.0; spec.server.image runs example/server:custom instead");
        assert_eq!(decision.images.server, "neurallog/server:1.3.0", "the version's image is recorded");
        // A new default moves the others; the overridden server holds nothing up.
        case.release = release("1.4.0");
        case.settled = [true, false, true];
        let moving = case.decide();
        assert_eq!(moving.images.redis, "redis:for-1.4.0");
        case.record(&moving);
        let next = case.decide();
        assert_eq!(next.images.server, "neurallog/server:1.4.0", "not waiting on the overridden server");
        assert_eq!(next.images.registry, "neurallog/registry:1.3.0");
    }
}
