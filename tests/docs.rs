//! The documentation says only what the code and the tree hold.
//!
//! Read: `README.md`, every `docs/**/*.md`, the descriptions of the generated CRD (what `kubectl
//! explain` shows; they come from the doc comments in `src/api/`) and the base CSV's
//! `spec.description` (what OperatorHub shows). In the Markdown, names are taken from code spans
//! (backticks, possibly across a line break) and from fenced code blocks; in the two descriptions,
//! from their whole text. The rules, each a candidate only when it matches:
//!
//! - **file path**: a token without spaces whose first segment is a top-level entry of the tree
//!   (`src/...`, `config/...`, `.local/...`) or a bare file name ending in `.rs`, `.sh`, `.md`,
//!   `.toml` or `.yaml`; placeholders (`<name>`, `{a,b}`, `$VAR`) are skipped, `*` is a glob
//!   within one segment. It must be a tracked file or directory (`git ls-files`; a bare name:
//!   some tracked file's name). Relative Markdown links must reach a tracked file too.
//! - **make target**: the words after `make` up to the first that is not a target
//!   (`VAR=value` skipped; in code blocks only the command, not its `#` comment). Each must be a
//!   target of the Makefile.
//! - **CLI flag**: `--flag` alone in a span, or on a command line of `tenant-operator` (the
//!   subcommand's flags when it is named), or anywhere in the CRD's and CSV's descriptions. It
//!   must be a flag of `Cli::command()`, read at run time (new flags and subcommands need no
//!   change here).
//! - **environment variable**: an upper-case name with an underscore starting with a known
//!   prefix (`ENV_PREFIXES`), or any variable of the CLI (`KUBECONFIG`, `POD_NAME`...); `X_*`
//!   matches any name that starts with `X_`. It must be a flag's variable, an upper-case string
//!   literal of the Rust sources, or a name the Makefile or `tools/*.sh` use.
//! - **metric**: `neurallog_tenant_operator_...` (a trailing `*` matches a prefix): a metric of
//!   `Metrics::default()`, each labelled family given one sample so that it shows (with the
//!   `_total`, `_bucket`, `_sum`, `_count` sample names).
//! - **condition type or reason**: a CamelCase span in a paragraph that says condition, reason,
//!   Event or Warning, or either side of `Type=Status/Reason`. It must be a string literal of the
//!   operator's sources outside their tests (`src/`: the condition types and reasons of
//!   `model::state`, the Event reasons of `controller::events`, the error reasons of
//!   `controller::error`, `auth::error` and the migration), or in `ALLOWED`.
//! - **flag table**: in a table whose header starts `| flag | env |`, each flag's variable is
//!   one of the row's variables, and a default given as a number or a code span is the flag's.
//!
//! Shell blocks whose info string is `sh runnable` must run offline, without a cluster: each is
//! run with `sh -e` from the repository's root, with the built `tenant-operator` first on `PATH`,
//! and must exit 0.
//!
//! Every missing name is printed with its file and line (for the CRD: the field), then the test
//! fails.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory as _;
use neurallog_tenant_operator::cli::Cli;
use neurallog_tenant_operator::metrics::Metrics;

/// Prefixes that make an upper-case name an environment variable of this project.
/// The metric families the operator exposes: a name with one of these prefixes in the docs must be
/// one of them.
const METRIC_PREFIXES: [&str; 6] =
    ["neurallog_tenant_operator_", "controller_runtime_", "leader_election_", "rest_client_", "workqueue_", "process_"];
const ENV_PREFIXES: &[&str] =
    &["TENANT_OPERATOR_", "OTEL_", "TESTENV_", "BENCH_", "CHAOS_", "E2E_", "NEURALLOG_", "RUN_ONCE"];

/// Names the documentation may use although the tree does not hold them, each with why.
const ALLOWED: &[&str] = &[
    // Written at run time, under the git-ignored `.local/`: `make run`'s kubeconfig and logs, `make
    // images`'s record.
    ".local/",
    ".local/images/images.tsv",
    ".local/run/admin.kubeconfig",
    ".local/run-once.log",
    ".local/run-olm",
    ".local/coverage/summary.txt",
    ".local/coverage/html/",
    ".local/operatorhub/operators/neurallog-tenant-operator/",
    // The OperatorHub.io submission's graph settings, written by `make operatorhub`.
    "ci.yaml",
    // podman build's flags for a reproducible image (docs/developer-guide/11-deployment.md).
    "--timestamp",
    "--no-cache",
    // OLM's own condition types and reasons (docs/upgrading.md says what OLM reports).
    "Installed",
    "InstallComponentFailed",
    "InstallPlanFailed",
    "InstallPlanPending",
    "RequiresApproval",
    "RequirementsNotMet",
    "InstallReady",
    "InstallSucceeded",
    "UpgradePending",
    "AtLatestKnown",
    "Installing",
    "Complete",
    // OLM's approval modes of an InstallPlan.
    "Manual",
    "Automatic",
    "Succeeded",
    "Replacing",
    "Pending",
    "Failed",
    // OLM's check of existing objects before it replaces a CRD (docs/upgrading.md).
    "CRDValidation",
    // The kubelet's waiting reason for an image it cannot pull (docs/runbooks/).
    "ImagePullBackOff",
    // Prometheus' own flag for exemplar storage (docs/monitoring.md).
    "--enable-feature",
    // Backups the reader writes with kubectl (docs/upgrading.md, "Back up first").
    "tenants-0.1.0.yaml",
    "tenants-crd-0.1.0.yaml",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A name a document mentions, where.
#[derive(Debug)]
struct Mention {
    place: String,
    kind: &'static str,
    name: String,
}

/// What the tree and the code hold.
struct Truth {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
    basenames: BTreeSet<String>,
    top_level: BTreeSet<String>,
    targets: BTreeSet<String>,
    /// Flags by subcommand ("" for the top level), every long flag in `all`.
    flags: HashMap<String, BTreeSet<String>>,
    all_flags: BTreeSet<String>,
    /// Flag name → its environment variable and default.
    flag_env: HashMap<String, (Option<String>, Vec<String>)>,
    env: BTreeSet<String>,
    cli_env: BTreeSet<String>,
    metrics: BTreeSet<String>,
    literals: BTreeSet<String>,
}

fn tracked_files(root: &Path) -> Vec<String> {
    let output = Command::new("git").args(["ls-files", "-z"]).current_dir(root).output();
    match output {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|f| !f.is_empty() && root.join(f).exists())
            .map(str::to_owned)
            .collect(),
        // Not a git checkout (a source archive): every file but the build output and `.local`.
        _ => {
            let mut files = Vec::new();
            let mut stack = vec![root.to_path_buf()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    if rel.starts_with(".local") || rel.starts_with(".git") || rel == "target" {
                        continue;
                    }
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        files.push(rel);
                    }
                }
            }
            files
        }
    }
}

/// String literals of Rust source, outside `#[cfg(test)]` modules when `skip_tests`.
fn string_literals(text: &str, skip_tests: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_tests = false;
    let mut previous = "";
    for line in text.lines() {
        let trimmed = line.trim();
        if skip_tests && previous == "#[cfg(test)]" && trimmed.starts_with("mod ") {
            in_tests = true;
        }
        previous = trimmed;
        if in_tests || trimmed.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find('"') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('"') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end + 1..];
        }
    }
    out
}

fn is_env_shaped(word: &str) -> bool {
    let word = word.trim_end_matches('*');
    word.len() > 2
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.contains('_')
        && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_camel_case(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && word.len() > 2
        && word.chars().all(|c| c.is_ascii_alphanumeric())
        && word.chars().any(|c| c.is_ascii_lowercase())
}

impl Truth {
    fn read() -> Self {
        let root = root();
        let files: BTreeSet<String> = tracked_files(&root).into_iter().collect();
        let mut dirs = BTreeSet::new();
        let mut basenames = BTreeSet::new();
        let mut top_level = BTreeSet::from([".local".to_owned()]);
        for file in &files {
            let parts: Vec<&str> = file.split('/').collect();
            for i in 1..parts.len() {
                dirs.insert(parts[..i].join("/"));
            }
            basenames.insert((*parts.last().unwrap()).to_owned());
            top_level.insert(parts[0].to_owned());
        }

        let makefile = std::fs::read_to_string(root.join("Makefile")).unwrap();
        let mut targets = BTreeSet::new();
        for line in makefile.lines() {
            if line.starts_with(['\t', '#', ' ', '.']) {
                continue;
            }
            if let Some((head, rest)) = line.split_once(':')
                && !rest.starts_with('=')
                && !head.contains('=')
            {
                targets.extend(head.split_whitespace().map(str::to_owned));
            }
        }

        let mut flags: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut all_flags = BTreeSet::from(["help".to_owned(), "version".to_owned()]);
        let mut flag_env = HashMap::new();
        let mut cli_env = BTreeSet::new();
        let mut cli = Cli::command();
        cli.build();
        let mut stack: Vec<(String, &clap::Command)> = vec![(String::new(), &cli)];
        while let Some((name, command)) = stack.pop() {
            let set = flags.entry(name.clone()).or_default();
            set.extend(["help".to_owned(), "version".to_owned()]);
            for arg in command.get_arguments() {
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                if let Some(env) = &env {
                    cli_env.insert(env.clone());
                }
                if let Some(long) = arg.get_long() {
                    set.insert(long.to_owned());
                    all_flags.insert(long.to_owned());
                    let defaults = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
                    flag_env.insert(long.to_owned(), (env, defaults));
                }
            }
            for sub in command.get_subcommands() {
                stack.push((sub.get_name().to_owned(), sub));
            }
        }

        // Upper-case literals of every Rust source, and the names the Makefile and scripts use.
        let mut env: BTreeSet<String> = cli_env.clone();
        let mut literals = BTreeSet::new();
        for file in files.iter().filter(|f| f.ends_with(".rs")) {
            let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            for literal in string_literals(&text, false) {
                env.extend(
                    literal
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .filter(|w| is_env_shaped(w))
                        .map(str::to_owned),
                );
            }
            // The operator's own names: its sources outside their tests.
            if file.starts_with("src/") && !file.starts_with("src/fixtures/") && !file.ends_with("/tests.rs") {
                literals.extend(string_literals(&text, true).into_iter().filter(|l| is_camel_case(l)));
            }
        }
        for file in files.iter().filter(|f| *f == "Makefile" || (f.starts_with("tools/") && f.ends_with(".sh"))) {
            let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            env.extend(
                text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| is_env_shaped(w))
                    .map(str::to_owned),
            );
        }

        // A labelled family shows in the exposition only once it has a sample: record one of each.
        let registry = Metrics::default();
        registry.reconciled("tenant", false, Duration::ZERO, None);
        registry.api_request("GET", "tenants", "host", "200");
        registry.auth_call("register", Duration::ZERO, Some("AuthUnreachable"));
        registry.set_tenant_status("tenant", Some("Running"), &[("Ready", "True")]);
        registry.set_leader(true);
        registry.set_max_concurrent_reconciles("tenant", 1);
        drop(registry.worker("tenant"));
        registry.conversion_reviewed(true, 1, Duration::ZERO);
        registry.migration_objects(1, 1, 1);
        registry.set_rollout(&[("tenant".to_owned(), "1.0.0".to_owned())].into(), 0);
        registry.backup_succeeded("tenant", 0, 0, Duration::ZERO);
        registry.backup_failed("tenant");
        registry.restore_finished(true);
        let mut metrics = BTreeSet::new();
        for line in registry.encode().unwrap().lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            metrics.insert(name.to_owned());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[],
            };
            metrics.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }

        Truth {
            files,
            dirs,
            basenames,
            top_level,
            targets,
            flags,
            all_flags,
            flag_env,
            env,
            cli_env,
            metrics,
            literals,
        }
    }

    fn path_exists(&self, path: &str) -> bool {
        let path = path.trim_start_matches("./").trim_end_matches('/');
        if path.contains('*') {
            let pattern: Vec<&str> = path.split('/').collect();
            return self.files.iter().chain(&self.dirs).any(|f| {
                let parts: Vec<&str> = f.split('/').collect();
                parts.len() == pattern.len() && parts.iter().zip(&pattern).all(|(p, q)| glob(q, p))
            });
        }
        self.files.contains(path) || self.dirs.contains(path)
    }

    fn env_known(&self, name: &str) -> bool {
        match name.strip_suffix('*') {
            Some(prefix) => self.env.iter().any(|e| e.starts_with(prefix)),
            None => self.env.contains(name),
        }
    }
}

/// `*` within one path segment.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len())
                    .any(|i| text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..]))
        }
    }
}

/// A document's text in the pieces the rules read.
#[derive(Default)]
struct Pieces {
    /// Code spans: (line, content, the paragraph it is in).
    spans: Vec<(usize, String, String)>,
    /// Lines of fenced code blocks: (line, text).
    code: Vec<(usize, String)>,
    /// Relative link targets: (line, target).
    links: Vec<(usize, String)>,
    /// Runnable shell blocks: (line of the fence, script).
    runnable: Vec<(usize, String)>,
    /// Rows of flag tables: (line, cells).
    flag_rows: Vec<(usize, Vec<String>)>,
}

fn markdown(text: &str, first_line: usize) -> Pieces {
    let mut pieces = Pieces::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut prose: Vec<(usize, &str)> = Vec::new();
    let mut fence: Option<(String, String, usize, String)> = None; // marker, info, line, body
    let mut in_flag_table = false;
    for (i, line) in lines.iter().enumerate() {
        let number = first_line + i;
        let trimmed = line.trim_start();
        if let Some((marker, info, start, body)) = &mut fence {
            if trimmed.starts_with(marker.as_str())
                && trimmed.trim_start_matches(marker.chars().next().unwrap()).trim().is_empty()
            {
                if info.split_whitespace().collect::<Vec<_>>() == ["sh", "runnable"] {
                    pieces.runnable.push((*start, body.clone()));
                }
                fence = None;
            } else {
                pieces.code.push((number, (*line).to_owned()));
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let marker: String = trimmed.chars().take_while(|c| *c == '`' || *c == '~').collect();
            let info = trimmed[marker.len()..].trim().to_owned();
            fence = Some((marker, info, number, String::new()));
            continue;
        }
        if trimmed.starts_with('|') {
            let cells: Vec<String> = trimmed.trim_matches('|').split(" | ").map(|c| c.trim().to_owned()).collect();
            if cells.len() >= 2 && cells[0] == "flag" && cells[1].starts_with("env") {
                in_flag_table = true;
            } else if in_flag_table && !cells[0].starts_with("---") {
                pieces.flag_rows.push((number, cells));
            }
        } else {
            in_flag_table = false;
        }
        prose.push((number, line));
    }

    // Code spans, which may run across a line break, and links.
    let mut chars: Vec<(usize, char)> = Vec::new();
    // Each line's paragraph: the context a span is read in.
    let mut line_text: HashMap<usize, String> = HashMap::new();
    let mut paragraph: Vec<usize> = Vec::new();
    let flush = |paragraph: &mut Vec<usize>, line_text: &mut HashMap<usize, String>| {
        let text: Vec<&str> = paragraph.iter().map(|n| prose.iter().find(|(m, _)| m == n).unwrap().1).collect();
        let text = text.join(" ");
        for n in paragraph.drain(..) {
            line_text.insert(n, text.clone());
        }
    };
    for (number, line) in &prose {
        if line.trim().is_empty() {
            flush(&mut paragraph, &mut line_text);
        } else {
            paragraph.push(*number);
        }
    }
    flush(&mut paragraph, &mut line_text);
    for (number, line) in &prose {
        line_text.entry(*number).or_default();
        chars.extend(line.chars().map(|c| (*number, c)));
        chars.push((*number, '\n'));
    }
    let mut i = 0;
    while i < chars.len() {
        if chars[i].1 == '`' {
            let run = chars[i..].iter().take_while(|(_, c)| *c == '`').count();
            let start = i + run;
            let mut j = start;
            let mut close = None;
            while j < chars.len() {
                if chars[j].1 == '\n' && j + 1 < chars.len() && chars[j + 1].1 == '\n' {
                    break; // a paragraph ends: no span
                }
                if chars[j].1 == '`' {
                    let other = chars[j..].iter().take_while(|(_, c)| *c == '`').count();
                    if other == run {
                        close = Some(j);
                        break;
                    }
                    j += other;
                    continue;
                }
                j += 1;
            }
            match close {
                Some(end) => {
                    let content: String =
                        chars[start..end].iter().map(|(_, c)| if *c == '\n' { ' ' } else { *c }).collect();
                    let line = chars[i].0;
                    pieces.spans.push((line, content.trim().to_owned(), line_text[&line].clone()));
                    i = end + run;
                }
                None => i = start,
            }
            continue;
        }
        if chars[i].1 == ']' && chars.get(i + 1).is_some_and(|(_, c)| *c == '(') {
            let target: String =
                chars[i + 2..].iter().map(|(_, c)| *c).take_while(|c| *c != ')' && *c != '\n').collect();
            if !target.contains("://")
                && !target.starts_with('#')
                && !target.starts_with("mailto:")
                && !target.is_empty()
            {
                pieces.links.push((chars[i].0, target));
            }
        }
        i += 1;
    }
    pieces
}

/// Punctuation around a word in prose or a command.
fn trim_word(word: &str) -> &str {
    word.trim_matches(|c: char| "()[],;:'\"".contains(c)).trim_end_matches('.')
}

fn is_placeholder(word: &str) -> bool {
    word.contains(['<', '>', '{', '}', '$', '…']) || word.contains("...")
}

struct Checker<'a> {
    truth: &'a Truth,
    missing: Vec<Mention>,
    checked: usize,
}

impl Checker<'_> {
    fn miss(&mut self, place: &str, kind: &'static str, name: &str) {
        if !ALLOWED.contains(&name) {
            self.missing.push(Mention { place: place.to_owned(), kind, name: name.to_owned() });
        }
    }

    fn path(&mut self, place: &str, word: &str) {
        let word = trim_word(word);
        let word = word.strip_prefix("$PWD/").unwrap_or(word);
        if word.is_empty() || word.contains("://") || is_placeholder(word) || word.starts_with(['/', '~', '-']) {
            return;
        }
        let first = word.split('/').next().unwrap();
        if word.contains('/') && self.truth.top_level.contains(first) {
            self.checked += 1;
            if !self.truth.path_exists(word) {
                self.miss(place, "file path", word);
            }
        } else if !word.contains('/')
            && [".rs", ".sh", ".md", ".toml", ".yaml"].iter().any(|e| word.ends_with(e))
            && word.chars().all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
        {
            self.checked += 1;
            let known = if word.contains('*') {
                self.truth.basenames.iter().any(|b| glob(word, b))
            } else {
                self.truth.basenames.contains(word)
            };
            if !known {
                self.miss(place, "file name", word);
            }
        }
    }

    fn make(&mut self, place: &str, command: &str) {
        let words: Vec<&str> = command.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if *word != "make" {
                continue;
            }
            for next in &words[i + 1..] {
                let next = next.trim_end_matches([',', ')', ';']);
                if next.contains('=') && next.starts_with(|c: char| c.is_ascii_uppercase()) {
                    continue;
                }
                if !next.chars().all(|c| c.is_ascii_lowercase() || c == '-') || next.is_empty() {
                    break;
                }
                self.checked += 1;
                if !self.truth.targets.contains(next) {
                    self.miss(place, "make target", &format!("make {next}"));
                }
            }
        }
    }

    fn flag(&mut self, place: &str, subcommand: Option<&str>, word: &str) {
        let word = trim_word(word);
        let Some(name) = word.strip_prefix("--") else { return };
        let name = name.split('=').next().unwrap();
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return;
        }
        self.checked += 1;
        let known = match subcommand.and_then(|s| self.truth.flags.get(s)) {
            Some(set) => set.contains(name),
            None => self.truth.all_flags.contains(name),
        };
        if !known {
            let of = subcommand.map_or(String::new(), |s| format!(" (of tenant-operator {s})"));
            self.miss(place, "CLI flag", &format!("--{name}{of}"));
        }
    }

    /// The flags of a command line, when it runs `tenant-operator`.
    fn command_line(&mut self, place: &str, line: &str) {
        for segment in line.split(['|', ';']).flat_map(|s| s.split("&&")) {
            let words: Vec<&str> = segment.split_whitespace().skip_while(|w| *w == "$" || w.contains('=')).collect();
            if words.first().map(|w| trim_word(w)) != Some("tenant-operator") {
                continue;
            }
            let subcommand = words.get(1).filter(|w| !w.starts_with('-')).map(|w| trim_word(w));
            let subcommand = subcommand.filter(|s| self.truth.flags.contains_key(*s));
            for word in words.iter().take_while(|w| !w.starts_with('#')) {
                if word.starts_with("--") {
                    self.flag(place, subcommand, word);
                }
            }
        }
    }

    fn env_and_metrics(&mut self, place: &str, text: &str, any_env: bool) {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '*')) {
            let word = word.trim_start_matches('*');
            if METRIC_PREFIXES.iter().any(|prefix| word.starts_with(prefix)) {
                self.checked += 1;
                let known = match word.strip_suffix('*') {
                    Some(prefix) => self.truth.metrics.iter().any(|m| m.starts_with(prefix)),
                    None => self.truth.metrics.contains(word),
                };
                if !known {
                    self.miss(place, "metric", word);
                }
                continue;
            }
            if !is_env_shaped(word) && !self.truth.cli_env.contains(word) {
                continue;
            }
            let prefixed = ENV_PREFIXES.iter().any(|p| word.starts_with(p)) || self.truth.cli_env.contains(word);
            if prefixed || (any_env && is_env_shaped(word) && word.ends_with('*')) {
                self.checked += 1;
                if !self.truth.env_known(word) {
                    self.miss(place, "environment variable", word);
                }
            }
        }
    }

    fn reasons(&mut self, place: &str, span: &str, line: &str) {
        let context = {
            let lower = line.to_lowercase();
            lower.contains("condition")
                || lower.contains("reason")
                || line.contains("Event")
                || line.contains("Warning")
        };
        let mut names = Vec::new();
        if let Some((kind, rest)) = span.split_once('=')
            && let Some((_, reason)) = rest.split_once('/')
            && is_camel_case(kind)
            && is_camel_case(reason)
        {
            names.extend([kind, reason]);
        } else if context && is_camel_case(span) {
            names.push(span);
        }
        for name in names {
            self.checked += 1;
            if !self.truth.literals.contains(name) {
                self.miss(place, "condition type or reason", name);
            }
        }
    }

    fn document(&mut self, file: &str, pieces: &Pieces, dir: &str) {
        for (line, span, line_text) in &pieces.spans {
            let place = format!("{file}:{line}");
            for word in span.split_whitespace() {
                self.path(&place, word);
            }
            self.make(&place, span);
            if span.starts_with("--") {
                let first = span.split_whitespace().next().unwrap();
                self.flag(&place, None, first);
            } else {
                self.command_line(&place, span);
            }
            self.env_and_metrics(&place, span, true);
            self.reasons(&place, span, line_text);
        }
        for (line, text) in &pieces.code {
            let place = format!("{file}:{line}");
            let (command, comment) = match text.find(" #") {
                Some(at) if !text.trim_start().starts_with('#') => text.split_at(at),
                _ if text.trim_start().starts_with('#') => ("", text.as_str()),
                _ => (text.as_str(), ""),
            };
            for word in command.split(|c: char| c.is_whitespace() || c == '=') {
                self.path(&place, word);
            }
            // In a comment, prose: only words that are clearly files or directories.
            for word in comment.split_whitespace().map(trim_word) {
                let last = word.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
                if word.ends_with('/') || last.contains('.') {
                    self.path(&place, word);
                }
            }
            if !text.trim_start().starts_with('#') {
                self.make(&place, command);
                self.command_line(&place, command);
            }
            self.env_and_metrics(&place, text, false);
        }
        for (line, target) in &pieces.links {
            let target = target.split('#').next().unwrap();
            if target.is_empty() {
                continue;
            }
            self.checked += 1;
            let joined = normalise(&format!("{dir}{target}"));
            if !self.truth.path_exists(&joined) {
                self.miss(&format!("{file}:{line}"), "link", target);
            }
        }
        for (line, cells) in &pieces.flag_rows {
            self.flag_row(&format!("{file}:{line}"), cells);
        }
    }

    /// A row of a flag table: each flag's variable among the row's, its default the row's.
    fn flag_row(&mut self, place: &str, cells: &[String]) {
        let code = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
        let flags: Vec<String> = code(&cells[0]).into_iter().filter(|f| f.starts_with("--")).collect();
        let envs = code(cells.get(1).map_or("", |c| c));
        let defaults: Vec<&str> = cells.get(2).map_or(vec![], |c| c.split(", ").collect());
        for (i, flag) in flags.iter().enumerate() {
            let name = flag.trim_start_matches("--");
            let Some((env, default)) = self.truth.flag_env.get(name) else { continue };
            self.checked += 1;
            let env_ok = match env {
                Some(env) => envs.iter().any(|e| match e.strip_suffix('*') {
                    Some(prefix) => env.starts_with(prefix),
                    None => e == env,
                }),
                None => envs.is_empty(),
            };
            if !env_ok {
                self.missing.push(Mention {
                    place: place.to_owned(),
                    kind: "flag table: variable",
                    name: format!("{flag} is set by {}", env.as_deref().unwrap_or("no variable")),
                });
            }
            let Some(stated) = defaults.get(i).or(defaults.first().filter(|_| defaults.len() == 1)) else { continue };
            let stated = stated.trim();
            let literal = stated.strip_prefix('`').and_then(|s| s.strip_suffix('`'));
            let checkable = literal.is_some() || stated.chars().all(|c| c.is_ascii_digit());
            let stated = literal.unwrap_or(stated);
            if checkable && !default.is_empty() && !default.iter().any(|d| d == stated) {
                self.missing.push(Mention {
                    place: place.to_owned(),
                    kind: "flag table: default",
                    name: format!("{flag} defaults to {}, not {stated}", default.join(", ")),
                });
            }
        }
    }

    /// A description written for users (CRD, CSV): every name in it, backticked or not.
    fn description(&mut self, place: &str, text: &str) {
        let pieces = markdown(text, 1);
        for (_, span, line_text) in &pieces.spans {
            for word in span.split_whitespace() {
                self.path(place, word);
            }
            self.make(place, span);
            self.reasons(place, span, line_text);
        }
        for word in text.split_whitespace() {
            let word = trim_word(word).trim_matches('`');
            if word.starts_with("--") {
                self.flag(place, Some("run"), word);
            }
        }
        self.env_and_metrics(place, text, true);
    }
}

fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn documents(truth: &Truth) -> Vec<String> {
    truth
        .files
        .iter()
        .filter(|f| *f == "README.md" || (f.starts_with("docs/") && f.ends_with(".md")))
        .cloned()
        .collect()
}

/// Every `description` of the CRD's schema, by field.
fn descriptions(value: &serde_yaml::Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                let key = key.as_str().unwrap_or("?");
                if key == "description"
                    && let Some(text) = value.as_str()
                {
                    out.push((path.to_owned(), text.to_owned()));
                } else {
                    let path = if key == "properties" { path.to_owned() } else { format!("{path}.{key}") };
                    descriptions(value, &path, out);
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let name = item.get("name").and_then(|n| n.as_str()).map_or(i.to_string(), str::to_owned);
                descriptions(item, &format!("{path}[{name}]"), out);
            }
        }
        _ => {}
    }
}

fn report(checker: &Checker) {
    if !checker.missing.is_empty() {
        let mut lines: Vec<String> =
            checker.missing.iter().map(|m| format!("  {}: {} `{}`", m.place, m.kind, m.name)).collect();
        lines.dedup();
        panic!(
            "{} name(s) in the documentation that the code or the tree does not hold (fix the text, or \
             allow-list a name created at run time in tests/docs.rs):\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
}

#[test]
fn the_docs_name_only_what_exists() {
    let truth = Truth::read();
    let mut checker = Checker { truth: &truth, missing: Vec::new(), checked: 0 };
    let docs = documents(&truth);
    assert!(docs.len() >= 5, "README.md and docs/ not found: {docs:?}");
    for file in &docs {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let dir = Path::new(file).parent().map_or(String::new(), |d| {
            let d = d.to_string_lossy();
            if d.is_empty() { String::new() } else { format!("{d}/") }
        });
        checker.document(file, &markdown(&text, 1), &dir);
    }
    assert!(checker.checked > 200, "only {} names checked: the extraction is broken", checker.checked);
    report(&checker);
}

#[test]
fn the_crd_and_csv_descriptions_name_only_what_exists() {
    let truth = Truth::read();
    let mut checker = Checker { truth: &truth, missing: Vec::new(), checked: 0 };
    let crd_file = "config/crd/bases/neurallog.io_tenants.yaml";
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join(crd_file)).unwrap()).unwrap();
    let mut fields = Vec::new();
    descriptions(&crd, "", &mut fields);
    assert!(fields.len() > 50, "the CRD's descriptions not found");
    for (field, text) in &fields {
        checker.description(&format!("{crd_file} {field}"), text);
    }
    let csvs: Vec<&String> = truth
        .files
        .iter()
        .filter(|f| f.starts_with("config/manifests/bases/") && f.ends_with(".clusterserviceversion.yaml"))
        .collect();
    assert_eq!(csvs.len(), 1, "one base CSV");
    let csv_text = std::fs::read_to_string(root().join(csvs[0])).unwrap();
    let csv: serde_yaml::Value = serde_yaml::from_str(&csv_text).unwrap();
    let description = csv["spec"]["description"].as_str().expect("the CSV's spec.description");
    let first = description.lines().next().unwrap_or_default();
    let line = csv_text.lines().position(|l| l.trim() == first.trim()).map_or(0, |i| i + 1);
    checker.description(&format!("{}:{line} spec.description", csvs[0]), description);
    for owned in csv["spec"]["customresourcedefinitions"]["owned"].as_sequence().into_iter().flatten() {
        if let Some(text) = owned["description"].as_str() {
            checker.description(&format!("{} customresourcedefinitions.owned", csvs[0]), text);
        }
    }
    assert!(checker.checked > 5, "only {} names checked", checker.checked);
    report(&checker);
}

#[test]
fn runnable_shell_blocks_run() {
    let truth = Truth::read();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_tenant-operator"));
    let path = std::env::join_paths(
        std::iter::once(binary.parent().unwrap().to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in documents(&truth) {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        for (line, script) in markdown(&text, 1).runnable {
            ran += 1;
            let output = Command::new("sh")
                .args(["-e", "-c", &script])
                .current_dir(root())
                .env("PATH", &path)
                .env_remove("MAKEFLAGS")
                .env_remove("MFLAGS")
                .env_remove("MAKELEVEL")
                .output()
                .expect("sh runs");
            if !output.status.success() {
                failures.push(format!(
                    "{file}:{line}: exited with {}:\n{script}--- stderr:\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
    }
    assert!(ran > 0, "no `sh runnable` block found");
    assert!(failures.is_empty(), "runnable blocks failed:\n{}", failures.join("\n"));
}
