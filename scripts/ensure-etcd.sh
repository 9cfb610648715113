#!/usr/bin/env bash
# Makes sure an etcd answers at $PIRATEBAY_ETCD (comma-separated endpoints,
# default http://127.0.0.1:2379). If none answers, starts a local single
# member in the background (data and log under
# ${PIRATEBAY_STATE_DIR:-$HOME/.local/state/piratebay-sync}/etcd), leaves it
# running (in its own session, so Ctrl-C on `make run` spares it) and
# reuses it next time. Prints one line about what it did.
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

IFS=',' read -r -a list <<<"$endpoints"
for raw in "${list[@]}"; do
  raw="${raw// /}"
  [[ -n "$raw" ]] || continue
  ep="$(norm "$raw")"
  if answers "$ep"; then
    echo "ensure-etcd: etcd answers at $ep, using it"
    exit 0
  fi
done

# Nothing answers: start one on the first endpoint, which must be local.
first="$(norm "${list[0]// /}")"
hostport="${first#*://}"
host="${hostport%:*}"
port="${hostport##*:}"
[[ "$port" != "$hostport" ]] || port=2379
case "$host" in
  127.* | localhost) ;;
  *)
    echo "ensure-etcd: no etcd answers at $endpoints and $host is not local: start it there, or unset PIRATEBAY_ETCD" >&2
    exit 1
    ;;
esac
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
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)
mkdir -p "$state"
log="$state/etcd.log"
"${detach[@]}" nohup "$etcd_bin" \
  --name piratebay-local \
  --data-dir "$state/data" \
  --listen-client-urls "http://$host:$port" \
  --advertise-client-urls "http://$host:$port" \
  --listen-peer-urls "http://$host:$peer_port" \
  --initial-advertise-peer-urls "http://$host:$peer_port" \
  --initial-cluster "piratebay-local=http://$host:$peer_port" \
  --initial-cluster-state new \
  >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$state/etcd.pid"
disown "$pid" 2>/dev/null || true

ep="http://$host:$port"
for _ in $(seq 1 150); do
  if answers "$ep"; then
    echo "ensure-etcd: started etcd (pid $pid) at $ep, data and log in $state"
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
