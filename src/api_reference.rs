//! The API reference, `docs/api-reference.md`, generated from what the operator serves and
//! records so that it cannot say what the code does not: every field of every served version of
//! the CRDs it generates (its type, default, validation and description, which comes from the
//! doc comments in `src/api/`), every Event reason it records and every condition type and reason
//! it writes, each with the doc comment the code gives it. `make generate` writes it; a test fails
//! while the committed file is stale.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::events::EventType;
use kube::{CustomResourceExt as _, Resource as _};
use serde_json::Value;

use crate::api::{self, ConversionService};
use crate::auth::{AuthError, Operation};
use crate::controller::backups;
use crate::controller::error::Error as ReconcileError;
use crate::controller::events::Reason as EventReason;
use crate::model::operand::Images;
use crate::model::state;
use crate::model::upgrade::{self, Decision};
use crate::reference::table_cell;

/// The committed file, relative to the repository's root.
pub const PATH: &str = "docs/api-reference.md";

/// The sources whose doc comments give the meanings of the Event and condition reasons.
const EVENTS_SOURCE: &str = include_str!("controller/events.rs");
const STATE_SOURCE: &str = include_str!("model/state.rs");
const UPGRADE_SOURCE: &str = include_str!("model/upgrade.rs");
const BACKUPS_SOURCE: &str = include_str!("controller/backups.rs");
const ERROR_SOURCE: &str = include_str!("controller/error.rs");
const AUTH_ERROR_SOURCE: &str = include_str!("auth/error.rs");

/// The reference as Markdown.
pub fn api_markdown() -> String {
    let mut out = String::new();
    out.push_str("# API reference\n\n");
    out.push_str(
        "<!-- Generated from the CRDs (src/api/) and from the Event and condition reasons of the operator's \
         code (src/controller/events.rs, src/model/state.rs and what they name) by `make generate`; do not \
         edit. A unit test fails while this file is stale. -->\n\n\
         Every field of every served version of the `neurallog.io` kinds, with its type, default, validation \
         and description (the descriptions `kubectl explain` prints), then every Event reason the operator \
         records and every condition it writes. A field is named by its path from the object's root, `[]` \
         standing for every item of an array and `*` for every value of a map. Validation is the API \
         server's: required fields, allowed values, bounds, lengths and patterns, and the CEL rules with the \
         message a refused request gets. How the two versions of a Tenant differ and convert: \
         [api-versions.md](api-versions.md).\n",
    );
    crd(&mut out, &api::crd(&ConversionService::default()));
    crd(&mut out, &api::backup::TenantBackup::crd());
    events(&mut out);
    conditions(&mut out);
    out
}

fn crd(out: &mut String, crd: &CustomResourceDefinition) {
    let spec = &crd.spec;
    let kind = &spec.names.kind;
    out.push_str(&format!("\n## {kind}\n\n"));
    let short = spec.names.short_names.iter().flatten().map(|n| code(n)).collect::<Vec<_>>().join(", ");
    let versions: Vec<String> = spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| format!("{}{}", code(&v.name), status_of(v.storage, v.deprecated.unwrap_or(false))))
        .collect();
    out.push_str(&format!(
        "{}: {}-scoped, short name {short}, group {}. Served versions: {}.\n",
        code(crd.metadata.name.as_deref().unwrap_or_default()),
        spec.scope.to_lowercase(),
        code(&spec.group),
        versions.join(", "),
    ));
    for version in spec.versions.iter().filter(|v| v.served) {
        out.push_str(&format!("\n### {kind} {}\n\n", code(&version.name)));
        let deprecated = version.deprecated.unwrap_or(false);
        if version.storage {
            out.push_str("The storage version.\n\n");
        }
        if deprecated {
            let warning = version.deprecation_warning.as_deref().map_or(String::new(), |w| format!(": {}", prose(w)));
            out.push_str(&format!("Deprecated{}\n\n", sentence(&warning)));
        }
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        Schema::new(&schema).render(out);
    }
}

/// ` (storage)`, ` (deprecated)`, or nothing.
fn status_of(storage: bool, deprecated: bool) -> &'static str {
    match (storage, deprecated) {
        (true, _) => " (storage)",
        (false, true) => " (deprecated)",
        (false, false) => "",
    }
}

/// One version's schema, with its CEL rules placed on the fields they name.
struct Schema<'a> {
    root: &'a Value,
    /// Rules by the path they are reported on ("" for the whole object).
    rules: BTreeMap<String, Vec<&'a Value>>,
}

impl<'a> Schema<'a> {
    fn new(root: &'a Value) -> Self {
        let mut paths = BTreeSet::new();
        let mut declared = Vec::new();
        walk(root, "", &mut |path, node| {
            paths.insert(path.to_owned());
            for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
                declared.push((path.to_owned(), rule));
            }
        });
        let mut rules: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for (path, rule) in declared {
            // A rule with a fieldPath is reported on that field, when it is one of the schema's.
            let target = rule["fieldPath"].as_str().map(|field| join(&path, field.trim_start_matches('.')));
            let at = target.filter(|t| paths.contains(t)).unwrap_or(path);
            rules.entry(at).or_default().push(rule);
        }
        Self { root, rules }
    }

    fn render(&self, out: &mut String) {
        if let Some(description) = self.root["description"].as_str() {
            out.push_str(&format!("{}\n", prose(description)));
        }
        let rules = self.rules.get("").map(Vec::as_slice).unwrap_or_default();
        if !rules.is_empty() {
            out.push_str("\nRules on the whole object:\n\n");
            for rule in rules {
                out.push_str(&format!("- {}\n", rule_text(rule)));
            }
        }
        let required = required_of(self.root);
        for (name, node) in properties(self.root) {
            out.push_str(&format!("\n#### {}\n\n", code(name)));
            if let Some(description) = node["description"].as_str() {
                out.push_str(&format!("{}\n\n", prose(description)));
            }
            let validation = self.validation(name, node, required.contains(name));
            if !validation.is_empty() {
                out.push_str(&format!("Validation: {}.\n\n", validation.join("; ")));
            }
            self.object(out, name, node, false);
        }
    }

    /// The table of an object's fields, then those of each object in it, depth first.
    fn object(&self, out: &mut String, path: &str, node: &Value, heading: bool) {
        let fields = properties(node);
        if fields.is_empty() {
            return;
        }
        if heading {
            out.push_str(&format!("\n#### {}\n\n", code(path)));
            // An array's items are described here; an object is in its parent's table.
            if path.ends_with("[]")
                && let Some(description) = node["description"].as_str()
            {
                out.push_str(&format!("{}\n\n", prose(description)));
            }
        }
        out.push_str("| field | type | default | validation | description |\n|---|---|---|---|---|\n");
        let required = required_of(node);
        for (name, field) in &fields {
            let path = join(path, name);
            let description = field["description"]
                .as_str()
                .or_else(|| field["items"]["description"].as_str())
                .map(prose)
                .unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                code(&path),
                type_of(field),
                field.get("default").map(|d| code(&value_text(d))).unwrap_or_default(),
                table_cell(&self.validation(&path, field, required.contains(name)).join("<br>")),
                table_cell(&description),
            ));
        }
        for (name, field) in &fields {
            self.nested(out, &join(path, name), field);
        }
    }

    /// The tables of the objects in a field: itself, its items, its values.
    fn nested(&self, out: &mut String, path: &str, field: &Value) {
        if let Some(items) = field.get("items") {
            self.nested(out, &format!("{path}[]"), items);
        } else if let Some(values) = field.get("additionalProperties").filter(|v| v.is_object()) {
            self.nested(out, &format!("{path}.*"), values);
        } else {
            self.object(out, path, field, true);
        }
    }

    /// What the API server checks of a field, each check a phrase.
    fn validation(&self, path: &str, node: &Value, required: bool) -> Vec<String> {
        let mut checks = Vec::new();
        if required {
            checks.push("required".to_owned());
        }
        checks.extend(constraints(node));
        if let Some(items) = node.get("items") {
            let each = self.validation(&format!("{path}[]"), items, false);
            if !each.is_empty() {
                checks.push(format!("each item: {}", each.join("; ")));
            }
        }
        if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
            let each = self.validation(&format!("{path}.*"), values, false);
            if !each.is_empty() {
                checks.push(format!("each value: {}", each.join("; ")));
            }
        }
        checks.extend(self.rules.get(path).into_iter().flatten().map(|rule| rule_text(rule)));
        checks
    }
}

/// Calls `visit` on every node of a schema with its path, depth first.
fn walk<'a>(node: &'a Value, path: &str, visit: &mut impl FnMut(&str, &'a Value)) {
    visit(path, node);
    for (name, field) in properties(node) {
        walk(field, &join(path, name), visit);
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), visit);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, &format!("{path}.*"), visit);
    }
}

fn properties(node: &Value) -> Vec<(&str, &Value)> {
    node["properties"].as_object().map(|p| p.iter().map(|(k, v)| (k.as_str(), v)).collect()).unwrap_or_default()
}

fn required_of(node: &Value) -> BTreeSet<&str> {
    node["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

/// `string (date-time)`, `array of object`, `map of string`.
fn type_of(node: &Value) -> String {
    let format = node["format"].as_str().map(|f| format!(" ({f})")).unwrap_or_default();
    match node["type"].as_str() {
        Some("array") => format!("array of {}", type_of(&node["items"])),
        Some("object") if node.get("properties").is_none() && node["additionalProperties"].is_object() => {
            format!("map of {}", type_of(&node["additionalProperties"]))
        }
        Some(kind) => format!("{kind}{format}"),
        None if node["x-kubernetes-int-or-string"] == true => "integer or string".to_owned(),
        None => "any".to_owned(),
    }
}

/// The schema's own checks of a value: allowed values, pattern, bounds, lengths, sizes, and any
/// other keyword by name.
fn constraints(node: &Value) -> Vec<String> {
    let Some(map) = node.as_object() else { return Vec::new() };
    let mut checks = Vec::new();
    if let Some(values) = node["enum"].as_array() {
        let values: Vec<String> = values.iter().filter(|v| !v.is_null()).map(|v| code(&value_text(v))).collect();
        checks.push(format!("one of {}", values.join(", ")));
    }
    if let Some(pattern) = node["pattern"].as_str() {
        checks.push(format!("pattern {}", code(pattern)));
    }
    let exclusive = |key: &str| node[key] == true;
    let bound = |key: &str| map.get(key).map(value_text);
    match (bound("minimum"), bound("maximum")) {
        (Some(min), Some(max)) if !exclusive("exclusiveMinimum") && !exclusive("exclusiveMaximum") => {
            checks.push(if min == max { format!("exactly {min}") } else { format!("from {min} to {max}") });
        }
        (min, max) => {
            let more = if exclusive("exclusiveMinimum") { "more than" } else { "at least" };
            let less = if exclusive("exclusiveMaximum") { "less than" } else { "at most" };
            checks.extend(min.map(|m| format!("{more} {m}")));
            checks.extend(max.map(|m| format!("{less} {m}")));
        }
    }
    for (min, max, unit) in [
        ("minLength", "maxLength", "characters"),
        ("minItems", "maxItems", "items"),
        ("minProperties", "maxProperties", "entries"),
    ] {
        match (bound(min), bound(max)) {
            (Some(min), Some(max)) => checks.push(format!("{min} to {max} {unit}")),
            (Some(min), None) => checks.push(format!("at least {min} {unit}")),
            (None, Some(max)) => checks.push(format!("at most {max} {unit}")),
            (None, None) => {}
        }
    }
    // Every other keyword that constrains a value, as it is spelled.
    for (key, value) in map {
        if !DESCRIBED.contains(&key.as_str()) {
            checks.push(format!("{} {}", code(key), code(&value_text(value))));
        }
    }
    checks
}

/// The keywords rendered on their own, or not checks at all.
const DESCRIBED: &[&str] = &[
    "type",
    "format",
    "description",
    "title",
    "nullable",
    "default",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
];

/// A CEL rule: the message a refused request gets, then the rule.
fn rule_text(rule: &Value) -> String {
    let expression = code(rule["rule"].as_str().unwrap_or_default());
    match (rule["message"].as_str(), rule["messageExpression"].as_str()) {
        (Some(message), _) => format!("{} (rule {expression})", prose(message)),
        (None, Some(message)) => format!("rule {expression}, message {}", code(message)),
        (None, None) => format!("rule {expression}"),
    }
}

/// A value as written in YAML: a string bare, a whole number without its fraction, the rest as
/// JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A code span, whatever backticks it holds.
fn code(text: &str) -> String {
    if text.contains('`') { format!("`` {text} ``") } else { format!("`{text}`") }
}

/// Text as Markdown prose on one line: `<` outside code spans escaped, so that `tenant-<name>`
/// is not read as HTML.
fn prose(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '<' if !in_code => out.push_str("&lt;"),
            _ => out.push(c),
        }
    }
    out
}

/// Text ending as a sentence.
fn sentence(text: &str) -> String {
    if text.ends_with(['.', '!', '?']) { text.to_owned() } else { format!("{text}.") }
}

fn events(out: &mut String) {
    let docs = variant_docs(EVENTS_SOURCE, "Reason");
    let upgrade_docs = variant_docs(UPGRADE_SOURCE, "Reason");
    out.push_str(
        "\n## Events\n\n\
         The Events the operator records on the Tenant they are about (or the TenantBackup, or the namespace \
         of a deleted tenant), with their type and the meaning the code gives them; a failure is recorded \
         under its own reason (below).\n\n\
         | reason | type | meaning |\n|---|---|---|\n",
    );
    let mut rows = Vec::new();
    for reason in EventReason::all() {
        let variant = variant_name(&reason);
        let mut meaning = docs.get(&variant).cloned().unwrap_or_default();
        if let EventReason::Upgrade(upgrade) = reason
            && let Some(more) = upgrade_docs.get(&variant_name(&upgrade))
        {
            meaning = format!("{meaning} {more}").trim().to_owned();
        }
        rows.push((reason.as_str().to_owned(), event_type(&reason), meaning));
    }
    event_rows(out, rows);
    let failed = docs.get("Failed").cloned().unwrap_or_default();
    out.push_str(&format!(
        "\n### Failures\n\n{}\n\n| reason | type | meaning |\n|---|---|---|\n",
        sentence(&prose(&failed))
    ));
    let rows = failures()
        .into_iter()
        .map(|(reason, meaning)| {
            let kind = event_type(&EventReason::Failed(reason.clone()));
            (reason, kind, meaning)
        })
        .collect();
    event_rows(out, rows);
    out.push_str(
        "\nThe storage-version migration records its own Events, on the CustomResourceDefinition: see \
         [upgrading.md](upgrading.md).\n",
    );
}

/// A table's rows, each reason once.
fn event_rows(out: &mut String, rows: Vec<(String, &str, String)>) {
    let mut seen = BTreeSet::new();
    for (reason, kind, meaning) in rows {
        if seen.insert(reason.clone()) {
            out.push_str(&format!("| {} | {kind} | {} |\n", code(&reason), table_cell(&prose(&meaning))));
        }
    }
}

fn event_type(reason: &EventReason) -> &'static str {
    match reason.event_type() {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// Every failure recorded under its own reason, with the doc comment of its variant: a reconcile's
/// errors, then the failed Auth calls.
fn failures() -> Vec<(String, String)> {
    let reconcile_docs = variant_docs(ERROR_SOURCE, "Error");
    let auth_docs = variant_docs(AUTH_ERROR_SOURCE, "AuthError");
    let reconcile = reconcile_errors()
        .into_iter()
        .map(|e| (e.reason().to_owned(), reconcile_docs.get(&variant_name(&e)).cloned().unwrap_or_default()));
    let auth = auth_failures()
        .into_iter()
        .map(|e| (e.reason().to_owned(), auth_docs.get(&variant_name(&e)).cloned().unwrap_or_default()));
    reconcile.chain(auth).collect()
}

/// One error of each kind a reconcile fails with.
fn reconcile_errors() -> Vec<ReconcileError> {
    let sample = || serde_json::Error::io(std::io::Error::other("sample"));
    let errors = vec![
        ReconcileError::Api {
            tenant: String::new(),
            verb: "",
            kind: "",
            name: String::new(),
            source: kube::Error::SerdeError(sample()),
        },
        ReconcileError::Serialize { tenant: String::new(), kind: "", name: String::new(), source: sample() },
        ReconcileError::CachesGone { tenant: String::new() },
    ];
    // A variant added fails to compile here until it has a sample above.
    for error in &errors {
        match error {
            ReconcileError::Api { .. } | ReconcileError::Serialize { .. } | ReconcileError::CachesGone { .. } => {}
        }
    }
    errors
}

/// One error of each kind a call to NeuralLog Auth fails with for a tenant (an Event, the reason of
/// its `AuthRegistered` condition).
fn auth_failures() -> Vec<AuthError> {
    let tenant = String::new;
    let operation = Operation::Register;
    let errors = vec![
        AuthError::Timeout { tenant: tenant(), operation, timeout: Duration::ZERO, attempts: 1 },
        AuthError::Unreachable { tenant: tenant(), operation, attempts: 1, message: String::new() },
        AuthError::Rejected { tenant: tenant(), operation, status: 500, attempts: 1, body: String::new() },
        AuthError::InvalidResponse { tenant: tenant(), operation, status: 200, message: String::new() },
        AuthError::Token {
            tenant: tenant(),
            operation,
            namespace: String::new(),
            name: String::new(),
            key: String::new(),
            message: String::new(),
        },
    ];
    errors.into_iter().filter(reaches_a_tenant).collect()
}

/// Whether an Auth error can be a tenant's: a variant added fails to compile here until it is
/// judged (and, if it can, sampled in [`auth_failures`]).
fn reaches_a_tenant(error: &AuthError) -> bool {
    match error {
        AuthError::Timeout { .. }
        | AuthError::Unreachable { .. }
        | AuthError::Rejected { .. }
        | AuthError::InvalidResponse { .. }
        | AuthError::Token { .. } => true,
        // Only when the client is built, at startup.
        AuthError::InvalidUrl { .. } | AuthError::ClientSetup { .. } => false,
    }
}

fn conditions(out: &mut String) {
    out.push_str("\n## Conditions\n\nEvery condition the operator writes in a status, by kind.\n");

    let upgrade_docs = variant_docs(UPGRADE_SOURCE, "Reason");
    let mut rows: Vec<(&str, bool, String, String)> =
        state::CONDITIONS.iter().map(|(kind, ok, reason)| (*kind, *ok, (*reason).to_owned(), String::new())).collect();
    // A failed Auth call is `AuthRegistered` False with the call's reason.
    let auth_docs = variant_docs(AUTH_ERROR_SOURCE, "AuthError");
    for error in auth_failures() {
        let meaning = auth_docs.get(&variant_name(&error)).cloned().unwrap_or_default();
        rows.push((state::AUTH_REGISTERED, false, error.reason().to_owned(), meaning));
    }
    for reason in upgrade::Reason::ALL {
        let decision = Decision {
            images: Images { redis: String::new(), server: String::new(), registry: String::new() },
            version: None,
            target: None,
            previous: None,
            reason,
            message: String::new(),
        };
        let meaning = upgrade_docs.get(&variant_name(&reason)).cloned().unwrap_or_default();
        rows.push((upgrade::UPGRADING, decision.upgrading(), reason.as_str().to_owned(), meaning));
    }
    condition_tables(out, api::KIND, &state::CONDITION_TYPES, &rows, &[STATE_SOURCE, UPGRADE_SOURCE]);

    let rows: Vec<(&str, bool, String, String)> = backups::SUCCEEDED_REASONS
        .iter()
        .map(|(ok, reason)| (backups::SUCCEEDED, *ok, (*reason).to_owned(), String::new()))
        .collect();
    let backup = api::backup::TenantBackup::kind(&());
    condition_tables(out, &backup, &[backups::SUCCEEDED], &rows, &[BACKUPS_SOURCE]);
}

/// A kind's condition types with the doc comments of their constants, then every (type, status,
/// reason) in the order of the types.
fn condition_tables(
    out: &mut String,
    kind: &str,
    types: &[&str],
    rows: &[(&str, bool, String, String)],
    sources: &[&str],
) {
    out.push_str(&format!("\n### {kind}\n\n| condition | meaning |\n|---|---|\n"));
    for kind in types {
        let meaning = sources.iter().find_map(|source| str_const_doc(source, kind)).unwrap_or_default();
        // A doc comment that starts by naming its condition says the rest.
        let meaning = meaning.strip_prefix(&format!("{}: ", code(kind))).map_or(meaning.clone(), str::to_owned);
        out.push_str(&format!("| {} | {} |\n", code(kind), table_cell(&prose(&meaning))));
    }
    out.push_str("\n| condition | status | reason | meaning |\n|---|---|---|---|\n");
    for kind in types {
        for (_, ok, reason, meaning) in rows.iter().filter(|row| row.0 == *kind) {
            let status = if *ok { "True" } else { "False" };
            out.push_str(&format!(
                "| {} | {status} | {} | {} |\n",
                code(kind),
                code(reason),
                table_cell(&prose(meaning))
            ));
        }
    }
}

/// The name of a value's enum variant, from its `Debug` form.
fn variant_name(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// The doc comments of an enum's variants in Rust source, by variant, each on one line.
fn variant_docs(source: &str, name: &str) -> BTreeMap<String, String> {
    let mut docs = BTreeMap::new();
    let mut lines = source.lines().skip_while(|line| !declares_enum(line, name));
    if lines.next().is_none() {
        return docs;
    }
    let mut depth = 1;
    let mut doc: Vec<&str> = Vec::new();
    for line in lines {
        let line = line.trim();
        if let Some(text) = line.strip_prefix("///") {
            if depth == 1 {
                doc.push(text.trim());
            }
            continue;
        }
        if line.starts_with("//") {
            continue;
        }
        if depth == 1 && line.starts_with(|c: char| c.is_ascii_uppercase()) {
            let variant: String = line.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            docs.insert(variant, doc.join(" ").trim().to_owned());
            doc.clear();
        }
        depth += nesting(line);
        if depth <= 0 {
            break;
        }
    }
    docs
}

/// Whether a line of Rust source opens `enum <name>`.
fn declares_enum(line: &str, name: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).any(|pair| pair[0] == "enum" && pair[1].trim_end_matches('{') == name)
        && line.trim_end().ends_with('{')
}

/// How much deeper in brackets a line of Rust source ends than it starts, string literals aside.
fn nesting(line: &str) -> i32 {
    let mut depth = 0;
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// The doc comment of the `&str` constant of value `value` in Rust source, on one line.
fn str_const_doc(source: &str, value: &str) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let definition = format!("= \"{value}\";");
    let at = lines.iter().position(|line| {
        let line = line.trim();
        line.contains("const ") && line.contains(": &str") && line.ends_with(&definition)
    })?;
    let mut doc: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .map(|line| line.trim())
        .take_while(|line| line.starts_with("///") || line.starts_with("#["))
        .filter_map(|line| line.strip_prefix("///"))
        .map(str::trim)
        .collect();
    doc.reverse();
    Some(doc.join(" ")).filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed reference is what the code generates: regenerate it with `make generate`.
    #[test]
    fn committed_api_reference_is_up_to_date() {
        let committed = include_str!("../docs/api-reference.md");
        assert!(
            committed == super::api_markdown(),
            "docs/api-reference.md is stale: run `make generate` and commit the result"
        );
    }

    /// Every field of every served version is a row, with the CRD's own description.
    #[test]
    fn every_field_of_every_version_is_in_the_reference() {
        let reference = api_markdown();
        for crd in [api::crd(&ConversionService::default()), api::backup::TenantBackup::crd()] {
            for version in &crd.spec.versions {
                let schema =
                    serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
                        .unwrap();
                let mut fields = 0;
                walk(&schema, "", &mut |path, _| {
                    // Every field but the top-level ones (a section each), items and map values.
                    if path.contains('.') && !path.ends_with("[]") && !path.ends_with(".*") {
                        fields += 1;
                        assert!(
                            reference.contains(&format!("| `{path}` |")),
                            "{} {}: {path}",
                            crd.spec.names.kind,
                            version.name
                        );
                    }
                });
                assert!(fields > 10, "{} {}: only {fields} fields", crd.spec.names.kind, version.name);
            }
        }
        assert!(reference.contains("| `spec.redis.resources.limits.memory` | string |"));
        assert!(reference.contains("### Tenant `v1`") && reference.contains("### Tenant `v2`"));
        assert!(reference.contains("### TenantBackup `v1`"));
    }

    /// Every Event reason and condition is listed, with its type and the meaning its doc comment
    /// gives.
    #[test]
    fn every_event_reason_and_condition_is_in_the_reference() {
        let reference = api_markdown();
        for reason in EventReason::all() {
            assert!(reference.contains(&format!("| `{}` | {} |", reason.as_str(), event_type(&reason))));
        }
        for (reason, _) in failures() {
            assert!(reference.contains(&format!("| `{reason}` | Warning |")), "{reason}");
        }
        for (kind, ok, reason) in state::CONDITIONS {
            let status = if ok { "True" } else { "False" };
            assert!(reference.contains(&format!("| `{kind}` | {status} | `{reason}` |")), "{kind} {reason}");
        }
        assert!(reference.contains("| `Upgrading` | True | `Upgrading` | Moving, one component at a time. |"));
        assert!(reference.contains("| `AuthRegistered` | False | `AuthTimeout` | No answer within the timeout"));
        assert!(reference.contains("| `PasswordHeld` | Warning | The Redis password Secret was deleted"));
        assert!(reference.contains("| `Upgraded` | Normal |"), "UpToDate is recorded as Upgraded");
        assert!(!reference.contains("| `Waiting` | Normal |"), "waiting is left to the condition");
        assert!(reference.contains("| `Succeeded` | True | `BackupSucceeded` |"));
    }

    #[test]
    fn doc_comments_are_read_by_variant_and_by_constant() {
        let source = [
            "/// Kinds.",
            "pub enum Kind {",
            "    /// One",
            "    /// line.",
            "    A,",
            "    #[error(\"{x} (\")]",
            "    B {",
            "        /// Not this.",
            "        x: u8,",
            "    },",
            "    /// Third.",
            "    C(String),",
            "}",
            "/// Not a variant.",
            "fn d() {}",
            "",
            "/// The answer.",
            "#[allow(unused)]",
            "pub const ANSWER: &str = \"Yes\";",
        ]
        .join("\n");
        let source = source.as_str();
        let docs = variant_docs(source, "Kind");
        assert_eq!(docs.get("A").map(String::as_str), Some("One line."));
        assert_eq!(docs.get("B").map(String::as_str), Some(""));
        assert_eq!(docs.get("C").map(String::as_str), Some("Third."));
        assert_eq!(docs.len(), 3);
        assert_eq!(str_const_doc(source, "Yes").as_deref(), Some("The answer."));
        assert_eq!(str_const_doc(source, "No"), None);
    }

    #[test]
    fn a_field_reads_as_its_checks() {
        let node = serde_json::json!({
            "type": "integer", "format": "int64", "minimum": 1.0, "maximum": 500.0, "nullable": true, "multipleOf": 2
        });
        assert_eq!(type_of(&node), "integer (int64)");
        assert_eq!(constraints(&node), ["from 1 to 500", "`multipleOf` `2`"]);
        let list = serde_json::json!({"type": "array", "maxItems": 16, "items": {"type": "string", "maxLength": 63}});
        assert_eq!(type_of(&list), "array of string");
        let schema = Schema { root: &list, rules: BTreeMap::new() };
        assert_eq!(
            schema.validation("x", &list, true),
            ["required", "at most 16 items", "each item: at most 63 characters"]
        );
        assert_eq!(prose("a `<b>` tenant-<name>\n and | c"), "a `<b>` tenant-&lt;name> and | c");
    }
}
