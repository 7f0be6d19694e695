#!/usr/bin/env bash
# Cuts a release: sets <version> in Cargo.toml, generates bundle/ and bundle.Dockerfile for it,
# adds its bundle to the catalog and appends the release to catalog/releases.yaml with the commit
# it is built from (HEAD) and the sha256 of its bundle file, then recomputes the channels. From
# then on that bundle file never changes (tools/check-packaging.sh checks it).
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
# HEAD is recorded as the commit the release is built from, so what is built must be committed.
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  echo "release: commit or stash these changes first; the release records HEAD as the commit it is built from:" >&2
  git status --short --untracked-files=no >&2
  exit 1
fi
commit="$(git rev-parse HEAD)"
# Nothing is changed unless the version can be released (not listed yet, a valid bundle version).
cargo run --quiet --locked -p release -- add --check --package "$package" \
  --releases catalog/releases.yaml --version "$version"

sed -i "s/^version = \".*\"/version = \"$version\"/" Cargo.toml
cargo update --workspace --offline --quiet
"$tools/bundle.sh" . "$version" "neurallog/tenant-operator:$version"
"$tools/catalog.sh" . --add-bundle "$version" "$commit"
echo "release: $version added to catalog/ (built from $commit). Commit it with CHANGELOG.md, then set the next development version in Cargo.toml (x.y.z-dev) and run \`make bundle\`."
