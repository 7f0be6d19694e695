#!/usr/bin/env bash
# Builds the tenant-operator binary of a released version from the commit catalog/releases.yaml
# records for it, and prints the binary's path. The upgrade tests run a release's own binary, never
# today's pretending to be old. Builds land in a cache outside the clone, keyed by version and
# commit, so a second call (or a fresh clone) reuses them. The build is cargo's dev profile: a test
# fixture needs the release's code, not its optimisation, and a cold machine builds both releases in
# far less time.
#
#   tools/released-operator.sh 0.1.0
set -euo pipefail

version="${1:?usage: tools/released-operator.sh <version>}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${NEURALLOG_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/neurallog-tenant-operator/tools}"

# The entry of <version>: "- version: x" followed by its "commit: <id>" line.
commit="$(awk -v v="$version" '
  /^- version: / { current = $3 }
  current == v && $1 == "commit:" { print $2; exit }' "$root/catalog/releases.yaml")"
[[ "$commit" =~ ^[0-9a-f]{40}$ ]] || {
  echo "released-operator.sh: no release $version with a commit in catalog/releases.yaml" >&2; exit 2; }

out="$cache_root/tenant-operator-$version-${commit:0:12}-dev"
if [[ -x "$out/tenant-operator" ]]; then
  echo "$out/tenant-operator"
  exit 0
fi
mkdir -p "$cache_root"
exec 9>"$out.lock"
flock 9
if [[ -x "$out/tenant-operator" ]]; then
  echo "$out/tenant-operator"
  exit 0
fi

git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null || {
  echo "released-operator.sh: commit $commit of release $version is not in this clone's history" >&2; exit 2; }
echo "tools/released-operator.sh: building tenant-operator $version from ${commit:0:12} into $out (first time only)" >&2
src="$out.src"
rm -rf "$src" "$out.tmp"
mkdir -p "$src" "$out.tmp"
git -C "$root" archive "$commit" | tar -x -C "$src"
# Its own target directory: the release's package has the same name as today's, and sharing one
# would overwrite today's binary. Kept between releases of the same dependencies.
(cd "$src" && CARGO_TARGET_DIR="$cache_root/released-target" cargo build --locked --bin tenant-operator) >&2
cp "$cache_root/released-target/debug/tenant-operator" "$out.tmp/tenant-operator"
rm -rf "$src" "$out"
mv "$out.tmp" "$out"
echo "$out/tenant-operator"
