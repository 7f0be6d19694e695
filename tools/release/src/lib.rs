//! The OLM upgrade graph of the operator's file-based catalog (FBC), computed from the list of
//! released versions so that nobody edits `replaces`/`skips`/`skipRange` by hand.
//!
//! In an FBC the `olm.channel` entries are the only source of upgrade edges (the CSV's own fields
//! are ignored), and `opm validate` rejects a channel unless it has exactly one head (the entry no
//! `replaces`/`skips` edge points at; `skipRange` does not count), its head's `replaces` chain
//! reaches every entry that is not `skips`-ed, and `replaces` has no cycle. The rules below satisfy
//! those invariants by construction and are pure functions of the release list, so the output is
//! deterministic and can be regenerated and diffed.
//!
//! # Rules
//!
//! 1. **Channels.** `candidate` holds every non-yanked release, pre-releases included; `stable`
//!    holds the non-yanked releases without a pre-release part. A channel that would be empty is
//!    left out, because `opm validate` rejects a channel without bundles (whoever writes the
//!    `olm.package` blob must then not name it as the default channel). [`channels`] returns them
//!    in alphabetical order, `candidate` before `stable`.
//! 2. **Names.** The bundle of version `X.Y.Z` is `<package>.vX.Y.Z` ([`bundle_name`]), which is
//!    also the CSV's `metadata.name`.
//! 3. **Order and `replaces`.** Entries are sorted by semver precedence, ascending. Every entry but
//!    the channel's first `replaces` the entry just below it in that channel: one chain, so the
//!    highest version is the only head and no bundle is stranded. OLM walks this chain one hop at
//!    a time, and it also keeps every older bundle installable through a Subscription's
//!    `startingCSV` (a `skipRange` alone would prune them).
//! 4. **`skipRange`.** An entry `V` that replaces something gets `skipRange: ">=L <V"`, where `L`
//!    is the lowest release with the same major version as `V` that qualifies for the channel
//!    (rule 1), **yanked releases included**. So any earlier release of `V`'s major, including a
//!    yanked one, upgrades to the head in one step. The range is left out when `L == V`, i.e. on
//!    the first release of a major: **a skipRange never crosses a major version**, so a cluster
//!    on `0.3.1` reaches `1.2.0` as `0.3.1 → (last 0.x) → 1.0.0 → 1.2.0`, stopping on the last
//!    release of each major and on the first release of the next.
//!    - The major is the literal first number, also for `0.y.z`: all `0.y.z` releases form one
//!      stream, and `0.1.0 → 0.4.0` is a single hop. Semver's reading of `0.y` as breaking is
//!      about APIs; what an operator upgrade must not jump over is a release that migrates
//!      stored objects (a CRD storage version change, which needs every cluster to run the
//!      migrating release before the old version is dropped). Such a release must bump the major
//!      version (`0.x → 1.0.0`, `1.x → 2.0.0`) so that every cluster stops on it.
//!    - The ranges use the blang/semver syntax OLM parses: comparators separated by a space, e.g.
//!      `>=0.1.0 <0.2.0`. Pre-releases compare by plain precedence there (`0.2.0-rc.1` is inside
//!      `>=0.1.0 <0.2.0`), so a cluster that followed `candidate` up to a release candidate and
//!      switches to `stable` finds an edge to the final release.
//! 5. **Yanked releases.** A yanked release is in no channel (its bundle must not be in the
//!    catalog either). The next non-yanked release of each channel it qualifies for `replaces`
//!    the last non-yanked release below it and lists every yanked release in between in `skips`.
//!    A `skips` edge is an upgrade edge for OLM, so a cluster that installed the yanked bundle
//!    can still leave it, while new installs never land on it; `skips` may name bundles that are
//!    not in the catalog. A yanked release above every non-yanked one has no way out until the
//!    next release is published, which then skips it.
//! 6. **Errors.** Two releases with the same version are rejected ([`GraphError::Duplicate`]);
//!    so is build metadata ([`GraphError::BuildMetadata`]): OLM ignores it when comparing
//!    versions, and `+` is not allowed in a bundle (CSV) name.

use std::path::Path;

use anyhow::Context as _;
use semver::Version;
use serde::{Deserialize, Serialize};

/// The channel that carries every release, pre-releases included: for testing a release early.
pub const CANDIDATE: &str = "candidate";
/// The default channel: final releases only.
pub const STABLE: &str = "stable";

/// Whether a channel carries a version (rule 1).
type Admits = fn(&Version) -> bool;

/// The channels and the versions they carry, in the order [`channels`] returns them.
const CHANNEL_RULES: [(&str, Admits); 2] = [(CANDIDATE, |_| true), (STABLE, |v| v.pre.is_empty())];

/// One published version of the operator, as listed in the releases file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The bundle's version (the CSV's `spec.version`).
    pub version: Version,
    /// Withdrawn: kept in the list (rather than deleted) so that later releases still skip it and
    /// clusters that installed it keep an upgrade edge.
    pub yanked: bool,
}

/// One `entries` item of an `olm.channel` blob; empty fields are left out of the YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The bundle name, `<package>.v<version>`.
    pub name: String,
    /// The bundle directly below this one in the channel: the chain OLM walks one hop at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The installed versions that may jump straight to this bundle (rule 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_range: Option<String>,
    /// Yanked bundles this one supersedes, so clusters running them can upgrade (rule 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<String>,
}

/// One `olm.channel` of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// `candidate` or `stable`.
    pub name: String,
    /// Ascending by version; the last one is the channel head.
    pub entries: Vec<Entry>,
}

/// Why a release list has no valid upgrade graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// OLM rejects two bundles with the same version in one package.
    #[error("version {0} is listed more than once")]
    Duplicate(Version),
    /// OLM ignores build metadata when it compares versions, and `+` is invalid in a bundle name.
    #[error("version {0} has build metadata, which OLM ignores and bundle names cannot contain")]
    BuildMetadata(Version),
}

/// The bundle (and CSV) name of `version` in `package`: `<package>.v<version>`.
pub fn bundle_name(package: &str, version: &Version) -> String {
    format!("{package}.v{version}")
}

/// Computes the channels from the released versions, following the rules in the module
/// documentation: `candidate` then `stable`, each left out when empty.
pub fn channels(package: &str, releases: &[Release]) -> Result<Vec<Channel>, GraphError> {
    if let Some(release) = releases.iter().find(|r| !r.version.build.is_empty()) {
        return Err(GraphError::BuildMetadata(release.version.clone()));
    }
    let mut sorted: Vec<&Release> = releases.iter().collect();
    sorted.sort_by(|a, b| a.version.cmp(&b.version));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].version == pair[1].version) {
        return Err(GraphError::Duplicate(pair[0].version.clone()));
    }
    Ok(CHANNEL_RULES
        .iter()
        .map(|&(name, admits)| {
            let qualifying: Vec<&Release> = sorted.iter().copied().filter(|r| admits(&r.version)).collect();
            Channel { name: name.to_owned(), entries: entries(package, &qualifying) }
        })
        .filter(|channel| !channel.entries.is_empty())
        .collect())
}

/// The entries of one channel from the releases that qualify for it, sorted ascending.
fn entries(package: &str, sorted: &[&Release]) -> Vec<Entry> {
    let mut entries = Vec::new();
    // The last non-yanked release: what the next entry replaces.
    let mut previous: Option<&Version> = None;
    // Yanked releases since `previous`: what the next entry skips.
    let mut yanked = Vec::new();
    // The lowest qualifying release of the current major, yanked or not: the skipRange floor.
    let mut major_floor: Option<&Version> = None;
    for release in sorted {
        let version = &release.version;
        let floor = match major_floor {
            Some(floor) if floor.major == version.major => floor,
            _ => *major_floor.insert(version),
        };
        if release.yanked {
            yanked.push(bundle_name(package, version));
        } else {
            entries.push(Entry {
                name: bundle_name(package, version),
                replaces: previous.map(|p| bundle_name(package, p)),
                skip_range: (previous.is_some() && floor < version).then(|| format!(">={floor} <{version}")),
                skips: std::mem::take(&mut yanked),
            });
            previous = Some(version);
        }
    }
    entries
}

/// The `olm.channel` blobs as YAML documents, each introduced by `---` so the output can be
/// appended to other FBC YAML. Channels are sorted by name (`candidate` before `stable`) whatever
/// order they come in, so the output only depends on their content.
pub fn render_channels(package: &str, channels: &[Channel]) -> String {
    /// The serialized shape of an `olm.channel` blob.
    #[derive(Serialize)]
    struct Blob<'a> {
        schema: &'static str,
        package: &'a str,
        name: &'a str,
        entries: &'a [Entry],
    }
    let mut sorted: Vec<&Channel> = channels.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .into_iter()
        .map(|channel| {
            let blob = Blob { schema: "olm.channel", package, name: &channel.name, entries: &channel.entries };
            // Strings, options and lists of them: serialization cannot fail.
            let yaml = serde_yaml::to_string(&blob).expect("an olm.channel blob serializes to YAML");
            format!("---\n{yaml}")
        })
        .collect()
}

/// One item of the releases file, before its version is parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRecord {
    version: String,
    #[serde(default)]
    yanked: bool,
}

/// Parses a releases file: a YAML list of `{version: X.Y.Z[-pre], yanked: bool}` (`yanked`
/// defaults to false). Unknown keys are rejected so that a misspelt `yanked` cannot silently
/// leave a withdrawn bundle in the channels.
pub fn parse_releases(yaml: &str) -> anyhow::Result<Vec<Release>> {
    let records: Vec<ReleaseRecord> = serde_yaml::from_str(yaml).context("expected a YAML list of releases")?;
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let version = Version::parse(&record.version)
                .with_context(|| format!("release #{}: {:?} is not a semver version", index + 1, record.version))?;
            Ok(Release { version, yanked: record.yanked })
        })
        .collect()
}

/// Reads and parses the releases file at `path` (see [`parse_releases`]).
pub fn read_releases(path: &Path) -> anyhow::Result<Vec<Release>> {
    let yaml = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_releases(&yaml).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests;
