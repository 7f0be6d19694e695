#!/usr/bin/env bash
# Writes the OperatorHub.io submission of every stable release and checks it as OperatorHub.io's
# pipelines do (tools/operatorhub-validate.sh on each version, at the oldest and the newest
# supported Kubernetes):
#
#   <out>/operators/neurallog-tenant-operator/ci.yaml
#   <out>/operators/neurallog-tenant-operator/<version>/{manifests,metadata}/
#
# Each version's manifests are its frozen catalog bundle (catalog/releases.yaml checks them byte for
# byte), with the upgrade edges of the stable channel written into its CSV (tools/release). Copy
# operators/neurallog-tenant-operator/ into a clone of community-operators to submit.
#
#   tools/operatorhub.sh [<out>]   # default: .local/operatorhub
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/.local/operatorhub}"
package=neurallog-tenant-operator
csv_base="$root/config/manifests/bases/$package.clusterserviceversion.yaml"
min_kube="$(sed -n 's/^  minKubeVersion: //p' "$csv_base")"
max_kube="$(sed -n 's/^    operatorhub.io\/ui-metadata-max-k8s-version: "\(.*\)"/\1/p' "$csv_base")"

cd "$root"
cargo run --quiet --locked -p release -- operatorhub --package "$package" --releases catalog/releases.yaml \
  --bundles "catalog/$package/bundles" --out "$out"
status=0
for dir in "$out/operators/$package"/*/; do
  if ! tools/operatorhub-validate.sh "$dir" "$min_kube" "$max_kube"; then
    status=1
  fi
done
[[ "$status" == 0 ]] || exit 1
echo "operatorhub: $out/operators/$package ($(cd "$out/operators/$package" && ls -d */ | tr -d / | xargs)), valid for Kubernetes $min_kube to $max_kube"
