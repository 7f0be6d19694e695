//! The OperatorHub.io submission (the community-operators layout) of every release, built from the
//! catalog's frozen bundles, so that what is submitted is byte for byte what was released:
//!
//! ```text
//! operators/<package>/ci.yaml
//! operators/<package>/<version>/manifests/<one file per object>.yaml (in JSON)
//! operators/<package>/<version>/metadata/annotations.yaml
//! ```
//!
//! OperatorHub's pipeline builds the upgrade graph from the CSVs (`updateGraph: replaces-mode`), not
//! from a catalog: each CSV gets the `replaces`, `skips` and `olm.skipRange` of its entry in the
//! catalog's `stable` channel, the one graph [`crate::channels`] computes. Nothing else of a
//! released bundle changes.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::{Entry, STABLE};

/// The annotation OLM reads a CSV's skip range from.
const SKIP_RANGE: &str = "olm.skipRange";

/// One file of the submission: its path below `operators/<package>/` and its text.
pub type File = (String, String);

/// The submission's `ci.yaml`: the graph mode is set explicitly, because OperatorHub's two
/// pipelines default differently when it is missing, and it must match what the CSVs carry.
pub fn ci_yaml() -> String {
    "# Written by `make operatorhub`: every CSV names the release it replaces (spec.replaces), as\n\
     # the operator's file-based catalog does in its channels.\n\
     updateGraph: replaces-mode\n"
        .to_owned()
}

/// The files of one release's directory, from its frozen catalog bundle (`opm render` YAML of the
/// bundle: one `olm.bundle` document whose `olm.bundle.object` properties hold every manifest)
/// and its entry in the `stable` channel.
pub fn release_files(
    package: &str,
    version: &semver::Version,
    bundle: &str,
    entry: &Entry,
) -> anyhow::Result<Vec<File>> {
    let document: Value = serde_yaml::from_str(bundle).context("the bundle file is not one YAML document")?;
    anyhow::ensure!(
        document["schema"] == "olm.bundle" && document["name"] == entry.name.as_str(),
        "the bundle file is not the olm.bundle {}",
        entry.name
    );
    let properties = document["properties"].as_array().context("the bundle has no properties")?;
    let mut files = BTreeMap::new();
    let mut csvs = 0;
    for property in properties.iter().filter(|p| p["type"] == "olm.bundle.object") {
        let data = property["value"]["data"].as_str().context("an olm.bundle.object without data")?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(data).context("an olm.bundle.object is not base64")?;
        let mut object: Value = serde_json::from_slice(&bytes).context("an olm.bundle.object is not JSON")?;
        if object["kind"] == "ClusterServiceVersion" {
            csvs += 1;
            anyhow::ensure!(
                object["spec"]["version"] == version.to_string().as_str(),
                "the CSV of {} says version {}",
                entry.name,
                object["spec"]["version"]
            );
            add_graph(&mut object, entry)?;
        }
        let name = file_name(package, &object)?;
        // JSON, which is YAML too: a YAML emitter would leave strings such as `no` unquoted, which
        // the YAML 1.1 parsers of OLM's tools read as booleans.
        let json = serde_json::to_string_pretty(&object).context("a manifest does not serialize")? + "\n";
        if files.insert(format!("{version}/manifests/{name}"), json).is_some() {
            bail!("two objects of {} map to the file {name}", entry.name);
        }
    }
    anyhow::ensure!(csvs == 1, "the bundle {} holds {csvs} ClusterServiceVersions", entry.name);
    files.insert(format!("{version}/metadata/annotations.yaml"), annotations(package));
    Ok(files.into_iter().collect())
}

/// The CSV's upgrade edges from its channel entry: `spec.replaces`, `spec.skips` and the
/// `olm.skipRange` annotation, each only when the entry has it.
fn add_graph(csv: &mut Value, entry: &Entry) -> anyhow::Result<()> {
    let spec = csv["spec"].as_object_mut().context("the CSV has no spec")?;
    if let Some(replaces) = &entry.replaces {
        spec.insert("replaces".to_owned(), Value::from(replaces.as_str()));
    }
    if !entry.skips.is_empty() {
        spec.insert("skips".to_owned(), Value::from(entry.skips.clone()));
    }
    if let Some(range) = &entry.skip_range {
        let metadata = csv["metadata"].as_object_mut().context("the CSV has no metadata")?;
        let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        annotations
            .as_object_mut()
            .context("the CSV's annotations are not a map")?
            .insert(SKIP_RANGE.to_owned(), Value::from(range.as_str()));
    }
    Ok(())
}

/// The file name operator-sdk gives an object in a bundle: `<package>.clusterserviceversion.yaml`
/// for the CSV, `<group>_<plural>.yaml` for a CRD, `<name>_<group>_<version>_<kind>.yaml` else.
fn file_name(package: &str, object: &Value) -> anyhow::Result<String> {
    let kind = object["kind"].as_str().context("an object without kind")?;
    let name = object["metadata"]["name"].as_str().with_context(|| format!("a {kind} without name"))?;
    Ok(match kind {
        "ClusterServiceVersion" => format!("{package}.clusterserviceversion.yaml"),
        "CustomResourceDefinition" => {
            let (plural, group) =
                name.split_once('.').with_context(|| format!("CRD {name} is not <plural>.<group>"))?;
            format!("{group}_{plural}.yaml")
        }
        _ => {
            let api_version =
                object["apiVersion"].as_str().with_context(|| format!("{kind} {name} without apiVersion"))?;
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            format!("{name}_{group}_{version}_{}.yaml", kind.to_lowercase())
        }
    })
}

/// The bundle's `metadata/annotations.yaml`: the pipeline builds its bundle image from these.
fn annotations(package: &str) -> String {
    format!(
        "annotations:\n\
         \x20 operators.operatorframework.io.bundle.mediatype.v1: registry+v1\n\
         \x20 operators.operatorframework.io.bundle.manifests.v1: manifests/\n\
         \x20 operators.operatorframework.io.bundle.metadata.v1: metadata/\n\
         \x20 operators.operatorframework.io.bundle.package.v1: {package}\n\
         \x20 operators.operatorframework.io.bundle.channels.v1: {STABLE},{}\n\
         \x20 operators.operatorframework.io.bundle.channel.default.v1: {STABLE}\n",
        crate::CANDIDATE
    )
}
