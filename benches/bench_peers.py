#!/usr/bin/env python3
"""Many peers (issue 12): `list` over 1,000 registrations, the etcd load of
idle peers, and `get` of one small file on a 50-peer network.

On loopback, each part with its own throwaway etcd:

1. 1,000 peer records (BENCH_PEERS_RECORDS), each under a real lease of
   its own (granted and put through the gateway by this script: no process
   behind them). Median wall time of `piratebay-sync list --json` against
   `etcdctl get --prefix` of the same keys. Target: list <= 50 ms.
2. BENCH_IDLE_PEERS (default 3) real `serve` peers, registered among those
   1,000 records, left idle; etcd's own counters (`/metrics`:
   `grpc_server_started_total` of the etcdserverpb services, which counts
   every gateway request: a range, a put, a keepalive POST, a watch stream)
   over BENCH_IDLE_SECONDS (default 30). Target: <= 0.4 requests/s per peer.
3. BENCH_GET_PEERS (default 50) `serve` peers of BENCH_GET_FILES (default
   2,100) files of 1-8 KiB each; `get` of one file (the largest of one
   peer, written under a fresh name each run) against `curl` of the same
   URL: median wall time and peak RSS. Targets: <= 50 ms, <= 24 MiB.

Environment: BENCH_RUNS (default 20), BENCH_PARTS (default "list,idle,get").
Exit status: 0 every target met, 1 otherwise. python3 standard library only.
`RESULTS` holds the figures for benches/scale_table.py.
"""

import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_get import peak_rss_kib, start_peer  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
RECORDS = int(os.environ.get("BENCH_PEERS_RECORDS", "1000"))
IDLE_PEERS = int(os.environ.get("BENCH_IDLE_PEERS", "3"))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
GET_PEERS = int(os.environ.get("BENCH_GET_PEERS", "50"))
GET_FILES = int(os.environ.get("BENCH_GET_FILES", "2100"))
PARTS = os.environ.get("BENCH_PARTS", "list,idle,get").split(",")
NS = "bench-peers"

#: Figures of the last run, by row (see scale_table.py).
RESULTS = {}


def b64(s):
    return base64.b64encode(s.encode()).decode()


def register_fake(etcd, count, ns, ttl=900):
    """`count` records, each under its own lease, 16 threads at once."""
    def record(i):
        return {"id": f"{i:032x}", "addr": f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:7070",
                "name": f"host-{i:04d}.lan", "version": "0.1.0",
                "started_at": int(time.time()) - 3600, "index_gen": 1000 + i}

    todo = list(range(count))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            lease = etcd.post("/v3/lease/grant", {"TTL": ttl})["ID"]
            r = record(i)
            etcd.post("/v3/kv/put", {"key": b64(f"/{ns}/peers/{r['id']}"),
                                     "value": b64(json.dumps(r)), "lease": lease})

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def listed(binary, endpoint, ns):
    p = subprocess.run([binary, "list", "--json", "--etcd", endpoint, "--namespace", ns],
                       capture_output=True, env=common.clean_env(), timeout=60)
    return json.loads(p.stdout) if p.returncode == 0 else []


def part_list_and_idle(binary, work):
    etcdctl = common.find_tool("etcdctl")
    ok = True
    procs = []
    with common.Etcd() as etcd:
        ep = etcd.endpoint
        t0 = time.perf_counter()
        register_fake(etcd, RECORDS, NS)
        print(f"bench_peers: {RECORDS} records under their own leases in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        try:
            if "idle" in PARTS:
                for i in range(IDLE_PEERS):
                    ip = f"127.0.2.{i + 1}"
                    d = os.path.join(work, f"idle{i}")
                    os.makedirs(d)
                    with open(os.path.join(d, "f.bin"), "wb") as f:
                        f.write(os.urandom(4096))
                    port = common.free_port(ip)
                    with open(os.path.join(work, f"idle{i}.log"), "ab") as log:
                        procs.append(subprocess.Popen(
                            [binary, "serve", "--dataset", d, "--state-dir", d + ".state",
                             "--listen", f"{ip}:{port}", "--advertise", f"{ip}:{port}",
                             "--etcd", ep, "--namespace", NS],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env=common.clean_env()))
                deadline = time.monotonic() + 60
                while len(listed(binary, ep, NS)) < RECORDS + IDLE_PEERS:
                    if time.monotonic() > deadline:
                        sys.exit("bench_peers: the idle peers did not register")
                    time.sleep(0.2)
            want = RECORDS + (IDLE_PEERS if "idle" in PARTS else 0)
            got = len(listed(binary, ep, NS))
            if got != want:
                print(f"bench_peers: list shows {got} peers, not {want}")
                ok = False
            rows = [
                (f"etcdctl get --prefix ({want} keys)",
                 common.median_time([etcdctl, "--endpoints", ep, "get", "--prefix",
                                     f"/{NS}/peers/"], runs=RUNS, warmup=2)),
                (f"list --json ({want} peers)",
                 common.median_time([binary, "list", "--json", "--etcd", ep, "--namespace", NS],
                                    runs=RUNS, warmup=2)),
            ]
            print()
            common.print_table(rows, rows[0][0])
            RESULTS["list"] = (rows[1][1]["median"], rows[0][1]["median"], want)
            if rows[1][1]["median"] > 50:
                ok = False
            # 1,000 garbage keys under the prefix: one summary warning.
            for i in range(RECORDS):
                etcd.put(f"/{NS}/peers/garbage-{i}", "not a record" if i % 2 else "{}")
            p = subprocess.run([binary, "list", "--etcd", ep, "--namespace", NS],
                               capture_output=True, env=dict(common.clean_env(), RUST_LOG="warn"),
                               timeout=60)
            warnings = [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]
            print(f"list with {RECORDS} garbage keys under the prefix: {len(warnings)} warning "
                  f"line(s) (target 1): {warnings[0][:160] if warnings else ''}")
            RESULTS["garbage"] = len(warnings)
            if len(warnings) != 1:
                ok = False
            if "idle" in PARTS:
                time.sleep(3)  # registrations done, index generations published
                before = common.etcd_requests(ep)
                time.sleep(IDLE_SECONDS)
                after = common.etcd_requests(ep)
                delta = {m: after.get(m, 0) - before.get(m, 0) for m in after}
                total = sum(delta.values())
                rate = total / IDLE_SECONDS / IDLE_PEERS
                detail = ", ".join(f"{m} {n:.0f}" for m, n in sorted(delta.items()) if n)
                print(f"\netcd requests of {IDLE_PEERS} idle peers over {IDLE_SECONDS:.0f} s: "
                      f"{total:.0f} ({detail or 'none'}) = {rate:.3f} requests/s per peer "
                      f"(target <= 0.4; load average {os.getloadavg()[0]:.1f})")
                RESULTS["idle"] = (rate, delta)
                if rate > 0.4:
                    ok = False
        finally:
            for p in procs:
                common.stop_process(p)
    return ok


def make_get_data():
    root = f"/tmp/piratebay-bench/peers-{GET_PEERS}x{GET_FILES}"
    if not os.path.exists(root + ".ok"):
        print(f"bench_peers: creating {GET_PEERS} x {GET_FILES} files of 1-8 KiB under {root} ...",
              flush=True)
        shutil.rmtree(root, ignore_errors=True)
        rnd = random.Random(50)
        old = time.time() - 3600
        for p in range(GET_PEERS):
            d = os.path.join(root, f"p{p:03}")
            os.makedirs(d)
            for i in range(GET_FILES):
                path = os.path.join(d, f"f{i:05}.bin")
                with open(path, "wb") as f:
                    f.write(rnd.randbytes(rnd.randint(1024, 8192)))
                os.utime(path, (old, old))
        open(root + ".ok", "w").close()
    return root


def part_get(binary, work):
    import hashlib

    curl = common.find_tool("curl")
    root = make_get_data()
    procs = []
    ok = True
    with common.Etcd() as etcd:
        ep = etcd.endpoint
        try:
            addrs = []
            for p in range(GET_PEERS):
                ip = f"127.0.3.{p + 1}"
                port = common.free_port(ip)
                addrs.append(f"{ip}:{port}")
                procs.append(start_peer(binary, ep, os.path.join(root, f"p{p:03}"),
                                        os.path.join(work, f"get-state{p}"), ip, port,
                                        os.path.join(work, f"get{p}.log")))
            # The file: the largest of the last peer.
            d = os.path.join(root, f"p{GET_PEERS - 1:03}")
            name = max(os.listdir(d), key=lambda n: os.path.getsize(os.path.join(d, n)))
            data = open(os.path.join(d, name), "rb").read()
            sha1 = hashlib.sha1(data).hexdigest()
            url = f"http://{addrs[-1]}/v1/files/{sha1}"
            deadline = time.monotonic() + 600
            while True:
                if time.monotonic() > deadline:
                    sys.exit("bench_peers: the 50 peers did not come up in time")
                peers = listed(binary, ep, "piratebay")
                if len(peers) == GET_PEERS and all(p.get("index_gen") for p in peers) and \
                        subprocess.run([curl, "-s", "-f", "-I", url], capture_output=True).returncode == 0:
                    break
                time.sleep(1)
            # Every peer done indexing (its health counts every file), then
            # a pause: 50 peers hashing at once load the machine for a while.
            def indexed(addr):
                try:
                    with urllib.request.urlopen(f"http://{addr}/v1/health", timeout=2) as r:
                        return json.loads(r.read()).get("files") == GET_FILES
                except (OSError, ValueError):
                    return False
            while not all(indexed(a) for a in addrs):
                if time.monotonic() > deadline:
                    sys.exit("bench_peers: the 50 peers did not index their files in time")
                time.sleep(1)
            # Then quiet: the peers' first catalog refreshes and health
            # probes over (their CPU under 20 % of a core for 2 s, at most 60 s).
            def cpu_seconds():
                total = 0
                for proc in procs:
                    try:
                        fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
                        total += int(fields[11]) + int(fields[12])
                    except OSError:
                        pass
                return total / os.sysconf("SC_CLK_TCK")
            quiet_by = time.monotonic() + 60
            while time.monotonic() < quiet_by:
                before = cpu_seconds()
                time.sleep(2)
                if cpu_seconds() - before < 0.4:
                    break
            out = os.path.join(work, "got.bin")
            state = os.path.join(work, "client")
            get = ["sh", "-c", 'rm -f "$0" && exec "$@"', out, binary, "get", sha1, "-o", out,
                   "--etcd", ep, "--state-dir", state]
            rows = [
                ("curl of the same URL", common.median_time(
                    ["sh", "-c", 'rm -f "$0" && exec "$@"', out, curl, "-s", "-f", "-o", out, url],
                    runs=RUNS, warmup=2)),
                (f"get one {len(data)} B file, {GET_PEERS} peers x {GET_FILES} files",
                 common.median_time(get, runs=RUNS, warmup=2)),
            ]
            if hashlib.sha1(open(out, "rb").read()).hexdigest() != sha1:
                print("bench_peers: get saved the wrong bytes")
                ok = False
            kib = peak_rss_kib(get)
            cpu = []
            for _ in range(5):  # CPU time of get itself: less sensitive to load
                p = subprocess.Popen(get, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=common.clean_env())
                _, _, usage = os.wait4(p.pid, 0)
                cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
            cpu.sort()
            print()
            common.print_table(rows, rows[0][0])
            print(f"peak RSS of get: {kib / 1024:.1f} MiB (target <= 24 MiB); CPU time of get "
                  f"{cpu[len(cpu) // 2]:.0f} ms; load average {os.getloadavg()[0]:.1f} (the "
                  f"{GET_PEERS} peers on this machine are part of the load)")
            RESULTS["get"] = (rows[1][1]["median"], kib, rows[0][1]["median"], cpu[len(cpu) // 2])
            if rows[1][1]["median"] > 50 or kib > 24 * 1024:
                ok = False
        finally:
            for p in procs:
                common.stop_process(p)
    return ok


def main():
    binary = common.release_bin()
    work = tempfile.mkdtemp(prefix="bench-peers-")
    ok = True
    try:
        if "list" in PARTS or "idle" in PARTS:
            ok &= part_list_and_idle(binary, work)
        if "get" in PARTS:
            ok &= part_get(binary, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbench_peers: targets {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
