//! A catalog image made as OperatorHub's pipeline makes one, for a [`RealNode`]: each bundle
//! rendered from its bundle image in the node's registry (`opm render <image>
//! --migrate-level=bundle-object-to-csv-metadata`: the catalog carries a bundle's image and CSV
//! metadata, not its manifests, so OLM must pull and unpack the bundle image), one channel over
//! them, built with `catalog.Dockerfile` (`tools/images.sh catalog`) and pushed into the registry.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::node::RealNode;
use crate::operatorhub::{PACKAGE, read_yaml};
use crate::tool_dir;

/// One entry of the channel: a bundle image and its place in the upgrade graph.
#[derive(Debug, Clone)]
pub struct ChannelEntry {
    /// The bundle image as the node pulls it (`<registry>/<repository>@<digest>`).
    pub bundle: String,
    /// The CSV it replaces.
    pub replaces: Option<String>,
    /// The versions it upgrades straight from (`olm.skipRange`).
    pub skip_range: Option<String>,
    /// The CSVs it skips (yanked releases).
    pub skips: Vec<String>,
}

/// Builds the catalog of `entries` (in upgrade order) as the package's only channel, `channel`,
/// in `dir`, and returns the catalog image as the node pulls it, by digest. `tag` tells the
/// scenarios' images apart in podman's storage.
pub fn build(
    node: &RealNode,
    dir: &Path,
    tag: &str,
    channel: &str,
    entries: &[ChannelEntry],
) -> anyhow::Result<String> {
    let package_dir = dir.join("catalog").join(PACKAGE);
    let bundles_dir = package_dir.join("bundles");
    fs::create_dir_all(&bundles_dir).with_context(|| format!("cannot create {}", bundles_dir.display()))?;
    let opm = tool_dir("opm", "TESTENV_OPM_BIN")?.join("opm");

    let mut package = read_yaml(&crate::repo_root().join("catalog").join(PACKAGE).join("package.yaml"))?;
    package["defaultChannel"] = json!(channel);
    fs::write(package_dir.join("package.json"), serde_json::to_string_pretty(&package)?)?;

    let mut channel_entries = Vec::new();
    for entry in entries {
        let bundle = render(&opm, &entry.bundle)?;
        let name = bundle["name"].as_str().with_context(|| format!("opm rendered {} without a name", entry.bundle))?;
        fs::write(bundles_dir.join(format!("{name}.json")), serde_json::to_string_pretty(&bundle)?)?;
        channel_entries.push(channel_entry(name, entry));
    }
    let channel = json!({"schema": "olm.channel", "package": PACKAGE, "name": channel, "entries": channel_entries});
    fs::write(package_dir.join("channel.json"), serde_json::to_string_pretty(&channel)?)?;

    let catalog = dir.join("catalog");
    let validation = Command::new(&opm).arg("validate").arg(&catalog).output().context("cannot run opm validate")?;
    if !validation.status.success() {
        bail!("opm validate {} failed: {}", catalog.display(), String::from_utf8_lossy(&validation.stderr).trim());
    }
    let reference = format!("localhost/neurallog-test/catalog:{tag}");
    let status = Command::new(crate::repo_root().join("tools/images.sh"))
        .arg("catalog")
        .env("CATALOG_CONTEXT", dir)
        .env("CATALOG_IMAGE", &reference)
        .env("IMAGES_RECORD", dir.join("images.tsv"))
        .stdout(Stdio::null())
        .status()
        .context("cannot run tools/images.sh")?;
    if !status.success() {
        bail!("tools/images.sh catalog failed for the catalog in {}", catalog.display());
    }
    node.push_reference(&reference)
}

/// `opm render` of one bundle image from the node's plain-HTTP registry, its manifests turned into
/// CSV metadata.
fn render(opm: &Path, image: &str) -> anyhow::Result<Value> {
    let output = Command::new(opm)
        .args(["render", image, "--use-http", "--migrate-level=bundle-object-to-csv-metadata", "-o", "json"])
        .output()
        .with_context(|| format!("cannot run {}", opm.display()))?;
    if !output.status.success() {
        bail!("opm render {image} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("opm render {image} printed no bundle"))
}

fn channel_entry(name: &str, entry: &ChannelEntry) -> Value {
    let mut item = json!({"name": name});
    if let Some(replaces) = &entry.replaces {
        item["replaces"] = json!(replaces);
    }
    if let Some(range) = &entry.skip_range {
        item["skipRange"] = json!(range);
    }
    if !entry.skips.is_empty() {
        item["skips"] = json!(entry.skips);
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_entry_names_only_the_edges_given() {
        let entry = ChannelEntry { bundle: "r/b@sha256:1".into(), replaces: None, skip_range: None, skips: vec![] };
        assert_eq!(channel_entry("p.v1", &entry), json!({"name": "p.v1"}));
        let entry = ChannelEntry {
            replaces: Some("p.v1".into()),
            skip_range: Some(">=1.0.0 <2.0.0".into()),
            skips: vec!["p.v1.5".into()],
            ..entry
        };
        assert_eq!(
            channel_entry("p.v2", &entry),
            json!({"name": "p.v2", "replaces": "p.v1", "skipRange": ">=1.0.0 <2.0.0", "skips": ["p.v1.5"]})
        );
    }
}
