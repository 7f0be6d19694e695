//! OLM (v0) for the end-to-end tests, from the pinned builds of `tools/build.sh olm` and `opm`:
//! - [`processes`]: its operators `olm` and `catalog` as processes on the host, against a KWOK
//!   cluster, with `opm serve` of a catalog directory (no pod of a KWOK cluster runs);
//! - [`in_cluster`]: its operators as Deployments on a real node, from OLM's image, serving catalog
//!   images and unpacking bundle images in pods of their own, as OperatorHub's clusters run it;
//! - [`run_bundle`]: operator-sdk's `run bundle` and `run bundle-upgrade` against those operators.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

pub mod catalog_image;
pub mod in_cluster;
mod processes;
pub mod run_bundle;

pub use processes::{CatalogServer, Olm, render_bundle};

/// The namespace OLM's operators run for (and where global catalogs live).
pub const NAMESPACE: &str = "olm";

/// Creates OLM's CRDs (the YAML files of `<bin>/../crds`, each waited for until established) and
/// the namespace [`NAMESPACE`].
async fn install_crds_and_namespace(client: &kube::Client, bin: &Path) -> anyhow::Result<()> {
    let crds = bin.join("../crds");
    let mut files: Vec<PathBuf> = fs::read_dir(&crds)
        .with_context(|| format!("cannot read OLM's CRDs in {}", crds.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"));
    files.sort();
    if files.is_empty() {
        bail!("no CRDs in {}", crds.display());
    }
    for file in files {
        let text = fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).with_context(|| format!("{} is not a CRD", file.display()))?;
        crate::create_crd(client.clone(), &crd).await?;
    }
    let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        created => created.map(drop).with_context(|| format!("cannot create namespace {NAMESPACE}")),
    }
}
