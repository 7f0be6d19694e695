use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use proptest::prelude::*;

use super::*;

const PKG: &str = "neurallog-tenant-operator";
const OK: bool = false;
const YANKED: bool = true;
/// The commit and bundle digest of the releases built by [`releases`]; the channels ignore them.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// `sha256sum` of an empty file.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An expected entry: version, replaced version, skipRange, skipped versions.
type Want = (&'static str, Option<&'static str>, Option<&'static str>, &'static [&'static str]);

/// A release history: versions and whether each was yanked, in any order.
type History = &'static [(&'static str, bool)];

/// One release history and the channels it must produce; an empty channel must be left out.
struct Case {
    name: &'static str,
    releases: History,
    candidate: &'static [Want],
    stable: &'static [Want],
}

const CASES: &[Case] = &[
    Case { name: "no releases", releases: &[], candidate: &[], stable: &[] },
    Case {
        name: "a single release has no edges",
        releases: &[("0.1.0", OK)],
        candidate: &[("0.1.0", None, None, &[])],
        stable: &[("0.1.0", None, None, &[])],
    },
    Case {
        name: "patches, unsorted input",
        releases: &[("0.1.2", OK), ("0.1.0", OK), ("0.1.1", OK)],
        candidate: &[
            ("0.1.0", None, None, &[]),
            ("0.1.1", Some("0.1.0"), Some(">=0.1.0 <0.1.1"), &[]),
            ("0.1.2", Some("0.1.1"), Some(">=0.1.0 <0.1.2"), &[]),
        ],
        stable: &[
            ("0.1.0", None, None, &[]),
            ("0.1.1", Some("0.1.0"), Some(">=0.1.0 <0.1.1"), &[]),
            ("0.1.2", Some("0.1.1"), Some(">=0.1.0 <0.1.2"), &[]),
        ],
    },
    Case {
        name: "minors of major 0 share one range",
        releases: &[("0.2.0", OK), ("0.1.0", OK), ("0.3.0", OK), ("0.1.1", OK)],
        candidate: &[
            ("0.1.0", None, None, &[]),
            ("0.1.1", Some("0.1.0"), Some(">=0.1.0 <0.1.1"), &[]),
            ("0.2.0", Some("0.1.1"), Some(">=0.1.0 <0.2.0"), &[]),
            ("0.3.0", Some("0.2.0"), Some(">=0.1.0 <0.3.0"), &[]),
        ],
        stable: &[
            ("0.1.0", None, None, &[]),
            ("0.1.1", Some("0.1.0"), Some(">=0.1.0 <0.1.1"), &[]),
            ("0.2.0", Some("0.1.1"), Some(">=0.1.0 <0.2.0"), &[]),
            ("0.3.0", Some("0.2.0"), Some(">=0.1.0 <0.3.0"), &[]),
        ],
    },
    Case {
        name: "a range never crosses a major",
        releases: &[("1.1.0", OK), ("0.1.0", OK), ("2.0.0", OK), ("0.2.0", OK), ("1.0.1", OK), ("1.0.0", OK)],
        candidate: &[
            ("0.1.0", None, None, &[]),
            ("0.2.0", Some("0.1.0"), Some(">=0.1.0 <0.2.0"), &[]),
            ("1.0.0", Some("0.2.0"), None, &[]),
            ("1.0.1", Some("1.0.0"), Some(">=1.0.0 <1.0.1"), &[]),
            ("1.1.0", Some("1.0.1"), Some(">=1.0.0 <1.1.0"), &[]),
            ("2.0.0", Some("1.1.0"), None, &[]),
        ],
        stable: &[
            ("0.1.0", None, None, &[]),
            ("0.2.0", Some("0.1.0"), Some(">=0.1.0 <0.2.0"), &[]),
            ("1.0.0", Some("0.2.0"), None, &[]),
            ("1.0.1", Some("1.0.0"), Some(">=1.0.0 <1.0.1"), &[]),
            ("1.1.0", Some("1.0.1"), Some(">=1.0.0 <1.1.0"), &[]),
            ("2.0.0", Some("1.1.0"), None, &[]),
        ],
    },
    Case {
        name: "pre-releases only in candidate",
        releases: &[("0.2.0", OK), ("0.2.0-rc.1", OK), ("0.1.0", OK)],
        candidate: &[
            ("0.1.0", None, None, &[]),
            ("0.2.0-rc.1", Some("0.1.0"), Some(">=0.1.0 <0.2.0-rc.1"), &[]),
            ("0.2.0", Some("0.2.0-rc.1"), Some(">=0.1.0 <0.2.0"), &[]),
        ],
        stable: &[("0.1.0", None, None, &[]), ("0.2.0", Some("0.1.0"), Some(">=0.1.0 <0.2.0"), &[])],
    },
    Case {
        name: "pre-releases sort by precedence, a new major starts at its first candidate",
        releases: &[("1.0.0", OK), ("1.0.0-rc.10", OK), ("0.3.0", OK), ("1.0.0-rc.2", OK), ("1.0.0-alpha", OK)],
        candidate: &[
            ("0.3.0", None, None, &[]),
            ("1.0.0-alpha", Some("0.3.0"), None, &[]),
            ("1.0.0-rc.2", Some("1.0.0-alpha"), Some(">=1.0.0-alpha <1.0.0-rc.2"), &[]),
            ("1.0.0-rc.10", Some("1.0.0-rc.2"), Some(">=1.0.0-alpha <1.0.0-rc.10"), &[]),
            ("1.0.0", Some("1.0.0-rc.10"), Some(">=1.0.0-alpha <1.0.0"), &[]),
        ],
        stable: &[("0.3.0", None, None, &[]), ("1.0.0", Some("0.3.0"), None, &[])],
    },
    Case {
        name: "only pre-releases: no stable channel",
        releases: &[("0.1.0-alpha.1", OK), ("0.1.0-alpha.2", OK)],
        candidate: &[
            ("0.1.0-alpha.1", None, None, &[]),
            ("0.1.0-alpha.2", Some("0.1.0-alpha.1"), Some(">=0.1.0-alpha.1 <0.1.0-alpha.2"), &[]),
        ],
        stable: &[],
    },
    Case {
        name: "a yanked patch is excluded and skipped by the next release",
        releases: &[("0.1.0", OK), ("0.1.1", YANKED), ("0.1.2", OK), ("0.1.3", OK)],
        candidate: &[
            ("0.1.0", None, None, &[]),
            ("0.1.2", Some("0.1.0"), Some(">=0.1.0 <0.1.2"), &["0.1.1"]),
            ("0.1.3", Some("0.1.2"), Some(">=0.1.0 <0.1.3"), &[]),
        ],
        stable: &[
            ("0.1.0", None, None, &[]),
            ("0.1.2", Some("0.1.0"), Some(">=0.1.0 <0.1.2"), &["0.1.1"]),
            ("0.1.3", Some("0.1.2"), Some(">=0.1.0 <0.1.3"), &[]),
        ],
    },
    Case {
        name: "consecutive yanked releases are all skipped",
        releases: &[("0.1.0", OK), ("0.1.1", YANKED), ("0.2.0", YANKED), ("0.2.1", OK)],
        candidate: &[("0.1.0", None, None, &[]), ("0.2.1", Some("0.1.0"), Some(">=0.1.0 <0.2.1"), &["0.1.1", "0.2.0"])],
        stable: &[("0.1.0", None, None, &[]), ("0.2.1", Some("0.1.0"), Some(">=0.1.0 <0.2.1"), &["0.1.1", "0.2.0"])],
    },
    Case {
        name: "a yanked first release still sets the range floor",
        releases: &[("0.1.0", YANKED), ("0.1.1", OK), ("0.2.0", OK)],
        candidate: &[("0.1.1", None, None, &["0.1.0"]), ("0.2.0", Some("0.1.1"), Some(">=0.1.0 <0.2.0"), &[])],
        stable: &[("0.1.1", None, None, &["0.1.0"]), ("0.2.0", Some("0.1.1"), Some(">=0.1.0 <0.2.0"), &[])],
    },
    Case {
        name: "a yanked latest release waits for the next one",
        releases: &[("0.1.0", OK), ("0.1.1", YANKED)],
        candidate: &[("0.1.0", None, None, &[])],
        stable: &[("0.1.0", None, None, &[])],
    },
    Case {
        name: "a yanked pre-release is skipped in candidate only",
        releases: &[("0.1.0", OK), ("0.2.0-rc.1", YANKED), ("0.2.0", OK)],
        candidate: &[("0.1.0", None, None, &[]), ("0.2.0", Some("0.1.0"), Some(">=0.1.0 <0.2.0"), &["0.2.0-rc.1"])],
        stable: &[("0.1.0", None, None, &[]), ("0.2.0", Some("0.1.0"), Some(">=0.1.0 <0.2.0"), &[])],
    },
    Case {
        name: "a yanked first release of a major",
        releases: &[("0.3.0", OK), ("1.0.0", YANKED), ("1.0.1", OK)],
        candidate: &[("0.3.0", None, None, &[]), ("1.0.1", Some("0.3.0"), Some(">=1.0.0 <1.0.1"), &["1.0.0"])],
        stable: &[("0.3.0", None, None, &[]), ("1.0.1", Some("0.3.0"), Some(">=1.0.0 <1.0.1"), &["1.0.0"])],
    },
    Case { name: "everything yanked: no channels", releases: &[("0.1.0", YANKED)], candidate: &[], stable: &[] },
];

fn version(text: &str) -> Version {
    Version::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn name(text: &str) -> String {
    bundle_name(PKG, &version(text))
}

fn release(text: &str, yanked: bool) -> Release {
    Release {
        version: version(text),
        yanked,
        commit: COMMIT.to_owned(),
        sha256: EMPTY_SHA256.to_owned(),
        images: BTreeMap::new(),
    }
}

fn releases(list: &[(&str, bool)]) -> Vec<Release> {
    list.iter().map(|&(text, yanked)| release(text, yanked)).collect()
}

/// The channels a case expects, in the order [`channels`] returns them.
fn expected(case: &Case) -> Vec<Channel> {
    [(CANDIDATE, case.candidate), (STABLE, case.stable)]
        .into_iter()
        .filter(|(_, wants)| !wants.is_empty())
        .map(|(channel, wants)| Channel {
            name: channel.to_owned(),
            entries: wants
                .iter()
                .map(|&(entry, replaces, skip_range, skips)| Entry {
                    name: name(entry),
                    replaces: replaces.map(name),
                    skip_range: skip_range.map(str::to_owned),
                    skips: skips.iter().copied().map(name).collect(),
                })
                .collect(),
        })
        .collect()
}

#[test]
fn tables() {
    for case in CASES {
        let list = releases(case.releases);
        let got = channels(PKG, &list).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(got, expected(case), "{}", case.name);
        check_graph(&list, &got).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}

#[test]
fn output_does_not_depend_on_input_order() {
    for case in CASES {
        let mut list = releases(case.releases);
        let forward = channels(PKG, &list).unwrap();
        list.reverse();
        assert_eq!(channels(PKG, &list).unwrap(), forward, "{}", case.name);
    }
}

#[test]
fn rejected_release_lists() {
    let cases: [(&str, History, GraphError); 5] = [
        ("duplicate", &[("0.1.0", OK), ("0.2.0", OK), ("0.1.0", OK)], GraphError::Duplicate(version("0.1.0"))),
        ("duplicate, one yanked", &[("0.1.0", YANKED), ("0.1.0", OK)], GraphError::Duplicate(version("0.1.0"))),
        (
            "duplicate pre-release",
            &[("0.2.0-rc.1", OK), ("0.2.0-rc.1", OK)],
            GraphError::Duplicate(version("0.2.0-rc.1")),
        ),
        ("build metadata", &[("0.1.0", OK), ("0.1.1+abc", OK)], GraphError::BuildMetadata(version("0.1.1+abc"))),
        (
            "versions differing only in build metadata",
            &[("0.1.0+a", OK), ("0.1.0+b", OK)],
            GraphError::BuildMetadata(version("0.1.0+a")),
        ),
    ];
    for (case, list, want) in cases {
        assert_eq!(channels(PKG, &releases(list)), Err(want), "{case}");
    }
}

#[test]
fn renders_channel_blobs() {
    let list = releases(&[("0.1.0", OK), ("0.1.1", YANKED), ("0.2.0-rc.1", OK), ("0.2.0", OK)]);
    let mut got = channels(PKG, &list).unwrap();
    // Rendering sorts by name whatever the input order.
    got.reverse();
    let want = "\
---
schema: olm.channel
package: neurallog-tenant-operator
name: candidate
entries:
- name: neurallog-tenant-operator.v0.1.0
- name: neurallog-tenant-operator.v0.2.0-rc.1
  replaces: neurallog-tenant-operator.v0.1.0
  skipRange: '>=0.1.0 <0.2.0-rc.1'
  skips:
  - neurallog-tenant-operator.v0.1.1
- name: neurallog-tenant-operator.v0.2.0
  replaces: neurallog-tenant-operator.v0.2.0-rc.1
  skipRange: '>=0.1.0 <0.2.0'
---
schema: olm.channel
package: neurallog-tenant-operator
name: stable
entries:
- name: neurallog-tenant-operator.v0.1.0
- name: neurallog-tenant-operator.v0.2.0
  replaces: neurallog-tenant-operator.v0.1.0
  skipRange: '>=0.1.0 <0.2.0'
  skips:
  - neurallog-tenant-operator.v0.1.1
";
    assert_eq!(render_channels(PKG, &got), want);
    assert_eq!(render_channels(PKG, &[]), "");
}

/// A releases-file item with [`COMMIT`] and [`EMPTY_SHA256`], and `extra` lines (indented).
fn item(version: &str, extra: &str) -> String {
    format!("- version: {version}\n  commit: {COMMIT}\n  sha256: {EMPTY_SHA256}\n{extra}")
}

#[test]
fn parses_releases_files() {
    let yaml = [
        "# comment\n".to_owned(),
        item("0.1.0", "  yanked: false\n"),
        item("0.2.0-rc.1", ""),
        item("0.1.1", "  yanked: true\n"),
    ]
    .concat();
    let list = parse_releases(&yaml).unwrap();
    assert_eq!(list, releases(&[("0.1.0", OK), ("0.2.0-rc.1", OK), ("0.1.1", YANKED)]));
    assert_eq!(parse_releases("[]").unwrap(), []);
    // Keys in any order, flow style; a commit id of digits only stays the text it is, not a number.
    let digits = "1234567890".repeat(4);
    let list = parse_releases(&format!("- {{sha256: {EMPTY_SHA256}, commit: {digits}, version: 0.3.0}}\n")).unwrap();
    assert_eq!(list[0].commit, digits);

    let short_commit = "- version: 0.1.0\n  commit: 3916b03\n  sha256: x\n";
    let upper_sha = format!("- version: 0.1.0\n  commit: {COMMIT}\n  sha256: {}\n", EMPTY_SHA256.to_uppercase());
    let no_sha = format!("- version: 0.1.0\n  commit: {COMMIT}\n");
    let no_commit = format!("- version: 0.1.0\n  sha256: {EMPTY_SHA256}\n");
    for (case, yaml, message) in [
        ("misspelt key", item("0.1.0", "  yank: true\n"), "unknown field `yank`"),
        ("misspelt sha256", item("0.1.0", "  sha265: x\n"), "unknown field `sha265`"),
        ("not a version", item("0.1.0", "") + &item("v0.2", ""), "release #2: \"v0.2\" is not a semver version"),
        ("a YAML float", item("1.0", ""), "release #1: \"1.0\" is not a semver version"),
        ("not a list", "version: 0.1.0\n".to_owned(), "expected a YAML list of releases"),
        ("no sha256", no_sha, "missing field `sha256`"),
        ("no commit", no_commit, "missing field `commit`"),
        (
            "abbreviated commit",
            short_commit.to_owned(),
            "release #1 (0.1.0): commit \"3916b03\" is not a full commit id",
        ),
        ("upper-case digest", upper_sha, "release #1 (0.1.0): sha256 \"E3B0"),
    ] {
        let error = format!("{:#}", parse_releases(&yaml).unwrap_err());
        assert!(error.contains(message), "{case}: {error}");
    }
}

#[test]
fn reads_the_committed_releases_file() {
    // Cargo's variable at run time, not at compile time: a test binary cached outside the clone
    // may have been compiled in another checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
    let path = Path::new(&manifest_dir).join("../../catalog/releases.yaml");
    let list = read_releases(&path).unwrap();
    let first = list.first().expect("0.1.0 is released");
    assert_eq!((first.version.to_string(), first.yanked), ("0.1.0".to_owned(), false));
    assert_eq!(first.commit, "3916b0317dfbaab753e4ea2e35853e421cce3d84");
    let error = format!("{:#}", read_releases(Path::new("/nonexistent/releases.yaml")).unwrap_err());
    assert!(error.contains("reading /nonexistent/releases.yaml"), "{error}");
}

#[test]
fn sha256_is_sha256sum() {
    assert_eq!(sha256_hex(b""), EMPTY_SHA256);
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/// A bundles directory: file names and contents.
fn files(list: &[(impl AsRef<str>, &str)]) -> BTreeMap<String, Vec<u8>> {
    list.iter().map(|(file, text)| (file.as_ref().to_owned(), text.as_bytes().to_vec())).collect()
}

#[test]
fn released_bundles_are_checked_byte_for_byte() {
    let file = |v: &str| bundle_file_name(PKG, &version(v));
    assert_eq!(file("0.1.0"), "neurallog-tenant-operator.v0.1.0.yaml");
    let mut list = releases(&[("0.1.0", OK), ("0.1.1", YANKED), ("0.2.0", OK)]);
    list[2].sha256 = sha256_hex(b"bundle 0.2.0\n");
    let exact = [(file("0.1.0"), ""), (file("0.2.0"), "bundle 0.2.0\n")];
    assert_eq!(check_bundles(PKG, &list, &files(&exact)), []);
    assert_eq!(check_bundles(PKG, &[], &BTreeMap::new()), []);

    // One byte changed, a release without its file, a yanked bundle left, a file of no release.
    let wrong =
        [(file("0.2.0"), "bundle 0.2.1\n"), (file("0.1.1"), ""), (file("0.3.0"), ""), ("notes.txt".to_owned(), "")];
    let problems = check_bundles(PKG, &list, &files(&wrong));
    let want = vec![
        BundleProblem::Missing { file: file("0.1.0"), version: version("0.1.0") },
        BundleProblem::Yanked { file: file("0.1.1"), version: version("0.1.1") },
        BundleProblem::Changed {
            file: file("0.2.0"),
            version: version("0.2.0"),
            recorded: sha256_hex(b"bundle 0.2.0\n"),
            actual: sha256_hex(b"bundle 0.2.1\n"),
        },
        BundleProblem::Unlisted { file: file("0.3.0") },
        BundleProblem::Unlisted { file: "notes.txt".to_owned() },
    ];
    assert_eq!(problems, want);
    let files_named: Vec<&str> = problems.iter().map(BundleProblem::file).collect();
    assert_eq!(files_named, [&file("0.1.0"), &file("0.1.1"), &file("0.2.0"), &file("0.3.0"), "notes.txt"]);
    let changed = problems[2].to_string();
    assert!(changed.starts_with("changed since release 0.2.0: its sha256 is "), "{changed}");
}

#[test]
fn reads_bundles_directories() {
    let dir = std::env::temp_dir().join(format!("release-bundles-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(read_bundles(&dir).unwrap(), BTreeMap::new(), "a missing directory holds no bundle");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), "a\n").unwrap();
    std::fs::write(dir.join("b.yaml"), "").unwrap();
    assert_eq!(read_bundles(&dir).unwrap(), files(&[("a.yaml", "a\n"), ("b.yaml", "")]));
    std::fs::create_dir(dir.join("sub")).unwrap();
    assert!(read_bundles(&dir).is_err(), "a subdirectory is not a bundle file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn adds_releases() {
    let head = "# Every released version.\n".to_owned() + &item("0.1.0", "");
    let bundle = b"bundle 0.2.0\n";
    let text = add_release(PKG, &head, &version("0.2.0"), COMMIT, bundle, &BTreeMap::new()).unwrap();
    let want_item = format!("- version: 0.2.0\n  commit: {COMMIT}\n  sha256: {}\n", sha256_hex(bundle));
    assert_eq!(text, head.clone() + &want_item, "appended, the existing text kept");
    let list = parse_releases(&text).unwrap();
    assert_eq!((list.len(), list[1].sha256.as_str()), (2, sha256_hex(bundle).as_str()));
    // A file without a final newline, or with only comments.
    assert_eq!(add_release(PKG, head.trim_end(), &version("0.2.0"), COMMIT, bundle, &BTreeMap::new()).unwrap(), text);
    assert_eq!(
        add_release(PKG, "# none yet\n", &version("0.1.0"), COMMIT, b"", &BTreeMap::new()).unwrap(),
        "# none yet\n".to_owned() + &item("0.1.0", "")
    );

    for (case, yaml, new, commit, message) in [
        ("already released", head.clone(), "0.1.0", COMMIT, "0.1.0 is already released"),
        ("yanked counts as released", item("0.1.0", "  yanked: true\n"), "0.1.0", COMMIT, "0.1.0 is already released"),
        ("build metadata", head.clone(), "0.2.0+abc", COMMIT, "build metadata"),
        ("abbreviated commit", head.clone(), "0.2.0", "3916b03", "not a full commit id"),
        (
            "flow-style list",
            format!("[{{version: 0.1.0, commit: {COMMIT}, sha256: {EMPTY_SHA256}}}]\n"),
            "0.2.0",
            COMMIT,
            "does not parse",
        ),
        ("broken file", item("0.1.0", "  yank: true\n"), "0.2.0", COMMIT, "unknown field `yank`"),
    ] {
        let error =
            format!("{:#}", add_release(PKG, &yaml, &version(new), commit, bundle, &BTreeMap::new()).unwrap_err());
        assert!(error.contains(message), "{case}: {error}");
    }
    assert!(check_new_release(PKG, &releases(&[("0.1.0", OK)]), &version("0.2.0-rc.1")).is_ok());
}

proptest! {
    /// Any history of unique versions, some yanked, gives channels that pass the checker.
    #[test]
    fn random_histories_give_valid_graphs(
        picks in proptest::collection::btree_map((0u64..3, 0u64..3, 0u64..3, 0u64..3), any::<bool>(), 0..12),
    ) {
        let list: Vec<Release> = picks
            .into_iter()
            .map(|((major, minor, patch, pre), yanked)| {
                let text = match pre {
                    0 => format!("{major}.{minor}.{patch}"),
                    n => format!("{major}.{minor}.{patch}-rc.{n}"),
                };
                release(&text, yanked)
            })
            .collect();
        let got = channels(PKG, &list).unwrap();
        if let Err(e) = check_graph(&list, &got) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// Checks what `opm validate` checks of a channel, plus the properties the rules promise:
///
/// - every qualifying non-yanked release is an entry, ascending, and no yanked one is;
/// - `replaces` targets are entries of the channel; no `replaces` cycle;
/// - exactly one head (no incoming `replaces`/`skips` edge), the highest version;
/// - the head's `replaces` chain reaches every entry that is not skipped, and every entry is
///   reachable from the head through `replaces`/`skips`;
/// - `skipRange` and `skips` only next to `replaces` (except skips of yanked bundles below the
///   first entry); a skipRange parses as a blang/semver range, stays within the entry's major and
///   below the entry;
/// - every earlier qualifying release of the same major, yanked or not, has a one-hop edge to each
///   entry; every yanked release below the head is skipped by some entry.
fn check_graph(releases: &[Release], channels: &[Channel]) -> Result<(), String> {
    let qualifies = |channel: &str, v: &Version| channel == CANDIDATE || v.pre.is_empty();
    for wanted in [CANDIDATE, STABLE] {
        let present = channels.iter().any(|c| c.name == wanted);
        let expected = releases.iter().any(|r| !r.yanked && qualifies(wanted, &r.version));
        if present != expected {
            return Err(format!("channel {wanted}: present {present}, expected {expected}"));
        }
    }
    for channel in channels {
        let fail = |message: String| Err(format!("channel {}: {message}", channel.name));
        let prefix = format!("{PKG}.v");
        let versions: Vec<Version> = channel
            .entries
            .iter()
            .map(|e| version(e.name.strip_prefix(&prefix).expect("bundle name prefix")))
            .collect();
        let mut want_versions: Vec<Version> = releases
            .iter()
            .filter(|r| !r.yanked && qualifies(&channel.name, &r.version))
            .map(|r| r.version.clone())
            .collect();
        want_versions.sort();
        if versions != want_versions {
            return fail(format!("entries {versions:?}, expected {want_versions:?}"));
        }
        let names: HashSet<&str> = channel.entries.iter().map(|e| e.name.as_str()).collect();
        let by_name = |n: &str| channel.entries.iter().find(|e| e.name == n);

        for entry in &channel.entries {
            if let Some(replaced) = &entry.replaces
                && !names.contains(replaced.as_str())
            {
                return fail(format!("{} replaces {replaced}, not in the channel", entry.name));
            }
        }

        let incoming: HashSet<&str> =
            channel.entries.iter().flat_map(|e| e.replaces.iter().chain(&e.skips)).map(String::as_str).collect();
        let heads: Vec<&str> =
            channel.entries.iter().map(|e| e.name.as_str()).filter(|n| !incoming.contains(n)).collect();
        let last = channel.entries.last().expect("channels are not empty");
        if heads != [last.name.as_str()] {
            return fail(format!("heads {heads:?}, expected only {}", last.name));
        }

        let mut chain = HashSet::new();
        let mut at = Some(last);
        while let Some(entry) = at {
            if !chain.insert(entry.name.as_str()) {
                return fail(format!("replaces cycle through {}", entry.name));
            }
            at = entry.replaces.as_deref().and_then(by_name);
        }
        let skipped: HashSet<&str> = channel.entries.iter().flat_map(|e| &e.skips).map(String::as_str).collect();
        if let Some(stranded) = names.iter().find(|n| !chain.contains(*n) && !skipped.contains(*n)) {
            return fail(format!("{stranded} is stranded: not on the head's replaces chain nor skipped"));
        }

        let mut reached = BTreeSet::from([last.name.as_str()]);
        let mut queue = vec![last];
        while let Some(entry) = queue.pop() {
            for next in entry.replaces.iter().chain(&entry.skips).filter_map(|n| by_name(n)) {
                if reached.insert(next.name.as_str()) {
                    queue.push(next);
                }
            }
        }
        if reached.len() != names.len() {
            return fail(format!("only {reached:?} reachable from the head"));
        }

        for (index, (entry, entry_version)) in channel.entries.iter().zip(&versions).enumerate() {
            if entry.replaces.is_none() && (entry.skip_range.is_some() || index > 0) {
                return fail(format!("{} has a skipRange or a predecessor but no replaces", entry.name));
            }
            let range = match &entry.skip_range {
                Some(text) => {
                    let range = parse_range(text).map_err(|e| format!("{}: {e}", entry.name))?;
                    let floor = range.iter().find(|(op, _)| matches!(*op, ">=" | ">"));
                    let ceiling = range.iter().find(|(op, _)| matches!(*op, "<" | "<="));
                    match (floor, ceiling) {
                        (Some((_, low)), Some((op, high)))
                            if low.major == entry_version.major
                                && (high < entry_version || (*op == "<" && high == entry_version)) => {}
                        _ => return fail(format!("{}: skipRange {text} is not bounded within its major", entry.name)),
                    }
                    range
                }
                None => Vec::new(),
            };
            for earlier in releases
                .iter()
                .map(|r| &r.version)
                .filter(|v| qualifies(&channel.name, v) && v.major == entry_version.major && *v < entry_version)
            {
                let earlier_name = bundle_name(PKG, earlier);
                let one_hop = entry.replaces.as_ref() == Some(&earlier_name)
                    || entry.skips.contains(&earlier_name)
                    || (!range.is_empty() && range_contains(&range, earlier));
                if !one_hop {
                    return fail(format!("no one-hop edge from {earlier_name} to {}", entry.name));
                }
            }
        }

        for yanked in releases.iter().filter(|r| r.yanked && qualifies(&channel.name, &r.version)) {
            let yanked_name = bundle_name(PKG, &yanked.version);
            if yanked.version < versions[versions.len() - 1] && !skipped.contains(yanked_name.as_str()) {
                return fail(format!("yanked {yanked_name} is skipped by no entry"));
            }
        }
    }
    Ok(())
}

/// Parses a blang/semver range as OLM does for `skipRange`, restricted to what a range needs here:
/// comparators (`>=`, `>`, `<=`, `<`, `=`, `!=`) separated by single spaces, all of which must hold.
fn parse_range(text: &str) -> Result<Vec<(&str, Version)>, String> {
    if text.is_empty() || text.split(' ').any(str::is_empty) {
        return Err(format!("range {text:?}: comparators must be separated by single spaces"));
    }
    text.split(' ')
        .map(|comparator| {
            let at = comparator.find(|c: char| c.is_ascii_digit()).ok_or(format!("{comparator:?}: no version"))?;
            let (op, v) = comparator.split_at(at);
            if !matches!(op, ">=" | ">" | "<=" | "<" | "=" | "!=") {
                return Err(format!("{comparator:?}: unknown operator {op:?}"));
            }
            Ok((op, Version::parse(v).map_err(|e| format!("{comparator:?}: {e}"))?))
        })
        .collect()
}

/// Whether `v` satisfies every comparator, with semver precedence as blang compares.
fn range_contains(range: &[(&str, Version)], v: &Version) -> bool {
    range.iter().all(|(op, bound)| match *op {
        ">=" => v >= bound,
        ">" => v > bound,
        "<=" => v <= bound,
        "<" => v < bound,
        "=" => v == bound,
        _ => v != bound,
    })
}

#[test]
fn range_checker_self_test() {
    let range = parse_range(">=0.1.0 <0.2.0").unwrap();
    for (v, inside) in [("0.0.9", false), ("0.1.0", true), ("0.2.0-rc.1", true), ("0.2.0", false)] {
        assert_eq!(range_contains(&range, &version(v)), inside, "{v}");
    }
    for bad in ["", ">=0.1.0  <0.2.0", ">=0.1.0,<0.2.0", "~0.1.0", ">=0.1"] {
        assert!(parse_range(bad).is_err(), "{bad:?}");
    }
}

/// An `opm render` bundle document holding `objects` (JSON) as `olm.bundle.object` properties.
fn rendered_bundle(name: &str, objects: &[serde_json::Value]) -> String {
    use base64::Engine as _;
    let properties: Vec<serde_json::Value> = objects
        .iter()
        .map(|object| {
            let data = base64::engine::general_purpose::STANDARD.encode(object.to_string());
            serde_json::json!({"type": "olm.bundle.object", "value": {"data": data}})
        })
        .collect();
    let document = serde_json::json!({"schema": "olm.bundle", "name": name, "image": "", "properties": properties});
    serde_yaml::to_string(&document).unwrap()
}

fn csv(version: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
        "metadata": {"name": name(version), "annotations": {"capabilities": "Deep Insights"}},
        "spec": {"version": version},
    })
}

#[test]
fn a_submission_carries_each_release_as_released_with_its_upgrade_edges() {
    let crd = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "tenants.neurallog.io"},
        // YAML 1.1 reads a bare `no` as false: the submission must keep it a string.
        "spec": {"enum": ["always", "everysec", "no"]},
    });
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"},
    });
    let list = releases(&[("0.1.0", OK), ("0.2.0", YANKED), ("0.3.0-rc.1", OK), ("0.3.0", OK)]);
    let bundles = files(&[
        (bundle_file_name(PKG, &version("0.1.0")), &rendered_bundle(&name("0.1.0"), &[csv("0.1.0"), crd.clone()])),
        (bundle_file_name(PKG, &version("0.3.0-rc.1")), &rendered_bundle(&name("0.3.0-rc.1"), &[csv("0.3.0-rc.1")])),
        (bundle_file_name(PKG, &version("0.3.0")), &rendered_bundle(&name("0.3.0"), &[csv("0.3.0"), crd, role])),
    ]);
    let submission: BTreeMap<String, String> =
        operatorhub_submission(PKG, &list, &bundles).unwrap().into_iter().collect();
    // Stable releases only; every object in its own file, named as operator-sdk names them.
    assert_eq!(
        submission.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "0.1.0/manifests/neurallog-tenant-operator.clusterserviceversion.yaml",
            "0.1.0/manifests/neurallog.io_tenants.yaml",
            "0.1.0/metadata/annotations.yaml",
            "0.3.0/manifests/neurallog-tenant-operator.clusterserviceversion.yaml",
            "0.3.0/manifests/neurallog.io_tenants.yaml",
            "0.3.0/manifests/reader_rbac.authorization.k8s.io_v1_clusterrole.yaml",
            "0.3.0/metadata/annotations.yaml",
            "ci.yaml",
        ]
    );
    assert!(submission["ci.yaml"].contains("\nupdateGraph: replaces-mode\n"));
    let parse = |file: &str| -> serde_json::Value { serde_yaml::from_str(&submission[file]).unwrap() };
    let first = parse("0.1.0/manifests/neurallog-tenant-operator.clusterserviceversion.yaml");
    assert_eq!(first, csv("0.1.0"), "the first release replaces nothing and is otherwise as released");
    let head = parse("0.3.0/manifests/neurallog-tenant-operator.clusterserviceversion.yaml");
    assert_eq!(head["spec"]["replaces"], name("0.1.0"));
    assert_eq!(head["spec"]["skips"], serde_json::json!([name("0.2.0")]));
    assert_eq!(head["metadata"]["annotations"]["olm.skipRange"], ">=0.1.0 <0.3.0");
    assert_eq!(head["metadata"]["annotations"]["capabilities"], "Deep Insights");
    assert_eq!(parse("0.3.0/manifests/neurallog.io_tenants.yaml")["spec"]["enum"][2], "no");
    assert!(submission["0.3.0/metadata/annotations.yaml"].contains("bundle.package.v1: neurallog-tenant-operator\n"));
}

#[test]
fn a_submission_refuses_bundles_that_are_not_the_release() {
    let list = releases(&[("0.1.0", OK)]);
    let file = bundle_file_name(PKG, &version("0.1.0"));
    for (case, bundle, message) in [
        ("missing", None, "the catalog has no bundle file"),
        ("another bundle", Some(rendered_bundle(&name("0.2.0"), &[csv("0.2.0")])), "is not the olm.bundle"),
        ("another version", Some(rendered_bundle(&name("0.1.0"), &[csv("0.2.0")])), "says version"),
        ("no CSV", Some(rendered_bundle(&name("0.1.0"), &[])), "holds 0 ClusterServiceVersions"),
        ("two CSVs", Some(rendered_bundle(&name("0.1.0"), &[csv("0.1.0"), csv("0.1.0")])), "map to the file"),
        ("not YAML", Some("{".to_owned()), "not one YAML document"),
    ] {
        let bundles = bundle.map(|text| files(&[(file.clone(), text.as_str())])).unwrap_or_default();
        let error = format!("{:#}", operatorhub_submission(PKG, &list, &bundles).unwrap_err());
        assert!(error.contains(message), "{case}: {error}");
    }
}

#[test]
fn releases_record_their_images_by_digest() {
    let digest = |c: char| c.to_string().repeat(64);
    let images: BTreeMap<String, String> = [
        ("operator", format!("neurallog/tenant-operator@sha256:{}", digest('a'))),
        ("bundle", format!("neurallog/tenant-operator-bundle@sha256:{}", digest('b'))),
    ]
    .into_iter()
    .map(|(name, reference)| (name.to_owned(), reference))
    .collect();
    let head = item("0.1.0", "");
    let text = add_release(PKG, &head, &version("0.2.0"), COMMIT, b"b", &images).unwrap();
    assert!(
        text.ends_with(&format!(
            "  images:\n    bundle: neurallog/tenant-operator-bundle@sha256:{}\n    operator: neurallog/tenant-operator@sha256:{}\n",
            digest('b'),
            digest('a')
        )),
        "{text}"
    );
    let list = parse_releases(&text).unwrap();
    assert_eq!((list[0].images.len(), &list[1].images), (0, &images));

    for (case, name, reference, message) in [
        ("by tag", "operator", "neurallog/tenant-operator:0.2.0".to_owned(), "is not <repository>@sha256:"),
        ("short digest", "operator", "neurallog/tenant-operator@sha256:abc".to_owned(), "is not <repository>@sha256:"),
        ("no repository", "operator", format!("@sha256:{}", digest('a')), "is not <repository>@sha256:"),
        ("upper-case digest", "bundle", format!("r@sha256:{}", digest('A')), "is not <repository>@sha256:"),
        ("odd name", "Operator", format!("r@sha256:{}", digest('a')), "image name \"Operator\""),
    ] {
        let images = BTreeMap::from([(name.to_owned(), reference.clone())]);
        let error = format!("{:#}", add_release(PKG, &head, &version("0.2.0"), COMMIT, b"b", &images).unwrap_err());
        assert!(error.contains(message), "{case}: {error}");
        let file = head.clone() + &item("0.2.0", &format!("  images:\n    {name}: \"{reference}\"\n"));
        let error = format!("{:#}", parse_releases(&file).unwrap_err());
        assert!(error.contains("release #2 (0.2.0)") && error.contains(message), "{case} in a file: {error}");
    }
}
