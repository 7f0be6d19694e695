#!/usr/bin/env bash
# Installs the Debian packages a group of the project's targets needs, when any is missing; prints
# nothing and does nothing when all are there.
#
#   tools/packages.sh images   # podman and friends: `make images` builds every image with them (with
#                              # runc: Debian's podman defaults to crun, which fails on these hosts' cgroups)
#   tools/packages.sh node     # the real node of tools/testenv: containerd, runc, the CNI plugins,
#                              # iptables and conntrack for kube-proxy, ipset for the NetworkPolicy
#                              # enforcer, nftables (nft, to find and remove nftables tables made while
#                              # a node ran), the local OCI registry and podman, which pushes the
#                              # images into it
set -euo pipefail

packages=()
for group in "$@"; do
  case "$group" in
    images) packages+=(podman buildah debootstrap uidmap runc) ;;
    node) packages+=(containerd runc containernetworking-plugins iptables conntrack ipset nftables docker-registry podman) ;;
    *) echo "tools/packages.sh: unknown group '$group' (images, node)" >&2; exit 2 ;;
  esac
done

missing_packages() {
  missing=()
  for package in "${packages[@]}"; do
    if ! dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done
}
missing_packages
[[ ${#missing[@]} -eq 0 ]] && exit 0
# `make test` runs two jobs at a time, and both groups may install at once: one apt at a time.
exec 9>"${TMPDIR:-/tmp}/neurallog-packages.lock"
flock 9
missing_packages
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $EUID -ne 0 ]]; then
  echo "tools/packages.sh: missing Debian packages ${missing[*]}; install them as root" >&2
  exit 1
fi
echo "tools/packages.sh: installing ${missing[*]}" >&2
# The containerd package ships a service; nothing here runs systemd, and testenv starts its own.
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
