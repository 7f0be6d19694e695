#!/usr/bin/env bash
# Cuts a release in two commits. The release commit sets <version> in Cargo.toml and holds bundle/,
# bundle.Dockerfile and the release's bundle in the catalog: its sources are the release, so
# tools/released-operator.sh builds the release's own binary from it. The next commit appends the
# release to catalog/releases.yaml with that commit and the bundle file's sha256, and recomputes the
# channels. From then on that bundle file never changes (tools/check-packaging.sh checks it).
# Write the release's CHANGELOG.md section and commit it first: the tree must be clean.
#
#   tools/release.sh <version>
set -euo pipefail

version="${1:?usage: tools/release.sh <version>}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/tools"
package=neurallog-tenant-operator
cd "$root"

if [[ "$version" == *-dev* ]]; then
  echo "release: $version is a development version; release x.y.z or a pre-release such as x.y.z-rc.1" >&2
  exit 1
fi
# The release commits what is built, so nothing else may be in it.
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  echo "release: commit or stash these changes first; the release is committed by itself:" >&2
  git status --short --untracked-files=no >&2
  exit 1
fi
# Nothing is changed unless the version can be released (not listed yet, a valid bundle version).
cargo run --quiet --locked -p release -- add --check --package "$package" \
  --releases catalog/releases.yaml --version "$version"

sed -i "s/^version = \".*\"/version = \"$version\"/" Cargo.toml
cargo update --workspace --offline --quiet
"$tools/bundle.sh" . "$version" "neurallog/tenant-operator:$version"
"$tools/catalog.sh" . --add-bundle "$version"
bundle_file="catalog/$package/bundles/$package.v$version.yaml"
git add Cargo.toml Cargo.lock bundle bundle.Dockerfile config/manager "$bundle_file"
git commit --quiet -m "Release $version"
commit="$(git rev-parse HEAD)"

"$tools/catalog.sh" . --record "$version" "$commit"
git add catalog
git commit --quiet -m "catalog: release $version recorded, built from ${commit:0:12}"
echo "release: $version released in ${commit:0:12} and recorded in catalog/releases.yaml. Set the next development version in Cargo.toml (x.y.z-dev), run \`cargo update --workspace --offline\` and \`make bundle\`, and commit."
