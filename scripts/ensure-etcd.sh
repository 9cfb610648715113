#!/usr/bin/env bash
# Makes sure an etcd answers at $PIRATEBAY_ETCD (comma-separated endpoints,
# default http://127.0.0.1:2379). If none answers, starts a local single
# member in the background (data and log under
# ${PIRATEBAY_STATE_DIR:-$HOME/.local/state/piratebay-sync}/etcd), leaves it
# running (in its own session, so Ctrl-C on `make run` spares it) and
# reuses it next time. Prints one line about what it did and, when the etcd
# is this machine's, the line to run on the other machines:
#
#   ensure-etcd: on the other machines run: PIRATEBAY_ETCD=http://<lan ip>:2379 make run
#
# The etcd it starts serves the LAN: it listens on every address (0.0.0.0,
# so 127.0.0.1 too) and advertises this host's LAN address. Anyone on the
# LAN can then read and write it unless auth is on: see SECURITY.md.
#
#   PIRATEBAY_LAN_IP=a.b.c.d     the LAN address to advertise (default: the
#                                address of the default route's interface)
#   PIRATEBAY_ETCD_LOCAL_ONLY=1  listen on 127.0.0.1 only (one machine)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
endpoints="${PIRATEBAY_ETCD:-http://127.0.0.1:2379}"
state="${PIRATEBAY_STATE_DIR:-${HOME:-/tmp}/.local/state/piratebay-sync}/etcd"

# Normalise "host:port" to "http://host:port" and drop a trailing slash.
norm() {
  local e="${1%/}"
  [[ "$e" == *://* ]] || e="http://$e"
  printf '%s' "$e"
}

answers() {
  # /v3/maintenance/status works on 3.4 and 3.5 and needs no quorum.
  curl -fsS -m 2 -X POST -H 'Content-Type: application/json' -d '{}' \
    "$1/v3/maintenance/status" >/dev/null 2>&1
}

# This host's LAN address: the one of the interface holding the default
# route, else the first global address not on a virtual bridge.
lan_ip() {
  if [[ -n "${PIRATEBAY_LAN_IP:-}" ]]; then
    printf '%s' "$PIRATEBAY_LAN_IP"
    return
  fi
  local dev addr
  dev="$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')"
  if [[ -n "$dev" ]]; then
    addr="$(ip -4 -o addr show dev "$dev" scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
    [[ -n "$addr" ]] && { printf '%s' "$addr"; return; }
  fi
  ip -4 -o addr show scope global 2>/dev/null |
    awk '$2 !~ /^(docker|br-|virbr|veth|cni|flannel|lxc)/ {split($4, a, "/"); print a[1]; exit}'
}

# True when $1 is an address of this host.
is_local() {
  case "$1" in 127.* | localhost) return 0 ;; esac
  ip -4 -o addr show 2>/dev/null | awk '{split($4, a, "/"); print a[1]}' | grep -qxF "$1"
}

# Prints the line for the other machines when this host's etcd serves
# the LAN at its port $1, or says why it does not.
tell_lan() {
  local port="$1" lan
  lan="$(lan_ip)"
  if [[ -z "$lan" ]]; then
    echo "ensure-etcd: this host has no LAN address: other machines cannot reach this etcd"
  elif answers "http://$lan:$port"; then
    echo "ensure-etcd: on the other machines run: PIRATEBAY_ETCD=http://$lan:$port make run"
  else
    echo "ensure-etcd: this etcd does not answer on the LAN ($lan:$port), so other machines cannot use it;" \
      "to serve the LAN, stop it (kill \$(cat $state/etcd.pid)) and run make run again" \
      "(without PIRATEBAY_ETCD_LOCAL_ONLY)"
  fi
}

IFS=',' read -r -a list <<<"$endpoints"
for raw in "${list[@]}"; do
  raw="${raw// /}"
  [[ -n "$raw" ]] || continue
  ep="$(norm "$raw")"
  if answers "$ep"; then
    echo "ensure-etcd: etcd answers at $ep, using it"
    h="${ep#*://}"
    h="${h%:*}"
    p="${ep##*:}"
    if is_local "$h" && [[ -z "${PIRATEBAY_ETCD_LOCAL_ONLY:-}" ]]; then tell_lan "$p"; fi
    exit 0
  fi
done

# Nothing answers: start one on the first endpoint, which must be local.
first="$(norm "${list[0]// /}")"
hostport="${first#*://}"
host="${hostport%:*}"
port="${hostport##*:}"
[[ "$port" != "$hostport" ]] || port=2379
if ! is_local "$host"; then
  echo "ensure-etcd: no etcd answers at $endpoints and $host is not this machine: start make run there first, or unset PIRATEBAY_ETCD" >&2
  exit 1
fi
[[ "$host" == localhost ]] && host=127.0.0.1

etcd_bin="$(command -v etcd || true)"
if [[ -z "$etcd_bin" && -x /usr/bin/etcd ]]; then etcd_bin=/usr/bin/etcd; fi
if [[ -z "$etcd_bin" ]]; then
  if [[ "$(id -u)" -eq 0 ]]; then
    "$here/deps.sh" etcd
    etcd_bin="$(command -v etcd || echo /usr/bin/etcd)"
  else
    echo "ensure-etcd: no etcd binary: 'sudo apt-get install -y etcd-server', or 'docker compose up -d etcd'" >&2
    exit 1
  fi
fi

peer_port=$((port + 1))
# Clients: every address (the LAN and 127.0.0.1), advertised on the LAN
# address first. Raft peers: loopback only (one member).
listen="http://0.0.0.0:$port"
advertise="http://$host:$port"
lan=""
if [[ -n "${PIRATEBAY_ETCD_LOCAL_ONLY:-}" ]]; then
  listen="http://$host:$port"
else
  lan="$(lan_ip)"
  [[ -n "$lan" && "$lan" != "$host" ]] && advertise="http://$lan:$port,$advertise"
fi
case "$host" in
  127.*) peer_host="$host" ;;
  *) peer_host=127.0.0.1 ;;
esac
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)
mkdir -p "$state"
log="$state/etcd.log"
"${detach[@]}" nohup "$etcd_bin" \
  --name piratebay-local \
  --data-dir "$state/data" \
  --listen-client-urls "$listen" \
  --advertise-client-urls "$advertise" \
  --listen-peer-urls "http://$peer_host:$peer_port" \
  --initial-advertise-peer-urls "http://$peer_host:$peer_port" \
  --initial-cluster "piratebay-local=http://$peer_host:$peer_port" \
  --initial-cluster-state new \
  >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$state/etcd.pid"
disown "$pid" 2>/dev/null || true

ep="http://$host:$port"
for _ in $(seq 1 150); do
  if answers "$ep"; then
    echo "ensure-etcd: started etcd (pid $pid) at $ep, data and log in $state"
    [[ -n "${PIRATEBAY_ETCD_LOCAL_ONLY:-}" ]] || tell_lan "$port"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "ensure-etcd: etcd exited at once; last lines of $log:" >&2
    tail -n 15 "$log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "ensure-etcd: etcd (pid $pid) does not answer at $ep after 15 s; see $log" >&2
exit 1
