#!/usr/bin/env bash
# Builds the project's images with podman, offline (only the package registries are needed: Debian's
# apt mirror, crates.io and the Go module proxy), and records every image's ID and digest.
#
#   tools/images.sh                    # all of them
#   tools/images.sh operator catalog   # only those, and the base images they need
#
# Images, tagged in the local store (VERSION from Cargo.toml):
#   operator  localhost/neurallog/tenant-operator:VERSION          Dockerfile
#   bundle    localhost/neurallog/tenant-operator-bundle:vVERSION  bundle.Dockerfile
#   catalog   localhost/neurallog/tenant-operator-catalog:vVERSION catalog.Dockerfile
#   redis     localhost/neurallog-test/redis:7.0                   tools/images/redis.Containerfile
#   server, registry, pause  localhost/neurallog-test/NAME:standin tools/images/standin.Containerfile
#   versions  the stand-ins as NeuralLog versions, recorded as server-V and registry-V, and the Redis
#             image the operator defaults to (redis-default), as a mirror of the default names
#             serves them to the node:
#             localhost/neurallog/server:V, localhost/neurallog/registry:V  standin-version.Containerfile
#             localhost/library/redis:TAG (the redis image, tagged as src/model/operand.rs names it)
#   coredns   localhost/neurallog-test/coredns:ITS_VERSION         tools/images/coredns.Containerfile
#   olm       localhost/neurallog-test/olm:ITS_VERSION             tools/images/olm.Containerfile
#   opm-tools localhost/neurallog-test/opm-tools:OPM_VERSION       tools/images/opm-tools.Containerfile
#   released  for every release R of catalog/releases.yaml, from its release commit:
#             localhost/neurallog/tenant-operator:R                tools/images/released-operator.Containerfile
#             localhost/neurallog/tenant-operator-bundle:vR        its bundle.Dockerfile
#   next      this checkout as its next patch release N (VERSION without pre-release, patch + 1), for
#             the test that upgrades this checkout through OLM:
#             localhost/neurallog/tenant-operator:N                the operator image, a label apart
#             localhost/neurallog/tenant-operator-bundle:vN        a bundle generated for N and it
#
# The Containerfiles name public base images by default; here they get local equivalents, built
# only when missing or when their recipe changed (the label neurallog.recipe holds its hash):
#   localhost/neurallog-base/debian:bookworm-slim  debootstrap --variant=minbase, the host's apt mirror
#   localhost/neurallog-base/rust:X.Y-bookworm     that + gcc, libc6-dev, ca-certificates, pkg-config
#                                                  + this host's Rust toolchain (rustc --print sysroot)
#   localhost/neurallog-base/opm:v1.73.0           /bin/opm of `tools/build.sh opm`, and
#                                                  /bin/grpc_health_probe of `tools/build.sh grpc-health-probe`
#
# The record is a TSV (name, reference, image ID, digest) at $IMAGES_RECORD, by default
# .local/images/images.tsv; a partial build replaces only its own rows. Its path is printed on stdout
# at the end, the progress on stderr.
#
# Environment:
#   IMAGES_RECORD        where the record goes
#   REVISION             the commit stamped into the operator (default: HEAD, "-dirty" with local changes)
#   DEBIAN_MIRROR        the Debian mirror for the base (default: the host's apt source for bookworm)
#   CATALOG_CONTEXT      the catalog image's build context instead of this checkout: a directory
#                        holding a catalog/ (the end-to-end tests compose one from bundle images)
#   CATALOG_IMAGE        the catalog image's reference instead of the one above
#   SOURCE_DATE_EPOCH    when set (`make release` sets the release commit's time), the operator,
#                        bundle and catalog images are built reproducibly: that creation time for the
#                        image and every file in its layers, and no layer cache, so the same sources
#                        give the same digest
#   IMAGES_PODMAN_FLAGS  flags for every `podman build` and `podman run` here instead of the default:
#                        runc when installed (crun fails on cgroup v1 hosts) and file and process
#                        limits that a nested or unprivileged host lets a container set
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

all_images=(operator bundle catalog redis server registry pause versions coredns olm opm-tools released next)
record="${IMAGES_RECORD:-$root/.local/images/images.tsv}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
suite=bookworm
opm_version=v1.73.0

log() { echo "tools/images.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Root's commands (apt, debootstrap) go through sudo when this is not root.
sudo=()
if [[ "$(id -u)" != 0 ]]; then sudo=(sudo); fi

# Debian's podman, buildah, debootstrap and uidmap, when any is missing.
ensure_podman() { tools/packages.sh images; }

wanted=("${all_images[@]}")
if [[ $# -gt 0 ]]; then
  wanted=("$@")
  for name in "${wanted[@]}"; do
    [[ " ${all_images[*]} " == *" $name "* ]] || { log "unknown image '$name' (known: ${all_images[*]})"; exit 2; }
  done
fi

ensure_podman

if [[ -n "${IMAGES_PODMAN_FLAGS+set}" ]]; then
  read -ra podman_flags <<<"$IMAGES_PODMAN_FLAGS"
else
  podman_flags=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
  if command -v runc >/dev/null; then podman_flags+=(--runtime runc); fi
fi
# RUN steps reach the package registries through the host's network; base images are never pulled.
build() { podman build "${podman_flags[@]}" --network host --pull=never "$@" >&2; }
# The flags that make one of this project's images reproducible when SOURCE_DATE_EPOCH is set.
reproducible=()
if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then reproducible=(--no-cache --timestamp "$SOURCE_DATE_EPOCH"); fi
# A container of a built image, checked: no network, so podman sets up no bridge, addresses or
# iptables rules (nor leaves them behind when a run fails).
run() { podman run --rm --network none "${podman_flags[@]}" "$@"; }

# Lazily unmounts whatever is still mounted below a directory ($1), deepest first.
unmount_below() {
  awk -v dir="$1/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt" || true
  done
}

# One run at a time: the base images and the build cache mounts are shared by every clone here.
exec 9>"${TMPDIR:-/tmp}/neurallog-images.lock"
if ! flock -n 9; then
  log "waiting for another run to finish"
  flock 9
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/neurallog-images.XXXXXX")"
# A failed debootstrap may leave its bind mounts: never remove through them.
cleanup() {
  if [[ -d "$work/debian" ]]; then "${sudo[@]}" bash -c "$(declare -f unmount_below); unmount_below '$work/debian'"; fi
  "${sudo[@]}" rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# The recipe hash an image was built with ("" when the image is missing).
recipe_of() { podman image inspect --format '{{index .Labels "neurallog.recipe"}}' "$1" 2>/dev/null || true; }
hash_of() { sha256sum | cut -c1-16; }

# name<TAB>reference<TAB>ID<TAB>digest of each image this run built or checked, in order.
rows=()
record_image() {
  local name="$1" ref="$2" id digest
  id="$(podman image inspect --format '{{.Id}}' "$ref")"
  digest="$(podman image inspect --format '{{.Digest}}' "$ref")"
  rows+=("$name"$'\t'"$ref"$'\t'"$id"$'\t'"$digest")
  log "$name: $ref $digest"
}

# The URI of the host's apt source for a suite ($1), deb822 (*.sources) first, then one-line lists.
apt_source() {
  local want="$1" file uri
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$file" ]] || continue
    uri="$(awk -v suite="$want" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uri = ""; found = 0; deb = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
          if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); uri = u[2] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) found = 1 }
        }
        if (deb && found && uri != "") { print uri; exit }
      }' "$file")"
    if [[ -n "$uri" ]]; then echo "$uri"; return; fi
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$want" '
    $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; exit }
    }'
}

# --- Base images --------------------------------------------------------------------------------

debian_ref="localhost/neurallog-base/debian:$suite-slim"

# debian:bookworm-slim's equivalent: a minbase debootstrap from the host's mirror, without docs,
# manuals or translations, with apt pointed at the same mirror (and its security archive, when the
# host has one).
base_debian() {
  if [[ -n "${checked_debian:-}" ]]; then return; fi
  checked_debian=1
  local mirror security recipe
  mirror="${DEBIAN_MIRROR:-$(apt_source "$suite")}"
  [[ -n "$mirror" ]] || die "no apt source for $suite on this host: set DEBIAN_MIRROR"
  security="$(apt_source "$suite-security")"
  recipe="$( { declare -f debian_rootfs; echo "suite=$suite mirror=$mirror security=$security"; } | hash_of)"
  if [[ "$(recipe_of "$debian_ref")" == "$recipe" ]]; then record_image base-debian "$debian_ref"; return; fi
  log "building $debian_ref with debootstrap from $mirror (first time only)"
  local start=$SECONDS
  "${sudo[@]}" bash -c "$(declare -f debian_rootfs unmount_below); debian_rootfs \"\$@\"" debian_rootfs \
    "$work/debian" "$suite" "$mirror" "$security" >&2
  "${sudo[@]}" tar --numeric-owner --xattrs --one-file-system -C "$work/debian" -c . \
    | podman import --change 'CMD ["bash"]' --change "LABEL neurallog.recipe=$recipe" - "$debian_ref" >&2
  "${sudo[@]}" rm -rf --one-file-system "$work/debian"
  log "$debian_ref built in $((SECONDS - start))s"
  record_image base-debian "$debian_ref"
}

# As root: debootstrap into $1 and trim it.
debian_rootfs() {
  local dir="$1" suite="$2" mirror="$3" security="$4"
  set -euo pipefail
  debootstrap --variant=minbase "$suite" "$dir" "$mirror"
  # Nothing may stay mounted (debootstrap unmounts what it mounted; be sure).
  unmount_below "$dir"
  rm -f "$dir/etc/apt/sources.list" "$dir/etc/resolv.conf" "$dir/etc/hostname"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$suite" "$suite"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [[ -n "$security" ]]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$suite"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } >"$dir/etc/apt/sources.list.d/debian.sources"
  # Kept small: packages installed later bring no manuals, documentation or translations, and apt
  # drops what it downloads.
  printf 'path-exclude /usr/share/%s/*\n' doc man info locale >"$dir/etc/dpkg/dpkg.cfg.d/neurallog-small"
  echo 'APT::Keep-Downloaded-Packages "false";' >"$dir/etc/apt/apt.conf.d/neurallog-small"
  rm -rf --one-file-system "${dir:?}"/usr/share/{doc,man,info,locale}/* "${dir:?}"/var/lib/apt/lists/* \
    "${dir:?}"/var/cache/apt/*.bin "${dir:?}"/var/cache/apt/archives/*.deb "${dir:?}"/var/log/* "${dir:?}"/tmp/* \
    "${dir:?}"/var/tmp/* "${dir:?}"/dev/* "${dir:?}"/proc/* "${dir:?}"/sys/* "${dir:?}"/run/*
  mkdir -p "$dir/var/lib/apt/lists/partial" "$dir/var/cache/apt/archives/partial"
  if [[ -f "$dir/etc/machine-id" ]]; then : >"$dir/etc/machine-id"; fi
}

rust_toolchain_version() { rustc --version | awk '{ print $2 }'; }
rust_ref() { local v; v="$(rust_toolchain_version)"; echo "localhost/neurallog-base/rust:${v%.*}-$suite"; }

# rust:X.Y-bookworm's equivalent: the Debian base, a C toolchain and this host's Rust toolchain
# (without its docs) in the official image's layout.
base_rust() {
  if [[ -n "${checked_rust:-}" ]]; then return; fi
  checked_rust=1
  base_debian
  command -v rustc >/dev/null || die "rustc is not on PATH: the Rust base image takes this host's toolchain"
  local ref sysroot rust_version toolchain recipe debian_id
  ref="$(rust_ref)"
  sysroot="$(rustc --print sysroot)"
  rust_version="$(rust_toolchain_version)"
  toolchain="$rust_version-$(rustc -vV | sed -n 's/^host: //p')"
  debian_id="$(podman image inspect --format '{{.Id}}' "$debian_ref")"
  recipe="$( { cat tools/images/base-rust.Containerfile; rustc -vV; cargo -vV; echo "$debian_id $toolchain"; } | hash_of)"
  if [[ "$(recipe_of "$ref")" == "$recipe" ]]; then record_image base-rust "$ref"; return; fi
  log "building $ref with the toolchain at $sysroot (first time only)"
  local start=$SECONDS context="$work/rust"
  mkdir -p "$context/toolchain"
  # Hard links when the toolchain is on the same file system (nothing to copy), else a copy.
  local part
  for part in "$sysroot"/*; do
    [[ "$(basename "$part")" == share ]] && continue
    cp -al "$part" "$context/toolchain/" 2>/dev/null || cp -a "$part" "$context/toolchain/"
  done
  mkdir -p "$context/toolchain/share"
  for part in "$sysroot"/share/*; do
    [[ "$(basename "$part")" == doc ]] && continue
    cp -a "$part" "$context/toolchain/share/"
  done
  build -f tools/images/base-rust.Containerfile --build-arg DEBIAN_IMAGE="$debian_ref" \
    --build-arg RUST_TOOLCHAIN="$toolchain" --build-arg RUST_VERSION="$rust_version" \
    --label neurallog.recipe="$recipe" -t "$ref" "$context"
  rm -rf "$context"
  run "$ref" cargo --version >&2
  log "$ref built in $((SECONDS - start))s"
  record_image base-rust "$ref"
}

opm_ref="localhost/neurallog-base/opm:$opm_version"

# The opm image's equivalent, for catalog.Dockerfile.
base_opm() {
  if [[ -n "${checked_opm:-}" ]]; then return; fi
  checked_opm=1
  local bin probe recipe
  bin="$(tools/build.sh opm)"
  probe="$(tools/build.sh grpc-health-probe)"
  recipe="$( { cat tools/images/opm.Containerfile; sha256sum <"$bin/opm"; sha256sum <"$probe/grpc-health-probe"; } \
    | hash_of)"
  if [[ "$(recipe_of "$opm_ref")" == "$recipe" ]]; then record_image base-opm "$opm_ref"; return; fi
  log "building $opm_ref"
  local context="$work/opm"
  mkdir -p "$context/rootfs/bin" "$context/rootfs/tmp" "$context/rootfs/etc"
  cp "$bin/opm" "$context/rootfs/bin/opm"
  # OLM probes a catalog pod with it, by the name upstream's image gives it.
  cp "$probe/grpc-health-probe" "$context/rootfs/bin/grpc_health_probe"
  chmod 1777 "$context/rootfs/tmp"
  echo 'hosts: files dns' >"$context/rootfs/etc/nsswitch.conf"
  build -f tools/images/opm.Containerfile --label neurallog.recipe="$recipe" -t "$opm_ref" "$context"
  rm -rf "$context"
  record_image base-opm "$opm_ref"
}

# --- The images ---------------------------------------------------------------------------------

revision() {
  if [[ -n "${REVISION:-}" ]]; then echo "$REVISION"; return; fi
  local rev
  rev="$(git rev-parse HEAD 2>/dev/null)" || { echo unknown; return; }
  if ! git diff --quiet HEAD -- 2>/dev/null; then rev+="-dirty"; fi
  echo "$rev"
}

image_operator() {
  base_rust
  local ref="localhost/neurallog/tenant-operator:$version" rev start=$SECONDS
  rev="$(revision)"
  # Cargo in the build trusts what this host trusts (a TLS-inspecting proxy's CA, say): the host's
  # CA bundle and a cargo config naming it are mounted into the RUN steps only, never into an image.
  local host_ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" mounts=()
  if [[ -f "$host_ca" ]]; then
    printf '[http]\ncainfo = "/run/host-ca-certificates.crt"\n' >"$work/cargo-config.toml"
    mounts=(--volume "$host_ca:/run/host-ca-certificates.crt:ro"
            --volume "$work/cargo-config.toml:/usr/local/cargo/config.toml:ro")
  fi
  log "building $ref ($rev)"
  build -f Dockerfile "${reproducible[@]}" "${mounts[@]}" --build-arg BUILDER_IMAGE="$(rust_ref)" \
    --build-arg VERSION="$version" --build-arg REVISION="$rev" -t "$ref" .
  log "$ref built in $((SECONDS - start))s: $(run "$ref" --version)"
  record_image operator "$ref"
}

image_bundle() {
  local ref="localhost/neurallog/tenant-operator-bundle:v$version"
  log "building $ref"
  build -f bundle.Dockerfile "${reproducible[@]}" -t "$ref" .
  record_image bundle "$ref"
}

image_catalog() {
  base_opm
  local ref="${CATALOG_IMAGE:-localhost/neurallog/tenant-operator-catalog:v$version}"
  log "building $ref"
  build -f catalog.Dockerfile "${reproducible[@]}" --build-arg OPM_IMAGE="$opm_ref" -t "$ref" "${CATALOG_CONTEXT:-.}"
  record_image catalog "$ref"
}

image_redis() {
  local file=tools/images/redis.Containerfile ref=localhost/neurallog-test/redis:7.0
  base_debian
  log "building $ref"
  mkdir -p "$work/redis"
  build -f "$file" --build-arg DEBIAN_IMAGE="$debian_ref" -t "$ref" "$work/redis"
  record_image redis "$ref"
}

# The stand-ins: one static binary of tools/standins/cmd/NAME each, on scratch.
image_standin() {
  local name="$1" file=tools/images/standin.Containerfile ref="localhost/neurallog-test/$1:standin"
  local context="$work/standins"
  mkdir -p "$context"
  log "building $ref"
  (cd tools/standins && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$context/$name" "./cmd/$name") >&2
  local args=(--build-arg BINARY="$name")
  # The real pause image's user.
  if [[ "$name" == pause ]]; then args+=(--build-arg RUN_AS=65535:65535); fi
  build -f "$file" "${args[@]}" -t "$ref" "$context"
  record_image "$name" "$ref"
}

# The NeuralLog versions the rollout tests move tenants across: the operator's default (from
# src/model/operand.rs), a later one that is unready by design, and its fix.
standin_versions() {
  local default
  default="$(sed -n 's/^pub const DEFAULT_VERSION: &str = "\(.*\)";/\1/p' src/model/operand.rs)"
  [[ -n "$default" ]] || die "no DEFAULT_VERSION in src/model/operand.rs"
  echo "$default:ready 1.1.0:unready 1.1.1:ready"
}

image_versions() {
  local entry version readiness name base ref redis_default context="$work/versions"
  mkdir -p "$context"
  for name in server registry; do
    base="localhost/neurallog-test/$name:standin"
    podman image exists "$base" || image_standin "$name"
    for entry in $(standin_versions); do
      version="${entry%%:*}"
      readiness="${entry#*:}"
      ref="localhost/neurallog/$name:$version"
      log "building $ref"
      local unready=false
      # Only the server decides readiness; a broken version's registry is fine.
      if [[ "$name" == server && "$readiness" == unready ]]; then unready=true; fi
      # No layer cache: buildah reuses the first version's layers for the others, whatever the
      # build arguments.
      build --no-cache -f tools/images/standin-version.Containerfile --build-arg BASE="$base" \
        --build-arg VERSION="$version" --build-arg UNREADY="$unready" -t "$ref" "$context"
      record_image "$name-$version" "$ref"
    done
  done
  redis_default="$(sed -n 's|^pub const DEFAULT_REDIS_IMAGE: &str = "\(.*\)";|\1|p' src/model/operand.rs)"
  [[ -n "$redis_default" ]] || die "no DEFAULT_REDIS_IMAGE in src/model/operand.rs"
  # An official image named without a namespace (redis:TAG) is library/redis:TAG in a registry.
  [[ "$redis_default" == */* ]] || redis_default="library/$redis_default"
  podman image exists localhost/neurallog-test/redis:7.0 || image_redis
  podman tag localhost/neurallog-test/redis:7.0 "localhost/$redis_default"
  record_image redis-default "localhost/$redis_default"
}

image_coredns() {
  local bin ref
  bin="$(tools/build.sh coredns)"
  ref="localhost/neurallog-test/coredns:$(built_version "$bin" coredns)"
  log "building $ref"
  mkdir -p "$work/coredns"
  cp "$bin/coredns" "$work/coredns/coredns"
  build -f tools/images/coredns.Containerfile -t "$ref" "$work/coredns"
  record_image coredns "$ref"
}

# The version of a component's build: tools/build.sh prints <cache>/<component>-<version>-<hash>/bin.
built_version() {
  local dir
  dir="$(basename "$(dirname "$1")")"
  dir="${dir#"$2"-}"
  echo "${dir%-*}"
}

# OLM's olm and catalog operators and cpb: OLM's own image and the catalog operator's util image.
image_olm() {
  local bin ref
  bin="$(tools/build.sh olm)"
  ref="localhost/neurallog-test/olm:$(built_version "$bin" olm)"
  base_debian
  log "building $ref"
  mkdir -p "$work/olm"
  cp "$bin/olm" "$bin/catalog" "$bin/cpb" "$work/olm/"
  build -f tools/images/olm.Containerfile --build-arg DEBIAN_IMAGE="$debian_ref" -t "$ref" "$work/olm"
  record_image olm "$ref"
}

# opm on the Debian base, with a shell: the catalog image operator-sdk's run bundle is given.
image_opm_tools() {
  local ref="localhost/neurallog-test/opm-tools:$opm_version"
  base_debian
  log "building $ref"
  mkdir -p "$work/opm-tools"
  cp "$(tools/build.sh opm)/opm" "$work/opm-tools/opm"
  build -f tools/images/opm-tools.Containerfile --build-arg DEBIAN_IMAGE="$debian_ref" -t "$ref" "$work/opm-tools"
  record_image opm-tools "$ref"
}

# Every release of catalog/releases.yaml as the upgrade tests install it: its operator image (its own
# binary, tools/released-operator.sh) and its bundle image, from its release commit's bundle/ and
# bundle.Dockerfile. Recorded as operator-VERSION and bundle-VERSION.
image_released() {
  local release commit binary context ref
  while read -r release commit; do
    binary="$(tools/released-operator.sh "$release")"
    context="$work/released-$release"
    mkdir -p "$context/rootfs/etc/ssl/certs"
    cp "$binary" "$context/rootfs/tenant-operator"
    ldd "$binary" | grep -o '/[^ ]*' | xargs cp -L --parents -t "$context/rootfs"
    cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
    ref="localhost/neurallog/tenant-operator:$release"
    log "building $ref from its release binary"
    build -f tools/images/released-operator.Containerfile -t "$ref" "$context"
    record_image "operator-$release" "$ref"

    mkdir -p "$context/bundle"
    git archive "$commit" bundle bundle.Dockerfile | tar -x -C "$context/bundle"
    ref="localhost/neurallog/tenant-operator-bundle:v$release"
    log "building $ref from its release commit"
    build -f "$context/bundle/bundle.Dockerfile" -t "$ref" "$context/bundle"
    record_image "bundle-$release" "$ref"
  done < <(awk '/^- version: / { version = $3 } $1 == "commit:" { print version, $2 }' catalog/releases.yaml)
}

# This checkout's next patch release: VERSION without its pre-release part, patch + 1
# (testenv::operatorhub::next_csv names its CSV by the same rule).
next_version() {
  local core="${version%%[-+]*}"
  echo "${core%.*}.$(( ${core##*.} + 1 ))"
}

# This checkout as its next release: the operator image with one more label, so that it has a
# digest of its own and OLM's upgrade rolls the operator's pods, and a bundle generated from a copy
# of config/ for that version and image. Recorded as operator-next and bundle-next.
image_next() {
  local next current ref context="$work/next"
  next="$(next_version)"
  current="localhost/neurallog/tenant-operator:$version"
  podman image exists "$current" || image_operator
  mkdir -p "$context"
  printf 'FROM %s\nLABEL org.opencontainers.image.version="%s"\n' "$current" "$next" >"$context/Containerfile"
  ref="localhost/neurallog/tenant-operator:$next"
  log "building $ref from $current"
  build -f "$context/Containerfile" -t "$ref" "$context"
  record_image operator-next "$ref"

  cp -r config "$context/"
  tools/bundle.sh "$context" "$next" "neurallog/tenant-operator:$next"
  ref="localhost/neurallog/tenant-operator-bundle:v$next"
  log "building $ref"
  build -f "$context/bundle.Dockerfile" -t "$ref" "$context"
  record_image bundle-next "$ref"
}

# --- Main ---------------------------------------------------------------------------------------

for name in "${wanted[@]}"; do
  case "$name" in
    operator) image_operator ;;
    bundle) image_bundle ;;
    catalog) image_catalog ;;
    redis) image_redis ;;
    server | registry | pause) image_standin "$name" ;;
    versions) image_versions ;;
    coredns) image_coredns ;;
    olm) image_olm ;;
    opm-tools) image_opm_tools ;;
    released) image_released ;;
    next) image_next ;;
  esac
done

# The record: this run's rows replace the same names' rows, the others stay.
mkdir -p "$(dirname "$record")"
{
  printf 'name\treference\timage_id\tdigest\n'
  if [[ -f "$record" ]]; then
    declare -A fresh=()
    for row in "${rows[@]}"; do fresh["${row%%$'\t'*}"]=1; done
    tail -n +2 "$record" | while IFS= read -r row; do
      if [[ -n "$row" && -z "${fresh["${row%%$'\t'*}"]:-}" ]]; then printf '%s\n' "$row"; fi
    done
  fi
  if [[ ${#rows[@]} -gt 0 ]]; then printf '%s\n' "${rows[@]}"; fi
} >"$record.tmp"
mv "$record.tmp" "$record"
echo "$record"
