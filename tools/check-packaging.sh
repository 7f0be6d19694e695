#!/usr/bin/env bash
# The OLM packaging is valid, generated and frozen where released:
#
# - the bundle in bundle/ passes OperatorHub.io's validators (tools/operatorhub-validate.sh), and
#   the catalog passes `opm validate`;
# - every released bundle in the catalog is byte for byte what catalog/releases.yaml's sha256
#   says, every listed (non-yanked) release has its bundle file and there is no other file;
# - regenerating bundle/, bundle.Dockerfile and the manager image for the current version, and
#   the catalog's package and channels, from the sources gives exactly the committed files;
# - the OperatorHub.io submission of every release (tools/operatorhub.sh) passes the same
#   validators;
# - if the current version is released, bundle/ is still that release's bundle: a change to
#   config/ after a release needs the next (development) version first.
#
#   tools/check-packaging.sh <version> <image>
set -euo pipefail

version="${1:?usage: tools/check-packaging.sh <version> <image>}"
image="${2:?image}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/tools"
package=neurallog-tenant-operator
bundles="catalog/$package/bundles"
opm="$("$tools/build.sh" opm)/opm"
# A released version's bundle names the operator image by the digest its release recorded.
if recorded="$(cd "$root" && cargo run --quiet --locked -p release -- image --releases catalog/releases.yaml \
  --version "$version" --name operator 2>/dev/null)"; then
  image="$recorded"
fi
csv_base="$root/config/manifests/bases/$package.clusterserviceversion.yaml"
min_kube="$(sed -n 's/^  minKubeVersion: //p' "$csv_base")"
max_kube="$(sed -n 's/^    operatorhub.io\/ui-metadata-max-k8s-version: "\(.*\)"/\1/p' "$csv_base")"
status=0

# OperatorHub.io's static checks, at the oldest and the newest supported Kubernetes.
"$tools/operatorhub-validate.sh" "$root/bundle" "$min_kube" "$max_kube" || exit 1

# Released bundles are frozen; the messages name each file (relative to the repository).
if ! (cd "$root" && cargo run --quiet --locked -p release -- check-bundles --package "$package" \
  --releases catalog/releases.yaml --bundles "$bundles"); then
  echo "check-packaging: $bundles differs from what catalog/releases.yaml records" >&2
  status=1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r "$root/config" "$root/catalog" "$scratch/"
"$tools/bundle.sh" "$scratch" "$version" "$image"
# Package and channels only (and opm validate): bundles enter the catalog through `make release`.
if ! "$tools/catalog.sh" "$scratch" >/dev/null; then
  echo "check-packaging: the catalog is not valid (opm validate, above)" >&2
  status=1
fi
for path in bundle bundle.Dockerfile config/manager/kustomization.yaml catalog; do
  if ! diff -r "$root/$path" "$scratch/$path" >"$scratch/diff" 2>&1; then
    echo "check-packaging: $path is stale; run \`make bundle catalog\` and commit the result:" >&2
    cut -c1-160 "$scratch/diff" | head -40 >&2
    status=1
  fi
done

# The OperatorHub.io submission of every release is valid as well.
if ! "$tools/operatorhub.sh" "$scratch/operatorhub" >/dev/null; then
  echo "check-packaging: the OperatorHub.io submission is not valid (above)" >&2
  status=1
fi

released="$bundles/$package.v$version.yaml"
if [[ -e "$root/$released" ]]; then
  "$opm" render "$scratch/bundle" -o yaml >"$scratch/current.yaml"
  if ! cmp -s "$root/$released" "$scratch/current.yaml"; then
    echo "check-packaging: $version is released and $released is frozen, but the sources now" \
      "generate a different bundle for it: set the next development version (x.y.z-dev, above" \
      "$version) in Cargo.toml and run \`make bundle\`" >&2
    status=1
  fi
fi
exit "$status"
