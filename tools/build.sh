#!/usr/bin/env bash
# Builds one pinned upstream component from its wrapper module in tools/<component>/ and prints the
# directory holding its binaries. Builds land in a cache outside the clone, keyed by the component's
# version and a hash of its go.mod, go.sum, Go files and recipe below, so a second call (or a fresh
# clone) reuses them, and editing this script rebuilds only the components whose recipe changed.
#
#   tools/build.sh kubernetes   # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#                               # kubelet, kube-proxy
#   tools/build.sh etcd         # etcd
#   tools/build.sh jaeger       # jaeger (Jaeger v2: collector + query + in-memory storage)
#   tools/build.sh opm          # opm (operator-registry: render, validate, serve file-based catalogs)
#   tools/build.sh operator-sdk # operator-sdk (generate bundle, bundle validate; no Ansible plugin)
#   tools/build.sh olm          # olm, catalog (OLM v0's operators), cpb (its bundle unpacker);
#                               # ../crds: OLM's CRDs
#   tools/build.sh grpc-health-probe # grpc-health-probe
#   tools/build.sh kwok         # kwok, kwokctl (fake nodes/pods; kwokctl --runtime binary)
#   tools/build.sh coredns      # coredns
#   tools/build.sh kube-router  # kube-router (its NetworkPolicy controller enforces on the real node)
#   tools/build.sh versitygw    # versitygw (the S3-compatible store the backup tests write to)
#   tools/build.sh prometheus   # prometheus, promtool (Prometheus 3; no built-in web UI, the API only)
#   tools/build.sh prometheus-operator # operator (the Prometheus Operator);
#                               # ../prometheus-operator-crd: its CRDs
set -euo pipefail

component="${1:?usage: tools/build.sh <component>}"
tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="$tools_dir/$component"
[[ -f "$module_dir/go.mod" ]] || { echo "tools/build.sh: unknown component '$component'" >&2; exit 2; }

cache_root="${NEURALLOG_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/neurallog-tenant-operator/tools}"

# Part of every cache key: bump it when the build logic below the recipes changes in a way that
# changes the binaries (flags, environment, renames), so every component rebuilds once.
recipe_format=1

tags=""
ldflags="-s -w"
# Optional: a directory of the first package's module (relative to the module root) to copy next to
# the binaries, as <out>/<its last path element>. Part of the key only for the components that set it.
module_files=""
case "$component" in
  kubernetes)
    version="v1.34.10"
    packages=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
              k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
              k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
    tags="selinux,notest"
    # Unstamped builds report v0.0.0, which OLM's minKubeVersion check and kwok both misread.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=34"
      ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
      ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    ;;
  etcd)
    version="v3.6.14"
    packages=(go.etcd.io/etcd/server/v3)
    ;;
  jaeger)
    # Go version v1.76.0 of github.com/jaegertracing/jaeger is Jaeger v2.13.0 (see tools/jaeger/go.mod).
    version="v2.13.0"
    packages=(github.com/jaegertracing/jaeger/cmd/jaeger)
    ldflags+=" -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$version"
    ldflags+=" -X github.com/jaegertracing/jaeger/internal/version.date=2025-12-03T16:07:08Z"
    ;;
  opm)
    version="v1.73.0"
    packages=(github.com/operator-framework/operator-registry/cmd/opm)
    # Upstream's tags. Without containers_image_openpgp, go.podman.io/image's signature package needs
    # gpgme (cgo). json1 only matters for the SQLite index, which needs cgo and is left out here.
    tags="json1,containers_image_openpgp"
    # Unstamped, `opm version` says "unknown". The commit is the tag's, as the module proxy reports it.
    pkg=github.com/operator-framework/operator-registry/cmd/opm/version
    ldflags+=" -X $pkg.opmVersion=$version -X $pkg.gitCommit=19af4a361697de502ae43b0ab5b072973cbe4655"
    ldflags+=" -X $pkg.buildDate=2026-07-23T19:28:03Z"
    ;;
  operator-sdk)
    # tools/operator-sdk/go.mod replaces the Ansible plugin module, which the proxy does not serve.
    version="v1.42.3"
    packages=(github.com/operator-framework/operator-sdk/cmd/operator-sdk)
    tags="containers_image_openpgp"
    # Unstamped, `operator-sdk version` and the bundle annotations it writes say "unknown". These are
    # upstream's Makefile values for the tag (K8S_VERSION=1.33.1, IMAGE_VERSION=v1.42.3).
    pkg=github.com/operator-framework/operator-sdk/internal/version
    ldflags+=" -X $pkg.Version=$version -X $pkg.GitVersion=$version -X $pkg.ImageVersion=$version"
    ldflags+=" -X $pkg.GitCommit=2016cae87253bef07444dd47c463bdbb27c44c48 -X $pkg.KubernetesVersion=v1.33.1"
    ;;
  olm)
    version="v0.46.0"
    # cpb is what OLM's bundle unpack job runs in the bundle image to copy its manifests out.
    packages=(github.com/operator-framework/operator-lifecycle-manager/cmd/olm
              github.com/operator-framework/operator-lifecycle-manager/cmd/catalog
              github.com/operator-framework/operator-lifecycle-manager/util/cpb)
    # Upstream's tag (GO_BUILD_TAGS). Unstamped, `olm --version` and `catalog --version` print empty
    # fields. The commit is the tag's, as the module proxy reports it.
    tags="json1"
    pkg=github.com/operator-framework/operator-lifecycle-manager/pkg/version
    ldflags+=" -X $pkg.OLMVersion=$version -X $pkg.GitCommit=0368a3f9dff1fa14c8645b867fba25c3be9df845"
    # OLM's CRDs, applied before olm and catalog start (testenv's olm module): <out>/crds/*.yaml.
    module_files="github.com/operator-framework/operator-lifecycle-manager deploy/chart/crds"
    ;;
  grpc-health-probe)
    # The catalog pods' probe (OLM runs it in the catalog image, as upstream's opm image holds it).
    version="v0.4.63"
    packages=(github.com/grpc-ecosystem/grpc-health-probe)
    ;;
  kwok)
    version="v0.8.0"
    packages=(sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl)
    # Upstream's hack/releases.sh stamps the git tag. KubeVersion is the Kubernetes version kwokctl
    # assumes when none is given (source default 1.36.1): keep it the kubernetes recipe's version.
    pkg=sigs.k8s.io/kwok/pkg/consts
    ldflags+=" -X $pkg.Version=$version -X $pkg.KubeVersion=1.34.10"
    ;;
  coredns)
    # See tools/coredns/go.mod for why this tag.
    version="v1.13.2"
    # The wrapper's own main (tools/coredns/main.go): upstream's server with the Corefile's plugins.
    packages=(neurallog.io/tools/coredns)
    # Upstream's Makefile stamps the commit, which `coredns -version` prints (empty unstamped). The
    # commit is the tag's, as the module proxy reports it.
    ldflags+=" -X github.com/coredns/coredns/coremain.GitCommit=0233f3e7c600b730426628f2cf9c829d404a181f"
    ;;
  kube-router)
    # The only NetworkPolicy enforcer that runs on these kernels (iptables and ipsets; SIG Network's
    # kube-network-policies needs nftables' queue expression, which they lack). v2.1.0 is the one
    # version the module proxy serves and has reported flaws: tools/kube-router/go.mod raises its
    # dependencies to current releases, and it runs only on the test node, on loopback, with its
    # health and metrics servers off. Upstream's Makefile stamps the version.
    version="v2.1.0"
    packages=(github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
    ldflags+=" -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$version"
    ;;
  versitygw)
    # The S3-compatible store of the backup tests: Apache-2.0, one binary, and a POSIX backend that
    # keeps each object as a plain file, so a test can corrupt or remove one behind its back.
    # Upstream's Makefile stamps the version.
    version="v1.8.0"
    packages=(github.com/versity/versitygw/cmd/versitygw)
    ldflags+=" -X main.Version=$version"
    ;;
  prometheus)
    # Go version v0.316.0 of github.com/prometheus/prometheus is Prometheus 3.16.0 (its VERSION file;
    # see tools/prometheus/go.mod). Upstream's .promu.yml tags netgo and builtinassets; the latter
    # embeds the web UI's assets, which need its npm build; the tests use only the HTTP API, so it is
    # left out (the UI's pages then look for the assets on disk and fail; the API does not need them).
    version="v3.16.0"
    packages=(github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool)
    tags="netgo"
    # Upstream's .promu.yml stamps these, which `prometheus --version`, `promtool --version` and
    # prometheus_build_info print (empty unstamped). The module proxy does not report the tag's commit,
    # so the revision stays unset ("unknown"); the branch is what release builds print, the date is the
    # tag's commit time as the proxy reports it.
    pkg=github.com/prometheus/common/version
    ldflags+=" -X $pkg.Version=${version#v} -X $pkg.Branch=HEAD -X $pkg.BuildUser=tools/build.sh"
    ldflags+=" -X $pkg.BuildDate=20261105-15:06:51"
    ;;
  prometheus-operator)
    version="v0.89.0"
    packages=(github.com/prometheus-operator/prometheus-operator/cmd/operator)
    # Upstream's Makefile stamps these, which `operator --version` and its startup log print (empty
    # unstamped); Version also tags the default config-reloader image it puts in the pods it makes.
    # The revision is the tag's commit, the date its commit time, both as the module proxy reports
    # them; upstream's branch (the CI ref) is left out.
    pkg=github.com/prometheus/common/version
    ldflags+=" -X $pkg.Version=${version#v} -X $pkg.Revision=e13fb157486c9957c11a88fca97bf1a758a915c8"
    ldflags+=" -X $pkg.BuildUser=tools/build.sh -X $pkg.BuildDate=20260206-08:19:25"
    # The operator's integration tests install the real ServiceMonitor and PrometheusRule CRDs (and the
    # others) from here: <out>/prometheus-operator-crd/*.yaml.
    module_files="github.com/prometheus-operator/prometheus-operator example/prometheus-operator-crd"
    ;;
  *)
    echo "tools/build.sh: no recipe for '$component'" >&2; exit 2 ;;
esac

# The key covers what decides the binaries: the module graph and this component's recipe, not the
# rest of this script.
recipe="$(printf '%s\n' "format=$recipe_format" "component=$component" "version=$version" "tags=$tags" \
  "ldflags=$ldflags" "${packages[@]/#/package=}")"
if [[ -n "$module_files" ]]; then recipe+=$'\n'"files=$module_files"; fi
hash="$({ cat "$module_dir/go.mod" "$module_dir/go.sum" $(compgen -G "$module_dir/*.go"); printf '%s\n' "$recipe"; } \
  | sha256sum | cut -c1-12)"
out="$cache_root/$component-$version-$hash"
if [[ -f "$out/.complete" ]]; then
  echo "$out/bin"
  exit 0
fi
# Parallel test processes may ask for the same build at once: one builds, the others wait for it.
mkdir -p "$cache_root"
exec 9>"$out.lock"
flock 9
if [[ -f "$out/.complete" ]]; then
  echo "$out/bin"
  exit 0
fi

echo "tools/build.sh: building $component $version into $out (first time only)" >&2
rm -rf "$out.tmp"
mkdir -p "$out.tmp/bin"
(
  cd "$module_dir"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  go build -trimpath ${tags:+-tags "$tags"} -ldflags "$ldflags" -o "$out.tmp/bin/" "${packages[@]}"
) >&2
if [[ -n "$module_files" ]]; then
  read -r files_module files_dir <<<"$module_files"
  module_root="$(cd "$module_dir" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$files_module")"
  cp -r "$module_root/$files_dir" "$out.tmp/$(basename "$files_dir")"
  chmod -R u+w "$out.tmp/$(basename "$files_dir")"
fi
# Go names a binary after the last path element without its major-version suffix: "server".
if [[ "$component" == etcd ]]; then mv "$out.tmp/bin/server" "$out.tmp/bin/etcd"; fi
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/bin"
