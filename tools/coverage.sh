#!/usr/bin/env bash
# Line coverage of the unit, docs and integration tests (the first command of `make test`'s
# simulated-cluster lane: real kube-apiserver and etcd, no node), measured by cargo-llvm-cov with
# rustc's source-based instrumentation. Prints the summary table; the HTML report goes to
# .local/coverage/html.
#
#   tools/coverage.sh [test filter arguments, after --]
#
# cargo-llvm-cov is installed once from crates.io into the tools cache, keyed by its version; it needs
# rustup's llvm-tools component (llvm-profdata and llvm-cov of rustc's own LLVM), added when missing.
# The instrumented build has its own target directory beside cargo's (about 10 GB).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
llvm_cov_version=0.6.24
cache_root="${NEURALLOG_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/neurallog-tenant-operator/tools}"
install_root="$cache_root/cargo-llvm-cov-$llvm_cov_version"

if [[ ! -x "$install_root/bin/cargo-llvm-cov" ]]; then
  echo "tools/coverage.sh: installing cargo-llvm-cov $llvm_cov_version" >&2
  cargo install --quiet --locked --version "$llvm_cov_version" --root "$install_root" cargo-llvm-cov
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  echo "tools/coverage.sh: adding rustup's llvm-tools component" >&2
  rustup component add llvm-tools
fi
export PATH="$install_root/bin:$PATH"
export CARGO_LLVM_COV_TARGET_DIR="${CARGO_LLVM_COV_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/llvm-cov}"

mkdir -p .local/coverage
cargo llvm-cov clean --workspace
# Test code and the test harness are not what is measured: only the operator's own sources.
cargo llvm-cov --workspace --locked --features neurallog-tenant-operator/e2e --no-report "$@"
cargo llvm-cov report --ignore-filename-regex '(^|/)(tests|benches|tools)/' --summary-only \
  | tee .local/coverage/summary.txt
cargo llvm-cov report --ignore-filename-regex '(^|/)(tests|benches|tools)/' --html --output-dir .local/coverage >/dev/null
echo "tools/coverage.sh: summary in .local/coverage/summary.txt, report in .local/coverage/html/index.html" >&2
