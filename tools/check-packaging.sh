#!/usr/bin/env bash
# The OLM packaging is valid and generated: the bundle passes operator-sdk's OperatorHub validators
# with no error and no warning, the catalog passes `opm validate`, and regenerating the bundle,
# the manager image and the catalog from the sources gives exactly the committed files.
#
#   tools/check-packaging.sh <version> <image>
set -euo pipefail

version="${1:?usage: tools/check-packaging.sh <version> <image>}"
image="${2:?image}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/tools"
operator_sdk="$("$tools/build.sh" operator-sdk)/operator-sdk"
min_kube="$(sed -n 's/^  minKubeVersion: //p' "$root/config/manifests/bases/neurallog-tenant-operator.clusterserviceversion.yaml")"

validation="$("$operator_sdk" bundle validate "$root/bundle" --select-optional suite=operatorframework \
  --optional-values=k8s-version="$min_kube" 2>&1)" || { echo "$validation"; exit 1; }
if grep -qiE 'level=(warning|error)' <<<"$validation"; then
  echo "check-packaging: the bundle validators reported problems:" >&2
  echo "$validation" >&2
  exit 1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r "$root/config" "$root/catalog" "$scratch/"
"$tools/bundle.sh" "$scratch" "$version" "$image"
# The catalog is checked from the committed tree, with this release's bundle re-rendered.
"$tools/catalog.sh" "$scratch" --add-bundle "$version" >/dev/null
stale=0
for path in bundle bundle.Dockerfile config/manager/kustomization.yaml catalog; do
  if ! diff -r "$root/$path" "$scratch/$path" >"$scratch/diff" 2>&1; then
    echo "check-packaging: $path is stale; run \`make bundle catalog\` and commit the result:" >&2
    cut -c1-160 "$scratch/diff" | head -40 >&2
    stale=1
  fi
done
exit "$stale"
