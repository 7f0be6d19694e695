#!/usr/bin/env bash
# Renders the file-based catalog: the package and the channels computed from catalog/releases.yaml
# (tools/release). With --add-bundle (used by tools/release.sh only), the bundle in bundle/ first
# becomes the released bundle of <version>, and the release is appended to catalog/releases.yaml
# with <commit> and the bundle file's sha256. Every released bundle stays in the catalog, byte for
# byte as released, so an upgrade from any release can be tested offline.
#
#   tools/catalog.sh <root> [--add-bundle <version> <commit>]
set -euo pipefail

root="$(cd "${1:?usage: tools/catalog.sh <root> [--add-bundle <version> <commit>]}" && pwd)"
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
opm="$("$tools/build.sh" opm)/opm"
package=neurallog-tenant-operator
dir="$root/catalog/$package"
mkdir -p "$dir/bundles"

release() {
  cargo run --quiet --locked --manifest-path "$tools/../Cargo.toml" -p release -- "$@"
}

if [[ "${2:-}" == --add-bundle ]]; then
  version="${3:?version}"
  commit="${4:?commit}"
  file="$dir/bundles/$package.v$version.yaml"
  if [[ -e "$file" ]]; then
    echo "catalog.sh: $file exists: a released bundle never changes" >&2
    exit 1
  fi
  # Bundles are carried inline (olm.bundle.object, no image): no image registry is needed to
  # install from this catalog.
  "$opm" render "$root/bundle" -o yaml > "$file.tmp"
  release add --package "$package" --releases "$root/catalog/releases.yaml" --version "$version" \
    --commit "$commit" --bundle "$file.tmp" || { rm -f "$file.tmp"; exit 1; }
  mv "$file.tmp" "$file"
fi

icon="$(sed -n 's/^    - base64data: //p' "$root/config/manifests/bases/$package.clusterserviceversion.yaml")"
cat > "$dir/package.yaml" <<YAML
---
schema: olm.package
name: $package
defaultChannel: stable
description: Gives every NeuralLog tenant an isolated namespace with its own log server, Redis, endpoint registry, network isolation and quotas.
icon:
  base64data: $icon
  mediatype: image/svg+xml
YAML

release channels --package "$package" --releases "$root/catalog/releases.yaml" > "$dir/channels.yaml"

"$opm" validate "$root/catalog"
