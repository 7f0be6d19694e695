//! Stamps the version `tenant-operator --version` prints: the crate's version, followed by the
//! commit the binary was built from when the build sets `TENANT_OPERATOR_REVISION` (the image
//! build passes its `REVISION` argument). Without it, just the crate's version.

fn main() {
    println!("cargo:rerun-if-env-changed=TENANT_OPERATOR_REVISION");
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let stamped = match std::env::var("TENANT_OPERATOR_REVISION") {
        Ok(revision) if !revision.trim().is_empty() => format!("{version} ({})", revision.trim()),
        _ => version,
    };
    println!("cargo:rustc-env=TENANT_OPERATOR_VERSION={stamped}");
}
