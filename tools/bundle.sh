#!/usr/bin/env bash
# Generates the OLM bundle of one release from config/: bundle/ and bundle.Dockerfile.
#
#   tools/bundle.sh <root> <version> <image>
#
# <image> is the operator's image by tag (`neurallog/tenant-operator:<version>`, between releases)
# or by digest (`neurallog/tenant-operator@sha256:<hex>`, what `make release` builds).
# <root> holds config/ and receives the outputs (the repository, or a copy of it for the
# staleness check). The operator image is written into config/manager first, so the CSV, the
# kustomize install and the relatedImages all name the same image.
set -euo pipefail

root="$(cd "${1:?usage: tools/bundle.sh <root> <version> <image>}" && pwd)"
version="${2:?version}"
image="${3:?image}"
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kubectl="$("$tools/build.sh" kubernetes)/kubectl"
operator_sdk="$("$tools/build.sh" operator-sdk)/operator-sdk"
package=neurallog-tenant-operator
base_csv="$root/config/manifests/bases/$package.clusterserviceversion.yaml"

# What `kustomize edit set image controller=<image>` does, without kustomize: the image's name, and
# its tag or (a release's image) its digest.
if [[ "$image" == *@sha256:* ]]; then
  name="${image%@*}" pin="    digest: ${image#*@}"
else
  name="${image%:*}" pin="    newTag: ${image##*:}"
fi
sed -i -e "s|^\(    newName: \).*|\1${name}|" -e "s#^    \(newTag\|digest\): .*#${pin}#" \
  "$root/config/manager/kustomization.yaml"
# The backup and restore pods run the same image.
sed -i "/name: TENANT_OPERATOR_IMAGE/{n;s|^\( *value: \).*|\1${image}|}" "$root/config/manager/manager.yaml"

cd "$root"
rm -rf bundle
"$kubectl" kustomize config/manifests \
  | "$operator_sdk" generate bundle -q --overwrite --version "$version" --package "$package" \
      --channels stable,candidate --default-channel stable --output-dir bundle >/dev/null 2>&1

csv="bundle/manifests/$package.clusterserviceversion.yaml"
# The block of the base CSV's spec field $1, as written, without comments.
base_block() {
  awk -v key="  $1:" '$0 == key {on = 1; print; next} on && /^  [a-zA-Z]/ {on = 0} on' "$base_csv" \
    | grep -v '^ *#'
}
# operator-sdk lists the Deployment's RELATED_IMAGE_* variables (the default NeuralLog images) as
# relatedImages; the operator's own image goes first, so that a mirror finds every image in one list.
if ! grep -q '^  relatedImages:$' "$csv"; then
  echo "tools/bundle.sh: the generated CSV lists no relatedImages: are the RELATED_IMAGE_* variables gone from config/manager?" >&2
  exit 1
fi
awk -v image="$image" '$0 == "  relatedImages:" {print; print "  - image: " image; print "    name: tenant-operator"; next} {print}' \
  "$csv" > "$csv.tmp"
mv "$csv.tmp" "$csv"
# A disconnected (mirrored) install needs every image named by digest: the annotation says so only
# when the operator's and all relatedImages are.
related_images="$(awk '$0 == "  relatedImages:" {on = 1; next} on && /^  [a-zA-Z]/ {on = 0} on && $1 == "-" && $2 == "image:" {print $3}' "$csv")"
disconnected=true
for related_image in $related_images; do
  [[ "$related_image" == *@sha256:* ]] || disconnected=false
done
sed -i "s|^\(    features.operators.openshift.io/disconnected: \).*|\1\"$disconnected\"|" "$csv"
# operator-sdk derives webhookdefinitions only from webhook configurations and from CRDs whose
# conversion names a Service of the manifests, and the bundle has neither: OLM makes the Service
# and writes the CRD's conversion from the webhookdefinitions. Those of the base CSV (the conversion
# webhook) are carried over, last in the spec, where operator-sdk sorts them.
if [[ "$(tail -1 "$csv")" != "  version: $version" ]]; then
  echo "tools/bundle.sh: the generated CSV no longer ends with its version; place webhookdefinitions anew" >&2
  exit 1
fi
base_block webhookdefinitions >> "$csv"
# operator-sdk stamps the time of generation; the release keeps the date written in the base CSV.
created_at="$(sed -n 's/^    createdAt: //p' "$base_csv")"
sed -i -e "s|^\(    createdAt: \).*|\1${created_at}|" \
  -e "s|^\(    containerImage: \).*|\1${image}|" \
  -e "/name: TENANT_OPERATOR_IMAGE/{n;s|^\( *value: \).*|\1${image}|}" \
  -e "s|^\(      image: \)neurallog/tenant-operator[:@].*|\1${image}|" \
  -e "s|^\(    - image: \)neurallog/tenant-operator[:@].*|\1${image}|" \
  "$csv"
