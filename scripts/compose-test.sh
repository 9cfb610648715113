#!/usr/bin/env bash
# `make test-compose`: docker-compose.yml and the Dockerfile, run for real on
# a Docker engine, checked from the host:
#
#   1. `up -d etcd`: etcd healthy on 127.0.0.1:2379, and scripts/ensure-etcd.sh
#      (what `make run` runs first) uses it instead of starting its own;
#   2. the peer image built from the Dockerfile; `up -d`: the peer (host
#      network) registers with an address of a host interface, not loopback
#      when the host has another, `list` shows it, and `get` on the host
#      downloads a file of its dataset, verified;
#   3. `stop peer`: the container exits 0 on SIGTERM and the peer is gone
#      from `list` within a second (lease revoked);
#   4. `start peer`: back with the same peer id (state volume), its index
#      reused from the cache (the log says "hashed 0 files");
#   5. `down -v`: no container, volume, network or listener left.
#
# Root only (CI runs as root). Installs docker.io, docker-compose and
# debootstrap if missing; uses the engine `docker info` reaches, else starts
# its own dockerd (no iptables, no ip_forward, addresses in 198.19.0.0/16,
# its own socket and roots under /run/piratebay-sync-docker and
# /var/lib/piratebay-sync-docker, where images stay cached) and stops it at
# the end. Checks that the host's networking is as it found it. Makes the
# images without a registry (scripts/compose-images.sh).
#
# Environment: CARGO (default cargo), COMPOSE (default docker-compose, else
# "docker compose").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

say() { echo "compose-test: $*"; }
die() {
  echo "compose-test: FAILED: $*" >&2
  exit 1
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

t_start="$(now)"
trap 'echo "compose-test: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
[[ "$(id -u)" -eq 0 ]] || die "needs root (installs docker.io, starts dockerd): run it as root, as CI does"
scripts/deps.sh compose

# One run at a time on this machine: runs share the engine and its images.
mkdir -p /run/lock
exec 9>/run/lock/piratebay-sync-compose-test.lock
flock -w 900 9 || die "another compose test holds /run/lock/piratebay-sync-compose-test.lock"

if [[ -n "${COMPOSE:-}" ]]; then
  read -r -a compose_cmd <<<"$COMPOSE"
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  compose_cmd=(docker compose)
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pbs-compose.XXXXXX")"
project="pbs-compose-$$-$RANDOM"
bin="$repo/target/debug/piratebay-sync"
compose() { "${compose_cmd[@]}" -p "$project" -f "$repo/docker-compose.yml" "$@"; }

# --- the host's networking, before ---------------------------------------------
own_dir=/run/piratebay-sync-docker
own_sock="unix://$own_dir/docker.sock"
# A dockerd of ours left by a killed run: stop it and its bridge first.
if [[ -s "$own_dir/dockerd.pid" ]]; then
  old_pid="$(cat "$own_dir/dockerd.pid")"
  if [[ "$(cat "/proc/$old_pid/comm" 2>/dev/null)" == dockerd ]]; then
    say "stopping dockerd $old_pid left by an earlier run"
    kill -TERM "$old_pid"
    for _ in $(seq 1 300); do kill -0 "$old_pid" 2>/dev/null || break; sleep 0.1; done
    ip link del docker0 2>/dev/null || true
  fi
fi
net_links() { ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort; }
net_state() {
  echo "ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
  if command -v iptables >/dev/null; then
    iptables -S FORWARD 2>/dev/null | head -n 1
    echo "filter DOCKER rules $(iptables -S 2>/dev/null | grep -c DOCKER || true)"
    echo "nat DOCKER rules $(iptables -t nat -S 2>/dev/null | grep -c DOCKER || true)"
  fi
  echo "routes in 198.19.0.0/16: $(ip route show | grep -c '198\.19\.' || true)"
}
links_before="$(net_links)"
state_before="$(net_state)"

finished=""
own_pid=""
# dockerd leaves its default bridge behind: deleted at the end when our
# dockerd made it (not there before, or left by our killed run).
own_docker0=""
grep -qx docker0 <<<"$links_before" || own_docker0=1
cleanup() {
  local status=$?
  set +e
  if [[ -z "$finished" ]]; then
    echo "compose-test: last lines of the services' logs:" >&2
    compose logs --no-color --tail 30 >&2 2>&1
    compose down -v --remove-orphans >/dev/null 2>&1
  fi
  if [[ -n "$own_pid" ]]; then
    kill -TERM "$own_pid" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$own_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$own_pid" 2>/dev/null && echo "compose-test: dockerd $own_pid still runs after 30 s" >&2 && status=1
    if [[ -n "$own_docker0" ]] && ip link show docker0 >/dev/null 2>&1; then
      ip link del docker0
    fi
  fi
  local state_after leftovers
  state_after="$(net_state)"
  if [[ "$state_after" != "$state_before" ]]; then
    echo "compose-test: the host's networking changed:" >&2
    diff <(echo "$state_before") <(echo "$state_after") >&2
    status=1
  fi
  leftovers="$(comm -13 <(echo "$links_before") <(net_links) | grep -E '^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7})$')"
  if [[ -n "$leftovers" ]]; then
    echo "compose-test: interfaces left behind: ${leftovers//$'\n'/ }" >&2
    status=1
  fi
  rm -rf "$tmp"
  if [[ $status -eq 0 && -n "$finished" ]]; then
    say "passed in $(since "$t_start") s (engine, images and checks)"
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the engine -------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  say "engine: using the running one (${DOCKER_HOST:-default socket})"
  say "engine: reusing dockerd $own_pid left by an earlier run"
else
  if other="$(pgrep -x dockerd)"; then
    die "a dockerd runs (pid ${other//$'\n'/ }) but 'docker info' cannot reach it: set DOCKER_HOST to its socket"
  fi
  mkdir -p "$own_dir" /var/lib/piratebay-sync-docker
  t="$(now)"
  # setsid: its own session, so a Ctrl-C of make reaches it only through
  # the cleanup below, which also waits for it.
  setsid dockerd \
    --iptables=false --ip-forward=false --ip-masq=false \
    --bip 198.19.0.1/24 \
    --default-address-pool base=198.19.128.0/17,size=24 \
    --data-root /var/lib/piratebay-sync-docker \
    --exec-root "$own_dir/exec" \
    --pidfile "$own_dir/dockerd.pid" \
    -H "$own_sock" \
    >"$tmp/dockerd.log" 2>&1 </dev/null &
  own_pid=$!
  export DOCKER_HOST="$own_sock"
  for _ in $(seq 1 300); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$own_pid" 2>/dev/null || {
      tail -n 20 "$tmp/dockerd.log" >&2
      die "dockerd exited at once (log above)"
    }
    sleep 0.1
  done
  docker info >/dev/null 2>&1 || die "dockerd (pid $own_pid) does not answer on $own_sock after 30 s; see $tmp/dockerd.log"
  say "engine: started dockerd $own_pid on $own_sock in $(since "$t") s"
fi

# Polls "$@" every 0.1 s for up to $1 seconds.
wait_for() {
  local secs="$1"
  shift
  local deadline
  deadline=$(($(date +%s%N) + secs * 1000000000))
  until "$@"; do
    (($(date +%s%N) < deadline)) || return 1
    sleep 0.1
  done
}

# --- images -------------------------------------------------------------------
t="$(now)"
base="$(scripts/compose-images.sh)"
"${CARGO:-cargo}" build --quiet --bin piratebay-sync
mkdir -p target/image
strip -o target/image/piratebay-sync.tmp "$bin" 2>/dev/null || cp "$bin" target/image/piratebay-sync.tmp
mv target/image/piratebay-sync.tmp target/image/piratebay-sync
# The Dockerfile users build; the builder stage copies the host's binary
# (no Rust image can be pulled here), the runtime stage runs as written.
compose build --build-arg "RUST_IMAGE=$base" --build-arg "BASE_IMAGE=$base" \
  --build-arg PREBUILT=target/image/piratebay-sync peer >"$tmp/build.log" 2>&1 ||
  {
    tail -n 20 "$tmp/build.log" >&2
    die "building the peer image from the Dockerfile failed (log above)"
  }
# Our engine's store is the test's alone: drop the layers of earlier builds.
[[ -z "$own_pid" ]] || docker image prune -f >/dev/null
say "images: etcd, Debian base and the peer image ready in $(since "$t") s"

# --- ports and dataset ----------------------------------------------------------
# (No `| grep -q` under pipefail: grep quitting early fails the writer.)
listening() { [[ -n "$(ss -Hltn "sport = :$1")" ]]; }
etcd_port=2379
if listening 2379; then
  etcd_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  say "port 2379 is taken on this host; etcd's published port is $etcd_port instead"
fi
export PIRATEBAY_COMPOSE_ETCD_PORT="$etcd_port"
# Port 0: the peer binds a free port and advertises the one it got.
export PIRATEBAY_COMPOSE_PEER_PORT=0
export PIRATEBAY_COMPOSE_DATASET="$tmp/dataset"
endpoint="http://127.0.0.1:$etcd_port"
mkdir -p "$tmp/dataset/docs" "$tmp/out"
head -c $((5 * 1024 * 1024 + 123)) /dev/urandom >"$tmp/dataset/big.bin"
echo "a small file shared by the containerized peer" >"$tmp/dataset/docs/small.txt"
big_sha="$(sha1sum "$tmp/dataset/big.bin" | cut -d' ' -f1)"

t_checks="$(now)"

# --- 1. etcd alone ----------------------------------------------------------------
compose up -d etcd >"$tmp/up-etcd.log" 2>&1 || {
  cat "$tmp/up-etcd.log" >&2
  die "'up -d etcd' failed"
}
etcd_cid="$(compose ps -q etcd)"
healthy() { [[ "$(docker inspect -f '{{.State.Health.Status}}' "$etcd_cid")" == healthy ]]; }
wait_for 60 healthy || die "etcd's container is not healthy after 60 s"
[[ "$(curl -fsS -m 2 "$endpoint/health")" == *'"health":"true"'* ]] ||
  die "etcd's container is healthy but $endpoint/health does not say so"
# What `make run` runs before `serve`, with its default endpoint when the
# port is 2379, and a state dir of its own so a started etcd would show.
host_state="$tmp/host-state"
if [[ "$etcd_port" == 2379 ]]; then
  ensure_out="$(env -u PIRATEBAY_ETCD PIRATEBAY_STATE_DIR="$host_state" scripts/ensure-etcd.sh)"
else
  ensure_out="$(PIRATEBAY_ETCD="$endpoint" PIRATEBAY_STATE_DIR="$host_state" scripts/ensure-etcd.sh)"
fi
[[ "$ensure_out" == *"using it"* && ! -e "$host_state/etcd/etcd.pid" ]] ||
  die "ensure-etcd.sh did not use the etcd in compose: $ensure_out"
say "ok 1: etcd in compose healthy on $endpoint; ensure-etcd.sh said \"$ensure_out\""

# --- 2. the peer --------------------------------------------------------------------
compose up -d >"$tmp/up.log" 2>&1 || {
  cat "$tmp/up.log" >&2
  die "'up -d' failed"
}
peer_cid="$(compose ps -q peer)"
export PIRATEBAY_ETCD="$endpoint" PIRATEBAY_STATE_DIR="$tmp/client-state"
# One line per registered peer: "<id> <first address>" (addrs[0], else addr).
peers() {
  "$bin" list --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    print(p["id"], (p.get("addrs") or [p["addr"]])[0])'
}
# Fail (keep polling) when `list` itself fails, so an etcd error never
# passes for "no peer".
count_peers() {
  local out
  out="$(peers)" || return 1
  [[ "$(grep -c . <<<"$out")" -eq "$1" ]]
}
one_peer() { count_peers 1; }
wait_for 30 one_peer || die "the containerized peer is not in 'list' after 30 s"
read -r peer_id peer_addr < <(peers)
peer_ip="${peer_addr%:*}"
peer_ip="${peer_ip#[}"
peer_ip="${peer_ip%]}"
# Host network: the address is one of this host's own, on a real interface
# (not docker0 nor a compose bridge), and not loopback when there is another.
host_addrs="$(ip -o addr show | awk '$2 != "lo" && $2 != "docker0" && $2 !~ /^br-/ && $2 !~ /^veth/ {split($4, a, "/"); print a[1]}')"
if [[ -n "$host_addrs" ]]; then
  grep -qxF "$peer_ip" <<<"$host_addrs" ||
    die "the peer advertises $peer_addr first, not an address of this host's LAN interfaces (${host_addrs//$'\n'/ })"
fi
[[ "$("$bin" list)" == *"$peer_id"* ]] || die "'list' does not show peer $peer_id"
"$bin" get "$big_sha" -o "$tmp/out/big.bin" --json >"$tmp/get.json" ||
  die "get $big_sha from the containerized peer failed"
cmp -s "$tmp/out/big.bin" "$tmp/dataset/big.bin" || die "the downloaded file differs from the peer's"
grep -q "$peer_id" "$tmp/get.json" || die "get did not use peer $peer_id: $(cat "$tmp/get.json")"
say "ok 2: peer $peer_id registered as $peer_addr (host network); get of 5 MiB from it verified"

# --- 3. stop ---------------------------------------------------------------------------
t="$(now)"
compose stop peer >"$tmp/stop.log" 2>&1 || die "'stop peer' failed: $(cat "$tmp/stop.log")"
stop_secs="$(since "$t")"
t="$(now)"
no_peer() { count_peers 0; }
wait_for 1 no_peer || die "peer $peer_id still in 'list' 1 s after 'stop peer' returned (lease not revoked)"
gone_secs="$(since "$t")"
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$peer_cid")"
[[ "$exit_code" == 0 ]] || die "the peer exited with $exit_code on 'stop' (137: SIGTERM did not stop it, SIGKILL did)"
[[ "$(docker logs "$peer_cid" 2>&1)" == *"SIGTERM: unregistering"* ]] ||
  die "the peer's log does not show SIGTERM reaching it"
say "ok 3: 'stop peer' took $stop_secs s, exit 0 on SIGTERM; gone from list $gone_secs s after"

# --- 4. start --------------------------------------------------------------------------
ready_lines() { docker logs "$peer_cid" 2>&1 | grep -c "index: ready" || true; }
[[ "$(ready_lines)" -eq 1 ]] || die "expected one 'index: ready' line before the restart"
compose start peer >"$tmp/start.log" 2>&1 || die "'start peer' failed: $(cat "$tmp/start.log")"
wait_for 30 one_peer || die "the peer is not back in 'list' 30 s after 'start peer'"
read -r id2 _ < <(peers)
[[ "$id2" == "$peer_id" ]] || die "the peer came back as $id2, not $peer_id: its id is not kept in the state volume"
two_ready() { [[ "$(ready_lines)" -ge 2 ]]; }
wait_for 30 two_ready || die "no 'index: ready' line after the restart"
ready="$(docker logs "$peer_cid" 2>&1 | grep "index: ready" | tail -n 1)"
[[ "$ready" == *"hashed 0 files"* && "$ready" == *"2 reused"* ]] ||
  die "the restarted peer rehashed its unchanged files: $ready"
say "ok 4: 'start peer': same id $peer_id, index from its cache (hashed ${ready##*; hashed })"

# --- 5. down -v ------------------------------------------------------------------------
compose down -v >"$tmp/down.log" 2>&1 || die "'down -v' failed: $(cat "$tmp/down.log")"
finished=1
label="label=com.docker.compose.project=$project"
left="$(docker ps -aq --filter "$label")$(docker volume ls -q --filter "$label")$(docker network ls -q --filter "$label")"
[[ -z "$left" ]] || die "'down -v' left containers, volumes or networks of $project: $left"
not_listening() { ! listening "$etcd_port"; }
wait_for 10 not_listening || die "something still listens on port $etcd_port 10 s after 'down -v'"
! "$bin" list >/dev/null 2>&1 || die "'list' still reaches an etcd at $endpoint after 'down -v'"
say "ok 5: 'down -v': no container, volume, network or listener left; checks took $(since "$t_checks") s"
