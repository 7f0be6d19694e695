//! operator-sdk's `run bundle` and `run bundle-upgrade` against a real node, as OperatorHub.io's
//! upgrade test runs them: the tool renders the bundle image into a file-based catalog, hands it to
//! a catalog pod of its own through ConfigMaps, and subscribes to it; `bundle-upgrade` adds the next
//! bundle to that catalog. operator-sdk pulls the index image over HTTPS only, so every image it
//! pulls is named on the node's registry served over HTTPS ([`TlsRegistry`]), whose CA it is given
//! as `SSL_CERT_FILE`; the node's containerd pulls the same names through its mirror. The catalog
//! pod runs `sh -c "opm serve ..."` after an init container that unpacks the catalog with cat and
//! gzip, so its index image is `opm-tools` (`make images`): the opm image has no shell. The
//! decompression image cannot be chosen for `bundle-upgrade`, so both commands use operator-sdk's
//! default, [`DECOMPRESSION_IMAGE`], which the node's registry must serve (`opm-tools` under that
//! name: containerd takes every registry's images from it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::node::RealNode;
use crate::process::tool_dir;
use crate::registry::TlsRegistry;

/// The repository and tag of operator-sdk's default decompression image
/// (`registry.access.redhat.com/ubi9/ubi:9.8`) in the node's registry.
pub const DECOMPRESSION_IMAGE: &str = "ubi9/ubi:9.8";

/// What both commands are given: the catalog pod's image pulled once, and the `restricted` Pod
/// Security profile.
const POD_FLAGS: [&str; 4] = ["--image-pull-policy", "IfNotPresent", "--security-context-config", "restricted"];

/// How long operator-sdk may wait for the CSV to succeed.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `operator-sdk run bundle <bundle>` into `namespace` (which must exist), installing for all
/// namespaces, and returns what it printed. Images are named on `registry`.
pub fn run_bundle(
    node: &RealNode,
    registry: &TlsRegistry,
    namespace: &str,
    bundle: &str,
    opm_tools: &str,
    log: &Path,
) -> anyhow::Result<String> {
    let install = ["--index-image", opm_tools, "--install-mode", "AllNamespaces"];
    operator_sdk(node, registry, namespace, &["run", "bundle", bundle], &install, log)
}

/// Runs `operator-sdk run bundle-upgrade <bundle>` in `namespace`: the next bundle into the catalog
/// `run bundle` made, and the upgrade to it.
pub fn run_bundle_upgrade(
    node: &RealNode,
    registry: &TlsRegistry,
    namespace: &str,
    bundle: &str,
    log: &Path,
) -> anyhow::Result<String> {
    operator_sdk(node, registry, namespace, &["run", "bundle-upgrade", bundle], &[], log)
}

fn operator_sdk(
    node: &RealNode,
    registry: &TlsRegistry,
    namespace: &str,
    command: &[&str],
    flags: &[&str],
    log: &Path,
) -> anyhow::Result<String> {
    let binary = tool_dir("operator-sdk", "TESTENV_OPERATOR_SDK_BIN")?.join("operator-sdk");
    let timeout = format!("{}s", TIMEOUT.as_secs());
    let output = Command::new(&binary)
        .args(command)
        .args(flags)
        .args(POD_FLAGS)
        .args(["--timeout", &timeout, "--namespace", namespace, "--kubeconfig"])
        .arg(node.admin_kubeconfig())
        .env("SSL_CERT_FILE", registry.ca_bundle())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    std::fs::write(log, &printed).with_context(|| format!("cannot write {}", log.display()))?;
    if !output.status.success() {
        bail!("operator-sdk {} failed ({}): {}", command.join(" "), output.status, printed.trim());
    }
    Ok(printed)
}
