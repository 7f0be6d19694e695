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
//!
//! # Released bundles are frozen
//!
//! Each release also records the commit it was built from and the SHA-256 of its bundle file in
//! the catalog (`<package>.v<version>.yaml`). [`check_bundles`] compares the catalog's bundles
//! directory with the list: every non-yanked release has its file, byte for byte the recorded
//! digest; a yanked release has none (rule 5); no other file is there. [`add_release`] is the
//! only writer of a new item, used by `make release` once the bundle is rendered.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::Context as _;
use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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
    /// The commit the release was built from: 40 lowercase hex digits (`git rev-parse HEAD` when
    /// `make release` ran).
    pub commit: String,
    /// The SHA-256 of the released bundle file in the catalog, 64 lowercase hex digits: a released
    /// bundle never changes, and [`check_bundles`] says so when it does.
    pub sha256: String,
    /// The release's images by digest (`operator`, `bundle`, `catalog` → `<repository>@sha256:<hex>`),
    /// as `make release` built them from `commit`; empty for releases made before images were.
    pub images: BTreeMap<String, String>,
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

/// One item of the releases file, before its fields are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRecord {
    version: String,
    #[serde(default)]
    yanked: bool,
    commit: String,
    sha256: String,
    #[serde(default)]
    images: BTreeMap<String, String>,
}

/// Whether `text` is `len` lowercase hex digits (how git prints a commit id and sha256sum a digest).
fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a commit id as recorded in the releases file: a full (40-digit) lowercase hex id, so it
/// names one commit for good (an abbreviated id can become ambiguous).
pub fn check_commit(commit: &str) -> anyhow::Result<()> {
    anyhow::ensure!(is_lower_hex(commit, 40), "commit {commit:?} is not a full commit id (40 lowercase hex digits)");
    Ok(())
}

/// Checks a digest as recorded in the releases file: 64 lowercase hex digits.
fn check_sha256(sha256: &str) -> anyhow::Result<()> {
    anyhow::ensure!(is_lower_hex(sha256, 64), "sha256 {sha256:?} is not a SHA-256 digest (64 lowercase hex digits)");
    Ok(())
}

/// Checks an image as recorded in the releases file: its name is lowercase letters and dashes, and
/// its reference names it by digest (`<repository>@sha256:<64 lowercase hex digits>`), the one form
/// a mirror can verify.
pub fn check_image(name: &str, reference: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
        "image name {name:?} is not lowercase letters and dashes"
    );
    let digest = reference.split_once("@sha256:").map(|(repository, digest)| (repository.is_empty(), digest));
    anyhow::ensure!(
        matches!(digest, Some((false, hex)) if is_lower_hex(hex, 64)),
        "image {name}: {reference:?} is not <repository>@sha256:<64 lowercase hex digits>"
    );
    Ok(())
}

/// Parses a releases file: a YAML list of `{version: X.Y.Z[-pre], commit: <40 hex>, sha256: <64
/// hex>, yanked: bool}` (`yanked` defaults to false; the other fields are required). Unknown keys
/// are rejected so that a misspelt `yanked` cannot silently leave a withdrawn bundle in the
/// channels, nor a misspelt `sha256` leave a released bundle unchecked.
pub fn parse_releases(yaml: &str) -> anyhow::Result<Vec<Release>> {
    let records: Vec<ReleaseRecord> = serde_yaml::from_str(yaml).context("expected a YAML list of releases")?;
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let version = Version::parse(&record.version)
                .with_context(|| format!("release #{}: {:?} is not a semver version", index + 1, record.version))?;
            check_commit(&record.commit)
                .and_then(|()| check_sha256(&record.sha256))
                .and_then(|()| record.images.iter().try_for_each(|(name, reference)| check_image(name, reference)))
                .with_context(|| format!("release #{} ({version})", index + 1))?;
            Ok(Release {
                version,
                yanked: record.yanked,
                commit: record.commit,
                sha256: record.sha256,
                images: record.images,
            })
        })
        .collect()
}

/// Reads and parses the releases file at `path` (see [`parse_releases`]).
pub fn read_releases(path: &Path) -> anyhow::Result<Vec<Release>> {
    let yaml = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_releases(&yaml).with_context(|| format!("parsing {}", path.display()))
}

/// The SHA-256 of `bytes` in lowercase hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The file of the catalog's bundles directory that holds the released bundle of `version`:
/// `<package>.v<version>.yaml`.
pub fn bundle_file_name(package: &str, version: &Version) -> String {
    format!("{}.yaml", bundle_name(package, version))
}

/// What is wrong with one file of the catalog's bundles directory; see [`check_bundles`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleProblem {
    /// A non-yanked release without its bundle file.
    #[error("missing: release {version} is listed in the releases file but its bundle file is not in the catalog")]
    Missing { file: String, version: Version },
    /// A released bundle that is no longer what was released.
    #[error(
        "changed since release {version}: its sha256 is {actual}, the releases file records {recorded}; \
         a released bundle never changes (restore it with git, or release a new version)"
    )]
    Changed { file: String, version: Version, recorded: String, actual: String },
    /// A yanked release whose bundle is still in the catalog (it must be in no channel, rule 5).
    #[error("release {version} is yanked: its bundle must be removed from the catalog")]
    Yanked { file: String, version: Version },
    /// A file that is no release's bundle.
    #[error("not the bundle of any release in the releases file; bundles are added only by `make release`")]
    Unlisted { file: String },
}

impl BundleProblem {
    /// The file name (in the bundles directory) the problem is about.
    pub fn file(&self) -> &str {
        match self {
            Self::Missing { file, .. }
            | Self::Changed { file, .. }
            | Self::Yanked { file, .. }
            | Self::Unlisted { file } => file,
        }
    }
}

/// Compares the contents of the catalog's bundles directory (file name → bytes) with the release
/// list: every non-yanked release has its [`bundle_file_name`] with exactly the recorded sha256, no
/// yanked release has one, and there is no other file. Problems come in file name order.
pub fn check_bundles(package: &str, releases: &[Release], files: &BTreeMap<String, Vec<u8>>) -> Vec<BundleProblem> {
    let by_file: BTreeMap<String, &Release> =
        releases.iter().map(|release| (bundle_file_name(package, &release.version), release)).collect();
    let mut problems: Vec<BundleProblem> = files
        .iter()
        .filter_map(|(file, bytes)| {
            let file = file.clone();
            let Some(release) = by_file.get(&file) else {
                return Some(BundleProblem::Unlisted { file });
            };
            let version = release.version.clone();
            if release.yanked {
                return Some(BundleProblem::Yanked { file, version });
            }
            let actual = sha256_hex(bytes);
            (actual != release.sha256).then(|| BundleProblem::Changed {
                file,
                version,
                recorded: release.sha256.clone(),
                actual,
            })
        })
        .collect();
    problems.extend(
        by_file
            .iter()
            .filter(|(file, release)| !release.yanked && !files.contains_key(*file))
            .map(|(file, release)| BundleProblem::Missing { file: file.clone(), version: release.version.clone() }),
    );
    problems.sort_by(|a, b| a.file().cmp(b.file()));
    problems
}

/// Reads every entry of the bundles directory `dir` (file name → bytes); a directory that does not
/// exist holds no bundle. A subdirectory or a name that is not UTF-8 is an error: only bundle
/// files belong there.
pub fn read_bundles(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
        result => result.with_context(|| format!("reading {}", dir.display()))?,
    };
    entries
        .map(|entry| {
            let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .with_context(|| format!("{}: not a UTF-8 file name", path.display()))?
                .to_owned();
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((name, bytes))
        })
        .collect()
}

/// The releases-file item of a new release, in the layout of the hand-written file.
fn release_item(version: &Version, commit: &str, sha256: &str, images: &BTreeMap<String, String>) -> String {
    let mut item = format!("- version: {version}\n  commit: {commit}\n  sha256: {sha256}\n");
    if !images.is_empty() {
        item.push_str("  images:\n");
        for (name, reference) in images {
            item.push_str(&format!("    {name}: {reference}\n"));
        }
    }
    item
}

/// Checks that `version` can be released: it is not listed yet, and the list with it still has an
/// upgrade graph (no build metadata).
pub fn check_new_release(package: &str, releases: &[Release], version: &Version) -> anyhow::Result<()> {
    anyhow::ensure!(!releases.iter().any(|r| r.version == *version), "{version} is already released");
    let placeholder = Release {
        version: version.clone(),
        yanked: false,
        commit: String::new(),
        sha256: String::new(),
        images: BTreeMap::new(),
    };
    let mut with_new = releases.to_vec();
    with_new.push(placeholder);
    channels(package, &with_new)?;
    Ok(())
}

/// Appends the release of `version`, built from `commit`, whose bundle is `bundle` (its SHA-256
/// is recorded) and whose images are `images` (name → reference by digest), to the releases file
/// `yaml`, and returns the new text. The existing text
/// (comments included) is kept as it is.
pub fn add_release(
    package: &str,
    yaml: &str,
    version: &Version,
    commit: &str,
    bundle: &[u8],
    images: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let releases = parse_releases(yaml)?;
    check_new_release(package, &releases, version)?;
    check_commit(commit)?;
    images.iter().try_for_each(|(name, reference)| check_image(name, reference))?;
    let mut text = yaml.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&release_item(version, commit, &sha256_hex(bundle), images));
    // The file stays one the parser reads back with the new release last.
    let reread = parse_releases(&text).context("the releases file with the new release does not parse")?;
    anyhow::ensure!(
        reread.len() == releases.len() + 1 && reread.last().is_some_and(|r| r.version == *version),
        "the releases file is not a plain YAML list: {version} cannot be appended to it"
    );
    Ok(text)
}

/// The OperatorHub.io submission of every release in the `stable` channel: the files below
/// `operators/<package>/` (see [`submission`]), from the catalog's bundles directory (file name →
/// bytes, as [`read_bundles`] reads it).
pub fn operatorhub_submission(
    package: &str,
    releases: &[Release],
    bundles: &BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<Vec<submission::File>> {
    let computed = channels(package, releases)?;
    let stable = computed.iter().find(|c| c.name == STABLE).context("no release is in the stable channel")?;
    let mut files = vec![("ci.yaml".to_owned(), submission::ci_yaml())];
    for entry in &stable.entries {
        let release = releases
            .iter()
            .find(|r| bundle_name(package, &r.version) == entry.name)
            .with_context(|| format!("{} is in no release", entry.name))?;
        let file = bundle_file_name(package, &release.version);
        let bytes = bundles.get(&file).with_context(|| format!("the catalog has no bundle file {file}"))?;
        let text = std::str::from_utf8(bytes).with_context(|| format!("{file} is not UTF-8"))?;
        files.extend(
            submission::release_files(package, &release.version, text, entry)
                .with_context(|| format!("from {file}"))?,
        );
    }
    Ok(files)
}

pub mod submission;

#[cfg(test)]
mod tests;
