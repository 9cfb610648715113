#!/usr/bin/env bash
# Installs what piratebay-sync needs on Debian, only what is missing.
#
#   scripts/deps.sh etcd    etcd server and etcdctl (for `make run`)
#   scripts/deps.sh test    the above, plus curl, aria2c, openssl, and ip/tc/iptables
#                           for the LAN lab tests, chromium (the status page's
#                           browser test) and promtool (Debian's prometheus
#                           package: checks /metrics) (for `make test`)
#   scripts/deps.sh bench   the above, plus hyperfine and python3 (for `make bench`)
#   scripts/deps.sh compose the Docker engine, docker-compose, debootstrap,
#                           curl (for `make test-compose`)
#
# As root: apt-get update + apt-get install -y of the missing packages.
# Otherwise: prints one line saying what to install and exits 1.
# Quiet and idempotent when everything is present.
set -euo pipefail

what="${1:-test}"

# command -> Debian package
declare -a wanted=()
want() { wanted+=("$1:$2"); }

case "$what" in
  etcd) ;;
  test | bench | compose) ;;
  *) echo "deps.sh: unknown set '$what' (use etcd, test, bench or compose)" >&2; exit 2 ;;
esac

if [[ "$what" == compose ]]; then
  # Debian's engine (docker.io) and the Python docker-compose 1.29.
  want dockerd docker.io
  want docker-compose docker-compose
  want debootstrap debootstrap
  want curl curl
  want python3 python3
else
  want etcd etcd-server
  want etcdctl etcd-client
fi
if [[ "$what" != etcd && "$what" != compose ]]; then
  want curl curl
  want aria2c aria2
  want openssl openssl
  # The LAN lab (tests/it/support/lab.rs, scripts/lab.sh): namespaces,
  # veth pairs, a bridge, tbf shaping, iptables loss and partitions.
  want ip iproute2
  want tc iproute2
  want iptables iptables
  want chromium chromium
  want promtool prometheus
fi
if [[ "$what" == bench ]]; then
  want hyperfine hyperfine
  want python3 python3
fi

have() {
  # Debian installs etcd under /usr/bin; also accept anything on PATH.
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/bin/$1" ]]
}

missing_pkgs=()
missing_cmds=()
for pair in "${wanted[@]}"; do
  cmd="${pair%%:*}"
  pkg="${pair#*:}"
  if ! have "$cmd"; then
    missing_pkgs+=("$pkg")
    missing_cmds+=("$cmd")
  fi
done

if [[ ${#missing_pkgs[@]} -eq 0 ]]; then
  exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
  hint=""
  if [[ " ${missing_cmds[*]} " == *" etcd "* ]]; then
    hint=" (or run an etcd elsewhere: docker compose up -d etcd, then PIRATEBAY_ETCD=http://127.0.0.1:2379)"
  fi
  echo "deps.sh: missing ${missing_cmds[*]}: run 'sudo apt-get install -y ${missing_pkgs[*]}'${hint}" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps.sh: missing ${missing_cmds[*]} and no apt-get here: install packages ${missing_pkgs[*]} by hand" >&2
  exit 1
fi

echo "deps.sh: installing ${missing_pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's etcd-server postinst tries to start a system service; containers
# have no init system. policy-rc.d 101 forbids service starts during the
# install (removed again afterwards if we created it).
created_policy=""
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
cleanup() { [[ -n "$created_policy" ]] && rm -f /usr/sbin/policy-rc.d; true; }
trap cleanup EXIT

apt-get update -qq >/dev/null
if ! apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/tmp/piratebay-deps-apt.log 2>&1; then
  # A failing service start in postinst leaves the package half-configured;
  # finish configuring and accept it if the binaries are there.
  dpkg --configure -a >>/tmp/piratebay-deps-apt.log 2>&1 || true
fi

still=()
for cmd in "${missing_cmds[@]}"; do
  have "$cmd" || still+=("$cmd")
done
if [[ ${#still[@]} -gt 0 ]]; then
  echo "deps.sh: still missing ${still[*]} after apt-get; see /tmp/piratebay-deps-apt.log" >&2
  exit 1
fi

# If the package started a system etcd on 2379 anyway, say so: tests use
# their own ports, but `make run` would share that one.
if command -v curl >/dev/null 2>&1 && curl -fsS -m 1 http://127.0.0.1:2379/health >/dev/null 2>&1; then
  echo "deps.sh: note: an etcd answers on 127.0.0.1:2379 (maybe the system service); make run will use it" >&2
fi
