#!/usr/bin/env bash
# Renders the file-based catalog: the package and the channels computed from catalog/releases.yaml
# (tools/release). Used by tools/release.sh, in two steps around the release commit:
#  --add-bundle <version>            the bundle in bundle/ becomes the released bundle of <version>
#                                    in catalog/<package>/bundles/ (it must not exist yet);
#  --record <version> <commit>       the release is appended to catalog/releases.yaml with <commit>,
#                                    the commit whose sources state <version> and hold its bundle,
#                                    and the bundle file's sha256.
# Every released bundle stays in the catalog, byte for byte as released, so an upgrade from any
# release can be tested offline.
#
#   tools/catalog.sh <root> [--add-bundle <version> | --record <version> <commit>]
set -euo pipefail

usage="usage: tools/catalog.sh <root> [--add-bundle <version> | --record <version> <commit>]"
root="$(cd "${1:?$usage}" && pwd)"
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
opm="$("$tools/build.sh" opm)/opm"
package=neurallog-tenant-operator
dir="$root/catalog/$package"
mkdir -p "$dir/bundles"

release() {
  cargo run --quiet --locked --manifest-path "$tools/../Cargo.toml" -p release -- "$@"
}

case "${2:-}" in
  --add-bundle)
    file="$dir/bundles/$package.v${3:?$usage}.yaml"
    if [[ -e "$file" ]]; then
      echo "catalog.sh: $file exists: a released bundle never changes" >&2
      exit 1
    fi
    # Bundles are carried inline (olm.bundle.object, no image): no image registry is needed to
    # install from this catalog.
    "$opm" render "$root/bundle" -o yaml > "$file.tmp"
    mv "$file.tmp" "$file"
    # The channels list the release once it is recorded.
    exit 0
    ;;
  --record)
    version="${3:?$usage}"
    release add --package "$package" --releases "$root/catalog/releases.yaml" --version "$version" \
      --commit "${4:?$usage}" --bundle "$dir/bundles/$package.v$version.yaml"
    ;;
  "") ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

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
