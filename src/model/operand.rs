//! NeuralLog versions and the images that run them. Each operator release names a default
//! NeuralLog version and its exact images ([`Release`]); a tenant follows that default or pins a
//! version, and the images of a pinned version are the default images' repositories tagged with
//! it. A mirror changes the images in one place (the operator's `RELATED_IMAGE_*` variables) and
//! every version follows. Pure: the reconcile decides with these, the rollout paces them.

use std::fmt;

use semver::Version;

/// The NeuralLog version this release runs by default.
pub const DEFAULT_VERSION: &str = "1.0.0";
/// The images of [`DEFAULT_VERSION`]; Redis is the one this release was tested with.
pub const DEFAULT_SERVER_IMAGE: &str = "neurallog/server:1.0.0";
pub const DEFAULT_REGISTRY_IMAGE: &str = "neurallog/registry:1.0.0";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.0.15";

/// The images 0.1.0 and 0.2.0 wrote into every tenant's spec as schema defaults. A tenant that
/// holds one did not choose it: it follows the release's default like a tenant that names none.
pub const LEGACY_SERVER_IMAGE: &str = "neurallog/server:latest";
pub const LEGACY_REDIS_IMAGE: &str = "redis:7-alpine";
pub const LEGACY_REGISTRY_IMAGE: &str = "neurallog/registry:latest";

/// One image per component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Images {
    pub redis: String,
    pub server: String,
    pub registry: String,
}

/// The components in the order an upgrade moves them: the server needs its Redis, the registry
/// points at the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Redis,
    Server,
    Registry,
}

impl Component {
    pub const ORDER: [Component; 3] = [Component::Redis, Component::Server, Component::Registry];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Redis => "redis",
            Component::Server => "server",
            Component::Registry => "registry",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Images {
    pub fn get(&self, component: Component) -> &str {
        match component {
            Component::Redis => &self.redis,
            Component::Server => &self.server,
            Component::Registry => &self.registry,
        }
    }

    pub fn with(mut self, component: Component, image: &str) -> Self {
        let slot = match component {
            Component::Redis => &mut self.redis,
            Component::Server => &mut self.server,
            Component::Registry => &mut self.registry,
        };
        image.clone_into(slot);
        self
    }

    /// The images 0.1.0 and 0.2.0 defaulted to.
    pub fn legacy() -> Self {
        Self {
            redis: LEGACY_REDIS_IMAGE.to_owned(),
            server: LEGACY_SERVER_IMAGE.to_owned(),
            registry: LEGACY_REGISTRY_IMAGE.to_owned(),
        }
    }
}

/// A release's operand settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the default NeuralLog version {0:?} is not a semantic version (MAJOR.MINOR.PATCH)")]
    Version(String),
    #[error("the {component} image {image:?} is not an image reference")]
    Image { component: Component, image: String },
}

/// What this operator release runs by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The NeuralLog version a tenant that pins none runs.
    pub version: Version,
    /// The images of that version, and the Redis every version runs with.
    pub images: Images,
}

impl Default for Release {
    fn default() -> Self {
        Self {
            version: Version::new(1, 0, 0),
            images: Images {
                redis: DEFAULT_REDIS_IMAGE.to_owned(),
                server: DEFAULT_SERVER_IMAGE.to_owned(),
                registry: DEFAULT_REGISTRY_IMAGE.to_owned(),
            },
        }
    }
}

impl Release {
    /// Checks the version and the images.
    pub fn new(version: &str, images: Images) -> Result<Self, ReleaseError> {
        let version = parse_version(version).ok_or_else(|| ReleaseError::Version(version.to_owned()))?;
        for component in Component::ORDER {
            let image = images.get(component);
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(ReleaseError::Image { component, image: image.to_owned() });
            }
        }
        Ok(Self { version, images })
    }

    /// The images of NeuralLog `version`: the release's own for its version, else the server and
    /// registry repositories of the release's images tagged with the version. Redis is the
    /// release's whatever the version.
    pub fn images_of(&self, version: &Version) -> Images {
        if *version == self.version {
            return self.images.clone();
        }
        Images {
            redis: self.images.redis.clone(),
            server: format!("{}:{version}", repository(&self.images.server)),
            registry: format!("{}:{version}", repository(&self.images.registry)),
        }
    }
}

/// A version as the API states it: `MAJOR.MINOR.PATCH`, with an optional pre-release.
pub fn parse_version(text: &str) -> Option<Version> {
    Version::parse(text).ok().filter(|version| version.build.is_empty())
}

/// The repository of an image reference: without its digest and its tag.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    match without_digest.rfind(':') {
        // A colon after the last slash starts the tag; before it, it is a registry's port.
        Some(colon) if colon > without_digest.rfind('/').unwrap_or(0) => &without_digest[..colon],
        _ => without_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_the_reference_without_tag_and_digest() {
        assert_eq!(repository("neurallog/server:1.0.0"), "neurallog/server");
        assert_eq!(repository("mirror:5000/neurallog/server:1.0.0"), "mirror:5000/neurallog/server");
        assert_eq!(repository("mirror:5000/neurallog/server"), "mirror:5000/neurallog/server");
        assert_eq!(repository("neurallog/server@sha256:abc"), "neurallog/server");
        assert_eq!(repository("mirror:5000/server:1.0.0@sha256:abc"), "mirror:5000/server");
        assert_eq!(repository("server"), "server");
    }

    #[test]
    fn another_version_takes_the_repositories_of_the_release_images() {
        let release = Release::new(
            "1.2.0",
            Images {
                redis: "mirror/redis@sha256:1".into(),
                server: "mirror/neurallog/server@sha256:2".into(),
                registry: "mirror:5000/neurallog/registry:1.2.0".into(),
            },
        )
        .unwrap();
        assert_eq!(release.images_of(&Version::new(1, 2, 0)), release.images, "its own version, by digest");
        let other = release.images_of(&Version::new(1, 3, 1));
        assert_eq!(other.server, "mirror/neurallog/server:1.3.1");
        assert_eq!(other.registry, "mirror:5000/neurallog/registry:1.3.1");
        assert_eq!(other.redis, "mirror/redis@sha256:1", "Redis is the release's");
    }

    #[test]
    fn a_release_refuses_what_it_cannot_run() {
        let images = Release::default().images;
        assert_eq!(Release::new("1.0", images.clone()), Err(ReleaseError::Version("1.0".into())));
        assert!(Release::new("1.0.0+build", images.clone()).is_err(), "build metadata is not a version of its own");
        let blank = images.with(Component::Registry, " ");
        assert!(matches!(
            Release::new("1.0.0", blank),
            Err(ReleaseError::Image { component: Component::Registry, .. })
        ));
    }

    /// The Deployment's variables (what OLM lists and a mirror changes) are the built-in defaults.
    #[test]
    fn the_manager_deployment_states_the_built_in_defaults() {
        use serde::Deserialize as _;
        let text = include_str!("../../config/manager/manager.yaml");
        let deployment = serde_yaml::Deserializer::from_str(text)
            .map(serde_yaml::Value::deserialize)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .into_iter()
            .find(|document| document["kind"] == "Deployment")
            .unwrap();
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        let value = |name: &str| {
            let found = env.as_sequence().unwrap().iter().find(|var| var["name"] == name);
            found.and_then(|var| var["value"].as_str()).unwrap_or_else(|| panic!("{name} in config/manager")).to_owned()
        };
        assert_eq!(value("TENANT_OPERATOR_NEURALLOG_VERSION"), DEFAULT_VERSION);
        assert_eq!(value("RELATED_IMAGE_NEURALLOG_SERVER"), DEFAULT_SERVER_IMAGE);
        assert_eq!(value("RELATED_IMAGE_NEURALLOG_REGISTRY"), DEFAULT_REGISTRY_IMAGE);
        assert_eq!(value("RELATED_IMAGE_REDIS"), DEFAULT_REDIS_IMAGE);
    }

    #[test]
    fn the_default_release_names_no_latest_tag() {
        let release = Release::default();
        assert_eq!(release.version.to_string(), DEFAULT_VERSION);
        for component in Component::ORDER {
            let image = release.images.get(component);
            assert!(!image.ends_with(":latest") && image.contains(':'), "{component}: {image}");
        }
        assert!(release.images.server.ends_with(DEFAULT_VERSION) && release.images.registry.ends_with(DEFAULT_VERSION));
    }
}
