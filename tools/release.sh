#!/usr/bin/env bash
# Cuts a release: two commits and three images, every image named by digest.
#
# 1. The release commit: <version> in Cargo.toml and a bundle naming the operator image by tag. Its
#    sources are the release: tools/released-operator.sh builds the release's binary from it, and
#    catalog/releases.yaml records it.
# 2. The images, built from a clean checkout of that commit, reproducibly (tools/images.sh with
#    SOURCE_DATE_EPOCH, the commit's time: the same sources give the same digests):
#    - the operator image; bundle/ is generated anew naming it by digest (the CSV's containerImage,
#      the Deployment's image, TENANT_OPERATOR_IMAGE and relatedImages), and that bundle enters
#      the catalog, frozen;
#    - the bundle image, from that bundle;
#    - the catalog image, from the catalog with the release in its channels.
#    Each digest is the one a registry gives the image pushed from this machine's store (measured
#    by a push to an OCI layout): `podman push localhost/neurallog/<image>:<tag> <registry>/...`
#    publishes them under exactly these digests.
# 3. The record commit: bundle/, config/manager and the catalog, with the release appended to
#    catalog/releases.yaml (the release commit, the bundle file's sha256, the three images).
#
# Write the release's CHANGELOG.md section and commit it first: the tree must be clean, and every
# operand image must be named by digest (below).
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
# A release names every image by digest, as a mirror needs them: the operand images too (the
# Deployment's RELATED_IMAGE_* variables, which src/model/operand.rs states as well). A test release
# may name them by tag with RELEASE_ALLOW_TAGGED_OPERANDS=1; its CSV then says disconnected "false".
tagged="$(awk '/name: RELATED_IMAGE_/ {getline; if ($2 !~ /@sha256:/) print $2}' config/manager/manager.yaml)"
if [[ -n "$tagged" && "${RELEASE_ALLOW_TAGGED_OPERANDS:-}" != 1 ]]; then
  echo "release: these operand images are named by tag, not by digest:" >&2
  echo "$tagged" | sed 's/^/  /' >&2
  echo "pin each by digest (<repository>:<tag>@sha256:<hex>) in src/model/operand.rs and config/manager/manager.yaml, commit, and release again" >&2
  exit 1
fi
release() { cargo run --quiet --locked -p release -- "$@"; }
# Nothing is changed unless the version can be released (not listed yet, a valid bundle version).
release add --check --package "$package" --releases catalog/releases.yaml --version "$version"

# 1. The release commit.
sed -i "s/^version = \".*\"/version = \"$version\"/" Cargo.toml
cargo update --workspace --offline --quiet
"$tools/bundle.sh" . "$version" "neurallog/tenant-operator:$version"
git add Cargo.toml Cargo.lock bundle bundle.Dockerfile config/manager
git commit --quiet -m "Release $version"
commit="$(git rev-parse HEAD)"

# 2. The images.
scratch="$(mktemp -d)"
cleanup() {
  git worktree remove --force "$scratch/source" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct "$commit")"
export IMAGES_RECORD="$scratch/images.tsv"

# The digest a registry gives an image of the local store once pushed ($1: the local reference).
distribution_digest() {
  podman push --quiet --digestfile "$scratch/digest" "$1" "oci:$scratch/layout:image" >&2
  rm -rf "$scratch/layout"
  cat "$scratch/digest"
}

git worktree add --quiet --detach "$scratch/source" "$commit"
REVISION="$commit" "$scratch/source/tools/images.sh" operator >/dev/null
operator="neurallog/tenant-operator@$(distribution_digest "localhost/neurallog/tenant-operator:$version")"

"$tools/bundle.sh" . "$version" "$operator"
"$tools/catalog.sh" . --add-bundle "$version"
bundle_file="catalog/$package/bundles/$package.v$version.yaml"
"$tools/images.sh" bundle >/dev/null
bundle="neurallog/tenant-operator-bundle@$(distribution_digest "localhost/neurallog/tenant-operator-bundle:v$version")"

# The channels with the release in them, from a copy of the releases file: the real one records the
# catalog image's digest, so it is written last.
cp catalog/releases.yaml "$scratch/releases.yaml"
release add --package "$package" --releases "$scratch/releases.yaml" --version "$version" --commit "$commit" \
  --bundle "$bundle_file"
release channels --package "$package" --releases "$scratch/releases.yaml" > "catalog/$package/channels.yaml"
"$tools/images.sh" catalog >/dev/null
catalog="neurallog/tenant-operator-catalog@$(distribution_digest "localhost/neurallog/tenant-operator-catalog:v$version")"

# 3. The record commit.
release add --package "$package" --releases catalog/releases.yaml --version "$version" --commit "$commit" \
  --bundle "$bundle_file" --image "operator=$operator" --image "bundle=$bundle" --image "catalog=$catalog"
"$tools/catalog.sh" . >/dev/null
git add bundle config/manager catalog
git commit --quiet -m "catalog: release $version recorded, built from ${commit:0:12}, its images by digest"
echo "release: $version released in ${commit:0:12} and recorded in catalog/releases.yaml with its images:"
echo "  $operator"
echo "  $bundle"
echo "  $catalog"
echo "Publish them with podman push (same digests), set the next development version in Cargo.toml"
echo "(x.y.z-dev), run \`cargo update --workspace --offline\` and \`make bundle\`, and commit."
