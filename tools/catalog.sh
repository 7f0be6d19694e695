#!/usr/bin/env bash
# Renders the file-based catalog: the package, the channels computed from catalog/releases.yaml
# (tools/release), and, with --add-bundle, the bundle in bundle/ as a released bundle. Every
# released bundle stays in the catalog, so an upgrade from any release can be tested offline.
#
#   tools/catalog.sh <root> [--add-bundle <version>]
set -euo pipefail

root="$(cd "${1:?usage: tools/catalog.sh <root> [--add-bundle <version>]}" && pwd)"
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
opm="$("$tools/build.sh" opm)/opm"
package=neurallog-tenant-operator
dir="$root/catalog/$package"
mkdir -p "$dir/bundles"

if [[ "${2:-}" == --add-bundle ]]; then
  version="${3:?version}"
  # Bundles are carried inline (olm.bundle.object, no image): no image registry is needed to
  # install from this catalog.
  "$opm" render "$root/bundle" -o yaml > "$dir/bundles/$package.v$version.yaml"
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

cargo run --quiet --locked --manifest-path "$tools/../Cargo.toml" -p release -- \
  channels --package "$package" --releases "$root/catalog/releases.yaml" > "$dir/channels.yaml"

"$opm" validate "$root/catalog"
