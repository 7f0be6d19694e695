//! The real Prometheus and promtool (`tools/build.sh prometheus`, `$TESTENV_PROMETHEUS_BIN`).

use std::path::PathBuf;

/// promtool, of the pinned Prometheus build.
pub fn promtool() -> anyhow::Result<PathBuf> {
    Ok(crate::process::tool_dir("prometheus", "TESTENV_PROMETHEUS_BIN")?.join("promtool"))
}
